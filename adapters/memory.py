"""In-memory fakes of the ports, for service tests; `tests/contract/` keeps them honest.

`MemoryStore` behaves like the SQL store: one transaction at a time (an asyncio.Lock), each
working on a copy of the state that replaces the state only when the transaction commits, so an
exception rolls everything back. Set `store.unavailable = True` to make it behave like a database
that cannot be reached.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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
    TaskStatus,
)
from plugin.services.ports import (
    AuditEntry,
    CalendarCredential,
    CircleChange,
    Conflict,
    DueDeadline,
    InboxEntry,
    InboxItem,
    InboxStatus,
    Job,
    JobStatus,
    KeyedJob,
    MemberLink,
    OutboxEvent,
    OutboxStatus,
    StoreError,
    StoreUnavailable,
    ViewPeek,
    ViewState,
    recorded_at,
)
from plugin.sync.planner import SyncRecord

__all__ = ["MemoryStore", "MemoryTx"]

Key2 = tuple[str, str]
Key3 = tuple[str, str, str]
Key4 = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class _Membership:
    member: Member
    position: int
    removed_at: datetime | None = None


INBOX_ERROR_MAX = 1000  # as `adapters.store.tables.INBOX_ERROR_MAX`


@dataclass(frozen=True, slots=True)
class _InboxRow:
    seq: int
    tenant_id: str
    webhook_id: str
    event_type: str
    body: bytes | None
    received_at: datetime
    status: InboxStatus = "pending"
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _JobRow:
    id: int
    tenant_id: str
    kind: str
    key: str | None
    payload: Mapping[str, Any]
    status: JobStatus
    run_at: datetime
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None


@dataclass(slots=True)
class _State:
    tenants: set[str] = field(default_factory=set)
    inbox: dict[int, _InboxRow] = field(default_factory=dict)  # by seq, in seq order
    inbox_keys: dict[Key2, int] = field(default_factory=dict)  # (tenant, webhook id) -> seq
    next_inbox_seq: int = 1
    citizens: dict[Key2, tuple[Citizen, int]] = field(default_factory=dict)
    memberships: dict[Key3, _Membership] = field(default_factory=dict)
    tasks: dict[Key2, Task] = field(default_factory=dict)
    occurrences: dict[Key2, Occurrence] = field(default_factory=dict)
    claims: dict[Key3, Claim] = field(default_factory=dict)
    passes: dict[Key3, Pass] = field(default_factory=dict)
    offers: dict[Key3, TargetedOffer] = field(default_factory=dict)  # (tenant, occ., member)
    relief: dict[Key2, ReliefRequest] = field(default_factory=dict)
    member_settings: dict[Key3, MemberSettings] = field(default_factory=dict)  # (t, c, m)
    overload_notices: dict[Key4, datetime] = field(default_factory=dict)  # (t, c, m, period)
    jobs: dict[int, _JobRow] = field(default_factory=dict)
    next_job_id: int = 1
    outbox: dict[str, OutboxEvent] = field(default_factory=dict)
    claim_deadlines: dict[Key2, datetime | None] = field(default_factory=dict)  # by occurrence
    deadlines_checked: dict[Key2, datetime] = field(default_factory=dict)  # (tenant, occurrence)
    audit: list[AuditEntry] = field(default_factory=list)
    credentials: dict[Key2, CalendarCredential] = field(default_factory=dict)  # (tenant, member)
    member_links: dict[str, MemberLink] = field(default_factory=dict)  # by link id
    # (tenant, member, citizen, uid)
    view_records: dict[Key4, SyncRecord] = field(default_factory=dict)
    view_state: dict[Key3, ViewState] = field(default_factory=dict)  # (tenant, member, citizen)
    view_generations: dict[Key3, int] = field(default_factory=dict)  # (tenant, member, citizen)
    # (tenant, citizen, member) -> (url, username) -> (account, retired at)
    retired: dict[Key3, dict[Key2, tuple[ExternalCalendar, datetime]]] = field(default_factory=dict)
    rounds: dict[str, datetime] = field(default_factory=dict)  # name -> due at

    def copy(self) -> _State:
        # Values are frozen, so copying the containers is a full snapshot.
        return _State(
            tenants=set(self.tenants),
            inbox=dict(self.inbox),
            inbox_keys=dict(self.inbox_keys),
            next_inbox_seq=self.next_inbox_seq,
            citizens=dict(self.citizens),
            memberships=dict(self.memberships),
            tasks=dict(self.tasks),
            occurrences=dict(self.occurrences),
            claims=dict(self.claims),
            passes=dict(self.passes),
            offers=dict(self.offers),
            relief=dict(self.relief),
            member_settings=dict(self.member_settings),
            overload_notices=dict(self.overload_notices),
            jobs=dict(self.jobs),
            next_job_id=self.next_job_id,
            outbox=dict(self.outbox),
            claim_deadlines=dict(self.claim_deadlines),
            deadlines_checked=dict(self.deadlines_checked),
            audit=list(self.audit),
            credentials=dict(self.credentials),
            member_links=dict(self.member_links),
            view_records=dict(self.view_records),
            view_state=dict(self.view_state),
            view_generations=dict(self.view_generations),
            retired={key: dict(accounts) for key, accounts in self.retired.items()},
            rounds=dict(self.rounds),
        )

    def restore(self, snapshot: _State) -> None:
        """Put back what `snapshot` (a `copy()`) holds; this state object stays the one in use."""
        for name in _STATE_FIELDS:
            setattr(self, name, getattr(snapshot, name))


_STATE_FIELDS = tuple(f.name for f in fields(_State))


class MemoryTx:
    def __init__(self, state: _State, event_seq: Iterator[int]) -> None:
        self._s = state
        self._event_seq = event_seq

    async def ensure_tenant(self, tenant_id: str) -> None:
        self._s.tenants.add(tenant_id)

    async def pending_webhooks(self, limit: int) -> list[InboxEntry]:
        # Transactions already run one at a time, which serialises appliers.
        pending = (row for row in self._s.inbox.values() if row.status == "pending")
        return [
            InboxEntry(
                seq=row.seq,
                tenant_id=row.tenant_id,
                webhook_id=row.webhook_id,
                event_type=row.event_type,
                body=row.body if row.body is not None else b"",
                received_at=row.received_at,
            )
            for row in itertools.islice(pending, max(limit, 0))
        ]

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        snapshot = self._s.copy()
        try:
            yield
        except BaseException:
            self._s.restore(snapshot)
            raise

    async def finish_webhook(
        self,
        seq: int,
        *,
        status: InboxStatus,
        now: datetime,
        error: str | None = None,
    ) -> None:
        row = self._s.inbox.get(seq)
        if row is None:
            return
        self._s.inbox[seq] = replace(
            row,
            status=status,
            finished_at=now,
            error=None if error is None else error[:INBOX_ERROR_MAX],
            body=None if status in ("applied", "stale") else row.body,
        )

    # circles

    async def get_circle(self, tenant_id: str, citizen_id: str) -> Circle | None:
        stored = self._s.citizens.get((tenant_id, citizen_id))
        if stored is None:
            return None
        citizen, version = stored
        rows = sorted(
            (
                row
                for (t, c, _), row in self._s.memberships.items()
                if (t, c) == (tenant_id, citizen_id) and row.removed_at is None
            ),
            key=lambda row: row.position,
        )
        return Circle(citizen=citizen, version=version, members=tuple(r.member for r in rows))

    async def save_circle(self, tenant_id: str, circle: Circle, now: datetime) -> CircleChange:
        citizen_id = circle.citizen.id
        self._s.citizens[tenant_id, citizen_id] = (
            replace(circle.citizen, tenant_id=tenant_id),
            circle.version,
        )
        added: list[str] = []
        changed: list[str] = []
        for position, member in enumerate(circle.members):
            old = self._s.memberships.get((tenant_id, citizen_id, member.id))
            if old is None or old.removed_at is not None:
                added.append(member.id)
            elif old.member != member:
                changed.append(member.id)
            self._s.memberships[tenant_id, citizen_id, member.id] = _Membership(member, position)
        present = {member.id for member in circle.members}
        removed: list[str] = []
        for key, row in list(self._s.memberships.items()):
            t, c, member_id = key
            if (t, c) == (tenant_id, citizen_id) and member_id not in present:
                if row.removed_at is None:
                    removed.append(member_id)
                    self._s.memberships[key] = replace(row, removed_at=now)
        return CircleChange(
            added=tuple(added), removed=tuple(sorted(removed)), changed=tuple(changed)
        )

    async def is_current_member(self, tenant_id: str, member_id: str) -> bool:
        return any(
            (t, m) == (tenant_id, member_id) and row.removed_at is None
            for (t, _, m), row in self._s.memberships.items()
        )

    # calendar credentials

    async def save_calendar_credential(self, credential: CalendarCredential) -> None:
        key = (credential.tenant_id, credential.member_id)
        for other_key, other in self._s.credentials.items():
            if other.username == credential.username and other_key != key:
                raise Conflict(f"username {credential.username!r} is taken")
        self._s.credentials[key] = credential

    async def get_calendar_credential(self, username: str) -> CalendarCredential | None:
        return next((c for c in self._s.credentials.values() if c.username == username), None)

    # member links

    async def ensure_member_link(self, candidate: MemberLink) -> MemberLink:
        active = self._active_link(candidate.tenant_id, candidate.member_id)
        if active is not None:
            return active
        if candidate.id not in self._s.member_links:
            self._s.member_links[candidate.id] = replace(candidate, revoked_at=None)
        found = self._active_link(candidate.tenant_id, candidate.member_id)
        assert found is not None
        return found

    async def active_member_link(self, tenant_id: str, member_id: str) -> MemberLink | None:
        return self._active_link(tenant_id, member_id)

    def _active_link(self, tenant_id: str, member_id: str) -> MemberLink | None:
        return next(
            (
                link
                for link in self._s.member_links.values()
                if (link.tenant_id, link.member_id) == (tenant_id, member_id)
                and link.revoked_at is None
            ),
            None,
        )

    async def get_member_link(self, link_id: str) -> MemberLink | None:
        return self._s.member_links.get(link_id)

    async def revoke_member_link(self, tenant_id: str, member_id: str, *, now: datetime) -> bool:
        active = self._active_link(tenant_id, member_id)
        if active is None:
            return False
        self._s.member_links[active.id] = replace(active, revoked_at=now)
        return True

    async def list_member_circles(self, tenant_id: str, member_id: str) -> list[str]:
        return sorted(
            c
            for (t, c, m), row in self._s.memberships.items()
            if (t, m) == (tenant_id, member_id) and row.removed_at is None
        )

    # view sync records

    async def list_view_records(
        self, tenant_id: str, member_id: str, citizen_id: str
    ) -> dict[str, SyncRecord]:
        view = (tenant_id, member_id, citizen_id)
        return {k[3]: r for k, r in self._s.view_records.items() if k[:3] == view}

    async def save_view_record(
        self, tenant_id: str, member_id: str, citizen_id: str, record: SyncRecord
    ) -> None:
        self._s.view_records[(tenant_id, member_id, citizen_id, record.uid)] = record

    async def delete_view_record(
        self, tenant_id: str, member_id: str, citizen_id: str, uid: str
    ) -> None:
        self._s.view_records.pop((tenant_id, member_id, citizen_id, uid), None)

    async def delete_view(self, tenant_id: str, member_id: str, citizen_id: str) -> None:
        view = (tenant_id, member_id, citizen_id)
        for key in [k for k in self._s.view_records if k[:3] == view]:
            del self._s.view_records[key]
        self._s.view_state.pop(view, None)

    async def retire_calendar(
        self,
        tenant_id: str,
        citizen_id: str,
        member_id: str,
        account: ExternalCalendar,
        *,
        now: datetime,
    ) -> None:
        accounts = self._s.retired.setdefault((tenant_id, citizen_id, member_id), {})
        kept = accounts.get((account.url, account.username))
        accounts[account.url, account.username] = (account, now if kept is None else kept[1])

    async def erase_removed_account(self, tenant_id: str, citizen_id: str, member_id: str) -> None:
        row = self._s.memberships.get((tenant_id, citizen_id, member_id))
        if row is not None and row.removed_at is not None:
            member = replace(row.member, external=None)
            self._s.memberships[tenant_id, citizen_id, member_id] = replace(row, member=member)

    async def retired_calendars(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> list[ExternalCalendar]:
        accounts = self._s.retired.get((tenant_id, citizen_id, member_id), {})
        ordered = sorted(accounts.values(), key=lambda kept: kept[1])
        return [account for account, _ in ordered]

    async def forget_retired_calendar(
        self, tenant_id: str, citizen_id: str, member_id: str, account: ExternalCalendar
    ) -> None:
        accounts = self._s.retired.get((tenant_id, citizen_id, member_id), {})
        accounts.pop((account.url, account.username), None)

    async def get_membership(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> Member | None:
        row = self._s.memberships.get((tenant_id, citizen_id, member_id))
        return None if row is None else row.member

    async def get_view_state(
        self, tenant_id: str, member_id: str, citizen_id: str
    ) -> ViewState | None:
        return self._s.view_state.get((tenant_id, member_id, citizen_id))

    async def save_view_state(
        self, tenant_id: str, member_id: str, citizen_id: str, state: ViewState
    ) -> None:
        self._s.view_state[(tenant_id, member_id, citizen_id)] = state

    async def collection_in_use(
        self, collection: str, server: str, *, other_than: tuple[str, str, str]
    ) -> bool:
        return any(
            s.collection == collection and s.server in (server, "") and key != other_than
            for key, s in self._s.view_state.items()
        )

    async def bump_view_generation(self, tenant_id: str, member_id: str, citizen_id: str) -> int:
        key = (tenant_id, member_id, citizen_id)
        bumped = self._s.view_generations[key] = self._s.view_generations.get(key, 0) + 1
        return bumped

    async def bump_view_generations(
        self, tenant_id: str, citizen_id: str, member_ids: Sequence[str]
    ) -> None:
        for member_id in member_ids:
            await self.bump_view_generation(tenant_id, member_id, citizen_id)

    async def get_view_generation(self, tenant_id: str, member_id: str, citizen_id: str) -> int:
        return self._s.view_generations.get((tenant_id, member_id, citizen_id), 0)

    async def list_member_views(
        self, tenant_id: str, deliveries: Sequence[Delivery]
    ) -> list[tuple[str, str]]:
        found = sorted(
            (citizen_id, member_id)
            for (tenant, citizen_id, member_id), row in self._s.memberships.items()
            if tenant == tenant_id and row.removed_at is None and row.member.calendar in deliveries
        )
        return [(member_id, citizen_id) for citizen_id, member_id in found]

    async def peek_views(self, tenant_id: str, deliveries: Sequence[Delivery]) -> list[ViewPeek]:
        found = []
        for member_id, citizen_id in await self.list_member_views(tenant_id, deliveries):
            key = (tenant_id, member_id, citizen_id)
            member = self._s.memberships[tenant_id, citizen_id, member_id].member
            found.append(
                ViewPeek(
                    member,
                    citizen_id,
                    self._s.view_state.get(key),
                    self._s.view_generations.get(key, 0),
                )
            )
        return found

    async def peek_view(
        self, tenant_id: str, member_id: str, citizen_id: str, deliveries: Sequence[Delivery]
    ) -> ViewPeek | None:
        row = self._s.memberships.get((tenant_id, citizen_id, member_id))
        if row is None or row.removed_at is not None or row.member.calendar not in deliveries:
            return None
        key = (tenant_id, member_id, citizen_id)
        return ViewPeek(
            row.member,
            citizen_id,
            self._s.view_state.get(key),
            self._s.view_generations.get(key, 0),
        )

    async def get_task(self, tenant_id: str, task_id: str) -> Task | None:
        return self._s.tasks.get((tenant_id, task_id))

    async def lock_task(self, tenant_id: str, task_id: str) -> Task | None:
        return self._s.tasks.get((tenant_id, task_id))  # one transaction at a time

    async def save_task(self, task: Task) -> None:
        self._s.tasks[task.tenant_id, task.id] = task

    async def list_tasks(self, tenant_id: str, citizen_id: str) -> list[Task]:
        found = [
            task
            for (t, _), task in self._s.tasks.items()
            if t == tenant_id and task.citizen_id == citizen_id
        ]
        return sorted(found, key=lambda task: (task.start, task.id))

    async def list_recurring_tasks(self, tenant_id: str) -> list[Task]:
        found = [
            task
            for (t, _), task in self._s.tasks.items()
            if t == tenant_id and task.status is TaskStatus.ACTIVE and task.recurrence is not None
        ]
        return sorted(found, key=lambda task: task.id)

    async def sync_occurrences(
        self, tenant_id: str, task_id: str, occurrences: Sequence[Occurrence]
    ) -> bool:
        task = self._s.tasks.get((tenant_id, task_id))
        if task is None:
            raise StoreError(f"no task {task_id!r} in tenant {tenant_id!r}")
        zone = ZoneInfo(task.timezone)
        wanted = {occ.id for occ in occurrences}
        changed = False
        for key, occ in list(self._s.occurrences.items()):
            if key[0] == tenant_id and occ.task_id == task_id and occ.id not in wanted:
                if not occ.cancelled:
                    self._s.occurrences[key] = replace(occ, cancelled=True)
                    changed = True
        for occ in occurrences:
            new = Occurrence(
                id=occ.id,
                task_id=task_id,
                start=occ.start.astimezone(zone),
                end=occ.end.astimezone(zone),
                cancelled=occ.cancelled,
            )
            # As the SQL store: the deadline is fixed when the occurrence is (re)planned.
            deadline = claim_deadline(task.kind, task.claim_deadline_hours, occ.start)
            old = self._s.occurrences.get((tenant_id, occ.id))
            if (
                old is None
                or (old.start, old.end, old.cancelled, old.start.tzinfo)
                != (new.start, new.end, new.cancelled, zone)
                or self._s.claim_deadlines.get((tenant_id, occ.id)) != deadline
            ):
                changed = True
            self._s.occurrences[tenant_id, occ.id] = new
            self._s.claim_deadlines[tenant_id, occ.id] = deadline
        return changed

    def _record(self, tenant_id: str, occ: Occurrence) -> OccurrenceRecord:
        def mine(key: Key3) -> bool:
            return key[0] == tenant_id and key[1] == occ.id

        return OccurrenceRecord(
            occurrence=occ,
            people_needed=self._s.tasks[tenant_id, occ.task_id].people_needed,
            claims=tuple(
                sorted(
                    (c for k, c in self._s.claims.items() if mine(k)),
                    key=lambda c: (c.at, c.member_id),
                )
            ),
            passes=tuple(
                sorted(
                    (p for k, p in self._s.passes.items() if mine(k)),
                    key=lambda p: (p.at, p.member_id),
                )
            ),
            offers=tuple(
                sorted(
                    (o for k, o in self._s.offers.items() if mine(k)),
                    key=lambda o: (o.at, o.member_id),
                )
            ),
        )

    async def get_occurrences(self, tenant_id: str, task_id: str) -> list[OccurrenceRecord]:
        found = sorted(
            (
                occ
                for (t, _), occ in self._s.occurrences.items()
                if t == tenant_id and occ.task_id == task_id
            ),
            key=lambda occ: (occ.start, occ.id),
        )
        return [self._record(tenant_id, occ) for occ in found]

    async def occurrences_of_citizen(
        self, tenant_id: str, citizen_id: str, *, ended_after: datetime | None = None
    ) -> dict[str, list[OccurrenceRecord]]:
        by_task: dict[str, list[OccurrenceRecord]] = {}
        for (t, task_id), task in self._s.tasks.items():
            if t == tenant_id and task.citizen_id == citizen_id:
                found = await self.get_occurrences(tenant_id, task_id)
                if ended_after is not None:
                    found = [r for r in found if r.occurrence.end >= ended_after]
                if found:
                    by_task[task_id] = found
        return by_task

    async def get_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        occ = self._s.occurrences.get((tenant_id, occurrence_id))
        return None if occ is None else self._record(tenant_id, occ)

    async def lock_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        # Transactions already run one at a time, which is the lock.
        occ = self._s.occurrences.get((tenant_id, occurrence_id))
        return None if occ is None else self._record(tenant_id, occ)

    async def add_claim(self, tenant_id: str, claim: Claim) -> None:
        if (tenant_id, claim.occurrence_id) not in self._s.occurrences:
            raise StoreError(f"no occurrence {claim.occurrence_id!r}")
        key = (tenant_id, claim.occurrence_id, claim.member_id)
        if key in self._s.claims:
            raise Conflict(f"{claim.member_id} already holds {claim.occurrence_id}")
        self._s.claims[key] = replace(claim, at=claim.at.astimezone(UTC))  # as SQL reads it

    async def remove_claim(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool:
        return self._s.claims.pop((tenant_id, occurrence_id, member_id), None) is not None

    async def add_pass(self, tenant_id: str, passed: Pass) -> None:
        if (tenant_id, passed.occurrence_id) not in self._s.occurrences:
            raise StoreError(f"no occurrence {passed.occurrence_id!r}")
        key = (tenant_id, passed.occurrence_id, passed.member_id)
        self._s.passes.setdefault(key, replace(passed, at=passed.at.astimezone(UTC)))

    async def remove_pass(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool:
        return self._s.passes.pop((tenant_id, occurrence_id, member_id), None) is not None

    # relief

    async def save_relief_request(self, request: ReliefRequest) -> None:
        self._s.relief[request.tenant_id, request.id] = request

    async def get_relief_request(self, tenant_id: str, request_id: str) -> ReliefRequest | None:
        return self._s.relief.get((tenant_id, request_id))

    async def list_relief_requests(self, tenant_id: str, citizen_id: str) -> list[ReliefRequest]:
        found = (
            r
            for (t, _), r in self._s.relief.items()
            if t == tenant_id and r.citizen_id == citizen_id
        )
        return sorted(found, key=lambda r: (r.start, r.id))

    # staff

    async def add_targeted_offer(self, tenant_id: str, offer: TargetedOffer) -> bool:
        if (tenant_id, offer.occurrence_id) not in self._s.occurrences:
            raise StoreError(f"no occurrence {offer.occurrence_id!r}")
        key = (tenant_id, offer.occurrence_id, offer.member_id)
        if key in self._s.offers:
            return False
        self._s.offers[key] = offer
        return True

    async def list_citizens(self, tenant_id: str) -> list[Citizen]:
        found = (c for (t, _), (c, _) in self._s.citizens.items() if t == tenant_id)
        return sorted(found, key=lambda c: (c.display_name, c.id))

    # capacity and fairness

    async def list_held(
        self, tenant_id: str, citizen_id: str, start: datetime, end: datetime
    ) -> list[Held]:
        found: list[Held] = []
        for t, occurrence_id, member_id in self._s.claims:
            occ = self._s.occurrences.get((t, occurrence_id))
            if t != tenant_id or occ is None or occ.cancelled or not start <= occ.start < end:
                continue
            task = self._s.tasks.get((t, occ.task_id))
            if task is None or task.citizen_id != citizen_id:
                continue
            if task.status is not TaskStatus.ACTIVE:
                continue
            found.append(Held(member_id, occurrence_id, occ.start, occ.end))
        return sorted(found, key=lambda h: (h.start, h.occurrence_id, h.member_id))

    async def get_member_settings(
        self, tenant_id: str, citizen_id: str
    ) -> dict[str, MemberSettings]:
        return {
            m: settings
            for (t, c, m), settings in self._s.member_settings.items()
            if (t, c) == (tenant_id, citizen_id)
        }

    async def save_member_settings(self, settings: MemberSettings) -> None:
        key = (settings.tenant_id, settings.citizen_id, settings.member_id)
        self._s.member_settings[key] = settings

    async def delete_member_settings(self, tenant_id: str, citizen_id: str, member_id: str) -> None:
        self._s.member_settings.pop((tenant_id, citizen_id, member_id), None)

    async def note_overload(
        self, tenant_id: str, citizen_id: str, member_id: str, period_start: date, *, now: datetime
    ) -> bool:
        key = (tenant_id, citizen_id, member_id, period_start.isoformat())
        if key in self._s.overload_notices:
            return False
        self._s.overload_notices[key] = now
        return True

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
            twin = _queued_twin(self._s, tenant_id, kind, key)
            if twin is not None:
                if not (keep_retry and twin.attempts > 0):
                    self._s.jobs[twin.id] = replace(twin, run_at=min(twin.run_at, run_at))
                return
        job_id = self._s.next_job_id
        self._s.next_job_id += 1
        self._s.jobs[job_id] = _JobRow(
            id=job_id,
            tenant_id=tenant_id,
            kind=kind,
            key=key,
            payload=dict(payload),
            status="queued",
            run_at=run_at,
        )

    async def enqueue_keyed_jobs(self, tenant_id: str, kind: str, jobs: Sequence[KeyedJob]) -> None:
        for job in jobs:
            await self.enqueue_job(
                tenant_id,
                kind,
                job.payload,
                run_at=job.run_at,
                key=job.key,
                keep_retry=job.keep_retry,
            )

    async def retrying_jobs(self, tenant_id: str, kind: str) -> set[str]:
        return {
            job.key
            for job in self._s.jobs.values()
            if job.tenant_id == tenant_id
            and job.kind == kind
            and job.status == "queued"
            and job.attempts > 0
            and job.key is not None
        }

    async def add_outbox(
        self,
        tenant_id: str,
        event_type: str,
        data: Mapping[str, Any],
        *,
        now: datetime,
        ordering_key: str | None = None,
    ) -> str:
        micros = int(now.timestamp() * 1_000_000)
        event_id = f"msg_{micros:016x}_{next(self._event_seq) % 16**6:06x}"
        self._s.outbox[event_id] = OutboxEvent(
            id=event_id,
            tenant_id=tenant_id,
            type=event_type,
            data=dict(data),
            ordering_key=ordering_key,
            created_at=recorded_at(now),
        )
        return event_id

    async def check_claim_deadline(
        self, tenant_id: str, occurrence_id: str, *, now: datetime
    ) -> bool:
        key = (tenant_id, occurrence_id)
        if key not in self._s.occurrences or key in self._s.deadlines_checked:
            return False
        self._s.deadlines_checked[key] = now
        return True

    async def audit(self, entry: AuditEntry) -> None:
        self._s.audit.append(entry)

    async def list_audit(self, tenant_id: str, subject: str | None = None) -> list[AuditEntry]:
        found = [
            entry
            for entry in self._s.audit
            if entry.tenant_id == tenant_id and (subject is None or entry.subject == subject)
        ]
        return sorted(found, key=lambda entry: entry.at)  # stable: insertion order breaks ties


def _queued_twin(state: _State, tenant_id: str, kind: str, key: str) -> _JobRow | None:
    return next(
        (
            job
            for job in state.jobs.values()
            if job.status == "queued"
            and (job.tenant_id, job.kind, job.key) == (tenant_id, kind, key)
        ),
        None,
    )


class MemoryStore:
    def __init__(self) -> None:
        self._state = _State()
        self._lock = asyncio.Lock()
        self._event_seq = itertools.count()
        self.unavailable = False

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("the memory store is set to be unavailable")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        self._check()
        async with self._lock:
            draft = self._state.copy()
            yield MemoryTx(draft, self._event_seq)
            self._state = draft

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[MemoryTx]:
        """A snapshot of what is committed; what the block writes (it must not) is dropped."""
        self._check()
        yield MemoryTx(self._state.copy(), self._event_seq)

    async def ping(self) -> None:
        self._check()

    async def close(self) -> None:
        pass

    # the inbox

    async def accept_webhooks(self, items: Sequence[InboxItem]) -> list[bool]:
        self._check()
        async with self._lock:
            state = self._state
            accepted: list[bool] = []
            for item in items:
                state.tenants.add(item.tenant_id)
                key = (item.tenant_id, item.webhook_id)
                if key in state.inbox_keys:
                    accepted.append(False)
                    continue
                seq = state.next_inbox_seq
                state.next_inbox_seq += 1
                state.inbox_keys[key] = seq
                state.inbox[seq] = _InboxRow(
                    seq=seq,
                    tenant_id=item.tenant_id,
                    webhook_id=item.webhook_id,
                    event_type=item.event_type,
                    body=item.body,
                    received_at=item.received_at,
                )
                accepted.append(True)
            return accepted

    async def inbox_counts(self) -> Mapping[InboxStatus, int]:
        self._check()
        counts: dict[InboxStatus, int] = {"pending": 0, "applied": 0, "stale": 0, "failed": 0}
        for row in self._state.inbox.values():
            counts[row.status] += 1
        return counts

    async def purge_finished_webhooks(self, *, finished_before: datetime) -> int:
        self._check()
        async with self._lock:
            state = self._state
            gone = [
                row
                for row in state.inbox.values()
                if row.status in ("applied", "stale")
                and row.finished_at is not None
                and row.finished_at < finished_before
            ]
            for row in gone:
                del state.inbox[row.seq]
                del state.inbox_keys[row.tenant_id, row.webhook_id]
        return len(gone)

    # jobs

    async def lease_jobs(
        self, worker: str, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Job]:
        self._check()
        async with self._lock:
            jobs = self._state.jobs
            busy = {
                (job.tenant_id, job.key)
                for job in jobs.values()
                if job.status == "running"
                and job.key is not None
                and job.lease_until is not None
                and job.lease_until > now
            }
            due = sorted(
                (
                    job
                    for job in jobs.values()
                    if (job.status == "queued" and job.run_at <= now)
                    or (
                        job.status == "running"
                        and job.lease_until is not None
                        and job.lease_until <= now
                    )
                ),
                key=lambda job: (job.run_at, job.id),
            )
            leased: list[Job] = []
            for job in due:
                if len(leased) == limit:
                    break
                if job.key is not None:
                    if (job.tenant_id, job.key) in busy:
                        continue  # its key is running now (any kind): it waits for that run
                    busy.add((job.tenant_id, job.key))
                jobs[job.id] = replace(
                    job,
                    status="running",
                    lease_owner=worker,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    attempts=job.attempts + 1,
                )
                leased.append(
                    Job(
                        id=job.id,
                        tenant_id=job.tenant_id,
                        kind=job.kind,
                        key=job.key,
                        payload=job.payload,
                        attempts=job.attempts,
                        run_at=job.run_at,
                    )
                )
            return leased

    def _held(self, job_id: int, worker: str) -> _JobRow | None:
        job = self._state.jobs.get(job_id)
        if job is None or job.status != "running" or job.lease_owner != worker:
            return None
        return job

    async def finish_job(self, job_id: int, worker: str) -> None:
        self._check()
        async with self._lock:
            job = self._held(job_id, worker)
            if job is not None:
                self._state.jobs[job_id] = replace(
                    job, status="done", lease_owner=None, lease_until=None
                )

    async def fail_job(
        self, job_id: int, worker: str, *, error: str, retry_at: datetime | None
    ) -> None:
        self._check()
        async with self._lock:
            job = self._held(job_id, worker)
            if job is None:
                return
            if retry_at is None:
                self._state.jobs[job_id] = replace(
                    job, status="failed", lease_owner=None, lease_until=None, last_error=error
                )
            else:
                self._requeue(job, run_at=retry_at, error=error)

    def _requeue(self, job: _JobRow, *, run_at: datetime, error: str | None) -> None:
        twin = (
            None if job.key is None else _queued_twin(self._state, job.tenant_id, job.kind, job.key)
        )
        if twin is None:
            self._state.jobs[job.id] = replace(
                job,
                status="queued",
                run_at=run_at,
                lease_owner=None,
                lease_until=None,
                last_error=error,
            )
        else:
            self._state.jobs[twin.id] = replace(
                twin,
                run_at=min(twin.run_at, run_at),
                attempts=max(twin.attempts, job.attempts),
                last_error=error,
            )
            del self._state.jobs[job.id]

    async def release_leases(self, worker: str) -> int:
        self._check()
        async with self._lock:
            mine = [
                job
                for job in self._state.jobs.values()
                if job.status == "running" and job.lease_owner == worker
            ]
            for job in mine:
                self._requeue(job, run_at=job.run_at, error=job.last_error)
            return len(mine)

    async def purge_done_jobs(self, *, due_before: datetime) -> int:
        self._check()
        async with self._lock:
            gone = [
                job.id
                for job in self._state.jobs.values()
                if job.status == "done" and job.run_at < due_before
            ]
            for job_id in gone:
                del self._state.jobs[job_id]
        return len(gone)

    async def claim_round(self, name: str, *, now: datetime, every: timedelta) -> bool:
        self._check()
        async with self._lock:
            due = self._state.rounds.get(name)
            if due is not None and now < due <= now + every:
                return False
            self._state.rounds[name] = now + every
            return True

    async def job_counts(self) -> Mapping[JobStatus, int]:
        self._check()
        counts: dict[JobStatus, int] = {"queued": 0, "running": 0, "done": 0, "failed": 0}
        for job in self._state.jobs.values():
            counts[job.status] += 1
        return counts

    # outbox

    async def due_outbox(self, *, now: datetime, limit: int) -> list[OutboxEvent]:
        self._check()
        pending = sorted(
            (
                event
                for event in self._state.outbox.values()
                if event.delivered_at is None and event.dead_at is None
            ),
            key=lambda event: (event.created_at, event.id),
        )
        heads: set[tuple[str, str]] = set()
        due: list[OutboxEvent] = []
        for event in pending:
            if event.ordering_key is not None:
                group = (event.tenant_id, event.ordering_key)
                if group in heads:
                    continue
                heads.add(group)
            if event.next_attempt_at is None or event.next_attempt_at <= now:
                due.append(event)
        return due[:limit]

    async def mark_outbox_delivered(self, event_id: str, *, now: datetime) -> None:
        self._check()
        async with self._lock:
            event = self._state.outbox.get(event_id)
            if event is not None:
                self._state.outbox[event_id] = replace(
                    event, delivered_at=now, attempts=event.attempts + 1
                )

    async def mark_outbox_failed(
        self, event_id: str, *, now: datetime, error: str, retry_at: datetime | None
    ) -> None:
        self._check()
        async with self._lock:
            event = self._state.outbox.get(event_id)
            if event is None:
                return
            if event.delivered_at is not None:
                return  # a late failure report never undoes a recorded delivery
            if retry_at is None:
                event = replace(event, dead_at=now)
            else:
                event = replace(event, next_attempt_at=retry_at)
            self._state.outbox[event_id] = replace(event, attempts=event.attempts + 1)

    async def lease_outbox(
        self,
        *,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_tenant: int | None = None,
        held: Mapping[str, int] | None = None,
    ) -> list[OutboxEvent]:
        async with self._lock:
            until = now + timedelta(seconds=lease_seconds)
            taken: Counter[str] = Counter(held or {})
            leased: list[OutboxEvent] = []
            for event in await self.due_outbox(now=now, limit=len(self._state.outbox)):
                if len(leased) == limit:
                    break
                if per_tenant is not None and taken[event.tenant_id] >= per_tenant:
                    continue
                taken[event.tenant_id] += 1
                leased.append(replace(event, next_attempt_at=until))
            for event in leased:
                self._state.outbox[event.id] = event
            return leased

    async def release_outbox(self, event_ids: Sequence[str], *, now: datetime) -> None:
        self._check()
        async with self._lock:
            for event_id in event_ids:
                event = self._state.outbox.get(event_id)
                if event is not None and event.delivered_at is None and event.dead_at is None:
                    self._state.outbox[event_id] = replace(event, next_attempt_at=now)

    async def purge_delivered_outbox(self, *, delivered_before: datetime) -> int:
        self._check()
        async with self._lock:
            gone = [
                event.id
                for event in self._state.outbox.values()
                if event.delivered_at is not None and event.delivered_at < delivered_before
            ]
            for event_id in gone:
                del self._state.outbox[event_id]
        return len(gone)

    async def replay_dead_outbox(
        self,
        *,
        now: datetime,
        tenant_id: str | None = None,
        since: datetime | None = None,
    ) -> int:
        self._check()
        async with self._lock:
            dead = [
                event
                for event in self._state.outbox.values()
                if event.dead_at is not None
                and event.delivered_at is None
                and (tenant_id is None or event.tenant_id == tenant_id)
                and (since is None or event.created_at >= since)
            ]
            for event in dead:
                self._state.outbox[event.id] = replace(
                    event, dead_at=None, next_attempt_at=now, requeued_at=now, attempts=0
                )
            return len(dead)

    async def outbox_counts(self) -> Mapping[OutboxStatus, int]:
        self._check()
        undelivered = [e for e in self._state.outbox.values() if e.delivered_at is None]
        dead = sum(1 for e in undelivered if e.dead_at is not None)
        return {"pending": len(undelivered) - dead, "dead": dead}

    # escalation

    async def due_claim_deadlines(
        self, *, now: datetime, since: datetime, limit: int
    ) -> list[DueDeadline]:
        self._check()
        state = self._state
        due: list[tuple[datetime, str, str]] = []
        for key, deadline in state.claim_deadlines.items():
            if key in state.deadlines_checked:
                continue
            if deadline is not None and since < deadline <= now:
                due.append((deadline, *key))
        return [DueDeadline(t, o) for _, t, o in sorted(due)[:limit]]
