from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Alarm, Calendar, vCalAddress

from plugin.sync.fingerprint import fingerprint, prop_values
from plugin.sync.gestures import (
    BadMemberData,
    BadReason,
    Gesture,
    MemberCopy,
    gesture_between,
    merge_member_copy,
    read_gesture,
    read_member_copy,
)
from plugin.sync.render import attendee_address
from tests.unit.sync.support import (
    ANNA,
    DOMAIN,
    NOMAIL,
    attendee_partstat,
    record,
    render,
    set_partstat,
    vevent,
)

ADDRESS = attendee_address(ANNA, DOMAIN)
UID = "t-1_20270330T1000@aarhus.dk"
LIMIT = 64 * 1024


def read(body: bytes, **kwargs: object) -> MemberCopy | BadMemberData:
    options: dict[str, object] = {"member_address": ADDRESS, "max_bytes": LIMIT}
    options.update(kwargs)
    return read_member_copy(body, **options)  # type: ignore[arg-type]


def gesture(body: bytes | None, baseline: str) -> Gesture | BadMemberData:
    return read_gesture(
        body, baseline=baseline, member_address=ADDRESS, max_bytes=LIMIT, expected_uid=UID
    )


@pytest.mark.parametrize(
    ("baseline", "partstat", "expected"),
    [
        ("NEEDS-ACTION", "NEEDS-ACTION", Gesture.NONE),
        ("NEEDS-ACTION", "ACCEPTED", Gesture.CLAIM),
        ("NEEDS-ACTION", "DECLINED", Gesture.PASS),
        ("NEEDS-ACTION", "TENTATIVE", Gesture.NONE),
        ("DECLINED", "ACCEPTED", Gesture.CLAIM),
        ("DECLINED", "DECLINED", Gesture.NONE),
        ("DECLINED", "NEEDS-ACTION", Gesture.NONE),
        ("ACCEPTED", "ACCEPTED", Gesture.NONE),
        ("ACCEPTED", "DECLINED", Gesture.PASS),
        ("ACCEPTED", "TENTATIVE", Gesture.RELEASE),
        ("ACCEPTED", "NEEDS-ACTION", Gesture.RELEASE),
        ("ACCEPTED", "DELEGATED", Gesture.RELEASE),
        ("ACCEPTED", None, Gesture.NONE),
        ("accepted", "ACCEPTED", Gesture.NONE),
    ],
)
def test_the_gesture_table(baseline: str, partstat: str | None, expected: Gesture) -> None:
    assert gesture_between(baseline, partstat) is expected


def test_gestures_read_from_a_members_copy() -> None:
    offered = render(ANNA)
    assert gesture(offered.to_ical(), "NEEDS-ACTION") is Gesture.NONE
    assert gesture(set_partstat(offered, "ACCEPTED").to_ical(), "NEEDS-ACTION") is Gesture.CLAIM
    assert gesture(set_partstat(offered, "DECLINED").to_ical(), "NEEDS-ACTION") is Gesture.PASS
    held = render(ANNA, record(holders=("m-anna",)))
    assert gesture(set_partstat(held, "TENTATIVE").to_ical(), "ACCEPTED") is Gesture.RELEASE
    assert gesture(None, "ACCEPTED") is Gesture.PASS  # deleted
    assert gesture(None, "NEEDS-ACTION") is Gesture.PASS


def test_the_members_attendee_is_matched_by_address_case_insensitively() -> None:
    copy = set_partstat(render(ANNA), "ACCEPTED")
    body = (
        copy.to_ical()
        .replace(b"\r\n ", b"")
        .replace(b"mailto:anna@example.org", b"MAILTO:ANNA@Example.org")
    )
    result = read(body)
    assert isinstance(result, MemberCopy)
    assert result.partstat == "ACCEPTED"


def test_a_member_without_email_answers_through_the_urn() -> None:
    copy = set_partstat(render(NOMAIL), "ACCEPTED")
    result = read(copy.to_ical(), member_address=attendee_address(NOMAIL, DOMAIN))
    assert isinstance(result, MemberCopy) and result.partstat == "ACCEPTED"


def test_the_single_attendee_counts_even_if_the_address_changed() -> None:
    copy = set_partstat(render(ANNA), "ACCEPTED")
    result = read(copy.to_ical(), member_address="mailto:anna.new@example.org")
    assert isinstance(result, MemberCopy) and result.partstat == "ACCEPTED"


def test_a_removed_attendee_is_no_answer() -> None:
    copy = Calendar.from_ical(render(ANNA, record(holders=("m-anna",))).to_ical())
    vevent(copy).pop("ATTENDEE")
    assert gesture(copy.to_ical(), "ACCEPTED") is Gesture.NONE


def test_with_an_invited_friend_only_the_members_own_answer_counts() -> None:
    copy = Calendar.from_ical(render(ANNA).to_ical())
    vevent(copy).add(
        "attendee", vCalAddress("mailto:friend@example.org", params={"PARTSTAT": "ACCEPTED"})
    )
    assert gesture(copy.to_ical(), "NEEDS-ACTION") is Gesture.NONE


EVENT = b"BEGIN:VEVENT\r\nUID:%s\r\nDTSTART:20270330T080000Z\r\nEND:VEVENT\r\n"


def calendar_of(*components: bytes) -> bytes:
    return b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + b"".join(components) + b"END:VCALENDAR\r\n"


BAD = [
    ("too-large", render(ANNA).to_ical() + b" " * LIMIT, BadReason.TOO_LARGE),
    ("garbage", b"this is not iCalendar", BadReason.UNPARSABLE),
    ("empty", b"", BadReason.UNPARSABLE),
    ("not-utf8", b"BEGIN:VCALENDAR\r\n\xff\xfe\xfd\r\nEND:VCALENDAR\r\n", BadReason.UNPARSABLE),
    ("bare-event", EVENT % UID.encode(), BadReason.NOT_A_CALENDAR),
    ("no-components", calendar_of(), BadReason.NO_EVENT),
    (
        "vtodo",
        calendar_of(b"BEGIN:VTODO\r\nUID:%s\r\nEND:VTODO\r\n" % UID.encode()),
        BadReason.NOT_AN_EVENT,
    ),
    ("two-events", calendar_of(EVENT % UID.encode(), EVENT % b"other@x"), BadReason.SEVERAL_EVENTS),
    (
        "override",
        calendar_of(
            EVENT % UID.encode(),
            b"BEGIN:VEVENT\r\nUID:%s\r\nRECURRENCE-ID:20270406T080000Z\r\n"
            b"DTSTART:20270406T090000Z\r\nEND:VEVENT\r\n" % UID.encode(),
        ),
        BadReason.SEVERAL_EVENTS,
    ),
    ("no-uid", calendar_of(b"BEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\n"), BadReason.MISSING_UID),
    ("other-uid", calendar_of(EVENT % b"someone-else@x"), BadReason.UID_MISMATCH),
    (
        "broken-vtimezone",
        calendar_of(
            b"BEGIN:VTIMEZONE\r\nTZID:X\r\nEND:VTIMEZONE\r\n",
            b"BEGIN:VEVENT\r\nUID:%s\r\nDTSTART;TZID=X:20270330T100000\r\nEND:VEVENT\r\n"
            % UID.encode(),
        ),
        BadReason.UNPARSABLE,
    ),
    ("unclosed", b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n", BadReason.UNPARSABLE),
]


@pytest.mark.parametrize(("case", "body", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_member_data_is_a_result_never_an_exception(
    case: str, body: bytes, reason: BadReason
) -> None:
    result = read(body, expected_uid=UID)
    assert isinstance(result, BadMemberData), case
    assert result.reason is reason
    assert gesture(body, "ACCEPTED") == result


def test_a_broken_date_is_read_and_later_reverted_not_crashed_on() -> None:
    body = calendar_of(
        b"BEGIN:VEVENT\r\nUID:%s\r\nDTSTART:notadate\r\nEND:VEVENT\r\n" % UID.encode()
    )
    result = read(body, expected_uid=UID)
    assert isinstance(result, MemberCopy | BadMemberData)
    if isinstance(result, MemberCopy):
        assert result.fingerprint != fingerprint(render(ANNA))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    read(calendar_of(body), expected_uid=UID)
    read(body)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(render(ANNA).to_ical().split(b"\r\n")), max_size=60))
def test_arbitrary_line_soups_never_raise(lines: list[bytes]) -> None:
    read(b"\r\n".join(lines), expected_uid=UID)


def member_alarm(minutes: int) -> Alarm:
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("description", "Husk indkøb")
    alarm.add("trigger", timedelta(minutes=-minutes))
    return alarm


def test_merge_keeps_the_members_alarms_through_an_update_of_time() -> None:
    theirs = set_partstat(render(ANNA), "TENTATIVE")
    vevent(theirs).add_component(member_alarm(30))
    vevent(theirs).add_component(member_alarm(120))
    vevent(theirs).pop("SUMMARY")
    vevent(theirs).add("summary", "my own title")  # a member edit to revert
    theirs_before = theirs.to_ical()
    ours = render(ANNA, record(start=datetime(2027, 3, 30, 14)), sequence=2)
    ours_before = ours.to_ical()

    merged = merge_member_copy(ours, theirs)

    event = vevent(merged)
    assert event.decoded("DTSTART") == vevent(ours).decoded("DTSTART")
    assert str(event["SUMMARY"]) == "[Ledig] Indkøb"
    assert attendee_partstat(merged) == "NEEDS-ACTION"
    triggers = sorted(a.decoded("TRIGGER") for a in event.walk("VALARM"))
    assert triggers == [timedelta(minutes=-120), timedelta(minutes=-30)]
    assert fingerprint(merged) == fingerprint(ours)
    assert (ours.to_ical(), theirs.to_ical()) == (ours_before, theirs_before)
    # merging again with the merged copy does not duplicate the alarms
    again = merge_member_copy(ours, merged)
    assert len(vevent(again).walk("VALARM")) == 2
    # ours as its body (as the planner has it): the same result
    assert merge_member_copy(ours_before, theirs).to_ical() == merged.to_ical()


def test_merge_ignores_alarms_of_another_event() -> None:
    theirs = Calendar.from_ical(render(ANNA).to_ical())
    vevent(theirs).pop("UID")
    vevent(theirs).add("uid", "other@x")
    vevent(theirs).add_component(member_alarm(10))
    merged = merge_member_copy(render(ANNA), theirs)
    assert vevent(merged).walk("VALARM") == []
    assert len(prop_values(vevent(merged), "ATTENDEE")) == 1


def test_merge_takes_the_alarms_of_a_named_event_for_a_moved_occurrence() -> None:
    theirs = Calendar.from_ical(render(ANNA).to_ical())
    vevent(theirs).pop("UID")
    vevent(theirs).add("uid", "t-1_20270330T0800@aarhus.dk")  # before the move
    vevent(theirs).add_component(member_alarm(10))
    merged = merge_member_copy(render(ANNA), theirs, their_uid="t-1_20270330T0800@aarhus.dk")
    assert [a.decoded("TRIGGER") for a in vevent(merged).walk("VALARM")] == [timedelta(minutes=-10)]
    assert str(vevent(merged)["UID"]) == UID
