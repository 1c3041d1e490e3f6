"""Staffing: which occurrences staff must look at, and what a staff assignment does.

An occurrence needs staff attention when it still has free slots and is close to, or past,
the moment people had to be found by:

| risk       | when                                                               |
|------------|--------------------------------------------------------------------|
| `UNFILLED` | free slots, and its claim deadline has passed (not yet ended)      |
| `AT_RISK`  | free slots, and the claim deadline is at most `within` away        |
| None       | filled, cancelled, ended, a visit, or the deadline is further away |

A task without a claim deadline is due at its start. Visits are assigned by the host and never
at risk (DESIGN.md "Domain words").

    risk_of(task, record, now=<Mon 09:00>, within=timedelta(hours=48))
    # Risk.AT_RISK for a free slot whose deadline is Tue 10:00

A staff assignment (`assignment_for`) depends on the member's role: a staff member is bound to
the occurrence (a claim through channel "staff"); anyone else is asked (a targeted offer that
they accept or decline themselves, never a claim made for them).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from plugin.domain.escalation import claim_deadline
from plugin.domain.model import Member, OccurrenceRecord, Task, TaskStatus

__all__ = ["Assignment", "Risk", "assignment_for", "due_at", "risk_of"]


class Risk(StrEnum):
    UNFILLED = "unfilled"
    AT_RISK = "at_risk"


class Assignment(StrEnum):
    BIND = "bind"  # staff: a binding claim
    ASK = "ask"  # a relative or someone from the network: a targeted offer


def due_at(task: Task, record: OccurrenceRecord) -> datetime:
    """When people must be found: the claim deadline, else the start."""
    start = record.occurrence.start
    return claim_deadline(task.kind, task.claim_deadline_hours, start) or start


def risk_of(
    task: Task, record: OccurrenceRecord, *, now: datetime, within: timedelta
) -> Risk | None:
    occurrence = record.occurrence
    if (
        task.kind == "visit"
        or task.status is TaskStatus.CANCELLED
        or occurrence.cancelled
        or record.free_slots == 0
        or occurrence.end <= now
    ):
        return None
    due = due_at(task, record)
    if due <= now:
        return Risk.UNFILLED
    if due - now <= within:
        return Risk.AT_RISK
    return None


def assignment_for(member: Member) -> Assignment:
    return Assignment.BIND if member.role == "staff" else Assignment.ASK
