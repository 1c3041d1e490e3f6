"""Claim links end to end: every hosted member's copy carries their own link, and a claim made
through a feed member's link reaches the hosted members' calendars."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx
from icalendar import Calendar

from adapters.caldav.port import NotFound
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
BO = {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "limited", "locale": "en",
      "calendar": "feed"}  # fmt: skip
ANNA_VIEW = "/dav/north~m-anna/c-123/"


async def test_a_claim_through_a_link_reaches_the_hosted_copies(
    served: Served, http: httpx.AsyncClient
) -> None:
    assert (await post_event(http, circle_event(1, [ANNA, BO]))).status_code == 202
    anna = await issue(http, "m-anna")
    bo = await issue(http, "m-bo")
    start = (datetime.now(CPH) + timedelta(days=3)).replace(
        hour=10, minute=0, second=0, microsecond=0, tzinfo=None
    )
    assert (await post_event(http, one_off(start, details="Netto"))).status_code == 202

    async with calendar_app(served, anna) as calendars:

        async def anna_copy(summary: str) -> Any:
            try:
                listing = await calendars.list_etags(ANNA_VIEW)
            except NotFound:
                return None
            fetched = await calendars.fetch(ANNA_VIEW, list(listing))
            events = [
                e for _, body in fetched.values() for e in Calendar.from_ical(body).walk("VEVENT")
            ]
            return events[0] if len(events) == 1 and events[0]["SUMMARY"] == summary else None

        copy = await eventually(lambda: anna_copy("[Ledig] Indkøb"))
        anna_link = str(copy["URL"])
        assert re.fullmatch(rf"{served.base}/c/[A-Za-z0-9_-]+", anna_link)
        assert anna_link in str(copy["DESCRIPTION"])
        page = await http.get(anna_link)
        assert page.status_code == 200
        assert '<html lang="da">' in page.text and "Netto" in page.text  # full visibility

        # Bo has only a feed; he claims through the link in it.
        feed = Calendar.from_ical((await http.get(bo["feed_url"])).content)
        [event] = feed.walk("VEVENT")
        bo_link = str(event["URL"])
        assert bo_link != anna_link  # personal
        form = re.search(r'name="form_token" value="([^"]+)"', (await http.get(bo_link)).text)
        assert form
        done = await http.post(
            bo_link,
            data={"action": "claim", "form_token": form.group(1)},
            headers={"sec-fetch-site": "same-origin"},
        )
        assert "Thank you! The task is yours." in done.text

        taken = await eventually(lambda: anna_copy("[Bo] Indkøb"))
        assert str(taken["STATUS"]) == "CONFIRMED"
        assert str(taken["URL"]) == anna_link  # stable: the copy's link did not change

    task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
    assert [(c["member_id"], c["channel"]) for c in task["occurrences"][0]["claims"]] == [
        ("m-bo", "link")
    ]
