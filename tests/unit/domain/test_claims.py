from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.domain.claims import (
    ClaimDecision,
    ClaimOutcome,
    StaleDecision,
    apply_decision,
    decide_claim,
    decide_pass,
    decide_release,
    excess_claims,
)
from plugin.domain.model import Claim, Occurrence, OccurrenceRecord, Pass

NOW = datetime(2027, 3, 20, 12, tzinfo=UTC)
OID = "t-1_20270323T1000"


def record(
    people_needed: int = 1,
    holders: tuple[str, ...] = (),
    passers: tuple[str, ...] = (),
    cancelled: bool = False,
) -> OccurrenceRecord:
    occurrence = Occurrence(
        OID,
        "t-1",
        datetime(2027, 3, 23, 9, tzinfo=UTC),
        datetime(2027, 3, 23, 10, tzinfo=UTC),
        cancelled=cancelled,
    )
    return OccurrenceRecord(
        occurrence,
        people_needed,
        claims=tuple(Claim(OID, m, "link", NOW) for m in holders),
        passes=tuple(Pass(OID, m, NOW) for m in passers),
    )


def holders(r: OccurrenceRecord) -> list[str]:
    return [c.member_id for c in r.claims]


def passers(r: OccurrenceRecord) -> list[str]:
    return [p.member_id for p in r.passes]


def claim(r: OccurrenceRecord, member: str) -> ClaimDecision:
    return decide_claim(r, member, now=NOW, channel="caldav")


def test_first_come_first_served() -> None:
    r = record()
    first = claim(r, "m-anna")
    assert first == ClaimDecision(
        ClaimOutcome.CLAIMED, add_claim=Claim(OID, "m-anna", "caldav", NOW)
    )
    r = apply_decision(r, first)
    second = claim(r, "m-bo")
    assert second.outcome is ClaimOutcome.FULL and not second.changed
    assert holders(r) == ["m-anna"]


def test_repeated_claim_by_the_holder_is_idempotent() -> None:
    r = record(people_needed=2, holders=("m-anna",))
    decision = claim(r, "m-anna")
    assert decision == ClaimDecision(ClaimOutcome.ALREADY_HELD)
    assert apply_decision(r, decision) == r


def test_cancelled_occurrence_cannot_be_claimed_even_by_its_holder() -> None:
    assert claim(record(), "m-anna") != claim(record(cancelled=True), "m-anna")
    assert claim(record(cancelled=True), "m-anna").outcome is ClaimOutcome.CANCELLED
    held = record(holders=("m-anna",), cancelled=True)
    assert claim(held, "m-anna") == ClaimDecision(ClaimOutcome.CANCELLED)


def test_claiming_after_passing_undoes_the_pass() -> None:
    r = record(passers=("m-anna", "m-bo"))
    decision = claim(r, "m-anna")
    assert decision.outcome is ClaimOutcome.CLAIMED
    assert decision.remove_pass_of == "m-anna"
    after = apply_decision(r, decision)
    assert holders(after) == ["m-anna"]
    assert passers(after) == ["m-bo"]


def test_release() -> None:
    r = record(people_needed=2, holders=("m-anna", "m-bo"))
    assert decide_release(r, "m-cai", now=NOW) == ClaimDecision(ClaimOutcome.NOT_HELD)
    decision = decide_release(r, "m-anna", now=NOW)
    assert decision == ClaimDecision(ClaimOutcome.RELEASED, remove_claim_of="m-anna")
    after = apply_decision(r, decision)
    assert holders(after) == ["m-bo"] and passers(after) == []


def test_holder_may_release_and_pass_a_cancelled_occurrence() -> None:
    r = record(holders=("m-anna",), cancelled=True)
    assert decide_release(r, "m-anna", now=NOW).outcome is ClaimOutcome.RELEASED
    assert decide_pass(r, "m-anna", now=NOW).outcome is ClaimOutcome.PASSED


def test_pass_by_a_holder_releases_and_records_the_pass() -> None:
    r = record(people_needed=2, holders=("m-anna", "m-bo"), passers=("m-cai",))
    decision = decide_pass(r, "m-anna", now=NOW)
    assert decision == ClaimDecision(
        ClaimOutcome.PASSED, remove_claim_of="m-anna", add_pass=Pass(OID, "m-anna", NOW)
    )
    after = apply_decision(r, decision)
    assert holders(after) == ["m-bo"]
    assert passers(after) == ["m-cai", "m-anna"]
    again = decide_pass(after, "m-anna", now=NOW + timedelta(minutes=1))
    assert again == ClaimDecision(ClaimOutcome.ALREADY_PASSED)


def test_pass_without_a_claim_records_only_the_pass() -> None:
    r = record(holders=("m-bo",))
    decision = decide_pass(r, "m-anna", now=NOW)
    assert decision == ClaimDecision(ClaimOutcome.PASSED, add_pass=Pass(OID, "m-anna", NOW))
    assert holders(apply_decision(r, decision)) == ["m-bo"]


def test_a_stale_decision_is_refused() -> None:
    r = record()
    for_anna, for_bo = claim(r, "m-anna"), claim(r, "m-bo")  # both read the same empty record
    after = apply_decision(r, for_anna)
    with pytest.raises(StaleDecision, match="full"):
        apply_decision(after, for_bo)
    with pytest.raises(StaleDecision, match="already holds"):
        apply_decision(replace(after, people_needed=2), for_anna)
    with pytest.raises(StaleDecision, match="holds no claim"):
        apply_decision(r, decide_release(after, "m-anna", now=NOW))
    with pytest.raises(StaleDecision, match="cancelled"):
        apply_decision(record(cancelled=True), for_anna)
    other = replace(r, occurrence=replace(r.occurrence, id="t-1_20270330T1000"))
    with pytest.raises(StaleDecision, match="applied to"):
        apply_decision(other, for_anna)
    with pytest.raises(StaleDecision, match="applied to"):
        apply_decision(other, decide_pass(r, "m-anna", now=NOW))


def test_excess_claims_are_the_latest() -> None:
    r = OccurrenceRecord(
        record().occurrence,
        people_needed=1,
        claims=(
            Claim(OID, "m-bo", "link", NOW + timedelta(minutes=5)),
            Claim(OID, "m-anna", "link", NOW),
        ),
    )
    assert [c.member_id for c in excess_claims(r)] == ["m-bo"]
    assert excess_claims(replace(r, people_needed=2)) == ()
    assert len(excess_claims(replace(r, people_needed=0))) == 2


# --- properties -------------------------------------------------------------------------------

members = st.sampled_from(["m-anna", "m-bo", "m-cai", "m-dina", "m-emil"])
operations = st.lists(st.tuples(st.sampled_from(["claim", "release", "pass"]), members))


def decide(r: OccurrenceRecord, op: str, member: str, now: datetime) -> ClaimDecision:
    if op == "claim":
        return decide_claim(r, member, now=now, channel="link")
    if op == "release":
        return decide_release(r, member, now=now)
    return decide_pass(r, member, now=now)


@given(st.integers(1, 4), st.booleans(), operations)
def test_random_sequences_keep_the_invariants(
    people_needed: int, cancelled: bool, ops: list[tuple[str, str]]
) -> None:
    r = record(people_needed=people_needed, cancelled=cancelled)
    # A reference model: holders in arrival order and the set of passers.
    model_holders: list[str] = []
    model_passers: set[str] = set()
    for step, (op, member) in enumerate(ops):
        now = NOW + timedelta(seconds=step)
        decision = decide(r, op, member, now)
        before = r
        r = apply_decision(r, decision)

        if op == "claim" and not cancelled and member not in model_holders:
            if len(model_holders) < people_needed:
                model_holders.append(member)
                model_passers.discard(member)
        elif op in ("release", "pass") and member in model_holders:
            model_holders.remove(member)
        if op == "pass":
            model_passers.add(member)

        assert holders(r) == model_holders
        assert set(passers(r)) == model_passers
        assert len(r.claims) <= people_needed
        assert len(set(holders(r))) == len(r.claims)
        assert len(set(passers(r))) == len(r.passes)
        assert not set(holders(r)) & set(passers(r))
        # Nobody else's claim or pass is touched.
        others = [c for c in before.claims if c.member_id != member]
        assert [c for c in r.claims if c.member_id != member] == others
        assert [p for p in r.passes if p.member_id != member] == [
            p for p in before.passes if p.member_id != member
        ]
        assert decision.changed == (r != before)
        # Doing the same thing again at once changes nothing.
        repeat = decide(r, op, member, now + timedelta(seconds=1))
        assert not repeat.changed
        assert apply_decision(r, repeat) == r
