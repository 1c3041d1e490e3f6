"""The member's own part of their setup page (`/setup/{token}`): what they can carry and when,
and asking for relief (`plugin.web.care_pages` draws it).

- `open_member_care(store, link, now)`: per circle of the member, their capacity, weekly
  availability and pause as they apply now (their own setting where it decides, else the
  host's, and which is which), their load in the rolling four-week window, and their relief
  requests that have not ended;
- `save_capacity(...)`: the member's own setting for one circle (`capacity.save_own_settings`;
  precedence in `plugin.domain.capacity`), and a sync of the circle's calendars, since
  suggestions follow capacity;
- `ask_relief(...)`: `relief.request_relief` through channel `link`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from plugin.domain.capacity import CareField, CareValues
from plugin.domain.model import Circle, Member, ReliefRequest
from plugin.services.capacity import LoadStanding, circle_load, save_own_settings
from plugin.services.ports import MemberLink, Store
from plugin.services.relief import ReliefOutcome, ReliefRefusal, request_relief
from plugin.services.view_sync import enqueue_view_syncs

__all__ = ["CircleCareView", "ask_relief", "open_member_care", "save_capacity"]


@dataclass(frozen=True, slots=True)
class CircleCareView:
    circle: Circle
    member: Member  # with their own setting applied
    own: frozenset[CareField]  # the fields their own setting decides
    standing: LoadStanding
    relief: tuple[ReliefRequest, ...]  # theirs, not ended, by start


async def open_member_care(
    store: Store, link: MemberLink, *, now: datetime
) -> tuple[CircleCareView, ...]:
    views: list[CircleCareView] = []
    async with store.transaction() as tx:
        for citizen_id in await tx.list_member_circles(link.tenant_id, link.member_id):
            load = await circle_load(tx, link.tenant_id, citizen_id, now)
            if load is None:
                continue
            standing = next((s for s in load.members if s.member.id == link.member_id), None)
            if standing is None:
                continue
            relief = await tx.list_relief_requests(link.tenant_id, citizen_id)
            views.append(
                CircleCareView(
                    circle=load.circle,
                    member=standing.member,
                    own=standing.own,
                    standing=standing,
                    relief=tuple(
                        r for r in relief if r.member_id == link.member_id and r.end > now
                    ),
                )
            )
    return tuple(views)


async def save_capacity(
    store: Store, link: MemberLink, citizen_id: str, values: CareValues, *, now: datetime
) -> bool:
    """False when the member is not in that circle (any more)."""
    async with store.transaction() as tx:
        settings = await save_own_settings(
            tx, link.tenant_id, citizen_id, link.member_id, values, now=now
        )
        if settings is None:
            return False
        circle = await tx.get_circle(link.tenant_id, citizen_id)
        if circle is not None:
            await enqueue_view_syncs(tx, link.tenant_id, circle, now=now)
    return True


async def ask_relief(
    store: Store,
    link: MemberLink,
    citizen_id: str,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
) -> ReliefOutcome | ReliefRefusal:
    async with store.transaction() as tx:
        return await request_relief(
            tx, link.tenant_id, citizen_id, link.member_id, start, end, channel="link", now=now
        )
