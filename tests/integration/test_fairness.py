"""Issue #6, items 1-3, through the real app over HTTP on SQLite and PostgreSQL: capacity,
fair offers with overload, relief. Members read their calendars as ICS feeds (rendered by the
same function as their CalDAV copies); the host's events are delivered to a recording host."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from icalendar import Calendar

from adapters.host.events import HttpEventSender
from adapters.store.sql import SqlStore
from plugin.config import Settings
from plugin.metrics import Metrics
from plugin.services.delivery import OutboxDelivery
from plugin.web.app import create_app
from tests.integration.support import (
    NORTH_DATA_KEY,
    NORTH_SECRET,
    NORTH_TOKEN,
    Clock,
    auth,
    circle_event,
    make_settings,
    post_event,
    task_event,
)

EVENTS_URL = "http://host.example/carecal-events"
EVENTS_SECRET = "whsec_" + base64.b64encode(b"north-events-key-0123456789abcd").decode()
SAME_ORIGIN = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}

ANNA = {
    "id": "m-anna",
    "name": "Anna",
    "role": "relative",
    "visibility": "full",
    "locale": "da",
    "calendar": "feed",
    "capacity": {"hours_per_week": 2, "tasks_per_week": 1},
}
BO = {
    "id": "m-bo",
    "name": "Bo",
    "role": "relative",
    "visibility": "limited",
    "locale": "en",
    "calendar": "feed",
    "capacity": {"hours_per_week": 4},
}
CARL = {
    "id": "m-carl",
    "name": "Carl",
    "role": "network",
    "visibility": "full",
    "locale": "da",
    "calendar": "feed",
    "paused_until": "2027-04-30",
}
SARA = {"id": "m-sara", "name": "Sara", "role": "staff", "visibility": "full", "locale": "da",
        "calendar": "feed"}  # fmt: skip

# Weekly for four weeks from the week of 1 March (the test's now): Tuesday, Thursday, Saturday.
WEEKLY = {
    "t-shop": ("shopping", "2027-03-02T10:00:00", "2027-03-02T11:00:00"),
    "t-walk": ("walk", "2027-03-04T14:00:00", "2027-03-04T15:00:00"),
    "t-meal": ("meal", "2027-03-06T12:00:00", "2027-03-06T13:00:00"),
}
# Anna takes all but the last meal: six tasks in the period from 15 February, five in the one
# from 15 March; she said one task a week, four a period.
ANNAS = [
    "t-shop_20270302T1000", "t-walk_20270304T1400", "t-meal_20270306T1200",
    "t-shop_20270309T1000", "t-walk_20270311T1400", "t-meal_20270313T1200",
    "t-shop_20270316T1000", "t-walk_20270318T1400", "t-meal_20270320T1200",
    "t-shop_20270323T1000", "t-walk_20270325T1400",
]  # fmt: skip
NEXT_WEEK = ["t-shop_20270309T1000", "t-walk_20270311T1400", "t-meal_20270313T1200"]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The integration settings, with the tenant's host receiving events."""
    return make_settings(
        tmp_path,
        database={"url": database_url},
        tenants=[
            {"id": "north", "webhook_secret": NORTH_SECRET, "api_token": NORTH_TOKEN,
             "data_key": NORTH_DATA_KEY, "host_events_url": EVENTS_URL,
             "host_events_secret": EVENTS_SECRET},
        ],
    )  # fmt: skip


@pytest.fixture
async def app(settings: Settings, store: SqlStore, clock: Clock) -> AsyncIterator[Any]:
    async with LifespanManager(create_app(settings, store=store, clock=clock)) as manager:
        yield manager.app


def http(app: Any, address: str = "192.0.2.1") -> httpx.AsyncClient:
    """A client from its own address (the pages' rate limits are per address)."""
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def personal(client: httpx.AsyncClient, member_id: str) -> tuple[str, str]:
    """The member's feed and setup page paths."""
    response = await client.post(
        f"/api/v1/members/{member_id}/calendar-credentials", headers=auth()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return (
        body["feed_url"].removeprefix("http://testserver"),
        body["setup_url"].removeprefix("http://testserver"),
    )


async def copies(client: httpx.AsyncClient, feed: str) -> dict[str, dict[str, str]]:
    """The member's feed: occurrence id -> summary, description, claim link."""
    response = await client.get(feed)
    assert response.status_code == 200, response.text
    found = {}
    for event in Calendar.from_ical(response.content).walk("VEVENT"):
        found[str(event["uid"]).removesuffix("@north")] = {
            "summary": str(event["summary"]),
            "description": str(event["description"]),
            "url": str(event["url"]).removeprefix("http://testserver"),
        }
    return found


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def claim(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    done = await client.post(
        path, data={"action": "claim", "form_token": form_token(page.text)}, headers=SAME_ORIGIN
    )
    assert done.status_code == 200, done.text
    return done.text


async def deliver(store: SqlStore, settings: Settings, clock: Clock) -> list[dict[str, Any]]:
    """Run the outbox delivery until it is empty; what the host received, in order."""
    received: list[dict[str, Any]] = []

    def host(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == EVENTS_URL and request.headers["webhook-id"]
        received.append(json.loads(request.content))
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(host)) as client:
        delivery = OutboxDelivery(
            store, HttpEventSender(client), settings, metrics=Metrics(), clock=lambda: clock.now
        )
        while (await delivery.deliver_due()).leased:
            pass
    return received


async def test_one_relative_carries_most_then_asks_for_relief(
    app: Any, store: SqlStore, settings: Settings, clock: Clock
) -> None:
    async with http(app) as host, http(app, "192.0.2.10") as anna, http(app, "192.0.2.11") as bo:
        assert (await post_event(host, circle_event(1, [ANNA, BO, CARL, SARA]))).status_code == 202
        for task_id, (category, start, end) in WEEKLY.items():
            event = task_event(task_id=task_id, category=category, start=start, end=end,
                               people_needed=1, recurrence="FREQ=WEEKLY;COUNT=4")  # fmt: skip
            assert (await post_event(host, event)).status_code == 202
        anna_feed, _ = await personal(host, "m-anna")
        bo_feed, _ = await personal(host, "m-bo")
        carl_feed, _ = await personal(host, "m-carl")

        # Anna carries most of the four weeks, through her claim links.
        links = {oid: copy["url"] for oid, copy in (await copies(anna, anna_feed)).items()}
        for oid in ANNAS:
            assert "Tak! Opgaven er din." in await claim(anna, links[oid])

        # The host sees the overload: once per period, after the claim that caused it.
        received = await deliver(store, settings, clock)
        assert [e["type"] for e in received].count("task.claimed") == len(ANNAS)
        overloaded = [e for e in received if e["type"] == "member.overloaded"]
        assert [e["data"] for e in overloaded] == [
            {"citizen_id": "c-123", "member_id": "m-anna", "load_hours": 5.0,
             "capacity_hours": 8.0, "load_tasks": 5, "capacity_tasks": 4,
             "period_start": "2027-02-15", "period_end": "2027-03-15"},
            {"citizen_id": "c-123", "member_id": "m-anna", "load_hours": 5.0,
             "capacity_hours": 8.0, "load_tasks": 5, "capacity_tasks": 4,
             "period_start": "2027-03-15", "period_end": "2027-04-12"},
        ]  # fmt: skip
        assert all(e["tenant"] == "north" for e in overloaded)

        # Anna's own copies say she took on more than she said (nobody else's say anything).
        annas = await copies(anna, anna_feed)
        assert annas[ANNAS[0]]["summary"] == "[Dig] Indkøb"
        assert "end du har sagt, du kan klare" in annas[ANNAS[0]]["description"]
        bos = await copies(bo, bo_feed)
        assert bos[ANNAS[0]]["summary"] == "[Anna] Shopping"
        assert "capacity" not in bos[ANNAS[0]]["description"]

        # New offers suggest the others: not Anna (over), not Carl (paused), not Sara (staff).
        practical = task_event(task_id="t-practical", category="practical", people_needed=1,
                               start="2027-03-17T14:00:00", end="2027-03-17T15:00:00",
                               recurrence=None)  # fmt: skip
        assert (await post_event(host, practical)).status_code == 202
        assert (await host.get("/api/v1/tasks/t-practical", headers=auth())).status_code == 200
        new, last_meal = "t-practical_20270317T1400", "t-meal_20270327T1200"
        bos = await copies(bo, bo_feed)
        assert bos[new]["summary"] == "[Suggested] Practical help"
        assert bos[new]["description"].startswith("Suggested for you:")
        assert bos[last_meal]["summary"] == "[Suggested] Meal"
        annas = await copies(anna, anna_feed)
        assert (annas[new]["summary"], annas[last_meal]["summary"]) == (
            "[Ledig] Praktisk hjælp", "[Ledig] Måltid"
        )  # fmt: skip
        # A paused member is suggested nothing.
        carls = await copies(host, carl_feed)
        assert carls[new]["summary"] == "[Ledig] Praktisk hjælp"
        assert not [c for c in carls.values() if "Forslag" in c["summary"]]

        # Anna asks for relief next week: her three claims there are offered to the others.
        asked = await host.post(
            "/api/v1/relief-requests",
            json={"citizen_id": "c-123", "member_id": "m-anna", "start": "2027-03-08",
                  "end": "2027-03-14"},
            headers=auth(),
        )  # fmt: skip
        assert asked.status_code == 201, asked.text
        request = asked.json()
        assert request["status"] == "requested"
        assert (request["start"], request["end"]) == (
            "2027-03-08T00:00:00+01:00", "2027-03-15T00:00:00+01:00"
        )  # fmt: skip
        assert sorted(request["released"]) == sorted(NEXT_WEEK)
        bos = await copies(bo, bo_feed)
        assert [bos[oid]["summary"] for oid in NEXT_WEEK] == [
            "[Suggested] Shopping", "[Suggested] Walk", "[Suggested] Meal"
        ]  # fmt: skip
        annas = await copies(anna, anna_feed)
        assert [annas[oid]["summary"] for oid in NEXT_WEEK] == [
            "[Ledig] Indkøb", "[Ledig] Gåtur", "[Ledig] Måltid"
        ]  # fmt: skip
        # Three tasks left in her first period: within what she said, so no warning there.
        assert "klare" not in annas[ANNAS[0]]["description"]
        assert "klare" in annas[ANNAS[-1]]["description"]

        # The host receives relief.requested (and the releases, channel api).
        received = await deliver(store, settings, clock)
        assert [e["data"] for e in received if e["type"] == "relief.requested"] == [
            {"request_id": request["id"], "citizen_id": "c-123", "member_id": "m-anna",
             "start": "2027-03-08T00:00:00+01:00", "end": "2027-03-15T00:00:00+01:00"}
        ]  # fmt: skip
        released = [e["data"] for e in received if e["type"] == "task.released"]
        assert sorted(d["occurrence_id"] for d in released) == sorted(NEXT_WEEK)
        assert {d["channel"] for d in released} == {"api"}

        # relief.decided: approved, with the substitute's visits; they go into every calendar.
        visits = [
            {"id": f"v-{n}", "citizen_id": "c-123", "version": 1, "staff_member_id": "m-sara",
             "category": "relief", "start": f"2027-03-{day}T09:00:00",
             "end": f"2027-03-{day}T12:00:00", "timezone": "Europe/Copenhagen"}
            for n, day in ((1, "09"), (2, "12"))
        ]  # fmt: skip
        decided = {"type": "relief.decided", "data": {
            "request_id": request["id"], "citizen_id": "c-123", "version": 1,
            "status": "approved", "visits": visits}}  # fmt: skip
        assert (await post_event(host, decided)).status_code == 202
        visit = (await host.get("/api/v1/tasks/v-1", headers=auth())).json()
        assert [c["member_id"] for c in visit["occurrences"][0]["claims"]] == ["m-sara"]
        annas = await copies(anna, anna_feed)
        bos = await copies(bo, bo_feed)
        for oid in ("v-1_20270309T0900", "v-2_20270312T0900"):
            assert annas[oid]["summary"] == "[Sara] Aflastning"
            assert bos[oid]["summary"] == "[Sara] Relief"
        # Approved relief still keeps suggestions off Anna in that week.
        assert annas[NEXT_WEEK[0]]["summary"] == "[Ledig] Indkøb"


async def test_the_member_sets_capacity_and_asks_relief_on_their_setup_page(
    app: Any, store: SqlStore, settings: Settings, clock: Clock
) -> None:
    async with http(app) as host, http(app, "192.0.2.20") as anna:
        assert (await post_event(host, circle_event(1, [ANNA, BO]))).status_code == 202
        shop = task_event(task_id="t-shop", people_needed=1, recurrence="FREQ=WEEKLY;COUNT=4",
                          start="2027-03-02T10:00:00", end="2027-03-02T11:00:00")  # fmt: skip
        assert (await post_event(host, shop)).status_code == 202
        feed, setup = await personal(host, "m-anna")

        page = await anna.get(setup)
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        text = page.text
        assert "Hvor meget kan du tage?" in text and "Bed om aflastning" in text
        assert 'name="hours_per_week"' in text and 'value="2"' in text
        assert '<label for="c0-hours">Timer om ugen</label>' in text
        assert "Fra kommunen." in text
        assert (
            "I de fire uger fra 1. marts 2027 har du 0 timer og 0 opgaver. "
            "Din grænse er 8 timer og 4 opgaver på fire uger."
        ) in text
        token = form_token(text)

        # Anna says 1.5 hours a week, no task limit, Tuesday mornings only.
        form = {"action": "capacity", "citizen_id": "c-123", "form_token": token,
                "hours_per_week": "1,5", "tasks_per_week": "", "day_0": "2",
                "from_0": "09:00", "to_0": "12:00", "paused_until": ""}  # fmt: skip
        saved = await anna.post(setup, data=form, headers=SAME_ORIGIN)
        assert saved.status_code == 200, saved.text
        assert 'role="status">Gemt.' in saved.text
        assert 'value="1.5"' in saved.text and "Sat af dig." in saved.text
        assert "Din grænse er 6 timer på fire uger." in saved.text
        # Nobody gave a pause: not "from the municipality"
        assert (
            '<span id="c0-pause-hint">Vi foreslår dig ingen opgaver til og med den dag. '
            "Tomt: ingen pause. </span>" in saved.text
        )
        # Forged or cross-site posts change nothing.
        forged = await anna.post(setup, data=form | {"form_token": "x"}, headers=SAME_ORIGIN)
        assert forged.status_code == 403
        cross = await anna.post(setup, data=form | {"hours_per_week": "9"},
                                headers={"sec-fetch-site": "cross-site"})  # fmt: skip
        assert cross.status_code == 403
        bad = await anna.post(setup, data=form | {"hours_per_week": "-3", "to_0": "08:00"},
                              headers=SAME_ORIGIN)  # fmt: skip
        assert bad.status_code == 422 and 'role="alert"' in bad.text
        # Times with an offset (stored, they broke the feed of everyone in the circle: no
        # local time compares to them), digits that are not ASCII: refused, nothing breaks.
        for odd in (
            {"from_0": "09:00+01:00", "to_0": "12:00+01:00"},
            {"from_0": "09:00+01:00"},
            {"tasks_per_week": "\N{SUPERSCRIPT TWO}"},
            {"day_0": "\N{ARABIC-INDIC DIGIT THREE}"},
        ):
            refused = await anna.post(setup, data=form | odd, headers=SAME_ORIGIN)
            assert refused.status_code == 422 and 'role="alert"' in refused.text, odd
        assert (await anna.get(feed)).status_code == 200
        seconds = form | {"from_0": "09:00:00", "to_0": "12:00:00"}  # a time input with a step
        assert (await anna.post(setup, data=seconds, headers=SAME_ORIGIN)).status_code == 200

        # The host resends the circle (Bo renamed): Anna's own setting stays.
        renamed = dict(BO, name="Bo B.")
        assert (await post_event(host, circle_event(2, [ANNA, renamed]))).status_code == 202
        assert (await host.get("/api/v1/circles/c-123", headers=auth())).status_code == 200
        assert 'value="1.5"' in (await anna.get(setup)).text
        # A newer host decision about her capacity takes that field back; her days stay hers.
        changed = dict(ANNA, capacity={"hours_per_week": 3, "tasks_per_week": 1})
        assert (await post_event(host, circle_event(3, [changed, renamed]))).status_code == 202
        assert (await host.get("/api/v1/circles/c-123", headers=auth())).status_code == 200
        after = (await anna.get(setup)).text
        assert (
            'name="hours_per_week" min="0" max="168" step="0.5" inputmode="decimal" value="3"'
            in after
        )
        assert '<option value="2" selected>tirsdag</option>' in after

        # Relief asked for on the page: her Tuesday in the week is passed on.
        held = await copies(anna, feed)
        await claim(anna, held["t-shop_20270309T1000"]["url"])
        relief = {"action": "relief", "citizen_id": "c-123", "relief_from": "2027-03-08",
                  "relief_to": "2027-03-14", "form_token": form_token(after)}  # fmt: skip
        far = relief | {"relief_to": "9999-12-31"}  # a day after it is no date at all
        assert (await anna.post(setup, data=far, headers=SAME_ORIGIN)).status_code == 422
        done = await anna.post(setup, data=relief, headers=SAME_ORIGIN)
        assert done.status_code == 200, done.text
        assert "1 af dine opgaver er givet videre" in done.text
        assert "2027-03-08\N{EN DASH}2027-03-14: venter på kommunen" in done.text
        assert (await copies(anna, feed))["t-shop_20270309T1000"]["summary"].startswith("[Ledig]")
        received = await deliver(store, settings, clock)
        [asked] = [e["data"] for e in received if e["type"] == "relief.requested"]
        assert (asked["member_id"], asked["start"]) == ("m-anna", "2027-03-08T00:00:00+01:00")
        async with store.transaction() as tx:
            audit = await tx.list_audit("north", f"relief:{asked['request_id']}")
        assert [(a.actor, a.channel) for a in audit] == [("m-anna", "link")]


async def test_relief_requests_through_the_api_are_checked(app: Any) -> None:
    async with http(app) as host:
        assert (await post_event(host, circle_event(1, [ANNA, SARA]))).status_code == 202
        body = {"citizen_id": "c-123", "member_id": "m-anna", "start": "2027-03-08T08:00:00",
                "end": "2027-03-09T08:00:00+01:00"}  # fmt: skip
        assert (await host.post("/api/v1/relief-requests", json=body)).status_code == 401
        made = await host.post("/api/v1/relief-requests", json=body, headers=auth())
        assert made.status_code == 201 and made.json()["released"] == []
        assert made.json()["start"] == "2027-03-08T08:00:00+01:00"  # naive: the citizen's zone
        cases = [
            (body | {"citizen_id": "c-404"}, 404, "unknown_circle"),
            (body | {"member_id": "m-nobody"}, 422, "not_in_circle"),
            (body | {"member_id": "m-sara"}, 422, "role"),
            (body | {"end": "2027-03-01"}, 422, "invalid_period"),
        ]
        for sent, status, reason in cases:
            answer = await host.post("/api/v1/relief-requests", json=sent, headers=auth())
            assert (answer.status_code, answer.json().get("reason")) == (status, reason)
            assert answer.headers["content-type"] == "application/problem+json"
        malformed = await host.post(
            "/api/v1/relief-requests",
            content=b"{",
            headers=auth() | {"content-type": "application/json"},
        )
        assert malformed.status_code == 400
        invalid = await host.post(
            "/api/v1/relief-requests", json=body | {"start": "soon", "x": 1}, headers=auth()
        )
        assert invalid.status_code == 422
        # A host's retry names its request: asked once, answered again.
        later = body | {"start": "2027-03-10", "end": "2027-03-11"}
        keyed = auth() | {"idempotency-key": "booking-4711/relief"}
        first = await host.post("/api/v1/relief-requests", json=later, headers=keyed)
        again = await host.post("/api/v1/relief-requests", json=later, headers=keyed)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json() | {"released": []}
        other = await host.post(
            "/api/v1/relief-requests", json=later | {"end": "2027-03-12"}, headers=keyed
        )
        assert (other.status_code, other.json()["reason"]) == (422, "idempotency_key_reused")
        for bad in ("", "x" * 256, "with space"):
            refused = await host.post(
                "/api/v1/relief-requests", json=later, headers=auth() | {"idempotency-key": bad}
            )
            assert refused.status_code == 422, bad
        unkeyed = [
            await host.post("/api/v1/relief-requests", json=later, headers=auth()) for _ in range(2)
        ]
        assert len({answer.json()["id"] for answer in unkeyed}) == 2  # no key: two requests
        far = await host.post(
            "/api/v1/relief-requests", json=body | {"end": "9999-12-31"}, headers=auth()
        )
        assert far.status_code == 422 and far.json()["errors"] == [
            {"loc": ["end"], "msg": "an ISO 8601 date or date-time is required"}
        ]
        assert invalid.headers["content-type"] == "application/problem+json"
