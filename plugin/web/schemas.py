"""Host → plugin webhook payloads (DESIGN.md "Payloads (v1)"), validated at the edge.

Every event is an envelope ``{"type": ..., "data": {...}}``; `type` picks the data model:

    circle.updated   CircleUpdatedData   → Circle          (to_circle)
    task.upserted    TaskUpsertedData    → Task            (to_task)
    task.cancelled   TaskCancelledData   (ids and version only; the service cancels the stored task)
    visit.assigned   VisitAssignedData   → Task, kind visit (to_task)
    relief.decided   ReliefDecidedData   → Tasks for its visits (to_tasks)

The models are strict: JSON types are not coerced ("3" is not a version), unknown fields are
refused at every level (a v1 contract that silently drops a field the host thinks it sent is
worse than a 422), and optional fields are exactly the ones DESIGN.md shows as optional or that
the domain gives a default. Error reports never contain input values (they may be personal
data): `hide_input_in_errors` keeps them out of `str(ValidationError)` and logs, and
`InvalidEvent.errors` carries only a location and a message.

Errors:

    EventError             the body is not an acceptable event; `.errors` says where and why
     ├── MalformedEvent    not JSON at all                               (HTTP 400)
     └── InvalidEvent      JSON that does not fit the schema             (HTTP 422)

Each envelope also has `to_command(tenant_id)`, the `plugin.services.commands` value the
services act on.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from functools import cache
from typing import Annotated, Any, Literal, TypedDict
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, available_timezones

from dateutil.rrule import rrulestr
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from starlette.convertors import Convertor, register_url_convertor

from plugin.domain.model import (
    CATEGORIES,
    AvailabilityWindow,
    Capacity,
    Circle,
    Citizen,
    Delivery,
    ExternalCalendar,
    Member,
    Role,
    Task,
    TaskKind,
    Visibility,
)
from plugin.services.commands import (
    AssignVisit,
    CancelTask,
    DecideRelief,
    HostCommand,
    UpdateCircle,
    UpsertTask,
)

__all__ = [
    "CircleUpdated",
    "CircleUpdatedData",
    "EventError",
    "FieldError",
    "HostEvent",
    "InvalidEvent",
    "MalformedEvent",
    "ReliefDecided",
    "ReliefDecidedData",
    "TaskCancelled",
    "TaskCancelledData",
    "TaskUpserted",
    "TaskUpsertedData",
    "VisitAssigned",
    "VisitAssignedData",
    "parse_event",
    "validate_recurrence",
]

# --- errors -------------------------------------------------------------------------------


class FieldError(TypedDict):
    loc: list[str | int]
    msg: str


class EventError(Exception):
    """The body is not an acceptable host event; `errors` says where, without echoing values."""

    def __init__(self, message: str, errors: list[FieldError]) -> None:
        super().__init__(message)
        self.errors = errors


class MalformedEvent(EventError):
    """The body is not JSON."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [{"loc": [], "msg": message}])


class InvalidEvent(EventError):
    """The body is JSON but not a valid event."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} validation error(s) in the event", errors)


# --- field types --------------------------------------------------------------------------


# A regex scan runs in C: this check sits on the webhook hot path, on every string.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _single_line(value: str) -> str:
    # Names and places end up in iCalendar properties and page titles; control characters
    # there are never legitimate and only make trouble for clients.
    if _CONTROL.search(value):
        raise ValueError("must be a single line without control characters")
    return value


def _text(value: str) -> str:
    if _CONTROL_BUT_NEWLINE_TAB.search(value):
        raise ValueError("must not contain control characters other than newline and tab")
    return value


def _category(value: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"must be one of: {', '.join(CATEGORIES)}")
    return value


@cache
def _zone_names() -> frozenset[str]:
    # The tz database's own list rather than "does ZoneInfo(value) open": that also accepts
    # relative file names. The system's zoneinfo folder may hold a `localtime` link to the
    # server's own zone, which is no IANA name and would make a task's meaning depend on the
    # machine. Cached on first use so that importing this module reads no files.
    return frozenset(available_timezones() - {"localtime"})


def _iana_zone(value: str) -> str:
    if value not in _zone_names():
        raise ValueError("must be an IANA time zone such as 'Europe/Copenhagen'")
    return value


def _naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise ValueError(
            "must be a local wall-clock time without an offset or 'Z' "
            "(e.g. '2027-03-23T10:00:00'); the zone goes in `timezone`"
        )
    return value


_HOUR_MINUTE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def _hour_minute(value: object) -> object:
    if not isinstance(value, str) or not (match := _HOUR_MINUTE.fullmatch(value)):
        raise ValueError("must be a time of day as 'HH:MM'")
    return time(int(match[1]), int(match[2]))


def _http_url(value: str) -> str:
    # Only the shape is checked here; whether the address may be private is the tenant's
    # `allow_private_calendar_urls` policy, applied where the URL is used.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        # Resolved by HTTP clients before they send: the URL would name another folder.
        raise ValueError("must not have '.' or '..' in its path")
    return value


# The host's ids. They name calendar collections and folders (`/dav/<tenant>~<member>/<citizen>/`),
# so none may start with a dot: "." and ".." would be the folder itself or its parent, and CalDAV
# servers keep names that start with a dot for themselves (Radicale refuses them).
HOST_ID_PATTERN = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$"
HOST_ID = re.compile(HOST_ID_PATTERN)
Id = Annotated[str, StringConstraints(pattern=HOST_ID_PATTERN)]


class PathIdConvertor(Convertor[str]):
    """`{name:id}` in a route: an id of the host's, or one carecal made of them (an occurrence
    id is `<task id>_<YYYYMMDDTHHMM>`). Anything else in the path (a NUL byte, which
    PostgreSQL cannot even compare) is no route: 404 before the store is asked."""

    name = "id"
    regex = "[A-Za-z0-9._:-]{1,255}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor(PathIdConvertor.name, PathIdConvertor())
# Stored as a 64-bit integer.
Version = Annotated[int, Field(ge=0, le=2**63 - 1)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_single_line)]
Details = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_text)]
Location = Annotated[str, StringConstraints(max_length=500), AfterValidator(_single_line)]
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(_single_line),
]
# BCP 47, as far as the tables hold it (`locale` columns: 16 characters).
Locale = Annotated[
    str, StringConstraints(max_length=16, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$")
]
TimeZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(_iana_zone)]
Category = Annotated[str, AfterValidator(_category)]
LocalDateTime = Annotated[datetime, AfterValidator(_naive)]
HourMinute = Annotated[time, BeforeValidator(_hour_minute)]
# A member's calendar home: its path and carecal's collection and object names in it must fit
# the tables' 1 024 characters (`view_state.collection`, `view_records.href`).
Url = Annotated[
    str, StringConstraints(max_length=700), AfterValidator(_single_line), AfterValidator(_http_url)
]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)


# --- recurrence ---------------------------------------------------------------------------

# A deliberately small RRULE subset. dateutil needs seconds to find out that a rule never
# occurs (e.g. FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30 walks day by day to the year 9999), so the
# parts that make "never" likely (BYSETPOS, BYYEARDAY, BYWEEKNO, BYHOUR…) are refused and the
# remaining combinations are checked for possibility before dateutil sees them.
_RRULE_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "WKST")
_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_BYDAY = re.compile(r"([+-]?[1-9][0-9]?)?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"[0-9]{8}(T[0-9]{6}Z?)?")
_SMALL_INT = re.compile(r"[+-]?[0-9]{1,4}")


def _int_list(name: str, value: str, low: int, high: int, *, signed: bool) -> list[int]:
    numbers = []
    for item in value.split(","):
        if not _SMALL_INT.fullmatch(item):
            raise ValueError(f"recurrence {name} must be a comma-separated list of numbers")
        number = int(item)
        if not low <= abs(number) <= high or (number < 0 and not signed):
            raise ValueError(f"recurrence {name} values must be within {low}..{high}")
        numbers.append(number)
    return numbers


def _rrule_parts(rule: str) -> dict[str, str]:
    if rule.upper().startswith("RRULE:"):
        raise ValueError("recurrence must be the RRULE value without the 'RRULE:' prefix")
    parts: dict[str, str] = {}
    for item in rule.split(";"):
        name, sep, value = item.partition("=")
        name = name.upper()
        if not sep or not value:
            raise ValueError("recurrence must be NAME=VALUE parts separated by ';'")
        if name not in _RRULE_PARTS:
            raise ValueError(f"recurrence part not supported; use only {', '.join(_RRULE_PARTS)}")
        if name in parts:
            raise ValueError(f"recurrence part {name} appears twice")
        parts[name] = value.upper()
    return parts


def validate_recurrence(rule: str, start: datetime, timezone: str) -> str:
    """Check an RRULE value for a task starting at naive `start` in `timezone`; return it.

    >>> validate_recurrence("FREQ=WEEKLY;COUNT=4", datetime(2027, 3, 23, 10), "Europe/Copenhagen")
    'FREQ=WEEKLY;COUNT=4'

    UNTIL may be local (``20270501T000000``) or, as RFC 5545 asks for a DTSTART with a time
    zone, UTC (``20270430T220000Z``).
    """
    parts = _rrule_parts(rule)
    freq = parts.get("FREQ")
    if freq not in _FREQS:
        raise ValueError(f"recurrence FREQ must be one of {', '.join(_FREQS)}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("recurrence may have COUNT or UNTIL, not both")
    interval = _int_list("INTERVAL", parts.get("INTERVAL", "1"), 1, 999, signed=False)
    if len(interval) != 1:
        raise ValueError("recurrence INTERVAL must be one number")
    if "COUNT" in parts and len(_int_list("COUNT", parts["COUNT"], 1, 9999, signed=False)) != 1:
        raise ValueError("recurrence COUNT must be one number")
    if "UNTIL" in parts and not _UNTIL.fullmatch(parts["UNTIL"]):
        raise ValueError("recurrence UNTIL must look like 20270501 or 20270501T000000[Z]")
    if "WKST" in parts and parts["WKST"] not in _WEEKDAYS:
        raise ValueError("recurrence WKST must be a weekday such as MO")

    months = (
        _int_list("BYMONTH", parts["BYMONTH"], 1, 12, signed=False) if "BYMONTH" in parts else []
    )
    month_days = (
        _int_list("BYMONTHDAY", parts["BYMONTHDAY"], 1, 31, signed=True)
        if "BYMONTHDAY" in parts
        else []
    )
    longest_month = max(_DAYS_IN_MONTH[month - 1] for month in months or range(1, 13))
    for day in month_days:
        if abs(day) > longest_month:
            raise ValueError("recurrence BYMONTHDAY never occurs in the months of BYMONTH")

    if "BYDAY" in parts:
        for item in parts["BYDAY"].split(","):
            match = _BYDAY.fullmatch(item)
            if not match:
                raise ValueError("recurrence BYDAY must be weekdays such as MO,TH or 1MO,-1FR")
            if match[1] is None:
                continue
            limit = {"MONTHLY": 5, "YEARLY": 53}.get(freq)
            if limit is None or abs(int(match[1])) > limit or month_days:
                raise ValueError(
                    "recurrence BYDAY with a number (1MO) needs FREQ=MONTHLY (1..5) or "
                    "FREQ=YEARLY (1..53) and no BYMONTHDAY"
                )
        if freq == "DAILY" and interval[0] % 7 == 0:
            # Every 7th day is always the same weekday: any other BYDAY would never occur.
            raise ValueError(
                "recurrence with FREQ=DAILY and BYDAY needs an INTERVAL not divisible by 7"
            )

    # RFC 5545: a UTC UNTIL goes with a zoned DTSTART, a local one with a floating DTSTART;
    # dateutil insists on the same pairing.
    utc_until = parts.get("UNTIL", "").endswith("Z")
    dtstart = start.replace(tzinfo=ZoneInfo(timezone)) if utc_until else start
    try:
        first = next(iter(rrulestr(rule, dtstart=dtstart)), None)
    except (ValueError, IndexError, TypeError, OverflowError):
        raise ValueError("recurrence is not a valid RRULE") from None
    if first is None:
        raise ValueError("recurrence produces no occurrence (UNTIL before the start?)")
    return rule


# --- circle.updated -----------------------------------------------------------------------


class CitizenData(_Strict):
    id: Id
    display_name: Name
    timezone: TimeZoneName = "Europe/Copenhagen"
    locale: Locale = "da"


class CapacityData(_Strict):
    hours_per_week: Annotated[float, Field(ge=0, le=168, allow_inf_nan=False)] | None = None
    tasks_per_week: Annotated[int, Field(ge=0, le=1000)] | None = None


class AvailabilityData(_Strict):
    """A weekly window, weekday 1 = Monday … 7 = Sunday; a window cannot cross midnight."""

    weekday: Annotated[int, Field(ge=1, le=7)]
    start: HourMinute
    end: HourMinute

    @model_validator(mode="after")
    def _ordered(self) -> AvailabilityData:
        if self.end <= self.start:
            raise ValueError("availability end must be after start")
        return self


class ExternalCalendarData(_Strict):
    url: Url
    username: Annotated[
        str, StringConstraints(min_length=1, max_length=256), AfterValidator(_single_line)
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class MemberData(_Strict):
    id: Id
    name: Name
    role: Role
    visibility: Visibility
    email: Email | None = None
    locale: Locale = "da"
    calendar: Delivery = "hosted"
    external: ExternalCalendarData | None = None
    capacity: CapacityData | None = None
    availability: Annotated[tuple[AvailabilityData, ...], Field(max_length=50)] = ()
    paused_until: date | None = None

    @model_validator(mode="after")
    def _external_matches_calendar(self) -> MemberData:
        # Credentials sent for a member who does not use them would be stored for nothing.
        if (self.calendar == "external") != (self.external is not None):
            raise ValueError(
                '`external` {url, username, password} goes with calendar "external" only'
            )
        return self

    def to_member(self) -> Member:
        capacity = self.capacity or CapacityData()
        external = self.external
        return Member(
            id=self.id,
            name=self.name,
            role=self.role,
            visibility=self.visibility,
            locale=self.locale,
            email=self.email,
            calendar=self.calendar,
            capacity=Capacity(capacity.hours_per_week, capacity.tasks_per_week),
            availability=tuple(
                AvailabilityWindow(window.weekday, window.start, window.end)
                for window in self.availability
            ),
            paused_until=self.paused_until,
            external=(
                ExternalCalendar(external.url, external.username, external.password)
                if external
                else None
            ),
        )


class CircleUpdatedData(_Strict):
    """The whole circle of one citizen; members absent from it are removed."""

    version: Version
    citizen: CitizenData
    members: Annotated[tuple[MemberData, ...], Field(max_length=500)]

    @model_validator(mode="after")
    def _unique_members(self) -> CircleUpdatedData:
        ids = [member.id for member in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError("member ids must be unique within a circle")
        return self

    def to_circle(self, tenant_id: str) -> Circle:
        citizen = self.citizen
        return Circle(
            citizen=Citizen(
                tenant_id=tenant_id,
                id=citizen.id,
                display_name=citizen.display_name,
                timezone=citizen.timezone,
                locale=citizen.locale,
            ),
            version=self.version,
            members=tuple(member.to_member() for member in self.members),
        )


# --- tasks and visits ---------------------------------------------------------------------


class _TimedData(_Strict):
    start: LocalDateTime
    end: LocalDateTime
    timezone: TimeZoneName

    @model_validator(mode="after")
    def _ordered(self) -> Any:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class TaskUpsertedData(_TimedData):
    """A care task as the host now describes it.

    Extension to DESIGN.md: optional `exdates` (starts of occurrences removed from the series)
    and `rdates` (extra starts), naive local date-times like `start`, at most 500 each.
    """

    id: Id
    citizen_id: Id
    version: Version
    kind: TaskKind
    category: Category
    details: Details | None = None
    location: Location | None = None
    people_needed: Annotated[int, Field(ge=1, le=50)] = 1
    recurrence: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    exdates: Annotated[tuple[LocalDateTime, ...], Field(max_length=500)] = ()
    rdates: Annotated[tuple[LocalDateTime, ...], Field(max_length=500)] = ()
    claim_deadline_hours: Annotated[int, Field(ge=0, le=24 * 366)] | None = None

    @model_validator(mode="after")
    def _valid_recurrence(self) -> TaskUpsertedData:
        if self.recurrence is not None:
            validate_recurrence(self.recurrence, self.start, self.timezone)
        return self

    def to_task(self, tenant_id: str) -> Task:
        return Task(
            tenant_id=tenant_id,
            id=self.id,
            citizen_id=self.citizen_id,
            version=self.version,
            kind=self.kind,
            category=self.category,
            start=self.start,
            end=self.end,
            timezone=self.timezone,
            people_needed=self.people_needed,
            details=self.details,
            location=self.location,
            recurrence=self.recurrence,
            exdates=self.exdates,
            rdates=self.rdates,
            claim_deadline_hours=self.claim_deadline_hours,
        )


class TaskCancelledData(_Strict):
    id: Id
    citizen_id: Id
    version: Version


class VisitAssignedData(_TimedData):
    """A staff visit: one slot, already held by `staff_member_id`."""

    id: Id
    citizen_id: Id
    version: Version
    staff_member_id: Id
    category: Category

    def to_task(self, tenant_id: str) -> Task:
        return Task(
            tenant_id=tenant_id,
            id=self.id,
            citizen_id=self.citizen_id,
            version=self.version,
            kind="visit",
            category=self.category,
            start=self.start,
            end=self.end,
            timezone=self.timezone,
            people_needed=1,
            assigned_member_id=self.staff_member_id,
        )


class ReliefDecidedData(_Strict):
    """The host's answer to a relief request; an approval carries the relief visits."""

    request_id: Id
    citizen_id: Id
    version: Version
    status: Literal["approved", "rejected"]
    visits: Annotated[tuple[VisitAssignedData, ...], Field(max_length=500)] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ReliefDecidedData:
        if self.status == "rejected" and self.visits:
            raise ValueError("a rejected relief request cannot carry visits")
        if any(visit.citizen_id != self.citizen_id for visit in self.visits):
            raise ValueError("every visit must belong to the relief request's citizen")
        return self

    def to_tasks(self, tenant_id: str) -> tuple[Task, ...]:
        return tuple(visit.to_task(tenant_id) for visit in self.visits)


# --- envelope -----------------------------------------------------------------------------


class CircleUpdated(_Strict):
    type: Literal["circle.updated"]
    data: CircleUpdatedData

    def to_command(self, tenant_id: str) -> HostCommand:
        return UpdateCircle(self.data.to_circle(tenant_id))


class TaskUpserted(_Strict):
    type: Literal["task.upserted"]
    data: TaskUpsertedData

    def to_command(self, tenant_id: str) -> HostCommand:
        return UpsertTask(self.data.to_task(tenant_id))


class TaskCancelled(_Strict):
    type: Literal["task.cancelled"]
    data: TaskCancelledData

    def to_command(self, tenant_id: str) -> HostCommand:
        return CancelTask(self.data.id, self.data.citizen_id, self.data.version)


class VisitAssigned(_Strict):
    type: Literal["visit.assigned"]
    data: VisitAssignedData

    def to_command(self, tenant_id: str) -> HostCommand:
        return AssignVisit(self.data.to_task(tenant_id))


class ReliefDecided(_Strict):
    type: Literal["relief.decided"]
    data: ReliefDecidedData

    def to_command(self, tenant_id: str) -> HostCommand:
        data = self.data
        return DecideRelief(
            data.request_id, data.citizen_id, data.version, data.status, data.to_tasks(tenant_id)
        )


HostEvent = Annotated[
    CircleUpdated | TaskUpserted | TaskCancelled | VisitAssigned | ReliefDecided,
    Discriminator("type"),
]
EVENT_TYPES = (
    "circle.updated",
    "task.upserted",
    "task.cancelled",
    "visit.assigned",
    "relief.decided",
)

_HOST_EVENT: TypeAdapter[HostEvent] = TypeAdapter(
    HostEvent, config=ConfigDict(hide_input_in_errors=True)
)
# Bounds the 422 body; the first errors are enough to fix a sender.
_MAX_ERRORS = 50
# pydantic messages that quote the input; replaced by ones that do not.
_SAFE_MESSAGES = {
    "union_tag_invalid": f"unknown event type; expected one of: {', '.join(EVENT_TYPES)}",
}


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = list(error["loc"])
        # Discriminated unions prefix the location with the tag; the sender knows its type,
        # and without it the location reads as a path into the body they sent.
        if loc and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        errors.append({"loc": loc, "msg": _SAFE_MESSAGES.get(error["type"], error["msg"])})
        if len(errors) == _MAX_ERRORS:
            break
    return errors


def parse_event(raw: bytes) -> HostEvent:
    """Validate a webhook body.

    >>> parse_event(b'{"type": "task.cancelled", "data": {"id": "t-1", "citizen_id": "c-1", '
    ...             b'"version": 2}}').data.version
    2
    """
    try:
        return _HOST_EVENT.validate_json(raw)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors(include_input=False)):
            raise MalformedEvent(exc.errors(include_input=False)[0]["msg"]) from exc
        raise InvalidEvent(_field_errors(exc)) from exc
