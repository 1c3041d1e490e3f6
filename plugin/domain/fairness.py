"""Load, capacity and fair offers: who carries how much, and whom an open task suits best. Pure.

**Load** is what a member holds (their claims on occurrences that are not cancelled): hours
(the occurrences' lengths) and tasks (how many), counted in the week each occurrence starts in
(Monday 00:00 to Monday 00:00 in the citizen's time zone).

**Window**: four consecutive weeks starting on a Monday. A member's load is measured over a
rolling window: the window of the current week (`load_window(now)`) is this week and the three
after it, and next Monday it moves on by a week. Four weeks of the member's weekly capacity are
the window's capacity. A claim on an occurrence counts in the four windows that contain it
(`windows_containing`).

**Period**: the windows that never overlap, four-week blocks counted from Monday 5 January 1970
(`period_of`), so each starts on a Monday. A member is **over capacity** in a period when it
holds more hours, or more tasks, than four weeks of what they declared (an undeclared
dimension never limits anyone); the host hears of it once per period, and the member's copies
in that period say so. A period is one of the four windows containing each of its
occurrences, so an offer that fits every window containing it never takes anyone over.

**Fair offers.** Every open occurrence is offered to every member who may take it; among the
relatives and network who are free for it (not holding or having passed on it, available in
their weekly windows, not paused, not on relief, and with room for it within their capacity)
the best scores are *suggested*, as many as there are free slots. Only a real preference is
marked: members tied with the best one left out are not suggested (ties are never broken by
name), and neither is anyone when the suggestion would go to everyone who could take the offer
at all. A suggestion is a marker in the member's calendar, never a claim: nobody is assigned
anything by it.

**Score** (0 … 1, higher suits better), a weighted sum of three factors, each 0 … 1:

| factor  | weight | value                                                                  |
|---------|--------|------------------------------------------------------------------------|
| `room`  | 0.5    | the smallest share of their capacity still free after taking this one, |
|         |        | over the windows that contain it (the hours and tasks they declared;   |
|         |        | with neither, `REFERENCE_HOURS`/`REFERENCE_TASKS` a week stand in)     |
| `share` | 0.3    | 1 - their share of the hours the circle's members hold in the four     |
|         |        | weeks before now and the four after it (recent and coming load)        |
| `rest`  | 0.2    | days since their last task ended, up to 28, over 28 (none yet: 1)      |

All else equal, more load never scores higher: `room` and `share` only fall as load grows, and
`rest` only as the last task moves closer.

    book = LoadBook.build(held, zone)
    scores = fairness_scores(offer, members, book, now=now)
    [s.member_id for s in scores if s.suggested]   # ['m-bo']
    explain(scores[0], "en")  # 'Score 0.83: 75 % of capacity free in the weeks around it …'
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Literal, TypeVar, cast
from zoneinfo import ZoneInfo

from plugin.domain.capacity import available_at, paused_at
from plugin.domain.circle import eligible_for
from plugin.domain.model import Capacity, Member, Role, Task

__all__ = [
    "REFERENCE_HOURS",
    "REFERENCE_TASKS",
    "SUGGESTED_ROLES",
    "WEEKS",
    "WEIGHTS",
    "Blocked",
    "Factor",
    "Fairness",
    "Held",
    "Load",
    "LoadBook",
    "Offer",
    "Period",
    "Window",
    "explain",
    "fairness_scores",
    "load_of",
    "load_window",
    "over_capacity",
    "period_of",
    "week_start",
    "window_capacity",
    "windows_containing",
]

WEEKS = 4
PERIOD_EPOCH = date(1970, 1, 5)  # a Monday: periods are the four-week blocks from it
REST_DAYS = 28
REFERENCE_HOURS = 3.0  # per week: scores `room` for a member who declared no capacity
REFERENCE_TASKS = 2

_T = TypeVar("_T")
_UNKNOWN = object()  # not worked out yet (an answer may be None or False)
WEIGHTS: Mapping[str, float] = {"room": 0.5, "share": 0.3, "rest": 0.2}
SUGGESTED_ROLES: frozenset[Role] = frozenset({"relative", "network"})  # staff are not nudged


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end): four weeks from a Monday 00:00 (aware, in the citizen's zone)."""

    start: datetime
    end: datetime

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def period_start(self) -> date:
        return self.start.date()


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end), e.g. a relief request's."""

    start: datetime
    end: datetime

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return start < self.end and end > self.start


@dataclass(frozen=True, slots=True)
class Held:
    """One occurrence a member holds."""

    member_id: str
    occurrence_id: str
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds() / 3600)


@dataclass(frozen=True, slots=True)
class Load:
    hours: float = 0.0
    tasks: int = 0

    def __add__(self, other: Load) -> Load:
        return Load(self.hours + other.hours, self.tasks + other.tasks)


def week_start(at: datetime, zone: ZoneInfo) -> datetime:
    """Monday 00:00 (in `zone`) of the week `at` falls in."""
    local = at.astimezone(zone).date()
    return datetime.combine(local - timedelta(days=local.weekday()), time(0), tzinfo=zone)


def _weeks_after(monday: datetime, weeks: int) -> datetime:
    # By calendar days, not hours: a window across a DST change still ends on Monday 00:00.
    return datetime.combine(monday.date() + timedelta(weeks=weeks), time(0), tzinfo=monday.tzinfo)


def load_window(at: datetime, zone: ZoneInfo) -> Window:
    """The rolling window at `at`: the week `at` is in and the three after it."""
    start = week_start(at, zone)
    return Window(start, _weeks_after(start, WEEKS))


def windows_containing(at: datetime, zone: ZoneInfo) -> tuple[Window, ...]:
    """The four windows that contain `at`, earliest first (the last one starts in its week)."""
    return _windows_from(week_start(at, zone))


@lru_cache(maxsize=1024)
def _windows_from(monday: datetime) -> tuple[Window, ...]:
    starts = [_weeks_after(monday, -back) for back in range(WEEKS - 1, -1, -1)]
    return tuple(Window(s, _weeks_after(s, WEEKS)) for s in starts)


def period_of(at: datetime, zone: ZoneInfo) -> Window:
    """The period (a four-week block from `PERIOD_EPOCH`) `at` falls in:
    `period_of(<Tue 30 March 2027>, CPH)` runs from Monday 15 March to Monday 12 April."""
    monday = week_start(at, zone)
    offset = (monday.date() - PERIOD_EPOCH).days % (7 * WEEKS)
    start = datetime.combine(monday.date() - timedelta(days=offset), time(0), tzinfo=zone)
    return Window(start, _weeks_after(start, WEEKS))


def load_of(member_id: str, held: Iterable[Held], window: Window) -> Load:
    """Hours and tasks `member_id` holds that start inside `window`."""
    load = Load()
    for item in held:
        if item.member_id == member_id and item.start in window:
            load += Load(item.hours, 1)
    return load


def window_capacity(capacity: Capacity) -> tuple[float | None, int | None]:
    """Four weeks of a weekly capacity: (hours, tasks), None where not declared."""
    hours = None if capacity.hours_per_week is None else capacity.hours_per_week * WEEKS
    tasks = None if capacity.tasks_per_week is None else capacity.tasks_per_week * WEEKS
    return hours, tasks


def over_capacity(load: Load, capacity: Capacity) -> bool:
    hours, tasks = window_capacity(capacity)
    return (hours is not None and load.hours > hours + 1e-9) or (
        tasks is not None and load.tasks > tasks
    )


@dataclass(frozen=True, slots=True)
class LoadBook:
    """Everything held in a circle, indexed for many questions at once: per member the load of
    each week, and the occurrences themselves (sorted by start)."""

    zone: ZoneInfo
    weeks: Mapping[str, Mapping[datetime, Load]] = field(default_factory=dict)
    held: Mapping[str, tuple[Held, ...]] = field(default_factory=dict)
    # Answers already worked out: a view's advice asks the same few questions for each of its
    # offers (the book never changes, so they never go stale).
    _answers: dict[tuple[object, ...], object] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, held: Iterable[Held], zone: ZoneInfo) -> LoadBook:
        weeks: dict[str, dict[datetime, Load]] = defaultdict(dict)
        by_member: dict[str, list[Held]] = defaultdict(list)
        for item in held:
            monday = week_start(item.start, zone)
            member_weeks = weeks[item.member_id]
            member_weeks[monday] = member_weeks.get(monday, Load()) + Load(item.hours, 1)
            by_member[item.member_id].append(item)
        return cls(
            zone,
            {m: dict(w) for m, w in weeks.items()},
            {
                m: tuple(sorted(h, key=lambda i: (i.start, i.occurrence_id)))
                for m, h in by_member.items()
            },
        )

    def answer(self, key: tuple[object, ...], work: Callable[[], _T]) -> _T:
        """`work()`, worked out once per `key` for this book (a question about the book:
        its answer depends only on the book and on what the key names)."""
        found = self._answers.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = self._answers[key] = work()
        return cast(_T, found)

    def load(self, member_id: str, window: Window) -> Load:
        key = ("load", member_id, window.start, window.end)
        found = self._answers.get(key)
        if found is None:
            found = self._answers[key] = self._load(member_id, window)
        assert isinstance(found, Load)
        return found

    def _load(self, member_id: str, window: Window) -> Load:
        total = Load()
        weeks = self.weeks.get(member_id, {})
        monday = window.start
        while monday < window.end:
            total += weeks.get(monday, Load())
            monday = _weeks_after(monday, 1)
        return total

    def weekly(
        self, member_id: str, first: datetime, count: int
    ) -> tuple[tuple[datetime, Load], ...]:
        """The member's load in `count` weeks from the Monday `first` (for a chart)."""
        weeks = self.weeks.get(member_id, {})
        mondays = [_weeks_after(first, n) for n in range(count)]
        return tuple((monday, weeks.get(monday, Load())) for monday in mondays)

    def over_period(
        self, member_id: str, capacity: Capacity, at: datetime
    ) -> tuple[Window, Load] | None:
        """The period of `at` and the member's load in it, when that is over capacity."""
        period = period_of(at, self.zone)
        load = self.load(member_id, period)
        return (period, load) if over_capacity(load, capacity) else None

    def hours_between(self, member_id: str, start: datetime, end: datetime) -> float:
        key = ("hours", member_id, start, end)
        found = self._answers.get(key)
        if found is None:
            found = self._answers[key] = sum(
                h.hours for h in self.held.get(member_id, ()) if start <= h.start < end
            )
        assert isinstance(found, float | int)
        return float(found) if isinstance(found, float) else found

    def last_end_before(self, member_id: str, now: datetime) -> datetime | None:
        ends = [h.end for h in self.held.get(member_id, ()) if h.end <= now]
        return max(ends) if ends else None


class Blocked(StrEnum):
    """Why a member is not a candidate for a suggestion (they may still take the offer)."""

    ROLE = "role"  # staff, or a task of a kind they may not hold
    HOLDS = "holds"
    PASSED = "passed"
    PAUSED = "paused"
    UNAVAILABLE = "unavailable"  # outside their weekly availability
    RELIEF = "relief"  # they asked for relief for that time
    OVER_CAPACITY = "over_capacity"  # taking it would put them over what they declared


@dataclass(frozen=True, slots=True)
class Offer:
    """An open occurrence to offer: who holds it and who passed on it."""

    occurrence_id: str
    task: Task
    start: datetime
    end: datetime
    free_slots: int
    holders: frozenset[str] = frozenset()
    passed: frozenset[str] = frozenset()

    @property
    def load(self) -> Load:
        return Load(max(0.0, (self.end - self.start).total_seconds() / 3600), 1)


@dataclass(frozen=True, slots=True)
class Factor:
    """One part of a score: `value` 0 … 1 (higher suits better) and the figures behind it."""

    name: Literal["room", "share", "rest"]
    value: float
    weight: float
    detail: Mapping[str, float | int | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fairness:
    """A member's standing for one offer. `score` is None when `blocked`."""

    member_id: str
    score: float | None
    factors: tuple[Factor, ...] = ()
    blocked: Blocked | None = None
    suggested: bool = False


def fairness_scores(
    offer: Offer,
    members: Sequence[Member],
    book: LoadBook,
    *,
    now: datetime,
    relief: Mapping[str, Sequence[Period]] | None = None,
) -> tuple[Fairness, ...]:
    """Every member's standing for `offer`, in the members' order; the best `free_slots`
    unblocked ones are `suggested` (see `_chosen` for ties and for a choice that would take
    everyone). `relief` lists each member's relief periods."""
    relief = relief or {}
    # What every member's standing asks of the offer, worked out once.
    windows = windows_containing(offer.start, book.zone)
    load = offer.load
    blocked = tuple(
        _blocked(offer, member, book, relief.get(member.id, ()), windows, load)
        for member in members
    )
    # Past what blocks whom, the standings depend only on the offer's windows, its length
    # and free slots: a view's advice asks the same of hundreds of offers.
    key = (
        "standings",
        tuple((m.id, m.capacity) for m in members),
        blocked,
        windows[-1].start,
        load,
        offer.free_slots,
        now,
    )
    return book.answer(key, lambda: _standings(offer, members, book, now, blocked, windows, load))


def _standings(
    offer: Offer,
    members: Sequence[Member],
    book: LoadBook,
    now: datetime,
    blocked: Sequence[Blocked | None],
    windows: Sequence[Window],
    load: Load,
) -> tuple[Fairness, ...]:
    recent_start, recent_end = now - timedelta(weeks=WEEKS), now + timedelta(weeks=WEEKS)
    circle_recent = sum(book.hours_between(m.id, recent_start, recent_end) for m in members)
    standings: list[Fairness] = []
    for member, why in zip(members, blocked, strict=True):
        if why is not None:
            standings.append(Fairness(member.id, None, blocked=why))
            continue
        factors = (
            _room(windows, load, member, book),
            _share(member, book, recent_start, recent_end, circle_recent),
            _rest(member, book, now),
        )
        score = sum(f.value * f.weight for f in factors)
        standings.append(Fairness(member.id, score, factors))
    chosen = _chosen(standings, offer.free_slots)
    return tuple(
        Fairness(s.member_id, s.score, s.factors, s.blocked, True) if s.member_id in chosen else s
        for s in standings
    )


# Members who could take the offer at all: the ones a suggestion chooses among.
_POOL_BLOCKS = frozenset({None, Blocked.PAUSED, Blocked.UNAVAILABLE, Blocked.RELIEF,
                          Blocked.OVER_CAPACITY})  # fmt: skip


def _chosen(standings: Sequence[Fairness], slots: int) -> set[str]:
    """The best `slots` candidates, but only where the choice says something: candidates tied
    with the best one left out are not chosen either (no preference between equals; ties are
    never broken by name), and when the choice would take everyone who could take the offer
    at all, nobody is chosen (a marker on everyone is no suggestion)."""
    ranked = sorted(
        (s for s in standings if s.score is not None),
        key=lambda s: (-(s.score or 0.0), s.member_id),
    )
    chosen = ranked[: max(0, slots)]
    if len(ranked) > len(chosen) and chosen:
        boundary = ranked[len(chosen)].score
        chosen = [s for s in chosen if s.score != boundary]
    pool = {s.member_id for s in standings if s.blocked in _POOL_BLOCKS}
    picked = {s.member_id for s in chosen}
    return set() if picked == pool else picked


def _blocked(
    offer: Offer,
    member: Member,
    book: LoadBook,
    relief: Sequence[Period],
    windows: Sequence[Window],
    load: Load,
) -> Blocked | None:
    """`windows`: the ones containing the offer (`windows_containing`); `load`: its load."""
    if member.role not in SUGGESTED_ROLES or not eligible_for(member, offer.task):
        return Blocked.ROLE
    if member.id in offer.holders:
        return Blocked.HOLDS
    if member.id in offer.passed:
        return Blocked.PASSED
    if paused_at(member, offer.start, book.zone):
        return Blocked.PAUSED
    if not available_at(member, offer.start, offer.end, book.zone):
        return Blocked.UNAVAILABLE
    if any(period.overlaps(offer.start, offer.end) for period in relief):
        return Blocked.RELIEF
    over = book.answer(
        ("over", member.id, member.capacity, windows[-1].start, load),
        lambda: any(
            over_capacity(book.load(member.id, window) + load, member.capacity)
            for window in windows
        ),
    )
    return Blocked.OVER_CAPACITY if over else None


def _room(windows: Sequence[Window], load: Load, member: Member, book: LoadBook) -> Factor:
    # The same for every offer of the same length in the same week: a view asks for
    # hundreds of those.
    key = ("room", member.id, member.capacity, windows[-1].start, load)
    return book.answer(key, lambda: _room_in(windows, load, member, book))


def _room_in(windows: Sequence[Window], offer_load: Load, member: Member, book: LoadBook) -> Factor:
    hours, tasks = window_capacity(member.capacity)
    if hours is None and tasks is None:
        hours, tasks = REFERENCE_HOURS * WEEKS, REFERENCE_TASKS * WEEKS
    worst: tuple[float, Load] | None = None
    for window in windows:
        load = book.load(member.id, window) + offer_load
        free = min(
            _free_share(load.hours, hours),
            _free_share(float(load.tasks), None if tasks is None else float(tasks)),
        )
        if worst is None or free < worst[0]:
            worst = (free, load)
    assert worst is not None  # there are always four windows
    value, worst_load = worst
    return Factor(
        "room",
        value,
        WEIGHTS["room"],
        {
            "load_hours": round(worst_load.hours, 2),
            "load_tasks": worst_load.tasks,
            "capacity_hours": hours,
            "capacity_tasks": tasks,
        },
    )


def _free_share(load: float, capacity: float | None) -> float:
    if capacity is None:
        return 1.0
    if capacity <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - load / capacity))


def _share(
    member: Member, book: LoadBook, start: datetime, end: datetime, circle_hours: float
) -> Factor:
    key = ("share", member.id, start, end, circle_hours)
    return book.answer(key, lambda: _share_of(member, book, start, end, circle_hours))


def _share_of(
    member: Member, book: LoadBook, start: datetime, end: datetime, circle_hours: float
) -> Factor:
    own = book.hours_between(member.id, start, end)
    share = own / circle_hours if circle_hours > 0 else 0.0
    return Factor(
        "share",
        1.0 - min(1.0, share),
        WEIGHTS["share"],
        {"recent_hours": round(own, 2), "circle_hours": round(circle_hours, 2)},
    )


def _rest(member: Member, book: LoadBook, now: datetime) -> Factor:
    return book.answer(("rest", member.id, now), lambda: _rest_at(member, book, now))


def _rest_at(member: Member, book: LoadBook, now: datetime) -> Factor:
    last = book.last_end_before(member.id, now)
    if last is None:
        return Factor("rest", 1.0, WEIGHTS["rest"], {"days_since_last": None})
    days = (now - last).total_seconds() / 86400
    return Factor(
        "rest",
        min(days, REST_DAYS) / REST_DAYS,
        WEIGHTS["rest"],
        {"days_since_last": round(days, 1)},
    )


_EXPLAIN: dict[str, dict[str, str]] = {
    "da": {
        "score": "Point {score:.2f}",
        "room": "{free:.0f} % af kapaciteten fri i ugerne omkring den",
        "share": "{share:.0f} % af kredsens timer fire uger før og efter i dag",
        "rest": "seneste opgave for {days:.0f} dage siden",
        "rest_never": "ingen opgaver endnu",
        "suggested": "foreslået",
        "role": "Ikke foreslået: personale, eller en opgave de ikke kan tage",
        "holds": "Har den allerede",
        "passed": "Har sagt nej tak",
        "paused": "Ikke foreslået: holder pause",
        "unavailable": "Ikke foreslået: ikke til rådighed på det tidspunkt",
        "relief": "Ikke foreslået: har bedt om aflastning i perioden",
        "over_capacity": "Ikke foreslået: den ville bringe dem over deres kapacitet",
    },
    "en": {
        "score": "Score {score:.2f}",
        "room": "{free:.0f} % of capacity free in the weeks around it",
        "share": "{share:.0f} % of the circle's hours four weeks either side of today",
        "rest": "last task {days:.0f} days ago",
        "rest_never": "no task yet",
        "suggested": "suggested",
        "role": "Not suggested: staff, or a task they cannot take",
        "holds": "Holds it already",
        "passed": "Passed on it",
        "paused": "Not suggested: paused",
        "unavailable": "Not suggested: not available at that time",
        "relief": "Not suggested: asked for relief for that time",
        "over_capacity": "Not suggested: it would take them over their capacity",
    },
}


def explain(standing: Fairness, locale: str = "da") -> str:
    """One line for staff: the score and its three factors, or why the member is not a
    candidate. `explain(bo, "en")` -> "Score 0.83 (suggested): 75 % of capacity free in the
    weeks around it; 0 % of the circle's hours four weeks either side of today; no task yet"."""
    words = _EXPLAIN.get(locale.split("-")[0].lower(), _EXPLAIN["da"])
    if standing.blocked is not None or standing.score is None:
        return words[standing.blocked.value if standing.blocked else "role"]
    parts: list[str] = []
    for factor in standing.factors:
        if factor.name == "room":
            parts.append(words["room"].format(free=factor.value * 100))
        elif factor.name == "share":
            parts.append(words["share"].format(share=(1 - factor.value) * 100))
        elif factor.detail.get("days_since_last") is None:
            parts.append(words["rest_never"])
        else:
            parts.append(words["rest"].format(days=factor.detail["days_since_last"]))
    head = words["score"].format(score=standing.score)
    if standing.suggested:
        head += f" ({words['suggested']})"
    return f"{head}: {'; '.join(parts)}"
