"""A member asks for relief for a period (DESIGN.md principle 3): from their setup page, through
the API (`POST /api/v1/relief-requests`) or from their calendar app (an event titled
"Aflastning"/"Relief": `plugin.sync.relief`).

`request_relief(tx, ...)` does it all in the caller's transaction:

1. the request is stored (`status` "requested", version 0: the host's `relief.decided` carries
   version 1 or more, so it is always newer);
2. every claim the member holds on an occurrence in the period that has not started yet is
   released as if they had released it themselves (`claiming.decide`, through the channel
   they asked on: audited, `task.released` to the host), so it is offered to the others again;
   while the request is requested or approved, nothing in the period is suggested to them;
3. `relief.requested` (`request_id`, `citizen_id`, `member_id`, `start`, `end`, local ISO 8601
   with offset) goes to the host, which books municipal relief and answers with
   `relief.decided` (`plugin.services.ingest`);
4. every calendar of the circle is queued for a sync.

Asking again with the same `request_id` (a calendar event read twice) changes nothing.

    outcome = await request_relief(tx, "north", "c-123", "m-anna", start, end,
                                   channel="api", now=now)
    outcome.released   # ('t-1_20270309T1000', 't-2_20270311T1000', 't-3_20270313T1000')
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from plugin.domain.model import Channel, ReliefRequest
from plugin.services.claiming import Ask, decide
from plugin.services.ports import AuditEntry, Tx

__all__ = [
    "EVENT_REQUESTED",
    "MAX_PERIOD",
    "ReliefOutcome",
    "ReliefRefusal",
    "new_request_id",
    "request_relief",
]

EVENT_REQUESTED = "relief.requested"
MAX_PERIOD = timedelta(days=366)
RELIEF_ROLES = ("relative", "network")  # staff are relieved by their employer, not here


class ReliefRefusal(StrEnum):
    UNKNOWN_CIRCLE = "unknown_circle"
    NOT_IN_CIRCLE = "not_in_circle"
    ROLE = "role"  # staff
    INVALID_PERIOD = "invalid_period"  # end not after start, over, or longer than a year


@dataclass(frozen=True, slots=True)
class ReliefOutcome:
    request: ReliefRequest
    released: tuple[str, ...]  # occurrence ids
    created: bool  # False: this request id was asked before; nothing was done again


def new_request_id() -> str:
    return f"r-{secrets.token_hex(8)}"


async def request_relief(
    tx: Tx,
    tenant_id: str,
    citizen_id: str,
    member_id: str,
    start: datetime,
    end: datetime,
    *,
    channel: Channel,
    now: datetime,
    request_id: str | None = None,
) -> ReliefOutcome | ReliefRefusal:
    # Fans out through view_sync, which reads relief events through this module (lazily, so
    # neither import waits for the other).
    from plugin.services.view_sync import enqueue_view_syncs

    if request_id is not None:
        known = await tx.get_relief_request(tenant_id, request_id)
        if known is not None:
            return ReliefOutcome(known, (), created=False)
    circle = await tx.get_circle(tenant_id, citizen_id)
    if circle is None:
        return ReliefRefusal.UNKNOWN_CIRCLE
    member = circle.member(member_id)
    if member is None:
        return ReliefRefusal.NOT_IN_CIRCLE
    if member.role not in RELIEF_ROLES:
        return ReliefRefusal.ROLE
    if end <= start or end <= now or end - start > MAX_PERIOD:
        return ReliefRefusal.INVALID_PERIOD
    zone = ZoneInfo(circle.citizen.timezone)
    request = ReliefRequest(
        tenant_id=tenant_id,
        id=request_id or new_request_id(),
        citizen_id=citizen_id,
        member_id=member_id,
        start=start.astimezone(zone),
        end=end.astimezone(zone),
    )
    await tx.save_relief_request(request)
    released: list[str] = []
    # An occurrence overlapping the period may start up to a day before it.
    for held in await tx.list_held(tenant_id, citizen_id, start - timedelta(days=1), end):
        if held.member_id != member_id or held.start < now:
            continue
        if not (held.start < end and held.end > start):
            continue
        decision = await decide(
            tx, tenant_id, held.occurrence_id, member_id, Ask.RELEASE, channel=channel, now=now
        )
        if decision is not None and decision.remove_claim_of is not None:
            released.append(held.occurrence_id)
    await tx.add_outbox(
        tenant_id,
        EVENT_REQUESTED,
        {
            "request_id": request.id,
            "citizen_id": citizen_id,
            "member_id": member_id,
            "start": request.start.isoformat(),
            "end": request.end.isoformat(),
        },
        now=now,
        ordering_key=f"relief:{request.id}",
    )
    await tx.audit(
        AuditEntry(
            tenant_id=tenant_id,
            at=now,
            actor=member_id,
            action=EVENT_REQUESTED,
            channel=channel,
            subject=f"relief:{request.id}",
            detail={"citizen_id": citizen_id, "released": len(released)},
        )
    )
    await enqueue_view_syncs(tx, tenant_id, circle, now=now)
    return ReliefOutcome(request, tuple(released), created=True)
