"""Expanding a task into dated occurrences, in the wall-clock time of the task's zone.

A task keeps its start and end as naive wall-clock times plus an IANA zone (as the host sends
them) and, optionally, an RRULE value. Expansion happens in wall-clock time, so a weekly task at
10:00 stays at 10:00 local across the DST changes; only then is each start made aware:

- a nonexistent local time (the spring-forward gap: 02:30 on the last Sunday of March in
  Europe/Copenhagen) is read with the UTC offset from *before* the gap (RFC 5545 §3.3.5), which
  moves it forward by the length of the gap: 02:30 -> 03:30 CEST;
- an ambiguous local time (the fall-back hour) means its first occurrence (RFC 5545 §3.3.5),
  i.e. fold=0, still summer time: 02:30 -> 02:30 CEST.

Both rules are what `fold=0` means in PEP 495, followed by a round trip through UTC to
normalise the wall-clock reading.

Errors:

    RecurrenceError (ValueError)
     ├── InvalidRecurrence     the RRULE value is malformed or not allowed
     ├── UnknownTimezone       the task's zone is not an IANA zone known here
     ├── InvalidTaskTimes      the task ends before it starts
     └── ExpansionTooLarge     reaching the window would take more than MAX_SCANNED instances
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from math import gcd
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as du

from plugin.domain.model import Occurrence, Task

# At most this many occurrences come back from one expansion (the earliest ones in the window);
# a care calendar's horizon of weeks never comes near it, a hostile rule would.
MAX_OCCURRENCES = 1000
# At most this many rule instances are looked at to reach the window (e.g. a task that started
# long ago); beyond that the expansion is refused rather than silently missing occurrences.
MAX_SCANNED = 100 * MAX_OCCURRENCES
MAX_RULE_LENGTH = 512

__all__ = [
    "MAX_OCCURRENCES",
    "MAX_SCANNED",
    "ExpansionTooLarge",
    "InvalidRecurrence",
    "InvalidTaskTimes",
    "RecurrenceError",
    "UnknownTimezone",
    "expand",
    "occurrence_id",
    "validate_rrule",
    "zone",
]


class RecurrenceError(ValueError):
    """Base of the errors raised while expanding a task."""


class InvalidRecurrence(RecurrenceError):
    """The RRULE value is malformed, or uses something carecal does not allow."""


class UnknownTimezone(RecurrenceError):
    """The task's time zone is not a known IANA zone."""


class InvalidTaskTimes(RecurrenceError):
    """The task ends before it starts."""


class ExpansionTooLarge(RecurrenceError):
    """Reaching the window would need more than MAX_SCANNED rule instances."""


_FREQS = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY, "MONTHLY": du.MONTHLY, "YEARLY": du.YEARLY}
# Not meaningful for care tasks, and a cheap way to make the expansion do a lot of work.
_REFUSED_FREQS = frozenset({"SECONDLY", "MINUTELY", "HOURLY"})
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_DU_WEEKDAYS = (du.MO, du.TU, du.WE, du.TH, du.FR, du.SA, du.SU)
# BYSECOND is left out because occurrence ids have minute resolution; BYYEARDAY, BYWEEKNO and
# BYEASTER because care tasks do not need them and they make never-matching rules easy to write
# (dateutil then searches up to year 9999 before giving up).
_PARTS = frozenset(
    {"FREQ", "UNTIL", "COUNT", "INTERVAL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYHOUR",
     "BYMINUTE", "BYSETPOS", "WKST"}
)  # fmt: skip
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists in leap years
_BYDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_INT = re.compile(r"[+-]?\d{1,7}")
_UNTIL = re.compile(r"(\d{8})(?:T(\d{6})(Z?))?")


@dataclass(frozen=True, slots=True)
class _Until:
    value: datetime  # naive
    kind: str  # "utc", "floating" (local wall clock) or "date" (the whole day, inclusive)


@dataclass(frozen=True, slots=True)
class _Rule:
    freq: int
    interval: int = 1
    count: int | None = None
    until: _Until | None = None
    byday: tuple[tuple[int | None, int], ...] = ()  # (ordinal or None, weekday 0 = Monday)
    bymonthday: tuple[int, ...] = ()
    bymonth: tuple[int, ...] = ()
    byhour: tuple[int, ...] = ()
    byminute: tuple[int, ...] = ()
    bysetpos: tuple[int, ...] = ()
    wkst: int | None = None


def occurrence_id(task_id: str, local_start: datetime) -> str:
    """A stable occurrence id from the task id and the original wall-clock start.

    >>> occurrence_id("t-1", datetime(2027, 3, 28, 2, 30))
    't-1_20270328T0230'

    The original start is used, not the normalised one, so the id does not change if the zone's
    rules (tzdata) change.
    """
    return f"{task_id}_{local_start:%Y%m%dT%H%M}"


def validate_rrule(value: str) -> None:
    """Raise InvalidRecurrence unless `value` is an RRULE value carecal expands.

    Unbounded rules (no COUNT or UNTIL) are fine: the expansion window bounds them.

    >>> validate_rrule("FREQ=WEEKLY;BYDAY=MO,TH")
    >>> validate_rrule("FREQ=HOURLY")
    Traceback (most recent call last):
    ...
    plugin.domain.recurrence.InvalidRecurrence: FREQ=HOURLY is not allowed; ...
    """
    _parse(value)


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or UnknownTimezone."""
    try:
        return ZoneInfo(name)
    # A directory of the tz database ("Europe") surfaces as IsADirectoryError, an OSError.
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise UnknownTimezone(f"unknown time zone {name!r}") from exc


def expand(task: Task, *, window_start: datetime, window_end: datetime) -> list[Occurrence]:
    """The task's occurrences whose [start, end) overlaps [window_start, window_end).

    The rule set is RRULE (with DTSTART = task.start always the first instance, counted by
    COUNT, as RFC 5545 says) plus RDATEs minus EXDATEs, all in wall-clock time of task.timezone.
    Starts and ends come back aware in that zone, ordered by start; the end is the (normalised)
    start plus the task's wall-clock duration (so on the fall-back day 02:30-03:15 reads as
    45 minutes on the clock but lasts 1h45). Cancellation is the caller's business.

    A weekly task on Tuesdays 10:00-11:00 stays at 10:00 local on both sides of the change to
    summer time: 2027-03-23T10:00+01:00 and 2027-03-30T10:00+02:00.
    """
    for name, bound in (("window_start", window_start), ("window_end", window_end)):
        if bound.tzinfo is None or bound.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got {bound!r}")
    tz = zone(task.timezone)
    start = _wall(task.start, tz)
    duration = _wall(task.end, tz) - start
    if duration < timedelta(0):
        raise InvalidTaskTimes(f"task {task.id} ends ({task.end}) before it starts ({task.start})")
    # Compare in UTC: aware datetimes sharing one tzinfo compare by wall clock, ignoring fold.
    lo, hi = window_start.astimezone(UTC), window_end.astimezone(UTC)
    # No UTC offset is a day or more, so a wall-clock start past this begins after the window.
    stop = hi.astimezone(tz).replace(tzinfo=None) + timedelta(days=1)

    excluded = {_wall(d, tz) for d in task.exdates}
    starts = set(_rule_starts(task, start, tz, stop))
    starts.update(_wall(d, tz) for d in task.rdates)

    found: dict[str, Occurrence] = {}
    for local in sorted(starts - excluded):
        aware_start = _resolve(local, tz)
        aware_end = _resolve(aware_start.replace(tzinfo=None) + duration, tz)
        if not _overlaps(aware_start.astimezone(UTC), aware_end.astimezone(UTC), lo, hi):
            continue
        oid = occurrence_id(task.id, local)
        # Starts within the same minute share an id; the first one wins.
        found.setdefault(oid, Occurrence(oid, task.id, aware_start, aware_end))
        if len(found) >= MAX_OCCURRENCES:
            break
    return list(found.values())


def _rule_starts(task: Task, start: datetime, tz: ZoneInfo, stop: datetime) -> Iterator[datetime]:
    """Wall-clock starts of the RRULE part, in order, up to `stop` (and always `start`)."""
    yield start
    if task.recurrence is None:
        return
    rule = _parse(task.recurrence)
    if not _reachable(rule, start):
        return
    emitted = 1
    for scanned, local in enumerate(_dateutil_rule(rule, start, tz), start=1):
        if scanned > MAX_SCANNED:
            raise ExpansionTooLarge(
                f"task {task.id}: more than {MAX_SCANNED} instances of {task.recurrence!r} "
                "before the window"
            )
        if local == start:  # dateutil yields DTSTART only when it matches the rule
            continue
        if (rule.count is not None and emitted >= rule.count) or local > stop:
            return
        yield local
        emitted += 1


def _reachable(rule: _Rule, start: datetime) -> bool:
    """False if, from this DTSTART, the rule can never match (DTSTART is then the only
    instance): dateutil would search until year 9999 to find that out.

    INTERVAL can keep a rule off every listed weekday (FREQ=DAILY;INTERVAL=7;BYDAY=MO from a
    Friday) or month (FREQ=MONTHLY;INTERVAL=2;BYMONTH=2 from January), and a rule without its
    own days takes DTSTART's day of the month (FREQ=MONTHLY;BYMONTH=4 from the 31st).
    """
    if rule.freq == du.DAILY and rule.byday:
        step = gcd(rule.interval, 7)
        if all((day - start.weekday()) % step for _, day in rule.byday):
            return False
    months = set(rule.bymonth or range(1, 13))
    if rule.freq == du.MONTHLY and rule.bymonth:
        step = gcd(rule.interval, 12)
        months = {m for m in months if (m - start.month) % step == 0}
    elif rule.freq == du.YEARLY and not (rule.bymonth or rule.byday or rule.bymonthday):
        months = {start.month}
    monthdays = rule.bymonthday
    if not monthdays and not rule.byday and rule.freq in (du.MONTHLY, du.YEARLY):
        monthdays = (start.day,)
    if monthdays:
        return any(abs(d) <= _DAYS_IN_MONTH[m - 1] for m in months for d in monthdays)
    return bool(months)


def _dateutil_rule(rule: _Rule, dtstart: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    until: datetime | None = None
    if rule.until is not None:
        if rule.until.kind == "utc":
            until = rule.until.value.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)
        elif rule.until.kind == "date":
            until = datetime.combine(rule.until.value.date(), time.max)
        else:
            until = rule.until.value
    byweekday = [_DU_WEEKDAYS[day](n) if n else _DU_WEEKDAYS[day] for n, day in rule.byday]
    result: Iterator[datetime] = iter(
        du.rrule(
            rule.freq,
            dtstart=dtstart,
            interval=rule.interval,
            wkst=rule.wkst,
            count=rule.count,
            until=until,
            bysetpos=rule.bysetpos or None,
            bymonth=rule.bymonth or None,
            bymonthday=rule.bymonthday or None,
            byweekday=byweekday or None,
            byhour=rule.byhour or None,
            byminute=rule.byminute or None,
            cache=False,
        )
    )
    return result


def _wall(value: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall-clock reading of `value` in `tz` (naive values already are one)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(tz).replace(tzinfo=None)


def _resolve(local: datetime, tz: ZoneInfo) -> datetime:
    """Aware datetime for a wall-clock time: gaps move forward, ambiguous times take the first.

    >>> _resolve(datetime(2027, 3, 28, 2, 30), ZoneInfo("Europe/Copenhagen")).isoformat()
    '2027-03-28T03:30:00+02:00'
    """
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


def _overlaps(start: datetime, end: datetime, lo: datetime, hi: datetime) -> bool:
    if start == end:  # an instant belongs to the window it falls in
        return lo <= start < hi
    return start < hi and end > lo


def _parse(value: str) -> _Rule:
    text = value.strip()
    if not text:
        raise InvalidRecurrence("empty recurrence rule")
    if len(text) > MAX_RULE_LENGTH:
        raise InvalidRecurrence(f"recurrence rule longer than {MAX_RULE_LENGTH} characters")
    if text.upper().startswith("RRULE:"):
        raise InvalidRecurrence("give the RRULE value without the 'RRULE:' prefix")
    if not text.isprintable():
        raise InvalidRecurrence("a recurrence rule is one line of printable text")
    parts: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, raw = part.partition("=")
        name, raw = name.strip().upper(), raw.strip().upper()
        if not sep or not name or not raw:
            raise InvalidRecurrence(f"{part!r} is not NAME=VALUE")
        if name in parts:
            raise InvalidRecurrence(f"{name} given twice")
        parts[name] = raw
    unknown = sorted(parts.keys() - _PARTS)
    if unknown:
        raise InvalidRecurrence(f"unsupported rule part(s): {', '.join(unknown)}")
    freq = parts.get("FREQ")
    if freq is None:
        raise InvalidRecurrence("FREQ is required")
    if freq in _REFUSED_FREQS:
        raise InvalidRecurrence(f"FREQ={freq} is not allowed; care tasks recur at most daily")
    if freq not in _FREQS:
        raise InvalidRecurrence(f"unknown FREQ {freq!r}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise InvalidRecurrence("COUNT and UNTIL must not both be given (RFC 5545)")
    rule = _Rule(
        freq=_FREQS[freq],
        interval=_one_int(parts, "INTERVAL", 1, 10_000) or 1,
        count=_one_int(parts, "COUNT", 1, 1_000_000),
        until=_parse_until(parts["UNTIL"]) if "UNTIL" in parts else None,
        byday=tuple(_parse_byday(v) for v in _items(parts, "BYDAY")),
        bymonthday=_ints(parts, "BYMONTHDAY", 1, 31, signed=True),
        bymonth=_ints(parts, "BYMONTH", 1, 12),
        byhour=_ints(parts, "BYHOUR", 0, 23),
        byminute=_ints(parts, "BYMINUTE", 0, 59),
        bysetpos=_ints(parts, "BYSETPOS", 1, 366, signed=True),
        wkst=_weekday(parts["WKST"]) if "WKST" in parts else None,
    )
    _check_satisfiable(rule)
    return rule


def _check_satisfiable(rule: _Rule) -> None:
    """Refuse combinations that can never match: dateutil would search until year 9999."""
    ordinals = [n for n, _ in rule.byday if n is not None]
    if ordinals:
        if rule.freq not in (du.MONTHLY, du.YEARLY):
            raise InvalidRecurrence("BYDAY with a number (e.g. 1MO) needs FREQ=MONTHLY or YEARLY")
        limit = 5 if rule.freq == du.MONTHLY or rule.bymonth else 53
        if any(abs(n) > limit for n in ordinals):
            raise InvalidRecurrence(f"BYDAY numbers must be within ±{limit} here")
        if rule.bymonthday:
            raise InvalidRecurrence("BYDAY with a number cannot be combined with BYMONTHDAY")
    if rule.bymonthday:
        months = rule.bymonth or tuple(range(1, 13))
        if not any(abs(d) <= _DAYS_IN_MONTH[m - 1] for m in months for d in rule.bymonthday):
            raise InvalidRecurrence("BYMONTHDAY does not exist in any month of BYMONTH")
    if rule.bysetpos:
        if rule.freq not in (du.MONTHLY, du.YEARLY) or not rule.byday or ordinals:
            raise InvalidRecurrence(
                "BYSETPOS needs FREQ=MONTHLY or YEARLY and BYDAY weekdays without numbers"
            )
        if rule.bymonthday:
            raise InvalidRecurrence("BYSETPOS cannot be combined with BYMONTHDAY")
        # Every month has at least four of each weekday, so this many instances always exist.
        size = 4 * len(rule.byday) * max(1, len(rule.byhour)) * max(1, len(rule.byminute))
        if any(abs(p) > size for p in rule.bysetpos):
            raise InvalidRecurrence(f"BYSETPOS must be within ±{size} for this rule")


def _items(parts: dict[str, str], name: str) -> list[str]:
    if name not in parts:
        return []
    items = [item.strip() for item in parts[name].split(",")]
    if not all(items):
        raise InvalidRecurrence(f"{name} has an empty item")
    return items


def _ints(
    parts: dict[str, str], name: str, low: int, high: int, *, signed: bool = False
) -> tuple[int, ...]:
    values: list[int] = []
    for item in _items(parts, name):
        if not _INT.fullmatch(item):
            raise InvalidRecurrence(f"{name}: {item!r} is not a whole number")
        number = int(item)
        if not (low <= abs(number) <= high) or (number < 0 and not signed):
            allowed = f"±{low}..{high}" if signed else f"{low}..{high}"
            raise InvalidRecurrence(f"{name}: {item} is outside {allowed}")
        if number not in values:
            values.append(number)
    return tuple(sorted(values))


def _one_int(parts: dict[str, str], name: str, low: int, high: int) -> int | None:
    if name not in parts:
        return None
    values = _ints(parts, name, low, high)
    if len(values) != 1 or "," in parts[name]:
        raise InvalidRecurrence(f"{name} takes one number")
    return values[0]


def _weekday(text: str) -> int:
    if text not in _WEEKDAYS:
        raise InvalidRecurrence(f"{text!r} is not a weekday (MO..SU)")
    return _WEEKDAYS.index(text)


def _parse_byday(item: str) -> tuple[int | None, int]:
    match = _BYDAY.fullmatch(item)
    if match is None:
        raise InvalidRecurrence(f"BYDAY: {item!r} is not a weekday like MO, 1MO or -1FR")
    number = int(match[1]) if match[1] else None
    if number == 0:
        raise InvalidRecurrence(f"BYDAY: {item!r} has a zero ordinal")
    return number, _weekday(match[2])


def _parse_until(text: str) -> _Until:
    match = _UNTIL.fullmatch(text)
    if match is None:
        raise InvalidRecurrence(f"UNTIL: {text!r} is not YYYYMMDD or YYYYMMDDTHHMMSS[Z]")
    try:
        value = datetime.strptime(match[1] + (match[2] or "000000"), "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise InvalidRecurrence(f"UNTIL: {text!r} is not a real date and time") from exc
    # A bare date bounds the whole day: the common intent, though RFC 5545 wants a DATE-TIME.
    kind = "date" if match[2] is None else ("utc" if match[3] else "floating")
    return _Until(value, kind)
