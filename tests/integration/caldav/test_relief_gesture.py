"""Relief from the calendar app, end to end on the embedded CalDAV server: Anna makes an event
titled "Aflastning" in her care calendar; her claims in that period are released and suggested
to Bo in his calendar, and the host is asked (`relief.requested`). carecal runs under uvicorn
with its worker; a real CalDAV client plays the members' calendar apps."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx
from icalendar import Calendar
from sqlalchemy import select

from adapters.caldav.port import NotFound
from adapters.store.sql import SqlStore
from adapters.store.tables import outbox
from plugin.web.app import open_store
from tests.integration.caldav.support import (
    CPH,
    Served,
    calendar_app,
    eventually,
    issue,
    one_off,
)
from tests.integration.support import auth, circle_event, post_event

ANNA = {"id": "m-anna", "name": "Anna", "email": "anna@example.org", "role": "relative",
        "visibility": "full", "locale": "da", "calendar": "hosted"}  # fmt: skip
BO = {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "limited", "locale": "da",
      "calendar": "hosted"}  # fmt: skip
ANNA_VIEW = "/dav/north~m-anna/c-123/"
BO_VIEW = "/dav/north~m-bo/c-123/"


def relief_event(first: date, last: date) -> bytes:
    """What Apple Calendar, Thunderbird or DAVx5 uploads for an all-day event over the days."""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Mozilla.org//Thunderbird//EN\r\n"
        "BEGIN:VEVENT\r\nUID:3f2b9c1e-relief-anna\r\nDTSTAMP:20270301T090000Z\r\n"
        f"DTSTART;VALUE=DATE:{first:%Y%m%d}\r\nDTEND;VALUE=DATE:{last + timedelta(days=1):%Y%m%d}"
        "\r\nSUMMARY:Aflastning\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


async def summaries(calendars: Any, view: str) -> dict[str, str] | None:
    try:
        listing = await calendars.list_etags(view)
    except NotFound:
        return None
    found = {}
    for _, body in (await calendars.fetch(view, list(listing))).values():
        for event in Calendar.from_ical(body).walk("VEVENT"):
            found[str(event["UID"])] = str(event["SUMMARY"])
    return found


async def test_an_aflastning_event_in_the_calendar_asks_for_relief(
    served: Served, http: httpx.AsyncClient
) -> None:
    assert (await post_event(http, circle_event(1, [ANNA, BO]))).status_code == 202
    anna, bo = await issue(http, "m-anna"), await issue(http, "m-bo")
    monday = datetime.now(CPH).date() + timedelta(days=7 - datetime.now(CPH).weekday())
    starts = [datetime.combine(monday + timedelta(days=d), datetime.min.time()).replace(hour=10)
              for d in (1, 3)]  # Tuesday and Thursday next week  # fmt: skip
    for n, start in enumerate(starts):
        assert (await post_event(http, one_off(start, task_id=f"t-{n}"))).status_code == 202
    uids = [f"t-{n}_{start:%Y%m%dT%H%M}@north" for n, start in enumerate(starts)]

    async with calendar_app(served, anna) as anna_app, calendar_app(served, bo) as bo_app:

        async def showing(app: Any, view: str, wanted: dict[str, str]) -> dict[str, str] | None:
            found = await summaries(app, view)
            if found is None or any(found.get(uid) != s for uid, s in wanted.items()):
                return None
            return found

        await eventually(
            lambda: showing(anna_app, ANNA_VIEW, dict.fromkeys(uids, "[Ledig] Indkøb"))
        )
        # Anna takes both through her claim links (her copies carry them).
        listing = await anna_app.list_etags(ANNA_VIEW)
        for _, body in (await anna_app.fetch(ANNA_VIEW, list(listing))).values():
            link = str(Calendar.from_ical(body).walk("VEVENT")[0]["URL"])
            async with httpx.AsyncClient() as browser:
                page = await browser.get(link)
                token = page.text.split('name="form_token" value="')[1].split('"')[0]
                done = await browser.post(
                    link, data={"action": "claim", "form_token": token},
                    headers={"sec-fetch-site": "same-origin"},
                )  # fmt: skip
                assert done.status_code == 200, done.text
        await eventually(lambda: showing(bo_app, BO_VIEW, dict.fromkeys(uids, "[Anna] Indkøb")))

        # She makes an all-day event "Aflastning" over next week in her care calendar.
        await anna_app.create(
            ANNA_VIEW, "relief-anna.ics", relief_event(monday, monday + timedelta(days=6))
        )

        # Her claims go back on offer: suggested to Bo, the one who can take them now.
        await eventually(
            lambda: showing(bo_app, BO_VIEW, dict.fromkeys(uids, "[Forslag] Indkøb")), within=10
        )
        found = await eventually(
            lambda: showing(anna_app, ANNA_VIEW, dict.fromkeys(uids, "[Ledig] Indkøb"))
        )
        assert found["3f2b9c1e-relief-anna"] == "Aflastning"  # hers, left as she made it
        for n in range(2):
            task = (await http.get(f"/api/v1/tasks/t-{n}", headers=auth())).json()
            assert task["occurrences"][0]["claims"] == []

    store = await open_store(served.settings, migrate=False)
    assert isinstance(store, SqlStore)
    try:
        async with store.transaction() as tx:
            [request] = await tx.list_relief_requests("north", "c-123")
            audit = await tx.list_audit("north", f"relief:{request.id}")
        assert (request.member_id, request.status) == ("m-anna", "requested")
        period = (request.start.astimezone(CPH), request.end.astimezone(CPH))
        assert [p.date() for p in period] == [monday, monday + timedelta(days=7)]
        assert [p.hour for p in period] == [0, 0]
        assert [(a.action, a.channel, a.detail["released"]) for a in audit] == [
            ("relief.requested", "caldav", 2)
        ]
        # (this tenant has no host URL: its events wait as dead letters for a replay)
        async with store.engine.connect() as connection:
            rows = (await connection.execute(select(outbox.c.type, outbox.c.data))).all()
        asked = [data for kind, data in rows if kind == "relief.requested"]
        assert [data["request_id"] for data in asked] == [request.id]
        assert [kind for kind, _ in rows].count("task.released") == 2
    finally:
        await store.close()
