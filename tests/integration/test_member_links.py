"""Claim links and feeds through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from icalendar import Calendar, Event, Timezone

from adapters.store.sql import SqlStore
from plugin.config import Settings
from plugin.services.ports import InboxItem
from plugin.web.app import create_app
from plugin.web.links import LinkLimits
from tests.integration.support import Clock, auth, circle_event, post_event, task_event

FIRST = "t-1_20270316T1000"
SAME_ORIGIN = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}


async def _circle_with_task(client: httpx.AsyncClient) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    assert (await post_event(client, task_event())).status_code == 202


async def _feed_path(client: httpx.AsyncClient, member_id: str) -> str:
    response = await client.post(
        f"/api/v1/members/{member_id}/calendar-credentials", headers=auth()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["setup_url"].startswith("http://testserver/setup/")
    assert re.fullmatch(r"http://testserver/feeds/[A-Za-z0-9_-]{39}\.ics", body["feed_url"])
    return str(body["feed_url"]).removeprefix("http://testserver")


def _events(body: bytes) -> list[Event]:
    calendar = Calendar.from_ical(body)
    return [c for c in calendar.walk("VEVENT") if isinstance(c, Event)]


async def _claim_path(client: httpx.AsyncClient, feed: str, occurrence_id: str = FIRST) -> str:
    events = _events((await client.get(feed)).content)
    [event] = [e for e in events if str(e["uid"]) == f"{occurrence_id}@north"]
    url = str(event["url"])
    assert url.startswith("http://testserver/c/")
    assert url in str(event["description"])
    return url.removeprefix("http://testserver")


def _form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def _claims(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    task = (await client.get("/api/v1/tasks/t-1", headers=auth())).json()
    first = next(o for o in task["occurrences"] if o["id"] == FIRST)
    claims: list[dict[str, Any]] = first["claims"]
    return claims


async def test_a_feed_member_sees_the_task_and_claims_through_the_link(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    await _circle_with_task(client)
    feed = await _feed_path(client, "m-bo")  # Bo: calendar "feed", visibility limited, English

    response = await client.get(feed)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    calendar = Calendar.from_ical(response.content)
    assert str(calendar["method"]) == "PUBLISH"
    assert str(calendar["prodid"]) and str(calendar["version"]) == "2.0"
    assert str(calendar["x-wr-calname"]) == "Fru Jensen \N{EN DASH} care"
    assert b"REFRESH-INTERVAL;VALUE=DURATION:PT1H" in response.content
    assert b"X-PUBLISHED-TTL:PT1H" in response.content
    [zone] = [c for c in calendar.walk("VTIMEZONE") if isinstance(c, Timezone)]
    assert str(zone["tzid"]) == "Europe/Copenhagen"
    assert {c.name for c in zone.subcomponents} == {"STANDARD", "DAYLIGHT"}
    events = _events(response.content)
    assert len(events) == 4
    # Bo is the one relative free for them (Anna is available on Monday evenings only, Sara is
    # staff): fairness suggests to him the ones in the rolling window (the four weeks from this
    # Monday, 1 March), not yet those after it (plugin.services.capacity.view_advice).
    assert sorted(str(e["summary"]) for e in events) == [
        "[Open] Shopping", "[Open] Shopping", "[Suggested] Shopping", "[Suggested] Shopping"
    ]  # fmt: skip
    assert {e["dtstart"].params["TZID"] for e in events} == {"Europe/Copenhagen"}
    assert all("attendee" not in e for e in events)  # PUBLISH: no invitations
    assert b"Netto" not in response.content  # limited visibility: no details

    # Anything the jobs queue so far (the webhooks' syncs) is out of the way.
    leased = await store.lease_jobs("test", now=clock.now, limit=100, lease_seconds=60)
    for job in leased:
        await store.finish_job(job.id, "test")

    claim = await _claim_path(client, feed)
    page = await client.get(claim)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<html lang="en">' in page.text
    assert "Netto" not in page.text
    assert 'value="claim"' in page.text and 'value="pass"' in page.text
    assert 'value="release"' not in page.text

    done = await client.post(
        claim,
        data={"action": "claim", "form_token": _form_token(page.text)},
        headers=SAME_ORIGIN,
    )
    assert done.status_code == 200, done.text
    assert "Thank you! The task is yours." in done.text
    assert 'value="release"' in done.text and 'value="claim"' not in done.text

    [held] = await _claims(client)
    assert (held["member_id"], held["channel"]) == ("m-bo", "link")
    events_out = await store.due_outbox(now=clock.now + timedelta(days=1), limit=10)
    assert [(e.type, e.data["member_id"], e.data["channel"]) for e in events_out] == [
        ("task.claimed", "m-bo", "link")
    ]
    async with store.transaction() as tx:
        audit = await tx.list_audit("north", f"occurrence:{FIRST}")
    assert [(a.actor, a.action, a.channel) for a in audit] == [("m-bo", "occurrence.claim", "link")]
    # The hosted members' calendar copies follow: their views are queued for a sync.
    jobs = await store.lease_jobs("test", now=clock.now, limit=100, lease_seconds=60)
    assert sorted((j.kind, j.payload["member_id"]) for j in jobs) == [
        ("view.sync", "m-anna"),
        ("view.sync", "m-sara"),
    ]
    after = _events((await client.get(feed)).content)
    by_uid = {str(e["uid"]): str(e["summary"]) for e in after}
    assert by_uid[f"{FIRST}@north"] == "[You] Shopping"


async def test_the_feed_answers_304_while_nothing_changed(client: httpx.AsyncClient) -> None:
    await _circle_with_task(client)
    feed = await _feed_path(client, "m-anna")
    first = await client.get(feed)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong
    assert b"Netto" in first.content  # Anna sees details (full visibility)
    again = await client.get(feed)
    assert again.headers["etag"] == etag and again.content == first.content
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await client.get(feed, headers={"if-none-match": header})
        assert cached.status_code == 304, header
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    assert (await client.get(feed, headers={"if-none-match": '"other"'})).status_code == 200
    # A change is a new ETag.
    assert (await post_event(client, task_event(version=2, people_needed=1))).status_code == 202
    await client.get("/api/v1/tasks/t-1", headers=auth())  # applied
    changed = await client.get(feed, headers={"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_forged_posts_are_refused(client: httpx.AsyncClient) -> None:
    await _circle_with_task(client)
    feed = await _feed_path(client, "m-anna")
    claim = await _claim_path(client, feed)
    other = await _claim_path(client, feed, "t-1_20270323T1000")
    token = _form_token((await client.get(claim)).text)
    other_token = _form_token((await client.get(other)).text)
    attempts: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"action": "claim"}, SAME_ORIGIN),  # no form token
        ({"action": "claim", "form_token": "1.AAAA"}, SAME_ORIGIN),  # made up
        ({"action": "claim", "form_token": other_token}, SAME_ORIGIN),  # another link's
        ({"action": "claim", "form_token": token}, {"origin": "https://evil.example"}),
        (
            {"action": "claim", "form_token": token},
            {"origin": "null", "sec-fetch-site": "cross-site"},
        ),
        (
            {"action": "claim", "form_token": token},
            {"origin": "http://testserver", "sec-fetch-site": "cross-site"},
        ),
        ({"action": "claim", "form_token": token}, {"sec-fetch-site": "cross-site"}),
        ({"action": "claim", "form_token": token}, {"sec-fetch-site": "same-site"}),
        ({"action": "delete", "form_token": token}, SAME_ORIGIN),
    ]
    for data, headers in attempts:
        response = await client.post(claim, data=data, headers=headers)
        assert response.status_code in (400, 403), (data, headers)
        assert "<html" in response.text
    assert await _claims(client) == []
    # HEAD is the page's GET (Starlette answers it with the GET route), never its form, even
    # with the form's body: before, it claimed.
    head = await client.request(
        "HEAD", claim, content=f"action=claim&form_token={token}",
        headers=SAME_ORIGIN | {"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert head.status_code == 200
    assert await _claims(client) == []
    # The genuine form still works, also from a browser that sends no Origin.
    done = await client.post(claim, data={"action": "claim", "form_token": token})
    assert done.status_code == 200
    assert [c["member_id"] for c in await _claims(client)] == ["m-anna"]


async def test_unknown_expired_and_removed_links(client: httpx.AsyncClient, clock: Clock) -> None:
    await _circle_with_task(client)
    feed = await _feed_path(client, "m-bo")
    claim = await _claim_path(client, feed)

    unknown = await client.get("/c/AQAAAAAAAAAAAAAAAP2HlZgfqM9J2eGktT_J9X10LTFfMjAyNzAzMTZUMTAwMA")
    assert unknown.status_code == 404
    assert unknown.headers["referrer-policy"] == "no-referrer"
    assert '<html lang="da">' in unknown.text
    english = await client.get("/c/nothing", headers={"accept-language": "en-GB,da;q=0.5"})
    assert english.status_code == 404 and '<html lang="en">' in english.text
    assert (await client.get("/feeds/nothing.ics")).status_code == 404
    tampered = claim[:-2] + ("A" if claim[-2] != "A" else "B") + claim[-1]
    assert (await client.get(tampered)).status_code == 404

    clock.now += timedelta(days=16)  # 17 March: the first occurrence is over
    over = await client.get(claim)
    assert over.status_code == 410
    assert "This task is over" in over.text
    clock.now -= timedelta(days=16)
    assert (await client.get(claim)).status_code == 200

    # Bo leaves the circle (his only one): his links and feed are revoked at once.
    without_bo = circle_event(version=2)
    without_bo["data"]["members"] = [m for m in without_bo["data"]["members"] if m["id"] != "m-bo"]
    assert (await post_event(client, without_bo)).status_code == 202
    await client.get("/api/v1/circles/c-123", headers=auth())  # applied
    gone = await client.get(claim)
    assert gone.status_code == 410
    assert (await client.get(feed)).status_code == 410
    refused = await client.post(claim, data={"action": "claim", "form_token": "x"})
    assert refused.status_code == 410
    assert await _claims(client) == []


async def test_leaving_one_circle_kills_only_its_links(client: httpx.AsyncClient) -> None:
    anna = circle_event()["data"]["members"][0]
    await post_event(client, circle_event(members=[anna]))
    await post_event(client, circle_event(members=[anna], citizen_id="c-999"))
    await post_event(client, task_event())
    await post_event(client, task_event(task_id="t-9", citizen_id="c-999"))
    feed = await _feed_path(client, "m-anna")
    here = await _claim_path(client, feed)
    there = await _claim_path(client, feed, "t-9_20270316T1000")
    calendar = Calendar.from_ical((await client.get(feed)).content)
    assert str(calendar["x-wr-calname"]) == "Omsorg"  # two circles
    assert len(_events((await client.get(feed)).content)) == 8

    await post_event(client, circle_event(version=2, members=[], citizen_id="c-999"))
    await client.get("/api/v1/circles/c-123", headers=auth())  # applied
    assert (await client.get(there)).status_code == 410
    assert (await client.get(here)).status_code == 200
    events = _events((await client.get(feed)).content)
    assert {str(e["uid"]).split("_")[0] for e in events} == {"t-1"}


async def test_pages_and_feeds_are_rate_limited(
    settings: Settings, store: SqlStore, clock: Clock, client: httpx.AsyncClient
) -> None:
    await _circle_with_task(client)
    feed = await _feed_path(client, "m-anna")
    claim = await _claim_path(client, feed)

    limits = LinkLimits()
    per_address = limits.page_per_address.rate.burst
    statuses = [(await client.get(f"/c/unknown-{i}")).status_code for i in range(per_address + 1)]
    assert statuses == [404] * per_address + [429]
    limited = await client.get(claim)  # this address is out of turns, whatever the token
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["cache-control"] == "no-store"

    # Per token: many addresses, one link.
    app = create_app(settings, store=store, clock=clock)
    async with LifespanManager(app) as manager:
        seen = []
        per_token = limits.page_per_token.rate.burst
        for i in range(per_token + 1):
            transport = httpx.ASGITransport(app=manager.app, client=(f"192.0.2.{i}", 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                seen.append((await c.get(claim)).status_code)
        assert seen == [200] * per_token + [429]
        transport = httpx.ASGITransport(app=manager.app, client=("192.0.2.200", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            per_feed = limits.feed_per_token.rate.burst
            feeds = [(await c.get(feed)).status_code for _ in range(per_feed + 1)]
            assert feeds == [200] * per_feed + [429]


async def test_renewing_a_members_links_revokes_the_old_ones(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    await _circle_with_task(client)
    feed = await _feed_path(client, "m-anna")
    claim = await _claim_path(client, feed)
    leased = await store.lease_jobs("test", now=clock.now, limit=100, lease_seconds=60)
    for job in leased:
        await store.finish_job(job.id, "test")

    assert (await client.post("/api/v1/members/m-anna/links/renew")).status_code == 401
    missing = await client.post("/api/v1/members/m-nobody/links/renew", headers=auth())
    assert missing.status_code == 404
    renewed = await client.post("/api/v1/members/m-anna/links/renew", headers=auth())
    assert renewed.status_code == 200
    assert renewed.headers["cache-control"] == "no-store"
    new_feed = renewed.json()["feed_url"].removeprefix("http://testserver")
    assert new_feed != feed
    assert (await client.get(feed)).status_code == 410
    assert (await client.get(claim)).status_code == 410
    new_claim = await _claim_path(client, new_feed)
    assert new_claim != claim
    assert (await client.get(new_claim)).status_code == 200
    # Anna's calendar copies are re-synced with the new links.
    jobs = await store.lease_jobs("test", now=clock.now, limit=100, lease_seconds=60)
    assert [(j.kind, j.payload["member_id"]) for j in jobs] == [("view.sync", "m-anna")]
    # The credentials call answers the current links.
    issued = await client.post("/api/v1/members/m-anna/calendar-credentials", headers=auth())
    assert issued.json()["feed_url"] == renewed.json()["feed_url"]


async def test_a_member_removed_a_moment_ago_acts_no_more_through_a_link(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    """The host removed Bo: the webhook is accepted, and not applied yet (a backlog, or the
    very moment after). Before, his claim link still claimed in that window. Now a POST to
    a link applies what the host said before it, as the API does."""
    await _circle_with_task(client)
    claim = await _claim_path(client, await _feed_path(client, "m-bo"))
    token = _form_token((await client.get(claim)).text)
    without_bo = circle_event(version=2)
    without_bo["data"]["members"] = [m for m in without_bo["data"]["members"] if m["id"] != "m-bo"]
    body = json.dumps(without_bo).encode()
    await store.accept_webhooks(
        [InboxItem("north", "wh-remove-bo", "circle.updated", body, clock.now)]
    )
    refused = await client.post(claim, data={"action": "claim", "form_token": token})
    assert refused.status_code == 410
    assert await _claims(client) == []
