"""`ports.Tx` on one open SQLAlchemy connection: what a unit of work can read and write.

Rows are turned into domain values here and nowhere else. Inserts that may meet an existing row
use INSERT ... ON CONFLICT (both SQLite and PostgreSQL have it), so they are race-safe and leave
the transaction usable. Every statement is built once (`sql_tx_statements`) and executed with a
params dict; rows of the same kind are written with one executemany.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store.sql_care import settings_from_row, settings_values
from adapters.store.sql_rows import (
    Cipher,
    member_from_row,
    member_values,
    task_from_row,
    task_values,
)
from adapters.store.sql_tx_statements import (
    INBOX_ACCEPT_LOCK,
    INBOX_APPLIER_LOCK,
    statements,
)
from adapters.store.tables import INBOX_ERROR_MAX, retired_account_key
from plugin.domain.capacity import MemberSettings
from plugin.domain.escalation import claim_deadline
from plugin.domain.fairness import Held
from plugin.domain.model import (
    Circle,
    Citizen,
    Claim,
    Delivery,
    ExternalCalendar,
    Member,
    Occurrence,
    OccurrenceRecord,
    Pass,
    ReliefRequest,
    TargetedOffer,
    Task,
)
from plugin.services.ports import (
    AuditEntry,
    CalendarCredential,
    CircleChange,
    Conflict,
    InboxEntry,
    InboxStatus,
    KeyedJob,
    MemberLink,
    StoreError,
    StoreUnavailable,
    ViewPeek,
    ViewState,
    recorded_at,
)
from plugin.sync.planner import SyncRecord

__all__ = [
    "INBOX_ACCEPT_LOCK",
    "INBOX_APPLIER_LOCK",
    "SqlTx",
    "new_event_id",
    "translate_errors",
]


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver exceptions into the store's errors, once, at the adapter boundary.

    The store's error says what the driver said (`_said`), never the statement's parameters,
    and has no chain: SQLAlchemy's text ends in "[parameters: …]", the values bound (a task's
    details, a member's e-mail, a webhook's body with a member's own calendar password), the
    driver's in PostgreSQL's DETAIL, and store errors are logged with their chain. The engine
    hides the parameters as well (`create_engine`)."""
    try:
        yield
    except exc.IntegrityError as error:
        raise Conflict(_said(error)) from None
    except exc.DBAPIError as error:
        unavailable = isinstance(error, exc.OperationalError | exc.InterfaceError)
        kind = StoreUnavailable if unavailable or error.connection_invalidated else StoreError
        raise kind(_said(error)) from None
    except (exc.TimeoutError, OSError) as error:
        raise StoreUnavailable(str(error)) from error
    except exc.SQLAlchemyError as error:
        raise StoreError(type(error).__name__) from None


def _said(error: exc.DBAPIError) -> str:
    """What the driver said, its first line up to a colon: PostgreSQL's DETAIL, on the lines
    after it, holds the refused row's values ("Failing row contains (…)") or a key's, and
    after a colon come values too ("invalid input for query argument $3: 'Insulin …'",
    "invalid input syntax for type integer: \"…\""); never the statement or its parameters.
    The driver's exception is not chained for the same reason (store errors are logged with
    their chain)."""
    said = str(error.orig).strip().splitlines()
    first = said[0].split(": ", 1)[0] if said else ""
    return f"{type(error.orig).__name__}: {first}"


def new_event_id(now: datetime, seq: Iterator[int]) -> str:
    """A webhook-id that sorts by creation time, then by order of creation in this process:
    'msg_0005f1c2a3b4c5d6_000001a1b2c3d4e5f6' (time in µs, sequence, randomness)."""
    micros = int(now.timestamp() * 1_000_000)
    return f"msg_{micros:016x}_{next(seq) % 16**6:06x}{secrets.token_hex(6)}"


# Before every stored time: `ended_after` when there is no bound.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _job_row(
    tenant_id: str,
    kind: str,
    key: str | None,
    payload: Mapping[str, Any],
    run_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """A new queued job's row (an upsert's values when keyed)."""
    return {
        "tenant_id": tenant_id,
        "kind": kind,
        "key": key,
        "payload": dict(payload),
        "status": "queued",
        "run_at": run_at,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


class SqlTx:
    def __init__(
        self, connection: AsyncConnection, *, cipher: Cipher | None, event_seq: Iterator[int]
    ) -> None:
        self._c = connection
        self._cipher = cipher
        self._event_seq = event_seq
        self._postgres = connection.dialect.name == "postgresql"
        self._q = statements(connection.dialect.name)

    # tenants and the webhook inbox

    async def ensure_tenant(self, tenant_id: str) -> None:
        await self._c.execute(self._q.add_tenant, {"id": tenant_id, "created_at": _utcnow()})

    async def pending_webhooks(self, limit: int) -> list[InboxEntry]:
        """The oldest pending entries. On PostgreSQL the transaction first takes the applier's
        advisory lock (`INBOX_APPLIER_LOCK`, released at commit or rollback), so appliers in
        several instances apply one batch at a time and never the same entry twice. The query
        after the lock sees the previous holder's commit because each statement of a READ
        COMMITTED transaction (the default) takes a fresh snapshot. On SQLite the transaction
        already holds the single write lock (BEGIN IMMEDIATE)."""
        if self._postgres:
            await self._c.execute(self._q.applier_lock)
        if limit <= 0:
            return []
        rows = await self._c.execute(self._q.pending_webhooks, {"p_limit": limit})
        return [
            InboxEntry(
                seq=row.seq,
                tenant_id=row.tenant_id,
                webhook_id=row.webhook_id,
                event_type=row.event_type,
                body=row.body if row.body is not None else b"",
                received_at=row.received_at,
            )
            for row in rows
        ]

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """SAVEPOINT ... RELEASE, or ROLLBACK TO on an exception (which goes on, translated
        into the store's errors like at the transaction's end, so a caller isolating one
        piece of work can still tell an outage from a failure of that piece)."""
        with translate_errors():
            async with self._c.begin_nested():
                yield

    async def finish_webhook(
        self,
        seq: int,
        *,
        status: InboxStatus,
        now: datetime,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "p_seq": seq,
            "status": status,
            "finished_at": now,
            "error": None if error is None else error[:INBOX_ERROR_MAX],
        }
        if status in ("applied", "stale"):
            values["body"] = None  # the data now lives in its tables (data minimisation)
        await self._c.execute(self._q.finish_webhook, values)

    # circles

    async def get_circle(self, tenant_id: str, citizen_id: str) -> Circle | None:
        key = {"p_tenant": tenant_id, "p_citizen": citizen_id}
        citizen = (await self._c.execute(self._q.get_citizen, key)).one_or_none()
        if citizen is None:
            return None
        rows = await self._c.execute(self._q.get_members, key)
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

    async def get_membership(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> Member | None:
        row = (
            await self._c.execute(
                self._q.get_membership,
                {"p_tenant": tenant_id, "p_citizen": citizen_id, "p_member": member_id},
            )
        ).one_or_none()
        return None if row is None else member_from_row(tenant_id, row, self._cipher)

    async def save_circle(self, tenant_id: str, circle: Circle, now: datetime) -> CircleChange:
        """Members new to the circle (or back after removal) are `added`; members whose stored
        value differs in any field are `changed`; active members absent from `circle` are
        `removed` (kept as rows with `removed_at`, so history and audit still resolve)."""
        citizen = circle.citizen
        await self._c.execute(
            self._q.upsert_citizen,
            {
                "tenant_id": tenant_id,
                "id": citizen.id,
                "display_name": citizen.display_name,
                "timezone": citizen.timezone,
                "locale": citizen.locale,
                "circle_version": circle.version,
                "updated_at": now,
            },
        )
        key = {"p_tenant": tenant_id, "p_citizen": citizen.id}
        stored = {row.member_id: row for row in await self._c.execute(self._q.stored_members, key)}
        added: list[str] = []
        changed: list[str] = []
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for position, member in enumerate(circle.members):
            row_values = member_values(tenant_id, member, self._cipher) | {
                "position": position,
                "removed_at": None,
                "updated_at": now,
            }
            old = stored.get(member.id)
            if old is None:
                inserts.append(
                    {
                        "tenant_id": tenant_id,
                        "citizen_id": citizen.id,
                        "member_id": member.id,
                        **row_values,
                    }
                )
                added.append(member.id)
                continue
            if old.removed_at is not None:
                added.append(member.id)
            elif member_from_row(tenant_id, old, self._cipher) != member:
                changed.append(member.id)
            updates.append(key | {"p_member": member.id} | row_values)
        if inserts:
            await self._c.execute(self._q.add_member, inserts)
        if updates:
            await self._c.execute(self._q.update_member, updates)
        present = {member.id for member in circle.members}
        removed = [
            member_id
            for member_id, row in stored.items()
            if member_id not in present and row.removed_at is None
        ]
        if removed:
            await self._c.execute(
                self._q.remove_members,
                key | {"p_ids": removed, "removed_at": now, "updated_at": now},
            )
        return CircleChange(
            added=tuple(added), removed=tuple(sorted(removed)), changed=tuple(changed)
        )

    async def is_current_member(self, tenant_id: str, member_id: str) -> bool:
        found = await self._c.execute(
            self._q.current_member, {"p_tenant": tenant_id, "p_member": member_id}
        )
        return found.first() is not None

    # calendar credentials

    async def save_calendar_credential(self, credential: CalendarCredential) -> None:
        await self._c.execute(
            self._q.upsert_credential,
            {
                "tenant_id": credential.tenant_id,
                "member_id": credential.member_id,
                "username": credential.username,
                "password_hash": credential.password_hash,
                "created_at": credential.created_at,
                "revoked_at": credential.revoked_at,
            },
        )

    async def get_calendar_credential(self, username: str) -> CalendarCredential | None:
        row = (
            await self._c.execute(self._q.get_credential, {"p_username": username})
        ).one_or_none()
        if row is None:
            return None
        return CalendarCredential(
            tenant_id=row.tenant_id,
            member_id=row.member_id,
            username=row.username,
            password_hash=row.password_hash,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    # member links

    async def ensure_member_link(self, candidate: MemberLink) -> MemberLink:
        await self._c.execute(
            self._q.add_member_link,
            {
                "id": candidate.id,
                "tenant_id": candidate.tenant_id,
                "member_id": candidate.member_id,
                "secret": candidate.secret,
                "created_at": candidate.created_at,
                "revoked_at": None,
            },
        )
        row = (
            await self._c.execute(
                self._q.active_member_link,
                {"p_tenant": candidate.tenant_id, "p_member": candidate.member_id},
            )
        ).one()
        return _member_link(row)

    async def active_member_link(self, tenant_id: str, member_id: str) -> MemberLink | None:
        row = (
            await self._c.execute(
                self._q.active_member_link, {"p_tenant": tenant_id, "p_member": member_id}
            )
        ).one_or_none()
        return None if row is None else _member_link(row)

    async def get_member_link(self, link_id: str) -> MemberLink | None:
        row = (await self._c.execute(self._q.get_member_link, {"p_id": link_id})).one_or_none()
        return None if row is None else _member_link(row)

    async def revoke_member_link(self, tenant_id: str, member_id: str, *, now: datetime) -> bool:
        revoked = await self._c.execute(
            self._q.revoke_member_link,
            {"p_tenant": tenant_id, "p_member": member_id, "revoked_at": now},
        )
        return revoked.first() is not None

    async def list_member_circles(self, tenant_id: str, member_id: str) -> list[str]:
        rows = await self._c.execute(
            self._q.member_circles, {"p_tenant": tenant_id, "p_member": member_id}
        )
        return sorted(row.citizen_id for row in rows)

    # view sync records

    async def list_view_records(
        self, tenant_id: str, member_id: str, citizen_id: str
    ) -> dict[str, SyncRecord]:
        rows = await self._c.execute(
            self._q.list_view_records,
            {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id},
        )
        # By position (the statement's column order), as unpacking a row is several times
        # cheaper than naming its fields, and a view of 5 000 copies reads 5 000 rows.
        return {
            uid: SyncRecord(
                uid, href, etag, fingerprint, material, partstat, bool(alarms), inputs, marks, seq
            )
            for uid, href, etag, fingerprint, material, partstat, alarms, inputs, marks, seq in rows
        }

    async def save_view_record(
        self, tenant_id: str, member_id: str, citizen_id: str, record: SyncRecord
    ) -> None:
        await self._c.execute(
            self._q.upsert_view_record,
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "citizen_id": citizen_id,
                "uid": record.uid,
                "href": record.href,
                "etag": record.etag,
                "fingerprint": record.fingerprint,
                "material": record.material,
                "partstat": record.partstat,
                "member_alarms": record.member_alarms,
                "inputs": record.inputs,
                "marks": record.marks,
                "sequence": record.sequence,
            },
        )

    async def delete_view_record(
        self, tenant_id: str, member_id: str, citizen_id: str, uid: str
    ) -> None:
        await self._c.execute(
            self._q.delete_view_record,
            {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id, "p_uid": uid},
        )

    async def delete_view(self, tenant_id: str, member_id: str, citizen_id: str) -> None:
        key = {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id}
        await self._c.execute(self._q.delete_view, key)
        await self._c.execute(self._q.delete_view_state, key)

    async def retire_calendar(
        self,
        tenant_id: str,
        citizen_id: str,
        member_id: str,
        account: ExternalCalendar,
        *,
        now: datetime,
    ) -> None:
        if self._cipher is None:
            raise StoreError("refusing to store an external calendar password without a cipher")
        await self._c.execute(
            self._q.retire_calendar,
            {
                "tenant_id": tenant_id,
                "citizen_id": citizen_id,
                "member_id": member_id,
                "account": retired_account_key(account.url, account.username),
                "url": account.url,
                "username": account.username,
                "password_enc": self._cipher.encrypt(tenant_id, account.password.encode()),
                "retired_at": now,
            },
        )

    async def erase_removed_account(self, tenant_id: str, citizen_id: str, member_id: str) -> None:
        await self._c.execute(
            self._q.erase_removed_account,
            {"p_tenant": tenant_id, "p_citizen": citizen_id, "p_member": member_id},
        )

    async def retired_calendars(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> list[ExternalCalendar]:
        rows = await self._c.execute(
            self._q.retired_calendars,
            {"p_tenant": tenant_id, "p_citizen": citizen_id, "p_member": member_id},
        )
        if self._cipher is None:
            raise StoreError("cannot read an external calendar password without a cipher")
        cipher = self._cipher
        return [
            ExternalCalendar(
                row.url, row.username, cipher.decrypt(tenant_id, row.password_enc).decode()
            )
            for row in rows
        ]

    async def forget_retired_calendar(
        self, tenant_id: str, citizen_id: str, member_id: str, account: ExternalCalendar
    ) -> None:
        await self._c.execute(
            self._q.forget_retired_calendar,
            {
                "p_tenant": tenant_id,
                "p_citizen": citizen_id,
                "p_member": member_id,
                "p_account": retired_account_key(account.url, account.username),
            },
        )

    async def collection_in_use(
        self, collection: str, server: str, *, other_than: tuple[str, str, str]
    ) -> bool:
        tenant_id, member_id, citizen_id = other_than
        params = {"p_collection": collection, "p_server": server, "p_tenant": tenant_id}
        params.update(p_member=member_id, p_citizen=citizen_id)
        return (await self._c.execute(self._q.collection_in_use, params)).first() is not None

    async def get_view_state(
        self, tenant_id: str, member_id: str, citizen_id: str
    ) -> ViewState | None:
        row = (
            await self._c.execute(
                self._q.get_view_state,
                {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id},
            )
        ).first()
        if row is None:
            return None
        return ViewState(
            row.collection,
            row.sync_token,
            row.ctag,
            row.synced_at,
            row.inputs,
            row.generation,
            row.server,
            row.name,
            row.foreign_after,
        )

    async def save_view_state(
        self, tenant_id: str, member_id: str, citizen_id: str, state: ViewState
    ) -> None:
        await self._c.execute(
            self._q.upsert_view_state,
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "citizen_id": citizen_id,
                "collection": state.collection,
                "sync_token": state.sync_token,
                "ctag": state.ctag,
                "synced_at": state.synced_at,
                "inputs": state.inputs,
                "generation": state.generation,
                "server": state.server,
                "name": state.name,
                "foreign_after": state.foreign_after,
            },
        )

    async def bump_view_generation(self, tenant_id: str, member_id: str, citizen_id: str) -> int:
        bumped = await self._c.scalar(
            self._q.bump_view_generation,
            {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id},
        )
        return int(bumped)

    async def bump_view_generations(
        self, tenant_id: str, citizen_id: str, member_ids: Sequence[str]
    ) -> None:
        if member_ids:
            await self._c.execute(
                self._q.bump_view_generations,
                [
                    {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id}
                    for member_id in member_ids
                ],
            )

    async def get_view_generation(self, tenant_id: str, member_id: str, citizen_id: str) -> int:
        found = await self._c.scalar(
            self._q.get_view_generation,
            {"p_tenant": tenant_id, "p_member": member_id, "p_citizen": citizen_id},
        )
        return int(found or 0)

    async def list_member_views(
        self, tenant_id: str, deliveries: Sequence[Delivery]
    ) -> list[tuple[str, str]]:
        rows = await self._c.execute(
            self._q.list_member_views, {"p_tenant": tenant_id, "p_deliveries": list(deliveries)}
        )
        return [(row.member_id, row.citizen_id) for row in rows]

    async def peek_views(self, tenant_id: str, deliveries: Sequence[Delivery]) -> list[ViewPeek]:
        rows = await self._c.execute(
            self._q.peek_views, {"p_tenant": tenant_id, "p_deliveries": list(deliveries)}
        )
        return [self._peeked(tenant_id, row) for row in rows]

    async def peek_view(
        self, tenant_id: str, member_id: str, citizen_id: str, deliveries: Sequence[Delivery]
    ) -> ViewPeek | None:
        row = (
            await self._c.execute(
                self._q.peek_view,
                {
                    "p_tenant": tenant_id,
                    "p_member": member_id,
                    "p_citizen": citizen_id,
                    "p_deliveries": list(deliveries),
                },
            )
        ).one_or_none()
        return None if row is None else self._peeked(tenant_id, row)

    def _peeked(self, tenant_id: str, row: Any) -> ViewPeek:
        state = None
        if row.vs_collection is not None:
            state = ViewState(
                row.vs_collection,
                row.vs_sync_token,
                row.vs_ctag,
                row.vs_synced_at,
                row.vs_inputs,
                row.vs_generation,
                row.vs_server,
                row.vs_name,
                row.vs_foreign_after,
            )
        member = member_from_row(tenant_id, row, self._cipher)
        return ViewPeek(member, row.citizen_id, state, int(row.current_generation or 0))

    # tasks and occurrences

    async def get_task(self, tenant_id: str, task_id: str) -> Task | None:
        row = (
            await self._c.execute(self._q.get_task, {"p_tenant": tenant_id, "p_task": task_id})
        ).one_or_none()
        return None if row is None else task_from_row(row)

    async def lock_task(self, tenant_id: str, task_id: str) -> Task | None:
        row = (
            await self._c.execute(self._q.lock_task, {"p_tenant": tenant_id, "p_task": task_id})
        ).one_or_none()
        return None if row is None else task_from_row(row)

    async def save_task(self, task: Task) -> None:
        await self._c.execute(
            self._q.upsert_task, {"tenant_id": task.tenant_id, "id": task.id} | task_values(task)
        )

    async def list_tasks(self, tenant_id: str, citizen_id: str) -> list[Task]:
        rows = await self._c.execute(
            self._q.list_tasks, {"p_tenant": tenant_id, "p_citizen": citizen_id}
        )
        return [task_from_row(row) for row in rows]

    async def list_recurring_tasks(self, tenant_id: str) -> list[Task]:
        rows = await self._c.execute(self._q.list_recurring_tasks, {"p_tenant": tenant_id})
        return [task_from_row(row) for row in rows]

    async def sync_occurrences(
        self, tenant_id: str, task_id: str, occurrences: Sequence[Occurrence]
    ) -> bool:
        rows = (
            await self._c.execute(
                self._q.stored_occurrences, {"p_tenant": tenant_id, "p_task": task_id}
            )
        ).all()
        if not rows:
            raise StoreError(f"no task {task_id!r} in tenant {tenant_id!r}")
        zone = rows[0].timezone
        kind, deadline_hours = rows[0].kind, rows[0].claim_deadline_hours
        stored = {row.id: row for row in rows if row.id is not None}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for occ in occurrences:
            old = stored.pop(occ.id, None)
            deadline = claim_deadline(kind, deadline_hours, occ.start)
            if old is None:
                inserts.append(
                    {
                        "tenant_id": tenant_id,
                        "id": occ.id,
                        "task_id": task_id,
                        "start_utc": occ.start,
                        "end_utc": occ.end,
                        "tz": zone,
                        "cancelled": occ.cancelled,
                        "claim_deadline_at": deadline,
                    }
                )
            elif (old.start_utc, old.end_utc, old.cancelled, old.tz, old.claim_deadline_at) != (
                occ.start,
                occ.end,
                occ.cancelled,
                zone,
                deadline,
            ):
                updates.append(
                    {
                        "p_tenant": tenant_id,
                        "p_id": occ.id,
                        "start_utc": occ.start,
                        "end_utc": occ.end,
                        "cancelled": occ.cancelled,
                        "tz": zone,
                        "claim_deadline_at": deadline,
                    }
                )
        if inserts:
            await self._c.execute(self._q.add_occurrence, inserts)
        if updates:
            await self._c.execute(self._q.update_occurrence, updates)
        gone = [occ_id for occ_id, row in stored.items() if not row.cancelled]
        if gone:
            await self._c.execute(
                self._q.cancel_occurrences, {"p_tenant": tenant_id, "p_ids": gone}
            )
        return bool(inserts or updates or gone)

    async def get_occurrences(self, tenant_id: str, task_id: str) -> list[OccurrenceRecord]:
        return await self._records(
            tenant_id, self._q.task_records, {"p_tenant": tenant_id, "p_task": task_id}
        )

    async def occurrences_of_citizen(
        self, tenant_id: str, citizen_id: str, *, ended_after: datetime | None = None
    ) -> dict[str, list[OccurrenceRecord]]:
        by_task: dict[str, list[OccurrenceRecord]] = {}
        params = {
            "p_tenant": tenant_id,
            "p_citizen": citizen_id,
            "p_ended_after": EPOCH if ended_after is None else ended_after,
        }
        for record in await self._records(
            tenant_id, self._q.citizen_records, params, (self._q.citizen_claims_and_passes, params)
        ):
            by_task.setdefault(record.occurrence.task_id, []).append(record)
        return by_task

    async def get_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        records = await self._records(
            tenant_id, self._q.occurrence_record, {"p_tenant": tenant_id, "p_id": occurrence_id}
        )
        return records[0] if records else None

    async def lock_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        records = await self._records(
            tenant_id, self._q.locked_record, {"p_tenant": tenant_id, "p_id": occurrence_id}
        )
        return records[0] if records else None

    async def _records(
        self,
        tenant_id: str,
        query: Any,
        params: dict[str, Any],
        related: tuple[Any, dict[str, Any]] | None = None,
    ) -> list[OccurrenceRecord]:
        """The occurrences `query` selects, with their claims, passes and targeted offers:
        `related`'s (a `claims_and_passes` of a query of their ids), else those of the ids."""
        rows = (await self._c.execute(query, params)).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        held: dict[str, list[Claim]] = {occ_id: [] for occ_id in ids}
        passed: dict[str, list[Pass]] = {occ_id: [] for occ_id in ids}
        offered: dict[str, list[TargetedOffer]] = {occ_id: [] for occ_id in ids}
        if related is None:
            related = (self._q.claims_and_passes, {"p_tenant": tenant_id, "p_ids": ids})
        for row in await self._c.execute(*related):
            if row.occurrence_id not in held:
                continue  # an occurrence added since `query` read them (not in a snapshot)
            if row.kind == 0:
                held[row.occurrence_id].append(
                    Claim(
                        occurrence_id=row.occurrence_id,
                        member_id=row.member_id,
                        channel=row.channel,
                        at=row.at,
                    )
                )
            elif row.kind == 1:
                passed[row.occurrence_id].append(
                    Pass(occurrence_id=row.occurrence_id, member_id=row.member_id, at=row.at)
                )
            else:
                offered[row.occurrence_id].append(
                    TargetedOffer(row.occurrence_id, row.member_id, row.at)
                )
        zones: dict[str, ZoneInfo] = {}
        found = []
        for occ_id, task_id, start, end, tz, cancelled, people_needed in rows:
            zone = zones.get(tz) or zones.setdefault(tz, ZoneInfo(tz))
            occurrence = Occurrence(
                occ_id, task_id, start.astimezone(zone), end.astimezone(zone), cancelled
            )
            found.append(
                OccurrenceRecord(
                    occurrence,
                    people_needed,
                    tuple(held[occ_id]),
                    tuple(passed[occ_id]),
                    tuple(offered[occ_id]),
                )
            )
        return found

    async def add_claim(self, tenant_id: str, claim: Claim) -> None:
        inserted = await self._c.execute(
            self._q.add_claim,
            {
                "tenant_id": tenant_id,
                "occurrence_id": claim.occurrence_id,
                "member_id": claim.member_id,
                "channel": claim.channel,
                "at": claim.at,
            },
        )
        if inserted.first() is None:
            raise Conflict(f"{claim.member_id} already holds {claim.occurrence_id}")

    async def remove_claim(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool:
        removed = await self._c.execute(
            self._q.remove_claim,
            {"p_tenant": tenant_id, "p_occurrence": occurrence_id, "p_member": member_id},
        )
        return removed.first() is not None

    async def remove_pass(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool:
        removed = await self._c.execute(
            self._q.remove_pass,
            {"p_tenant": tenant_id, "p_occurrence": occurrence_id, "p_member": member_id},
        )
        return removed.first() is not None

    async def add_pass(self, tenant_id: str, passed: Pass) -> None:
        """Idempotent: passing again keeps the first pass."""
        await self._c.execute(
            self._q.add_pass,
            {
                "tenant_id": tenant_id,
                "occurrence_id": passed.occurrence_id,
                "member_id": passed.member_id,
                "at": passed.at,
            },
        )

    # relief

    async def save_relief_request(self, request: ReliefRequest) -> None:
        await self._c.execute(
            self._q.upsert_relief,
            {
                "tenant_id": request.tenant_id,
                "id": request.id,
                "citizen_id": request.citizen_id,
                "member_id": request.member_id,
                "start_at": request.start,
                "end_at": request.end,
                "status": request.status,
                "version": request.version,
            },
        )

    async def get_relief_request(self, tenant_id: str, request_id: str) -> ReliefRequest | None:
        row = (
            await self._c.execute(self._q.get_relief, {"p_tenant": tenant_id, "p_id": request_id})
        ).one_or_none()
        return None if row is None else _relief_request(row)

    async def list_relief_requests(self, tenant_id: str, citizen_id: str) -> list[ReliefRequest]:
        rows = await self._c.execute(
            self._q.list_relief, {"p_tenant": tenant_id, "p_citizen": citizen_id}
        )
        return [_relief_request(row) for row in rows]

    # staff

    async def add_targeted_offer(self, tenant_id: str, offer: TargetedOffer) -> bool:
        inserted = await self._c.execute(
            self._q.add_targeted_offer,
            {
                "tenant_id": tenant_id,
                "occurrence_id": offer.occurrence_id,
                "member_id": offer.member_id,
                "at": offer.at,
            },
        )
        return inserted.first() is not None

    async def list_citizens(self, tenant_id: str) -> list[Citizen]:
        rows = await self._c.execute(self._q.list_citizens, {"p_tenant": tenant_id})
        return [
            Citizen(
                tenant_id=tenant_id,
                id=row.id,
                display_name=row.display_name,
                timezone=row.timezone,
                locale=row.locale,
            )
            for row in rows
        ]

    # capacity and fairness

    async def list_held(
        self, tenant_id: str, citizen_id: str, start: datetime, end: datetime
    ) -> list[Held]:
        rows = await self._c.execute(
            self._q.list_held,
            {"p_tenant": tenant_id, "p_citizen": citizen_id, "p_start": start, "p_end": end},
        )
        return [
            Held(
                member_id=row.member_id,
                occurrence_id=row.occurrence_id,
                start=row.start_utc.astimezone(ZoneInfo(row.tz)),
                end=row.end_utc.astimezone(ZoneInfo(row.tz)),
            )
            for row in rows
        ]

    async def get_member_settings(
        self, tenant_id: str, citizen_id: str
    ) -> dict[str, MemberSettings]:
        rows = await self._c.execute(
            self._q.get_member_settings, {"p_tenant": tenant_id, "p_citizen": citizen_id}
        )
        return {row.member_id: settings_from_row(row) for row in rows}

    async def save_member_settings(self, settings: MemberSettings) -> None:
        await self._c.execute(self._q.upsert_member_settings, settings_values(settings))

    async def delete_member_settings(self, tenant_id: str, citizen_id: str, member_id: str) -> None:
        await self._c.execute(
            self._q.delete_member_settings,
            {"p_tenant": tenant_id, "p_citizen": citizen_id, "p_member": member_id},
        )

    async def note_overload(
        self, tenant_id: str, citizen_id: str, member_id: str, period_start: date, *, now: datetime
    ) -> bool:
        inserted = await self._c.execute(
            self._q.note_overload,
            {
                "tenant_id": tenant_id,
                "citizen_id": citizen_id,
                "member_id": member_id,
                "period_start": period_start,
                "noticed_at": now,
            },
        )
        return inserted.first() is not None

    # background work, host events, audit

    async def enqueue_job(
        self,
        tenant_id: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        run_at: datetime,
        key: str | None = None,
        keep_retry: bool = False,
    ) -> None:
        if key is not None:
            job = KeyedJob(key, payload, run_at, keep_retry=keep_retry)
            await self.enqueue_keyed_jobs(tenant_id, kind, [job])
            return
        await self._c.execute(
            self._q.add_job, _job_row(tenant_id, kind, None, payload, run_at, _utcnow())
        )

    async def enqueue_keyed_jobs(self, tenant_id: str, kind: str, jobs: Sequence[KeyedJob]) -> None:
        now = _utcnow()
        for keep_retry, statement in (
            (False, self._q.add_keyed_job),
            (True, self._q.add_keyed_job_keeping_retry),
        ):
            rows = [
                _job_row(tenant_id, kind, job.key, job.payload, job.run_at, now)
                for job in jobs
                if job.keep_retry is keep_retry
            ]
            if rows:
                await self._c.execute(statement, rows)

    async def retrying_jobs(self, tenant_id: str, kind: str) -> set[str]:
        rows = await self._c.scalars(self._q.retrying_jobs, {"p_tenant": tenant_id, "p_kind": kind})
        return {key for key in rows if key is not None}

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
            self._q.add_outbox,
            {
                "id": event_id,
                "tenant_id": tenant_id,
                "type": event_type,
                "data": dict(data),
                "ordering_key": ordering_key,
                "created_at": recorded_at(now),
                "attempts": 0,
            },
        )
        return event_id

    async def check_claim_deadline(
        self, tenant_id: str, occurrence_id: str, *, now: datetime
    ) -> bool:
        # On PostgreSQL a concurrent caller waits for the row lock, then finds it checked.
        checked = await self._c.execute(
            self._q.check_deadline,
            {"p_tenant": tenant_id, "p_id": occurrence_id, "deadline_checked_at": now},
        )
        return checked.first() is not None

    async def audit(self, entry: AuditEntry) -> None:
        await self._c.execute(
            self._q.add_audit,
            {
                "tenant_id": entry.tenant_id,
                "at": entry.at,
                "actor": entry.actor,
                "action": entry.action,
                "channel": entry.channel,
                "subject": entry.subject,
                "detail": dict(entry.detail),
            },
        )

    async def list_audit(self, tenant_id: str, subject: str | None = None) -> list[AuditEntry]:
        if subject is None:
            rows = await self._c.execute(self._q.list_audit, {"p_tenant": tenant_id})
        else:
            rows = await self._c.execute(
                self._q.list_audit_subject, {"p_tenant": tenant_id, "p_subject": subject}
            )
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


def _relief_request(row: Any) -> ReliefRequest:
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


def _member_link(row: Any) -> MemberLink:
    return MemberLink(
        id=row.id,
        tenant_id=row.tenant_id,
        member_id=row.member_id,
        secret=bytes(row.secret),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)
