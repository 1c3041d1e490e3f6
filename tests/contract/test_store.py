"""The Store/Tx contract, run against MemoryStore, SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select

from adapters.memory import MemoryStore
from adapters.store.sql import SqlStore
from adapters.store.tables import inbox, memberships, outbox, tenants
from plugin.domain.model import (
    AvailabilityWindow,
    Capacity,
    Circle,
    Citizen,
    Claim,
    ExternalCalendar,
    Member,
    Occurrence,
    Pass,
    ReliefRequest,
    Task,
    TaskStatus,
)
from plugin.services.claiming import Ask, decide_recorded
from plugin.services.ports import (
    AuditEntry,
    Conflict,
    InboxEntry,
    InboxItem,
    InboxStatus,
    KeyedJob,
    Store,
    StoreError,
    StoreUnavailable,
)
from plugin.services.view_sync import enqueue_view_syncs
from tests.contract.support import Backend

T = "demo"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CPH = ZoneInfo("Europe/Copenhagen")

ANNA = Member(
    id="m-anna",
    name="Anna",
    role="relative",
    visibility="full",
    email="anna@example.org",
    capacity=Capacity(hours_per_week=4.5, tasks_per_week=3),
    availability=(AvailabilityWindow(1, time(16, 0), time(20, 0)),),
    paused_until=date(2027, 4, 1),
)
BO = Member(
    id="m-bo",
    name="Bo",
    role="network",
    visibility="limited",
    locale="en",
    calendar="external",
    external=ExternalCalendar("https://dav.example.org/bo/", "bo", "s3cret"),
)
SARA = Member(id="m-sara", name="Sara", role="staff", visibility="full", calendar="feed")
CITIZEN = Citizen(tenant_id=T, id="c-1", display_name="Fru Jensen")


def circle(*members: Member, version: int = 1) -> Circle:
    return Circle(citizen=CITIZEN, version=version, members=members)


def task(task_id: str = "t-1", **changes: object) -> Task:
    base = Task(
        tenant_id=T,
        id=task_id,
        citizen_id="c-1",
        version=1,
        kind="task",
        category="shopping",
        start=datetime(2027, 3, 23, 10),
        end=datetime(2027, 3, 23, 11),
        timezone="Europe/Copenhagen",
        people_needed=2,
        details="Netto",
        recurrence="FREQ=WEEKLY;COUNT=3",
        exdates=(datetime(2027, 3, 30, 10),),
        rdates=(datetime(2027, 4, 2, 9, 30),),
        claim_deadline_hours=24,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def occ(n: int, task_id: str = "t-1", hour: int = 10) -> Occurrence:
    """The n-th weekly occurrence; wall-clock arithmetic, so it stays at `hour` across DST."""
    start = datetime(2027, 3, 23, hour, tzinfo=CPH) + timedelta(days=7 * n)
    return Occurrence(
        id=f"{task_id}@{n}", task_id=task_id, start=start, end=start + timedelta(hours=1)
    )


async def seed_task(store: Store, *occurrences: Occurrence, people_needed: int = 2) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_task(task(people_needed=people_needed))
        await tx.sync_occurrences(T, "t-1", occurrences)


# basics


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_ensure_tenant_is_idempotent(store: Store) -> None:
    for _ in range(2):
        async with store.transaction() as tx:
            await tx.ensure_tenant(T)


async def test_rollback_on_exception_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.ensure_tenant(T)
            await tx.save_circle(T, circle(ANNA), NOW)
            await tx.save_task(task())
            await tx.enqueue_job(T, "sync", {}, run_at=NOW)
            await tx.add_outbox(T, "task.claimed", {}, now=NOW)
            raise RuntimeError("boom")
    async with store.transaction() as tx:
        assert await tx.get_circle(T, "c-1") is None
        assert await tx.get_task(T, "t-1") is None
    assert (await store.job_counts())["queued"] == 0
    assert await store.due_outbox(now=NOW, limit=10) == []


async def test_savepoint_that_raises_keeps_the_rest_of_the_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        async with tx.savepoint():  # the first thing the transaction does
            await tx.ensure_tenant(T)
        await tx.save_task(task("t-before"))
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await tx.save_task(task("t-inside"))
                await tx.save_task(task("t-before", version=9))
                await tx.save_circle(T, circle(ANNA), NOW)
                await tx.enqueue_job(T, "sync", {}, run_at=NOW)
                await tx.audit(AuditEntry(T, NOW, "host", "x", "host", "inside"))
                raise RuntimeError("boom")
        # undone at once, within the transaction
        assert await tx.get_task(T, "t-inside") is None
        assert await tx.get_task(T, "t-before") == task("t-before")
        await tx.save_task(task("t-after"))
        await tx.audit(AuditEntry(T, NOW, "host", "x", "host", "after"))
    async with store.transaction() as tx:
        assert await tx.get_task(T, "t-before") == task("t-before")
        assert await tx.get_task(T, "t-after") == task("t-after")
        assert await tx.get_task(T, "t-inside") is None
        assert await tx.get_circle(T, "c-1") is None
        assert [e.subject for e in await tx.list_audit(T)] == ["after"]
    assert (await store.job_counts())["queued"] == 0


async def test_savepoint_that_succeeds_commits_with_the_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        async with tx.savepoint():
            await tx.save_task(task())
            async with tx.savepoint():  # nested in turn
                await tx.sync_occurrences(T, "t-1", [occ(0)])
            with pytest.raises(RuntimeError):
                async with tx.savepoint():
                    await tx.sync_occurrences(T, "t-1", [occ(1)])
                    raise RuntimeError("boom")
            await tx.add_claim(T, Claim("t-1@0", "m-anna", "link", NOW))
    async with store.transaction() as tx:
        assert await tx.get_task(T, "t-1") == task()
        [record] = await tx.get_occurrences(T, "t-1")
    assert record.occurrence == occ(0) and [c.member_id for c in record.claims] == ["m-anna"]


async def test_store_error_in_a_savepoint_leaves_the_transaction_usable(store: Store) -> None:
    """A statement the database refuses (on PostgreSQL that aborts the transaction) is undone
    by the savepoint alone, and comes out as the store's own error."""
    await seed_task(store, occ(0))
    async with store.transaction() as tx:
        await tx.add_pass(T, Pass("t-1@0", "m-bo", NOW))
        with pytest.raises(StoreError):
            async with tx.savepoint():
                await tx.add_claim(T, Claim("t-1@0", "m-anna", "link", NOW))
                await tx.add_claim(T, Claim("nope", "m-anna", "link", NOW))
        await tx.add_claim(T, Claim("t-1@0", "m-sara", "api", NOW))
    async with store.transaction() as tx:
        record = await tx.lock_occurrence(T, "t-1@0")
    assert record is not None
    assert [c.member_id for c in record.claims] == ["m-sara"]
    assert [p.member_id for p in record.passes] == ["m-bo"]


# the webhook inbox


def item(webhook_id: str, tenant_id: str = T, *, at: datetime = NOW) -> InboxItem:
    return InboxItem(
        tenant_id=tenant_id,
        webhook_id=webhook_id,
        event_type="task.upserted",
        body=f'{{"id": "{tenant_id}/{webhook_id}"}}'.encode(),
        received_at=at,
    )


@dataclass(frozen=True)
class StoredEntry:
    status: str
    body: bytes | None
    finished_at: datetime | None
    error: str | None


async def stored_inbox(store: Store) -> dict[tuple[str, str], StoredEntry]:
    """Every inbox entry as stored, finished ones included (the port shows only pending ones)."""
    if isinstance(store, MemoryStore):
        rows: list[Any] = list(store._state.inbox.values())
    else:
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as connection:
            rows = list(await connection.execute(select(inbox)))
    return {
        (row.tenant_id, row.webhook_id): StoredEntry(
            row.status, row.body, row.finished_at, row.error
        )
        for row in rows
    }


async def drain(store: Store, batch: int = 1) -> list[InboxEntry]:
    """Apply every pending entry, `batch` per transaction and each in a savepoint, as the
    applier does."""
    applied: list[InboxEntry] = []
    while True:
        async with store.transaction() as tx:
            entries = await tx.pending_webhooks(batch)
            if not entries:
                return applied
            for entry in entries:
                async with tx.savepoint():
                    await tx.finish_webhook(entry.seq, status="applied", now=NOW)
        applied.extend(entries)


async def head(store: Store) -> InboxEntry | None:
    async with store.transaction() as tx:
        found = await tx.pending_webhooks(1)
    return found[0] if found else None


async def test_accept_webhooks_reports_new_and_duplicate_ids(store: Store) -> None:
    assert await store.accept_webhooks([]) == []
    first = [item("wh-1"), item("wh-2"), item("wh-1"), item("wh-1", "other"), item("wh-2")]
    assert await store.accept_webhooks(first) == [True, True, False, True, False]
    # Across batches; the same id in another tenant is a different webhook.
    again = [item("wh-3"), item("wh-1"), item("wh-1", "other"), item("wh-3"), item("wh-2", "x")]
    assert await store.accept_webhooks(again) == [True, False, False, False, True]
    assert await store.accept_webhooks([item("wh-3"), item("wh-3")]) == [False, False]
    assert await store.inbox_counts() == {"pending": 5, "applied": 0, "stale": 0, "failed": 0}


async def test_accept_webhooks_creates_unknown_tenants(store: Store) -> None:
    await store.accept_webhooks([item("wh-1", "new-a"), item("wh-1", "new-b"), item("wh-2")])
    await store.accept_webhooks([item("wh-1", "new-a")])  # known now: nothing to do
    if isinstance(store, MemoryStore):
        found = set(store._state.tenants)
    else:
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as connection:
            found = set((await connection.execute(select(tenants.c.id))).scalars())
    assert found == {"new-a", "new-b", T}


async def test_pending_webhooks_come_out_in_arrival_order(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.pending_webhooks(10) == []
    later = NOW + timedelta(seconds=1)
    await store.accept_webhooks([item("wh-c"), item("wh-a"), item("wh-b", "other")])
    await store.accept_webhooks([item("wh-a"), item("wh-0", at=later), item("wh-z")])
    async with store.transaction() as tx:
        [first] = await tx.pending_webhooks(1)
        assert [first] == await tx.pending_webhooks(1)  # reading does not take it
    assert (first.tenant_id, first.webhook_id, first.event_type) == (T, "wh-c", "task.upserted")
    assert first.body == b'{"id": "demo/wh-c"}' and first.received_at == NOW

    applied = await drain(store)
    assert [(e.tenant_id, e.webhook_id) for e in applied] == [
        (T, "wh-c"),
        (T, "wh-a"),
        ("other", "wh-b"),
        (T, "wh-0"),
        (T, "wh-z"),
    ]
    assert [e.seq for e in applied] == sorted({e.seq for e in applied})
    assert applied[3].received_at == later
    assert await head(store) is None
    assert await store.inbox_counts() == {"pending": 0, "applied": 5, "stale": 0, "failed": 0}
    # An applied id stays a duplicate.
    assert await store.accept_webhooks([item("wh-c")]) == [False]


async def test_finish_webhook_drops_the_body_unless_failed(store: Store) -> None:
    await store.accept_webhooks([item("wh-1"), item("wh-2"), item("wh-3"), item("wh-4")])
    later = NOW + timedelta(minutes=1)
    outcomes: list[tuple[InboxStatus, str | None]] = [
        ("applied", None),
        ("stale", None),
        ("failed", "boom " * 400),  # 2000 characters: kept cut to the column's bound
    ]
    async with store.transaction() as tx:
        entries = await tx.pending_webhooks(3)
        for entry, (status, error) in zip(entries, outcomes, strict=True):
            await tx.finish_webhook(entry.seq, status=status, now=later, error=error)
    stored = await stored_inbox(store)
    assert stored[T, "wh-1"] == StoredEntry("applied", None, later, None)
    assert stored[T, "wh-2"] == StoredEntry("stale", None, later, None)
    failed = stored[T, "wh-3"]
    assert (failed.status, failed.body, failed.finished_at) == (
        "failed",
        b'{"id": "demo/wh-3"}',
        later,
    )
    assert failed.error is not None and failed.error == ("boom " * 400)[: len(failed.error)]
    assert 100 <= len(failed.error) <= 1000
    assert stored[T, "wh-4"] == StoredEntry("pending", b'{"id": "demo/wh-4"}', None, None)
    assert await store.inbox_counts() == {"pending": 1, "applied": 1, "stale": 1, "failed": 1}
    entry = await head(store)
    assert entry is not None and entry.webhook_id == "wh-4"


async def test_rolled_back_finish_leaves_the_webhook_pending(store: Store) -> None:
    await store.accept_webhooks([item("wh-1")])
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            [entry] = await tx.pending_webhooks(5)
            await tx.finish_webhook(entry.seq, status="applied", now=NOW)
            raise RuntimeError("boom")
    again = await head(store)
    assert again is not None and again.webhook_id == "wh-1"
    assert again.body == b'{"id": "demo/wh-1"}'
    assert await store.inbox_counts() == {"pending": 1, "applied": 0, "stale": 0, "failed": 0}


async def test_finished_webhooks_are_purged_once_applied_long_enough_ago(store: Store) -> None:
    names = ("old-applied", "old-stale", "old-failed", "new-applied", "pending")
    await store.accept_webhooks([item(name) for name in names])
    old, new = NOW - timedelta(days=8), NOW - timedelta(days=6)
    outcomes: list[tuple[InboxStatus, datetime]] = [
        ("applied", old),
        ("stale", old),
        ("failed", old),
        ("applied", new),
    ]
    async with store.transaction() as tx:
        entries = await tx.pending_webhooks(4)
        for entry, (status, at) in zip(entries, outcomes, strict=True):
            await tx.finish_webhook(entry.seq, status=status, now=at)

    assert await store.purge_finished_webhooks(finished_before=NOW - timedelta(days=7)) == 2
    # The failed one keeps its body for an operator; the pending one is still to be applied.
    assert sorted(name for _, name in await stored_inbox(store)) == [
        "new-applied",
        "old-failed",
        "pending",
    ]
    assert await store.purge_finished_webhooks(finished_before=NOW - timedelta(days=7)) == 0
    entry = await head(store)
    assert entry is not None and entry.webhook_id == "pending"
    # A forgotten id is recorded as new; one still kept is a duplicate.
    assert await store.accept_webhooks([item("old-applied"), item("new-applied")]) == [True, False]


async def test_a_large_history_of_webhooks_is_purged_in_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapters.store.sql.PURGE_BATCH", 5)  # SQL: 5 + 5 + 2
    await store.accept_webhooks([item(f"wh-{n}") for n in range(12)])
    assert len(await drain(store, batch=12)) == 12
    assert await store.purge_finished_webhooks(finished_before=NOW + timedelta(seconds=1)) == 12
    assert await stored_inbox(store) == {}


async def test_concurrent_batches_accept_each_webhook_once(backend: Backend) -> None:
    stores = [backend.store, await backend.another()]
    pool = [item(f"wh-{n}", tenant_id=(T, "other")[n % 2]) for n in range(200)]
    # 20 batches of 50 drawn from 200 webhooks, each in its own order: batches overlap, and
    # two of them holding the same ids in opposite orders would deadlock on PostgreSQL
    # without a common lock (each waits for the other's uncommitted row).
    batches = [random.Random(n).sample(pool, 50) for n in range(20)]
    batches[0] = [*batches[0][:40], *batches[0][:10]]  # duplicates within a batch too
    results = await asyncio.gather(
        *(stores[n % 2].accept_webhooks(batch) for n, batch in enumerate(batches))
    )
    times_new: dict[tuple[str, str], int] = {}
    for batch, accepted in zip(batches, results, strict=True):
        assert len(accepted) == len(batch)
        for one, new in zip(batch, accepted, strict=True):
            key = (one.tenant_id, one.webhook_id)
            times_new[key] = times_new.get(key, 0) + new
    assert set(times_new.values()) == {1}
    assert (await backend.store.inbox_counts())["pending"] == len(times_new)


@pytest.mark.parametrize("batch", [1, 4])
async def test_concurrent_appliers_apply_each_webhook_once(backend: Backend, batch: int) -> None:
    await backend.store.accept_webhooks([item(f"wh-{n:02}") for n in range(30)])
    stores = [backend.store, await backend.another(), await backend.another()]
    drained = await asyncio.gather(*(drain(store, batch) for store in stores))
    applied = sorted(e.webhook_id for entries in drained for e in entries)
    assert applied == [f"wh-{n:02}" for n in range(30)]
    assert await store_counts(backend.store) == (0, 30)
    for entries in drained:  # each applier took them in arrival order
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)


async def store_counts(store: Store) -> tuple[int, int]:
    counts = await store.inbox_counts()
    return counts["pending"], counts["applied"]


async def test_pending_webhooks_respects_limit_and_order(store: Store) -> None:
    await store.accept_webhooks([item(f"wh-{n}") for n in range(7)])
    async with store.transaction() as tx:
        assert await tx.pending_webhooks(0) == []
        three = await tx.pending_webhooks(3)
        assert [e.webhook_id for e in three] == ["wh-0", "wh-1", "wh-2"]
        everything = await tx.pending_webhooks(100)
        assert [e.webhook_id for e in everything] == [f"wh-{n}" for n in range(7)]
        assert everything[:3] == three
        await tx.finish_webhook(three[1].seq, status="applied", now=NOW)
        await tx.finish_webhook(three[2].seq, status="failed", now=NOW, error="x")
        # finished entries drop out at once, within the same transaction
        after = await tx.pending_webhooks(3)
    assert [e.webhook_id for e in after] == ["wh-0", "wh-3", "wh-4"]
    drained = await drain(store, batch=2)
    assert [e.webhook_id for e in drained] == ["wh-0", "wh-3", "wh-4", "wh-5", "wh-6"]


async def test_large_batches_are_split_below_the_parameter_limit(store: Store) -> None:
    batch = [item(f"wh-{n}") for n in range(6000)]  # 36000 parameters, SQLite allows 32766
    assert await store.accept_webhooks(batch) == [True] * 6000
    assert await store.accept_webhooks([*batch[-10:], item("new")]) == [False] * 10 + [True]


async def test_sql_accept_webhooks_sends_one_insert_per_batch(backend: Backend) -> None:
    store = backend.store
    if not isinstance(store, SqlStore):
        pytest.skip("SQL adapters only")
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        batch = [item(f"wh-{n}", tenant_id=(T, "other")[n % 2]) for n in range(100)]
        assert await store.accept_webhooks(batch) == [True] * 100
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    inserts = [s for s in sent if s.startswith("INSERT")]
    assert [s.split(" (")[0] for s in inserts] == ["INSERT INTO tenants", "INSERT INTO inbox"]
    assert "ON CONFLICT (tenant_id, webhook_id) DO NOTHING RETURNING" in inserts[1]
    assert inserts[1].count("), (") == 99  # one row of VALUES per webhook


# circles


async def test_circle_round_trip(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.get_circle(T, "c-1") is None
        change = await tx.save_circle(T, circle(ANNA, BO, SARA, version=3), NOW)
    assert sorted(change.added) == ["m-anna", "m-bo", "m-sara"]
    assert change.removed == () and change.changed == ()
    async with store.transaction() as tx:
        assert await tx.get_circle(T, "c-1") == circle(ANNA, BO, SARA, version=3)
        assert await tx.get_circle("other", "c-1") is None


async def test_save_circle_reports_removed_changed_and_readded(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_circle(T, circle(ANNA, BO, SARA), NOW)
    later = NOW + timedelta(hours=1)
    bo_limited = replace(BO, visibility="full")
    async with store.transaction() as tx:
        change = await tx.save_circle(T, circle(bo_limited, ANNA, version=2), later)
    assert change.added == () and change.removed == ("m-sara",) and change.changed == ("m-bo",)
    async with store.transaction() as tx:
        stored = await tx.get_circle(T, "c-1")
        assert stored == circle(bo_limited, ANNA, version=2)
        # Removing again reports nothing; coming back counts as added.
        assert (await tx.save_circle(T, circle(bo_limited, ANNA), later)).removed == ()
        change = await tx.save_circle(T, circle(bo_limited, ANNA, SARA), later)
    assert change.added == ("m-sara",) and change.removed == ()


async def test_external_password_is_not_stored_in_clear(backend: Backend) -> None:
    async with backend.store.transaction() as tx:
        await tx.save_circle(T, circle(BO), NOW)
    if not isinstance(backend.store, SqlStore):
        return
    async with backend.store.engine.connect() as connection:
        raw = (await connection.execute(select(memberships.c.external_password_enc))).scalar_one()
    assert b"s3cret" not in raw


async def test_a_removed_members_own_account_is_erased_and_a_current_ones_kept(
    store: Store,
) -> None:
    async with store.transaction() as tx:
        await tx.save_circle(T, circle(ANNA, BO), NOW)
        await tx.erase_removed_account(T, "c-1", "m-bo")  # in the circle: kept
    async with store.reading() as tx:
        assert await tx.get_membership(T, "c-1", "m-bo") == BO
    async with store.transaction() as tx:
        await tx.save_circle(T, circle(ANNA, version=2), NOW)
        await tx.erase_removed_account(T, "c-1", "m-bo")
    async with store.reading() as tx:
        assert await tx.get_membership(T, "c-1", "m-bo") == replace(BO, external=None)
    async with store.transaction() as tx:  # back with their account: it is theirs again
        await tx.save_circle(T, circle(ANNA, BO, version=3), NOW)
    async with store.reading() as tx:
        assert await tx.get_membership(T, "c-1", "m-bo") == BO


# tasks and occurrences


async def test_task_round_trip_and_update(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_task(task())
        await tx.save_task(task("t-0", start=datetime(2027, 3, 22, 8), recurrence=None))
        await tx.save_task(replace(task("t-x"), citizen_id="c-2"))
        assert await tx.get_task(T, "t-1") == task()
        assert await tx.get_task(T, "nope") is None
        assert [t.id for t in await tx.list_tasks(T, "c-1")] == ["t-0", "t-1"]
    cancelled = task(version=2, status=TaskStatus.CANCELLED, details=None, exdates=())
    async with store.transaction() as tx:
        await tx.save_task(cancelled)
    async with store.transaction() as tx:
        assert await tx.get_task(T, "t-1") == cancelled


async def test_sync_occurrences_inserts_updates_and_cancels_keeping_claims(store: Store) -> None:
    await seed_task(store, occ(0), occ(1), occ(2))
    claim = Claim("t-1@1", "m-anna", "caldav", NOW)
    async with store.transaction() as tx:
        await tx.add_claim(T, claim)
        records = await tx.get_occurrences(T, "t-1")
    assert [r.occurrence for r in records] == [occ(0), occ(1), occ(2)]
    assert records[0].occurrence.start.utcoffset() == timedelta(hours=1)  # in the task's zone
    assert [r.people_needed for r in records] == [2, 2, 2]
    assert records[1].claims == (claim,) and records[1].free_slots == 1

    moved = occ(0, hour=14)
    async with store.transaction() as tx:
        # the same again changes nothing (the horizon's roll queues no syncs for it)
        assert await tx.sync_occurrences(T, "t-1", [occ(0), occ(1), occ(2)]) is False
        # occurrence 1 is gone from the series, 0 moved, 3 is new
        assert await tx.sync_occurrences(T, "t-1", [moved, occ(2), occ(3)]) is True
        assert await tx.sync_occurrences(T, "t-1", [moved, occ(2), occ(3)]) is False
        records = await tx.get_occurrences(T, "t-1")
    assert [(r.occurrence.id, r.occurrence.cancelled) for r in records] == [
        ("t-1@0", False),
        ("t-1@1", True),
        ("t-1@2", False),
        ("t-1@3", False),
    ]
    assert records[0].occurrence == moved
    assert records[1].claims == (claim,)

    async with store.transaction() as tx:  # the task is cancelled: everything is
        assert await tx.sync_occurrences(T, "t-1", []) is True
        assert all(r.occurrence.cancelled for r in await tx.get_occurrences(T, "t-1"))
        assert await tx.sync_occurrences(T, "t-1", []) is False
        assert await tx.sync_occurrences(T, "t-1", [occ(1)]) is True  # and can come back
        records = await tx.get_occurrences(T, "t-1")
    assert [r.occurrence.id for r in records if not r.occurrence.cancelled] == ["t-1@1"]


async def test_a_citizens_occurrences_are_read_at_once_as_per_task(store: Store) -> None:
    await seed_task(store, occ(0), occ(1), occ(2))
    async with store.transaction() as tx:
        await tx.save_task(task("t-2", start=datetime(2027, 3, 22, 8), recurrence=None))
        await tx.sync_occurrences(T, "t-2", [occ(0, "t-2", hour=8), occ(5, "t-2")])
        await tx.save_task(task("t-empty"))
        await tx.save_task(replace(task("t-x"), citizen_id="c-2"))
        await tx.sync_occurrences(T, "t-x", [occ(0, "t-x")])
        await tx.add_claim(T, Claim("t-x@0", "m-anna", "caldav", NOW))  # another citizen's
        await tx.add_claim(T, Claim("t-1@1", "m-anna", "caldav", NOW))
        await tx.add_pass(T, Pass("t-2@5", "m-bo", NOW))
        await tx.sync_occurrences(T, "t-1", [occ(0), occ(2)])  # t-1@1 cancelled, claim kept
    async with store.reading() as tx:
        found = await tx.occurrences_of_citizen(T, "c-1")
        per_task = {t: await tx.get_occurrences(T, t) for t in ("t-1", "t-2")}
        assert await tx.occurrences_of_citizen(T, "c-9") == {}
        assert await tx.occurrences_of_citizen("other", "c-1") == {}
    assert found == per_task  # same records, same order; t-empty and c-2's t-x absent
    assert [r.occurrence.id for r in found["t-1"]] == ["t-1@0", "t-1@1", "t-1@2"]
    # Only the ones that end at or after a time: t-1@1 ends at 11:00 on 30 March.
    async with store.reading() as tx:
        since = await tx.occurrences_of_citizen(T, "c-1", ended_after=occ(1).end)
        later = await tx.occurrences_of_citizen(T, "c-1", ended_after=occ(1).end + timedelta(0, 1))
    assert {t: [r.occurrence.id for r in rs] for t, rs in since.items()} == {
        "t-1": ["t-1@1", "t-1@2"],
        "t-2": ["t-2@5"],
    }
    assert since["t-1"][0].claims == found["t-1"][1].claims  # its claim read with it
    assert since["t-2"][0].passes == found["t-2"][1].passes
    assert [r.occurrence.id for r in later["t-1"]] == ["t-1@2"]
    assert found["t-1"][1].claims and found["t-2"][1].passes


async def test_sync_occurrences_of_unknown_task_fails(store: Store) -> None:
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.sync_occurrences(T, "nope", [occ(0, "nope")])


async def test_claims_are_unique_and_the_transaction_survives_a_conflict(store: Store) -> None:
    await seed_task(store, occ(0))
    async with store.transaction() as tx:
        await tx.add_claim(T, Claim("t-1@0", "m-anna", "link", NOW))
        with pytest.raises(Conflict):
            await tx.add_claim(T, Claim("t-1@0", "m-anna", "caldav", NOW))
        await tx.add_claim(T, Claim("t-1@0", "m-bo", "api", NOW + timedelta(seconds=1)))
    async with store.transaction() as tx:
        record = await tx.lock_occurrence(T, "t-1@0")
        assert record is not None
        assert [(c.member_id, c.channel) for c in record.claims] == [
            ("m-anna", "link"),
            ("m-bo", "api"),
        ]
        assert record.free_slots == 0
        assert await tx.remove_claim(T, "t-1@0", "m-anna")
        assert not await tx.remove_claim(T, "t-1@0", "m-anna")
        assert await tx.lock_occurrence(T, "nope") is None
    async with store.transaction() as tx:
        record = await tx.lock_occurrence(T, "t-1@0")
        assert record is not None and [c.member_id for c in record.claims] == ["m-bo"]


async def test_claim_on_unknown_occurrence_fails(store: Store) -> None:
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.add_claim(T, Claim("nope", "m-anna", "link", NOW))


async def test_passes_are_recorded_once(store: Store) -> None:
    await seed_task(store, occ(0))
    async with store.transaction() as tx:
        await tx.add_pass(T, Pass("t-1@0", "m-anna", NOW))
        await tx.add_pass(T, Pass("t-1@0", "m-anna", NOW + timedelta(hours=1)))
        record = await tx.lock_occurrence(T, "t-1@0")
    assert record is not None and record.passes == (Pass("t-1@0", "m-anna", NOW),)


async def test_a_pass_can_be_taken_back(store: Store) -> None:
    await seed_task(store, occ(0))
    async with store.transaction() as tx:
        await tx.add_pass(T, Pass("t-1@0", "m-anna", NOW))
        await tx.add_pass(T, Pass("t-1@0", "m-bo", NOW))
    async with store.transaction() as tx:
        assert await tx.remove_pass(T, "t-1@0", "m-anna")
        assert not await tx.remove_pass(T, "t-1@0", "m-anna")
        record = await tx.lock_occurrence(T, "t-1@0")
    assert record is not None and record.passes == (Pass("t-1@0", "m-bo", NOW),)


async def test_a_decision_answers_the_occurrence_the_store_then_holds(store: Store) -> None:
    """`decide_recorded` answers the occurrence after the decision without reading it back:
    it must be what the store reads back, to its representation (a copy's key is a digest of
    it), whatever the order the claims' times come in."""
    await seed_task(store, occ(0), people_needed=2)
    steps = [
        ("m-bo", Ask.PASS, NOW),
        ("m-anna", Ask.CLAIM, NOW + timedelta(seconds=1)),
        ("m-bo", Ask.CLAIM, NOW),  # another worker's clock, a little behind: stored first
        ("m-anna", Ask.PASS, NOW + timedelta(seconds=2)),
        ("m-bo", Ask.RELEASE, NOW + timedelta(seconds=3)),
        ("m-carl", Ask.CLAIM, datetime(2027, 3, 1, 13, 0, 4, 250, tzinfo=CPH)),
    ]
    for member_id, ask, at in steps:
        async with store.transaction() as tx:
            decided = await decide_recorded(
                tx, T, "t-1@0", member_id, ask, channel="caldav", now=at
            )
            assert decided is not None and decided.decision.changed
            assert repr(decided.record) == repr(await tx.get_occurrence(T, "t-1@0"))
        async with store.reading() as tx:
            assert repr(decided.record) == repr(await tx.get_occurrence(T, "t-1@0"))
    assert [c.member_id for c in decided.record.claims] == ["m-carl"]
    assert [p.member_id for p in decided.record.passes] == ["m-anna"]  # Bo took his back


async def test_lock_occurrence_serialises_concurrent_claims(backend: Backend) -> None:
    await seed_task(backend.store, occ(0), people_needed=1)
    stores = [backend.store, await backend.another()]

    async def try_claim(n: int) -> bool:
        async with stores[n % 2].transaction() as tx:
            record = await tx.lock_occurrence(T, "t-1@0")
            assert record is not None
            await asyncio.sleep(0.01)  # widen the window a lost update would need
            if record.free_slots == 0:
                return False
            await tx.add_claim(T, Claim("t-1@0", f"m-{n}", "caldav", NOW))
            return True

    results = await asyncio.gather(*(try_claim(n) for n in range(8)))
    assert results.count(True) == 1
    async with backend.store.transaction() as tx:
        record = await tx.lock_occurrence(T, "t-1@0")
    assert record is not None and len(record.claims) == 1


# relief


async def test_relief_request_round_trip(store: Store) -> None:
    request = ReliefRequest(T, "r-1", "c-1", "m-anna", NOW, NOW + timedelta(days=7))
    async with store.transaction() as tx:
        await tx.save_relief_request(request)
        assert await tx.get_relief_request(T, "r-1") == request
        await tx.save_relief_request(replace(request, status="approved", version=1))
    async with store.transaction() as tx:
        assert await tx.get_relief_request(T, "r-1") == replace(
            request, status="approved", version=1
        )
        assert await tx.get_relief_request(T, "r-2") is None


# jobs


async def enqueue(store: Store, *jobs: tuple[str, str | None, datetime]) -> None:
    async with store.transaction() as tx:
        for kind, key, run_at in jobs:
            await tx.enqueue_job(T, kind, {"key": key}, run_at=run_at, key=key)


async def test_enqueue_dedupes_queued_jobs_by_key(store: Store) -> None:
    await enqueue(
        store,
        ("sync", "view-1", NOW + timedelta(minutes=5)),
        ("sync", "view-1", NOW),
        ("sync", "view-1", NOW + timedelta(minutes=9)),
        ("sync", "view-2", NOW),
        ("escalate", "view-1", NOW),
        ("deliver", None, NOW),
        ("deliver", None, NOW),
    )
    assert (await store.job_counts())["queued"] == 5  # deduplicated per kind and key
    leased = await store.lease_jobs("w", now=NOW, limit=10, lease_seconds=60)
    assert len(leased) == 4  # one job of a key at a time: view-1's other kind waits
    view1 = next(j for j in leased if (j.kind, j.key) == ("sync", "view-1"))
    assert view1.run_at == NOW and view1.attempts == 0 and view1.payload == {"key": "view-1"}
    # A running job does not absorb new work: the change may have come after it read.
    await enqueue(store, ("sync", "view-1", NOW))
    assert await store.job_counts() == {"queued": 2, "running": 4, "done": 0, "failed": 0}


async def test_a_key_being_run_is_not_leased_again_until_that_run_ends(store: Store) -> None:
    """Two jobs of one view never run at once: a sync or a withdrawal queued for a view while
    its sync runs waits for that run (finished, failed or its lease expired), and they run one
    after the other; other keys and unkeyed jobs do not wait."""
    await enqueue(store, ("sync", "view-1", NOW))
    [running] = await store.lease_jobs("w1", now=NOW, limit=10, lease_seconds=30)
    await enqueue(
        store,
        ("sync", "view-1", NOW),
        ("sync", "view-2", NOW),
        ("withdraw", "view-1", NOW),
        ("deliver", None, NOW),
    )
    others = await store.lease_jobs("w2", now=NOW, limit=10, lease_seconds=30)
    assert sorted((j.kind, j.key) for j in others) == [("deliver", None), ("sync", "view-2")]
    assert await store.lease_jobs("w2", now=NOW, limit=10, lease_seconds=30) == []
    await store.finish_job(running.id, "w1")
    [waited] = await store.lease_jobs("w2", now=NOW, limit=10, lease_seconds=30)
    assert (waited.kind, waited.key) == ("sync", "view-1") and waited.id != running.id
    assert await store.lease_jobs("w2", now=NOW, limit=10, lease_seconds=30) == []
    await store.finish_job(waited.id, "w2")
    [withdrawal] = await store.lease_jobs("w2", now=NOW, limit=10, lease_seconds=30)
    assert (withdrawal.kind, withdrawal.key) == ("withdraw", "view-1")
    # A run whose lease expired is taken again, and only one job of its key at a time.
    await enqueue(store, ("sync", "view-1", NOW))
    later = NOW + timedelta(seconds=31)
    again = await store.lease_jobs("w3", now=later, limit=10, lease_seconds=30)
    assert [j.id for j in again if j.key == "view-1"] == [withdrawal.id]
    assert await store.lease_jobs("w3", now=later, limit=10, lease_seconds=30) == []
    assert (await store.job_counts())["queued"] == 1


async def test_lease_only_due_jobs_in_order(store: Store) -> None:
    await enqueue(
        store,
        ("b", None, NOW - timedelta(minutes=1)),
        ("a", None, NOW - timedelta(minutes=2)),
        ("later", None, NOW + timedelta(seconds=1)),
    )
    leased = await store.lease_jobs("w", now=NOW, limit=10, lease_seconds=60)
    assert [j.kind for j in leased] == ["a", "b"]
    assert await store.lease_jobs("w2", now=NOW, limit=10, lease_seconds=60) == []
    assert await store.lease_jobs("w", now=NOW, limit=1, lease_seconds=60) == []
    later = await store.lease_jobs("w", now=NOW + timedelta(seconds=1), limit=10, lease_seconds=60)
    assert [j.kind for j in later] == ["later"]


async def test_expired_lease_is_leased_again(store: Store) -> None:
    await enqueue(store, ("sync", "v", NOW))
    [first] = await store.lease_jobs("w1", now=NOW, limit=5, lease_seconds=30)
    assert (
        await store.lease_jobs("w2", now=NOW + timedelta(seconds=29), limit=5, lease_seconds=30)
        == []
    )
    [again] = await store.lease_jobs(
        "w2", now=NOW + timedelta(seconds=30), limit=5, lease_seconds=30
    )
    assert again.id == first.id and again.attempts == 1
    await store.finish_job(first.id, "w1")  # w1 lost the lease: its finish is ignored
    assert (await store.job_counts())["running"] == 1
    await store.finish_job(again.id, "w2")
    assert await store.job_counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0}


async def test_workers_never_lease_the_same_job(backend: Backend) -> None:
    await enqueue(backend.store, *((f"k{n}", None, NOW) for n in range(30)))
    stores = [backend.store, await backend.another(), await backend.another()]
    batches = await asyncio.gather(
        *(stores[n % 3].lease_jobs(f"w{n}", now=NOW, limit=4, lease_seconds=60) for n in range(9))
    )
    leased = [job.id for batch in batches for job in batch]
    assert len(leased) == len(set(leased)) == 30


async def test_workers_leasing_at_once_never_run_two_jobs_of_one_key(backend: Backend) -> None:
    """A sync and a withdrawal queued for one view, two workers leasing one job each at the
    same moment (the worker's usual lease, a slot at a time): only one of them is leased.
    Before, each worker's statement read a snapshot without the other's uncommitted lease,
    and on PostgreSQL both ran (57 rounds in 60)."""
    other = await backend.another()
    for round_ in range(20):
        key = f"view-{round_}"
        await enqueue(backend.store, ("sync", key, NOW), ("withdraw", key, NOW))
        first, second = await asyncio.gather(
            backend.store.lease_jobs("w1", now=NOW, limit=1, lease_seconds=60),
            other.lease_jobs("w2", now=NOW, limit=1, lease_seconds=60),
        )
        assert len(first) + len(second) == 1, round_
        [(job, worker)] = [(job, "w1") for job in first] + [(job, "w2") for job in second]
        await backend.store.finish_job(job.id, worker)
        [then] = await other.lease_jobs("w2", now=NOW, limit=1, lease_seconds=60)
        await other.finish_job(then.id, "w2")


async def test_a_round_is_claimed_once_per_interval(backend: Backend) -> None:
    """`claim_round`: the first claim of a round is due; then none until `every` has passed
    since, whoever asks; of claims made at once, one wins. Rounds are apart by name."""
    store, other = backend.store, await backend.another()
    every = timedelta(seconds=30)
    assert await store.claim_round("poll", now=NOW, every=every)
    assert not await other.claim_round("poll", now=NOW, every=every)
    assert not await store.claim_round("poll", now=NOW + every - timedelta(seconds=1), every=every)
    assert await other.claim_round("other", now=NOW, every=every)
    later = NOW + every
    won = await asyncio.gather(
        *(db.claim_round("poll", now=later, every=every) for db in (store, other, store, other))
    )
    assert sorted(won) == [False, False, False, True]
    assert await store.claim_round("poll", now=later + 2 * every, every=every)
    # An instance whose clock is an hour ahead claims; one with the right clock is not kept
    # from the round for that hour.
    ahead = later + 2 * every + timedelta(hours=1)
    assert await other.claim_round("poll", now=ahead + every, every=every)
    assert await store.claim_round("poll", now=later + 3 * every, every=every)


async def test_fail_job_retries_or_gives_up(store: Store) -> None:
    await enqueue(store, ("sync", "v", NOW), ("deliver", None, NOW))
    sync, deliver = await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=60)
    retry_at = NOW + timedelta(minutes=1)
    await store.fail_job(sync.id, "w", error="timeout", retry_at=retry_at)
    await store.fail_job(deliver.id, "w", error="400", retry_at=None)
    await store.fail_job(deliver.id, "other", error="ignored", retry_at=NOW)
    assert await store.job_counts() == {"queued": 1, "running": 0, "done": 0, "failed": 1}
    assert await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=60) == []
    [again] = await store.lease_jobs("w", now=retry_at, limit=5, lease_seconds=60)
    assert again.id == sync.id and again.attempts == 1 and again.run_at == retry_at


async def test_retrying_jobs_are_the_queued_ones_that_failed_before(store: Store) -> None:
    """What the poll reads to leave a failing view's backoff alone: only queued jobs that
    failed, of the kind and tenant asked for."""
    await enqueue(
        store,
        ("sync", "failed-once", NOW),
        ("sync", "failed-for-good", NOW),
        ("sync", "running", NOW),
        ("sync", "refolded", NOW),
        ("other", "other-kind", NOW),
    )
    leased = {
        job.key: job for job in await store.lease_jobs("w", now=NOW, limit=9, lease_seconds=60)
    }
    later = NOW + timedelta(minutes=1)
    await store.fail_job(leased["failed-once"].id, "w", error="timeout", retry_at=later)
    await store.fail_job(leased["failed-for-good"].id, "w", error="gone", retry_at=None)
    await store.fail_job(leased["other-kind"].id, "w", error="timeout", retry_at=later)
    # New work queued while the run was in hand: the failed run folds into it, and its
    # failure counts there (the backoff and max_attempts go on counting).
    await enqueue(store, ("sync", "refolded", NOW))
    await store.fail_job(leased["refolded"].id, "w", error="timeout", retry_at=later)
    await enqueue(store, ("sync", "fresh", NOW))
    async with store.transaction() as tx:
        await tx.enqueue_job("elsewhere", "sync", {}, run_at=NOW, key="failed-once")
        assert await tx.retrying_jobs(T, "sync") == {"failed-once", "refolded"}
        assert await tx.retrying_jobs(T, "other") == {"other-kind"}
        assert await tx.retrying_jobs("elsewhere", "sync") == set()


async def test_a_waiting_retry_is_kept_back_only_when_asked(store: Store) -> None:
    """`keep_retry`: new work for a job that failed and waits for its retry leaves its backoff
    alone; without it (and for a job that never failed) the earlier run_at wins."""
    await enqueue(store, ("sync", "kept", NOW), ("sync", "hastened", NOW))
    retry_at = NOW + timedelta(minutes=10)
    for job in await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=60):
        await store.fail_job(job.id, "w", error="timeout", retry_at=retry_at)
    later = NOW + timedelta(minutes=1)
    async with store.transaction() as tx:
        await tx.enqueue_job(T, "sync", {}, run_at=later, key="kept", keep_retry=True)
        await tx.enqueue_job(T, "sync", {}, run_at=later, key="hastened")
        await tx.enqueue_job(T, "sync", {}, run_at=later + timedelta(minutes=1), key="fresh")
        await tx.enqueue_job(T, "sync", {}, run_at=later, key="fresh", keep_retry=True)
    due = await store.lease_jobs("w", now=later, limit=5, lease_seconds=3600)
    assert sorted(job.key or "" for job in due) == ["fresh", "hastened"]
    [kept] = await store.lease_jobs("w", now=retry_at, limit=5, lease_seconds=60)
    assert kept.key == "kept" and kept.attempts == 1


async def test_keyed_jobs_are_queued_in_one_call_as_one_by_one(store: Store) -> None:
    """`enqueue_keyed_jobs` (a change's fan-out): each job as `enqueue_job` would queue it:
    new keys queued with their payloads, a queued twin keeps the earlier run_at, a waiting
    retry keeps its backoff only with `keep_retry`; an empty list queues nothing."""
    await enqueue(store, ("sync", "queued", NOW + timedelta(minutes=5)))
    await enqueue(store, ("sync", "kept", NOW), ("sync", "hastened", NOW))
    retry_at = NOW + timedelta(minutes=10)
    for job in await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=60):
        if job.key != "queued":
            await store.fail_job(job.id, "w", error="timeout", retry_at=retry_at)
    later = NOW + timedelta(minutes=1)
    async with store.transaction() as tx:
        await tx.enqueue_keyed_jobs(T, "sync", [])
        await tx.enqueue_keyed_jobs(
            T,
            "sync",
            [
                KeyedJob("new", {"n": 1}, later),
                KeyedJob("kept", {}, later, keep_retry=True),
                KeyedJob("hastened", {}, later),
                KeyedJob("new-kept", {"n": 2}, later, keep_retry=True),
            ],
        )
    assert await store.job_counts() == {"queued": 5, "running": 0, "done": 0, "failed": 0}
    due = await store.lease_jobs("w", now=later, limit=10, lease_seconds=3600)
    assert sorted((job.key or "", dict(job.payload)) for job in due) == [
        ("hastened", {"key": "hastened"}),  # the queued job's payload stays
        ("new", {"n": 1}),
        ("new-kept", {"n": 2}),
    ]
    later_due = await store.lease_jobs("w", now=retry_at, limit=5, lease_seconds=60)
    assert sorted((job.key or "", job.attempts) for job in later_due) == [
        ("kept", 1),
        ("queued", 0),
    ]


async def test_a_circles_view_generations_are_bumped_in_one_call(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.bump_view_generation(T, "m-anna", "c-1")
        await tx.bump_view_generations(T, "c-1", ["m-anna", "m-bo"])
        await tx.bump_view_generations(T, "c-1", [])
    async with store.reading() as tx:
        assert await tx.get_view_generation(T, "m-anna", "c-1") == 2
        assert await tx.get_view_generation(T, "m-bo", "c-1") == 1
        assert await tx.get_view_generation(T, "m-bo", "c-2") == 0


async def test_sql_a_circles_fan_out_costs_the_same_statements_at_any_size(
    backend: Backend,
) -> None:
    """`view_sync.enqueue_view_syncs` (every change in a circle: a claim, a host event) bumps
    and queues all the circle's views in three statements, for 3 members or 30."""
    store = backend.store
    if not isinstance(store, SqlStore):
        pytest.skip("SQL adapters only")
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement.split()[0])

    for size in (3, 30):
        members = tuple(
            Member(f"m-{n}", f"M{n}", "relative", "full", calendar=("hosted", "external")[n % 2])
            for n in range(size)
        )
        crowd = Circle(Citizen(T, f"c-{size}", "Fru Jensen"), 1, members)
        async with store.transaction() as tx:
            await tx.ensure_tenant(T)
            event.listen(store.engine.sync_engine, "before_cursor_execute", record)
            try:
                await enqueue_view_syncs(tx, T, crowd, now=NOW, exclude="m-0")
            finally:
                event.remove(store.engine.sync_engine, "before_cursor_execute", record)
        assert sent == ["INSERT", "INSERT", "INSERT"], (size, sent)
        sent.clear()
    assert (await store.job_counts())["queued"] == 2 + 29
    async with store.reading() as tx:
        assert await tx.get_view_generation(T, "m-29", "c-30") == 1
        assert await tx.get_view_generation(T, "m-0", "c-30") == 0


async def test_finished_jobs_are_purged_once_they_were_due_long_enough_ago(store: Store) -> None:
    early, late = NOW - timedelta(hours=30), NOW - timedelta(hours=2)
    await enqueue(
        store,
        ("sync", "old-done", early),
        ("sync", "new-done", late),
        ("sync", "old-failed", early),
        ("sync", "old-running", early),
    )
    leased = await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=600)
    by_key = {job.key: job for job in leased}
    await store.finish_job(by_key["old-done"].id, "w")
    await store.finish_job(by_key["new-done"].id, "w")
    await store.fail_job(by_key["old-failed"].id, "w", error="gone", retry_at=None)
    await enqueue(store, ("sync", "old-queued", early))
    assert await store.job_counts() == {"queued": 1, "running": 1, "done": 2, "failed": 1}

    assert await store.purge_done_jobs(due_before=NOW - timedelta(hours=24)) == 1
    # Only the finished job that was due before the cut is gone; the queued one still runs.
    assert await store.job_counts() == {"queued": 1, "running": 1, "done": 1, "failed": 1}
    assert await store.purge_done_jobs(due_before=NOW - timedelta(hours=24)) == 0
    [queued] = await store.lease_jobs("w2", now=NOW, limit=5, lease_seconds=600)
    assert queued.key == "old-queued"
    assert await store.purge_done_jobs(due_before=NOW) == 1
    assert await store.job_counts() == {"queued": 0, "running": 2, "done": 0, "failed": 1}


async def test_a_large_backlog_of_finished_jobs_is_purged_in_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapters.store.sql.PURGE_BATCH", 5)  # SQL: 5 + 5 + 2
    await enqueue(store, *((f"k{n}", None, NOW - timedelta(days=2)) for n in range(12)))
    for job in await store.lease_jobs("w", now=NOW, limit=12, lease_seconds=600):
        await store.finish_job(job.id, "w")
    assert await store.purge_done_jobs(due_before=NOW) == 12
    assert (await store.job_counts())["done"] == 0


async def test_requeue_folds_into_a_queued_job_with_the_same_key(store: Store) -> None:
    await enqueue(store, ("sync", "v", NOW))
    [running] = await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=60)
    await enqueue(store, ("sync", "v", NOW + timedelta(minutes=5)))
    await store.fail_job(running.id, "w", error="e", retry_at=NOW + timedelta(minutes=1))
    assert await store.job_counts() == {"queued": 1, "running": 0, "done": 0, "failed": 0}
    [job] = await store.lease_jobs("w", now=NOW + timedelta(minutes=1), limit=5, lease_seconds=60)
    assert job.run_at == NOW + timedelta(minutes=1)
    assert job.attempts == 1  # the failed run's lease counts on


async def test_sql_a_twin_queued_while_a_failed_run_is_requeued_is_folded_into(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a queued twin can commit between the requeue's look for one and its
    update (READ COMMITTED): the update then breaks the one-queued-job-per-key index. The
    requeue folds into the twin instead of failing (which left the run "running" until its
    lease ran out, and its view's syncs with it). Simulated here: the first look misses."""
    store = backend.store
    if not isinstance(store, SqlStore):
        pytest.skip("SQL adapters only")
    await enqueue(store, ("sync", "v", NOW))
    [running] = await store.lease_jobs("w", now=NOW, limit=5, lease_seconds=60)
    await enqueue(store, ("sync", "v", NOW + timedelta(minutes=5)))
    looks: list[bool] = []
    real = SqlStore._queued_twin

    async def late(connection: Any, row: Any) -> Any:
        found = await real(connection, row)
        looks.append(found is not None)
        return None if len(looks) == 1 else found

    monkeypatch.setattr(SqlStore, "_queued_twin", staticmethod(late))
    await store.fail_job(running.id, "w", error="e", retry_at=NOW + timedelta(minutes=1))
    assert looks == [True, True]
    assert await store.job_counts() == {"queued": 1, "running": 0, "done": 0, "failed": 0}
    [job] = await store.lease_jobs("w", now=NOW + timedelta(minutes=1), limit=5, lease_seconds=60)
    assert (job.run_at, job.attempts) == (NOW + timedelta(minutes=1), 1)


async def test_release_leases_returns_a_workers_jobs(store: Store) -> None:
    await enqueue(store, ("a", None, NOW), ("b", None, NOW), ("c", None, NOW))
    await store.lease_jobs("w1", now=NOW, limit=2, lease_seconds=600)
    await store.lease_jobs("w2", now=NOW, limit=2, lease_seconds=600)
    assert await store.release_leases("w1") == 2
    assert await store.release_leases("w1") == 0
    assert await store.job_counts() == {"queued": 2, "running": 1, "done": 0, "failed": 0}
    assert len(await store.lease_jobs("w3", now=NOW, limit=5, lease_seconds=60)) == 2


# outbox


async def test_outbox_due_delivered_and_dead(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.add_outbox(T, "task.claimed", {"occurrence_id": "o-1"}, now=NOW)
        second = await tx.add_outbox(T, "task.unfilled", {"free_slots": 1}, now=NOW)
    assert first != second
    due = await store.due_outbox(now=NOW, limit=10)
    assert [(e.id, e.type, dict(e.data)) for e in due] == [
        (first, "task.claimed", {"occurrence_id": "o-1"}),
        (second, "task.unfilled", {"free_slots": 1}),
    ]
    assert due[0].tenant_id == T and due[0].created_at == NOW and due[0].attempts == 0
    assert len(await store.due_outbox(now=NOW, limit=1)) == 1

    await store.mark_outbox_delivered(first, now=NOW)
    retry_at = NOW + timedelta(minutes=1)
    await store.mark_outbox_failed(second, now=NOW, error="503", retry_at=retry_at)
    assert await store.due_outbox(now=NOW, limit=10) == []
    [again] = await store.due_outbox(now=retry_at, limit=10)
    assert again.id == second and again.attempts == 1 and again.next_attempt_at == retry_at
    await store.mark_outbox_failed(second, now=retry_at, error="410", retry_at=None)
    assert await store.due_outbox(now=retry_at + timedelta(days=1), limit=10) == []


async def test_outbox_keeps_order_within_an_ordering_key(store: Store) -> None:
    async with store.transaction() as tx:
        ids = [await tx.add_outbox(T, f"e{n}", {}, now=NOW, ordering_key="occ-1") for n in range(3)]
        other = await tx.add_outbox(T, "x", {}, now=NOW, ordering_key="occ-2")
    assert [e.id for e in await store.due_outbox(now=NOW, limit=10)] == [ids[0], other]
    await store.mark_outbox_failed(ids[0], now=NOW, error="503", retry_at=NOW + timedelta(hours=1))
    assert [e.id for e in await store.due_outbox(now=NOW, limit=10)] == [other]
    await store.mark_outbox_delivered(ids[0], now=NOW)
    assert [e.id for e in await store.due_outbox(now=NOW, limit=10)] == [ids[1], other]


async def stored_outbox(store: Store) -> set[str]:
    """The ids of every event as stored, delivered ones included."""
    if isinstance(store, MemoryStore):
        return set(store._state.outbox)
    assert isinstance(store, SqlStore)
    async with store.engine.connect() as connection:
        return set((await connection.execute(select(outbox.c.id))).scalars())


async def test_delivered_events_are_purged_once_delivered_long_enough_ago(store: Store) -> None:
    old, new = NOW - timedelta(days=8), NOW - timedelta(days=6)
    async with store.transaction() as tx:
        ids = {
            name: await tx.add_outbox(T, "task.claimed", {}, now=old, ordering_key="occ-1")
            for name in ("old", "new", "dead", "pending")
        }
    await store.mark_outbox_delivered(ids["old"], now=old)
    await store.mark_outbox_delivered(ids["new"], now=new)
    await store.mark_outbox_failed(ids["dead"], now=old, error="410", retry_at=None)

    assert await store.purge_delivered_outbox(delivered_before=NOW - timedelta(days=7)) == 1
    assert await stored_outbox(store) == {ids["new"], ids["dead"], ids["pending"]}
    assert await store.outbox_counts() == {"pending": 1, "dead": 1}
    assert await store.purge_delivered_outbox(delivered_before=NOW - timedelta(days=7)) == 0
    # What was behind the purged event in its key is still delivered.
    assert [e.id for e in await store.due_outbox(now=NOW, limit=10)] == [ids["pending"]]
    assert await store.purge_delivered_outbox(delivered_before=NOW) == 1
    assert await stored_outbox(store) == {ids["dead"], ids["pending"]}


# audit


async def test_audit_add_and_list(store: Store) -> None:
    entries = [
        AuditEntry(T, NOW + timedelta(seconds=2), "m-anna", "claim", "caldav", "t-1@0"),
        AuditEntry(T, NOW, "host", "circle.updated", "host", "c-1", {"version": 3}),
        AuditEntry("other", NOW, "host", "circle.updated", "host", "c-1"),
    ]
    async with store.transaction() as tx:
        for entry in entries:
            await tx.audit(entry)
    async with store.transaction() as tx:
        assert await tx.list_audit(T) == [entries[1], entries[0]]
        assert await tx.list_audit(T, subject="t-1@0") == [entries[0]]
        assert await tx.list_audit(T, subject="nope") == []


# adapter specifics


async def test_memory_store_can_be_unavailable() -> None:
    store = MemoryStore()
    store.unavailable = True
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.accept_webhooks([item("wh-1")])
    with pytest.raises(StoreUnavailable):
        async with store.transaction():
            pass


async def test_sqlite_unreachable_is_store_unavailable(tmp_path: Path) -> None:
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/carecal.db")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            async with store.transaction() as tx:
                await tx.ensure_tenant(T)
        with pytest.raises(StoreUnavailable):
            await store.accept_webhooks([item("wh-1")])
    finally:
        await store.close()
        # aiosqlite stops the worker thread of a failed connect without awaiting it; give it
        # the loop to report back on, or it fails later with "Event loop is closed".
        await asyncio.sleep(0.1)


async def test_postgres_unreachable_is_store_unavailable() -> None:
    store = await SqlStore.open("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()


async def test_sql_store_without_cipher_refuses_external_passwords(tmp_path: Path) -> None:
    from adapters.store.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path}/carecal.db"
    await upgrade(url)
    store = await SqlStore.open(url)
    try:
        with pytest.raises(StoreError, match="cipher"):
            async with store.transaction() as tx:
                await tx.save_circle(T, circle(BO), NOW)
        async with store.transaction() as tx:
            await tx.save_circle(T, circle(ANNA), NOW)  # no external calendar: fine
    finally:
        await store.close()
