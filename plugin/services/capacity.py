"""Capacity, load and fair offers over the store: the rules of `plugin.domain.fairness` and
`plugin.domain.capacity` applied to one circle.

What calls what:

- `read_circle_care(tx, ...)` reads what the rules need beyond the circle, its tasks and
  occurrences: the members' own settings and the circle's relief requests (`CircleCare`);
- `view_advice(...)` (pure) says which of a member's copies are suggested to them and which
  they hold in a period over their capacity; `member_view.render_member_view` marks the copies
  (`[Forslag] Indkøb`, a line in DESCRIPTION), so the CalDAV view and the feed agree;
- `note_claim(tx, ...)` runs in the claim's transaction (`claiming.decide`): a claim that takes
  the member over their capacity is accepted, and `member.overloaded` goes to the host once per
  member and period (`Tx.note_overload`);
- `settle_member_settings(tx, ...)` runs when a newer `circle.updated` is applied: a changed
  host value takes a field back from the member's own setting (`capacity.settle`);
- for the staff dashboard and the API: `circle_load(tx, tenant, citizen, now)` (every member's
  load against capacity in the rolling window, week by week) and `offer_fairness(tx, tenant,
  occurrence_id, now)` (every member's standing for one occurrence, explained by
  `fairness.explain`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from plugin.domain.capacity import (
    FIELDS,
    CareField,
    CareValues,
    MemberSettings,
    effective_member,
    settle,
    values_of,
)
from plugin.domain.circle import eligible_for
from plugin.domain.fairness import (
    SUGGESTED_ROLES,
    WEEKS,
    Fairness,
    Held,
    Load,
    LoadBook,
    Offer,
    Period,
    Window,
    fairness_scores,
    load_window,
    over_capacity,
    period_of,
    week_start,
    window_capacity,
    windows_containing,
)
from plugin.domain.model import Circle, Member, OccurrenceRecord, ReliefRequest, Task, TaskStatus
from plugin.services.ports import AuditEntry, Tx

__all__ = [
    "LOOKBACK",
    "CircleCare",
    "CircleLoad",
    "LoadStanding",
    "Overload",
    "ViewAdvice",
    "circle_load",
    "held_in",
    "note_claim",
    "offer_fairness",
    "read_circle_care",
    "save_own_settings",
    "settle_member_settings",
    "view_advice",
]

# How far back held occurrences matter: the earliest window containing a coming occurrence
# starts three weeks before its week, `share` looks four weeks back (and ahead), `rest` 28 days.
LOOKBACK = timedelta(weeks=WEEKS + 1)
EVENT_OVERLOADED = "member.overloaded"
ACTIVE_RELIEF = ("requested", "approved")


@dataclass(frozen=True, slots=True)
class CircleCare:
    """What the rules need of a circle beyond its members, tasks and occurrences."""

    settings: Mapping[str, MemberSettings] = field(default_factory=dict)  # by member id
    relief: tuple[ReliefRequest, ...] = ()

    def effective(self, circle: Circle) -> Circle:
        """The circle with every member's own setting applied."""
        members = tuple(effective_member(m, self.settings.get(m.id)) for m in circle.members)
        return Circle(circle.citizen, circle.version, members)

    def relief_periods(self) -> dict[str, tuple[Period, ...]]:
        """Requested or approved relief, by member (a rejected request relieves nobody)."""
        periods: dict[str, list[Period]] = {}
        for request in self.relief:
            if request.status in ACTIVE_RELIEF:
                periods.setdefault(request.member_id, []).append(Period(request.start, request.end))
        return {member_id: tuple(found) for member_id, found in periods.items()}


async def read_circle_care(tx: Tx, tenant_id: str, citizen_id: str) -> CircleCare:
    settings = await tx.get_member_settings(tenant_id, citizen_id)
    relief = await tx.list_relief_requests(tenant_id, citizen_id)
    return CircleCare(settings, tuple(relief))


def held_in(
    tasks: Sequence[Task], occurrences: Mapping[str, Sequence[OccurrenceRecord]]
) -> list[Held]:
    """What the circle's members hold, from its tasks and occurrences (as `Tx.list_held`)."""
    held: list[Held] = []
    for task in tasks:
        if task.status is not TaskStatus.ACTIVE:
            continue
        for record in occurrences.get(task.id, ()):
            occurrence = record.occurrence
            if occurrence.cancelled:
                continue
            for claim in record.claims:
                held.append(Held(claim.member_id, occurrence.id, occurrence.start, occurrence.end))
    return held


def offer_of(task: Task, record: OccurrenceRecord) -> Offer:
    holders = {claim.member_id for claim in record.claims}
    if task.kind == "visit" and task.assigned_member_id is not None:
        holders.add(task.assigned_member_id)
    occurrence = record.occurrence
    return Offer(
        occurrence_id=occurrence.id,
        task=task,
        start=occurrence.start,
        end=occurrence.end,
        free_slots=max(0, record.people_needed - len(holders)),
        holders=frozenset(holders),
        passed=frozenset(p.member_id for p in record.passes),
    )


@dataclass(frozen=True, slots=True)
class ViewAdvice:
    """For one member's view: occurrences suggested to them, and the ones they hold in a
    period over their capacity."""

    suggested: frozenset[str] = frozenset()
    overloaded: frozenset[str] = frozenset()


def view_advice(
    circle: Circle,
    member_id: str,
    tasks: Sequence[Task],
    occurrences: Mapping[str, Sequence[OccurrenceRecord]],
    care: CircleCare,
    *,
    now: datetime,
    until: datetime,
    only: Collection[str] | None = None,
) -> ViewAdvice:
    """Which of the member's copies, starting before `until`, are suggested to them, and which
    that they hold fall in a period over their capacity. Only offers in the rolling window
    (this week and the three after it) are suggested: further ahead the loads will still
    change, and marking those would mostly rewrite calendars (every claim moves the scores).
    Offers that have started are never suggested. `only`: the marks of these occurrences
    alone (the same marks they have in the whole view's advice)."""
    effective = care.effective(circle)
    member = effective.member(member_id)
    if member is None:
        return ViewAdvice()
    zone = ZoneInfo(circle.citizen.timezone)
    book = LoadBook.build(held_in(tasks, occurrences), zone)
    relief = care.relief_periods()
    suggest_until = min(until, load_window(now, zone).end)
    suggested: set[str] = set()
    overloaded: set[str] = set()
    suggestable = member.role in SUGGESTED_ROLES
    for task in tasks:
        if task.status is not TaskStatus.ACTIVE:
            continue
        for record in occurrences.get(task.id, ()):
            occurrence = record.occurrence
            if occurrence.cancelled or occurrence.start >= until:
                continue
            if only is not None and occurrence.id not in only:
                continue
            if any(c.member_id == member_id for c in record.claims):
                if book.over_period(member_id, member.capacity, occurrence.start):
                    overloaded.add(occurrence.id)
                continue
            if not now <= occurrence.start < suggest_until or task.kind == "visit":
                continue
            if not suggestable or not eligible_for(member, task):
                continue  # never a candidate (fairness._blocked: ROLE): nothing to score
            offer = offer_of(task, record)
            if offer.free_slots == 0 or member_id in offer.passed:
                continue
            standings = fairness_scores(offer, effective.members, book, now=now, relief=relief)
            if any(s.member_id == member_id and s.suggested for s in standings):
                suggested.add(occurrence.id)
    return ViewAdvice(frozenset(suggested), frozenset(overloaded))


# --- claims over capacity -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overload:
    """A period in which a claim took the member over capacity, and what was sent."""

    window: Window
    load: Load
    event_id: str


async def note_claim(
    tx: Tx,
    tenant_id: str,
    record: OccurrenceRecord,
    member_id: str,
    *,
    now: datetime,
    task: Task | None = None,
    circle: Circle | None = None,
    settings: Mapping[str, MemberSettings] | None = None,
) -> Overload | None:
    """After `member_id`'s claim on `record` was stored: if it takes them over their capacity
    in the occurrence's period (`fairness.period_of`), and the host has not heard of that
    period yet, write `member.overloaded` to the outbox (after the claim's `task.claimed`: same
    ordering key). The claim stands either way. `task`, `circle` and the circle's members'
    `settings`: as the caller read them (else read here)."""
    if task is None:
        task = await tx.get_task(tenant_id, record.occurrence.task_id)
    if task is None or task.kind == "visit":
        return None
    if circle is None or circle.citizen.id != task.citizen_id:
        circle, settings = await tx.get_circle(tenant_id, task.citizen_id), None
    member = None if circle is None else circle.member(member_id)
    if circle is None or member is None:
        return None
    if settings is None:
        settings = await tx.get_member_settings(tenant_id, circle.citizen.id)
    member = effective_member(member, settings.get(member_id))
    hours, tasks = window_capacity(member.capacity)
    if hours is None and tasks is None:
        return None  # nothing declared: nothing to be over
    zone = ZoneInfo(circle.citizen.timezone)
    period = period_of(record.occurrence.start, zone)
    held = await tx.list_held(tenant_id, circle.citizen.id, period.start, period.end)
    over = LoadBook.build(held, zone).over_period(member_id, member.capacity, period.start)
    if over is None:
        return None
    window, load = over
    if not await tx.note_overload(
        tenant_id, circle.citizen.id, member_id, window.period_start, now=now
    ):
        return None  # told already
    event_id = await tx.add_outbox(
        tenant_id,
        EVENT_OVERLOADED,
        {
            "citizen_id": circle.citizen.id,
            "member_id": member_id,
            "load_hours": round(load.hours, 2),
            "capacity_hours": hours,
            "load_tasks": load.tasks,
            "capacity_tasks": tasks,
            "period_start": window.period_start.isoformat(),
            "period_end": window.end.date().isoformat(),
        },
        now=now,
        ordering_key=task.id,
    )
    await tx.audit(
        AuditEntry(
            tenant_id=tenant_id,
            at=now,
            actor=member_id,
            action=EVENT_OVERLOADED,
            channel="host",
            subject=f"member:{member_id}",
            detail={
                "citizen_id": circle.citizen.id,
                "period_start": window.period_start.isoformat(),
                "occurrence_id": record.occurrence.id,
            },
        )
    )
    return Overload(window, load, event_id)


# --- the member's own settings ---------------------------------------------------------------


async def save_own_settings(
    tx: Tx, tenant_id: str, citizen_id: str, member_id: str, values: CareValues, *, now: datetime
) -> MemberSettings | None:
    """Store what the member set for the circle (None: they are not in it). Only fields that
    differ from the host's count as theirs; with none, their earlier setting goes."""
    circle = await tx.get_circle(tenant_id, citizen_id)
    host_member = None if circle is None else circle.member(member_id)
    if circle is None or host_member is None:
        return None
    host = values_of(host_member)
    fields = frozenset(f for f in FIELDS if getattr(values, f) != getattr(host, f))
    settings = MemberSettings(
        tenant_id, citizen_id, member_id, values, host, fields, circle.version, now
    )
    if fields:
        await tx.save_member_settings(settings)
    else:
        await tx.delete_member_settings(tenant_id, citizen_id, member_id)
    await tx.audit(
        AuditEntry(
            tenant_id=tenant_id,
            at=now,
            actor=member_id,
            action="member.settings",
            channel="link",
            subject=f"member:{member_id}",
            detail={"citizen_id": citizen_id, "fields": sorted(fields)},
        )
    )
    return settings


async def settle_member_settings(tx: Tx, tenant_id: str, circle: Circle, *, now: datetime) -> None:
    """A newer `circle.updated` (just saved): fields whose host value changed go back to the
    host; a member who left the circle loses their setting."""
    stored = await tx.get_member_settings(tenant_id, circle.citizen.id)
    for member_id, settings in stored.items():
        host_member = circle.member(member_id)
        settled = None if host_member is None else settle(settings, host_member)
        if settled == settings:
            continue
        if settled is None:
            await tx.delete_member_settings(tenant_id, circle.citizen.id, member_id)
        else:
            await tx.save_member_settings(settled)
        if host_member is not None:
            taken = sorted(settings.fields - (settled.fields if settled else frozenset()))
            await tx.audit(
                AuditEntry(
                    tenant_id=tenant_id,
                    at=now,
                    actor="host",
                    action="member.settings.superseded",
                    channel="host",
                    subject=f"member:{member_id}",
                    detail={"citizen_id": circle.citizen.id, "fields": taken},
                )
            )


# --- for the staff dashboard and the API -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadStanding:
    """One member's load against their capacity. `member` has their own setting applied;
    `capacity_*` are four weeks of the weekly capacity (None: not declared)."""

    member: Member
    window: Window  # the rolling window now
    load: Load  # held in `window`
    capacity_hours: float | None
    capacity_tasks: int | None
    weekly: tuple[tuple[datetime, Load], ...]  # Monday -> load, for a chart
    own: frozenset[CareField]  # fields the member's own setting decides
    relief: tuple[Period, ...]  # requested or approved

    @property
    def over(self) -> bool:
        return over_capacity(self.load, self.member.capacity)


@dataclass(frozen=True, slots=True)
class CircleLoad:
    circle: Circle  # every member's own setting applied
    window: Window
    members: tuple[LoadStanding, ...]  # in the host's order


async def circle_load(
    tx: Tx,
    tenant_id: str,
    citizen_id: str,
    now: datetime,
    *,
    weeks_before: int = WEEKS,
    weeks_after: int = 2 * WEEKS,
) -> CircleLoad | None:
    """Every current member's load in the rolling window at `now` (this week and the three
    after it), and week by week from `weeks_before` weeks before this one to `weeks_after`
    weeks after it. None when there is no such circle."""
    circle = await tx.get_circle(tenant_id, citizen_id)
    if circle is None:
        return None
    care = await read_circle_care(tx, tenant_id, citizen_id)
    zone = ZoneInfo(circle.citizen.timezone)
    this_week = week_start(now, zone)
    first = load_window(this_week - timedelta(weeks=weeks_before), zone).start
    last = load_window(this_week + timedelta(weeks=weeks_after), zone).start
    held = await tx.list_held(tenant_id, citizen_id, first, last)
    book = LoadBook.build(held, zone)
    window = load_window(now, zone)
    effective = care.effective(circle)
    relief = care.relief_periods()
    standings = []
    for member in effective.members:
        hours, tasks = window_capacity(member.capacity)
        settings = care.settings.get(member.id)
        standings.append(
            LoadStanding(
                member=member,
                window=window,
                load=book.load(member.id, window),
                capacity_hours=hours,
                capacity_tasks=tasks,
                weekly=book.weekly(member.id, first, weeks_before + weeks_after),
                own=frozenset(settings.fields) if settings else frozenset(),
                relief=relief.get(member.id, ()),
            )
        )
    return CircleLoad(effective, window, tuple(standings))


async def offer_fairness(
    tx: Tx, tenant_id: str, occurrence_id: str, now: datetime
) -> tuple[Offer, tuple[Fairness, ...]] | None:
    """Every member's standing for one occurrence (explain each with `fairness.explain`);
    None when the occurrence, its task or its circle is unknown."""
    record = await tx.get_occurrence(tenant_id, occurrence_id)
    task = None if record is None else await tx.get_task(tenant_id, record.occurrence.task_id)
    if record is None or task is None:
        return None
    circle = await tx.get_circle(tenant_id, task.citizen_id)
    if circle is None:
        return None
    care = await read_circle_care(tx, tenant_id, circle.citizen.id)
    zone = ZoneInfo(circle.citizen.timezone)
    start = record.occurrence.start
    windows = windows_containing(start, zone)
    held = await tx.list_held(
        tenant_id,
        circle.citizen.id,
        min(windows[0].start, now - LOOKBACK),
        max(windows[-1].end, now + timedelta(weeks=WEEKS)),  # `share` looks four weeks ahead
    )
    offer = offer_of(task, record)
    members = care.effective(circle).members
    standings = fairness_scores(
        offer, members, LoadBook.build(held, zone), now=now, relief=care.relief_periods()
    )
    return offer, standings
