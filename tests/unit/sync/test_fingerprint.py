from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Alarm, Calendar, vCalAddress

from plugin.sync.fingerprint import fingerprint, material_fingerprint, prop_values
from tests.unit.sync.support import ANNA, record, render, set_partstat, vevent


def ours() -> Calendar:
    return render(ANNA, record(holders=("m-cy",), people_needed=2))


def reparse(calendar: Calendar) -> Calendar:
    return Calendar.from_ical(calendar.to_ical())


def refold(body: bytes, width: int) -> bytes:
    """What another server's serialiser does: unfold, then fold every line at `width`."""
    lines = body.replace(b"\r\n ", b"").split(b"\r\n")
    out: list[bytes] = []
    for line in lines:
        chunks = [line[i : i + width] for i in range(0, len(line), width)] or [b""]
        out.append(b"\r\n ".join(chunks))
    return b"\r\n".join(out)


def reordered(body: bytes) -> bytes:
    """The same object with the VEVENT's properties reversed, as another server may store it
    (icalendar itself always writes a canonical order, so this works on the unfolded text)."""
    lines = body.replace(b"\r\n ", b"").split(b"\r\n")
    begin, end = lines.index(b"BEGIN:VEVENT"), lines.index(b"END:VEVENT")
    return b"\r\n".join([*lines[: begin + 1], *reversed(lines[begin + 1 : end]), *lines[end:]])


def with_change(calendar: Calendar, name: str, value: object) -> Calendar:
    copy = reparse(calendar)
    event = vevent(copy)
    event.pop(name, None)
    event.add(name, value)
    return copy


def test_stable_under_reparse_and_reordering() -> None:
    calendar = ours()
    assert fingerprint(reparse(calendar)) == fingerprint(calendar)
    body = reordered(calendar.to_ical())
    assert body.index(b"X-CARECAL-TASK") < body.index(b"SUMMARY")
    assert fingerprint(Calendar.from_ical(body)) == fingerprint(calendar)


@pytest.mark.parametrize("width", [20, 45, 74, 200])
def test_stable_under_refolding(width: int) -> None:
    calendar = ours()
    body = refold(calendar.to_ical(), width)
    assert fingerprint(Calendar.from_ical(body)) == fingerprint(calendar)


def test_stable_under_what_servers_rewrite() -> None:
    calendar = ours()
    copy = reparse(calendar)
    event = vevent(copy)
    event.pop("DTSTAMP")
    event.add("dtstamp", datetime(2031, 1, 1, tzinfo=UTC))
    event.add("last-modified", datetime(2031, 1, 1, tzinfo=UTC))
    event.add("created", datetime(2031, 1, 1, tzinfo=UTC))
    event.pop("SEQUENCE")
    event.add("sequence", 42)
    event.add("x-moz-generation", "3")
    event.add("x-apple-travel-advisory-behavior", "AUTOMATIC")
    copy.pop("PRODID")
    copy.add("prodid", "-//Radicale//NONSGML Radicale Server//EN")
    event["ORGANIZER"].params["SCHEDULE-STATUS"] = "1.2"
    assert fingerprint(copy) == fingerprint(calendar)


def test_stable_under_parameter_and_address_case() -> None:
    calendar = ours()
    body = calendar.to_ical().replace(b"\r\n ", b"")
    body = body.replace(b"RSVP=TRUE", b"rsvp=true").replace(
        b"SCHEDULE-AGENT=CLIENT", b"schedule-agent=client"
    )
    body = body.replace(b"mailto:anna@example.org", b"MAILTO:Anna@Example.ORG")
    assert b"rsvp=true" in body
    assert fingerprint(Calendar.from_ical(body)) == fingerprint(calendar)


def test_stable_when_a_server_writes_utc_instead_of_a_tzid() -> None:
    calendar = ours()
    event = vevent(calendar)
    start, end = event.decoded("DTSTART"), event.decoded("DTEND")
    utc = with_change(calendar, "DTSTART", start.astimezone(UTC))
    utc = with_change(utc, "DTEND", end.astimezone(UTC))
    assert b"DTSTART:20270330T080000Z" in utc.to_ical()
    assert fingerprint(utc) == fingerprint(calendar)
    as_duration = reparse(calendar)
    vevent(as_duration).pop("DTEND")
    vevent(as_duration).add("duration", timedelta(hours=1))
    assert fingerprint(as_duration) == fingerprint(calendar)


def test_member_owned_parts_do_not_count() -> None:
    calendar = ours()
    copy = set_partstat(calendar, "ACCEPTED")
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", timedelta(minutes=-30))
    vevent(copy).add_component(alarm)
    assert fingerprint(copy) == fingerprint(calendar)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SUMMARY", "[Dig] Indkøb"),
        ("DTSTART", datetime(2027, 3, 30, 11, tzinfo=UTC)),
        ("DTEND", datetime(2027, 3, 30, 12, tzinfo=UTC)),
        ("STATUS", "CANCELLED"),
        ("TRANSP", "OPAQUE"),
        ("DESCRIPTION", "something else"),
        ("URL", "https://evil.example/"),
        ("RRULE", {"FREQ": "DAILY"}),
        ("X-CARECAL-STATE", "filled"),
    ],
)
def test_a_real_edit_changes_it(name: str, value: object) -> None:
    calendar = ours()
    assert fingerprint(with_change(calendar, name, value)) != fingerprint(calendar)


def test_another_attendee_changes_it() -> None:
    calendar = ours()
    copy = reparse(calendar)
    vevent(copy).add("attendee", vCalAddress("mailto:friend@example.org"))
    assert len(prop_values(vevent(copy), "ATTENDEE")) == 2
    assert fingerprint(copy) != fingerprint(calendar)


def test_material_ignores_claim_state_but_not_time_or_details() -> None:
    open_ = render(ANNA, record())
    mine = render(ANNA, record(holders=("m-anna",)))
    cancelled = render(ANNA, record(cancelled=True))
    assert fingerprint(open_) != fingerprint(mine)
    assert material_fingerprint(open_) == material_fingerprint(mine)
    assert material_fingerprint(open_) == material_fingerprint(cancelled)
    later = render(ANNA, record(start=datetime(2027, 3, 30, 14)))
    assert material_fingerprint(later) != material_fingerprint(open_)
    edited = with_change(open_, "DESCRIPTION", "new details")
    assert material_fingerprint(edited) != material_fingerprint(open_)
