"""The Store contract for delivering the outbox and for escalation, on MemoryStore, SQLite and
PostgreSQL (see conftest): leases, release, replay, counts, claim deadlines."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from adapters.store.sql import SqlStore
from plugin.domain.model import Occurrence, Task, TaskStatus
from plugin.services.ports import DueDeadline, OutboxEvent, Store
from tests.contract.support import Backend

T = "demo"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CPH = ZoneInfo("Europe/Copenhagen")


async def add(store: Store, *keys: str | None, tenant_id: str = T, at: datetime = NOW) -> list[str]:
    async with store.transaction() as tx:
        await tx.ensure_tenant(tenant_id)
        return [
            await tx.add_outbox(tenant_id, "task.claimed", {"n": n}, now=at, ordering_key=key)
            for n, key in enumerate(keys)
        ]


# leases


async def test_lease_takes_the_heads_until_the_lease_ends(store: Store) -> None:
    a1, a2, b1 = await add(store, "t-a", "t-a", "t-b")
    leased = await store.lease_outbox(now=NOW, limit=10, lease_seconds=60)
    assert [e.id for e in leased] == [a1, b1]
    assert all(e.next_attempt_at == NOW + timedelta(seconds=60) for e in leased)
    # Taken: neither they nor what waits behind them is due for anyone else meanwhile.
    assert await store.lease_outbox(now=NOW, limit=10, lease_seconds=60) == []
    assert await store.due_outbox(now=NOW + timedelta(seconds=59), limit=10) == []
    # A sender that died: its events are due again when the lease ends.
    again = await store.lease_outbox(now=NOW + timedelta(seconds=60), limit=10, lease_seconds=60)
    assert [e.id for e in again] == [a1, b1]
    await store.mark_outbox_delivered(a1, now=NOW)
    later = NOW + timedelta(seconds=120)
    assert [e.id for e in await store.lease_outbox(now=later, limit=10, lease_seconds=60)] == [
        a2,
        b1,
    ]


async def test_events_go_out_in_the_order_they_were_recorded(store: Store) -> None:
    """A request or a job takes its `now` before it waits for the occurrence's lock (a job
    at its start): the claim recorded second, by a caller that took its `now` earlier and
    waited, must still reach the host after the release recorded first (two instances, or a
    job deciding seconds after it started: else the host hears of two holders of one slot)."""
    clock = datetime.now(UTC)
    [released] = await add(store, "t-a", at=clock - timedelta(seconds=1))
    [claimed] = await add(store, "t-a", at=clock - timedelta(seconds=5))
    later = clock + timedelta(minutes=1)
    [first] = await store.lease_outbox(now=later, limit=10, lease_seconds=60)
    assert first.id == released
    await store.mark_outbox_delivered(released, now=later)
    [second] = await store.lease_outbox(now=later, limit=10, lease_seconds=60)
    assert second.id == claimed


async def test_lease_respects_the_limit_oldest_first(store: Store) -> None:
    events = await add(store, "k1", "k2", None, "k3")
    first = await store.lease_outbox(now=NOW, limit=2, lease_seconds=60)
    second = await store.lease_outbox(now=NOW, limit=2, lease_seconds=60)
    assert [e.id for e in first] == events[:2] and [e.id for e in second] == events[2:]


async def test_a_lease_takes_few_of_one_tenant_less_what_is_held(store: Store) -> None:
    """One tenant's backlog (its host is down) never fills a lease while another's waits."""
    slow = await add(store, "s1", "s2", "s3", "s4", tenant_id="slow")
    late = NOW + timedelta(seconds=1)
    [north] = await add(store, "n1", tenant_id="north", at=late)
    south = await add(store, "t1", "t2", tenant_id="south", at=late)
    leased = await store.lease_outbox(now=late, limit=3, lease_seconds=60, per_tenant=2)
    assert [e.id for e in leased] == [*slow[:2], north]  # oldest first, two of "slow"
    # The caller holds slow's two and north's one: of three each, one more of slow
    held = {"slow": 2, "north": 1, "south": 3}
    again = await store.lease_outbox(now=late, limit=10, lease_seconds=60, per_tenant=3, held=held)
    assert [e.id for e in again] == [slow[2]]
    rest = await store.lease_outbox(now=late, limit=10, lease_seconds=60, per_tenant=1)
    assert [e.id for e in rest] == [slow[3], south[0]]


async def test_a_lease_with_shares_never_takes_what_another_worker_just_took(
    backend: Backend,
) -> None:
    """PostgreSQL: the second lease waits for the first's row locks, then re-reads the rows;
    checked only against its subquery's older snapshot, it leased them again (each event
    sent twice). A backlog of 2 000 makes the lease slow enough for the two to overlap."""
    store = backend.store
    if not isinstance(store, SqlStore) or backend.name != "postgres":
        pytest.skip("PostgreSQL's row locks and snapshots")
    async with store.transaction() as tx:
        await tx.ensure_tenant("bulk")
    async with store.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO outbox (id, tenant_id, type, data, ordering_key, created_at, attempts)"
                " SELECT 'b-' || lpad(g::text, 7, '0'), 'bulk', 'task.claimed', '{}',"
                " 'k-' || g::text, CAST(:at AS timestamptz) + g * interval '1 millisecond', 0"
                " FROM generate_series(1, 2000) AS g"
            ),
            {"at": NOW},
        )
        await connection.execute(text("ANALYZE outbox"))
    other = await backend.another()
    later = NOW + timedelta(hours=1)
    lease = {"now": later, "limit": 16, "lease_seconds": 600, "per_tenant": 16, "held": {}}
    started = time.monotonic()
    await store.release_outbox([e.id for e in await store.lease_outbox(**lease)], now=NOW)
    took = time.monotonic() - started

    async def late(delay: float) -> list[OutboxEvent]:
        await asyncio.sleep(delay)
        return await other.lease_outbox(**lease)

    for share in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
        first, second = await asyncio.gather(store.lease_outbox(**lease), late(took * share))
        assert not {e.id for e in first} & {e.id for e in second}, share
        await store.release_outbox([e.id for e in (*first, *second)], now=NOW)


async def test_concurrent_workers_never_lease_the_same_event(backend: Backend) -> None:
    created = await add(backend.store, *(f"t-{n}" for n in range(40)))
    stores = [backend.store, *[await backend.another() for _ in range(3)]]
    batches = await asyncio.gather(
        *(s.lease_outbox(now=NOW, limit=15, lease_seconds=60) for s in stores)
    )
    leased = [e.id for batch in batches for e in batch]
    assert len(leased) == len(set(leased)) == 40
    assert set(leased) == set(created)


async def test_release_gives_leased_events_back_at_once(store: Store) -> None:
    a, b = await add(store, "t-a", "t-b")
    await store.lease_outbox(now=NOW, limit=10, lease_seconds=600)
    await store.release_outbox([a], now=NOW + timedelta(seconds=1))
    due = await store.due_outbox(now=NOW + timedelta(seconds=1), limit=10)
    assert [e.id for e in due] == [a]
    await store.release_outbox([], now=NOW)  # nothing to do
    await store.mark_outbox_delivered(b, now=NOW)
    await store.release_outbox([b], now=NOW)  # a delivered event stays delivered
    assert [e.id for e in await store.due_outbox(now=NOW + timedelta(seconds=1), limit=10)] == [a]


async def test_a_late_failure_never_undoes_a_delivery(store: Store) -> None:
    [event_id] = await add(store, "t-a")
    await store.mark_outbox_delivered(event_id, now=NOW)
    await store.mark_outbox_failed(event_id, now=NOW, error="ReadTimeout", retry_at=None)
    assert await store.outbox_counts() == {"pending": 0, "dead": 0}
    assert await store.due_outbox(now=NOW + timedelta(days=1), limit=10) == []


# dead letters and replay


async def test_replay_requeues_dead_events_with_their_ids(store: Store) -> None:
    old = await add(store, "t-a", at=NOW - timedelta(days=3))
    new = await add(store, "t-b", None, at=NOW)
    other = await add(store, "t-c", tenant_id="other")
    alive = await add(store, "t-d")
    for event_id in (*old, *new, *other):
        await store.mark_outbox_failed(event_id, now=NOW, error="HTTP 500", retry_at=None)
    assert await store.outbox_counts() == {"pending": 1, "dead": 4}

    later = NOW + timedelta(hours=1)
    assert await store.replay_dead_outbox(now=later, tenant_id="none-such") == 0
    assert await store.replay_dead_outbox(now=later, tenant_id=T, since=NOW) == 2
    due = await store.due_outbox(now=later, limit=10)
    assert sorted(e.id for e in due) == sorted([*new, *alive])
    replayed = [e for e in due if e.id in new]
    assert all(e.attempts == 0 and e.requeued_at == later for e in replayed)
    assert all(e.pending_since == later and e.created_at == NOW for e in replayed)
    assert await store.outbox_counts() == {"pending": 3, "dead": 2}
    assert await store.replay_dead_outbox(now=later) == 2  # the rest: any tenant, any age
    assert await store.replay_dead_outbox(now=later) == 0
    assert await store.outbox_counts() == {"pending": 5, "dead": 0}


# claim deadlines (escalation)


def task(task_id: str = "t-1", **changes: object) -> Task:
    fields: dict[str, object] = {
        "tenant_id": T, "id": task_id, "citizen_id": "c-1", "version": 1, "kind": "task",
        "category": "shopping", "start": datetime(2027, 3, 2, 10), "end": datetime(2027, 3, 2, 11),
        "timezone": "Europe/Copenhagen", "people_needed": 1, "claim_deadline_hours": 24,
    }  # fmt: skip
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


def occ(day: int, task_id: str = "t-1") -> Occurrence:
    start = datetime(2027, 3, day, 10, tzinfo=CPH)
    return Occurrence(f"{task_id}@{day}", task_id, start, start + timedelta(hours=1))


async def seed(store: Store, the_task: Task, *occurrences: Occurrence) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_task(the_task)
        await tx.sync_occurrences(T, the_task.id, occurrences)


def at(day: int, hour: int) -> datetime:
    return datetime(2027, 3, day, hour, tzinfo=CPH)


async def test_due_claim_deadlines_are_those_passed_within_the_window(store: Store) -> None:
    await seed(store, task(), occ(2), occ(3), occ(5))  # deadlines: 1, 2, 4 March at 10:00
    await seed(store, task("v-1", kind="visit"), occ(2, "v-1"))  # no deadline
    await seed(store, task("t-free", claim_deadline_hours=None), occ(2, "t-free"))
    now = at(2, 10)  # exactly the deadline of the 3 March occurrence
    due = await store.due_claim_deadlines(now=now, since=now - timedelta(hours=48), limit=10)
    assert due == [DueDeadline(T, "t-1@2"), DueDeadline(T, "t-1@3")]
    # Outside the lookback: too old to escalate.
    recent = await store.due_claim_deadlines(
        now=now, since=at(1, 10), limit=10
    )  # (since, now]: 1 March 10:00 itself is out
    assert recent == [DueDeadline(T, "t-1@3")]
    assert await store.due_claim_deadlines(now=now, since=at(1, 0), limit=1) == [
        DueDeadline(T, "t-1@2")
    ]


async def test_checking_a_deadline_is_once_and_takes_it_off_the_list(store: Store) -> None:
    await seed(store, task(), occ(2), occ(3))
    now = at(3, 0)
    since = now - timedelta(days=2)
    async with store.transaction() as tx:
        assert await tx.check_claim_deadline(T, "t-1@2", now=now) is True
        assert await tx.check_claim_deadline(T, "t-1@2", now=now) is False
        assert await tx.check_claim_deadline(T, "unknown", now=now) is False
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == [
        DueDeadline(T, "t-1@3")
    ]
    # A rolled-back check did not happen.
    try:
        async with store.transaction() as tx:
            assert await tx.check_claim_deadline(T, "t-1@3", now=now) is True
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == [
        DueDeadline(T, "t-1@3")
    ]
    # Re-planning the task's occurrences keeps the checks.
    await seed(store, task(version=2), occ(2), occ(3))
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == [
        DueDeadline(T, "t-1@3")
    ]


async def test_deadlines_follow_the_task(store: Store) -> None:
    await seed(store, task(), occ(5))  # deadline 4 March 10:00
    now = at(3, 12)
    since = now - timedelta(days=2)
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == []
    await seed(store, task(version=2, claim_deadline_hours=48), occ(5))  # now 3 March 10:00
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == [
        DueDeadline(T, "t-1@5")
    ]
    # A cancelled task's occurrences are still listed (cancelled): the sweep marks them.
    await seed(store, task(version=3, claim_deadline_hours=48, status=TaskStatus.CANCELLED))
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == [
        DueDeadline(T, "t-1@5")
    ]
    await seed(store, task(version=4, claim_deadline_hours=None), occ(5))
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == []
    # A task that turned into a visit has no deadline either.
    await seed(store, task(version=5, claim_deadline_hours=48, kind="visit"), occ(5))
    assert await store.due_claim_deadlines(now=now, since=since, limit=10) == []


async def test_concurrent_checks_of_one_deadline_let_one_through(backend: Backend) -> None:
    await seed(backend.store, task(), occ(2))
    stores = [backend.store, *[await backend.another() for _ in range(3)]]

    async def check(store: Store) -> bool:
        async with store.transaction() as tx:
            record = await tx.lock_occurrence(T, "t-1@2")
            assert record is not None
            return await tx.check_claim_deadline(T, "t-1@2", now=at(2, 0))

    results = await asyncio.gather(*(check(s) for s in stores))
    assert sorted(results) == [False, False, False, True]
