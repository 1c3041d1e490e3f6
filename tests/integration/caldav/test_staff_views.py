"""Staff work in members' calendars, end to end on the embedded CalDAV server: a visit the host
assigns and an occurrence staff assign through the API are held in Sara's calendar and read
"[Sara] …" in the relatives'; a relative staff asked sees "[Til dig] …" and still answers it
in her own calendar app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from icalendar import Calendar

from adapters.caldav.client import CalDAVClient
from adapters.caldav.port import NotFound
from plugin.sync.fingerprint import prop_values
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
      "calendar": "hosted"}  # fmt: skip
SARA = {"id": "m-sara", "name": "Sara", "email": "sara@kommune.example", "role": "staff",
        "visibility": "full", "locale": "da", "calendar": "hosted"}  # fmt: skip
WITHIN = 10.0  # three views follow each change


def view(member_id: str) -> str:
    return f"/dav/north~{member_id}/c-123/"


def copy_of(
    calendars: CalDAVClient, member_id: str, occurrence_id: str, summary: str
) -> Callable[[], Awaitable[tuple[str, str, bytes, Any] | None]]:
    """A probe: the member's copy of the occurrence once its SUMMARY reads `summary`."""

    async def probe() -> tuple[str, str, bytes, Any] | None:
        try:
            listing = await calendars.list_etags(view(member_id))
        except NotFound:
            return None
        fetched = await calendars.fetch(view(member_id), list(listing))
        for href, (etag, body) in fetched.items():
            [event] = Calendar.from_ical(body).walk("VEVENT")
            if str(event["UID"]) == f"{occurrence_id}@north" and str(event["SUMMARY"]) == summary:
                return href, etag, body, event
        return None

    return probe


def partstat(event: Any) -> str:
    [attendee] = prop_values(event, "ATTENDEE")
    return str(attendee.params["PARTSTAT"])


async def test_staff_assignments_are_held_by_sara_and_shown_as_hers(
    served: Served, http: httpx.AsyncClient
) -> None:
    assert (await post_event(http, circle_event(1, [ANNA, BO, SARA]))).status_code == 202
    anna, bo, sara = [await issue(http, m) for m in ("m-anna", "m-bo", "m-sara")]
    day = (datetime.now(CPH) + timedelta(days=7)).replace(
        hour=0, minute=0, second=0, microsecond=0, tzinfo=None
    )
    shopping = day + timedelta(hours=10)
    assert (await post_event(http, one_off(shopping))).status_code == 202
    visit_start = day + timedelta(days=1, hours=9)
    visit = {"type": "visit.assigned", "data": {
        "id": "v-9", "citizen_id": "c-123", "version": 1, "staff_member_id": "m-sara",
        "category": "visit", "start": f"{visit_start:%Y-%m-%dT%H:%M:%S}",
        "end": f"{visit_start + timedelta(minutes=30):%Y-%m-%dT%H:%M:%S}",
        "timezone": "Europe/Copenhagen"}}  # fmt: skip
    assert (await post_event(http, visit)).status_code == 202
    task_occurrence = f"t-1_{shopping:%Y%m%dT%H%M}"
    visit_occurrence = f"v-9_{visit_start:%Y%m%dT%H%M}"

    assigned = await http.post(
        f"/api/v1/occurrences/{task_occurrence}/assign",
        json={"member_id": "m-sara"},
        headers=auth(),
    )
    assert assigned.status_code == 200 and assigned.json()["outcome"] == "assigned"

    async with (
        calendar_app(served, anna) as anna_app,
        calendar_app(served, bo) as bo_app,
        calendar_app(served, sara) as sara_app,
    ):
        # Sara holds both: her own copies say so, and block her time.
        for occurrence, summary in ((task_occurrence, "[Dig] Indkøb"),
                                    (visit_occurrence, "[Dig] Besøg")):  # fmt: skip
            *_, event = await eventually(copy_of(sara_app, "m-sara", occurrence, summary), WITHIN)
            assert str(event["STATUS"]) == "CONFIRMED" and str(event["TRANSP"]) == "OPAQUE"
            assert partstat(event) == "ACCEPTED"
        # The relatives see when staff come, and who.
        for app, member_id, words in ((anna_app, "m-anna", ("Indkøb", "Besøg")),
                                      (bo_app, "m-bo", ("Shopping", "Visit"))):  # fmt: skip
            for occurrence, title in zip((task_occurrence, visit_occurrence), words, strict=True):
                probe = copy_of(app, member_id, occurrence, f"[Sara] {title}")
                *_, event = await eventually(probe, WITHIN)
                assert str(event["STATUS"]) == "CONFIRMED"
                assert str(event["TRANSP"]) == "TRANSPARENT"
                assert partstat(event) == "NEEDS-ACTION"

        # Staff ask Anna to take another one: only her copy changes, and it is still hers
        # to answer. She accepts in her calendar app.
        later = shopping + timedelta(days=2)
        assert (await post_event(http, one_off(later, task_id="t-2"))).status_code == 202
        asked_occurrence = f"t-2_{later:%Y%m%dT%H%M}"
        asked = await http.post(
            f"/api/v1/occurrences/{asked_occurrence}/assign",
            json={"member_id": "m-anna"},
            headers=auth(),
        )
        assert asked.status_code == 200 and asked.json()["outcome"] == "asked"
        probe = copy_of(anna_app, "m-anna", asked_occurrence, "[Til dig] Indkøb")
        href, etag, body, event = await eventually(probe, WITHIN)
        assert str(event["DESCRIPTION"]).startswith("Personalet har spurgt")
        assert partstat(event) == "NEEDS-ACTION" and str(event["STATUS"]) == "TENTATIVE"
        task = (await http.get("/api/v1/tasks/t-2", headers=auth())).json()
        assert task["occurrences"][0]["claims"] == []

        calendar = Calendar.from_ical(body)
        for attendee in prop_values(calendar.walk("VEVENT")[0], "ATTENDEE"):
            attendee.params["PARTSTAT"] = "ACCEPTED"
        await anna_app.update(href, bytes(calendar.to_ical()), etag)

        await eventually(copy_of(anna_app, "m-anna", asked_occurrence, "[Dig] Indkøb"), WITHIN)
        await eventually(copy_of(bo_app, "m-bo", asked_occurrence, "[Anna] Shopping"), WITHIN)
        task = (await http.get("/api/v1/tasks/t-2", headers=auth())).json()
        claims = task["occurrences"][0]["claims"]
        assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "caldav")]
