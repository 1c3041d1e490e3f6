"""Apply host webhooks from the inbox to the store, one at a time, in arrival order.

A webhook reaches the inbox durably before the host gets its 202 (`plugin.services.inbox`);
here each inbox entry is applied together with the background jobs it causes, its audit entry
and the mark that it was applied, in the same transaction, so a crash in between applies it
again from the start, and never half.

Versions: every host entity carries a `version`; an event older than (or as old as) the stored
one is acknowledged and ignored, so events arriving out of order never roll a task back or
resurrect a cancelled one. A cancellation for a task never seen leaves a tombstone carrying its
version for the same reason.

Fan-out: a change to a circle's membership or tasks queues a `view.sync` of every hosted
member's view of that circle (`view_sync.enqueue_view_syncs`), in the same transaction.

Consent withdrawn: a member removed from a circle gets a `member.withdraw` job (their calendar
copy goes); one removed from their last circle of the tenant also has their personal links
revoked in the same transaction (claim links, feed, setup page: `links.revoke`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from plugin.domain.model import Claim, ExternalCalendar, Member, Task, TaskStatus, same_account
from plugin.domain.versions import accept_version
from plugin.services.calendar_access import revoke_calendar_credential
from plugin.services.calendars import view_job_key
from plugin.services.capacity import settle_member_settings
from plugin.services.claiming import Ask, decide
from plugin.services.commands import (
    AssignVisit,
    CancelTask,
    DecideRelief,
    HostCommand,
    UpdateCircle,
    UpsertTask,
)
from plugin.services.links import revoke as revoke_links
from plugin.services.occurrences import planned_occurrences
from plugin.services.ports import AuditEntry, InboxEntry, Store, StoreUnavailable, Tx
from plugin.services.view_sync import enqueue_view_syncs

log = logging.getLogger(__name__)

# Job kinds written here; the worker owns their handlers. One kind per reason: a job queued
# for a view (its key) while one of its kind waits is folded into that one, payload and all,
# so two reasons sharing a kind would lose one (a removal folded into an earlier "left their
# account" job only cleaned the old account, and the member's copies stayed).
JOB_MEMBER_WITHDRAW = "member.withdraw"  # removed from the circle: their copy goes
JOB_LEFT_HOSTED = "member.left_hosted"  # no longer hosted: the hosted copy goes
JOB_LEFT_ACCOUNT = "member.left_account"  # off their own account: the copy kept there goes


class Outcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # an equal or newer version is stored: acknowledged, ignored
    FAILED = "failed"  # could not be applied; the body is kept for replay


@dataclass(frozen=True, slots=True)
class ApplyResult:
    entry: InboxEntry
    outcome: Outcome


Decode = Callable[[InboxEntry], HostCommand]


async def apply_batch(
    store: Store, decode: Decode, *, now: datetime, horizon: timedelta, limit: int = 10
) -> list[ApplyResult]:
    """Apply up to `limit` of the oldest pending inbox entries in one transaction, each with
    the jobs and the audit entry it causes. An empty list when the inbox is drained.

    Each entry runs in a savepoint: one that cannot be applied (a bug, data the store refuses)
    is rolled back alone and marked failed, so it never blocks the entries behind it. A store
    outage is raised: the whole batch stays pending and is applied when the database is back.
    The batch is small so that the single SQLite writer is soon free for incoming webhooks.
    """
    results: list[ApplyResult] = []
    async with store.transaction() as tx:
        for entry in await tx.pending_webhooks(limit):
            try:
                async with tx.savepoint():
                    command = decode(entry)
                    applier = _Applier(tx, entry.tenant_id, now=now, horizon=horizon)
                    applied = await applier.apply(command)
                    outcome = Outcome.APPLIED if applied else Outcome.STALE
                    await _audit(tx, entry, outcome, now, subject=_subject(command))
                    await tx.finish_webhook(entry.seq, status=outcome.value, now=now)
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.exception(
                    "webhook could not be applied; marked failed",
                    extra={"tenant": entry.tenant_id, "webhook_id": entry.webhook_id},
                )
                outcome = Outcome.FAILED
                subject = f"webhook:{entry.webhook_id}"
                await _audit(tx, entry, outcome, now, subject=subject)
                await tx.finish_webhook(
                    entry.seq, status="failed", now=now, error=type(exc).__name__
                )
            results.append(ApplyResult(entry, outcome))
    for result in results:  # logged once committed
        log.info(
            "webhook applied",
            extra={
                "tenant": result.entry.tenant_id,
                "event_type": result.entry.event_type,
                "webhook_id": result.entry.webhook_id,
                "outcome": result.outcome.value,
            },
        )
    return results


async def _audit(
    tx: Tx, entry: InboxEntry, outcome: Outcome, now: datetime, *, subject: str
) -> None:
    await tx.audit(
        AuditEntry(
            tenant_id=entry.tenant_id,
            at=now,
            actor="host",
            action=entry.event_type,
            channel="host",
            subject=subject,
            detail={
                "webhook_id": entry.webhook_id,
                "outcome": outcome.value,
                "received_at": entry.received_at.isoformat(),
            },
        )
    )


def _left_account(before: Member, after: Member) -> ExternalCalendar | None:
    """`before`'s own CalDAV account, when it no longer holds the member's view in `after`
    (a new password for the same URL and username is the same account)."""
    old, new = before.external, after.external
    if before.calendar != "external" or old is None:
        return None
    if after.calendar == "external" and new is not None and same_account(old, new):
        return None
    return old


def _subject(command: HostCommand) -> str:
    match command:
        case UpdateCircle(circle=circle):
            return f"circle:{circle.citizen.id}"
        case UpsertTask(task=task) | AssignVisit(task=task):
            return f"task:{task.id}"
        case CancelTask(task_id=task_id):
            return f"task:{task_id}"
        case DecideRelief(request_id=request_id):
            return f"relief:{request_id}"


class _Applier:
    def __init__(self, tx: Tx, tenant_id: str, *, now: datetime, horizon: timedelta) -> None:
        self.tx = tx
        self.tenant_id = tenant_id
        self.now = now
        self.horizon = horizon

    async def apply(self, command: HostCommand) -> bool:
        match command:
            case UpdateCircle():
                return await self.update_circle(command)
            case UpsertTask(task=task):
                return await self.upsert_task(task)
            case CancelTask():
                return await self.cancel_task(command)
            case AssignVisit(task=task):
                return await self.upsert_task(task)
            case DecideRelief():
                return await self.decide_relief(command)

    async def update_circle(self, command: UpdateCircle) -> bool:
        circle = command.circle
        stored = await self.tx.get_circle(self.tenant_id, circle.citizen.id)
        if stored is not None and not accept_version(stored.version, circle.version):
            return False
        change = await self.tx.save_circle(self.tenant_id, circle, self.now)
        # A changed host value takes the field back from a member's own setting (capacity).
        await settle_member_settings(self.tx, self.tenant_id, circle, now=self.now)
        for member_id in change.changed:
            before = None if stored is None else stored.member(member_id)
            after = circle.member(member_id)
            if before is None or after is None:
                continue
            kind: str | None = None
            left = _left_account(before, after)
            if before.calendar == "hosted" and after.calendar != "hosted":
                kind = JOB_LEFT_HOSTED  # their copy on the hosted server goes
            elif left is not None:
                # Their own account no longer holds their view (another delivery, or another
                # account): its collection goes. The account is kept, its password encrypted,
                # until the job has deleted it; the membership now holds the new one only.
                await self.tx.retire_calendar(
                    self.tenant_id, circle.citizen.id, member_id, left, now=self.now
                )
                kind = JOB_LEFT_ACCOUNT
            if kind is not None:
                # The new delivery starts afresh.
                await self.tx.enqueue_job(
                    self.tenant_id,
                    kind,
                    {"citizen_id": circle.citizen.id, "member_id": member_id},
                    run_at=self.now,
                    key=view_job_key(circle.citizen.id, member_id),
                )
        for member_id in change.removed:
            # Consent withdrawn: the member's calendar copy and links must go (DESIGN principle 1).
            await self.tx.enqueue_job(
                self.tenant_id,
                JOB_MEMBER_WITHDRAW,
                {"citizen_id": circle.citizen.id, "member_id": member_id},
                run_at=self.now,
                key=view_job_key(circle.citizen.id, member_id),
            )
            # Links to this circle's occurrences are refused at once (the claim page checks
            # membership); out of every circle of the tenant, all links and the feed die too.
            if not await self.tx.is_current_member(self.tenant_id, member_id):
                await revoke_links(self.tx, self.tenant_id, member_id, now=self.now, actor="host")
                await revoke_calendar_credential(
                    self.tx, self.tenant_id, member_id, now=self.now, actor="host"
                )
        await enqueue_view_syncs(self.tx, self.tenant_id, circle, now=self.now)
        return True

    async def fan_out(self, citizen_id: str) -> None:
        circle = await self.tx.get_circle(self.tenant_id, citizen_id)
        if circle is not None:
            await enqueue_view_syncs(self.tx, self.tenant_id, circle, now=self.now)

    async def upsert_task(self, task: Task) -> bool:
        stored = await self.tx.get_task(self.tenant_id, task.id)
        if stored is not None and not accept_version(stored.version, task.version):
            return False
        await self.tx.save_task(task)
        if stored is not None and stored.citizen_id != task.citizen_id:
            await self.moved(task, stored.citizen_id)
        await materialise(self.tx, task, now=self.now, horizon=self.horizon)
        circle = await self.tx.get_circle(self.tenant_id, task.citizen_id)
        if circle is None:
            return True
        if task.kind == "visit" and task.assigned_member_id:
            staff = circle.member(task.assigned_member_id)
            if staff is None or staff.role != "staff":
                # Held as the host says all the same (the circle may name them next), but a
                # relative or an unknown id holding a visit is most likely the host's mistake.
                log.warning(
                    "visit assigned to someone who is not staff in the circle",
                    extra={
                        "tenant": self.tenant_id,
                        "task_id": task.id,
                        "member_id": task.assigned_member_id,
                        "role": staff.role if staff is not None else None,
                    },
                )
        await enqueue_view_syncs(self.tx, self.tenant_id, circle, now=self.now)
        return True

    async def moved(self, task: Task, left: str) -> None:
        """The host moved a task to another citizen (a correction: it was entered for the
        wrong one). The circle it left loses it from its calendars in one cycle, as every
        change; and a claim on an occurrence yet to start, held by someone who is not in
        the new circle, is released (channel "host", `task.released` to the host): its
        holder no longer sees the task to give it up, and the new circle would see it taken
        by nobody it knows. A visit is held by whom the host assigns it to, wherever it
        moves (`materialise`), and its holder is not released."""
        log.warning(
            "task moved to another citizen",
            extra={"tenant": self.tenant_id, "task_id": task.id},
        )
        await self.fan_out(left)
        if task.kind == "visit":
            return
        circle = await self.tx.get_circle(self.tenant_id, task.citizen_id)
        for record in await self.tx.get_occurrences(self.tenant_id, task.id):
            if record.occurrence.cancelled or record.occurrence.start <= self.now:
                continue
            for claim in record.claims:
                if circle is None or circle.member(claim.member_id) is None:
                    await decide(
                        self.tx,
                        self.tenant_id,
                        record.occurrence.id,
                        claim.member_id,
                        Ask.RELEASE,
                        channel="host",
                        now=self.now,
                        task=task,
                    )

    async def cancel_task(self, command: CancelTask) -> bool:
        stored = await self.tx.get_task(self.tenant_id, command.task_id)
        if stored is not None and not accept_version(stored.version, command.version):
            return False
        if stored is None:
            stored = _tombstone(self.tenant_id, command)
        await self.tx.save_task(
            replace(stored, version=command.version, status=TaskStatus.CANCELLED)
        )
        await self.tx.sync_occurrences(self.tenant_id, command.task_id, [])
        await self.fan_out(stored.citizen_id)
        return True

    async def decide_relief(self, command: DecideRelief) -> bool:
        """The host's answer to a relief request (`relief.requested`): its status is stored,
        and an approval's visits (the substitute's, as `visit.assigned` data) go into the
        circle's calendars like any visit, held by their staff member. Whatever the answer,
        the circle's views are synced: while requested or approved, the relieved member is
        suggested nothing in the period; after a rejection they may be again."""
        request = await self.tx.get_relief_request(self.tenant_id, command.request_id)
        if request is not None:
            if not accept_version(request.version, command.version):
                return False
            if request.citizen_id != command.citizen_id:
                log.warning(
                    "relief decision names another citizen than its request; ignored",
                    extra={"tenant": self.tenant_id, "request_id": command.request_id},
                )
                return False
            await self.tx.save_relief_request(
                replace(request, status=command.status, version=command.version)
            )
        else:
            log.warning(
                "relief decision for an unknown request; applying its visits",
                extra={"tenant": self.tenant_id, "request_id": command.request_id},
            )
        if command.status == "approved":
            for visit in command.visits:
                await self.upsert_task(visit)
        await self.fan_out(command.citizen_id)
        return True


async def materialise(tx: Tx, task: Task, *, now: datetime, horizon: timedelta) -> bool:
    """Store the occurrences `task` should have now; a visit's are held by its staff member.
    True when anything changed (an unchanged task's members' calendars need no sync)."""
    existing = await tx.get_occurrences(task.tenant_id, task.id)
    planned = planned_occurrences(task, existing, now=now, horizon=horizon)
    changed = await tx.sync_occurrences(task.tenant_id, task.id, planned)
    if task.kind == "visit" and task.assigned_member_id:
        changed = await _hold_visit(tx, task, task.assigned_member_id, now=now) or changed
    return changed


async def _hold_visit(tx: Tx, task: Task, staff_id: str, *, now: datetime) -> bool:
    """A visit is held by its assigned staff member and by nobody else. True when a claim
    was added or removed."""
    changed = False
    for record in await tx.get_occurrences(task.tenant_id, task.id):
        if record.occurrence.cancelled:
            continue
        holders = {claim.member_id for claim in record.claims}
        for member_id in holders - {staff_id}:
            await tx.remove_claim(task.tenant_id, record.occurrence.id, member_id)
            changed = True
        if staff_id not in holders:
            await tx.add_claim(task.tenant_id, Claim(record.occurrence.id, staff_id, "staff", now))
            changed = True
    return changed


TOMBSTONE_START = datetime(1970, 1, 1)


def is_tombstone(task: Task) -> bool:
    """The placeholder `_tombstone` stored: no task the host ever described."""
    return task.status is TaskStatus.CANCELLED and task.start == TOMBSTONE_START


def _tombstone(tenant_id: str, command: CancelTask) -> Task:
    """A cancelled placeholder for a task whose cancellation overtook its creation: it carries
    the version, so the late `task.upserted` is recognised as older and ignored."""
    epoch = TOMBSTONE_START
    return Task(
        tenant_id=tenant_id,
        id=command.task_id,
        citizen_id=command.citizen_id,
        version=command.version,
        kind="task",
        category="other",
        start=epoch,
        end=epoch + timedelta(minutes=1),
        timezone="UTC",
        status=TaskStatus.CANCELLED,
    )
