"""Staff assignment on the in-memory store: staff are bound (a claim through channel "staff",
audited, `task.claimed`), anyone else is asked (a targeted offer, never a claim), and every
refusal names why."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapters.memory import MemoryStore
from plugin.domain.model import Circle, Citizen, Member, Occurrence, Pass, Task, TaskKind
from plugin.services.assign import Assigned, AssignOutcome, AssignRefusal, assign_occurrence
from plugin.services.claiming import Ask, decide

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
START = datetime(2027, 3, 23, 10, tzinfo=ZoneInfo("Europe/Copenhagen"))
ANNA = Member("m-anna", "Anna", "relative", "full", calendar="hosted")
BO = Member("m-bo", "Bo", "network", "limited", locale="en", calendar="feed")
SARA = Member("m-sara", "Sara", "staff", "full", calendar="hosted")
KIM = Member("m-kim", "Kim", "relative", "full", calendar="hosted")  # in another circle
TASK = Task("north", "t-1", "c-123", 1, "task", "shopping", START.replace(tzinfo=None),
            START.replace(tzinfo=None) + timedelta(hours=1), "Europe/Copenhagen")  # fmt: skip


async def seeded(kind: TaskKind = "task", people: int = 1) -> MemoryStore:
    store = MemoryStore()
    task = replace(TASK, kind=kind, people_needed=people)
    if kind == "visit":
        task = replace(task, assigned_member_id="m-sara")
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", Circle(Citizen("north", "c-123", "Fru Jensen"), 1,
                                             (ANNA, BO, SARA)), NOW)  # fmt: skip
        await tx.save_circle("north", Circle(Citizen("north", "c-9", "Hr. Berg"), 1, (KIM,)), NOW)
        await tx.save_task(task)
        await tx.sync_occurrences(
            "north", "t-1", [Occurrence("o-1", "t-1", START, START + timedelta(hours=1))]
        )
    return store


async def assign(store: MemoryStore, member_id: str, occurrence_id: str = "o-1") -> object:
    return await assign_occurrence(store, "north", occurrence_id, member_id, actor="api", now=NOW)


async def queued_views(store: MemoryStore) -> list[str]:
    jobs = await store.lease_jobs("t", now=NOW + timedelta(days=1), limit=50, lease_seconds=9)
    for job in jobs:
        await store.finish_job(job.id, "t")
    return sorted(str(job.payload["member_id"]) for job in jobs if job.kind == "view.sync")


async def test_a_staff_member_is_bound_through_channel_staff() -> None:
    store = await seeded()
    await queued_views(store)  # what seeding queued

    result = await assign(store, "m-sara")

    assert isinstance(result, Assigned) and result.outcome is AssignOutcome.ASSIGNED
    assert [(c.member_id, c.channel) for c in result.record.claims] == [("m-sara", "staff")]
    assert await queued_views(store) == ["m-anna", "m-sara"]  # hosted members' calendars
    [event] = await store.due_outbox(now=NOW, limit=10)
    assert event.type == "task.claimed"
    assert event.data["member_id"] == "m-sara" and event.data["channel"] == "staff"
    async with store.transaction() as tx:
        actions = [(a.actor, a.action, a.channel) for a in await tx.list_audit("north")]
    assert ("m-sara", "occurrence.claim", "staff") in actions
    assert ("api", "occurrence.assign", "staff") in actions

    again = await assign(store, "m-sara")
    assert isinstance(again, Assigned) and again.outcome is AssignOutcome.ALREADY_HELD


async def test_a_relative_is_asked_and_nothing_is_claimed_for_them() -> None:
    store = await seeded()
    await queued_views(store)

    result = await assign(store, "m-anna")

    assert isinstance(result, Assigned) and result.outcome is AssignOutcome.ASKED
    assert result.record.claims == ()
    assert [(o.member_id, o.at) for o in result.record.offers] == [("m-anna", NOW)]
    assert await queued_views(store) == ["m-anna"]  # only her copy changes
    assert await store.due_outbox(now=NOW, limit=10) == []  # nothing for the host yet

    again = await assign(store, "m-anna")
    assert isinstance(again, Assigned) and again.outcome is AssignOutcome.ALREADY_ASKED

    # Someone from the network is asked the same way.
    bo = await assign(store, "m-bo")
    assert isinstance(bo, Assigned) and bo.outcome is AssignOutcome.ASKED


async def test_a_member_who_passed_is_not_asked_again() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        await tx.add_pass("north", Pass("o-1", "m-anna", NOW))
    result = await assign(store, "m-anna")
    assert isinstance(result, Assigned) and result.outcome is AssignOutcome.DECLINED
    assert result.record.offers == ()


async def test_a_holder_is_already_held_whatever_their_role() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        await decide(tx, "north", "o-1", "m-anna", Ask.CLAIM, channel="link", now=NOW)
    result = await assign(store, "m-anna")
    assert isinstance(result, Assigned) and result.outcome is AssignOutcome.ALREADY_HELD


@pytest.mark.parametrize(
    ("member_id", "occurrence_id", "refusal"),
    [
        ("m-sara", "nope", AssignRefusal.UNKNOWN_OCCURRENCE),
        ("m-nobody", "o-1", AssignRefusal.UNKNOWN_MEMBER),
        ("m-kim", "o-1", AssignRefusal.NOT_IN_CIRCLE),
    ],
)
async def test_unknown_things_are_refused(
    member_id: str, occurrence_id: str, refusal: AssignRefusal
) -> None:
    store = await seeded()
    assert await assign(store, member_id, occurrence_id) is refusal


async def test_a_full_occurrence_is_refused_for_staff_and_relatives() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        await decide(tx, "north", "o-1", "m-bo", Ask.CLAIM, channel="link", now=NOW)
    assert await assign(store, "m-sara") is AssignRefusal.FULL
    assert await assign(store, "m-anna") is AssignRefusal.FULL


async def test_visits_cancelled_and_ended_occurrences_are_refused() -> None:
    assert await assign(await seeded("visit"), "m-sara") is AssignRefusal.VISIT
    store = await seeded()
    async with store.transaction() as tx:
        await tx.sync_occurrences("north", "t-1", [])
    assert await assign(store, "m-sara") is AssignRefusal.CANCELLED
    late = await assign_occurrence(
        await seeded(), "north", "o-1", "m-sara", actor="api", now=START + timedelta(hours=2)
    )
    assert late is AssignRefusal.OVER


async def test_a_second_staff_member_takes_the_second_slot() -> None:
    store = await seeded(people=2)
    async with store.transaction() as tx:
        await tx.save_circle(
            "north",
            Circle(Citizen("north", "c-123", "Fru Jensen"), 2,
                   (ANNA, SARA, replace(SARA, id="m-ole", name="Ole"))),
            NOW,
        )  # fmt: skip
    first, second = await assign(store, "m-sara"), await assign(store, "m-ole")
    assert isinstance(first, Assigned) and isinstance(second, Assigned)
    assert sorted(c.member_id for c in second.record.claims) == ["m-ole", "m-sara"]
    assert await assign(store, "m-anna") is AssignRefusal.FULL
