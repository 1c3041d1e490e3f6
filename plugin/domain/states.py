"""The state of one occurrence, as a transition table (like h11's `_state.py`).

States follow from the stored record (`state_of`): CANCELLED if the occurrence is cancelled,
else OPEN (no claims), PARTIAL (claims and free slots) or FILLED (no free slots).

Events:

- CLAIM        a member took a slot
- RELEASE      a holder gave a slot back (also by passing)
- CANCEL       the host cancelled the task, or the occurrence left the task's series
- REINSTATE    a newer task version brought a cancelled occurrence back (claims were kept)
- RESIZE_UP    the host raised people_needed
- RESIZE_DOWN  the host lowered people_needed; the caller releases the excess claims, latest
               first (`claims.excess_claims`), so no occurrence ever holds more than it needs

Where the next state depends on the counts after the event, the table holds a `ByFill` guard
listing the states the counts may lead to; `transition` then needs the counts and refuses any
other result. A pair missing from the table is refused with InvalidTransition: claiming a full
or cancelled occurrence, releasing an open one, reinstating one that is not cancelled.

Errors:

    InvalidTransition (ValueError)   the event is not allowed in this state, or the counts
                                     do not fit what the table allows
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from plugin.domain.model import OccurrenceRecord

__all__ = [
    "TRANSITIONS",
    "ByFill",
    "InvalidTransition",
    "OccurrenceEvent",
    "OccurrenceState",
    "fill_state",
    "state_of",
    "transition",
]


class OccurrenceState(StrEnum):
    OPEN = "open"
    PARTIAL = "partial"
    FILLED = "filled"
    CANCELLED = "cancelled"


class OccurrenceEvent(StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    CANCEL = "cancel"
    REINSTATE = "reinstate"
    RESIZE_UP = "resize_up"
    RESIZE_DOWN = "resize_down"


class InvalidTransition(ValueError):
    """The event is not allowed in this state, or its counts do not fit the table."""


@dataclass(frozen=True, slots=True)
class ByFill:
    """Guard: the next state is `fill_state(claims, people_needed)` after the event,
    and must be one of `allowed`."""

    allowed: frozenset[OccurrenceState]


def _by_fill(*states: OccurrenceState) -> ByFill:
    return ByFill(frozenset(states))


_S, _E = OccurrenceState, OccurrenceEvent

TRANSITIONS: Mapping[tuple[OccurrenceState, OccurrenceEvent], OccurrenceState | ByFill] = (
    MappingProxyType(
        {
            (_S.OPEN, _E.CLAIM): _by_fill(_S.PARTIAL, _S.FILLED),
            (_S.OPEN, _E.CANCEL): _S.CANCELLED,
            (_S.OPEN, _E.RESIZE_UP): _S.OPEN,
            (_S.OPEN, _E.RESIZE_DOWN): _S.OPEN,
            (_S.PARTIAL, _E.CLAIM): _by_fill(_S.PARTIAL, _S.FILLED),
            (_S.PARTIAL, _E.RELEASE): _by_fill(_S.OPEN, _S.PARTIAL),
            (_S.PARTIAL, _E.CANCEL): _S.CANCELLED,
            (_S.PARTIAL, _E.RESIZE_UP): _S.PARTIAL,
            (_S.PARTIAL, _E.RESIZE_DOWN): _by_fill(_S.PARTIAL, _S.FILLED),
            (_S.FILLED, _E.RELEASE): _by_fill(_S.OPEN, _S.PARTIAL),
            (_S.FILLED, _E.CANCEL): _S.CANCELLED,
            (_S.FILLED, _E.RESIZE_UP): _S.PARTIAL,
            (_S.FILLED, _E.RESIZE_DOWN): _S.FILLED,
            # Claims survive a cancellation, so a holder may still give theirs back, and the
            # host may resize or cancel again (a repeated cancel is a no-op, not an error).
            (_S.CANCELLED, _E.RELEASE): _S.CANCELLED,
            (_S.CANCELLED, _E.CANCEL): _S.CANCELLED,
            (_S.CANCELLED, _E.RESIZE_UP): _S.CANCELLED,
            (_S.CANCELLED, _E.RESIZE_DOWN): _S.CANCELLED,
            (_S.CANCELLED, _E.REINSTATE): _by_fill(_S.OPEN, _S.PARTIAL, _S.FILLED),
        }
    )
)


def fill_state(claims: int, people_needed: int) -> OccurrenceState:
    """OPEN, PARTIAL or FILLED for these counts; `fill_state(1, 2)` is PARTIAL."""
    if claims < 0:
        raise ValueError(f"claims must not be negative, got {claims}")
    if claims == 0:
        return OccurrenceState.OPEN
    return OccurrenceState.FILLED if claims >= people_needed else OccurrenceState.PARTIAL


def state_of(record: OccurrenceRecord) -> OccurrenceState:
    if record.occurrence.cancelled:
        return OccurrenceState.CANCELLED
    return fill_state(len(record.claims), record.people_needed)


def transition(
    state: OccurrenceState,
    event: OccurrenceEvent,
    *,
    claims: int | None = None,
    people_needed: int | None = None,
) -> OccurrenceState:
    """The state after `event`; `claims`/`people_needed` are the counts after it.

    >>> transition(OccurrenceState.OPEN, OccurrenceEvent.CANCEL)
    <OccurrenceState.CANCELLED: 'cancelled'>
    >>> transition(OccurrenceState.PARTIAL, OccurrenceEvent.CLAIM, claims=2, people_needed=2)
    <OccurrenceState.FILLED: 'filled'>
    """
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise InvalidTransition(f"{event.value} is not allowed when {state.value}")
    if isinstance(target, OccurrenceState):
        return target
    if claims is None or people_needed is None:
        raise InvalidTransition(
            f"{event.value} from {state.value} needs the counts after the event"
        )
    result = fill_state(claims, people_needed)
    if result not in target.allowed:
        raise InvalidTransition(
            f"{event.value} from {state.value} cannot lead to {result.value} "
            f"({claims} claims, {people_needed} needed)"
        )
    return result
