"""Which occurrences escalate at their claim deadline, and when."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from plugin.domain.escalation import (
    NOT_DUE,
    NOTHING_TO_DO,
    DeadlineCheck,
    check_deadline,
    claim_deadline,
)
from plugin.domain.model import Claim, Occurrence, OccurrenceRecord, Task, TaskStatus

START = datetime(2027, 3, 23, 9, tzinfo=UTC)  # 10:00 in Copenhagen
DEADLINE = START - timedelta(hours=24)
OID = "t-1_20270323T1000"

TASK = Task(
    tenant_id="north", id="t-1", citizen_id="c-1", version=1, kind="task",
    category="shopping", start=datetime(2027, 3, 23, 10), end=datetime(2027, 3, 23, 11),
    timezone="Europe/Copenhagen", people_needed=2, claim_deadline_hours=24,
)  # fmt: skip


def record(holders: int = 0, *, cancelled: bool = False, people: int = 2) -> OccurrenceRecord:
    occurrence = Occurrence(OID, "t-1", START, START + timedelta(hours=1), cancelled=cancelled)
    claims = tuple(Claim(OID, f"m-{n}", "caldav", DEADLINE) for n in range(holders))
    return OccurrenceRecord(occurrence, people, claims=claims)


def test_the_deadline_is_hours_before_the_start() -> None:
    assert claim_deadline("task", 24, START) == DEADLINE
    assert claim_deadline("relief", 0, START) == START
    assert claim_deadline("task", None, START) is None
    assert claim_deadline("visit", 24, START) is None  # visits are assigned, never claimed


@pytest.mark.parametrize(
    ("now", "holders", "expected"),
    [
        (DEADLINE - timedelta(seconds=1), 0, NOT_DUE),
        (DEADLINE, 0, DeadlineCheck(due=True, free_slots=2)),
        (DEADLINE + timedelta(hours=3), 1, DeadlineCheck(due=True, free_slots=1)),
        (DEADLINE + timedelta(hours=3), 2, DeadlineCheck(due=True, free_slots=0)),
    ],
)
def test_free_slots_at_the_deadline_escalate(
    now: datetime, holders: int, expected: DeadlineCheck
) -> None:
    check = check_deadline(TASK, record(holders), now)
    assert check == expected
    assert check.unfilled == (expected.due and expected.free_slots > 0)


@pytest.mark.parametrize(
    ("task", "rec"),
    [
        (replace(TASK, status=TaskStatus.CANCELLED), record()),
        (TASK, record(cancelled=True)),
        (replace(TASK, kind="visit"), record()),
        (replace(TASK, claim_deadline_hours=None), record()),
        (None, record()),
    ],
    ids=["cancelled task", "cancelled occurrence", "visit", "no deadline", "task gone"],
)
def test_never_escalates(task: Task | None, rec: OccurrenceRecord) -> None:
    check = check_deadline(task, rec, DEADLINE + timedelta(hours=1))
    assert check == NOTHING_TO_DO and not check.unfilled
