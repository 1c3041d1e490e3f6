"""Staff assign an occurrence to a member (`POST /api/v1/occurrences/{id}/assign`).

What it does depends on the member (`plugin.domain.staffing.assignment_for`):

- a **staff** member is bound to it: a claim through channel "staff", first come first served
  under the occurrence's row lock like every claim (`claiming.decide`: audited, `task.claimed`
  to the host), and every calendar of the circle follows (held in theirs, `[Sara] …` in the
  others');
- anyone else (a relative, the network) is **asked**: a targeted offer is stored, and their
  own copy reads `[Til dig] …`/`[For you] …` until they accept or decline it through their
  calendar or claim link. Nothing is claimed for them. A member who already passed on it is
  not asked again (their answer stands; they can still claim through their link).

Everything happens in one transaction with its audit entry and the calendar syncs it needs.

    result = await assign_occurrence(store, "north", "t-1_20270316T1000", "m-sara",
                                     actor="api", now=now)
    result.outcome  # AssignOutcome.ASSIGNED, or a Refusal (e.g. FULL when nobody more is needed)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from plugin.domain.claims import ClaimOutcome
from plugin.domain.model import Circle, Member, OccurrenceRecord, TargetedOffer, TaskStatus
from plugin.domain.staffing import Assignment, assignment_for
from plugin.services.claiming import Ask, decide
from plugin.services.ports import AuditEntry, Store, Tx
from plugin.services.view_sync import enqueue_view_syncs

__all__ = ["AssignOutcome", "AssignRefusal", "Assigned", "assign_occurrence"]


class AssignOutcome(StrEnum):
    ASSIGNED = "assigned"  # staff: now holds it
    ALREADY_HELD = "already_held"  # the member holds it already (staff or not)
    ASKED = "asked"  # a targeted offer is now in the member's calendar
    ALREADY_ASKED = "already_asked"
    DECLINED = "declined"  # the member passed on it before: not asked again


class AssignRefusal(StrEnum):
    UNKNOWN_OCCURRENCE = "unknown_occurrence"  # 404
    UNKNOWN_MEMBER = "unknown_member"  # 404: in no circle of the tenant
    NOT_IN_CIRCLE = "not_in_circle"  # 422: a member of another circle
    FULL = "full"  # 409
    CANCELLED = "cancelled"  # 409
    OVER = "over"  # 409: the occurrence has ended
    VISIT = "visit"  # 409: visits are assigned by the host (`visit.assigned`)


@dataclass(frozen=True, slots=True)
class Assigned:
    outcome: AssignOutcome
    member: Member
    record: OccurrenceRecord  # after the assignment


async def assign_occurrence(
    store: Store,
    tenant_id: str,
    occurrence_id: str,
    member_id: str,
    *,
    actor: str,
    now: datetime,
) -> Assigned | AssignRefusal:
    """Bind a staff member or ask anyone else; `actor` names who asked, for the audit log."""
    async with store.transaction() as tx:
        record = await tx.lock_occurrence(tenant_id, occurrence_id)
        task = None if record is None else await tx.get_task(tenant_id, record.occurrence.task_id)
        circle = None if task is None else await tx.get_circle(tenant_id, task.citizen_id)
        if record is None or task is None or circle is None:
            return AssignRefusal.UNKNOWN_OCCURRENCE
        member = circle.member(member_id)
        if member is None:
            if await tx.is_current_member(tenant_id, member_id):
                return AssignRefusal.NOT_IN_CIRCLE
            return AssignRefusal.UNKNOWN_MEMBER
        if task.kind == "visit":
            return AssignRefusal.VISIT
        if record.occurrence.cancelled or task.status is TaskStatus.CANCELLED:
            return AssignRefusal.CANCELLED
        if record.occurrence.end <= now:
            return AssignRefusal.OVER
        if any(c.member_id == member_id for c in record.claims):
            outcome: AssignOutcome | AssignRefusal = AssignOutcome.ALREADY_HELD
        elif record.free_slots == 0:
            return AssignRefusal.FULL
        elif assignment_for(member) is Assignment.BIND:
            outcome = await _bind(tx, tenant_id, circle, occurrence_id, member, now=now)
        else:
            outcome = await _ask(tx, tenant_id, circle, record, member, now=now)
        if isinstance(outcome, AssignRefusal):
            return outcome
        await tx.audit(
            AuditEntry(
                tenant_id=tenant_id,
                at=now,
                actor=actor,
                action="occurrence.assign",
                channel="staff",
                subject=f"occurrence:{occurrence_id}",
                detail={"member_id": member_id, "outcome": outcome.value},
            )
        )
        after = await tx.get_occurrence(tenant_id, occurrence_id)
    assert after is not None  # it was locked in this very transaction
    return Assigned(outcome, member, after)


async def _bind(
    tx: Tx, tenant_id: str, circle: Circle, occurrence_id: str, member: Member, *, now: datetime
) -> AssignOutcome | AssignRefusal:
    decision = await decide(
        tx, tenant_id, occurrence_id, member.id, Ask.CLAIM, channel="staff", now=now
    )
    if decision is None:  # cannot happen: the occurrence is locked in this transaction
        return AssignRefusal.UNKNOWN_OCCURRENCE
    match decision.outcome:
        case ClaimOutcome.CLAIMED:
            await enqueue_view_syncs(tx, tenant_id, circle, now=now)
            return AssignOutcome.ASSIGNED
        case ClaimOutcome.ALREADY_HELD:
            return AssignOutcome.ALREADY_HELD
        case ClaimOutcome.CANCELLED:
            return AssignRefusal.CANCELLED
        case _:
            return AssignRefusal.FULL


async def _ask(
    tx: Tx,
    tenant_id: str,
    circle: Circle,
    record: OccurrenceRecord,
    member: Member,
    *,
    now: datetime,
) -> AssignOutcome:
    if any(p.member_id == member.id for p in record.passes):
        return AssignOutcome.DECLINED
    offer = TargetedOffer(record.occurrence.id, member.id, now)
    if not await tx.add_targeted_offer(tenant_id, offer):
        return AssignOutcome.ALREADY_ASKED
    # Only the asked member's copy changes.
    await enqueue_view_syncs(tx, tenant_id, replace(circle, members=(member,)), now=now)
    return AssignOutcome.ASKED
