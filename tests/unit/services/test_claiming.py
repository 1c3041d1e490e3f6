"""Claim, release and pass through `claiming.decide`, on the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from adapters.memory import MemoryStore
from plugin.domain.claims import ClaimOutcome
from plugin.domain.model import Occurrence, Task
from plugin.services.claiming import Ask, decide

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
START = datetime(2027, 3, 23, 10, tzinfo=ZoneInfo("Europe/Copenhagen"))


async def seeded() -> MemoryStore:
    store = MemoryStore()
    task = Task("north", "t-1", "c-123", 1, "task", "shopping", START.replace(tzinfo=None),
                START.replace(tzinfo=None) + timedelta(hours=1), "Europe/Copenhagen")  # fmt: skip
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_task(task)
        await tx.sync_occurrences(
            "north", "t-1", [Occurrence("o-1", "t-1", START, START + timedelta(hours=1))]
        )
    return store


async def test_first_come_first_served_with_audit_and_host_events() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        won = await decide(tx, "north", "o-1", "m-anna", Ask.CLAIM, channel="caldav", now=NOW)
        lost = await decide(tx, "north", "o-1", "m-bo", Ask.CLAIM, channel="caldav", now=NOW)
        passed = await decide(tx, "north", "o-1", "m-anna", Ask.PASS, channel="caldav", now=NOW)
        record = await tx.lock_occurrence("north", "o-1")
        audit = await tx.list_audit("north", "occurrence:o-1")
    assert won is not None and won.outcome is ClaimOutcome.CLAIMED
    assert lost is not None and lost.outcome is ClaimOutcome.FULL
    assert passed is not None and passed.outcome is ClaimOutcome.PASSED
    assert record is not None and record.claims == ()
    assert [p.member_id for p in record.passes] == ["m-anna"]
    assert [(a.actor, a.action, a.channel, a.detail["outcome"]) for a in audit] == [
        ("m-anna", "occurrence.claim", "caldav", "claimed"),
        ("m-bo", "occurrence.claim", "caldav", "full"),
        ("m-anna", "occurrence.pass", "caldav", "passed"),
    ]
    events = await store.due_outbox(now=NOW, limit=10)
    assert [(e.type, e.data["member_id"], e.data["channel"]) for e in events] == [
        ("task.claimed", "m-anna", "caldav")
    ]  # one at a time per occurrence: the release waits behind the claim
    await store.mark_outbox_delivered(events[0].id, now=NOW)
    events = await store.due_outbox(now=NOW, limit=10)
    assert [(e.type, e.data["occurrence_id"]) for e in events] == [("task.released", "o-1")]


async def test_claiming_after_a_pass_takes_the_pass_back() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        await decide(tx, "north", "o-1", "m-anna", Ask.PASS, channel="caldav", now=NOW)
        await decide(tx, "north", "o-1", "m-anna", Ask.CLAIM, channel="caldav", now=NOW)
        record = await tx.lock_occurrence("north", "o-1")
        unknown = await decide(tx, "north", "nope", "m-anna", Ask.CLAIM, channel="link", now=NOW)
    assert record is not None and record.passes == ()
    assert [c.member_id for c in record.claims] == ["m-anna"]
    assert unknown is None
