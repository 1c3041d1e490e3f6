"""What a member did to their copy of an occurrence, read from the copy on the server.

The collection is the member's own, so every change in it is attributed to its owner; the
caller, who knows whose view it synced, applies the gesture as that member (channel `caldav`).
Gestures (DESIGN.md "Member gestures") compare the member's PARTSTAT in the copy with the one
carecal last wrote (the *baseline*):

| baseline     | member's copy             | gesture  |
|--------------|---------------------------|----------|
| anything     | same as baseline          | NONE     |
| not ACCEPTED | ACCEPTED                  | CLAIM    |
| anything     | DECLINED                  | PASS     |
| ACCEPTED     | anything else (not gone)  | RELEASE  |
| anything     | the event was deleted     | PASS     |
| other        | other (e.g. TENTATIVE)    | NONE     |

A copy whose ATTENDEE for the member is gone reads as "no answer" (NONE): it is not evidence
of a release, and the next write puts the attendee back.

Member data is untrusted: `read_member_copy` never raises; anything it cannot use comes back as
`BadMemberData` with a `BadReason`, and the planner then overwrites the copy with ours.

`merge_member_copy(ours, theirs)` is the three-way merge of a write: every carecal-owned field
comes from `ours` (the freshly rendered copy), and what the member owns, their VALARMs, is
carried over from `theirs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from icalendar import Calendar, Component

from plugin.sync.fingerprint import fingerprint, prop_values

__all__ = [
    "BadMemberData",
    "BadReason",
    "Gesture",
    "MemberCopy",
    "gesture_between",
    "merge_member_copy",
    "object_uid",
    "own_partstat",
    "read_gesture",
    "read_member_copy",
]

ACCEPTED, DECLINED = "ACCEPTED", "DECLINED"

_C = TypeVar("_C", bound=Component)


class Gesture(StrEnum):
    NONE = "none"
    CLAIM = "claim"
    PASS = "pass"
    RELEASE = "release"


class BadReason(StrEnum):
    TOO_LARGE = "too_large"
    UNPARSABLE = "unparsable"
    NOT_A_CALENDAR = "not_a_calendar"
    NO_EVENT = "no_event"
    NOT_AN_EVENT = "not_an_event"  # e.g. a VTODO where our VEVENT was
    SEVERAL_EVENTS = "several_events"
    MISSING_UID = "missing_uid"
    UID_MISMATCH = "uid_mismatch"


@dataclass(frozen=True, slots=True)
class BadMemberData:
    """A member's copy carecal cannot read; `detail` never quotes the member's data."""

    reason: BadReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MemberCopy:
    """A readable member copy: one VEVENT with a UID.

    `partstat` is the member's own (upper-case), None when their ATTENDEE is gone.
    """

    uid: str
    calendar: Calendar
    partstat: str | None
    fingerprint: str
    has_alarms: bool


def read_member_copy(
    body: bytes, *, member_address: str, max_bytes: int, expected_uid: str | None = None
) -> MemberCopy | BadMemberData:
    """Parse a fetched copy; refuse bodies over `max_bytes` before parsing them."""
    if len(body) > max_bytes:
        return BadMemberData(BadReason.TOO_LARGE, f"{len(body)} bytes > {max_bytes}")
    try:
        return _read(body, member_address=member_address, expected_uid=expected_uid)
    except Exception as exc:  # untrusted input: no parser error may escape
        return BadMemberData(BadReason.UNPARSABLE, type(exc).__name__)


def gesture_between(baseline: str, partstat: str | None) -> Gesture:
    """The gesture from the PARTSTAT carecal wrote to the one in the member's copy.

    >>> gesture_between("NEEDS-ACTION", "ACCEPTED")
    <Gesture.CLAIM: 'claim'>
    >>> gesture_between("ACCEPTED", "TENTATIVE")
    <Gesture.RELEASE: 'release'>
    """
    before = baseline.upper()
    if partstat is None or partstat == before:
        return Gesture.NONE
    if partstat == ACCEPTED:
        return Gesture.CLAIM
    if partstat == DECLINED:
        return Gesture.PASS
    if before == ACCEPTED:
        return Gesture.RELEASE
    return Gesture.NONE


def read_gesture(
    body: bytes | None,
    *,
    baseline: str,
    member_address: str,
    max_bytes: int,
    expected_uid: str | None = None,
) -> Gesture | BadMemberData:
    """The member's gesture on one copy; `body=None` means they deleted it (a pass)."""
    if body is None:
        return Gesture.PASS
    copy = read_member_copy(
        body, member_address=member_address, max_bytes=max_bytes, expected_uid=expected_uid
    )
    if isinstance(copy, BadMemberData):
        return copy
    return gesture_between(baseline, copy.partstat)


def own_partstat(event: Component, member_address: str) -> str | None:
    """The PARTSTAT of the member's ATTENDEE (matched case-insensitively by address).

    If no address matches but the copy has exactly one attendee, it is the member's: our
    copies carry only them, and their address may have changed since we wrote it.
    """
    attendees = prop_values(event, "ATTENDEE")
    wanted = member_address.strip().casefold()
    matching = [a for a in attendees if str(a).strip().casefold() == wanted]
    if not matching and len(attendees) == 1:
        matching = attendees
    if not matching:
        return None
    params = getattr(matching[0], "params", {})
    return str(params.get("PARTSTAT", "NEEDS-ACTION")).upper()


def merge_member_copy(
    ours: Calendar | bytes, theirs: Calendar, *, their_uid: str | None = None
) -> Calendar:
    """`ours` with the member's VALARMs from `theirs` (the VEVENT with the same UID, or with
    `their_uid`: the copy of an occurrence that moved, whose successor has a new UID).
    `ours` may be given as its body (parsed here: one pass fewer than parsing and copying).

    Neither input is changed; the result shares no components with them.
    """
    merged = Calendar.from_ical(ours) if isinstance(ours, bytes) else _copy(ours)
    if not isinstance(merged, Calendar):
        raise TypeError("ours did not parse as a VCALENDAR")
    for event in merged.walk("VEVENT"):
        uid = str(event.get("UID", "")) if their_uid is None else their_uid
        present = {bytes(c.to_ical()) for c in event.subcomponents if c.name == "VALARM"}
        for alarm in _alarms(theirs, uid):
            raw = bytes(alarm.to_ical())
            if raw not in present:
                present.add(raw)
                event.add_component(_copy(alarm))
    return merged


def object_uid(body: bytes, *, max_bytes: int) -> str | None:
    """The UID of an object's one VEVENT; None when it is larger than `max_bytes`,
    unreadable, or not one event."""
    if len(body) > max_bytes:
        return None
    try:
        calendar = Calendar.from_ical(body)
    except Exception:  # untrusted input: no parser error may escape
        return None
    events = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    uid = str(events[0].get("UID", "")).strip() if len(events) == 1 else ""
    return uid or None


def _read(
    body: bytes, *, member_address: str, expected_uid: str | None
) -> MemberCopy | BadMemberData:
    calendar = Calendar.from_ical(body)
    if not isinstance(calendar, Calendar) or calendar.name != "VCALENDAR":
        return BadMemberData(BadReason.NOT_A_CALENDAR)
    events = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    if not events:
        others = {str(c.name) for c in calendar.subcomponents} - {"VTIMEZONE"}
        if others:
            return BadMemberData(BadReason.NOT_AN_EVENT, ",".join(sorted(others))[:80])
        return BadMemberData(BadReason.NO_EVENT)
    if len(events) > 1:
        return BadMemberData(BadReason.SEVERAL_EVENTS, f"{len(events)} VEVENTs")
    event = events[0]
    uid = str(event.get("UID", "")).strip()
    if not uid:
        return BadMemberData(BadReason.MISSING_UID)
    if expected_uid is not None and uid != expected_uid:
        return BadMemberData(BadReason.UID_MISMATCH)
    return MemberCopy(
        uid=uid,
        calendar=calendar,
        partstat=own_partstat(event, member_address),
        fingerprint=fingerprint(calendar),
        has_alarms=any(c.name == "VALARM" for c in event.subcomponents),
    )


def _alarms(calendar: Calendar, uid: str) -> list[Component]:
    return [
        alarm
        for event in calendar.walk("VEVENT")
        if str(event.get("UID", "")) == uid
        for alarm in event.subcomponents
        if alarm.name == "VALARM"
    ]


def _copy(component: _C) -> _C:
    """A deep copy through the parser (icalendar's `copy()` shares subcomponents)."""
    copied = type(component).from_ical(component.to_ical())
    if not isinstance(copied, type(component)):
        raise TypeError(f"{component.name} did not parse back as itself")
    return copied
