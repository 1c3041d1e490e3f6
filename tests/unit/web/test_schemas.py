import copy
import json
import time as clock
from datetime import date, datetime, time
from typing import Any

import pytest

from plugin.domain.model import (
    AvailabilityWindow,
    Capacity,
    ExternalCalendar,
    Member,
)
from plugin.web.schemas import (
    CircleUpdated,
    InvalidEvent,
    MalformedEvent,
    ReliefDecided,
    TaskCancelled,
    TaskUpserted,
    VisitAssigned,
    parse_event,
    validate_recurrence,
)

# The examples of DESIGN.md "Payloads (v1)", verbatim.
CIRCLE: dict[str, Any] = {
    "type": "circle.updated",
    "data": {
        "version": 3,
        "citizen": {
            "id": "c-123",
            "display_name": "Fru Jensen",
            "timezone": "Europe/Copenhagen",
            "locale": "da",
        },
        "members": [
            {
                "id": "m-anna",
                "name": "Anna",
                "email": "anna@example.org",
                "role": "relative",
                "visibility": "full",
                "locale": "da",
                "calendar": "hosted",
                "capacity": {"hours_per_week": 4, "tasks_per_week": 3},
                "availability": [{"weekday": 1, "start": "16:00", "end": "20:00"}],
                "paused_until": None,
            },
            {
                "id": "m-sara",
                "name": "Sara",
                "email": "sara@kommune.example",
                "role": "staff",
                "visibility": "full",
                "locale": "da",
                "calendar": "hosted",
            },
        ],
    },
}
TASK: dict[str, Any] = {
    "type": "task.upserted",
    "data": {
        "id": "t-1",
        "citizen_id": "c-123",
        "version": 1,
        "kind": "task",
        "category": "shopping",
        "details": "Netto; the list is on the fridge",
        "location": None,
        "start": "2027-03-23T10:00:00",
        "end": "2027-03-23T11:00:00",
        "timezone": "Europe/Copenhagen",
        "people_needed": 1,
        "recurrence": "FREQ=WEEKLY;COUNT=4",
        "claim_deadline_hours": 24,
    },
}
CANCELLED: dict[str, Any] = {
    "type": "task.cancelled",
    "data": {"id": "t-1", "citizen_id": "c-123", "version": 2},
}
VISIT_DATA: dict[str, Any] = {
    "id": "v-9",
    "citizen_id": "c-123",
    "version": 1,
    "staff_member_id": "m-sara",
    "category": "visit",
    "start": "2027-03-24T09:00:00",
    "end": "2027-03-24T09:30:00",
    "timezone": "Europe/Copenhagen",
}
VISIT: dict[str, Any] = {"type": "visit.assigned", "data": VISIT_DATA}
RELIEF: dict[str, Any] = {
    "type": "relief.decided",
    "data": {
        "request_id": "r-4",
        "citizen_id": "c-123",
        "version": 1,
        "status": "approved",
        "visits": [VISIT_DATA],
    },
}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def changed(event: dict[str, Any], path: str, value: Any) -> bytes:
    """`event` with the value at a dotted path replaced (or removed, for `...`)."""
    event = copy.deepcopy(event)
    *parents, last = path.split(".")
    node: Any = event
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return encode(event)


def errors_of(raw: bytes) -> list[dict[str, Any]]:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return [dict(error) for error in info.value.errors]


def locs_of(raw: bytes) -> list[list[str | int]]:
    return [error["loc"] for error in errors_of(raw)]


# --- the DESIGN.md examples ----------------------------------------------------------------


def test_circle_example_converts_to_the_domain() -> None:
    event = parse_event(encode(CIRCLE))
    assert isinstance(event, CircleUpdated)
    circle = event.data.to_circle("demo")
    assert circle.version == 3
    assert circle.citizen.tenant_id == "demo"
    assert circle.citizen.display_name == "Fru Jensen"
    anna = circle.member("m-anna")
    assert anna == Member(
        id="m-anna",
        name="Anna",
        role="relative",
        visibility="full",
        locale="da",
        email="anna@example.org",
        calendar="hosted",
        capacity=Capacity(hours_per_week=4.0, tasks_per_week=3),
        availability=(AvailabilityWindow(1, time(16, 0), time(20, 0)),),
        paused_until=None,
    )
    # Sara's optional fields take the domain's defaults.
    sara = circle.member("m-sara")
    assert sara is not None and sara.capacity == Capacity() and sara.availability == ()


def test_task_example_converts_to_the_domain() -> None:
    event = parse_event(encode(TASK))
    assert isinstance(event, TaskUpserted)
    task = event.data.to_task("demo")
    assert (task.tenant_id, task.id, task.version, task.kind) == ("demo", "t-1", 1, "task")
    assert task.start == datetime(2027, 3, 23, 10) and task.start.tzinfo is None
    assert task.end == datetime(2027, 3, 23, 11)
    assert task.recurrence == "FREQ=WEEKLY;COUNT=4"
    assert task.claim_deadline_hours == 24
    assert task.location is None and task.details == "Netto; the list is on the fridge"


def test_cancelled_example() -> None:
    event = parse_event(encode(CANCELLED))
    assert isinstance(event, TaskCancelled)
    assert (event.data.id, event.data.citizen_id, event.data.version) == ("t-1", "c-123", 2)


def test_visit_example_becomes_an_assigned_visit_task() -> None:
    event = parse_event(encode(VISIT))
    assert isinstance(event, VisitAssigned)
    task = event.data.to_task("demo")
    assert task.kind == "visit" and task.people_needed == 1
    assert task.assigned_member_id == "m-sara"
    assert task.start == datetime(2027, 3, 24, 9)


def test_relief_example_carries_its_visits() -> None:
    event = parse_event(encode(RELIEF))
    assert isinstance(event, ReliefDecided)
    (task,) = event.data.to_tasks("demo")
    assert task.id == "v-9" and task.assigned_member_id == "m-sara"


def test_minimal_task_takes_defaults() -> None:
    data = {
        key: TASK["data"][key]
        for key in ("id", "citizen_id", "version", "kind", "category", "start", "end", "timezone")
    }
    event = parse_event(encode({"type": "task.upserted", "data": data}))
    assert isinstance(event, TaskUpserted)
    task = event.data.to_task("demo")
    assert task.people_needed == 1 and task.recurrence is None and task.exdates == ()


def test_exdates_and_rdates_extension() -> None:
    raw = changed(TASK, "data.exdates", ["2027-03-30T10:00:00"])
    event = parse_event(raw)
    assert isinstance(event, TaskUpserted)
    assert event.data.to_task("demo").exdates == (datetime(2027, 3, 30, 10),)
    assert locs_of(changed(TASK, "data.rdates", ["2027-03-30T10:00:00Z"])) == [
        ["data", "rdates", 0]
    ]


def test_external_calendar_member() -> None:
    member = {
        "id": "m-ole",
        "name": "Ole",
        "role": "network",
        "visibility": "limited",
        "calendar": "external",
        "external": {"url": "https://dav.example.org/ole/", "username": "ole", "password": "pw"},
    }
    event = parse_event(changed(CIRCLE, "data.members", [member]))
    assert isinstance(event, CircleUpdated)
    (ole,) = event.data.to_circle("demo").members
    assert ole.external == ExternalCalendar("https://dav.example.org/ole/", "ole", "pw")
    assert ole.locale == "da" and ole.email is None


# --- malformed versus invalid --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"type": "task.cancelled",}', b"[" * 5000]
)
def test_non_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"circle.updated"', b"{}"])
def test_json_that_is_not_an_event_is_invalid(raw: bytes) -> None:
    assert errors_of(raw)


def test_unknown_event_type_names_the_known_ones_without_echoing_the_input() -> None:
    (error,) = errors_of(changed(CANCELLED, "type", "citizen.deleted-Fru-Jensen"))
    assert error["loc"] == []
    assert "task.upserted" in error["msg"] and "Fru-Jensen" not in error["msg"]


def test_errors_never_echo_input_values() -> None:
    secret_looking = "CPR 010203-1234"
    raw = encode(
        {
            "type": "circle.updated",
            "data": {
                "version": secret_looking,
                "citizen": {"id": secret_looking, "display_name": "x\x00" + secret_looking},
                "members": [
                    {
                        "id": "m-1",
                        "name": "Ole",
                        "role": secret_looking,
                        "visibility": "full",
                        "email": secret_looking,
                        "calendar": "external",
                        "external": {"url": secret_looking, "username": "u", "password": 5},
                    }
                ],
                "note": secret_looking,
            },
        }
    )
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert len(info.value.errors) >= 7
    for error in info.value.errors:
        assert set(error) == {"loc", "msg"}
    assert "010203" not in json.dumps(info.value.errors)
    # Nor in the chained pydantic error that ends up in tracebacks and logs.
    assert "010203" not in str(info.value.__cause__)
    assert "010203" not in str(info.value)


def test_error_locations_are_paths_into_the_body() -> None:
    raw = changed(CIRCLE, "data.members.0.availability.0.weekday", 8)
    assert locs_of(raw) == [["data", "members", 0, "availability", 0, "weekday"]]


def test_error_count_is_bounded() -> None:
    members = [{"id": f"m-{n}"} for n in range(100)]
    assert len(errors_of(changed(CIRCLE, "data.members", members))) == 50


# --- strictness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "path", "value", "loc"),
    [
        (CANCELLED, "extra", 1, ["extra"]),
        (CANCELLED, "data.extra", 1, ["data", "extra"]),
        (CIRCLE, "data.citizen.extra", 1, ["data", "citizen", "extra"]),
        (CIRCLE, "data.members.0.capacity.extra", 1, ["data", "members", 0, "capacity", "extra"]),
        (VISIT, "data.details", "x", ["data", "details"]),
        (CANCELLED, "data", ..., ["data"]),
        (CANCELLED, "data.version", ..., ["data", "version"]),
        (CANCELLED, "data.version", "2", ["data", "version"]),
        (CANCELLED, "data.version", 2.0, ["data", "version"]),
        (CANCELLED, "data.version", True, ["data", "version"]),
        (CANCELLED, "data.version", -1, ["data", "version"]),
        (CANCELLED, "data.version", 2**63, ["data", "version"]),
        (CANCELLED, "data.id", "", ["data", "id"]),
        (CANCELLED, "data.id", "t 1", ["data", "id"]),
        (CANCELLED, "data.id", "t-1\n", ["data", "id"]),
        (CANCELLED, "data.id", "t/1", ["data", "id"]),
        (CANCELLED, "data.id", "t" * 129, ["data", "id"]),
        (CANCELLED, "data.citizen_id", "c-ø", ["data", "citizen_id"]),
        # Ids name collections: "." and ".." would be the member's home or its parent.
        (CIRCLE, "data.citizen.id", ".", ["data", "citizen", "id"]),
        (CIRCLE, "data.citizen.id", "..", ["data", "citizen", "id"]),
        (CIRCLE, "data.citizen.id", ".c-1", ["data", "citizen", "id"]),
        (CIRCLE, "data.members.0.id", "..", ["data", "members", 0, "id"]),
        (TASK, "data.citizen_id", "..", ["data", "citizen_id"]),
        (TASK, "data.category", "diagnosis", ["data", "category"]),
        (TASK, "data.kind", "meeting", ["data", "kind"]),
        (TASK, "data.kind", ..., ["data", "kind"]),
        (TASK, "data.people_needed", 0, ["data", "people_needed"]),
        (TASK, "data.people_needed", 51, ["data", "people_needed"]),
        (TASK, "data.details", "x" * 2001, ["data", "details"]),
        (TASK, "data.details", "bell\x07", ["data", "details"]),
        (TASK, "data.location", "line\nbreak", ["data", "location"]),
        (TASK, "data.timezone", "Europe/Aarhus", ["data", "timezone"]),
        (TASK, "data.timezone", "localtime", ["data", "timezone"]),
        (TASK, "data.timezone", "../../etc/passwd", ["data", "timezone"]),
        (TASK, "data.timezone", "+01:00", ["data", "timezone"]),
        (TASK, "data.claim_deadline_hours", -1, ["data", "claim_deadline_hours"]),
        (TASK, "data.start", "2027-03-23T10:00:00+01:00", ["data", "start"]),
        (TASK, "data.start", "2027-03-23T10:00:00Z", ["data", "start"]),
        (TASK, "data.start", 1806000000, ["data", "start"]),
        (TASK, "data.end", "2027-03-23T10:00:00", ["data"]),
        (TASK, "data.end", "2027-03-23T09:00:00", ["data"]),
        (TASK, "data.exdates", ["2027-03-30T10:00:00"] * 501, ["data", "exdates"]),
        (VISIT, "data.end", "2027-03-24T08:00:00", ["data"]),
        (VISIT, "data.staff_member_id", ..., ["data", "staff_member_id"]),
        (CIRCLE, "data.citizen.display_name", "", ["data", "citizen", "display_name"]),
        (CIRCLE, "data.citizen.display_name", "x" * 201, ["data", "citizen", "display_name"]),
        (CIRCLE, "data.citizen.locale", "Danish", ["data", "citizen", "locale"]),
        (CIRCLE, "data.citizen.locale", "abc-abcd-abcdefgh", ["data", "citizen", "locale"]),
        (CIRCLE, "data.members.0.role", "friend", ["data", "members", 0, "role"]),
        (CIRCLE, "data.members.0.visibility", "all", ["data", "members", 0, "visibility"]),
        (CIRCLE, "data.members.0.calendar", "google", ["data", "members", 0, "calendar"]),
        (CIRCLE, "data.members.0.calendar", "external", ["data", "members", 0]),
        (CIRCLE, "data.members.0.email", "anna", ["data", "members", 0, "email"]),
        # (PostgreSQL cannot store a NUL: the event, accepted, would fail to apply)
        (CIRCLE, "data.members.0.email", "an\x00na@example.org", ["data", "members", 0, "email"]),
        (CIRCLE, "data.members.0.email", "an\x1bna@example.org", ["data", "members", 0, "email"]),
        (CIRCLE, "data.members.0.paused_until", "soon", ["data", "members", 0, "paused_until"]),
        (
            CIRCLE,
            "data.members.0.capacity.hours_per_week",
            169,
            ["data", "members", 0, "capacity", "hours_per_week"],
        ),
        (
            CIRCLE,
            "data.members.0.capacity.tasks_per_week",
            1.5,
            ["data", "members", 0, "capacity", "tasks_per_week"],
        ),
        (RELIEF, "data.status", "maybe", ["data", "status"]),
        (RELIEF, "data.status", "rejected", ["data"]),
        (RELIEF, "data.visits.0.citizen_id", "c-999", ["data"]),
        (RELIEF, "data.visits.0.extra", 1, ["data", "visits", 0, "extra"]),
    ],
)
def test_invalid_fields_are_reported_where_they_are(
    event: dict[str, Any], path: str, value: Any, loc: list[str | int]
) -> None:
    assert loc in locs_of(changed(event, path, value))


def test_offset_datetimes_get_a_message_that_says_what_to_send() -> None:
    (error,) = errors_of(changed(TASK, "data.start", "2027-03-23T10:00:00+01:00"))
    assert "without an offset" in error["msg"] and "timezone" in error["msg"]


def test_nan_capacity_is_refused() -> None:
    raw = encode(CIRCLE).replace(b'"hours_per_week": 4', b'"hours_per_week": NaN')
    assert ["data", "members", 0, "capacity", "hours_per_week"] in locs_of(raw)


def test_optional_fields_accept_null() -> None:
    event = parse_event(changed(CIRCLE, "data.members.0.capacity", None))
    assert isinstance(event, CircleUpdated)
    assert event.data.to_circle("demo").members[0].capacity == Capacity()
    raw = changed(CIRCLE, "data.members.0.paused_until", "2027-04-01")
    event = parse_event(raw)
    assert isinstance(event, CircleUpdated)
    assert event.data.to_circle("demo").members[0].paused_until == date(2027, 4, 1)


def test_external_credentials_only_with_an_external_calendar() -> None:
    external = {"url": "https://dav.example.org/", "username": "u", "password": "p"}
    (error,) = errors_of(changed(CIRCLE, "data.members.1.external", external))
    assert error["loc"] == ["data", "members", 1]
    too_long = "https://dav.example.org/" + "a" * 677  # 701 characters: its paths would not fit
    for url in [
        "file:///etc/passwd",
        "https://dav.example.org/cal/../",
        "https://x.example/%2e/",
        "https://cal.example.org/dav/a\x00b/",
        "https://cal.example.org/dav/a\nb/",
        too_long,
    ]:
        bad_url = dict(external, url=url)
        member = dict(CIRCLE["data"]["members"][1], calendar="external", external=bad_url)
        assert ["data", "members", 0, "external", "url"] in locs_of(
            changed(CIRCLE, "data.members", [member])
        )


def test_member_ids_are_unique_within_a_circle() -> None:
    members = [CIRCLE["data"]["members"][0]] * 2
    (error,) = errors_of(changed(CIRCLE, "data.members", members))
    assert error["loc"] == ["data"] and "unique" in error["msg"]


@pytest.mark.parametrize("value", ["c.1", "c-1.", "kommune:123.4", "_x", "1"])
def test_ids_may_hold_dots_after_their_first_character(value: str) -> None:
    event = parse_event(changed(CIRCLE, "data.citizen.id", value))
    assert isinstance(event, CircleUpdated) and event.data.citizen.id == value


def test_an_empty_circle_is_valid() -> None:
    event = parse_event(changed(CIRCLE, "data.members", []))
    assert isinstance(event, CircleUpdated)
    assert event.data.to_circle("demo").members == ()


@pytest.mark.parametrize(
    "window",
    [
        {"weekday": 0, "start": "16:00", "end": "20:00"},
        {"weekday": 1, "start": "16:00", "end": "16:00"},
        {"weekday": 1, "start": "20:00", "end": "16:00"},
        {"weekday": 1, "start": "4pm", "end": "20:00"},
        {"weekday": 1, "start": "16:00:00", "end": "20:00"},
        {"weekday": 1, "start": "24:00", "end": "20:00"},
        {"weekday": 1, "start": "9:00", "end": "20:00"},
        {"weekday": 1, "start": 960, "end": "20:00"},
        {"weekday": 1, "start": "16:00"},
    ],
)
def test_invalid_availability_windows(window: dict[str, Any]) -> None:
    assert errors_of(changed(CIRCLE, "data.members.0.availability", [window]))


def test_a_rejected_relief_without_visits_is_valid() -> None:
    raw = encode(
        {"type": "relief.decided", "data": dict(RELIEF["data"], status="rejected", visits=[])}
    )
    event = parse_event(raw)
    assert isinstance(event, ReliefDecided) and event.data.to_tasks("demo") == ()


# --- recurrence ----------------------------------------------------------------------------

START = datetime(2027, 3, 23, 10)


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=WEEKLY;COUNT=4",
        "FREQ=DAILY",
        "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;UNTIL=20270601T000000",
        "FREQ=WEEKLY;UNTIL=20270601T080000Z",
        "FREQ=WEEKLY;UNTIL=20270601",
        "FREQ=MONTHLY;BYDAY=1MO",
        "FREQ=MONTHLY;BYDAY=-1FR",
        "FREQ=MONTHLY;BYMONTHDAY=15",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
        "FREQ=MONTHLY;BYMONTHDAY=13;BYDAY=FR",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=YEARLY;BYMONTH=12;BYDAY=-1SU",
        "freq=weekly;wkst=mo",
    ],
)
def test_accepted_recurrences(rule: str) -> None:
    assert validate_recurrence(rule, START, "Europe/Copenhagen") == rule


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("FREQ=HOURLY", "FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"),
        ("FREQ=SECONDLY", "FREQ must be one of"),
        ("COUNT=4", "FREQ must be one of"),
        ("RRULE:FREQ=WEEKLY", "without the 'RRULE:' prefix"),
        ("FREQ=WEEKLY;", "NAME=VALUE"),
        ("FREQ=WEEKLY;COUNT", "NAME=VALUE"),
        ("FREQ=WEEKLY;FREQ=DAILY", "twice"),
        ("FREQ=WEEKLY;DTSTART=20270101T000000", "not supported"),
        ("FREQ=WEEKLY;BYSETPOS=2;BYDAY=MO", "not supported"),
        ("FREQ=YEARLY;BYEASTER=0", "not supported"),
        ("FREQ=WEEKLY;COUNT=4;UNTIL=20270601", "COUNT or UNTIL"),
        ("FREQ=WEEKLY;COUNT=0", "within 1..9999"),
        ("FREQ=WEEKLY;COUNT=four", "list of numbers"),
        ("FREQ=WEEKLY;INTERVAL=0", "within 1..999"),
        ("FREQ=WEEKLY;UNTIL=next week", "UNTIL must look like"),
        ("FREQ=WEEKLY;UNTIL=20270101", "no occurrence"),
        ("FREQ=WEEKLY;BYDAY=XX", "BYDAY must be"),
        ("FREQ=WEEKLY;BYDAY=1MO", "needs FREQ=MONTHLY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "needs FREQ=MONTHLY (1..5)"),
        ("FREQ=YEARLY;BYDAY=60MO", "needs FREQ=MONTHLY"),
        ("FREQ=MONTHLY;BYDAY=1MO;BYMONTHDAY=29", "no BYMONTHDAY"),
        ("FREQ=DAILY;INTERVAL=7;BYDAY=TU", "INTERVAL not divisible by 7"),
        ("FREQ=MONTHLY;BYMONTH=13", "within 1..12"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "within 1..31"),
        ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "never occurs"),
        ("FREQ=MONTHLY;BYMONTH=4,6;BYMONTHDAY=-31", "never occurs"),
        ("FREQ=WEEKLY;WKST=XX", "WKST"),
    ],
)
def test_refused_recurrences(rule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_recurrence(rule, START, "Europe/Copenhagen")


def test_refusing_an_impossible_rule_is_fast() -> None:
    # dateutil alone takes seconds to learn that these never occur.
    began = clock.perf_counter()
    for rule in ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "FREQ=DAILY;INTERVAL=7;BYDAY=TU"):
        with pytest.raises(ValueError):
            validate_recurrence(rule, START, "Europe/Copenhagen")
    assert clock.perf_counter() - began < 0.5


def test_recurrence_errors_surface_at_the_recurrence_owner() -> None:
    (error,) = errors_of(changed(TASK, "data.recurrence", "FREQ=HOURLY"))
    assert error["loc"] == ["data"]
    assert "FREQ must be one of" in error["msg"]


# --- commands for the services -------------------------------------------------------------


def test_each_event_becomes_its_service_command() -> None:
    from plugin.services.commands import (
        AssignVisit,
        CancelTask,
        DecideRelief,
        UpdateCircle,
        UpsertTask,
    )

    circle = parse_event(encode(CIRCLE)).to_command("demo")
    assert isinstance(circle, UpdateCircle) and circle.circle.citizen.tenant_id == "demo"
    task = parse_event(encode(TASK)).to_command("demo")
    assert isinstance(task, UpsertTask) and task.task.id == "t-1"
    assert parse_event(encode(CANCELLED)).to_command("demo") == CancelTask("t-1", "c-123", 2)
    visit = parse_event(encode(VISIT)).to_command("demo")
    assert isinstance(visit, AssignVisit) and visit.task.assigned_member_id == "m-sara"
    relief = parse_event(encode(RELIEF)).to_command("demo")
    assert isinstance(relief, DecideRelief)
    assert (relief.request_id, relief.status, len(relief.visits)) == ("r-4", "approved", 1)


def test_malformed_events_carry_one_error_too() -> None:
    with pytest.raises(MalformedEvent) as info:
        parse_event(b"{")
    assert info.value.errors == [{"loc": [], "msg": str(info.value)}]
