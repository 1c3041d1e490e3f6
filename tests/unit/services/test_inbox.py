"""The inbox writer (group commit) and applier on the in-memory store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory import MemoryStore
from plugin.services.commands import HostCommand, UpsertTask
from plugin.services.inbox import InboxApplier, InboxWriter
from plugin.services.ingest import Outcome, apply_batch
from plugin.services.ports import InboxEntry, InboxItem, StoreUnavailable
from plugin.web.app import decode_entry

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
HORIZON = timedelta(weeks=8)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def accept_webhooks(self, items: Sequence[InboxItem]) -> list[bool]:
        self.batches.append(len(items))
        await asyncio.sleep(0.001)  # a commit takes time; arrivals meanwhile form the next batch
        return await super().accept_webhooks(items)


def task_body(task_id: str, version: int = 1) -> bytes:
    return json.dumps({"type": "task.upserted", "data": {
        "id": task_id, "citizen_id": "c-1", "version": version, "kind": "task",
        "category": "shopping", "start": "2027-03-16T10:00:00", "end": "2027-03-16T11:00:00",
        "timezone": "Europe/Copenhagen", "people_needed": 1}}).encode()  # fmt: skip


def item(webhook_id: str, body: bytes | None = None, tenant: str = "north") -> InboxItem:
    return InboxItem(tenant, webhook_id, "task.upserted", body or task_body(webhook_id), NOW)


async def test_concurrent_accepts_share_transactions() -> None:
    store = CountingStore()
    writer = InboxWriter(store)
    results = await asyncio.gather(*(writer.accept(item(f"w{i}")) for i in range(200)))
    await writer.close()
    assert results == [True] * 200
    assert sum(store.batches) == 200
    assert len(store.batches) < 20, store.batches  # group commit, not one per request


async def test_duplicates_are_reported_within_and_across_batches() -> None:
    store = MemoryStore()
    writer = InboxWriter(store)
    first = await asyncio.gather(writer.accept(item("a")), writer.accept(item("a")))
    again = await writer.accept(item("a"))
    other_tenant = await writer.accept(item("a", tenant="south"))
    await writer.close()
    assert sorted(first) == [False, True]
    assert (again, other_tenant) == (False, True)


async def test_a_store_outage_reaches_every_waiter_and_records_nothing() -> None:
    store = MemoryStore()
    writer = InboxWriter(store)
    store.unavailable = True
    results = await asyncio.gather(
        *(writer.accept(item(f"w{i}")) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    store.unavailable = False
    assert await writer.accept(item("w0")) is True  # it was never recorded
    await writer.close()


async def test_an_entry_that_cannot_be_applied_is_marked_failed_and_skipped() -> None:
    store = MemoryStore()
    await store.accept_webhooks([item("bad"), item("good")])

    def decode(entry: InboxEntry) -> HostCommand:
        if entry.webhook_id == "bad":
            raise RuntimeError("a bug")
        return decode_entry(entry)

    first, second = await apply_batch(store, decode, now=NOW, horizon=HORIZON)
    assert (first.entry.webhook_id, first.outcome) == ("bad", Outcome.FAILED)
    assert (second.entry.webhook_id, second.outcome) == ("good", Outcome.APPLIED)
    assert await apply_batch(store, decode, now=NOW, horizon=HORIZON) == []
    assert (await store.inbox_counts()).get("failed") == 1
    async with store.transaction() as tx:
        assert await tx.get_task("north", "good") is not None


async def test_a_store_outage_while_applying_leaves_the_entry_pending() -> None:
    store = MemoryStore()
    await store.accept_webhooks([item("t-1")])
    store.unavailable = True
    with pytest.raises(StoreUnavailable):
        await apply_batch(store, decode_entry, now=NOW, horizon=HORIZON)
    store.unavailable = False
    [result] = await apply_batch(store, decode_entry, now=NOW, horizon=HORIZON)
    assert result.outcome is Outcome.APPLIED


async def test_applier_applies_in_arrival_order_and_newest_version_wins() -> None:
    store = MemoryStore()
    await store.accept_webhooks([item("v2", task_body("t-1", 2)), item("v1", task_body("t-1", 1))])
    seen: list[tuple[str, Any]] = []
    applier = InboxApplier(
        store, decode_entry, clock=lambda: NOW, horizon=HORIZON, poll_seconds=0.01,
        on_applied=lambda r: seen.append((r.entry.webhook_id, r.outcome)),
    )  # fmt: skip
    assert await applier.catch_up() == 2
    assert seen == [("v2", Outcome.APPLIED), ("v1", Outcome.STALE)]
    async with store.transaction() as tx:
        task = await tx.get_task("north", "t-1")
    assert task is not None and task.version == 2


async def test_applier_wakes_when_notified() -> None:
    store = MemoryStore()
    applier = InboxApplier(store, decode_entry, clock=lambda: NOW, horizon=HORIZON,
                           poll_seconds=60)  # fmt: skip
    running = asyncio.create_task(applier.run())
    await asyncio.sleep(0.01)
    await store.accept_webhooks([item("t-1")])
    applier.notify()
    for _ in range(100):
        if (await store.inbox_counts()).get("applied") == 1:
            break
        await asyncio.sleep(0.01)
    applier.stop()
    await running
    assert (await store.inbox_counts()).get("applied") == 1


def test_upsert_decodes_to_a_domain_command() -> None:
    entry = InboxEntry(1, "north", "w", "task.upserted", task_body("t-1"), NOW)
    command = decode_entry(entry)
    assert isinstance(command, UpsertTask)
    assert command.task.tenant_id == "north"


async def test_a_failed_entry_leaves_no_partial_writes_behind() -> None:
    store = MemoryStore()
    await store.accept_webhooks([item("before"), item("broken"), item("after")])

    def decode(entry: InboxEntry) -> HostCommand:
        command = decode_entry(entry)
        assert isinstance(command, UpsertTask)
        if entry.webhook_id != "broken":
            return command
        # Saved first, then expanding the rule fails: the savepoint must undo the save.
        return UpsertTask(replace(command.task, recurrence="NOT A RULE"))

    results = await apply_batch(store, decode, now=NOW, horizon=HORIZON)
    assert [r.outcome for r in results] == [Outcome.APPLIED, Outcome.FAILED, Outcome.APPLIED]
    async with store.transaction() as tx:
        assert await tx.get_task("north", "before") is not None
        assert await tx.get_task("north", "broken") is None
        assert await tx.get_task("north", "after") is not None
        audit = await tx.list_audit("north")
    assert [e.detail["outcome"] for e in audit] == ["applied", "failed", "applied"]


async def test_background_applier_defers_to_ingestion_but_reads_do_not() -> None:
    store = MemoryStore()
    ingestion_idle = asyncio.Event()
    applier = InboxApplier(
        store, decode_entry, clock=lambda: NOW, horizon=HORIZON, poll_seconds=0.01,
        defer_to=ingestion_idle.wait,
    )  # fmt: skip
    running = asyncio.create_task(applier.run())
    await store.accept_webhooks([item("t-1")])
    applier.notify()
    await asyncio.sleep(0.05)
    assert (await store.inbox_counts()).get("pending") == 1  # the writer is busy: wait
    assert await applier.catch_up() == 1  # an API read catches up regardless
    await store.accept_webhooks([item("t-2")])
    ingestion_idle.set()
    applier.notify()
    for _ in range(100):
        if (await store.inbox_counts()).get("applied") == 2:
            break
        await asyncio.sleep(0.01)
    applier.stop()
    await running
    assert (await store.inbox_counts()).get("applied") == 2


async def test_writer_reports_idle_only_when_nothing_is_queued_or_written() -> None:
    store = CountingStore()
    writer = InboxWriter(store)
    accepting = asyncio.gather(*(writer.accept(item(f"w{i}")) for i in range(50)))
    await asyncio.sleep(0)
    assert not writer._idle.is_set()
    await accepting
    await asyncio.wait_for(writer.wait_idle(), timeout=1)
    await writer.close()
