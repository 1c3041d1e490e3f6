"""Reading a relief event the member made in their calendar (`plugin.sync.relief`)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from plugin.sync.relief import ReliefAsk, is_relief_title, read_relief_event

CPH = ZoneInfo("Europe/Copenhagen")


def body(*lines: str, summary: str = "Aflastning", uid: str = "ABC-123") -> bytes:
    event = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20270301T090000Z", f"SUMMARY:{summary}", *lines,
             "END:VEVENT"]  # fmt: skip
    return ("\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Apple//x", *event,
                         "END:VCALENDAR"]) + "\r\n").encode()  # fmt: skip


def read(data: bytes) -> ReliefAsk | None:
    return read_relief_event(data, zone=CPH, max_bytes=65536, own_suffix="@north")


def test_an_all_day_event_over_a_week_is_that_week_in_the_citizens_zone() -> None:
    ask = read(body("DTSTART;VALUE=DATE:20270308", "DTEND;VALUE=DATE:20270315"))
    assert ask == ReliefAsk(
        "ABC-123", datetime(2027, 3, 8, tzinfo=CPH), datetime(2027, 3, 15, tzinfo=CPH)
    )
    one_day = read(body("DTSTART;VALUE=DATE:20270308"))
    assert one_day is not None and one_day.end == datetime(2027, 3, 9, tzinfo=CPH)


def test_timed_events_with_a_zone_floating_or_a_duration() -> None:
    zoned = read(body("DTSTART;TZID=Europe/Copenhagen:20270308T080000",
                      "DTEND;TZID=Europe/Copenhagen:20270310T200000"))  # fmt: skip
    assert zoned is not None and zoned.start == datetime(2027, 3, 8, 8, tzinfo=CPH)
    utc = read(body("DTSTART:20270308T070000Z", "DURATION:P2D"))
    assert utc is not None and (utc.end - utc.start).days == 2
    assert utc.start == datetime(2027, 3, 8, 8, tzinfo=CPH)
    floating = read(body("DTSTART:20270308T080000", "DTEND:20270308T200000"))
    assert floating is not None and floating.start == datetime(2027, 3, 8, 8, tzinfo=CPH)


@pytest.mark.parametrize(
    "title", ["Aflastning", "aflastning uge 12", "AFLØSNING", "Relief: holiday", "[Relief]"]
)
def test_titles_that_ask_for_relief(title: str) -> None:
    assert is_relief_title(title)
    assert read(body("DTSTART;VALUE=DATE:20270308", summary=title)) is not None


@pytest.mark.parametrize("title", ["Indkøb", "Reliefs", "Ferie", "Min aflastning", ""])
def test_other_titles_are_just_events(title: str) -> None:
    assert not is_relief_title(title)


@pytest.mark.parametrize(
    "data",
    [
        body("DTSTART;VALUE=DATE:20270308", uid="t-1_20270309T1000@north"),  # our own copy
        body("DTSTART;VALUE=DATE:20270308", "X-CARECAL-TASK:t-1"),
        body("DTSTART;VALUE=DATE:20270308", "RRULE:FREQ=WEEKLY"),  # no period
        body("DTSTART;VALUE=DATE:20270308", "STATUS:CANCELLED"),
        body("DTSTART:20270308T080000Z"),  # a moment
        body("DTSTART;VALUE=DATE:20270315", "DTEND;VALUE=DATE:20270308"),  # backwards
        body("DTSTART;VALUE=DATE:20270101", "DTEND;VALUE=DATE:20280301"),  # over a year
        body("DTEND;VALUE=DATE:20270308"),  # no start
        body("DTSTART;VALUE=DATE:20270308", summary="Indkøb"),
        b"BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nUID:x\r\nSUMMARY:Aflastning\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
        b"not a calendar at all",
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:garbage\r\n",
    ],
)
def test_what_is_not_a_relief_request(data: bytes) -> None:
    assert read(data) is None


def test_large_bodies_are_not_parsed() -> None:
    data = body("DTSTART;VALUE=DATE:20270308", "DESCRIPTION:" + "x" * 70000)
    assert read(data) is None
