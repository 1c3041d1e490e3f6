"""Capacity, overload, suggestions, the member's own settings and relief, on the in-memory
store (`plugin.services.capacity`, `plugin.services.relief`, `ingest.decide_relief`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from adapters.memory import MemoryStore
from plugin.domain.capacity import CareValues
from plugin.domain.model import (
    AvailabilityWindow,
    Capacity,
    Circle,
    Citizen,
    Member,
    ReliefRequest,
    Task,
)
from plugin.services.capacity import (
    circle_load,
    offer_fairness,
    read_circle_care,
    save_own_settings,
    settle_member_settings,
    view_advice,
)
from plugin.services.claiming import Ask, decide, decide_recorded
from plugin.services.commands import DecideRelief, HostCommand
from plugin.services.ingest import Outcome, apply_batch, materialise
from plugin.services.ports import InboxEntry, InboxItem, OutboxEvent
from plugin.services.relief import ReliefOutcome, ReliefRefusal, request_relief

T = "north"
CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # Monday 1 March, 10:00 in Copenhagen
HORIZON = timedelta(weeks=8)

ANNA = Member("m-anna", "Anna", "relative", "full", capacity=Capacity(2.0, 1))
BO = Member("m-bo", "Bo", "relative", "limited")
CARL = Member("m-carl", "Carl", "network", "full", paused_until=date(2027, 6, 1))
SARA = Member("m-sara", "Sara", "staff", "full")
CIRCLE = Circle(Citizen(T, "c-1", "Fru Jensen"), 1, (ANNA, BO, CARL, SARA))


def weekly(task_id: str, first: datetime, count: int, **changes: object) -> Task:
    task = Task(T, task_id, "c-1", 1, "task", "shopping", first, first + timedelta(hours=1),
                "Europe/Copenhagen", recurrence=f"FREQ=WEEKLY;COUNT={count}")  # fmt: skip
    return replace(task, **changes)  # type: ignore[arg-type]


async def seeded(*tasks: Task) -> MemoryStore:
    store = MemoryStore()
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_circle(T, CIRCLE, NOW)
        for task in tasks:
            await tx.save_task(task)
            await materialise(tx, task, now=NOW, horizon=HORIZON)
    return store


async def occurrence_ids(store: MemoryStore, task_id: str) -> list[str]:
    async with store.transaction() as tx:
        return [r.occurrence.id for r in await tx.get_occurrences(T, task_id)]


async def claim_all(store: MemoryStore, member_id: str, ids: list[str]) -> None:
    for occurrence_id in ids:
        async with store.transaction() as tx:
            decision = await decide(
                tx, T, occurrence_id, member_id, Ask.CLAIM, channel="link", now=NOW
            )
            assert decision is not None and decision.add_claim is not None


def outbox(store: MemoryStore) -> list[OutboxEvent]:
    """Every event written, in order (`due_outbox` shows one per ordering key at a time)."""
    return sorted(store._state.outbox.values(), key=lambda e: (e.created_at, e.id))


def daily(task_id: str, first: datetime, count: int) -> Task:
    return weekly(task_id, first, count, recurrence=f"FREQ=DAILY;COUNT={count}")


async def test_a_claim_over_capacity_is_accepted_and_told_to_the_host_once_per_period() -> None:
    # Daily from Monday 15 March, the first day of a period (15 March - 12 April).
    store = await seeded(daily("t-1", datetime(2027, 3, 15, 10), 10))
    ids = await occurrence_ids(store, "t-1")
    await claim_all(store, "m-anna", ids[:4])  # 4 tasks in the period: her limit (1 a week)
    assert [e.type for e in outbox(store)] == ["task.claimed"] * 4
    await claim_all(store, "m-anna", ids[4:5])  # the fifth takes her over
    overloaded = [e for e in outbox(store) if e.type == "member.overloaded"]
    assert [dict(e.data) for e in overloaded] == [
        {
            "citizen_id": "c-1",
            "member_id": "m-anna",
            "load_hours": 5.0,
            "capacity_hours": 8.0,
            "load_tasks": 5,
            "capacity_tasks": 4,
            "period_start": "2027-03-15",
            "period_end": "2027-04-12",
        }
    ]
    # Sent after the claim that caused it (same ordering key: the task).
    assert [e.type for e in outbox(store)][-2:] == ["task.claimed", "member.overloaded"]
    assert overloaded[0].ordering_key == "t-1"
    async with store.transaction() as tx:
        record = await tx.get_occurrence(T, ids[4])
        audit = await tx.list_audit(T, "member:m-anna")
    assert record is not None and [c.member_id for c in record.claims] == ["m-anna"]
    assert [a.action for a in audit] == ["member.overloaded"]
    # More claims in the same period: the host has heard of it already.
    await claim_all(store, "m-anna", ids[5:])
    assert len([e for e in outbox(store) if e.type == "member.overloaded"]) == 1


async def test_a_claim_from_a_calendar_checks_capacity_with_what_its_run_read() -> None:
    """A calendar's run hands the claim the circle and the members' own settings it read
    (`decide_recorded(circle=, settings=)`), and the capacity check goes by them: Anna's own
    setting (half an hour a week: two hours in four weeks) makes her third claim one too
    many; without it, her host's capacity (one task a week) makes it the fifth."""
    own = CareValues(Capacity(0.5, 1), (), None)
    for given, over_at in (("hers", 2), ("none", 4)):
        store = await seeded(daily("t-1", datetime(2027, 3, 15, 10), 10))
        ids = await occurrence_ids(store, "t-1")
        async with store.transaction() as tx:
            await save_own_settings(tx, T, "c-1", "m-anna", own, now=NOW)
            care = await read_circle_care(tx, T, "c-1")
        settings = care.settings if given == "hers" else {}
        for n, occurrence_id in enumerate(ids[:5]):
            async with store.transaction() as tx:
                decided = await decide_recorded(
                    tx, T, occurrence_id, "m-anna", Ask.CLAIM, channel="caldav", now=NOW,
                    circle=CIRCLE, settings=settings,
                )  # fmt: skip
                assert decided is not None and decided.decision.add_claim is not None
            overloaded = [e for e in outbox(store) if e.type == "member.overloaded"]
            assert len(overloaded) == (n >= over_at), (given, n)


async def test_no_capacity_declared_is_never_over() -> None:
    store = await seeded(daily("t-1", datetime(2027, 3, 15, 10), 10))
    await claim_all(store, "m-bo", await occurrence_ids(store, "t-1"))
    assert {e.type for e in outbox(store)} == {"task.claimed"}


async def test_view_advice_suggests_the_others_and_flags_what_is_over() -> None:
    store = await seeded(
        daily("t-1", datetime(2027, 3, 15, 10), 10),  # Anna claims all ten
        weekly("t-2", datetime(2027, 3, 18, 14), 1),  # a new one on Thursday afternoon
        weekly("t-3", datetime(2027, 4, 15, 14), 1),  # beyond the rolling window (1-29 March)
    )
    ids = await occurrence_ids(store, "t-1")
    await claim_all(store, "m-anna", ids)
    async with store.transaction() as tx:
        circle = await tx.get_circle(T, "c-1")
        tasks = await tx.list_tasks(T, "c-1")
        occurrences = {t.id: tuple(await tx.get_occurrences(T, t.id)) for t in tasks}
        care = await read_circle_care(tx, T, "c-1")
    assert circle is not None
    advice = {
        m.id: view_advice(circle, m.id, tasks, occurrences, care, now=NOW, until=NOW + HORIZON)
        for m in circle.members
    }
    new = (await occurrence_ids(store, "t-2"))[0]
    assert advice["m-bo"].suggested == {new}  # Anna is over, Carl paused, Sara staff
    # (t-3, in April, is not suggested yet: it is beyond the rolling window)
    assert advice["m-anna"].suggested == frozenset()
    assert advice["m-carl"].suggested == frozenset()
    assert advice["m-sara"].suggested == frozenset()
    assert advice["m-anna"].overloaded == set(ids)  # every window holding them is over
    assert advice["m-bo"].overloaded == frozenset()
    # The same standing, explained, for the dashboard.
    async with store.transaction() as tx:
        found = await offer_fairness(tx, T, new, NOW)
        load = await circle_load(tx, T, "c-1", NOW)
    assert found is not None
    _, standings = found
    assert {
        s.member_id: (s.blocked.value if s.blocked else None, s.suggested) for s in standings
    } == {
        "m-anna": ("over_capacity", False),
        "m-bo": (None, True),
        "m-carl": ("paused", False),
        "m-sara": ("role", False),
    }
    assert load is not None
    anna = next(s for s in load.members if s.member.id == "m-anna")
    assert (anna.load.tasks, anna.capacity_tasks, anna.over) == (10, 4, True)  # 1-29 March
    assert anna.window.period_start == date(2027, 3, 1)
    assert [w.tasks for _, w in anna.weekly][4:9] == [0, 0, 7, 3, 0]  # weeks from 1 March


async def test_the_members_own_setting_and_a_newer_host_decision() -> None:
    store = await seeded()
    own = CareValues(Capacity(1.0, 1), (AvailabilityWindow(2, time(9), time(12)),), None)
    async with store.transaction() as tx:
        saved = await save_own_settings(tx, T, "c-1", "m-anna", own, now=NOW)
        assert await save_own_settings(tx, T, "c-1", "m-nobody", own, now=NOW) is None
    assert saved is not None
    assert saved.fields == {"capacity", "availability"}  # the pause is as the host had it
    async with store.transaction() as tx:
        care = await read_circle_care(tx, T, "c-1")
    anna = care.effective(CIRCLE).member("m-anna")
    assert anna is not None and anna.capacity == Capacity(1.0, 1)

    # The host resends the circle (a new member): Anna's own setting stays.
    dora = Member("m-dora", "Dora", "network", "full")
    resent = Circle(CIRCLE.citizen, 2, (*CIRCLE.members, dora))
    async with store.transaction() as tx:
        await tx.save_circle(T, resent, NOW)
        await settle_member_settings(tx, T, resent, now=NOW)
        assert (await tx.get_member_settings(T, "c-1"))["m-anna"].fields == saved.fields
    # The host changes Anna's capacity: that field is the host's again, her windows stay hers.
    changed = Circle(CIRCLE.citizen, 3, (replace(ANNA, capacity=Capacity(6.0, 4)), BO, CARL))
    async with store.transaction() as tx:
        await tx.save_circle(T, changed, NOW)
        await settle_member_settings(tx, T, changed, now=NOW)
        kept = await tx.get_member_settings(T, "c-1")
        audit = await tx.list_audit(T, "member:m-anna")
    assert kept["m-anna"].fields == {"availability"}
    assert [(a.action, a.detail["fields"]) for a in audit] == [
        ("member.settings", ["availability", "capacity"]),
        ("member.settings.superseded", ["capacity"]),
    ]
    # Sara left the circle (she had no setting); Anna leaving takes hers away.
    async with store.transaction() as tx:
        gone = Circle(CIRCLE.citizen, 4, (BO, CARL))
        await tx.save_circle(T, gone, NOW)
        await settle_member_settings(tx, T, gone, now=NOW)
        assert await tx.get_member_settings(T, "c-1") == {}


async def test_relief_releases_the_coming_claims_in_the_period_and_asks_the_host() -> None:
    store = await seeded(
        weekly("t-1", datetime(2027, 2, 23, 10), 4),  # 23 Feb (past) .. 16 Mar
        weekly("t-2", datetime(2027, 3, 11, 10), 2),  # 11 and 18 March
    )
    t1, t2 = await occurrence_ids(store, "t-1"), await occurrence_ids(store, "t-2")
    async with store.transaction() as tx:
        for occurrence_id in [*t1, *t2]:
            await decide(tx, T, occurrence_id, "m-bo", Ask.CLAIM, channel="link", now=NOW)
    start, end = datetime(2027, 2, 20, tzinfo=CPH), datetime(2027, 3, 15, tzinfo=CPH)
    async with store.transaction() as tx:
        outcome = await request_relief(tx, T, "c-1", "m-bo", start, end, channel="api", now=NOW)
    assert isinstance(outcome, ReliefOutcome) and outcome.created
    # 2 and 9 March (not 23 February: before now) and 11 March are in the period.
    assert sorted(outcome.released) == [
        "t-1_20270302T1000", "t-1_20270309T1000", "t-2_20270311T1000"
    ]  # fmt: skip
    assert "t-1_20270316T1000" in t1 and "t-2_20270318T1000" in t2  # not in it: kept
    assert outcome.request.status == "requested" and outcome.request.start == start
    events = outbox(store)
    [asked] = [e for e in events if e.type == "relief.requested"]
    assert dict(asked.data) == {
        "request_id": outcome.request.id,
        "citizen_id": "c-1",
        "member_id": "m-bo",
        "start": "2027-02-20T00:00:00+01:00",
        "end": "2027-03-15T00:00:00+01:00",
    }
    released = [e.data["occurrence_id"] for e in events if e.type == "task.released"]
    assert sorted(released) == sorted(outcome.released)
    jobs = await store.lease_jobs("t", now=NOW, limit=50, lease_seconds=60)
    assert {j.payload["member_id"] for j in jobs if j.kind == "view.sync"} >= {"m-anna", "m-bo"}
    # Asked again (the same calendar event read twice): nothing more happens.
    async with store.transaction() as tx:
        again = await request_relief(
            tx, T, "c-1", "m-bo", start, end, channel="caldav", now=NOW,
            request_id=outcome.request.id,
        )  # fmt: skip
    assert isinstance(again, ReliefOutcome) and not again.created and again.released == ()
    assert len([e for e in outbox(store) if e.type == "relief.requested"]) == 1
    # While requested, nothing in the period is suggested to Bo.
    async with store.transaction() as tx:
        care = await read_circle_care(tx, T, "c-1")
    assert care.relief_periods()["m-bo"][0].overlaps(start, end)


async def test_relief_refusals() -> None:
    store = await seeded()
    start, end = NOW + timedelta(days=1), NOW + timedelta(days=8)
    async with store.transaction() as tx:
        results = [
            await request_relief(tx, T, "c-9", "m-bo", start, end, channel="api", now=NOW),
            await request_relief(tx, T, "c-1", "m-nobody", start, end, channel="api", now=NOW),
            await request_relief(tx, T, "c-1", "m-sara", start, end, channel="api", now=NOW),
            await request_relief(tx, T, "c-1", "m-bo", end, start, channel="api", now=NOW),
            await request_relief(
                tx, T, "c-1", "m-bo", start, start + timedelta(days=400), channel="api", now=NOW
            ),
        ]
    assert results == [
        ReliefRefusal.UNKNOWN_CIRCLE,
        ReliefRefusal.NOT_IN_CIRCLE,
        ReliefRefusal.ROLE,
        ReliefRefusal.INVALID_PERIOD,
        ReliefRefusal.INVALID_PERIOD,
    ]
    assert outbox(store) == []


def visit(visit_id: str, day: int, citizen_id: str = "c-1") -> Task:
    start = datetime(2027, 3, day, 9)
    return Task(T, visit_id, citizen_id, 1, "visit", "relief", start, start + timedelta(hours=3),
                "Europe/Copenhagen", assigned_member_id="m-sara")  # fmt: skip


async def decide_relief(store: MemoryStore, command: DecideRelief) -> Outcome:
    webhook_id = f"w-{sum((await store.inbox_counts()).values())}"
    await store.accept_webhooks([InboxItem(T, webhook_id, "relief.decided", b"{}", NOW)])

    def decode(entry: InboxEntry) -> HostCommand:
        return command

    [result] = await apply_batch(store, decode, now=NOW, horizon=HORIZON)
    return result.outcome


async def test_relief_decided_puts_the_substitutes_visits_into_the_circles_calendars() -> None:
    store = await seeded()
    request = ReliefRequest(T, "r-1", "c-1", "m-bo", datetime(2027, 3, 8, tzinfo=CPH),
                            datetime(2027, 3, 15, tzinfo=CPH))  # fmt: skip
    async with store.transaction() as tx:
        await tx.save_relief_request(request)
    approved = DecideRelief("r-1", "c-1", 1, "approved", (visit("v-1", 9), visit("v-2", 11)))
    assert await decide_relief(store, approved) is Outcome.APPLIED
    async with store.transaction() as tx:
        stored = await tx.get_relief_request(T, "r-1")
        visits = {v: await tx.get_occurrences(T, v) for v in ("v-1", "v-2")}
    assert stored is not None and (stored.status, stored.version) == ("approved", 1)
    assert all(
        [c.member_id for c in records[0].claims] == ["m-sara"] for records in visits.values()
    )
    jobs = await store.lease_jobs("t", now=NOW, limit=50, lease_seconds=60)
    assert {j.payload["member_id"] for j in jobs if j.kind == "view.sync"} == {
        "m-anna", "m-bo", "m-carl", "m-sara"
    }  # fmt: skip
    # An older decision is stale; one naming another citizen is refused.
    assert (
        await decide_relief(store, replace(approved, status="rejected", visits=())) is Outcome.STALE
    )
    other = DecideRelief("r-1", "c-2", 2, "rejected")
    assert await decide_relief(store, other) is Outcome.STALE
    async with store.transaction() as tx:
        kept = await tx.get_relief_request(T, "r-1")
    assert kept is not None and kept.status == "approved"
