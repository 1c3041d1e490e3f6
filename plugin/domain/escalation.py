"""Escalation: an occurrence still short of people at its claim deadline goes to the staff.

A task's claim deadline is `claim_deadline_hours` before each occurrence's start. Visits are
assigned, never claimed, and so never escalate; nor do tasks without a deadline, cancelled
tasks and cancelled occurrences.

    check_deadline(task, record, now)
    # DeadlineCheck(due=False, free_slots=0)  before the deadline: look again later
    # DeadlineCheck(due=True, free_slots=1)   passed with a slot free: send `task.unfilled`
    # DeadlineCheck(due=True, free_slots=0)   passed and filled (or not escalating): done
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from plugin.domain.model import OccurrenceRecord, Task, TaskKind, TaskStatus


def claim_deadline(kind: TaskKind, hours: int | None, start: datetime) -> datetime | None:
    """The moment claims are due for an occurrence starting at `start`, or None."""
    if kind == "visit" or hours is None:
        return None
    return start - timedelta(hours=hours)


@dataclass(frozen=True, slots=True)
class DeadlineCheck:
    due: bool  # the deadline has passed: record that it was checked
    free_slots: int  # > 0: escalate (`task.unfilled`)

    @property
    def unfilled(self) -> bool:
        return self.due and self.free_slots > 0


NOT_DUE = DeadlineCheck(due=False, free_slots=0)
NOTHING_TO_DO = DeadlineCheck(due=True, free_slots=0)


def check_deadline(task: Task | None, record: OccurrenceRecord, now: datetime) -> DeadlineCheck:
    occurrence = record.occurrence
    if task is None or task.status is TaskStatus.CANCELLED or occurrence.cancelled:
        return NOTHING_TO_DO
    deadline = claim_deadline(task.kind, task.claim_deadline_hours, occurrence.start)
    if deadline is None:
        return NOTHING_TO_DO
    if deadline > now:
        return NOT_DUE
    return DeadlineCheck(due=True, free_slots=record.free_slots)
