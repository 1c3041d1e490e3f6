"""`POST /api/v1/occurrences/{id}/assign` through the real app, on SQLite and PostgreSQL: a
staff member is bound (claim through channel "staff", `task.claimed` to the host), a relative
is asked (their feed reads "[For you] …" until they answer), and every refusal is problem+json.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from icalendar import Calendar

from adapters.store.sql import SqlStore
from tests.integration.support import (
    FIXED_NOW,
    SOUTH_TOKEN,
    auth,
    circle_event,
    post_event,
    task_event,
)

FIRST = "t-1_20270316T1000"
SECOND = "t-1_20270323T1000"
SAME_ORIGIN = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}


async def _seed(client: httpx.AsyncClient) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    # One person per occurrence, so that a holder fills it.
    assert (await post_event(client, task_event(people_needed=1))).status_code == 202
    kim = {"id": "m-kim", "name": "Kim", "role": "relative", "visibility": "full",
           "locale": "da", "calendar": "feed"}  # fmt: skip
    other_circle = circle_event(1, [kim], citizen_id="c-9")
    assert (await post_event(client, other_circle)).status_code == 202


async def _assign(
    client: httpx.AsyncClient, occurrence_id: str, member_id: str, token: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/api/v1/occurrences/{occurrence_id}/assign",
        json={"member_id": member_id},
        headers=auth(token) if token else auth(),
    )


async def _claims(client: httpx.AsyncClient, occurrence_id: str) -> list[tuple[str, str]]:
    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()
    [occurrence] = [o for o in task["occurrences"] if o["id"] == occurrence_id]
    return [(c["member_id"], c["channel"]) for c in occurrence["claims"]]


async def _feed_events(client: httpx.AsyncClient, member_id: str) -> dict[str, Any]:
    issued = await client.post(f"/api/v1/members/{member_id}/calendar-credentials", headers=auth())
    feed = (await client.get(issued.json()["feed_url"].removeprefix("http://testserver"))).content
    return {str(e["uid"]).split("@")[0]: e for e in Calendar.from_ical(feed).walk("VEVENT")}


async def test_a_staff_member_is_bound_and_the_host_hears_of_it(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    await _seed(client)

    response = await _assign(client, FIRST, "m-sara")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["occurrence_id"], body["member_id"], body["outcome"]) == (
        FIRST,
        "m-sara",
        "assigned",
    )
    assert body["occurrence"]["status"] == "filled" and body["occurrence"]["free_slots"] == 0
    assert await _claims(client, FIRST) == [("m-sara", "staff")]
    [event] = [e for e in await store.due_outbox(now=FIXED_NOW, limit=50)]
    assert event.type == "task.claimed"
    assert {k: event.data[k] for k in ("occurrence_id", "member_id", "channel")} == {
        "occurrence_id": FIRST,
        "member_id": "m-sara",
        "channel": "staff",
    }
    async with store.transaction() as tx:
        audit = await tx.list_audit("north", f"occurrence:{FIRST}")
    assert [(a.actor, a.action, a.channel) for a in audit] == [
        ("m-sara", "occurrence.claim", "staff"),
        ("api", "occurrence.assign", "staff"),
    ]
    # Bo (feed, English) sees it as Sara's.
    copy = (await _feed_events(client, "m-bo"))[FIRST]
    assert str(copy["summary"]) == "[Sara] Shopping"
    assert str(copy["status"]) == "CONFIRMED"

    again = await _assign(client, FIRST, "m-sara")
    assert again.status_code == 200 and again.json()["outcome"] == "already_held"
    # Full now: neither a relative nor other staff can be put on it.
    full = await _assign(client, FIRST, "m-anna")
    assert full.status_code == 409
    assert full.headers["content-type"] == "application/problem+json"
    assert full.json()["reason"] == "full"


async def test_a_relative_is_asked_and_still_answers_themself(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    await _seed(client)

    response = await _assign(client, SECOND, "m-bo")

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "asked"
    assert await _claims(client, SECOND) == []  # nothing claimed for him
    assert await store.due_outbox(now=FIXED_NOW, limit=50) == []
    copies = await _feed_events(client, "m-bo")
    asked = copies[SECOND]
    assert str(asked["summary"]) == "[For you] Shopping"
    assert str(asked["description"]).startswith("Staff have asked whether you can take this")
    # Only the one he was asked for, and only in his copy (open or suggested elsewhere).
    assert str(copies[FIRST]["summary"]) in ("[Open] Shopping", "[Suggested] Shopping")
    anna = await _feed_events(client, "m-anna")
    assert str(anna[SECOND]["summary"]) in ("[Ledig] Indkøb", "[Forslag] Indkøb")
    assert (await _assign(client, SECOND, "m-bo")).json()["outcome"] == "already_asked"

    # He accepts through his claim link: now he holds it, through channel "link".
    claim_url = str(asked["url"]).removeprefix("http://testserver")
    page = await client.get(claim_url)
    token = page.text.split('name="form_token" value="')[1].split('"')[0]
    claimed = await client.post(
        claim_url, data={"action": "claim", "form_token": token}, headers=SAME_ORIGIN
    )
    assert claimed.status_code == 200
    assert await _claims(client, SECOND) == [("m-bo", "link")]
    assert str((await _feed_events(client, "m-bo"))[SECOND]["summary"]) == "[You] Shopping"


async def test_refusals_are_problems(client: httpx.AsyncClient) -> None:
    await _seed(client)
    cases = [
        (await _assign(client, "t-1_20990101T1000", "m-sara"), 404, "unknown_occurrence"),
        (await _assign(client, FIRST, "m-nobody"), 404, "unknown_member"),
        (await _assign(client, FIRST, "m-kim"), 422, "not_in_circle"),
        # Another tenant's token finds nothing of north's.
        (await _assign(client, FIRST, "m-sara", SOUTH_TOKEN), 404, "unknown_occurrence"),
    ]
    for response, status, reason in cases:
        assert response.status_code == status, (reason, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["reason"] == reason
    assert await _claims(client, FIRST) == []

    unauthenticated = await client.post(
        f"/api/v1/occurrences/{FIRST}/assign", json={"member_id": "m-sara"}
    )
    assert unauthenticated.status_code == 401
    url = f"/api/v1/occurrences/{FIRST}/assign"
    not_json = await client.post(url, content=b"member_id=m-sara", headers=auth())
    assert not_json.status_code == 415
    malformed = await client.post(
        url, content=b"{", headers=auth() | {"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    for body in ({}, {"member_id": 7}, {"member_id": "m sara"}, {"member_id": "m-sara", "x": 1}):
        invalid = await client.post(url, json=body, headers=auth())
        assert invalid.status_code == 422, body


async def test_visits_are_the_hosts_to_assign(client: httpx.AsyncClient) -> None:
    await _seed(client)
    visit = {"type": "visit.assigned", "data": {
        "id": "v-9", "citizen_id": "c-123", "version": 1, "staff_member_id": "m-sara",
        "category": "visit", "start": "2027-03-24T09:00:00", "end": "2027-03-24T09:30:00",
        "timezone": "Europe/Copenhagen"}}  # fmt: skip
    assert (await post_event(client, visit)).status_code == 202
    response = await _assign(client, "v-9_20270324T0900", "m-sara")
    assert response.status_code == 409 and response.json()["reason"] == "visit"
    # The visit is Sara's in everyone's view: "[Sara] Visit" for Bo.
    copy = (await _feed_events(client, "m-bo"))["v-9_20270324T0900"]
    assert str(copy["summary"]) == "[Sara] Visit"


async def test_a_visit_assigned_to_someone_not_staff_is_held_as_said_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The host is the source of its assignments: the visit is held by whom it names. A
    relative, or an id the circle does not know, is most likely its mistake: said in the
    log for whoever runs carecal."""
    await _seed(client)
    caplog.set_level(logging.WARNING, logger="plugin.services.ingest")
    for n, (member_id, role) in enumerate([("m-anna", "relative"), ("m-ghost", None)]):
        visit = {"type": "visit.assigned", "data": {
            "id": f"v-{n}", "citizen_id": "c-123", "version": 1, "staff_member_id": member_id,
            "category": "visit", "start": "2027-03-24T09:00:00", "end": "2027-03-24T09:30:00",
            "timezone": "Europe/Copenhagen"}}  # fmt: skip
        assert (await post_event(client, visit)).status_code == 202
        task = (await client.get(f"/api/v1/tasks/v-{n}", headers=auth())).json()
        assert [c["member_id"] for c in task["occurrences"][0]["claims"]] == [member_id]
        said = [r for r in caplog.records if getattr(r, "task_id", None) == f"v-{n}"]
        assert [(r.getMessage(), r.member_id, r.role) for r in said] == [  # type: ignore[attr-defined]
            ("visit assigned to someone who is not staff in the circle", member_id, role)
        ]
    caplog.clear()
    sara = {"type": "visit.assigned", "data": {
        "id": "v-9", "citizen_id": "c-123", "version": 1, "staff_member_id": "m-sara",
        "category": "visit", "start": "2027-03-24T09:00:00", "end": "2027-03-24T09:30:00",
        "timezone": "Europe/Copenhagen"}}  # fmt: skip
    assert (await post_event(client, sara)).status_code == 202
    await client.get("/api/v1/tasks/v-9", headers=auth())
    assert not [r for r in caplog.records if r.name == "plugin.services.ingest"]
