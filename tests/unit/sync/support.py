"""Builders for the sync tests: a small circle, one task, occurrences in Copenhagen time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Component

from plugin.domain.model import Claim, Member, Occurrence, OccurrenceRecord, Pass, Task
from plugin.sync.fingerprint import prop_values
from plugin.sync.render import RenderInput, render_event

TZ = ZoneInfo("Europe/Copenhagen")
STAMP = datetime(2027, 3, 1, 12, tzinfo=UTC)
DOMAIN = "aarhus.dk"
ORGANIZER = "mailto:noreply@aarhus.dk"
LINK = "https://carecal.aarhus.dk/c/tok-anna"
DETAILS = "Netto; the list is on the fridge"
LOCATION = "Netto, Vestergade 3"

ANNA = Member("m-anna", "Anna", "relative", "full", email="anna@example.org")
BO = Member("m-bo", "Bo", "network", "limited", locale="en", email="bo@example.org")
CY = Member("m-cy", "Cy", "relative", "full", email="cy@example.org")
SARA = Member("m-sara", "Sara", "staff", "full", email="sara@kommune.example")
NOMAIL = Member("m-nomail", "Dorte", "network", "full")
MEMBERS = (ANNA, BO, CY, SARA, NOMAIL)
NAMES = {m.id: m.name for m in MEMBERS}


def task(**changes: object) -> Task:
    base = Task(
        tenant_id="demo",
        id="t-1",
        citizen_id="c-123",
        version=1,
        kind="task",
        category="shopping",
        start=datetime(2027, 3, 30, 10),
        end=datetime(2027, 3, 30, 11),
        timezone="Europe/Copenhagen",
        details=DETAILS,
        location=LOCATION,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def record(
    *,
    start: datetime = datetime(2027, 3, 30, 10),
    holders: tuple[str, ...] = (),
    passers: tuple[str, ...] = (),
    people_needed: int = 1,
    cancelled: bool = False,
    oid: str = "t-1_20270330T1000",
) -> OccurrenceRecord:
    local = start.replace(tzinfo=TZ)
    occurrence = Occurrence(oid, "t-1", local, local + timedelta(hours=1), cancelled=cancelled)
    at = datetime(2027, 3, 2, tzinfo=UTC)
    return OccurrenceRecord(
        occurrence,
        people_needed,
        claims=tuple(Claim(oid, m, "link", at) for m in holders),
        passes=tuple(Pass(oid, m, at) for m in passers),
    )


def render_input(
    member: Member = ANNA,
    occurrence: OccurrenceRecord | None = None,
    the_task: Task | None = None,
    **changes: object,
) -> RenderInput:
    base = RenderInput(
        record=occurrence if occurrence is not None else record(),
        task=the_task if the_task is not None else task(),
        member=member,
        holder_names=NAMES,
        claim_link=LINK,
        organizer=ORGANIZER,
        domain=DOMAIN,
        sequence=1,
        stamp=STAMP,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def render(
    member: Member = ANNA,
    occurrence: OccurrenceRecord | None = None,
    the_task: Task | None = None,
    **changes: object,
) -> Calendar:
    return render_event(render_input(member, occurrence, the_task, **changes))


def vevent(calendar: Calendar) -> Component:
    events: list[Component] = calendar.walk("VEVENT")
    assert len(events) == 1
    return events[0]


def attendee_partstat(calendar: Calendar) -> str:
    (attendee,) = prop_values(vevent(calendar), "ATTENDEE")
    return str(attendee.params["PARTSTAT"])


def set_partstat(calendar: Calendar, partstat: str) -> Calendar:
    """A member's client answering: the copy with the one attendee's PARTSTAT changed."""
    copy = Calendar.from_ical(calendar.to_ical())
    (attendee,) = prop_values(vevent(copy), "ATTENDEE")
    attendee.params["PARTSTAT"] = partstat
    return copy
