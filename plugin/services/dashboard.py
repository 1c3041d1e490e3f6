"""What the staff dashboard shows of one circle (`/staff/circles/{citizen_id}`), read in one
transaction: `read_dashboard` → `DashboardData`.

- the coming weeks' occurrences (`WINDOW`, four weeks from now), each with who holds it, whom
  staff asked, and its staffing risk (`plugin.domain.staffing.risk_of`);
- the ones that need staff now: unfilled (claim deadline passed with free slots) and at risk
  (the deadline within `at_risk`), soonest due first;
- every current member's load against their capacity, as `plugin.services.capacity` measures
  it (the member's own settings applied): the rolling window (this week and the three after
  it, what `member.overloaded` is about) and the four weeks before it, against four weeks of
  their weekly capacity;
- open relief requests (requested, not yet ended).

Names are the ones the host gave; nothing else about a member (no e-mail, no CPR: the host
never sends one) leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from plugin.domain.fairness import WEEKS, Load, Window, over_capacity
from plugin.domain.model import (
    Circle,
    Citizen,
    Member,
    OccurrenceRecord,
    ReliefRequest,
    Task,
    TaskStatus,
)
from plugin.domain.staffing import Risk, due_at, risk_of
from plugin.services.capacity import LoadStanding, circle_load
from plugin.services.ports import Store

__all__ = [
    "WINDOW",
    "DashboardData",
    "MemberLoad",
    "Slot",
    "list_circles",
    "read_dashboard",
]

WINDOW = timedelta(weeks=WEEKS)  # the coming weeks listed


@dataclass(frozen=True, slots=True)
class Slot:
    """One occurrence as staff see it."""

    task: Task
    record: OccurrenceRecord
    holders: tuple[str, ...]  # display names, in claim order
    asked: tuple[str, ...]  # names of members staff asked who have not answered yet
    risk: Risk | None
    due: datetime  # the claim deadline, else the start

    @property
    def cancelled(self) -> bool:
        return self.record.occurrence.cancelled or self.task.status is TaskStatus.CANCELLED

    @property
    def free_slots(self) -> int:
        return 0 if self.cancelled else max(0, self.record.people_needed - len(self.holders))


@dataclass(frozen=True, slots=True)
class MemberLoad:
    """Hours and tasks a member holds in the rolling window (`current`) and in the four weeks
    before it (`previous`), and four weeks of their weekly capacity (None: not declared)."""

    member: Member  # their own capacity setting applied
    previous: Load
    current: Load
    capacity_hours: float | None
    capacity_tasks: int | None

    @property
    def over(self) -> bool:
        """Over their capacity in the rolling window (`member.overloaded` to the host)."""
        return over_capacity(self.current, self.member.capacity)

    @property
    def previous_over(self) -> bool:
        return over_capacity(self.previous, self.member.capacity)


@dataclass(frozen=True, slots=True)
class DashboardData:
    circle: Circle
    now: datetime
    coming: tuple[Slot, ...]  # start in [now, now + WINDOW), by start
    attention: tuple[Slot, ...]  # unfilled and at risk, soonest due first
    window: Window  # the rolling window of `loads`
    loads: tuple[MemberLoad, ...]  # in the host's order of members
    relief: tuple[ReliefRequest, ...]  # open requests, by start


async def list_circles(store: Store, tenant_id: str) -> list[Citizen]:
    async with store.transaction() as tx:
        return await tx.list_citizens(tenant_id)


async def read_dashboard(
    store: Store, tenant_id: str, citizen_id: str, *, now: datetime, at_risk: timedelta
) -> DashboardData | None:
    """None when the tenant has no such circle."""
    async with store.transaction() as tx:
        circle = await tx.get_circle(tenant_id, citizen_id)
        if circle is None:
            return None
        tasks = await tx.list_tasks(tenant_id, citizen_id)
        # Listed: what starts within WINDOW of now (so ended after `now - WINDOW`).
        found = await tx.occurrences_of_citizen(tenant_id, citizen_id, ended_after=now - WINDOW)
        by_task = [(task, found.get(task.id, [])) for task in tasks]
        relief = await tx.list_relief_requests(tenant_id, citizen_id)
        load = await circle_load(
            tx, tenant_id, citizen_id, now, weeks_before=WEEKS, weeks_after=WEEKS
        )
    assert load is not None  # the circle was read in this very transaction
    names = {m.id: m.name for m in circle.members}
    slots: list[Slot] = []
    for task, records in by_task:
        for record in records:
            occurrence = record.occurrence
            if occurrence.cancelled and task.status is TaskStatus.ACTIVE:
                continue  # moved or dropped by a changed rule (as in members' calendars)
            if not now - WINDOW <= occurrence.start < now + WINDOW:
                continue
            slots.append(_slot(task, record, names, now=now, at_risk=at_risk))
    slots.sort(key=lambda s: (s.record.occurrence.start, s.record.occurrence.id))
    coming = tuple(s for s in slots if s.record.occurrence.start >= now)
    attention = tuple(sorted((s for s in slots if s.risk), key=lambda s: s.due))
    return DashboardData(
        circle=circle,
        now=now,
        coming=coming,
        attention=attention,
        window=load.window,
        loads=tuple(_member_load(standing) for standing in load.members),
        relief=tuple(r for r in relief if r.status == "requested" and r.end > now),
    )


def _holders(task: Task, record: OccurrenceRecord) -> tuple[str, ...]:
    """Member ids holding it; a visit's staff member holds it even before a claim is stored
    (as in members' calendars, `plugin.sync.render`)."""
    holders = tuple(c.member_id for c in record.claims)
    assigned = task.assigned_member_id
    if task.kind == "visit" and assigned is not None and assigned not in holders:
        holders = (*holders, assigned)
    return holders


def _slot(
    task: Task,
    record: OccurrenceRecord,
    names: dict[str, str],
    *,
    now: datetime,
    at_risk: timedelta,
) -> Slot:
    holders = _holders(task, record)
    answered = set(holders) | {p.member_id for p in record.passes}
    asked = tuple(
        names.get(o.member_id, o.member_id) for o in record.offers if o.member_id not in answered
    )
    return Slot(
        task=task,
        record=record,
        # A holder who left the circle is named by the host's id: staff can look it up.
        holders=tuple(names.get(h, h) for h in holders),
        asked=asked,
        risk=risk_of(task, record, now=now, within=at_risk),
        due=due_at(task, record),
    )


def _member_load(standing: LoadStanding) -> MemberLoad:
    """`circle_load` counts week by week from four weeks before this one: the first four are
    the previous window."""
    previous = Load()
    for _, week in standing.weekly[:WEEKS]:
        previous += week
    return MemberLoad(
        member=standing.member,
        previous=previous,
        current=standing.load,
        capacity_hours=standing.capacity_hours,
        capacity_tasks=standing.capacity_tasks,
    )
