"""A member asks for relief from their calendar app: they make an event titled "Aflastning"
(or "Afløsning", "Relief") in their care calendar, spanning the period. Pure.

Why this gesture. It is the one thing every calendar app that shows the collection can do:
Apple Calendar, Thunderbird and Android calendars synced by DAVx⁵ all create an event in a
chosen calendar and upload it (a timed event or an all-day one over several days). The
alternatives fail somewhere: declining with a comment is not offered by most apps (Google's
Android app, Thunderbird) and is per occurrence, not a period; editing our copies is reverted
by design. The event is the member's own object: carecal reads it once and never changes or
deletes it, so it stays in their calendar as a note of what they asked.

`read_relief_event(body, zone=..., ...)` reads one object of the member's collection that is
not one of carecal's copies:

- the title starts with one of `RELIEF_WORDS` (any case, after leading brackets or spaces):
  "Aflastning", "aflastning uge 12", "Relief: holiday";
- one VEVENT without a recurrence rule, not cancelled, not one of our copies (our UIDs end in
  `@<tenant>` and carry `X-CARECAL-TASK`);
- the period is [DTSTART, DTEND): all-day dates are whole days in the citizen's zone (DTEND is
  exclusive, as RFC 5545 says; without it, one day); floating times are the citizen's zone;
  DURATION stands in for DTEND; at most `MAX_DAYS` long.

Anything else is None: an ordinary event of theirs is simply not a relief request. Member data
is untrusted; nothing here raises.

    read_relief_event(b"BEGIN:VCALENDAR...SUMMARY:Aflastning\\r\\nDTSTART;VALUE=DATE:20270308"
                      b"\\r\\nDTEND;VALUE=DATE:20270315...", zone=CPH, max_bytes=65536,
                      own_suffix="@north")
    # ReliefAsk(uid='...', start=2027-03-08 00:00+01:00, end=2027-03-15 00:00+01:00)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar

__all__ = ["MAX_DAYS", "RELIEF_WORDS", "ReliefAsk", "is_relief_title", "read_relief_event"]

RELIEF_WORDS = ("aflastning", "afløsning", "relief")
MAX_DAYS = 366
_TITLE = re.compile(r"^[\s\[\(\*]*(" + "|".join(RELIEF_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReliefAsk:
    """A relief event read from the member's collection: its UID and period (aware)."""

    uid: str
    start: datetime
    end: datetime


def is_relief_title(summary: str) -> bool:
    """`is_relief_title("Aflastning uge 12")` is True; `is_relief_title("Indkøb")` is False."""
    return _TITLE.match(summary) is not None


def read_relief_event(
    body: bytes, *, zone: ZoneInfo, max_bytes: int, own_suffix: str
) -> ReliefAsk | None:
    if len(body) > max_bytes:
        return None
    try:
        return _read(body, zone, own_suffix)
    except Exception:  # untrusted input: nothing may escape
        return None


def _read(body: bytes, zone: ZoneInfo, own_suffix: str) -> ReliefAsk | None:
    calendar = Calendar.from_ical(body)
    events = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    if len(events) != 1:
        return None
    event = events[0]
    uid = str(event.get("UID", "")).strip()
    if not uid or uid.endswith(own_suffix) or "X-CARECAL-TASK" in event:
        return None
    if "RRULE" in event or "RECURRENCE-ID" in event:
        return None
    if str(event.get("STATUS", "")).upper() == "CANCELLED":
        return None
    if not is_relief_title(str(event.get("SUMMARY", ""))):
        return None
    if "DTSTART" not in event:
        return None
    start_value = event.decoded("DTSTART")
    start = _moment(start_value, zone)
    if "DTEND" in event:
        end = _moment(event.decoded("DTEND"), zone)
    elif "DURATION" in event:
        end = start + event.decoded("DURATION")
    elif isinstance(start_value, date) and not isinstance(start_value, datetime):
        end = _moment(start_value + timedelta(days=1), zone)
    else:
        return None  # a moment, not a period
    if end <= start or end - start > timedelta(days=MAX_DAYS):
        return None
    return ReliefAsk(uid[:255], start, end)


def _moment(value: Any, zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=zone) if value.tzinfo is None else value
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=zone)
    raise TypeError(f"not a date or date-time: {type(value).__name__}")
