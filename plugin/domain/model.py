"""Domain values of carecal: citizens, circles, members, tasks, occurrences, claims.

Glossary (see DESIGN.md "Domain words"):

- tenant      a municipality, known by its configured id
- citizen     the person receiving care, known by the host's opaque id (never a CPR number)
- circle      the citizen's people; replaced whole by every `circle.updated`
- member      one person in a circle, with a role, a visibility, a calendar delivery and a capacity
- task        a care need with `people_needed` slots, optionally recurring
- occurrence  one dated instance of a task; its id is stable (task id + original local start)
- claim       a member holding one slot of an occurrence
- pass        a member saying "not me" for an occurrence
- targeted offer  staff asking one member to take an occurrence (they still answer it)

Every value here is frozen; times that belong to a place are timezone-aware, and a task keeps
its wall-clock start and end (naive) together with its IANA time zone, as the host sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from typing import Literal

Role = Literal["relative", "network", "staff"]
Visibility = Literal["full", "limited"]
Delivery = Literal["hosted", "external", "feed"]
TaskKind = Literal["task", "visit", "relief"]
Channel = Literal["caldav", "link", "api", "staff", "host"]

CATEGORIES: tuple[str, ...] = (
    "shopping",
    "walk",
    "doctor_escort",
    "visit",
    "meal",
    "practical",
    "transport",
    "relief",
    "other",
)

# The only titles that ever reach a calendar (data minimisation, DESIGN.md principle 5).
CATEGORY_LABELS: dict[str, dict[str, str]] = {
    "shopping": {"da": "Indkøb", "en": "Shopping"},
    "walk": {"da": "Gåtur", "en": "Walk"},
    "doctor_escort": {"da": "Ledsagelse til læge", "en": "Doctor escort"},
    "visit": {"da": "Besøg", "en": "Visit"},
    "meal": {"da": "Måltid", "en": "Meal"},
    "practical": {"da": "Praktisk hjælp", "en": "Practical help"},
    "transport": {"da": "Transport", "en": "Transport"},
    "relief": {"da": "Aflastning", "en": "Relief"},
    "other": {"da": "Andet", "en": "Other"},
}


class TaskStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Capacity:
    hours_per_week: float | None = None
    tasks_per_week: int | None = None


@dataclass(frozen=True, slots=True)
class AvailabilityWindow:
    """A weekly window; weekday 1 = Monday … 7 = Sunday (ISO)."""

    weekday: int
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class ExternalCalendar:
    """A member's own CalDAV account. The password is held encrypted by the store."""

    url: str
    username: str
    password: str


def same_account(a: ExternalCalendar, b: ExternalCalendar) -> bool:
    """One account: the same calendar home and username (the password may have changed)."""
    return (a.url, a.username) == (b.url, b.username)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    role: Role
    visibility: Visibility
    locale: str = "da"
    email: str | None = None
    calendar: Delivery = "hosted"
    capacity: Capacity = field(default_factory=Capacity)
    availability: tuple[AvailabilityWindow, ...] = ()
    paused_until: date | None = None
    external: ExternalCalendar | None = None


@dataclass(frozen=True, slots=True)
class Citizen:
    tenant_id: str
    id: str
    display_name: str
    timezone: str = "Europe/Copenhagen"
    locale: str = "da"


@dataclass(frozen=True, slots=True)
class Circle:
    citizen: Citizen
    version: int
    members: tuple[Member, ...] = ()

    def member(self, member_id: str) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)


@dataclass(frozen=True, slots=True)
class Task:
    """A care need as the host last described it.

    `start`/`end` are naive wall-clock times in `timezone`; `recurrence` is an RRULE value
    (without the `RRULE:` prefix); `exdates`/`rdates` are naive wall-clock starts.
    """

    tenant_id: str
    id: str
    citizen_id: str
    version: int
    kind: TaskKind
    category: str
    start: datetime
    end: datetime
    timezone: str
    people_needed: int = 1
    details: str | None = None
    location: str | None = None
    recurrence: str | None = None
    exdates: tuple[datetime, ...] = ()
    rdates: tuple[datetime, ...] = ()
    claim_deadline_hours: int | None = None
    status: TaskStatus = TaskStatus.ACTIVE
    assigned_member_id: str | None = None  # staff member of a `visit`


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One dated instance of a task; `start`/`end` are aware datetimes in the task's zone."""

    id: str
    task_id: str
    start: datetime
    end: datetime
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    occurrence_id: str
    member_id: str
    channel: Channel
    at: datetime


@dataclass(frozen=True, slots=True)
class Pass:
    occurrence_id: str
    member_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class TargetedOffer:
    """Staff asked this member to take the occurrence; they still accept or decline it
    themselves (an offer is never a claim)."""

    occurrence_id: str
    member_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class OccurrenceRecord:
    """An occurrence as stored, with who holds it, who passed and whom staff asked."""

    occurrence: Occurrence
    people_needed: int
    claims: tuple[Claim, ...] = ()
    passes: tuple[Pass, ...] = ()
    offers: tuple[TargetedOffer, ...] = ()

    @property
    def free_slots(self) -> int:
        return max(0, self.people_needed - len(self.claims))


@dataclass(frozen=True, slots=True)
class ReliefRequest:
    tenant_id: str
    id: str
    citizen_id: str
    member_id: str
    start: datetime
    end: datetime
    status: Literal["requested", "approved", "rejected"] = "requested"
    version: int = 0
