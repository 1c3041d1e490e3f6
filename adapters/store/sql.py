"""The SQL store: `ports.Store` on SQLAlchemy 2 (async), for SQLite (aiosqlite) and PostgreSQL
(asyncpg).

    store = await SqlStore.open("sqlite+aiosqlite:///var/carecal.db", cipher=my_cipher)
    async with store.transaction() as tx:
        await tx.ensure_tenant("demo")
    await store.close()

Concurrency:

- PostgreSQL: `lock_occurrence` takes a row lock (SELECT ... FOR UPDATE); `lease_jobs` skips rows
  other workers hold (FOR UPDATE SKIP LOCKED), and its transactions commit one at a time
  (`JOB_LEASE_LOCK`), so no two jobs of one key are leased at once. Two more transaction-scoped
  advisory locks order the inbox: `accept_webhooks` batches commit one at a time, and so do
  inbox appliers (`SqlTx.pending_webhooks`); all rely on READ COMMITTED, the default.
- SQLite has one writer. Every transaction starts with BEGIN IMMEDIATE, so it holds the write
  lock from its first statement and concurrent writers queue on `busy_timeout` instead of failing
  with "database is locked" when a reader tries to upgrade. Inside one process an asyncio.Lock
  queues transactions first, so they wait on the event loop rather than in SQLite's busy-sleep.

Errors: driver and connection errors become `StoreUnavailable`, integrity errors `Conflict`,
anything else from the database `StoreError` (see `translate_errors`).

External calendar passwords are encrypted with the `Cipher` given to the store. Without one the
store refuses (StoreError) to persist a member with an external calendar rather than write the
password in clear.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, case, delete, event, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from adapters.store.sql_rows import Cipher
from adapters.store.sql_tx import SqlTx, new_event_id, translate_errors
from adapters.store.sql_tx_statements import JOB_LEASE_LOCK, statements
from adapters.store.tables import OCCURRENCE_UNCHECKED, inbox, jobs, occurrences, outbox, rounds
from plugin.services.ports import (
    DueDeadline,
    InboxItem,
    InboxStatus,
    Job,
    JobStatus,
    OutboxEvent,
    OutboxStatus,
)

__all__ = ["Cipher", "SqlStore", "SqlTx", "create_engine", "new_event_id", "translate_errors"]

JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed")
PURGE_BATCH = 5_000  # finished jobs, webhooks or events deleted per transaction
INBOX_STATUSES: tuple[InboxStatus, ...] = ("pending", "applied", "stale", "failed")
# Rows per INSERT in `accept_webhooks`; SQLAlchemy also keeps each statement under the
# driver's bound-parameter limit (32700 here; SQLite allows 32766), so a statement holds at
# most 5450 rows of 6 parameters and bigger batches take several statements, one transaction.
INBOX_PAGE_ROWS = 5000
SQLITE_BUSY_TIMEOUT_MS = 10_000
READ_ONLY = "carecal_read_only"  # execution option of `SqlStore.reading`'s connections


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_engine(
    url: str | URL, *, pool_size: int = 5, connect_args: Mapping[str, Any] | None = None
) -> AsyncEngine:
    """An AsyncEngine set up for carecal: on SQLite, WAL, foreign keys and BEGIN IMMEDIATE."""
    url = make_url(url)
    # Never the bound values in an error's text: they are care data (translate_errors).
    options: dict[str, Any] = {"connect_args": dict(connect_args or {}), "hide_parameters": True}
    if not _is_sqlite(url):
        options["pool_size"] = pool_size
        options["pool_pre_ping"] = True
    elif url.database not in (None, "", ":memory:"):
        options["pool_size"] = pool_size
    engine = create_async_engine(url, **options)
    if _is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver so that `_sqlite_on_begin` decides how
    # transactions start (SQLAlchemy docs, "Serializable isolation / Savepoints").
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys=ON",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")  # `SqlStore.reading`
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class SqlStore:
    """`ports.Store` over an AsyncEngine. Build it with `await SqlStore.open(url)` or hand it
    an engine you made with `create_engine`. Connections are made on first use."""

    def __init__(self, engine: AsyncEngine, *, cipher: Cipher | None = None) -> None:
        self._known_tenants: set[str] = set()
        self.engine = engine
        self._cipher = cipher
        self._sqlite = engine.dialect.name == "sqlite"
        self._writer = asyncio.Lock() if self._sqlite else None
        self._event_seq = itertools.count()
        self._statements = statements(engine.dialect.name)
        dialect = sqlite if self._sqlite else postgresql
        self._add_entries = (
            dialect.insert(inbox)
            .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id"])
            .returning(inbox.c.tenant_id, inbox.c.webhook_id)
            .execution_options(insertmanyvalues_page_size=INBOX_PAGE_ROWS)
        )

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 5,
        cipher: Cipher | None = None,
        connect_args: Mapping[str, Any] | None = None,
    ) -> SqlStore:
        return cls(
            create_engine(url, pool_size=pool_size, connect_args=connect_args), cipher=cipher
        )

    def _serialised(self) -> AbstractAsyncContextManager[Any]:
        return self._writer if self._writer is not None else nullcontext()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._serialised():
            with translate_errors():
                async with self.engine.begin() as connection:
                    yield connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTx]:
        async with self._begin() as connection:
            yield SqlTx(connection, cipher=self._cipher, event_seq=self._event_seq)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[SqlTx]:
        """One snapshot for all of its reads: on SQLite a deferred BEGIN (a snapshot at the
        first read, no write lock) outside the writer queue; on PostgreSQL a REPEATABLE READ
        transaction (at READ COMMITTED each statement would see what committed since the last:
        a view's records read before a concurrent `delete_view` committed, and its state after,
        describe no view that ever was)."""
        with translate_errors():
            async with self.engine.connect() as connection:
                if self._sqlite:
                    connection = await connection.execution_options(**{READ_ONLY: True})
                else:
                    connection = await connection.execution_options(
                        isolation_level="REPEATABLE READ"
                    )
                async with connection.begin():
                    yield SqlTx(connection, cipher=self._cipher, event_seq=self._event_seq)

    async def ping(self) -> None:
        with translate_errors():
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        await self.engine.dispose()

    # the inbox

    async def accept_webhooks(self, items: Sequence[InboxItem]) -> list[bool]:
        """Record a batch in one short transaction: one INSERT for the tenants, then one
        multi-row INSERT ... ON CONFLICT (tenant_id, webhook_id) DO NOTHING RETURNING for the
        entries (SQLAlchemy's "insertmanyvalues": an executemany with RETURNING is sent as
        multi-VALUES statements of up to `INBOX_PAGE_ROWS` rows, fewer when SQLite's or
        asyncpg's bound-parameter limit would be passed). VALUES order is `seq` order, so the
        batch keeps its arrival order.

        On PostgreSQL the transaction first takes the `INBOX_ACCEPT_LOCK` advisory lock, so
        batches from all instances commit one after another: two batches holding the same ids
        in different orders cannot deadlock on each other's uncommitted rows, and `seq` order
        is commit order (the applier never sees a later entry before an earlier one commits).
        On SQLite the single writer already does both."""
        first: dict[tuple[str, str], int] = {}
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            key = (item.tenant_id, item.webhook_id)
            if key in first:
                continue  # a later copy within the batch: the first one wins
            first[key] = index
            rows.append(
                {
                    "tenant_id": item.tenant_id,
                    "webhook_id": item.webhook_id,
                    "event_type": item.event_type,
                    "body": item.body,
                    "received_at": item.received_at,
                    "status": "pending",
                }
            )
        if not rows:
            return []
        # Tenants are few and never deleted: once one is known to exist, skip its INSERT.
        new_tenants = sorted({item.tenant_id for item in items} - self._known_tenants)
        now = _utcnow()
        async with self._begin() as connection:
            if not self._sqlite:
                await connection.execute(self._statements.accept_lock)
            if new_tenants:  # sorted: one lock order everywhere
                await connection.execute(
                    self._statements.add_tenant,
                    [{"id": tenant_id, "created_at": now} for tenant_id in new_tenants],
                )
            inserted = {
                (row[0], row[1]) for row in await connection.execute(self._add_entries, rows)
            }
        self._known_tenants.update(new_tenants)
        return [
            first[item.tenant_id, item.webhook_id] == index
            and (item.tenant_id, item.webhook_id) in inserted
            for index, item in enumerate(items)
        ]

    async def inbox_counts(self) -> Mapping[InboxStatus, int]:
        counts: dict[InboxStatus, int] = dict.fromkeys(INBOX_STATUSES, 0)
        async with self._begin() as connection:
            rows = await connection.execute(
                select(inbox.c.status, func.count()).group_by(inbox.c.status)
            )
            for status, count in rows:
                if status in counts:
                    counts[status] = count
        return counts

    async def purge_finished_webhooks(self, *, finished_before: datetime) -> int:
        # The inbox is in `seq` order, which is about the order rows finish in: the oldest
        # finished rows are the first a scan meets.
        finished = inbox.c.status.in_(("applied", "stale")) & (
            inbox.c.finished_at < finished_before
        )
        return await self._purge(inbox.c.seq, finished)

    # jobs

    async def lease_jobs(
        self, worker: str, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Job]:
        due = or_(
            and_(jobs.c.status == "queued", jobs.c.run_at <= now),
            and_(jobs.c.status == "running", jobs.c.lease_until <= now),
        )
        # A keyed job whose key another worker is running now waits for that run to end, of
        # whatever kind: two syncs of one view never run at once (they would plan from the same
        # records), nor its sync and its withdrawal (the sync would write into the collection
        # the withdrawal deletes).
        running = jobs.alias("running")
        busy = (
            select(running.c.id)
            .where(
                running.c.status == "running",
                running.c.lease_until > now,
                running.c.tenant_id == jobs.c.tenant_id,
                running.c.key == jobs.c.key,
            )
            .exists()
        )
        pick = (
            select(jobs.c.id, jobs.c.tenant_id, jobs.c.kind, jobs.c.key)
            .where(due, or_(jobs.c.key.is_(None), ~busy))
            .order_by(jobs.c.run_at, jobs.c.id)
            .limit(limit)
        )
        if not self._sqlite:
            pick = pick.with_for_update(of=jobs, skip_locked=True)
        async with self._begin() as connection:
            if not self._sqlite:
                # Leases commit one after another: the `busy` check reads the statement's
                # snapshot, and a lease of a key still uncommitted in another transaction is
                # not in it (SKIP LOCKED passes over that job, not over its key's other jobs),
                # so two workers could each lease one job of the same key at once. After the
                # lock, the snapshot holds every lease made before this one. A lease takes a
                # few ms; workers queue on it only for that.
                await connection.execute(
                    select(func.pg_advisory_xact_lock(literal(JOB_LEASE_LOCK, BigInteger)))
                )
            ids = _one_per_key(await connection.execute(pick))
            if not ids:
                return []
            rows = await connection.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), due)  # re-checked: a lease may have moved on
                .values(
                    status="running",
                    lease_owner=worker,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=jobs.c.attempts + 1,
                    updated_at=now,
                )
                .returning(jobs)
            )
            leased = [
                Job(
                    id=row.id,
                    tenant_id=row.tenant_id,
                    kind=row.kind,
                    key=row.key,
                    payload=row.payload,
                    attempts=row.attempts - 1,  # the lease above counted this run
                    run_at=row.run_at,
                )
                for row in rows
            ]
        return sorted(leased, key=lambda job: (job.run_at, job.id))

    async def finish_job(self, job_id: int, worker: str) -> None:
        async with self._begin() as connection:
            await connection.execute(
                update(jobs)
                .where(_held_by(job_id, worker))
                .values(status="done", lease_owner=None, lease_until=None, updated_at=_utcnow())
            )

    async def fail_job(
        self, job_id: int, worker: str, *, error: str, retry_at: datetime | None
    ) -> None:
        async with self._begin() as connection:
            if retry_at is None:
                await connection.execute(
                    update(jobs)
                    .where(_held_by(job_id, worker))
                    .values(
                        status="failed",
                        lease_owner=None,
                        lease_until=None,
                        last_error=error,
                        updated_at=_utcnow(),
                    )
                )
                return
            row = (
                await connection.execute(select(jobs).where(_held_by(job_id, worker)))
            ).one_or_none()
            if row is not None:
                await self._requeue(connection, row, run_at=retry_at, error=error)

    async def release_leases(self, worker: str) -> int:
        async with self._begin() as connection:
            rows = (
                await connection.execute(
                    select(jobs).where(jobs.c.status == "running", jobs.c.lease_owner == worker)
                )
            ).all()
            for row in rows:
                await self._requeue(connection, row, run_at=row.run_at, error=row.last_error)
        return len(rows)

    async def _requeue(
        self, connection: AsyncConnection, row: Any, *, run_at: datetime, error: str | None
    ) -> None:
        """Put a running job back in the queue. If a queued job with the same key arrived
        meanwhile, the two are folded into the queued one (at the earlier run_at, with the
        leases the running one had: the backoff and `max_attempts` go on counting)."""
        twin = await self._queued_twin(connection, row)
        if twin is None:
            try:
                async with connection.begin_nested():
                    await connection.execute(
                        update(jobs)
                        .where(jobs.c.id == row.id)
                        .values(
                            status="queued",
                            run_at=run_at,
                            lease_owner=None,
                            lease_until=None,
                            last_error=error,
                            updated_at=_utcnow(),
                        )
                    )
                return
            except IntegrityError:
                # On PostgreSQL (READ COMMITTED) a twin can commit between the look above and
                # this update; the one queued job per key it holds refuses ours: fold into it.
                twin = await self._queued_twin(connection, row)
                if twin is None:
                    raise
        await connection.execute(
            update(jobs)
            .where(jobs.c.id == twin.id)
            .values(
                run_at=min(twin.run_at, run_at),
                attempts=max(twin.attempts, row.attempts),
                last_error=error,
                updated_at=_utcnow(),
            )
        )
        await connection.execute(delete(jobs).where(jobs.c.id == row.id))

    @staticmethod
    async def _queued_twin(connection: AsyncConnection, row: Any) -> Any:
        """The queued job of `row`'s kind and key (None: none, or `row` has no key)."""
        if row.key is None:
            return None
        return (
            await connection.execute(
                select(jobs.c.id, jobs.c.run_at, jobs.c.attempts).where(
                    jobs.c.tenant_id == row.tenant_id,
                    jobs.c.kind == row.kind,
                    jobs.c.key == row.key,
                    jobs.c.status == "queued",
                )
            )
        ).one_or_none()

    async def purge_done_jobs(self, *, due_before: datetime) -> int:
        """Found by the (status, run_at) index."""
        done = (jobs.c.status == "done") & (jobs.c.run_at < due_before)
        return await self._purge(jobs.c.id, done)

    async def _purge(self, key: Any, where: ColumnElement[bool]) -> int:
        """Delete the rows of `key`'s table that `where` holds for, in batches of
        `PURGE_BATCH` rows, each its own short transaction (SQLite's one writer is not held up
        by a large backlog). Returns how many went."""
        batch = select(key).where(where).limit(PURGE_BATCH).scalar_subquery()
        purged = 0
        while True:
            async with self._begin() as connection:
                deleted = (
                    await connection.execute(delete(key.table).where(key.in_(batch)))
                ).rowcount
            purged += deleted
            if deleted < PURGE_BATCH:
                return purged

    async def claim_round(self, name: str, *, now: datetime, every: timedelta) -> bool:
        """One statement: insert the round, or move its due time on where it has passed (or
        lies further ahead than one interval: set by an instance whose clock is ahead, it
        would keep the others from the round until their clocks got there); a row comes
        back only to the instance whose statement did either."""
        dialect = sqlite if self._sqlite else postgresql
        claim = (
            dialect.insert(rounds)
            .values(name=name, due_at=now + every)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"due_at": now + every},
                where=or_(rounds.c.due_at <= now, rounds.c.due_at > now + every),
            )
            .returning(rounds.c.name)
        )
        async with self._begin() as connection:
            return (await connection.execute(claim)).first() is not None

    async def job_counts(self) -> Mapping[JobStatus, int]:
        counts: dict[JobStatus, int] = dict.fromkeys(JOB_STATUSES, 0)
        async with self._begin() as connection:
            rows = await connection.execute(
                select(jobs.c.status, func.count()).group_by(jobs.c.status)
            )
            for status, count in rows:
                if status in counts:
                    counts[status] = count
        return counts

    # outbox

    async def due_outbox(self, *, now: datetime, limit: int) -> list[OutboxEvent]:
        async with self._begin() as connection:
            rows = (await connection.execute(_due_outbox(now, limit))).all()
        return [_outbox_event(row) for row in rows]

    async def lease_outbox(
        self,
        *,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_tenant: int | None = None,
        held: Mapping[str, int] | None = None,
    ) -> list[OutboxEvent]:
        pick = _due_outbox(now, limit, per_tenant=per_tenant, held=held or {})
        if not self._sqlite:
            pick = pick.with_for_update(of=outbox, skip_locked=True)
        until = now + timedelta(seconds=lease_seconds)
        async with self._begin() as connection:
            rows = (await connection.execute(pick)).all()
            if rows:
                await connection.execute(
                    update(outbox)
                    .where(outbox.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=until)
                )
        return [replace(_outbox_event(row), next_attempt_at=until) for row in rows]

    async def release_outbox(self, event_ids: Sequence[str], *, now: datetime) -> None:
        if not event_ids:
            return
        async with self._begin() as connection:
            await connection.execute(
                update(outbox)
                .where(outbox.c.id.in_(list(event_ids)), *_undelivered())
                .values(next_attempt_at=now)
            )

    async def mark_outbox_delivered(self, event_id: str, *, now: datetime) -> None:
        async with self._begin() as connection:
            await connection.execute(
                update(outbox)
                .where(outbox.c.id == event_id)
                .values(delivered_at=now, attempts=outbox.c.attempts + 1, last_error=None)
            )

    async def mark_outbox_failed(
        self, event_id: str, *, now: datetime, error: str, retry_at: datetime | None
    ) -> None:
        values: dict[str, Any] = {"attempts": outbox.c.attempts + 1, "last_error": error}
        if retry_at is None:
            values["dead_at"] = now
        else:
            values["next_attempt_at"] = retry_at
        async with self._begin() as connection:
            # A late failure report never undoes a delivery another worker recorded.
            await connection.execute(
                update(outbox)
                .where(outbox.c.id == event_id, outbox.c.delivered_at.is_(None))
                .values(values)
            )

    async def replay_dead_outbox(
        self,
        *,
        now: datetime,
        tenant_id: str | None = None,
        since: datetime | None = None,
    ) -> int:
        where: list[ColumnElement[bool]] = [
            outbox.c.delivered_at.is_(None),
            outbox.c.dead_at.is_not(None),
        ]
        if tenant_id is not None:
            where.append(outbox.c.tenant_id == tenant_id)
        if since is not None:
            where.append(outbox.c.created_at >= since)
        async with self._begin() as connection:
            rows = await connection.execute(
                update(outbox)
                .where(*where)
                .values(dead_at=None, next_attempt_at=now, requeued_at=now, attempts=0)
                .returning(outbox.c.id)
            )
            return len(rows.all())

    async def purge_delivered_outbox(self, *, delivered_before: datetime) -> int:
        # A range of the (delivered_at, dead_at, created_at) index.
        return await self._purge(outbox.c.id, outbox.c.delivered_at < delivered_before)

    async def outbox_counts(self) -> Mapping[OutboxStatus, int]:
        # Both counts are ranges of the (delivered_at, dead_at, created_at) index.
        query = select(
            select(func.count()).select_from(outbox).where(*_undelivered()).scalar_subquery(),
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.delivered_at.is_(None), outbox.c.dead_at.is_not(None))
            .scalar_subquery(),
        )
        async with self._begin() as connection:
            pending, dead = (await connection.execute(query)).one()
        return {"pending": pending, "dead": dead}

    # escalation

    async def due_claim_deadlines(
        self, *, now: datetime, since: datetime, limit: int
    ) -> list[DueDeadline]:
        query = (
            select(occurrences.c.tenant_id, occurrences.c.id)
            .where(
                occurrences.c.claim_deadline_at <= now,
                occurrences.c.claim_deadline_at > since,
                OCCURRENCE_UNCHECKED,  # spelled as the partial index's predicate
            )
            .order_by(occurrences.c.claim_deadline_at, occurrences.c.tenant_id, occurrences.c.id)
            .limit(limit)
        )
        async with self._begin() as connection:
            rows = (await connection.execute(query)).all()
        return [DueDeadline(row.tenant_id, row.id) for row in rows]


def _undelivered() -> tuple[Any, Any]:
    return outbox.c.delivered_at.is_(None), outbox.c.dead_at.is_(None)


def _due_outbox(
    now: datetime,
    limit: int,
    *,
    per_tenant: int | None = None,
    held: Mapping[str, int] | None = None,
) -> Any:
    """Undelivered, live events whose retry time has come, oldest first; of the events
    sharing an ordering key only the oldest pending one is due (delivery keeps order). With
    `per_tenant`, each tenant's oldest that many, less what is `held` of it."""
    earlier = outbox.alias("earlier")
    blocked = (
        select(earlier.c.id)
        .where(
            earlier.c.tenant_id == outbox.c.tenant_id,
            earlier.c.ordering_key == outbox.c.ordering_key,
            earlier.c.delivered_at.is_(None),
            earlier.c.dead_at.is_(None),
            or_(
                earlier.c.created_at < outbox.c.created_at,
                and_(
                    earlier.c.created_at == outbox.c.created_at,
                    earlier.c.id < outbox.c.id,
                ),
            ),
        )
        .exists()
    )
    due = [
        *_undelivered(),
        or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
        or_(outbox.c.ordering_key.is_(None), ~blocked),
    ]
    if per_tenant is not None:
        # In a subquery: PostgreSQL allows no window function beside FOR UPDATE.
        ranked = (
            select(
                outbox.c.id,
                outbox.c.tenant_id,
                func.row_number()
                .over(partition_by=outbox.c.tenant_id, order_by=(outbox.c.created_at, outbox.c.id))
                .label("rank"),
            )
            .where(*due)
            .subquery()
        )
        allowed: Any = per_tenant
        if held:
            left = {tenant: per_tenant - n for tenant, n in held.items()}
            allowed = case(left, value=ranked.c.tenant_id, else_=per_tenant)
        # The conditions stay on the outer query too: a row another worker leased while
        # this one waited for its lock is checked again there (FOR UPDATE re-reads the row),
        # not only against the subquery's older snapshot, which would lease it twice.
        due = [*due, outbox.c.id.in_(select(ranked.c.id).where(ranked.c.rank <= allowed))]
    return select(outbox).where(*due).order_by(outbox.c.created_at, outbox.c.id).limit(limit)


def _outbox_event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        tenant_id=row.tenant_id,
        type=row.type,
        data=row.data,
        ordering_key=row.ordering_key,
        created_at=row.created_at,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        dead_at=row.dead_at,
        requeued_at=row.requeued_at,
    )


def _held_by(job_id: int, worker: str) -> Any:
    return and_(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.lease_owner == worker)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _one_per_key(rows: Iterable[Any]) -> list[int]:
    """The picked jobs' ids, the first of each key only (a queued job and an expired run of
    the same key can both be due)."""
    seen: set[tuple[str, str]] = set()
    ids: list[int] = []
    for row in rows:
        if row.key is not None:
            if (row.tenant_id, row.key) in seen:
                continue
            seen.add((row.tenant_id, row.key))
        ids.append(row.id)
    return ids
