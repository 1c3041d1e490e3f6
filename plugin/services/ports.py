"""Ports: what the services need from the outside world, as Protocols.

Glossary:

- Store        durable state; every change happens inside `transaction()`, a unit of work that
               commits on clean exit and rolls back on an exception
- Inbox        accepted host webhooks, recorded (group-committed, many per transaction) before
               the host gets its 202, then applied one by one in arrival order
- Tx           the operations available inside one transaction
- Job          background work (a view sync, an outbox delivery, an escalation) written in the
               same transaction as the data it concerns, and leased by one worker at a time
- OutboxEvent  an event for the host; its `id` is the stable `webhook-id` across retries
- EventSender  sends one signed event to a tenant's host (`adapters.host.events`)
- DueDeadline  an occurrence whose claim deadline has passed and that the escalation sweep has
               not checked yet (`plugin.services.escalation`)
- AuditEntry   who did what, when, through which channel
- SyncRecord   what the view sync last wrote for one event UID in one view (member, circle);
               the planner's baseline (`plugin.sync.planner`)
- CalendarCredential  a member's app password for the embedded CalDAV server, kept only as a
               slow salted hash; issuing again replaces it (the old one stops working)
- MemberLink   the secret behind a member's personal links (claim pages, feed, setup page);
               revoking it kills every token it signed (`plugin.services.links`)
- Held         one occurrence a member holds, as load counts it (`plugin.domain.fairness`)
- MemberSettings  a member's own capacity, availability and pause for one circle, beside the
               host's values when they set it (`plugin.domain.capacity`)

Each port has an in-memory fake in `adapters/memory.py`; `tests/contract/` runs one suite
against the fake and the real adapters (SQLite, PostgreSQL).

Errors (adapters translate their own exceptions into these, with `raise ... from exc`):

    StoreError
     ├── StoreUnavailable     the database cannot be reached
     └── Conflict             a uniqueness rule was broken in a way the caller must know

    DeliveryFailed            an event did not reach the host; `reason` is safe to log and store
     ├── HostUnreachable      no answer: connection refused or reset, DNS, timeout
     └── HostRejected         an answer other than 2xx (`status`)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol

from plugin.domain.capacity import MemberSettings
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
from plugin.sync.planner import SyncRecord

JobStatus = Literal["queued", "running", "done", "failed"]
InboxStatus = Literal["pending", "applied", "stale", "failed"]


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached."""


class Conflict(StoreError):
    """A uniqueness rule was broken."""


class DeliveryFailed(Exception):
    """An event did not reach the host. `reason` names the failure without the body, the URL
    or any secret, e.g. "HTTP 503" or "ConnectError"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HostUnreachable(DeliveryFailed):
    """No answer from the host: connection refused or reset, name resolution, timeout."""


class HostRejected(DeliveryFailed):
    """The host answered, but not with 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class KeyedJob:
    """A job to queue, deduplicated by `key` while queued (`Tx.enqueue_keyed_jobs`)."""

    key: str
    payload: Mapping[str, Any]
    run_at: datetime
    keep_retry: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """A leased job; `attempts` counts the leases before this one (0 on the first run)."""

    id: int
    tenant_id: str
    kind: str
    key: str | None
    payload: Mapping[str, Any]
    attempts: int
    run_at: datetime


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A verified, schema-valid host webhook to record."""

    tenant_id: str
    webhook_id: str
    event_type: str
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A recorded webhook; `seq` orders the inbox (arrival order)."""

    seq: int
    tenant_id: str
    webhook_id: str
    event_type: str
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: str
    tenant_id: str
    type: str
    data: Mapping[str, Any]
    ordering_key: str | None
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    dead_at: datetime | None = None
    # When `carecal outbox replay` last requeued it (dead); the dead-letter age counts from here.
    requeued_at: datetime | None = None

    @property
    def pending_since(self) -> datetime:
        return self.requeued_at or self.created_at


OutboxStatus = Literal["pending", "dead"]


@dataclass(frozen=True, slots=True)
class DueDeadline:
    tenant_id: str
    occurrence_id: str


class EventSender(Protocol):
    async def send(
        self, url: str, secret: str, event_id: str, body: bytes, *, timestamp: int
    ) -> None:
        """POST `body` to `url`, Standard Webhooks signed with `secret` (`webhook-id` is
        `event_id`). Returns on a 2xx answer; raises HostUnreachable or HostRejected."""
        ...


@dataclass(frozen=True, slots=True)
class AuditEntry:
    tenant_id: str
    at: datetime
    actor: str
    action: str
    channel: str
    subject: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CalendarCredential:
    """One member's login on the embedded CalDAV server. `username` is unique across tenants
    (the server knows nothing else); `password_hash` is what `verify_password` checks."""

    tenant_id: str
    member_id: str
    username: str
    password_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ViewState:
    """Where one view's collection is and what its change markers were when the last sync
    read it: `sync_token` (RFC 6578) and `ctag`, either None when the server has none."""

    collection: str
    sync_token: str | None
    ctag: str | None
    synced_at: datetime
    inputs: str | None = None  # digest of what the view was rendered from
    # The view's change generation (`Tx.get_view_generation`) the run rendered from: when it
    # is still the current one, nothing the view is rendered from changed since.
    generation: int = 0
    # Which server and account the collection is in (`calendars.Target.server`): a digest,
    # since two accounts can hold a collection at the same path. "": not known (a state
    # stored before this was kept), compared by path alone.
    server: str = ""
    # The display name carecal last gave the collection (None: not known, a state stored
    # before this was kept). A name on the server other than this one is the member's own
    # (they renamed the calendar in their app), and kept: carecal renames the collection
    # only when the name it gives changes (the citizen's, or the member's language).
    name: str | None = None
    # The member's own objects in the collection (a relief event is one) are read at most
    # `relief_calendar.MAX_FOREIGN` a run. When more changed at once, the next runs read on
    # from the ones after this href (in href order), in the full listing, until none is left;
    # None: every changed one was read.
    foreign_after: str | None = None


@dataclass(frozen=True, slots=True)
class ViewPeek:
    """One view as a poll round first reads it (`Tx.peek_views`)."""

    member: Member
    citizen_id: str
    state: ViewState | None
    generation: int


@dataclass(frozen=True, slots=True)
class MemberLink:
    """The secret behind one member's personal links in a tenant. `id` is the public
    reference tokens carry (unique across tenants); `secret` signs them. A revoked link stays
    stored so that its old tokens are answered "gone" rather than "unknown"."""

    id: str
    tenant_id: str
    member_id: str
    secret: bytes
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CircleChange:
    """What `save_circle` did: members new to the circle, removed, and whose access changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


class Tx(Protocol):
    # tenants and the webhook inbox
    async def ensure_tenant(self, tenant_id: str) -> None: ...

    async def pending_webhooks(self, limit: int) -> list[InboxEntry]:
        """The oldest pending inbox entries (lowest seq first), at most `limit`. Serialises
        appliers: on PostgreSQL it takes a transaction-scoped advisory lock first, so two
        instances never apply webhooks concurrently; on SQLite the single writer already does."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: an exception inside rolls back only what was done inside,
        and the transaction goes on (used to isolate one inbox entry of a batch)."""
        ...

    async def finish_webhook(
        self,
        seq: int,
        *,
        status: InboxStatus,
        now: datetime,
        error: str | None = None,
    ) -> None:
        """Mark an entry applied/stale/failed. Applied and stale entries drop their body (the
        data now lives in its tables; data minimisation); failed ones keep it for replay."""
        ...

    # circles
    async def get_circle(self, tenant_id: str, citizen_id: str) -> Circle | None: ...

    async def get_membership(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> Member | None:
        """The member as the circle last listed them, also after their removal (what
        withdrawing their calendar copy needs to know: where it is)."""
        ...

    async def save_circle(self, tenant_id: str, circle: Circle, now: datetime) -> CircleChange:
        """Replace the citizen and the whole membership; members absent are marked removed."""
        ...

    async def is_current_member(self, tenant_id: str, member_id: str) -> bool:
        """Whether the member belongs to at least one circle of the tenant (not removed)."""
        ...

    # calendar credentials (the embedded CalDAV server)
    async def save_calendar_credential(self, credential: CalendarCredential) -> None:
        """Store the member's credential, replacing any earlier one of the same member (and
        clearing its revocation). Raises Conflict if another member holds the username."""
        ...

    async def get_calendar_credential(self, username: str) -> CalendarCredential | None: ...

    # member links (claim pages, feed, setup page)
    async def ensure_member_link(self, candidate: MemberLink) -> MemberLink:
        """The member's active link; `candidate` is stored and returned when there is none.
        Concurrent callers for the same member all get the one that was stored first."""
        ...

    async def active_member_link(self, tenant_id: str, member_id: str) -> MemberLink | None:
        """The member's active link, if one was made (`ensure_member_link` makes it)."""
        ...

    async def get_member_link(self, link_id: str) -> MemberLink | None:
        """A link by its public id, revoked ones included."""
        ...

    async def revoke_member_link(self, tenant_id: str, member_id: str, *, now: datetime) -> bool:
        """Revoke the member's active link; False if there was none. The next
        `ensure_member_link` stores a new one."""
        ...

    async def list_member_circles(self, tenant_id: str, member_id: str) -> list[str]:
        """Citizen ids of the circles the member currently belongs to, sorted."""
        ...

    # view sync records: one view is (tenant, member, citizen)
    async def list_view_records(
        self, tenant_id: str, member_id: str, citizen_id: str
    ) -> dict[str, SyncRecord]:
        """The view's records by UID (tombstones, `href=None`, included)."""
        ...

    async def save_view_record(
        self, tenant_id: str, member_id: str, citizen_id: str, record: SyncRecord
    ) -> None:
        """Insert or replace the record of `record.uid` in the view."""
        ...

    async def delete_view_record(
        self, tenant_id: str, member_id: str, citizen_id: str, uid: str
    ) -> None: ...

    async def delete_view(self, tenant_id: str, member_id: str, citizen_id: str) -> None:
        """Drop every record of the view and its state (its collection was deleted)."""
        ...

    async def retire_calendar(
        self,
        tenant_id: str,
        citizen_id: str,
        member_id: str,
        account: ExternalCalendar,
        *,
        now: datetime,
    ) -> None:
        """Keep `account`, a member's own CalDAV account that no longer holds their view of
        the citizen's circle, until carecal has deleted its collection there (the password
        encrypted, as in the membership). The same account (URL and username) is kept once."""
        ...

    async def erase_removed_account(self, tenant_id: str, citizen_id: str, member_id: str) -> None:
        """A member removed from the circle, once carecal is done with their own account:
        its URL, username and password are erased from their membership (the row stays, for
        history). A member who is in the circle again is left alone."""
        ...

    async def retired_calendars(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> list[ExternalCalendar]:
        """The member's retired accounts for this circle, oldest first."""
        ...

    async def forget_retired_calendar(
        self, tenant_id: str, citizen_id: str, member_id: str, account: ExternalCalendar
    ) -> None:
        """Its collection is deleted (or never can be): the account, password and all, goes."""
        ...

    async def get_view_state(
        self, tenant_id: str, member_id: str, citizen_id: str
    ) -> ViewState | None: ...

    async def save_view_state(
        self, tenant_id: str, member_id: str, citizen_id: str, state: ViewState
    ) -> None:
        """Insert or replace the view's state."""
        ...

    async def collection_in_use(
        self, collection: str, server: str, *, other_than: tuple[str, str, str]
    ) -> bool:
        """Whether the state of a view (of any tenant) but `other_than` (tenant, member,
        citizen) says its collection is at `collection` on `server` (`ViewState.server`; a
        state from before servers were kept counts too)."""
        ...

    async def bump_view_generation(self, tenant_id: str, member_id: str, citizen_id: str) -> int:
        """Something the view is rendered from changed (called in that change's transaction,
        with the view's sync queued): its copies must be rendered again. Answers the view's
        generation after the bump."""
        ...

    async def bump_view_generations(
        self, tenant_id: str, citizen_id: str, member_ids: Sequence[str]
    ) -> None:
        """`bump_view_generation` of each of the members' views of the citizen (ids unique),
        in one statement whatever their number."""
        ...

    async def get_view_generation(self, tenant_id: str, member_id: str, citizen_id: str) -> int:
        """How often the view was bumped; 0 for a view never bumped."""
        ...

    async def peek_views(self, tenant_id: str, deliveries: Sequence[Delivery]) -> list[ViewPeek]:
        """What a poll round starts from, in one read: every current membership whose
        calendar delivery is one of `deliveries`, with its view's state (None: never synced)
        and generation. Ordered as `list_member_views`."""
        ...

    async def peek_view(
        self, tenant_id: str, member_id: str, citizen_id: str, deliveries: Sequence[Delivery]
    ) -> ViewPeek | None:
        """One view as `peek_views` reads it, in one read (None: not a current membership
        with one of `deliveries`): what a sync reads first."""
        ...

    async def list_member_views(
        self, tenant_id: str, deliveries: Sequence[Delivery]
    ) -> list[tuple[str, str]]:
        """(member id, citizen id) of every current membership whose calendar delivery is
        one of `deliveries`: the views a poll of the calendar servers visits."""
        ...

    # tasks and occurrences
    async def get_task(self, tenant_id: str, task_id: str) -> Task | None: ...

    async def lock_task(self, tenant_id: str, task_id: str) -> Task | None:
        """Read one task for update: a writer of the same task (the applier, another
        worker's horizon roll) waits until this transaction ends (row lock on PostgreSQL, the
        single writer on SQLite)."""
        ...

    async def save_task(self, task: Task) -> None: ...

    async def list_tasks(self, tenant_id: str, citizen_id: str) -> list[Task]: ...

    async def list_recurring_tasks(self, tenant_id: str) -> list[Task]:
        """The tenant's active tasks with a recurrence rule (their horizon moves with time)."""
        ...

    async def sync_occurrences(
        self, tenant_id: str, task_id: str, occurrences: Sequence[Occurrence]
    ) -> bool:
        """Make the stored occurrences of a task equal to `occurrences` (by id): insert new
        ones, update times, mark ones no longer present as cancelled. Claims are kept. True
        when anything changed."""
        ...

    async def get_occurrences(self, tenant_id: str, task_id: str) -> list[OccurrenceRecord]:
        """All occurrences of a task ordered by start, each with its claims and passes."""
        ...

    async def occurrences_of_citizen(
        self, tenant_id: str, citizen_id: str, *, ended_after: datetime | None = None
    ) -> dict[str, list[OccurrenceRecord]]:
        """`get_occurrences` of every task of the citizen, by task id, in a few queries (a
        task without occurrences is absent). `ended_after`: only occurrences that end at or
        after it (the store keeps every past one)."""
        ...

    async def get_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        """One occurrence with its claims and passes, read without a lock."""
        ...

    async def lock_occurrence(self, tenant_id: str, occurrence_id: str) -> OccurrenceRecord | None:
        """Read one occurrence for update: concurrent lockers of the same one are serialised
        (row lock on PostgreSQL, the single writer on SQLite)."""
        ...

    async def add_claim(self, tenant_id: str, claim: Claim) -> None: ...

    async def remove_claim(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool: ...

    async def add_pass(self, tenant_id: str, passed: Pass) -> None: ...

    async def remove_pass(self, tenant_id: str, occurrence_id: str, member_id: str) -> bool:
        """Take a member's pass back (they claimed after all); False if there was none."""
        ...

    # relief
    async def save_relief_request(self, request: ReliefRequest) -> None: ...

    async def get_relief_request(self, tenant_id: str, request_id: str) -> ReliefRequest | None: ...

    async def list_relief_requests(self, tenant_id: str, citizen_id: str) -> list[ReliefRequest]:
        """The circle's relief requests, whatever their status, by start then id."""
        ...

    # staff
    async def add_targeted_offer(self, tenant_id: str, offer: TargetedOffer) -> bool:
        """Record that staff asked `offer.member_id` to take the occurrence (it shows in the
        record's `offers`); False, keeping the first ask, when they were asked before."""
        ...

    async def list_citizens(self, tenant_id: str) -> list[Citizen]:
        """The tenant's citizens (one circle each), by display name then id."""
        ...

    # capacity and fairness (issue #6)
    async def list_held(
        self, tenant_id: str, citizen_id: str, start: datetime, end: datetime
    ) -> list[Held]:
        """What the circle's members hold: every claim on an occurrence of the citizen's tasks
        that starts in [start, end), neither the occurrence nor its task cancelled; by start,
        then occurrence id, then member id."""
        ...

    async def get_member_settings(
        self, tenant_id: str, citizen_id: str
    ) -> dict[str, MemberSettings]:
        """The members' own settings for the circle, by member id."""
        ...

    async def save_member_settings(self, settings: MemberSettings) -> None:
        """Insert or replace the member's own setting for the circle."""
        ...

    async def delete_member_settings(
        self, tenant_id: str, citizen_id: str, member_id: str
    ) -> None: ...

    async def note_overload(
        self, tenant_id: str, citizen_id: str, member_id: str, period_start: date, *, now: datetime
    ) -> bool:
        """Record that the host was told the member is over capacity in the period starting
        `period_start`. True for the first caller only, ever (concurrent ones included)."""
        ...

    # background work, host events, audit: written in the same transaction as the change
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
        """Queue a job. With a `key`, a job of the same kind and key that is still queued is
        not duplicated (its run_at becomes the earlier of the two; with `keep_retry`, not
        when that job failed before and waits for its retry: its backoff stands)."""
        ...

    async def enqueue_keyed_jobs(self, tenant_id: str, kind: str, jobs: Sequence[KeyedJob]) -> None:
        """`enqueue_job` of each of `jobs` (keys unique among them), in one or two statements
        whatever their number: a change's fan-out to a circle's views."""
        ...

    async def retrying_jobs(self, tenant_id: str, kind: str) -> set[str]:
        """The keys of the tenant's jobs of `kind` that failed and wait, queued, for their
        next try (the poll leaves their backoff alone while their server does not answer)."""
        ...

    async def add_outbox(
        self,
        tenant_id: str,
        event_type: str,
        data: Mapping[str, Any],
        *,
        now: datetime,
        ordering_key: str | None = None,
    ) -> str:
        """Store an event for the host; returns its id (the stable webhook-id)."""
        ...

    async def check_claim_deadline(
        self, tenant_id: str, occurrence_id: str, *, now: datetime
    ) -> bool:
        """Record that the occurrence's passed claim deadline has been dealt with. True for
        the first caller only, ever: concurrent and later callers get False (the escalation
        sweep sends `task.unfilled` only when this says True)."""
        ...

    async def audit(self, entry: AuditEntry) -> None: ...

    async def list_audit(self, tenant_id: str, subject: str | None = None) -> list[AuditEntry]: ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction that only reads (it must not write): on SQLite it neither waits for
        nor holds the single writer, so readers run beside writes (WAL) and each other."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable if the database cannot be reached."""
        ...

    async def close(self) -> None: ...

    # the inbox: each call is its own short transaction
    async def accept_webhooks(self, items: Sequence[InboxItem]) -> list[bool]:
        """Record a batch of webhooks in ONE transaction (group commit) and return, per item,
        True if it is new, False if its (tenant, webhook-id) was recorded before — earlier in
        the same batch included. Creates unknown tenants. Durable when it returns."""
        ...

    async def inbox_counts(self) -> Mapping[InboxStatus, int]: ...

    async def purge_finished_webhooks(self, *, finished_before: datetime) -> int:
        """Forget the webhooks applied (or found stale) before `finished_before`; pending and
        failed ones stay (a failed one keeps its body for an operator to read). Returns how
        many. A forgotten `webhook-id` that comes again is recorded as new: keep them
        longer than the host retries a delivery."""
        ...

    # jobs: each call is its own short transaction
    async def lease_jobs(
        self, worker: str, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Job]:
        """Lease due jobs: queued ones with run_at <= now, and running ones whose lease
        expired; a keyed job not while a job of its key (of any kind) runs. FOR UPDATE SKIP
        LOCKED on PostgreSQL; the single writer on SQLite."""
        ...

    async def finish_job(self, job_id: int, worker: str) -> None: ...

    async def fail_job(
        self, job_id: int, worker: str, *, error: str, retry_at: datetime | None
    ) -> None:
        """Requeue for `retry_at`, or mark failed for good when retry_at is None."""
        ...

    async def release_leases(self, worker: str) -> int:
        """Return this worker's running jobs to the queue (graceful shutdown)."""
        ...

    async def job_counts(self) -> Mapping[JobStatus, int]: ...

    async def claim_round(self, name: str, *, now: datetime, every: timedelta) -> bool:
        """Claim the round `name` (the calendar poll) for this instance: True when it was
        due (its last claim `every` or longer ago, or none), and it is this instance's to run
        until `now + every`; False when another instance claimed it. Several instances on one
        database then run each round once, not once each. A claim due further ahead than
        `every` (made by an instance whose clock is ahead) does not hold the round."""
        ...

    async def purge_done_jobs(self, *, due_before: datetime) -> int:
        """Forget the finished jobs that were due before `due_before` (failed ones stay, for
        an operator to read); returns how many. Every sync is a job: kept for good, they
        would grow the table by every member write and every poll that finds work."""
        ...

    # outbox
    async def due_outbox(self, *, now: datetime, limit: int) -> list[OutboxEvent]:
        """Undelivered, not dead events whose next attempt is due, oldest first; among events
        sharing an ordering key only the oldest pending one is returned (order is kept)."""
        ...

    async def mark_outbox_delivered(self, event_id: str, *, now: datetime) -> None: ...

    async def mark_outbox_failed(
        self, event_id: str, *, now: datetime, error: str, retry_at: datetime | None
    ) -> None:
        """Count a failed delivery: try again at `retry_at`, or give up (dead) when it is None."""
        ...

    async def lease_outbox(
        self,
        *,
        now: datetime,
        limit: int,
        lease_seconds: float,
        per_tenant: int | None = None,
        held: Mapping[str, int] | None = None,
    ) -> list[OutboxEvent]:
        """Take what `due_outbox` would return: each event's next attempt moves to
        `now + lease_seconds`, so other workers pass it by while this one sends it (FOR UPDATE
        SKIP LOCKED on PostgreSQL, the single writer on SQLite). Events of a key behind a
        leased one stay blocked; an event whose sender died is due again when its lease ends.
        With `per_tenant`: of each tenant, its oldest due events up to `per_tenant` less what
        the caller `held` of it already; one tenant's backlog never fills a lease while
        another's events wait."""
        ...

    async def release_outbox(self, event_ids: Sequence[str], *, now: datetime) -> None:
        """Give leased events that were not sent back: due at `now` (graceful shutdown)."""
        ...

    async def replay_dead_outbox(
        self,
        *,
        now: datetime,
        tenant_id: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """Requeue dead events (of one tenant, created at or after `since`) for delivery at
        `now` with their ids unchanged: attempts start again from 0 and the dead-letter age
        counts from `now` (`requeued_at`). Returns how many were requeued."""
        ...

    async def outbox_counts(self) -> Mapping[OutboxStatus, int]:
        """Undelivered events: pending (to be tried) and dead."""
        ...

    async def purge_delivered_outbox(self, *, delivered_before: datetime) -> int:
        """Forget the events delivered before `delivered_before` (undelivered and dead ones
        stay); returns how many."""
        ...

    # escalation
    async def due_claim_deadlines(
        self, *, now: datetime, since: datetime, limit: int
    ) -> list[DueDeadline]:
        """Occurrences whose claim deadline is in (since, now] and not yet checked
        (`Tx.check_claim_deadline`), earliest deadline first. Visits and tasks without a
        deadline have none. One index range scan: cheap however large the history."""
        ...


def recorded_at(now: datetime) -> datetime:
    """When an outgoing event is recorded (`Tx.add_outbox`), which orders the events of one
    task: its caller's `now`, or the clock's when that is later. Callers take `now` before they
    wait for an occurrence's lock (a job at its start): a decision that waited would otherwise
    be stamped before the one it waited for, and reach the host first."""
    return max(now, datetime.now(UTC))
