"""Normalised hashes of the carecal-owned content of a calendar object.

An ETag says *that* a stored object changed, not *who* changed *what*: servers rewrite what we
PUT (Radicale adds DTSTAMP, Xandikos reorders and refolds, scheduling servers add parameters),
and calendar apps add their own properties and alarms. Like vdirsyncer's `IGNORE_PROPS`, the
`fingerprint` looks only at what carecal owns, in a canonical form, so an echo of our own write
and a server's normalisation hash the same as what we rendered, and only a real edit (time,
title, status, description, ...) changes it.

What counts (a whitelist, so properties that apps and servers add never cause churn):

- the VEVENT properties in `OWNED` — values decoded, text newlines normalised, date-times as
  UTC instants (a server writing `Z` times instead of a TZID changes nothing), DURATION folded
  into the end;
- ORGANIZER and ATTENDEE by address (case-folded) and their `CN`, `RSVP`, `SCHEDULE-AGENT`
  parameters only: PARTSTAT is the member's gesture (gestures.py reads it separately),
  SCHEDULE-STATUS and the like are written by servers;
- recurrence properties (RRULE, RDATE, EXDATE, RECURRENCE-ID): we never write them, so one
  appearing is an edit to revert.

What never counts: PRODID, DTSTAMP, LAST-MODIFIED, CREATED, SEQUENCE, foreign X- properties,
VTIMEZONE components (the TZID name and the instant are what matter), VALARMs (member-owned),
property order, line folding and parameter case.

`material_fingerprint` is narrower: the occurrence itself (UID, time, category, description),
not its claim state. A member who deleted their copy gets it back only when that changes
(DESIGN.md "Member gestures").

    >>> a = Calendar.from_ical(b"BEGIN:VCALENDAR\\r\\nBEGIN:VEVENT\\r\\nUID:o-1@x\\r\\n"
    ...     b"DTSTAMP:20270101T000000Z\\r\\nSUMMARY:[Ledig] Indk\\xc3\\xb8b\\r\\n"
    ...     b"END:VEVENT\\r\\nEND:VCALENDAR\\r\\n")
    >>> b = Calendar.from_ical(b"BEGIN:VCALENDAR\\r\\nBEGIN:VEVENT\\r\\n"
    ...     b"SUMMARY:[Ledig] Indk\\xc3\\xb8b\\r\\nUID:o-1@x\\r\\n"
    ...     b"DTSTAMP:20300101T000000Z\\r\\nEND:VEVENT\\r\\nEND:VCALENDAR\\r\\n")
    >>> fingerprint(a) == fingerprint(b)
    True
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from icalendar import Calendar, Component

__all__ = ["MATERIAL", "OWNED", "fingerprint", "material_fingerprint", "prop_values"]

VERSION = "v1"

# Properties of a VEVENT that carecal renders (or forbids), compared by value.
OWNED: frozenset[str] = frozenset(
    {
        "UID",
        "DTSTART",
        "DTEND",
        "SUMMARY",
        "DESCRIPTION",
        "URL",
        "STATUS",
        "TRANSP",
        "CLASS",
        "ORGANIZER",
        "ATTENDEE",
        "RRULE",
        "RDATE",
        "EXDATE",
        "RECURRENCE-ID",
        "X-CARECAL-TASK",
        "X-CARECAL-STATE",
        "X-CARECAL-CATEGORY",
    }
)

# What makes an occurrence "materially" different for a member who deleted it.
MATERIAL: frozenset[str] = frozenset(
    {"UID", "DTSTART", "DTEND", "DESCRIPTION", "X-CARECAL-TASK", "X-CARECAL-CATEGORY"}
)

_ADDRESS_PARAMS = ("CN", "RSVP", "SCHEDULE-AGENT")
_CASELESS_PARAMS = frozenset({"RSVP", "SCHEDULE-AGENT"})
_CASELESS_VALUES = frozenset({"STATUS", "TRANSP", "CLASS"})
_ADDRESSES = frozenset({"ORGANIZER", "ATTENDEE"})

# `json.dumps(x, ensure_ascii=False)` and the compact form, without building a JSONEncoder on
# every call (json.dumps does that for any non-default option): the same output.
_sort_key = json.JSONEncoder(ensure_ascii=False).encode
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def fingerprint(calendar: Calendar) -> str:
    """The hash of every carecal-owned property of the calendar's VEVENTs."""
    return _hash(calendar, OWNED)


def material_fingerprint(calendar: Calendar) -> str:
    """The hash of the occurrence itself: UID, time, category, description."""
    return _hash(calendar, MATERIAL)


def prop_values(component: Component, name: str) -> list[Any]:
    """All values of property `name` (icalendar gives a list only when it occurs twice)."""
    return _as_list(component.get(name))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _hash(calendar: Calendar, names: frozenset[str]) -> str:
    events = sorted(
        (_canonical_event(event, names) for event in calendar.walk("VEVENT")),
        key=_sort_key,
    )
    data = _compact([VERSION, events])
    return f"{VERSION}:{hashlib.sha256(data.encode('utf-8')).hexdigest()}"


def _canonical_event(event: Component, names: frozenset[str]) -> list[list[Any]]:
    entries: list[list[Any]] = []
    # One pass over the event's properties instead of a look-up per name: `event.get(name)`
    # looks up `name.upper()`, and every name in `names` is upper-case, so `key in names`
    # finds exactly the properties those look-ups would. The order they are found in does not
    # matter: entries are sorted by their whole JSON form below, and entries that tie have
    # the same JSON form, so the hashed data is the same in any order.
    for name, stored in event.items():
        if name == "DTEND" or name not in names:
            continue  # DTEND is folded into "END" below, whether written as DTEND or DURATION
        for value in _as_list(stored):
            entries.append([name, *_canonical_value(name, value)])
    if "DTEND" in names:
        end = _end(event)
        if end is not None:
            entries.append(["END", end, {}])
    entries.sort(key=_sort_key)
    return entries


def _canonical_value(name: str, value: Any) -> tuple[Any, dict[str, str]]:
    if name in _ADDRESSES:
        params = getattr(value, "params", {})
        kept = {
            key: str(params[key]).upper() if key in _CASELESS_PARAMS else str(params[key])
            for key in _ADDRESS_PARAMS
            if key in params
        }
        return str(value).strip().casefold(), kept
    decoded = _decode(value)
    if isinstance(decoded, str) and name in _CASELESS_VALUES:
        decoded = decoded.upper()
    return decoded, {}


def _decode(value: Any) -> Any:
    """A JSON-able canonical form of one parsed property value."""
    inner = getattr(value, "dt", None)
    if inner is not None:
        return _moment(inner)
    dts = getattr(value, "dts", None)  # RDATE / EXDATE lists
    if dts is not None:
        return [_decode(item) for item in dts]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "to_ical") and not isinstance(value, str):
        return _text(value.to_ical().decode("utf-8", "replace"))
    return _text(str(value))


def _moment(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return f"floating:{value.isoformat()}"
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return f"date:{value.isoformat()}"
    if isinstance(value, timedelta):
        return f"duration:{value.total_seconds()}"
    if isinstance(value, tuple):  # a PERIOD
        return [_moment(part) for part in value]
    return _text(str(value))


def _text(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _end(event: Component) -> Any:
    ends = prop_values(event, "DTEND")
    if ends:
        return _decode(ends[0])
    durations, starts = prop_values(event, "DURATION"), prop_values(event, "DTSTART")
    if durations and starts:
        start, duration = getattr(starts[0], "dt", None), getattr(durations[0], "dt", None)
        if isinstance(start, date) and isinstance(duration, timedelta):
            return _moment(start + duration)
    return None
