"""Load, windows and fair offers (`plugin.domain.fairness`), with Hypothesis for the rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.domain.fairness import (
    WEEKS,
    Blocked,
    Fairness,
    Held,
    Load,
    LoadBook,
    Offer,
    Period,
    explain,
    fairness_scores,
    load_of,
    load_window,
    over_capacity,
    week_start,
    windows_containing,
)
from plugin.domain.model import AvailabilityWindow, Capacity, Member, Role, Task

CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # a Monday
TASK = Task("north", "t-new", "c-1", 1, "task", "walk", datetime(2027, 3, 17, 10),
            datetime(2027, 3, 17, 11), "Europe/Copenhagen")  # fmt: skip


def at(day: int, hour: int = 10, month: int = 3) -> datetime:
    return datetime(2027, month, day, hour, tzinfo=CPH)


def member(member_id: str, role: Role = "relative", **changes: object) -> Member:
    base = Member(id=member_id, name=member_id, role=role, visibility="full")
    fields = {f: getattr(base, f) for f in base.__slots__}  # type: ignore[attr-defined]
    fields.update(changes)
    return Member(**fields)  # type: ignore[arg-type]


def held(member_id: str, start: datetime, hours: float = 1.0, n: int = 0) -> Held:
    return Held(
        member_id, f"o-{member_id}-{start:%m%d%H}-{n}", start, start + timedelta(hours=hours)
    )


def offer(start: datetime | None = None, slots: int = 1, **changes: object) -> Offer:
    start = start or at(17)  # Wednesday 17 March
    base: dict[str, object] = {
        "occurrence_id": "t-new@1",
        "task": TASK,
        "start": start,
        "end": start + timedelta(hours=1),
        "free_slots": slots,
    }
    base.update(changes)
    return Offer(**base)  # type: ignore[arg-type]


def scores(
    members: list[Member], items: list[Held], the_offer: Offer | None = None, **kwargs: object
) -> dict[str, Fairness]:
    book = LoadBook.build(items, CPH)
    found = fairness_scores(the_offer or offer(), members, book, now=NOW, **kwargs)  # type: ignore[arg-type]
    return {f.member_id: f for f in found}


# --- weeks and windows --------------------------------------------------------------------


def test_weeks_start_on_monday_midnight_local_across_dst() -> None:
    sunday_night = datetime(2027, 3, 28, 23, 30, tzinfo=CPH)  # DST began that morning
    assert week_start(sunday_night, CPH) == datetime(2027, 3, 22, 0, 0, tzinfo=CPH)
    assert week_start(datetime(2027, 3, 28, 22, 59, tzinfo=UTC), CPH) == datetime(
        2027, 3, 29, 0, 0, tzinfo=CPH
    )  # already Monday in Copenhagen
    window = load_window(at(17), CPH)
    assert (window.start, window.end) == (
        datetime(2027, 3, 15, tzinfo=CPH),
        datetime(2027, 4, 12, tzinfo=CPH),
    )
    assert window.period_start == date(2027, 3, 15)


def test_an_occurrence_lies_in_the_four_windows_that_start_in_the_weeks_up_to_its_own() -> None:
    windows = windows_containing(at(31), CPH)  # Wednesday 31 March
    assert [w.period_start for w in windows] == [
        date(2027, 3, 8), date(2027, 3, 15), date(2027, 3, 22), date(2027, 3, 29)
    ]  # fmt: skip
    assert all(at(31) in w for w in windows)
    assert all(w.end - w.start <= timedelta(weeks=WEEKS) for w in windows)


def test_load_counts_what_starts_in_the_window() -> None:
    items = [held("a", at(1), 1.5), held("a", at(28, 23)), held("a", at(29)), held("b", at(2))]
    window = load_window(at(1), CPH)  # 1 March - 29 March
    assert load_of("a", items, window) == Load(2.5, 2)
    assert load_of("b", items, window) == Load(1.0, 1)
    assert LoadBook.build(items, CPH).load("a", window) == Load(2.5, 2)


def test_over_capacity_by_hours_or_tasks_never_by_what_was_not_declared() -> None:
    assert not over_capacity(Load(100, 100), Capacity())
    assert over_capacity(Load(8.5, 1), Capacity(hours_per_week=2))  # 8 h in four weeks
    assert not over_capacity(Load(8.0, 9), Capacity(hours_per_week=2))
    assert over_capacity(Load(1.0, 5), Capacity(tasks_per_week=1))


# --- fair offers ----------------------------------------------------------------------------


def test_the_one_carrying_less_is_suggested_with_an_explanation() -> None:
    anna, bo = member("m-anna"), member("m-bo")
    items = [held("m-anna", at(day)) for day in (2, 9, 16, 23)] + [held("m-bo", at(3, 10, 2))]
    found = scores([anna, bo], items)
    assert found["m-bo"].suggested and not found["m-anna"].suggested
    assert (found["m-bo"].score or 0) > (found["m-anna"].score or 0)
    text = explain(found["m-bo"], "en")
    assert text.startswith("Score ") and "(suggested)" in text
    assert "of capacity free" in text and "last task 26 days ago" in text
    assert "seneste opgave for 26 dage siden" in explain(found["m-bo"], "da")


def test_equals_are_not_told_apart_and_a_choice_of_everyone_is_no_suggestion() -> None:
    anna, bo = member("m-anna"), member("m-bo")
    tied = scores([anna, bo], [])
    assert not any(f.suggested for f in tied.values())  # never broken by name
    both = scores([anna, bo], [held("m-anna", at(9))], offer(slots=2))
    assert not any(f.suggested for f in both.values())  # everyone who could take it
    one = scores([anna, bo], [held("m-anna", at(9))], offer(slots=1))
    assert [m for m, f in one.items() if f.suggested] == ["m-bo"]


def test_who_is_not_a_candidate_and_why() -> None:
    members = [
        member("m-staff", role="staff"),
        member("m-holds"),
        member("m-passed"),
        member("m-paused", paused_until=date(2027, 3, 17)),
        member("m-evenings", availability=(AvailabilityWindow(3, time(16), time(20)),)),
        member("m-relief"),
        member("m-full", capacity=Capacity(tasks_per_week=1)),
        member("m-free"),
    ]
    items = [held("m-full", at(day)) for day in (15, 16, 18, 19)]
    found = scores(
        members,
        items,
        offer(slots=2, holders=frozenset({"m-holds"}), passed=frozenset({"m-passed"})),
        relief={"m-relief": (Period(at(16, 0), at(18, 0)),)},
    )
    assert {m: f.blocked for m, f in found.items()} == {
        "m-staff": Blocked.ROLE,
        "m-holds": Blocked.HOLDS,
        "m-passed": Blocked.PASSED,
        "m-paused": Blocked.PAUSED,
        "m-evenings": Blocked.UNAVAILABLE,
        "m-relief": Blocked.RELIEF,
        "m-full": Blocked.OVER_CAPACITY,
        "m-free": None,
    }
    assert [m for m, f in found.items() if f.suggested] == ["m-free"]
    assert explain(found["m-paused"], "en") == "Not suggested: paused"
    # The day after the pause, and inside the evening window, they are candidates again.
    later = scores(members, items, offer(at(24, 17)))  # a Wednesday evening
    assert later["m-paused"].blocked is None and later["m-evenings"].blocked is None


def test_a_member_with_room_is_preferred_by_their_declared_capacity() -> None:
    roomy = member("m-roomy", capacity=Capacity(hours_per_week=10))
    tight = member("m-tight", capacity=Capacity(hours_per_week=2))
    items = [held("m-roomy", at(16, 10, 3), 2), held("m-tight", at(16, 10, 3), 2)]
    found = scores([roomy, tight], items)
    room = {m: f.factors[0] for m, f in found.items()}
    assert room["m-roomy"].value > room["m-tight"].value
    assert room["m-tight"].detail["capacity_hours"] == 8.0
    assert [m for m, f in found.items() if f.suggested] == ["m-roomy"]


# --- properties -----------------------------------------------------------------------------

DAYS = st.integers(min_value=-35, max_value=40)
HOURS = st.integers(min_value=6, max_value=21)
LENGTHS = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0])


@st.composite
def held_items(draw: st.DrawFn, member_id: str, max_size: int = 8) -> list[Held]:
    items = []
    for n in range(draw(st.integers(0, max_size))):
        day, hour, length = draw(DAYS), draw(HOURS), draw(LENGTHS)
        start = datetime.combine(date(2027, 3, 1) + timedelta(days=day), time(hour), tzinfo=CPH)
        items.append(held(member_id, start, length, n))
    return items


CAPACITIES = st.builds(
    Capacity,
    hours_per_week=st.none() | st.sampled_from([0.0, 1.0, 2.5, 4.0, 10.0]),
    tasks_per_week=st.none() | st.integers(0, 5),
)
WINDOWS = st.lists(
    st.builds(
        AvailabilityWindow,
        weekday=st.integers(1, 7),
        start=st.sampled_from([time(8), time(10), time(16)]),
        end=st.sampled_from([time(12), time(18), time(21)]),
    ).filter(lambda w: w.end > w.start),
    max_size=3,
)
PAUSES = st.none() | st.dates(min_value=date(2027, 2, 20), max_value=date(2027, 4, 30))


@st.composite
def circles(
    draw: st.DrawFn,
) -> tuple[list[Member], list[Held], Offer, dict[str, tuple[Period, ...]]]:
    members = []
    items: list[Held] = []
    relief: dict[str, tuple[Period, ...]] = {}
    for n in range(draw(st.integers(1, 6))):
        member_id = f"m-{n}"
        members.append(
            member(
                member_id,
                role=draw(st.sampled_from(["relative", "network", "staff"])),
                capacity=draw(CAPACITIES),
                availability=tuple(draw(WINDOWS)),
                paused_until=draw(PAUSES),
            )
        )
        items += draw(held_items(member_id))
        if draw(st.booleans()):
            start = at(1) + timedelta(days=draw(st.integers(0, 30)))
            relief[member_id] = (Period(start, start + timedelta(days=draw(st.integers(1, 10)))),)
    start = datetime.combine(date(2027, 3, 1) + timedelta(days=draw(st.integers(0, 40))),
                             time(draw(HOURS)), tzinfo=CPH)  # fmt: skip
    the_offer = offer(start, slots=draw(st.integers(1, 3)))
    return members, items, the_offer, relief


@settings(max_examples=300, deadline=None)
@given(circles())
def test_no_suggestion_to_a_paused_unavailable_relieved_or_full_member(
    circle: tuple[list[Member], list[Held], Offer, dict[str, tuple[Period, ...]]],
) -> None:
    members, items, the_offer, relief = circle
    book = LoadBook.build(items, CPH)
    found = fairness_scores(the_offer, members, book, now=NOW, relief=relief)
    by_id = {m.id: m for m in members}
    suggested = [f for f in found if f.suggested]
    assert len(suggested) <= the_offer.free_slots
    for standing in suggested:
        m = by_id[standing.member_id]
        local = the_offer.start.astimezone(CPH)
        assert m.paused_until is None or local.date() > m.paused_until
        assert not m.availability or any(
            w.weekday == local.isoweekday()
            and w.start <= local.time()
            and (the_offer.end.astimezone(CPH)).time() <= w.end
            for w in m.availability
        )
        assert not any(p.overlaps(the_offer.start, the_offer.end) for p in relief.get(m.id, ()))
        assert m.role != "staff"
        for window in windows_containing(the_offer.start, CPH):
            assert not over_capacity(book.load(m.id, window) + the_offer.load, m.capacity)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    capacity=CAPACITIES,
    availability=WINDOWS,
    slots=st.integers(1, 3),
)
def test_more_load_never_scores_better_all_else_equal(
    data: st.DataObject, capacity: Capacity, availability: list[AvailabilityWindow], slots: int
) -> None:
    """Two members alike in everything but their load: the one holding more (a superset of
    the other's claims) never scores higher and is never suggested in the other's place."""
    base = data.draw(held_items("light"))
    extra = data.draw(held_items("x", max_size=5).filter(bool))
    heavy = [Held("heavy", f"{h.occurrence_id}-h", h.start, h.end) for h in base]
    heavy += [Held("heavy", f"{h.occurrence_id}-x", h.start, h.end) for h in extra]
    others = data.draw(held_items("m-other"))
    members = [
        member(m, capacity=capacity, availability=tuple(availability))
        for m in ("heavy", "light", "m-other")
    ]
    start = datetime.combine(date(2027, 3, 1) + timedelta(days=data.draw(st.integers(0, 40))),
                             time(data.draw(HOURS)), tzinfo=CPH)  # fmt: skip
    found = scores(members, base + heavy + others, offer(start, slots=slots))
    light, loaded = found["light"], found["heavy"]
    if light.blocked is not None:
        assert loaded.blocked is not None
    if loaded.score is not None and light.score is not None:
        assert loaded.score <= light.score
        for ours, theirs in zip(loaded.factors, light.factors, strict=True):
            assert ours.value <= theirs.value
    if loaded.suggested:
        assert light.suggested


@settings(max_examples=200, deadline=None)
@given(circles(), st.lists(st.tuples(st.integers(0, 40), HOURS, LENGTHS, st.integers(1, 3)),
                           min_size=1, max_size=12))  # fmt: skip
def test_a_book_asked_about_many_offers_answers_as_a_fresh_one(
    circle: tuple[list[Member], list[Held], Offer, dict[str, tuple[Period, ...]]],
    more: list[tuple[int, int, float, int]],
) -> None:
    """A view's advice asks one book about all its offers, and the book remembers parts of
    the answers (a week's room, a member's share and rest): the standings must be exactly
    those a fresh book gives for each offer alone."""
    members, items, first, relief = circle
    offers = [first]
    for day, hour, length, slots in more:
        start = datetime.combine(date(2027, 3, 1) + timedelta(days=day), time(hour), tzinfo=CPH)
        offers.append(offer(start, slots=slots, end=start + timedelta(hours=length)))
    # The same offers with another number of free slots, and with someone passed on them: the
    # book must not answer them as the ones it saw first.
    offers += [replace(o, free_slots=o.free_slots % 3 + 1) for o in offers]
    offers += [replace(o, passed=frozenset({members[0].id})) for o in offers]
    shared = LoadBook.build(items, CPH)
    for the_offer in offers + offers[::-1]:
        fresh = LoadBook.build(items, CPH)
        assert fairness_scores(
            the_offer, members, shared, now=NOW, relief=relief
        ) == fairness_scores(the_offer, members, fresh, now=NOW, relief=relief)
