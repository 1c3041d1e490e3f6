"""Fingerprints are stored in sync records and compared with later ones, so the value of a
given object must never change by accident (a change re-writes or re-offers every copy).
These are the values `fingerprint.py` computed before it was made faster; a deliberate change
of the canonical form bumps `VERSION` instead."""

import pytest
from icalendar import Calendar

from plugin.sync.fingerprint import fingerprint, material_fingerprint

# A rendered copy (`render(ANNA, record(holders=("m-cy",), people_needed=2))` at the time).
RENDERED = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//carecal//carecal//EN\r\n"
    b"BEGIN:VTIMEZONE\r\nTZID:Europe/Copenhagen\r\n"
    b"BEGIN:STANDARD\r\nDTSTART:20271031T030000\r\nTZNAME:CET\r\nTZOFFSETFROM:+0200\r\n"
    b"TZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
    b"BEGIN:VEVENT\r\nSUMMARY:[Ledig] Indk\xc3\xb8b\r\n"
    b"DTSTART;TZID=Europe/Copenhagen:20270330T100000\r\n"
    b"DTEND;TZID=Europe/Copenhagen:20270330T110000\r\nDTSTAMP:20270301T120000Z\r\n"
    b"UID:t-1_20270330T1000@aarhus.dk\r\nSEQUENCE:1\r\n"
    b"ATTENDEE;CN=Anna;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;SCHEDULE-AGENT=CLIENT:mai\r\n"
    b" lto:anna@example.org\r\nCLASS:PRIVATE\r\n"
    b"DESCRIPTION:Netto\\; the list is on the fridge\\n\\nSted: Netto\\, Vestergade \r\n"
    b" 3\\n\\nTag opgaven\\, giv den fra dig eller sig nej tak: https://carecal.aarh\r\n"
    b" us.dk/c/tok-anna\r\nORGANIZER;CN=carecal:mailto:noreply@aarhus.dk\r\n"
    b"STATUS:TENTATIVE\r\nTRANSP:TRANSPARENT\r\nURL:https://carecal.aarhus.dk/c/tok-anna\r\n"
    b"X-CARECAL-CATEGORY:shopping\r\nX-CARECAL-STATE:partial\r\nX-CARECAL-TASK:t-1\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)

# Two events, DURATION instead of DTEND, recurrence properties, two attendees, a lower-case
# property name and values that need escaping.
FOREIGN = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\n"
    b"BEGIN:VEVENT\r\nUID:o-2@x\r\nDTSTAMP:20270101T000000Z\r\n"
    b"DTSTART:20270330T080000Z\r\nDURATION:PT1H30M\r\n"
    b"SUMMARY:[Ledig] Indk\xc3\xb8b\\, m\xc3\xa6lk\r\nDESCRIPTION:a\\nb\\;c\r\n"
    b"RRULE:FREQ=WEEKLY;COUNT=3\r\nEXDATE:20270406T080000Z,20270413T080000Z\r\n"
    b"RDATE;VALUE=DATE:20270501\r\nstatus:tentative\r\n"
    b"ATTENDEE;CN=Bo;RSVP=true:MAILTO:Bo@Example.org\r\n"
    b"ATTENDEE;CN=Anna;PARTSTAT=ACCEPTED:mailto:anna@example.org\r\n"
    b"END:VEVENT\r\n"
    b"BEGIN:VEVENT\r\nUID:o-1@x\r\nDTSTART;VALUE=DATE:20270330\r\nEND:VEVENT\r\n"
    b"END:VCALENDAR\r\n"
)

GOLDEN = [
    (
        RENDERED,
        "v1:201fb3e6a62fed7742681b004c767a3404ac79b515fa328db9ded034104951ae",
        "v1:5a3917653eaa0a81bbf3e9bd869a82025430ac61c533931ba882fad411f9ce6f",
    ),
    (
        FOREIGN,
        "v1:e184d04110ef053829da4647cfd28f67ae73c2fcb09a41ed5a6800e53c17653d",
        "v1:7c3f495bfaf924c97b363f03a5525674060b8a6ffa45480b4a1f66b5ed3db65b",
    ),
]


@pytest.mark.parametrize(("body", "owned", "material"), GOLDEN, ids=["rendered", "foreign"])
def test_fingerprints_keep_their_values(body: bytes, owned: str, material: str) -> None:
    calendar = Calendar.from_ical(body)
    assert fingerprint(calendar) == owned
    assert material_fingerprint(calendar) == material
