"""A member's read-only ICS feed (`/feeds/{token}.ics`), for calendar apps without CalDAV.

The feed is the member's whole view in the tenant — every circle they currently belong to —
rendered by the very function that renders their CalDAV copies (`render_member_view`), merged
into one VCALENDAR for a subscription:

- `METHOD:PUBLISH`, `PRODID`, `VERSION`, `CALSCALE`, `X-WR-CALNAME`/`NAME` (the citizen's
  collection name, or "Omsorg"/"Care" across several circles), `X-WR-TIMEZONE`,
  `REFRESH-INTERVAL;VALUE=DURATION` (RFC 7986) and `X-PUBLISHED-TTL` (Outlook, Apple);
- one VTIMEZONE per zone used, spanning the years of all its events;
- each VEVENT as in the member's CalDAV copy, but without the ATTENDEE: RFC 5546 forbids it in
  a PUBLISH, and a subscribed calendar cannot answer an invitation anyway (the claim link in
  URL and DESCRIPTION is how a feed member claims).

The body is deterministic for a given state and day: DTSTAMP is the start of the current UTC
day, not the request's time, so the strong ETag (a hash of the body) stays the same between
polls until something changes, and a client's `If-None-Match` gets a 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from icalendar import Calendar, Event, vDuration

from plugin.config import Settings
from plugin.services.capacity import read_circle_care
from plugin.services.links import LinkKind, Refusal, claim_url, resolve
from plugin.services.member_view import HISTORY, organizer_address, render_member_view
from plugin.services.ports import Store
from plugin.sync.render import PRODID, vtimezone

__all__ = ["REFRESH_INTERVAL", "Feed", "member_feed"]

REFRESH_INTERVAL = timedelta(hours=1)
_CARE = {"da": "Omsorg", "en": "Care"}


@dataclass(frozen=True, slots=True)
class Feed:
    body: bytes
    etag: str  # strong: a quoted hash of the body


async def member_feed(
    store: Store, settings: Settings, token: str, *, now: datetime
) -> Feed | Refusal:
    public_url = settings.server.public_url
    horizon = timedelta(weeks=settings.horizon_weeks)
    stamp = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with store.transaction() as tx:
        resolved = await resolve(tx, token, LinkKind.FEED)
        if isinstance(resolved, Refusal):
            return resolved
        link, _ = resolved
        names: list[str] = []
        zones: list[str] = []
        locale = "da"
        events: list[Event] = []
        for citizen_id in await tx.list_member_circles(link.tenant_id, link.member_id):
            circle = await tx.get_circle(link.tenant_id, citizen_id)
            member = None if circle is None else circle.member(link.member_id)
            if circle is None or member is None:
                continue
            locale = member.locale
            names.append(circle.citizen.display_name)
            zones.append(circle.citizen.timezone)
            tasks = await tx.list_tasks(link.tenant_id, citizen_id)
            occurrences = await tx.occurrences_of_citizen(
                link.tenant_id, citizen_id, ended_after=now - HISTORY
            )
            care = await read_circle_care(tx, link.tenant_id, citizen_id)  # suggestions
            for copy in render_member_view(
                circle,
                member,
                tasks,
                occurrences,
                claim_link=lambda occurrence_id: claim_url(public_url, link, occurrence_id),
                organizer=organizer_address(public_url),
                domain=link.tenant_id,  # as view_sync: the UIDs of the CalDAV copies
                horizon=horizon,
                now=now,
                stamp=stamp,
                care=care,
            ):
                events.extend(c for c in copy.subcomponents if isinstance(c, Event))
    body = _calendar(events, names, zones, locale).to_ical()
    return Feed(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def _calendar(events: list[Event], names: list[str], zones: list[str], locale: str) -> Calendar:
    language = locale.split("-")[0].split("_")[0].lower()
    care = _CARE.get(language, _CARE["da"])
    name = f"{names[0]} \N{EN DASH} {care.lower()}" if len(names) == 1 else care
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", name)
    calendar.add("name", name)
    calendar.add("x-wr-timezone", zones[0] if zones else "Europe/Copenhagen")
    calendar.add("refresh-interval", REFRESH_INTERVAL, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", vDuration(REFRESH_INTERVAL))
    years: dict[str, tuple[int, int]] = {}
    for event in events:
        del event["attendee"]
        for key in ("dtstart", "dtend"):
            tzid = event[key].params.get("TZID")
            year = event.decoded(key).year
            if tzid:
                first, last = years.get(tzid, (year, year))
                years[tzid] = (min(first, year), max(last, year))
    for tzid in sorted(years):
        first, last = years[tzid]
        calendar.add_component(vtimezone(tzid, first, last + 1))
    for event in events:
        calendar.add_component(event)
    return calendar
