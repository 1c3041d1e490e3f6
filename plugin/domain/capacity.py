"""What a member can carry: capacity, weekly availability, pause — and whose word counts.

Two sources set these for a member of a circle: the host (`circle.updated`, the municipality's
record) and the member themself (their setup page). Both are kept; a member's own setting is
stored next to the host's values at the moment they set it (`MemberSettings`).

Precedence, per field (`capacity`, `availability`, `paused_until`):

| host event for the circle                                  | the field's value          |
|------------------------------------------------------------|----------------------------|
| older or as old as the stored circle (version rules)        | ignored altogether         |
| newer, with the same host value as when the member set it  | the member's stays         |
| newer, with a different host value                         | the host's (a new decision)|

`circle.updated` carries the whole circle, and the host resends it for any change (a new
member, a new e-mail address), repeating everyone's capacity: only a *changed* host value is
a decision about that field, so only that takes the field back. An older host event can never
overwrite the member (it is stale before it gets here). The member sees on their setup page
which values are theirs and which the municipality's.

    settings = MemberSettings(..., values=CareValues(Capacity(2.0, None)),
                              host=CareValues(Capacity(4.0, 3)), fields=frozenset({"capacity"}))
    effective_member(anna_from_host, settings).capacity   # Capacity(2.0, None)
    settle(settings, anna_with_hours_6)                    # None: the host decided anew
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from plugin.domain.model import AvailabilityWindow, Capacity, Member

__all__ = [
    "FIELDS",
    "CareField",
    "CareValues",
    "MemberSettings",
    "available_at",
    "effective_member",
    "paused_at",
    "settle",
    "values_of",
]

CareField = Literal["capacity", "availability", "paused_until"]
FIELDS: tuple[CareField, ...] = ("capacity", "availability", "paused_until")


@dataclass(frozen=True, slots=True)
class CareValues:
    """Capacity per week, weekly availability windows (none: any time) and a pause (through
    `paused_until`, inclusive; None: not paused)."""

    capacity: Capacity = field(default_factory=Capacity)
    availability: tuple[AvailabilityWindow, ...] = ()
    paused_until: date | None = None


@dataclass(frozen=True, slots=True)
class MemberSettings:
    """A member's own setting for one circle. `values` is what they set, `host` the host's
    values when they set it, `fields` the fields their setting still decides."""

    tenant_id: str
    citizen_id: str
    member_id: str
    values: CareValues
    host: CareValues
    fields: frozenset[CareField]
    circle_version: int  # the circle's version the member saw
    set_at: datetime


def values_of(member: Member) -> CareValues:
    return CareValues(member.capacity, member.availability, member.paused_until)


def effective_member(member: Member, settings: MemberSettings | None) -> Member:
    """The member with their own setting applied to the fields it still decides."""
    if settings is None or not settings.fields:
        return member
    values = settings.values
    return replace(
        member,
        capacity=values.capacity if "capacity" in settings.fields else member.capacity,
        availability=(
            values.availability if "availability" in settings.fields else member.availability
        ),
        paused_until=(
            values.paused_until if "paused_until" in settings.fields else member.paused_until
        ),
    )


def settle(settings: MemberSettings, host_member: Member) -> MemberSettings | None:
    """The member's setting after a newer `circle.updated` listing `host_member`: the fields
    whose host value changed since the member set theirs go back to the host. None when no
    field is left to the member."""
    now = values_of(host_member)
    kept = frozenset(f for f in settings.fields if getattr(now, f) == getattr(settings.host, f))
    if not kept:
        return None
    return settings if kept == settings.fields else replace(settings, fields=kept)


def paused_at(member: Member, start: datetime, zone: ZoneInfo) -> bool:
    """Paused on the (local) day `start` falls on: the pause runs through `paused_until`."""
    return member.paused_until is not None and start.astimezone(zone).date() <= member.paused_until


def available_at(member: Member, start: datetime, end: datetime, zone: ZoneInfo) -> bool:
    """Does [start, end) fit inside one of the member's weekly windows (local wall-clock time
    in `zone`)? A member who gave no windows is available any time; a window never crosses
    midnight, so neither can an occurrence that fits one."""
    if not member.availability:
        return True
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if local_end.date() != local_start.date():
        return False
    weekday = local_start.isoweekday()
    return any(
        window.weekday == weekday
        and window.start <= local_start.time()
        and local_end.time() <= window.end
        for window in member.availability
    )
