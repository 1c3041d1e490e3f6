from dataclasses import replace
from datetime import UTC, datetime

import pytest
from icalendar import Calendar

from plugin.domain.model import TaskStatus
from plugin.sync.fingerprint import fingerprint, prop_values
from plugin.sync.render import (
    Relation,
    attendee_address,
    event_uid,
    relation_of,
    render_bytes,
    render_event,
)
from tests.unit.sync.support import (
    ANNA,
    BO,
    CY,
    DETAILS,
    LINK,
    LOCATION,
    MEMBERS,
    NOMAIL,
    SARA,
    attendee_partstat,
    record,
    render,
    render_input,
    task,
    vevent,
)

DA = ANNA
EN = replace(ANNA, locale="en")

# (case, record() arguments, SUMMARY in da and en, STATUS, TRANSP, PARTSTAT)
STATES = [
    ("open", {}, ("[Ledig] Indkøb", "[Open] Shopping"), "TENTATIVE", "TRANSPARENT", "NEEDS-ACTION"),
    (
        "mine",
        {"holders": ("m-anna",)},
        ("[Dig] Indkøb", "[You] Shopping"),
        "CONFIRMED",
        "OPAQUE",
        "ACCEPTED",
    ),
    (
        "taken",
        {"holders": ("m-cy",)},
        ("[Cy] Indkøb", "[Cy] Shopping"),
        "CONFIRMED",
        "TRANSPARENT",
        "NEEDS-ACTION",
    ),
    (
        "cancelled",
        {"cancelled": True},
        ("[Aflyst] Indkøb", "[Cancelled] Shopping"),
        "CANCELLED",
        "TRANSPARENT",
        "NEEDS-ACTION",
    ),
    (
        "passed",
        {"passers": ("m-anna",)},
        ("[Ledig] Indkøb", "[Open] Shopping"),
        "TENTATIVE",
        "TRANSPARENT",
        "DECLINED",
    ),
    (
        "partial",
        {"holders": ("m-cy",), "people_needed": 2},
        ("[Ledig] Indkøb", "[Open] Shopping"),
        "TENTATIVE",
        "TRANSPARENT",
        "NEEDS-ACTION",
    ),
    (
        "mine-partial",
        {"holders": ("m-anna",), "people_needed": 2},
        ("[Dig] Indkøb", "[You] Shopping"),
        "CONFIRMED",
        "OPAQUE",
        "ACCEPTED",
    ),
    (
        "two-others",
        {"holders": ("m-cy", "m-bo"), "people_needed": 2},
        ("[Cy, Bo] Indkøb", "[Cy, Bo] Shopping"),
        "CONFIRMED",
        "TRANSPARENT",
        "NEEDS-ACTION",
    ),
    (
        "three-others",
        {"holders": ("m-cy", "m-bo", "m-sara"), "people_needed": 3},
        ("[Cy, Bo +1] Indkøb", "[Cy, Bo +1] Shopping"),
        "CONFIRMED",
        "TRANSPARENT",
        "NEEDS-ACTION",
    ),
]


@pytest.mark.parametrize("locale", ["da", "en"])
@pytest.mark.parametrize(
    ("case", "kwargs", "summaries", "status", "transp", "partstat"),
    STATES,
    ids=[s[0] for s in STATES],
)
def test_each_state_renders_per_the_design_table(
    locale: str,
    case: str,
    kwargs: dict[str, object],
    summaries: tuple[str, str],
    status: str,
    transp: str,
    partstat: str,
) -> None:
    member = DA if locale == "da" else EN
    event = vevent(render(member, record(**kwargs)))  # type: ignore[arg-type]
    assert str(event["SUMMARY"]) == summaries[0 if locale == "da" else 1], case
    assert str(event["STATUS"]) == status
    assert str(event["TRANSP"]) == transp
    assert attendee_partstat(render(member, record(**kwargs))) == partstat  # type: ignore[arg-type]


def test_the_fixed_fields() -> None:
    calendar = render(ANNA, record(holders=("m-anna",)), sequence=7)
    event = vevent(calendar)
    assert str(event["UID"]) == "t-1_20270330T1000@aarhus.dk"
    assert event.decoded("SEQUENCE") == 7
    assert str(event["URL"]) == LINK
    assert str(event["X-CARECAL-TASK"]) == "t-1"
    assert str(event["X-CARECAL-STATE"]) == "filled"
    assert "RRULE" not in event
    organizer = event["ORGANIZER"]
    assert str(organizer) == "mailto:noreply@aarhus.dk"
    assert organizer.params["CN"] == "carecal"
    (attendee,) = prop_values(event, "ATTENDEE")
    assert str(attendee) == "mailto:anna@example.org"
    assert attendee.params["CN"] == "Anna"
    assert attendee.params["RSVP"] == "TRUE"
    assert attendee.params["SCHEDULE-AGENT"] == "CLIENT"
    assert str(calendar["VERSION"]) == "2.0"


def test_the_uid_is_the_same_for_every_member() -> None:
    uids = {str(vevent(render(m))["UID"]) for m in MEMBERS}
    assert uids == {event_uid("t-1_20270330T1000", "aarhus.dk")}


def test_suggested_offer() -> None:
    assert str(vevent(render(ANNA, suggested=True))["SUMMARY"]) == "[Forslag] Indkøb"
    # a suggestion never hides that the member already holds it
    mine = render(ANNA, record(holders=("m-anna",)), suggested=True)
    assert str(vevent(mine)["SUMMARY"]) == "[Dig] Indkøb"


def test_an_unnamed_holder_and_an_unassigned_visit() -> None:
    unnamed = render(ANNA, record(holders=("m-gone",)), holder_names={})
    assert str(vevent(unnamed)["SUMMARY"]) == "[en anden] Indkøb"
    visit = task(kind="visit", category="visit", assigned_member_id=None)
    assert str(vevent(render(ANNA, the_task=visit))["SUMMARY"]) == "[Ikke tildelt] Besøg"


def test_an_assigned_visit_is_the_staff_members_and_shown_to_others_by_name() -> None:
    visit = task(kind="visit", category="visit", assigned_member_id="m-sara")
    assert relation_of(render_input(SARA, the_task=visit)) is Relation.HOLDS
    sara = vevent(render(SARA, the_task=visit))
    assert (str(sara["SUMMARY"]), str(sara["TRANSP"])) == ("[Dig] Besøg", "OPAQUE")
    anna = vevent(render(ANNA, the_task=visit))
    assert (str(anna["SUMMARY"]), str(anna["STATUS"])) == ("[Sara] Besøg", "CONFIRMED")


def test_a_cancelled_task_cancels_its_occurrences_and_a_holder_keeps_accepted() -> None:
    calendar = render(ANNA, record(holders=("m-anna",)), the_task=task(status=TaskStatus.CANCELLED))
    event = vevent(calendar)
    assert str(event["STATUS"]) == "CANCELLED"
    assert str(event["TRANSP"]) == "TRANSPARENT"
    assert attendee_partstat(calendar) == "ACCEPTED"  # claims survive a cancellation


def test_host_names_cannot_break_the_title() -> None:
    names = {"m-cy": "Cy [admin]\nX-EVIL:1"}
    event = vevent(render(ANNA, record(holders=("m-cy",)), holder_names=names))
    assert str(event["SUMMARY"]) == "[Cy (admin) X-EVIL:1] Indkøb"
    assert "X-EVIL" not in event


def test_dst_an_event_after_the_spring_switch() -> None:
    body = render_bytes(render_input(ANNA, record(start=datetime(2027, 3, 30, 10))))
    assert b"DTSTART;TZID=Europe/Copenhagen:20270330T100000" in body
    assert b"DTEND;TZID=Europe/Copenhagen:20270330T110000" in body
    calendar = Calendar.from_ical(body)
    (zone,) = calendar.walk("VTIMEZONE")
    assert str(zone["TZID"]) == "Europe/Copenhagen"
    assert {c.name for c in zone.subcomponents} == {"STANDARD", "DAYLIGHT"}
    event = vevent(calendar)
    assert event.decoded("DTSTART").astimezone(UTC) == datetime(2027, 3, 30, 8, tzinfo=UTC)


def test_dst_a_winter_event_keeps_its_wall_clock() -> None:
    calendar = render(ANNA, record(start=datetime(2027, 1, 12, 10)))
    event = vevent(calendar)
    assert event.decoded("DTSTART").astimezone(UTC) == datetime(2027, 1, 12, 9, tzinfo=UTC)
    assert event["DTSTART"].params["TZID"] == "Europe/Copenhagen"


def test_details_only_at_full_visibility() -> None:
    full = str(vevent(render(ANNA))["DESCRIPTION"])
    assert DETAILS in full and LOCATION in full and LINK in full
    limited_body = render_bytes(render_input(BO, claim_link="https://x/c/tok-bo"))
    limited = str(vevent(Calendar.from_ical(limited_body))["DESCRIPTION"])
    assert limited == "See the task: https://x/c/tok-bo"
    assert b"Netto" not in limited_body and b"fridge" not in limited_body


def test_the_links_line_is_true_whatever_its_page_offers() -> None:
    """An open task, one's own, one taken by others: one line, which never makes a change
    material (a copy the member deleted is re-created only when the task changes)."""
    for member, line in ((ANNA, "Se opgaven"), (BO, "See the task")):
        for holders in ((), (member.id,), ("m-cy", "m-sara")):
            description = str(vevent(render(member, record(holders=holders)))["DESCRIPTION"])
            assert description.splitlines()[-1].startswith(f"{line}: "), description


def test_no_other_members_contact_data_in_any_view() -> None:
    occurrence = record(holders=("m-bo", "m-cy"), people_needed=3, passers=("m-sara",))
    for member in MEMBERS:
        body = render_bytes(render_input(member, occurrence)).decode()
        for other in MEMBERS:
            if other is not member and other.email:
                assert other.email not in body, (member.id, other.id)
        assert body.count("ATTENDEE") == 1


def test_a_member_without_email_gets_an_opaque_stable_urn() -> None:
    address = attendee_address(NOMAIL, "aarhus.dk")
    assert address.startswith("urn:uuid:")
    assert NOMAIL.id not in address
    assert address == attendee_address(NOMAIL, "aarhus.dk")
    assert address != attendee_address(NOMAIL, "odense.dk")
    (attendee,) = prop_values(vevent(render(NOMAIL)), "ATTENDEE")
    assert str(attendee) == address


def test_round_trip_through_the_parser() -> None:
    for member in MEMBERS:
        calendar = render_event(render_input(member, record(holders=("m-cy",), people_needed=2)))
        parsed = Calendar.from_ical(calendar.to_ical())
        assert parsed.to_ical() == calendar.to_ical()
        assert fingerprint(parsed) == fingerprint(calendar)
        assert vevent(parsed).decoded("DESCRIPTION") == vevent(calendar).decoded("DESCRIPTION")


def test_cy_and_bo_see_different_locales_of_the_same_occurrence() -> None:
    occurrence = record(holders=("m-anna",))
    assert str(vevent(render(CY, occurrence))["SUMMARY"]) == "[Anna] Indkøb"
    assert str(vevent(render(BO, occurrence))["SUMMARY"]) == "[Anna] Shopping"
