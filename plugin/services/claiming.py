"""Claim, release and pass as one member asks, through whatever channel: first come, first
served under the occurrence's row lock.

`decide(tx, ...)` runs inside the caller's transaction: it locks the occurrence
(`Tx.lock_occurrence`, so concurrent claimers of the last slot are serialised), lets the pure
rules decide (`plugin.domain.claims`), applies exactly the decision's effects, and writes the
audit entry and — when a claim came or went — the host event (`task.claimed`/`task.released`)
in the same transaction. A claim beyond the member's capacity is accepted like any other, and
the host hears of it (`member.overloaded`, once per period: `capacity.note_claim`).

    decision = await decide(tx, "north", "t-1_20270316T1000", "m-bo", Ask.CLAIM,
                            channel="caldav", now=now)
    decision.outcome  # ClaimOutcome.FULL when Anna got there first; nothing was written
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from plugin.domain.capacity import MemberSettings
from plugin.domain.claims import (
    ClaimDecision,
    apply_decision,
    decide_claim,
    decide_pass,
    decide_release,
)
from plugin.domain.model import Channel, Circle, Claim, OccurrenceRecord, Pass, Task
from plugin.services.capacity import note_claim
from plugin.services.ports import AuditEntry, Tx


class Ask(StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    PASS = "pass"


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision taken and applied, and the occurrence as the store holds it after it."""

    decision: ClaimDecision
    record: OccurrenceRecord


async def decide(
    tx: Tx,
    tenant_id: str,
    occurrence_id: str,
    member_id: str,
    ask: Ask,
    *,
    channel: Channel,
    now: datetime,
    task: Task | None = None,
) -> ClaimDecision | None:
    """The decision taken and applied, or None when the occurrence is unknown. `task`: the
    occurrence's, when the caller read it (else read when needed)."""
    decided = await decide_recorded(
        tx, tenant_id, occurrence_id, member_id, ask, channel=channel, now=now, task=task
    )
    return None if decided is None else decided.decision


async def decide_recorded(
    tx: Tx,
    tenant_id: str,
    occurrence_id: str,
    member_id: str,
    ask: Ask,
    *,
    channel: Channel,
    now: datetime,
    task: Task | None = None,
    circle: Circle | None = None,
    settings: Mapping[str, MemberSettings] | None = None,
) -> Decided | None:
    """`decide`, answering the occurrence after the decision too: what `Tx.get_occurrence`
    would read back (the record read under the lock, with the decision's effects), without
    reading it. `circle` and its members' `settings`: as the caller read them, for the
    capacity check after a claim (`capacity.note_claim`)."""
    record = await tx.lock_occurrence(tenant_id, occurrence_id)
    if record is None:
        return None
    match ask:
        case Ask.CLAIM:
            decision = decide_claim(record, member_id, now=now, channel=channel)
        case Ask.RELEASE:
            decision = decide_release(record, member_id, now=now)
        case Ask.PASS:
            decision = decide_pass(record, member_id, now=now)
    if decision.remove_claim_of is not None:
        await tx.remove_claim(tenant_id, occurrence_id, decision.remove_claim_of)
    if decision.remove_pass_of is not None:
        await tx.remove_pass(tenant_id, occurrence_id, decision.remove_pass_of)
    if decision.add_claim is not None:
        await tx.add_claim(tenant_id, decision.add_claim)
    if decision.add_pass is not None:
        await tx.add_pass(tenant_id, decision.add_pass)
    await tx.audit(
        AuditEntry(
            tenant_id=tenant_id,
            at=now,
            actor=member_id,
            action=f"occurrence.{ask.value}",
            channel=channel,
            subject=f"occurrence:{occurrence_id}",
            detail={"outcome": decision.outcome.value},
        )
    )
    event = _host_event(decision)
    if event is not None:
        await tx.add_outbox(
            tenant_id,
            event,
            _event_data(record, member_id, channel),
            now=now,
            # The host hears of one task's changes in the order they happened.
            ordering_key=record.occurrence.task_id,
        )
    if decision.add_claim is not None:
        # Accepted whatever the member's capacity; over it, the host hears once per period.
        if task is not None and task.id != record.occurrence.task_id:
            task = None
        await note_claim(
            tx, tenant_id, record, member_id, now=now, task=task, circle=circle, settings=settings
        )
    return Decided(decision, _as_stored(apply_decision(record, decision)))


_Item = TypeVar("_Item", Claim, Pass)


def _as_stored(record: OccurrenceRecord) -> OccurrenceRecord:
    """Claims and passes in the store's order, (at, member), their times in UTC."""
    return replace(record, claims=_in_order(record.claims), passes=_in_order(record.passes))


def _in_order(items: tuple[_Item, ...]) -> tuple[_Item, ...]:
    moved = (replace(item, at=item.at.astimezone(UTC)) for item in items)
    return tuple(sorted(moved, key=lambda item: (item.at, item.member_id)))


def _host_event(decision: ClaimDecision) -> str | None:
    """A claim that came is `task.claimed`; one that went (a release, or a holder's pass) is
    `task.released`."""
    if decision.add_claim is not None:
        return "task.claimed"
    if decision.remove_claim_of is not None:
        return "task.released"
    return None


def _event_data(record: OccurrenceRecord, member_id: str, channel: Channel) -> dict[str, str]:
    occurrence = record.occurrence
    return {
        "task_id": occurrence.task_id,
        "occurrence_id": occurrence.id,
        "occurrence_start": occurrence.start.isoformat(),
        "member_id": member_id,
        "channel": channel,
    }
