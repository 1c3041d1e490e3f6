"""`ports.Tx` on one open SQLAlchemy connection: what a unit of work can read and write.

Rows are turned into domain values here and nowhere else. Inserts that may meet an existing row
use INSERT ... ON CONFLICT (both SQLite and PostgreSQL have it), so they are race-safe without
savepoints and leave the transaction usable.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Table,
    case,
    delete,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store.sql_rows import (
    Cipher,
    member_from_row,
    member_values,
    task_from_row,
    task_values,
)
from adapters.store.tables import (
    INBOX_ERROR_MAX,
    INBOX_PENDING,
    audit,
    citizens,
    claims,
    inbox,
    jobs,
    memberships,
    outbox,
    passes,
    relief_requests,
    tasks,
    tenants,
)
from adapters.store.tables import (
    occurrences as occ_t,
)
from plugin.domain.model import (
    Circle,
    Citizen,
    Claim,
    Occurrence,
    OccurrenceRecord,
    Pass,
    ReliefRequest,
    Task,
    TaskStatus,
)
from plugin.services.ports import (
    AuditEntry,
    CircleChange,
    Conflict,
    InboxEntry,
    InboxStatus,
    StoreError,
)

# pg_advisory_xact_lock keys (bigint), held for the length of a transaction:
# the inbox applier, int.from_bytes(b"ccinbapp"), "carecal inbox applier" ...
INBOX_APPLIER_LOCK = 0x6363696E62617070
# ... and `accept_webhooks`, int.from_bytes(b"ccinbacc"), "carecal inbox accept".
INBOX_ACCEPT_LOCK = 0x6363696E62616363


def new_event_id(now: datetime, seq: Iterator[int]) -> str:
    """A webhook-id that sorts by creation time, then by order of creation in this process:
    'msg_0005f1c2a3b4c5d6_000001a1b2c3d4e5f6' (time in µs, sequence, randomness)."""
    micros = int(now.timestamp() * 1_000_000)
    return f"msg_{micros:016x}_{next(seq) % 16**6:06x}{secrets.token_hex(6)}"


class SqlTx:
    def __init__(
        self, connection: AsyncConnection, *, cipher: Cipher | None, event_seq: Iterator[int]
    ) -> None:
        self._c = connection
        self._cipher = cipher
        self._event_seq = event_seq

    def _insert(self, table: Table) -> Any:
        dialect = postgresql if self._c.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # tenants and the webhook inbox

    async def ensure_tenant(self, tenant_id: str) -> None:
        await self._c.execute(
            self._insert(tenants)
            .values(id=tenant_id, created_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def next_pending_webhook(self) -> InboxEntry | None:
        """The oldest pending entry. On PostgreSQL the transaction first takes the applier's
        advisory lock (`INBOX_APPLIER_LOCK`, released at commit or rollback), so appliers in
        several instances apply one entry at a time and never the same one twice. The query
        after the lock sees the previous holder's commit because each statement of a READ
        COMMITTED transaction (the default) takes a fresh snapshot. On SQLite the transaction
        already holds the single write lock (BEGIN IMMEDIATE)."""
        if self._c.dialect.name == "postgresql":
            await self._c.execute(
                select(func.pg_advisory_xact_lock(literal(INBOX_APPLIER_LOCK, BigInteger)))
            )
        row = (
            await self._c.execute(
                select(
                    inbox.c.seq,
                    inbox.c.tenant_id,
                    inbox.c.webhook_id,
                    inbox.c.event_type,
                    inbox.c.body,
                    inbox.c.received_at,
                )
                .where(INBOX_PENDING)  # a literal, so the partial index applies
                .order_by(inbox.c.seq)
                .limit(1)
            )
        ).one_or_none()
        if row is None:
            return None
        return InboxEntry(
            seq=row.seq,
            tenant_id=row.tenant_id,
            webhook_id=row.webhook_id,
            event_type=row.event_type,
            body=row.body if row.body is not None else b"",
            received_at=row.received_at,
        )

    async def finish_webhook(
        self,
        seq: int,
        *,
        status: InboxStatus,
        now: datetime,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "finished_at": now,
            "error": None if error is None else error[:INBOX_ERROR_MAX],
        }
        if status in ("applied", "stale"):
            values["body"] = None  # the data now lives in its tables (data minimisation)
        await self._c.execute(update(inbox).where(inbox.c.seq == seq).values(values))

    # circles

    async def get_circle(self, tenant_id: str, citizen_id: str) -> Circle | None:
        citizen = (
            await self._c.execute(
                select(citizens).where(
                    citizens.c.tenant_id == tenant_id, citizens.c.id == citizen_id
                )
            )
        ).one_or_none()
        if citizen is None:
            return None
        rows = await self._c.execute(
            select(memberships)
            .where(
                memberships.c.tenant_id == tenant_id,
                memberships.c.citizen_id == citizen_id,
                memberships.c.removed_at.is_(None),
            )
            .order_by(memberships.c.position)
        )
        return Circle(
            citizen=Citizen(
                tenant_id=tenant_id,
                id=citizen.id,
                display_name=citizen.display_name,
                timezone=citizen.timezone,
                locale=citizen.locale,
            ),
            version=citizen.circle_version,
            members=tuple(member_from_row(tenant_id, row, self._cipher) for row in rows),
        )

    async def save_circle(self, tenant_id: str, circle: Circle, now: datetime) -> CircleChange:
        """Members new to the circle (or back after removal) are `added`; members whose stored
        value differs in any field are `changed`; active members absent from `circle` are
        `removed` (kept as rows with `removed_at`, so history and audit still resolve)."""
        citizen = circle.citizen
        values = {
            "display_name": citizen.display_name,
            "timezone": citizen.timezone,
            "locale": citizen.locale,
            "circle_version": circle.version,
            "updated_at": now,
        }
        await self._c.execute(
            self._insert(citizens)
            .values(tenant_id=tenant_id, id=citizen.id, **values)
            .on_conflict_do_update(index_elements=["tenant_id", "id"], set_=values)
        )
        stored = {
            row.member_id: row
            for row in await self._c.execute(
                select(memberships).where(
                    memberships.c.tenant_id == tenant_id, memberships.c.citizen_id == citizen.id
                )
            )
        }
        added: list[str] = []
        changed: list[str] = []
        for position, member in enumerate(circle.members):
            row_values = member_values(tenant_id, member, self._cipher) | {
                "position": position,
                "removed_at": None,
                "updated_at": now,
            }
            old = stored.get(member.id)
            if old is None:
                await self._c.execute(
                    memberships.insert().values(
                        tenant_id=tenant_id,
                        citizen_id=citizen.id,
                        member_id=member.id,
                        **row_values,
                    )
                )
                added.append(member.id)
                continue
            if old.removed_at is not None:
                added.append(member.id)
            elif member_from_row(tenant_id, old, self._cipher) != member:
                changed.append(member.id)
            await self._c.execute(
                update(memberships)
                .where(
                    memberships.c.tenant_id == tenant_id,
                    memberships.c.citizen_id == citizen.id,
                    memberships.c.member_id == member.id,
                )
                .values(row_values)
            )
        present = {member.id for member in circle.members}
        removed = [
            member_id
            for member_id, row in stored.items()
            if member_id not in present and row.removed_at is None
        ]
        if removed:
            await self._c.execute(
                update(memberships)
                .where(
                    memberships.c.tenant_id == tenant_id,
                    memberships.c.citizen_id == citizen.id,
                    memberships.c.member_id.in_(removed),
                )
                .values(removed_at=now, updated_at=now)
            )
        return CircleChange(
            added=tuple(added), removed=tuple(sorted(removed)), changed=tuple(changed)
        )

    # tasks and occurrences

    async def get_task(self, tenant_id: str, task_id: str) -> Task | None:
        row = (
            await self._c.execute(
                select(tasks).where(tasks.c.tenant_id == tenant_id, tasks.c.id == task_id)
            )
        ).one_or_none()
        return None if row is None else task_from_row(row)

    async def save_task(self, task: Task) -> None:
        values = task_values(task)
        await self._c.execute(
            self._insert(tasks)
            .values(tenant_id=task.tenant_id, id=task.id, **values)
            .on_conflict_do_update(index_elements=["tenant_id", "id"], set_=values)
        )

    async def list_tasks(self, tenant_id: str, citizen_id: str) -> list[Task]:
        rows = await self._c.execute(
            select(tasks)
            .where(tasks.c.tenant_id == tenant_id, tasks.c.citizen_id == citizen_id)
            .order_by(tasks.c.start_local, tasks.c.id)
        )
        return [task_from_row(row) for row in rows]

    async def list_recurring_tasks(self, tenant_id: str) -> list[Task]:
        rows = await self._c.execute(
            select(tasks)
            .where(
                tasks.c.tenant_id == tenant_id,
                tasks.c.status == TaskStatus.ACTIVE.value,
                tasks.c.recurrence.is_not(None),
            )
            .order_by(tasks.c.id)
        )
        return [task_from_row(row) for row in rows]

    async def sync_occurrences(
        self, tenant_id: str, task_id: str, occurrences: Sequence[Occurrence]
    ) -> None:
        zone = (
            await self._c.execute(
                select(tasks.c.timezone).where(
                    tasks.c.tenant_id == tenant_id, tasks.c.id == task_id
                )
            )
        ).scalar_one_or_none()
        if zone is None:
            raise StoreError(f"no task {task_id!r} in tenant {tenant_id!r}")
        stored = {
            row.id: row
            for row in await self._c.execute(
                select(occ_t).where(occ_t.c.tenant_id == tenant_id, occ_t.c.task_id == task_id)
            )
        }
        for occ in occurrences:
            old = stored.pop(occ.id, None)
            if old is None:
                await self._c.execute(
                    occ_t.insert().values(
                        tenant_id=tenant_id,
                        id=occ.id,
                        task_id=task_id,
                        start_utc=occ.start,
                        end_utc=occ.end,
                        tz=zone,
                        cancelled=occ.cancelled,
                    )
                )
            elif (old.start_utc, old.end_utc, old.cancelled, old.tz) != (
                occ.start,
                occ.end,
                occ.cancelled,
                zone,
            ):
                await self._c.execute(
                    update(occ_t)
                    .where(occ_t.c.tenant_id == tenant_id, occ_t.c.id == occ.id)
                    .values(start_utc=occ.start, end_utc=occ.end, cancelled=occ.cancelled, tz=zone)
                )
        gone = [occ_id for occ_id, row in stored.items() if not row.cancelled]
        if gone:
            await self._c.execute(
                update(occ_t)
                .where(occ_t.c.tenant_id == tenant_id, occ_t.c.id.in_(gone))
                .values(cancelled=True)
            )

    async def get_occurrences(self, tenant_id: str, task_id: str) -> list[OccurrenceRecord]:
        return await self._records(tenant_id, occ_t.c.task_id == task_id, lock=False)

    async def lock_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        records = await self._records(tenant_id, occ_t.c.id == occurrence_id, lock=True)
        return records[0] if records else None

    async def _records(self, tenant_id: str, where: Any, *, lock: bool) -> list[OccurrenceRecord]:
        query = (
            select(occ_t, tasks.c.people_needed)
            .join(
                tasks,
                (tasks.c.tenant_id == occ_t.c.tenant_id) & (tasks.c.id == occ_t.c.task_id),
            )
            .where(occ_t.c.tenant_id == tenant_id, where)
            .order_by(occ_t.c.start_utc, occ_t.c.id)
        )
        if lock:
            # Row lock on PostgreSQL; SQLite renders no FOR UPDATE (its transactions already
            # hold the single write lock from BEGIN IMMEDIATE).
            query = query.with_for_update(of=occ_t)
        rows = (await self._c.execute(query)).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        held: dict[str, list[Claim]] = {occ_id: [] for occ_id in ids}
        for row in await self._c.execute(
            select(claims)
            .where(claims.c.tenant_id == tenant_id, claims.c.occurrence_id.in_(ids))
            .order_by(claims.c.at, claims.c.member_id)
        ):
            held[row.occurrence_id].append(
                Claim(
                    occurrence_id=row.occurrence_id,
                    member_id=row.member_id,
                    channel=row.channel,
                    at=row.at,
                )
            )
        passed: dict[str, list[Pass]] = {occ_id: [] for occ_id in ids}
        for row in await self._c.execute(
            select(passes)
            .where(passes.c.tenant_id == tenant_id, passes.c.occurrence_id.in_(ids))
            .order_by(passes.c.at, passes.c.member_id)
        ):
            passed[row.occurrence_id].append(
                Pass(occurrence_id=row.occurrence_id, member_id=row.member_id, at=row.at)
            )
        return [
            OccurrenceRecord(
                occurrence=Occurrence(
                    id=row.id,
                    task_id=row.task_id,
                    start=row.start_utc.astimezone(ZoneInfo(row.tz)),
                    end=row.end_utc.astimezone(ZoneInfo(row.tz)),
                    cancelled=row.cancelled,
                ),
                people_needed=row.people_needed,
                claims=tuple(held[row.id]),
                passes=tuple(passed[row.id]),
            )
            for row in rows
        ]

    async def add_claim(self, tenant_id: str, claim: Claim) -> None:
        inserted = await self._c.execute(
            self._insert(claims)
            .values(
                tenant_id=tenant_id,
                occurrence_id=claim.occurrence_id,
                member_id=claim.member_id,
                channel=claim.channel,
                at=claim.at,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "occurrence_id", "member_id"])
            .returning(literal(1))
        )
        if inserted.first() is None:
            raise Conflict(f"{claim.member_id} already holds {claim.occurrence_id}")

    async def remove_claim(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool:
        removed = await self._c.execute(
            delete(claims)
            .where(
                claims.c.tenant_id == tenant_id,
                claims.c.occurrence_id == occurrence_id,
                claims.c.member_id == member_id,
            )
            .returning(literal(1))
        )
        return removed.first() is not None

    async def add_pass(self, tenant_id: str, passed: Pass) -> None:
        """Idempotent: passing again keeps the first pass."""
        await self._c.execute(
            self._insert(passes)
            .values(
                tenant_id=tenant_id,
                occurrence_id=passed.occurrence_id,
                member_id=passed.member_id,
                at=passed.at,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "occurrence_id", "member_id"])
        )

    # relief

    async def save_relief_request(self, request: ReliefRequest) -> None:
        values = {
            "citizen_id": request.citizen_id,
            "member_id": request.member_id,
            "start_at": request.start,
            "end_at": request.end,
            "status": request.status,
            "version": request.version,
        }
        await self._c.execute(
            self._insert(relief_requests)
            .values(tenant_id=request.tenant_id, id=request.id, **values)
            .on_conflict_do_update(index_elements=["tenant_id", "id"], set_=values)
        )

    async def get_relief_request(self, tenant_id: str, request_id: str) -> ReliefRequest | None:
        row = (
            await self._c.execute(
                select(relief_requests).where(
                    relief_requests.c.tenant_id == tenant_id, relief_requests.c.id == request_id
                )
            )
        ).one_or_none()
        if row is None:
            return None
        return ReliefRequest(
            tenant_id=row.tenant_id,
            id=row.id,
            citizen_id=row.citizen_id,
            member_id=row.member_id,
            start=row.start_at,
            end=row.end_at,
            status=row.status,
            version=row.version,
        )

    # background work, host events, audit

    async def enqueue_job(
        self,
        tenant_id: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        run_at: datetime,
        key: str | None = None,
    ) -> None:
        now = datetime.now(UTC)
        stmt = self._insert(jobs).values(
            tenant_id=tenant_id,
            kind=kind,
            key=key,
            payload=dict(payload),
            status="queued",
            run_at=run_at,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        if key is not None:
            # The partial unique index `uq_jobs_queued_key` is the conflict target.
            earlier = case(
                (stmt.excluded.run_at < jobs.c.run_at, stmt.excluded.run_at), else_=jobs.c.run_at
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["tenant_id", "kind", "key"],
                index_where=text("status = 'queued'"),
                set_={"run_at": earlier, "updated_at": now},
            )
        await self._c.execute(stmt)

    async def add_outbox(
        self,
        tenant_id: str,
        event_type: str,
        data: Mapping[str, Any],
        *,
        now: datetime,
        ordering_key: str | None = None,
    ) -> str:
        event_id = new_event_id(now, self._event_seq)
        await self._c.execute(
            outbox.insert().values(
                id=event_id,
                tenant_id=tenant_id,
                type=event_type,
                data=dict(data),
                ordering_key=ordering_key,
                created_at=now,
                attempts=0,
            )
        )
        return event_id

    async def audit(self, entry: AuditEntry) -> None:
        await self._c.execute(
            audit.insert().values(
                tenant_id=entry.tenant_id,
                at=entry.at,
                actor=entry.actor,
                action=entry.action,
                channel=entry.channel,
                subject=entry.subject,
                detail=dict(entry.detail),
            )
        )

    async def list_audit(self, tenant_id: str, subject: str | None = None) -> list[AuditEntry]:
        query = select(audit).where(audit.c.tenant_id == tenant_id)
        if subject is not None:
            query = query.where(audit.c.subject == subject)
        rows = await self._c.execute(query.order_by(audit.c.at, audit.c.id))
        return [
            AuditEntry(
                tenant_id=row.tenant_id,
                at=row.at,
                actor=row.actor,
                action=row.action,
                channel=row.channel,
                subject=row.subject,
                detail=row.detail,
            )
            for row in rows
        ]
