"""One occurrence as one member sees it: a VCALENDAR with one VEVENT (DESIGN.md "Calendar
representation").

The member's relation to the occurrence decides most fields:

| relation  | when                                  | SUMMARY         | STATUS    | TRANSP      |
|-----------|---------------------------------------|-----------------|-----------|-------------|
| CANCELLED | the occurrence or its task cancelled  | `[Aflyst] Indkøb` | CANCELLED | TRANSPARENT |
| HOLDS     | the member holds a slot               | `[Dig] Indkøb`  | CONFIRMED | OPAQUE      |
| OFFERED   | free slots the member may take        | `[Ledig] Indkøb`| TENTATIVE | TRANSPARENT |
| TAKEN     | held by others / not the member's kind| `[Anna] Indkøb` | CONFIRMED¹| TRANSPARENT |

¹ CONFIRMED when no slot is free, TENTATIVE while others hold it but people are still needed.

PARTSTAT of the one ATTENDEE (this member): ACCEPTED when holding, DECLINED after a pass,
otherwise NEEDS-ACTION (so losing a race resets an optimistic ACCEPTED).

Several other holders read `[Anna, Bo] Indkøb`, more than two `[Anna, Bo +2] Indkøb`; a holder
whose name the caller does not give is "en anden"/"someone else", and an occurrence nobody holds
and this member may not take (an unassigned visit) is `[Ikke tildelt]`/`[Unassigned]`. Holder
names are the only thing about other members that ever appears: never their e-mail or phone.
`suggested=True` (the fairness feature) turns an offer's `[Ledig]` into `[Forslag]`/`[Suggested]`,
with a line "Foreslået til dig: …" in DESCRIPTION (the title shows in every calendar app and
feed; the line says why). `overloaded=True` adds a line to a copy the member holds saying they
are over the capacity they declared for that period.
An offer staff asked this member to take (a targeted offer in `record.offers`, not passed on)
reads `[Til dig]`/`[For you]`, with a line saying so in DESCRIPTION; it is still only an offer.

A member without an e-mail address is the attendee `urn:uuid:<uuid5 of domain and member id>`:
a well-formed, stable URI that names nobody and cannot receive mail.

Beyond DESIGN.md's table: `CLASS:PRIVATE` (shared calendars hide the event's content) and
`X-CARECAL-CATEGORY` (the category key, so `material_fingerprint` needs no title parsing).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from icalendar import (
    Calendar,
    Component,
    Event,
    Parameters,
    Timezone,
    vCalAddress,
    vDDDTypes,
    vText,
    vUTCOffset,
)

from plugin.domain.circle import can_see_details, eligible_for
from plugin.domain.model import CATEGORY_LABELS, Member, OccurrenceRecord, Task, TaskStatus
from plugin.domain.states import state_of

__all__ = [
    "HELD_PREFIXES",
    "PRODID",
    "PRODUCT_NAME",
    "Relation",
    "RenderInput",
    "asked",
    "attendee_address",
    "event_uid",
    "relation_of",
    "render_bytes",
    "render_event",
    "vtimezone",
]

PRODID = "-//carecal//carecal//EN"
PRODUCT_NAME = {"da": "carecal", "en": "carecal"}
MAX_NAMES = 2

_C = TypeVar("_C", bound=Component)

_WORDS: dict[str, dict[str, str]] = {
    "da": {
        "open": "Ledig",
        "suggested": "Forslag",
        "suggested_line": (
            "Foreslået til dig: du har plads til opgaven i den periode. Du bestemmer selv, "
            "om du tager den."
        ),
        "overloaded_line": (
            "Du har nu flere opgaver i denne periode, end du har sagt, du kan klare. Kommunen "
            "er orienteret. Giv gerne en opgave fra dig, hvis det bliver for meget."
        ),
        "asked": "Til dig",
        "asked_line": "Personalet har spurgt, om du kan tage denne opgave. Sig ja eller nej tak.",
        "you": "Dig",
        "cancelled": "Aflyst",
        "unassigned": "Ikke tildelt",
        "someone": "en anden",
        "place": "Sted",
        # The claim link's line: true whatever its page offers the member now (to claim,
        # release or pass, or nothing), and the same in every state, as the description is
        # part of what makes a change material (a copy the member deleted is not re-created
        # for another member's claim).
        "link": "Se opgaven",
    },
    "en": {
        "open": "Open",
        "suggested": "Suggested",
        "suggested_line": (
            "Suggested for you: you have room for it in that period. It is up to you whether "
            "you take it."
        ),
        "overloaded_line": (
            "You now hold more in this period than you said you can manage. The municipality "
            "has been told. Feel free to release a task if it gets too much."
        ),
        "asked": "For you",
        "asked_line": "Staff have asked whether you can take this task. Accept or decline it.",
        "you": "You",
        "cancelled": "Cancelled",
        "unassigned": "Unassigned",
        "someone": "someone else",
        "place": "Place",
        "link": "See the task",
    },
}
# How a copy's title begins when the member holds it ("[Dig] Indkøb"), in every language.
HELD_PREFIXES: tuple[str, ...] = tuple(f"[{words['you']}]" for words in _WORDS.values())


class Relation(StrEnum):
    CANCELLED = "cancelled"
    HOLDS = "holds"
    OFFERED = "offered"
    TAKEN = "taken"


@dataclass(frozen=True, slots=True)
class RenderInput:
    """Everything one member's copy of one occurrence is made from.

    `holder_names` maps member ids of holders to display names (only names: the renderer
    never sees other members' contact data). `organizer` is the circle's organizer address
    (`mailto:` is added when it has no scheme). `stamp` becomes DTSTAMP.
    """

    record: OccurrenceRecord
    task: Task
    member: Member
    holder_names: Mapping[str, str]
    claim_link: str
    organizer: str
    domain: str
    sequence: int
    stamp: datetime
    suggested: bool = False
    overloaded: bool = False  # held in a period over the member's capacity (fairness)


def event_uid(occurrence_id: str, domain: str) -> str:
    """The UID every member's copy shares: `event_uid("t-1_20270323T1000", "aarhus.dk")`
    is `"t-1_20270323T1000@aarhus.dk"`."""
    return f"{occurrence_id}@{domain}"


def attendee_address(member: Member, domain: str) -> str:
    """`mailto:` the member's own e-mail, or an opaque stable `urn:uuid:` without one."""
    if member.email:
        return f"mailto:{member.email.strip()}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'carecal:{domain}:{member.id}')}"


def relation_of(inp: RenderInput) -> Relation:
    if _cancelled(inp):
        return Relation.CANCELLED
    holders = _holders(inp)
    if inp.member.id in holders:
        return Relation.HOLDS
    if _free_slots(inp, holders) > 0 and eligible_for(inp.member, inp.task):
        return Relation.OFFERED
    return Relation.TAKEN


def render_event(inp: RenderInput) -> Calendar:
    """The member's copy: a VCALENDAR with a VTIMEZONE (unless UTC) and one VEVENT."""
    locale = _locale(inp.member.locale)
    words = _WORDS[locale]
    relation = relation_of(inp)
    holders = _holders(inp)
    tz = ZoneInfo(inp.task.timezone)
    start = inp.record.occurrence.start.astimezone(tz)
    end = inp.record.occurrence.end.astimezone(tz)

    event = Event()
    event.add("uid", event_uid(inp.record.occurrence.id, inp.domain))
    event.add("dtstamp", inp.stamp)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("sequence", inp.sequence)
    event.add("summary", f"[{_label(inp, relation, holders, words)}] {_title(inp, locale)}")
    event.add("status", _status(inp, relation, holders))
    event.add("transp", "OPAQUE" if relation is Relation.HOLDS else "TRANSPARENT")
    event.add("class", "PRIVATE")
    event.add("description", _description(inp, words))
    event.add("url", inp.claim_link)
    event.add("organizer", _organizer(inp.organizer, locale))
    event.add("attendee", _attendee(inp))
    event.add("x-carecal-task", inp.task.id)
    event.add("x-carecal-state", state_of(inp.record).value)
    event.add("x-carecal-category", _category(inp.task))

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    if tz.key != "UTC":
        calendar.add_component(vtimezone(tz.key, start.year, end.year + 1))
    calendar.add_component(event)
    return calendar


def render_bytes(inp: RenderInput) -> bytes:
    return bytes(render_event(inp).to_ical())


def _cancelled(inp: RenderInput) -> bool:
    return inp.record.occurrence.cancelled or inp.task.status is TaskStatus.CANCELLED


def _holders(inp: RenderInput) -> tuple[str, ...]:
    """Member ids holding the occurrence, in claim order; an assigned visit's staff member
    counts as holding it even before a claim is stored."""
    holders = tuple(claim.member_id for claim in inp.record.claims)
    assigned = inp.task.assigned_member_id
    if inp.task.kind == "visit" and assigned is not None and assigned not in holders:
        holders = (*holders, assigned)
    return holders


def asked(inp: RenderInput) -> bool:
    """Staff asked this member to take it, and they have not passed on it."""
    member_id = inp.member.id
    return any(o.member_id == member_id for o in inp.record.offers) and not any(
        p.member_id == member_id for p in inp.record.passes
    )


def _free_slots(inp: RenderInput, holders: tuple[str, ...]) -> int:
    return max(0, inp.record.people_needed - len(holders))


def _label(
    inp: RenderInput, relation: Relation, holders: tuple[str, ...], words: dict[str, str]
) -> str:
    if relation is Relation.CANCELLED:
        return words["cancelled"]
    if relation is Relation.HOLDS:
        return words["you"]
    if relation is Relation.OFFERED:
        if asked(inp):
            return words["asked"]
        return words["suggested"] if inp.suggested else words["open"]
    others = [_clean(inp.holder_names.get(h) or words["someone"]) for h in holders]
    if not others:
        return words["unassigned"]
    shown = ", ".join(others[:MAX_NAMES])
    rest = len(others) - MAX_NAMES
    return f"{shown} +{rest}" if rest > 0 else shown


def _status(inp: RenderInput, relation: Relation, holders: tuple[str, ...]) -> str:
    if relation is Relation.CANCELLED:
        return "CANCELLED"
    if relation is Relation.HOLDS or _free_slots(inp, holders) == 0:
        return "CONFIRMED"
    return "TENTATIVE"


def _partstat(inp: RenderInput) -> str:
    if inp.member.id in _holders(inp):
        return "ACCEPTED"
    if any(p.member_id == inp.member.id for p in inp.record.passes):
        return "DECLINED"
    return "NEEDS-ACTION"  # also after losing a race: an optimistic ACCEPTED is reset


def _description(inp: RenderInput, words: dict[str, str]) -> str:
    lines: list[str] = []
    if asked(inp) and relation_of(inp) is Relation.OFFERED:
        lines.append(words["asked_line"])
    relation = relation_of(inp)
    if inp.suggested and relation is Relation.OFFERED and not asked(inp):
        lines.append(words["suggested_line"])
    if inp.overloaded and relation is Relation.HOLDS:
        lines.append(words["overloaded_line"])
    if can_see_details(inp.member):
        if inp.task.details:
            lines.append(inp.task.details.strip())
        if inp.task.location:
            lines.append(f"{words['place']}: {inp.task.location.strip()}")
    lines.append(f"{words['link']}: {inp.claim_link}")
    return "\n\n".join(lines)


def _organizer(address: str, locale: str) -> vCalAddress:
    value = address if ":" in address else f"mailto:{address}"
    return vCalAddress(value, params={"CN": PRODUCT_NAME[locale]})


def _attendee(inp: RenderInput) -> vCalAddress:
    return vCalAddress(
        attendee_address(inp.member, inp.domain),
        params={
            "CN": _clean(inp.member.name),
            "PARTSTAT": _partstat(inp),
            "RSVP": "TRUE",
            "SCHEDULE-AGENT": "CLIENT",
        },
    )


def _locale(locale: str) -> str:
    language = locale.split("-")[0].split("_")[0].lower()
    return language if language in _WORDS else "da"


def _category(task: Task) -> str:
    return task.category if task.category in CATEGORY_LABELS else "other"


def _title(inp: RenderInput, locale: str) -> str:
    return CATEGORY_LABELS[_category(inp.task)][locale]


def _clean(name: str) -> str:
    """A name fit for a one-line title: no brackets or line breaks from the host's data."""
    return " ".join(name.replace("[", "(").replace("]", ")").split())


@lru_cache(maxsize=64)
def _vtimezone_master(tzid: str, first_year: int, last_year: int) -> Timezone:
    """The parsed VTIMEZONE that `vtimezone` copies. Never handed out: only copies are.

    Generating a VTIMEZONE from zoneinfo is slow (icalendar says: cache it), and so is
    parsing one (every rendered copy carries one), so both happen once per zone and span.
    The span covers the event's years, so the component stays small and holds both DST
    switches. The component is the parse of its own serialisation, as a copy read back from
    a server would be."""
    zone = Timezone.from_tzid(
        tzid, first_date=date(first_year, 1, 1), last_date=date(last_year, 1, 1)
    )
    component = Timezone.from_ical(bytes(zone.to_ical()))
    if not isinstance(component, Timezone):
        raise TypeError(f"VTIMEZONE for {tzid} did not parse as one")
    return component


def vtimezone(tzid: str, first_year: int, last_year: int) -> Timezone:
    """The VTIMEZONE of `tzid` from 1 January `first_year` to 1 January `last_year`.

    A new component every call, which the caller may change freely: it shares no mutable
    object (component, property value, parameters) with the cached one or with any other copy.
    """
    return _copy_component(_vtimezone_master(tzid, first_year, last_year))


def _copy_component(component: _C) -> _C:
    """An independent copy of `component` and its subcomponents, several times cheaper than
    `copy.deepcopy` (`Component.copy(recursive=True)`), which it equals in effect."""
    new = type(component)()
    for name, value in component.items():
        new[name] = _copy_value(value)
    new.subcomponents = [_copy_component(sub) for sub in component.subcomponents]
    new.errors = list(component.errors)
    return new


# Property types whose only mutable attribute is `params`: the text, date-time and UTC offset
# they hold (`str`, `datetime`/`date`/`timedelta`/`time`/a tuple of those, `timedelta`) cannot
# change, so a shallow copy with its own parameters is as independent as a deep one. A
# VTIMEZONE holds little else; anything else (RDATE's vDDDLists holds a list) is deep-copied.
_SHALLOW_TYPES: frozenset[type] = frozenset({vText, vDDDTypes, vUTCOffset})


def _copy_value(value: Any) -> Any:
    if isinstance(value, list):  # a property that occurs more than once
        return [_copy_value(item) for item in value]
    if type(value) not in _SHALLOW_TYPES:
        return copy.deepcopy(value)
    new = copy.copy(value)  # shares `params` with `value`: give it its own
    params: Parameters = value.params
    new.params = Parameters(copy.deepcopy(dict(params))) if params else Parameters()
    return new
