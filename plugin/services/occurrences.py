"""Which occurrences a task should have stored now.

Recurring tasks are expanded up to the horizon (DESIGN.md: 8 weeks by default) and extended as
time passes by the `circle.refresh` job. Occurrences before the expansion window are history: they
keep their ids and claims even when the rule later changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from plugin.domain.model import Occurrence, OccurrenceRecord, Task, TaskStatus
from plugin.domain.recurrence import expand

# Expand from a little in the past so that an occurrence happening right now stays current.
LOOKBACK = timedelta(days=1)


def planned_occurrences(
    task: Task,
    existing: Sequence[OccurrenceRecord],
    *,
    now: datetime,
    horizon: timedelta,
) -> list[Occurrence]:
    """The full set of occurrences to store for `task` (anything stored and absent from the
    result is marked cancelled by the store).

    >>> # a weekly task re-sent with a new time: past occurrences stay, future ones move
    """
    if task.status is TaskStatus.CANCELLED:
        return []
    if task.recurrence is None:
        # A single occurrence, or an explicit list of dates (RDATE), is kept whatever its
        # dates: the host asked for exactly those, and there are finitely many.
        far = timedelta(days=366 * 200)
        return expand(task, window_start=now - far, window_end=now + far)
    window_start = now - LOOKBACK
    history = [
        record.occurrence
        for record in existing
        if record.occurrence.end.astimezone(UTC) <= window_start and not record.occurrence.cancelled
    ]
    # Never short of what is stored already: a roll whose `now` is behind another's (two
    # workers rolling at once, one of them slower or its clock behind) would cancel the
    # occurrences the other planned past its own horizon, until the next roll. What the
    # task's rule no longer has is cancelled all the same.
    window_end = now + horizon
    planned = [r.occurrence.start for r in existing if not r.occurrence.cancelled]
    if planned:
        window_end = max(window_end, max(planned) + timedelta(seconds=1))
    return history + expand(task, window_start=window_start, window_end=window_end)
