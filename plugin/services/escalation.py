"""Escalation: `task.unfilled` to the host for every occurrence still short of people at its
claim deadline — once.

The worker sweeps every `escalation.interval_seconds`. A sweep asks the store for occurrences
whose deadline passed within `escalation.lookback_hours` and that no sweep has checked yet
(`Store.due_claim_deadlines`: one index range, however large the history), and checks each
in its own transaction:

    lock the occurrence            (claims of it wait; so does another worker's sweep)
    decide (plugin.domain.escalation.check_deadline)
    mark it checked                (Tx.check_claim_deadline: True for the first caller only)
    queue task.unfilled            (same transaction: task_id, occurrence_id, free_slots)

The durable mark makes it once across restarts and across several workers: a second sweep,
here or elsewhere, finds the occurrence checked and sends nothing. An occurrence filled at its
deadline is marked too, and a later release does not escalate it (the host hears of the
release as `task.released`). Visits, cancelled tasks and occurrences never escalate. Events
are ordered with the task's other events (ordering key: the task id).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from plugin.domain.escalation import check_deadline
from plugin.services.ports import AuditEntry, DueDeadline, Store, Tx

log = logging.getLogger(__name__)

EVENT_UNFILLED = "task.unfilled"
BATCH = 100


async def escalate_unfilled(
    store: Store, *, now: datetime, lookback: timedelta, batch: int = BATCH
) -> int:
    """Check every due claim deadline; returns how many `task.unfilled` were queued."""
    sent = 0
    while True:
        due = await store.due_claim_deadlines(now=now, since=now - lookback, limit=batch)
        checked = 0
        for deadline in due:
            async with store.transaction() as tx:
                result = await escalate_one(tx, deadline, now=now)
            if result is not None:
                checked += 1
                sent += result
        # A short page is the last one; a page where nothing could be checked (its deadlines
        # moved since the index saw them) would come back the same, so stop there too.
        if len(due) < batch or checked == 0:
            return sent


async def escalate_one(tx: Tx, deadline: DueDeadline, *, now: datetime) -> bool | None:
    """True: `task.unfilled` queued; False: checked, nothing to send (filled, cancelled, or
    checked by someone else meanwhile); None: its deadline has not passed after all."""
    tenant_id, occurrence_id = deadline.tenant_id, deadline.occurrence_id
    record = await tx.lock_occurrence(tenant_id, occurrence_id)
    if record is None:
        return None
    task = await tx.get_task(tenant_id, record.occurrence.task_id)
    check = check_deadline(task, record, now)
    if not check.due:
        return None
    if not await tx.check_claim_deadline(tenant_id, occurrence_id, now=now):
        return False
    if task is None or not check.unfilled:
        return False
    await tx.add_outbox(
        tenant_id,
        EVENT_UNFILLED,
        {"task_id": task.id, "occurrence_id": occurrence_id, "free_slots": check.free_slots},
        now=now,
        ordering_key=task.id,
    )
    await tx.audit(
        AuditEntry(
            tenant_id=tenant_id,
            at=now,
            actor="carecal",
            action="occurrence.unfilled",
            channel="system",
            subject=f"occurrence:{occurrence_id}",
            detail={"free_slots": check.free_slots},
        )
    )
    log.info(
        "unfilled at its claim deadline; host told",
        extra={"tenant": tenant_id, "occurrence_id": occurrence_id},
    )
    return True
