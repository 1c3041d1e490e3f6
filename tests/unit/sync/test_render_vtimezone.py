"""`vtimezone` hands out copies of a cached VTIMEZONE: each must be exactly what parsing the
generated zone gives, and independent of every other copy (icalendar components, property
values and parameters are all mutable)."""

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import pytest
from icalendar import Calendar, Component, Timezone

from plugin.sync.render import render_bytes, render_event, vtimezone
from tests.unit.sync.support import BO, record, render_input

# (zone, first year, last year); a span of more than one year makes RDATE properties.
SPANS = [
    ("Europe/Copenhagen", 2027, 2028),
    ("Europe/Copenhagen", 2027, 2029),
    ("America/New_York", 2026, 2030),
    ("Australia/Sydney", 2027, 2028),
    ("Asia/Kolkata", 2027, 2028),
]

_IMMUTABLE = (int, float, type(None), datetime, date, time, timedelta, tzinfo)


def _mutable_objects(obj: Any, found: dict[int, Any]) -> dict[int, Any]:
    """Every object reachable from `obj` that could be changed in place, by id."""
    if type(obj) in (str, bytes) or isinstance(obj, _IMMUTABLE) or id(obj) in found:
        return found
    if not isinstance(obj, tuple):  # a tuple cannot change, what it holds may
        found[id(obj)] = obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            _mutable_objects(key, found)
            _mutable_objects(value, found)
    if isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            _mutable_objects(item, found)
    for value in getattr(obj, "__dict__", {}).values():
        _mutable_objects(value, found)
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(obj, slot):
                _mutable_objects(getattr(obj, slot), found)
    return found


def _rdate(zone: Component) -> Any:
    return next(sub["RDATE"] for sub in zone.subcomponents if "RDATE" in sub)


@pytest.mark.parametrize(("tzid", "first", "last"), SPANS)
def test_a_copy_is_the_parsed_zone(tzid: str, first: int, last: int) -> None:
    generated = Timezone.from_tzid(tzid, first_date=date(first, 1, 1), last_date=date(last, 1, 1))
    parsed = Timezone.from_ical(generated.to_ical())
    copy = vtimezone(tzid, first, last)
    assert copy.to_ical() == parsed.to_ical()
    assert copy == parsed
    assert [type(c) for c in copy.walk()] == [type(c) for c in parsed.walk()]
    assert [type(v) for c in copy.walk() for v in c.values()] == [
        type(v) for c in parsed.walk() for v in c.values()
    ]


@pytest.mark.parametrize(("tzid", "first", "last"), SPANS)
def test_two_copies_share_nothing_mutable(tzid: str, first: int, last: int) -> None:
    one = _mutable_objects(vtimezone(tzid, first, last), {})
    other = _mutable_objects(vtimezone(tzid, first, last), {})
    shared = [one[key] for key in one.keys() & other.keys()]
    assert not shared


def test_changing_a_copy_changes_no_other() -> None:
    before = vtimezone("Europe/Copenhagen", 2027, 2029).to_ical()
    changed = vtimezone("Europe/Copenhagen", 2027, 2029)
    other = vtimezone("Europe/Copenhagen", 2027, 2029)
    changed["TZID"].params["X-CHANGED"] = "1"
    changed.subcomponents[0]["TZNAME"].params["X-CHANGED"] = "1"
    changed.subcomponents[0]["DTSTART"].params["TZID"] = "Elsewhere"
    _rdate(changed).dts.append(_rdate(changed).dts[0])
    changed.subcomponents[1].add("comment", "changed")
    changed.subcomponents.pop()
    changed["TZID"] = "Elsewhere"
    assert changed.to_ical() != before
    assert other.to_ical() == before
    assert vtimezone("Europe/Copenhagen", 2027, 2029).to_ical() == before


def test_changing_one_rendered_copy_changes_no_other() -> None:
    """Two members' copies of occurrences in the same zone and year carry the same VTIMEZONE,
    as separate objects: a caller editing one (the feed removes ATTENDEEs, say) leaves the
    other, and later renders, as they were."""
    first = render_input(occurrence=record())
    second = render_input(BO, record(start=datetime(2027, 10, 30, 10), oid="t-1_20271030T1000"))
    expected = render_bytes(second)
    calendar = render_event(first)
    other = render_event(second)
    zone = next(c for c in calendar.subcomponents if isinstance(c, Timezone))
    zone["TZID"].params["X-CHANGED"] = "1"
    zone.subcomponents[0]["TZOFFSETTO"].params["X-CHANGED"] = "1"
    zone.subcomponents.clear()
    assert other.to_ical() == expected
    assert render_bytes(second) == expected
    assert Calendar.from_ical(render_bytes(first)).walk("STANDARD")
