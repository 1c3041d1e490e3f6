import doctest
from dataclasses import replace
from datetime import UTC, datetime
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.domain import states
from plugin.domain.claims import apply_decision, decide_claim, decide_pass, decide_release
from plugin.domain.model import Claim, Occurrence, OccurrenceRecord
from plugin.domain.states import (
    TRANSITIONS,
    ByFill,
    InvalidTransition,
    OccurrenceEvent,
    OccurrenceState,
    fill_state,
    state_of,
    transition,
)

S, E = OccurrenceState, OccurrenceEvent
NOW = datetime(2027, 3, 20, 12, tzinfo=UTC)
OID = "t-1_20270323T1000"

# The table as the design states it, written out independently of the module.
EXPECTED: dict[tuple[OccurrenceState, OccurrenceEvent], OccurrenceState | set[OccurrenceState]] = {
    (S.OPEN, E.CLAIM): {S.PARTIAL, S.FILLED},
    (S.OPEN, E.CANCEL): S.CANCELLED,
    (S.OPEN, E.RESIZE_UP): S.OPEN,
    (S.OPEN, E.RESIZE_DOWN): S.OPEN,
    (S.PARTIAL, E.CLAIM): {S.PARTIAL, S.FILLED},
    (S.PARTIAL, E.RELEASE): {S.OPEN, S.PARTIAL},
    (S.PARTIAL, E.CANCEL): S.CANCELLED,
    (S.PARTIAL, E.RESIZE_UP): S.PARTIAL,
    (S.PARTIAL, E.RESIZE_DOWN): {S.PARTIAL, S.FILLED},
    (S.FILLED, E.RELEASE): {S.OPEN, S.PARTIAL},
    (S.FILLED, E.CANCEL): S.CANCELLED,
    (S.FILLED, E.RESIZE_UP): S.PARTIAL,
    (S.FILLED, E.RESIZE_DOWN): S.FILLED,
    (S.CANCELLED, E.RELEASE): S.CANCELLED,
    (S.CANCELLED, E.CANCEL): S.CANCELLED,
    (S.CANCELLED, E.RESIZE_UP): S.CANCELLED,
    (S.CANCELLED, E.RESIZE_DOWN): S.CANCELLED,
    (S.CANCELLED, E.REINSTATE): {S.OPEN, S.PARTIAL, S.FILLED},
}
COUNTS = [(claims, needed) for claims in range(4) for needed in range(1, 4) if claims <= needed]


def test_doctests() -> None:
    assert doctest.testmod(states).failed == 0


def test_table_is_as_designed() -> None:
    as_listed = {
        key: set(target.allowed) if isinstance(target, ByFill) else target
        for key, target in TRANSITIONS.items()
    }
    assert as_listed == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(product(S, E)))
def test_every_pair_transitions_as_listed_or_raises(
    state: OccurrenceState, event: OccurrenceEvent
) -> None:
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition, match="not allowed"):
            transition(state, event)
        for claims, needed in COUNTS:
            with pytest.raises(InvalidTransition):
                transition(state, event, claims=claims, people_needed=needed)
    elif isinstance(expected, OccurrenceState):
        assert transition(state, event) is expected
        assert transition(state, event, claims=1, people_needed=1) is expected
    else:
        with pytest.raises(InvalidTransition, match="needs the counts"):
            transition(state, event)
        reached = set()
        for claims, needed in COUNTS:
            result = fill_state(claims, needed)
            if result in expected:
                assert transition(state, event, claims=claims, people_needed=needed) is result
                reached.add(result)
            else:
                with pytest.raises(InvalidTransition, match="cannot lead to"):
                    transition(state, event, claims=claims, people_needed=needed)
        assert reached == expected


def test_invalid_pairs_are_the_ones_that_make_no_sense() -> None:
    missing = set(product(S, E)) - set(TRANSITIONS)
    assert missing == {
        (S.OPEN, E.RELEASE),
        (S.OPEN, E.REINSTATE),
        (S.PARTIAL, E.REINSTATE),
        (S.FILLED, E.CLAIM),
        (S.FILLED, E.REINSTATE),
        (S.CANCELLED, E.CLAIM),
    }


def record(needed: int, holders: int, cancelled: bool = False) -> OccurrenceRecord:
    occurrence = Occurrence(OID, "t-1", NOW, NOW, cancelled=cancelled)
    claims = tuple(Claim(OID, f"m-{n}", "link", NOW) for n in range(holders))
    return OccurrenceRecord(occurrence, needed, claims)


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (record(1, 0), S.OPEN),
        (record(2, 1), S.PARTIAL),
        (record(2, 2), S.FILLED),
        (record(1, 2), S.FILLED),
        (record(2, 1, cancelled=True), S.CANCELLED),
    ],
)
def test_state_of(r: OccurrenceRecord, expected: OccurrenceState) -> None:
    assert state_of(r) is expected


def test_fill_state_refuses_negative_counts() -> None:
    with pytest.raises(ValueError):
        fill_state(-1, 1)


# --- the table agrees with claim resolution -----------------------------------------------

members = st.sampled_from(["m-0", "m-1", "m-2", "m-3", "m-4", "m-5"])


@given(
    st.integers(1, 4),
    st.booleans(),
    st.lists(
        st.tuples(st.sampled_from(["claim", "release", "pass", "cancel", "reinstate"]), members)
    ),
)
def test_claim_resolution_only_takes_transitions_in_the_table(
    needed: int, cancelled: bool, ops: list[tuple[str, str]]
) -> None:
    r = record(needed, 0, cancelled)
    for op, member in ops:
        before = state_of(r)
        if op in ("cancel", "reinstate"):
            if op == "reinstate" and not r.occurrence.cancelled:
                continue  # only a cancelled occurrence can be reinstated
            r = replace(r, occurrence=replace(r.occurrence, cancelled=op == "cancel"))
            event = E.CANCEL if op == "cancel" else E.REINSTATE
        else:
            if op == "claim":
                decision = decide_claim(r, member, now=NOW, channel="link")
            elif op == "release":
                decision = decide_release(r, member, now=NOW)
            else:
                decision = decide_pass(r, member, now=NOW)
            r = apply_decision(r, decision)
            if decision.add_claim is not None:
                event = E.CLAIM
            elif decision.remove_claim_of is not None:
                event = E.RELEASE
            else:
                continue  # no claim changed: no event
        after = transition(before, event, claims=len(r.claims), people_needed=r.people_needed)
        assert after is state_of(r)


@given(st.integers(1, 5), st.integers(0, 5), st.integers(1, 5), st.booleans())
def test_resizing_with_excess_released_follows_the_table(
    needed: int, holders: int, new_needed: int, cancelled: bool
) -> None:
    holders = min(holders, needed)
    if new_needed == needed:
        return
    before = record(needed, holders, cancelled)
    kept = min(holders, new_needed)  # the caller releases `claims.excess_claims`
    after = replace(before, people_needed=new_needed, claims=before.claims[:kept])
    event = E.RESIZE_UP if new_needed > needed else E.RESIZE_DOWN
    result = transition(state_of(before), event, claims=len(after.claims), people_needed=new_needed)
    assert result is state_of(after)
