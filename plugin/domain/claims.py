"""Claim resolution: who holds the slots of one occurrence. Pure; a store applies the effects.

Each `decide_*` function looks at one occurrence as stored (read under a row lock by the
caller) and returns a `ClaimDecision`: an outcome and the effects as plain data. The store then
applies exactly those effects in the same transaction; `apply_decision` does the same on a
record, for tests and the in-memory fake.

Rules (DESIGN.md "Domain words"):

- first come, first served; never more claims than `people_needed`;
- a repeated claim by the holder changes nothing (`already_held`);
- a cancelled occurrence cannot be claimed (`cancelled`), a full one neither (`full`);
- claiming after having passed is allowed and undoes the pass;
- releasing what one does not hold changes nothing (`not_held`);
- a pass by a holder releases the claim and records the pass; passing twice changes nothing;
  a pass never touches anybody else's claim or pass.

Releasing and passing are allowed on a cancelled occurrence: claims are kept while cancelled (a
newer task version may reinstate it), and a member must still be able to say "not me".

Errors:

    StaleDecision (ValueError)   a decision no longer fits the record it is applied to
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from plugin.domain.model import Channel, Claim, OccurrenceRecord, Pass

__all__ = [
    "ClaimDecision",
    "ClaimOutcome",
    "StaleDecision",
    "apply_decision",
    "decide_claim",
    "decide_pass",
    "decide_release",
    "excess_claims",
]


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    ALREADY_HELD = "already_held"
    FULL = "full"
    CANCELLED = "cancelled"
    RELEASED = "released"
    NOT_HELD = "not_held"
    PASSED = "passed"
    ALREADY_PASSED = "already_passed"


class StaleDecision(ValueError):
    """The decision was made on a different state of the occurrence than it is applied to."""


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    """What to do to one occurrence; all effects None means "change nothing".

    A holder passing, for example, is `ClaimDecision(ClaimOutcome.PASSED,
    remove_claim_of="m-anna", add_pass=Pass(<occurrence id>, "m-anna", now))`.
    """

    outcome: ClaimOutcome
    add_claim: Claim | None = None
    remove_claim_of: str | None = None  # member id
    add_pass: Pass | None = None
    remove_pass_of: str | None = None  # member id

    @property
    def changed(self) -> bool:
        return any(
            effect is not None
            for effect in (self.add_claim, self.remove_claim_of, self.add_pass, self.remove_pass_of)
        )


def decide_claim(
    record: OccurrenceRecord, member_id: str, *, now: datetime, channel: Channel
) -> ClaimDecision:
    """A member asks for a slot.

    On a record with one slot and no claims, `decide_claim(record, "m-anna", now=now,
    channel="link")` is CLAIMED with `add_claim=Claim(<occurrence id>, "m-anna", "link", now)`;
    the same call for "m-bo" afterwards is FULL with no effects.
    """
    if record.occurrence.cancelled:
        return ClaimDecision(ClaimOutcome.CANCELLED)
    if _holds(record, member_id):
        return ClaimDecision(ClaimOutcome.ALREADY_HELD)
    if record.free_slots == 0:
        return ClaimDecision(ClaimOutcome.FULL)
    return ClaimDecision(
        ClaimOutcome.CLAIMED,
        add_claim=Claim(record.occurrence.id, member_id, channel, now),
        remove_pass_of=member_id if _passed(record, member_id) else None,
    )


def decide_release(record: OccurrenceRecord, member_id: str, *, now: datetime) -> ClaimDecision:
    """A holder gives their slot back; it is offered again. A release is not a pass."""
    del now  # part of the signature so every decision is made at a stated time
    if not _holds(record, member_id):
        return ClaimDecision(ClaimOutcome.NOT_HELD)
    return ClaimDecision(ClaimOutcome.RELEASED, remove_claim_of=member_id)


def decide_pass(record: OccurrenceRecord, member_id: str, *, now: datetime) -> ClaimDecision:
    """A member says "not me": their own claim (if any) goes, the pass is recorded once."""
    holds, passed = _holds(record, member_id), _passed(record, member_id)
    if not holds and passed:
        return ClaimDecision(ClaimOutcome.ALREADY_PASSED)
    return ClaimDecision(
        ClaimOutcome.PASSED,
        remove_claim_of=member_id if holds else None,
        add_pass=None if passed else Pass(record.occurrence.id, member_id, now),
    )


def apply_decision(record: OccurrenceRecord, decision: ClaimDecision) -> OccurrenceRecord:
    """The record after the decision's effects; raises StaleDecision if they no longer fit."""
    claims, passes = record.claims, record.passes
    oid = record.occurrence.id
    if decision.remove_claim_of is not None:
        if not _holds(record, decision.remove_claim_of):
            raise StaleDecision(f"{decision.remove_claim_of} holds no claim on {oid}")
        claims = tuple(c for c in claims if c.member_id != decision.remove_claim_of)
    if decision.remove_pass_of is not None:
        passes = tuple(p for p in passes if p.member_id != decision.remove_pass_of)
    if decision.add_claim is not None:
        claim = decision.add_claim
        if claim.occurrence_id != oid:
            raise StaleDecision(f"claim for {claim.occurrence_id} applied to {oid}")
        if record.occurrence.cancelled:
            raise StaleDecision(f"{oid} is cancelled")
        if any(c.member_id == claim.member_id for c in claims):
            raise StaleDecision(f"{claim.member_id} already holds {oid}")
        if len(claims) >= record.people_needed:
            raise StaleDecision(f"{oid} is full")
        claims = (*claims, claim)
    if decision.add_pass is not None:
        passed = decision.add_pass
        if passed.occurrence_id != oid:
            raise StaleDecision(f"pass for {passed.occurrence_id} applied to {oid}")
        if not any(p.member_id == passed.member_id for p in passes):
            passes = (*passes, passed)
    return OccurrenceRecord(record.occurrence, record.people_needed, claims, passes, record.offers)


def excess_claims(record: OccurrenceRecord) -> tuple[Claim, ...]:
    """Claims beyond `people_needed` (after the host lowered it): the latest ones go first.

    First come, first served also when slots disappear: with two slots held by Anna (09:00)
    and Bo (09:05) and people_needed lowered to 1, Bo's claim is the excess.
    """
    ordered = sorted(record.claims, key=lambda c: c.at)  # stable: ties keep stored order
    return tuple(ordered[max(0, record.people_needed) :])


def _holds(record: OccurrenceRecord, member_id: str) -> bool:
    return any(c.member_id == member_id for c in record.claims)


def _passed(record: OccurrenceRecord, member_id: str) -> bool:
    return any(p.member_id == member_id for p in record.passes)
