from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from plugin.domain.model import Claim, Member, Occurrence, OccurrenceRecord, Task, TaskStatus
from plugin.domain.staffing import Assignment, Risk, assignment_for, due_at, risk_of

START = datetime(2027, 3, 23, 10, tzinfo=UTC)
WITHIN = timedelta(hours=48)
TASK = Task("north", "t-1", "c-1", 1, "task", "shopping", START.replace(tzinfo=None),
            START.replace(tzinfo=None) + timedelta(hours=1), "UTC",
            claim_deadline_hours=24)  # fmt: skip
FREE = OccurrenceRecord(Occurrence("o-1", "t-1", START, START + timedelta(hours=1)), 1)
HELD = replace(FREE, claims=(Claim("o-1", "m-anna", "link", START),))
DEADLINE = START - timedelta(hours=24)


@pytest.mark.parametrize(
    ("case", "task", "record", "now", "risk"),
    [
        ("far off", TASK, FREE, DEADLINE - timedelta(days=3), None),
        ("just outside the window", TASK, FREE, DEADLINE - WITHIN - timedelta(seconds=1), None),
        ("at the window's edge", TASK, FREE, DEADLINE - WITHIN, Risk.AT_RISK),
        ("deadline soon", TASK, FREE, DEADLINE - timedelta(hours=1), Risk.AT_RISK),
        ("deadline now", TASK, FREE, DEADLINE, Risk.UNFILLED),
        ("deadline passed", TASK, FREE, START - timedelta(minutes=5), Risk.UNFILLED),
        ("under way", TASK, FREE, START + timedelta(minutes=30), Risk.UNFILLED),
        ("over", TASK, FREE, START + timedelta(hours=1), None),
        ("filled", TASK, HELD, DEADLINE, None),
        ("visit", replace(TASK, kind="visit"), FREE, DEADLINE, None),
        ("cancelled task", replace(TASK, status=TaskStatus.CANCELLED), FREE, DEADLINE, None),
        (
            "cancelled occurrence",
            TASK,
            replace(FREE, occurrence=replace(FREE.occurrence, cancelled=True)),
            DEADLINE,
            None,
        ),
        (
            "no deadline: due at the start",
            replace(TASK, claim_deadline_hours=None),
            FREE,
            START - timedelta(hours=30),
            Risk.AT_RISK,
        ),
    ],
)
def test_risk_table(
    case: str, task: Task, record: OccurrenceRecord, now: datetime, risk: Risk | None
) -> None:
    assert risk_of(task, record, now=now, within=WITHIN) is risk, case


def test_due_at_is_the_deadline_else_the_start() -> None:
    assert due_at(TASK, FREE) == DEADLINE
    assert due_at(replace(TASK, claim_deadline_hours=None), FREE) == START


def test_staff_are_bound_everyone_else_asked() -> None:
    assert assignment_for(Member("m-sara", "Sara", "staff", "full")) is Assignment.BIND
    assert assignment_for(Member("m-anna", "Anna", "relative", "full")) is Assignment.ASK
    assert assignment_for(Member("m-bo", "Bo", "network", "limited")) is Assignment.ASK
