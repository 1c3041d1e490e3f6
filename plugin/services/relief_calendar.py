"""Relief asked for in the calendar app: the view sync hands over the objects in a member's
collection that are not carecal's copies, and a relief event among them
(`plugin.sync.relief`) becomes a relief request of that member (channel `caldav`).

The request id derives from the member, the circle and the event's UID, so reading the same
event again in a later sync asks nothing twice; the event itself is the member's and is never
changed. At most `MAX_FOREIGN` foreign objects are read per run, in href order (a collection
is not a place to store hundreds of one's own events, and a hostile one must not cost a run
much). When more changed at once (an app importing a year of events into carecal's
calendar), none is lost: the run answers the href it read up to (`ForeignRead.after`, kept in
the view's state), and the next runs read on after it in the collection's full listing.
One of them may be carecal's own copy at a new href (the app moved it, or deleted it and
made it again under a name of its own, while its own href is gone): it is answered in
`ForeignRead.moved`, for the view sync to follow, and read for nothing else. Another copy of
carecal's (its UID and X-CARECAL-TASK) is answered in `ForeignRead.strays`: the app moved it
here from another of the member's care calendars, where it was a pass; the view sync deletes
it unless it is one of this view's.

    read = await relief_from_collection(store, fetch, view, circle, records, listing,
                                        now=now, walk=full_listing, after=state.foreign_after)
    read.released  # a new request released claims: the caller renders the view again
    read.after     # more to read: keep it, and run the view again
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from plugin.domain.model import Circle
from plugin.services.calendar_port import Body
from plugin.services.calendars import View
from plugin.services.ports import Store
from plugin.services.relief import ReliefOutcome, request_relief
from plugin.sync.gestures import object_uid
from plugin.sync.planner import SyncRecord
from plugin.sync.relief import read_relief_event

__all__ = ["MAX_FOREIGN", "ForeignRead", "gesture_request_id", "relief_from_collection"]

log = logging.getLogger(__name__)

MAX_FOREIGN = 20
MAX_BYTES = 64 * 1024
MAX_COPY_BYTES = 256 * 1024  # a moved copy of carecal's, with the member's alarms (view_sync)


@dataclass(frozen=True, slots=True)
class ForeignRead:
    """What reading the member's own objects came to: `released`, a new request released
    claims (render the view again); `after`, more are left to read after this href;
    `moved`, carecal's copies found at another href (UID -> href): the app moved the copy
    (a MOVE, or deleted it and made it again under a name of its own)."""

    released: bool = False
    after: str | None = None
    moved: Mapping[str, str] = field(default_factory=dict)
    strays: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # UID -> href, ETag


def gesture_request_id(view: View, uid: str) -> str:
    """Stable per member, circle and event: `r-cal-<24 hex digits>`."""
    digest = hashlib.sha256(
        f"{view.tenant_id}\0{view.member_id}\0{view.citizen_id}\0{uid}".encode()
    )
    return f"r-cal-{digest.hexdigest()[:24]}"


async def relief_from_collection(
    store: Store,
    fetch: Callable[[Sequence[str]], Awaitable[Mapping[str, tuple[str, Body]]]],
    view: View,
    circle: Circle,
    records: Mapping[str, SyncRecord],
    listing: Mapping[str, str],
    *,
    now: datetime,
    full: bool = False,
    after: str | None = None,
    walk: Mapping[str, str] | None = None,
) -> ForeignRead:
    """Read the foreign objects in `listing` (href -> ETag: the run's listing; every object
    in the collection when `full`, else the records' and those changed since the last token)
    with `fetch` (hrefs -> href -> (ETag, body), a multiget of the collection; body None: too
    large to read) and turn relief events into relief requests. `after`: an earlier run read
    up to this href, so those after it in `walk` (the collection's full listing) are read
    too; what a delta says changed before it, again."""
    ours = {record.href for record in records.values() if record.href is not None}
    if after is None:
        wanted = {href for href in listing if href not in ours}
    else:
        ahead = listing if full else (walk or {})
        wanted = {href for href in ahead if href not in ours and href > after}
        if not full:
            wanted.update(href for href in listing if href not in ours)
    ordered = sorted(wanted)
    foreign = ordered[:MAX_FOREIGN]
    left = foreign[-1] if len(ordered) > MAX_FOREIGN else None
    if left is not None:
        log.info(
            "more of the member's own objects changed than a run reads; read on later",
            extra={
                "tenant": view.tenant_id,
                "member_id": view.member_id,
                "left": len(ordered) - len(foreign),
            },
        )
    if not foreign:
        return ForeignRead()
    zone = ZoneInfo(circle.citizen.timezone)
    # A copy whose href is gone (or a tombstone: its pass read already) met at a new one.
    vanished = {uid for uid, r in records.items() if r.href is None or r.href not in listing}
    moved: dict[str, str] = {}
    strays: dict[str, tuple[str, str]] = {}
    own_suffix = f"@{view.tenant_id}"
    asks = []
    for href, (etag, body) in sorted((await fetch(foreign)).items()):
        if body is None:
            log.info(
                "own event too large to read",
                extra={"tenant": view.tenant_id, "member_id": view.member_id},
            )
            continue
        uid = object_uid(body, max_bytes=MAX_COPY_BYTES)
        if uid in vanished and uid not in moved:
            moved[uid] = href
            continue
        if uid is not None and uid.endswith(own_suffix) and b"X-CARECAL-TASK" in body:
            strays.setdefault(uid, (href, etag))
            continue
        ask = read_relief_event(body, zone=zone, max_bytes=MAX_BYTES, own_suffix=own_suffix)
        if ask is not None:
            asks.append(ask)
    if not asks:
        return ForeignRead(after=left, moved=moved, strays=strays)
    changed = False
    async with store.transaction() as tx:
        for ask in asks:
            outcome = await request_relief(
                tx,
                view.tenant_id,
                view.citizen_id,
                view.member_id,
                ask.start,
                ask.end,
                channel="caldav",
                now=now,
                request_id=gesture_request_id(view, ask.uid),
            )
            if isinstance(outcome, ReliefOutcome):
                if outcome.created:
                    log.info(
                        "relief asked for in the calendar",
                        extra={
                            "tenant": view.tenant_id,
                            "member_id": view.member_id,
                            "citizen_id": view.citizen_id,
                            "request_id": outcome.request.id,
                            "released": len(outcome.released),
                        },
                    )
                changed = changed or bool(outcome.released)
            else:
                log.info(
                    "relief event not taken",
                    extra={"tenant": view.tenant_id, "member_id": view.member_id,
                           "reason": outcome.value},
                )  # fmt: skip
    return ForeignRead(changed, left, moved, strays)
