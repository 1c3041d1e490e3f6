"""The staff dashboard through the real app, on SQLite and PostgreSQL: who gets in (bearer
token, login session, nobody else), what a circle's page shows (holders, unfilled and at-risk
items, load against capacity as an SVG chart, open relief requests), in Danish and English."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.store.sql import SqlStore
from plugin.config import Settings, validate_settings
from plugin.domain.model import Claim, ReliefRequest
from tests.integration.support import (
    NORTH_DATA_KEY,
    NORTH_SECRET,
    NORTH_TOKEN,
    SOUTH_SECRET,
    SOUTH_TOKEN,
    Clock,
    auth,
    circle_event,
    post_event,
    task_event,
)

NORTH_STAFF = "north staff password"
SOUTH_STAFF = "south staff password"
# Sunday 14 March 2027, 13:00 in Copenhagen: Tuesday's shopping (16 March, deadline Monday
# 10:00) is at risk; this afternoon's walk, deadline passed, is unfilled.
NOW = datetime(2027, 3, 14, 12, 0, tzinfo=UTC)
SAME_ORIGIN = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return validate_settings(
        {
            "server": {"public_url": "http://testserver"},
            "database": {"url": database_url},
            "calendar": {"type": "embedded", "folder": str(tmp_path / "dav")},
            "tenants": [
                {"id": "north", "webhook_secret": NORTH_SECRET, "api_token": NORTH_TOKEN,
                 "data_key": NORTH_DATA_KEY, "staff_password": NORTH_STAFF},
                {"id": "south", "webhook_secret": SOUTH_SECRET, "api_token": SOUTH_TOKEN,
                 "staff_password": SOUTH_STAFF, "locale": "en"},
            ],
        }
    )  # fmt: skip


async def _seed(client: httpx.AsyncClient, store: SqlStore, clock: Clock) -> None:
    clock.now = NOW
    assert (await post_event(client, circle_event())).status_code == 202
    assert (await post_event(client, task_event(people_needed=1))).status_code == 202
    walk = task_event(task_id="t-walk", category="walk", start="2027-03-14T15:00:00",
                      end="2027-03-14T16:00:00", recurrence=None, people_needed=1)  # fmt: skip
    assert (await post_event(client, walk)).status_code == 202
    # Anna takes two hours every day for ten days: beyond her 4 hours a week.
    daily = task_event(task_id="t-meal", category="meal", start="2027-03-15T16:00:00",
                       end="2027-03-15T18:00:00", recurrence="FREQ=DAILY;COUNT=10",
                       people_needed=1)  # fmt: skip
    assert (await post_event(client, daily)).status_code == 202
    visit = {"type": "visit.assigned", "data": {
        "id": "v-9", "citizen_id": "c-123", "version": 1, "staff_member_id": "m-sara",
        "category": "visit", "start": "2027-03-17T09:00:00", "end": "2027-03-17T09:30:00",
        "timezone": "Europe/Copenhagen"}}  # fmt: skip
    assert (await post_event(client, visit)).status_code == 202
    south = circle_event(1, [{"id": "m-eve", "name": "Eve", "role": "relative",
                              "visibility": "full", "locale": "en", "calendar": "feed"}],
                         citizen_id="c-south")  # fmt: skip
    assert (await post_event(client, south, tenant="south", secret=SOUTH_SECRET)).status_code == 202
    assert (await client.get("/api/v1/circles/c-123", headers=auth())).status_code == 200
    async with store.transaction() as tx:
        for day in range(15, 25):
            occurrence = f"t-meal_202703{day}T1600"
            await tx.add_claim("north", Claim(occurrence, "m-anna", "link", NOW))
        await tx.save_relief_request(
            ReliefRequest("north", "r-1", "c-123", "m-anna", NOW + timedelta(days=8),
                          NOW + timedelta(days=15))
        )  # fmt: skip
        await tx.save_relief_request(
            ReliefRequest("north", "r-0", "c-123", "m-anna", NOW - timedelta(days=20),
                          NOW - timedelta(days=13))
        )  # fmt: skip


def _form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def _login(
    client: httpx.AsyncClient, tenant: str = "north", password: str = NORTH_STAFF, **extra: str
) -> httpx.Response:
    return await client.post(
        "/staff/login",
        data={"tenant": tenant, "password": password, "lang": "da", "next": ""} | extra,
        headers=SAME_ORIGIN,
    )


async def test_without_credentials_staff_are_sent_to_the_login_page(
    client: httpx.AsyncClient,
) -> None:
    index = await client.get("/staff/")
    assert index.status_code == 303 and index.headers["location"] == "/staff/login"
    page = await client.get("/staff/circles/c-123?lang=en")
    assert page.status_code == 303
    assert page.headers["location"] == "/staff/login?next=%2Fstaff%2Fcircles%2Fc-123&lang=en"
    login = await client.get("/staff/login?next=/staff/circles/c-123&lang=en")
    assert login.status_code == 200
    assert '<html lang="en">' in login.text and "<h1>Staff sign-in</h1>" in login.text
    assert 'name="next" value="/staff/circles/c-123"' in login.text
    assert '<label for="password">Password</label>' in login.text
    danish = await client.get("/staff/login", headers={"accept-language": "da-DK,en;q=0.5"})
    assert "<h1>Log ind som personale</h1>" in danish.text
    for response in (login, danish):
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "script-src" not in response.headers["content-security-policy"]
    # Only the dashboard's own paths are followed after a login.
    evil = await client.get("/staff/login?next=https://evil.example/")
    assert 'name="next" value=""' in evil.text


async def test_bearer_tokens_open_only_their_own_tenant(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    await _seed(client, store, clock)
    wrong = await client.get("/staff/", headers=auth("not-a-token-of-anyone"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="carecal staff"'
    index = await client.get("/staff/", headers=auth())
    assert index.status_code == 200
    assert 'href="/staff/circles/c-123"' in index.text and "Fru Jensen" in index.text
    assert "c-south" not in index.text
    assert (await client.get("/staff/circles/c-123", headers=auth())).status_code == 200
    # The other tenant's circle is not found, with either tenant's token.
    assert (await client.get("/staff/circles/c-south", headers=auth())).status_code == 404
    assert (await client.get("/staff/circles/c-123", headers=auth(SOUTH_TOKEN))).status_code == 404
    south = await client.get("/staff/circles/c-south", headers=auth(SOUTH_TOKEN))
    assert south.status_code == 200 and '<html lang="en">' in south.text  # south's locale


async def test_login_session_and_logout(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    await _seed(client, store, clock)
    for tenant, password in (("north", "wrong password"), ("south", NORTH_STAFF),
                             ("north", NORTH_TOKEN)):  # fmt: skip
        refused = await _login(client, tenant, password)
        assert refused.status_code == 401, (tenant, password)
        assert 'role="alert"' in refused.text and "set-cookie" not in refused.headers
    cross_site = await client.post(
        "/staff/login",
        data={"tenant": "north", "password": NORTH_STAFF},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross_site.status_code == 403 and "set-cookie" not in cross_site.headers

    signed_in = await _login(client, next="/staff/circles/c-123")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/staff/circles/c-123?lang=da"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("carecal-staff=north.")
    for flag in ("HttpOnly", "Max-Age=7200", "Path=/staff", "SameSite=strict"):
        assert flag in cookie, flag
    assert "Secure" not in cookie  # http here; Secure and __Host- under https

    page = await client.get("/staff/circles/c-123")
    assert page.status_code == 200 and "Fru Jensen" in page.text
    assert (await client.get("/staff/circles/c-south")).status_code == 404

    # Sign out: needs the form token of this session, then the cookie goes.
    assert (await client.post("/staff/logout", headers=SAME_ORIGIN)).status_code == 403
    signed_out = await client.post(
        "/staff/logout", data={"form_token": _form_token(page.text)}, headers=SAME_ORIGIN
    )
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/staff/login"
    assert 'carecal-staff=""' in signed_out.headers["set-cookie"]
    assert (await client.get("/staff/circles/c-123")).status_code == 303

    # A session ends by itself after two hours.
    assert (await _login(client)).status_code == 303
    assert (await client.get("/staff/")).status_code == 200
    clock.now = NOW + timedelta(minutes=121)
    assert (await client.get("/staff/")).status_code == 303


def _svg(html: str) -> ET.Element:
    found = re.search(r"<svg .*?</svg>", html, re.S)
    assert found, "no SVG chart"
    return ET.fromstring(found.group(0))  # well-formed XML


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_a_circle_page_in_danish(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock
) -> None:
    await _seed(client, store, clock)
    response = await client.get("/staff/circles/c-123", headers=auth())
    html = response.text
    text = _text(html)
    assert '<html lang="da">' in html
    assert "<h1>Fru Jensen \N{EN DASH} omsorg</h1>" in html
    for heading in ("Mangler folk", "Belastning", "Anmodninger om aflastning",
                    "De kommende fire uger"):  # fmt: skip
        assert f">{heading}</h2>" in html, heading
    assert html.count("<caption>") == 4
    assert '<th scope="col">Hvornår</th>' in html and '<th scope="row">' in html
    # Unfilled (the walk, deadline passed) and at risk (Tuesday's shopping).
    assert "Ikke besat \N{EN DASH} fristen er overskredet" in text
    assert "I fare \N{EN DASH} fristen er snart" in text
    # Who holds what: Sara's visit, Anna's meals.
    assert "Besøg</td><td>Sara" in html
    assert "Måltid</td><td>Anna" in html
    # Load: the SVG chart, drawn on the server, and Anna over her capacity.
    svg = _svg(html)
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "load-title load-desc"
    assert svg.findtext(f"{ns}title") == "Belastning mod kapacitet"
    assert len(svg.findall(f"{ns}rect")) >= 6  # background, legend, bars
    assert "Anna: 20 timer i denne og de tre næste uger" in svg.findtext(f"{ns}desc", "")
    assert "Over kapacitet" in text
    # Open relief requests only (r-0 ended).
    assert text.count("Afventer kommunen") == 1
    # Names as the host gave them, nothing else about members.
    assert "anna@example.org" not in html and "sara@kommune.example" not in html
    headers = response.headers
    assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    "how", [{"params": {"lang": "en"}}, {"headers": {"accept-language": "en"}}]
)
async def test_a_circle_page_in_english(
    client: httpx.AsyncClient, store: SqlStore, clock: Clock, how: dict[str, Any]
) -> None:
    await _seed(client, store, clock)
    extra_headers = how.get("headers", {})
    response = await client.get(
        "/staff/circles/c-123", params=how.get("params"), headers=auth() | extra_headers
    )
    html = response.text
    text = _text(html)
    assert '<html lang="en">' in html and "<h1>Fru Jensen \N{EN DASH} care</h1>" in html
    for heading in ("Needs people", "Load", "Relief requests", "The coming four weeks"):
        assert f">{heading}</h2>" in html, heading
    assert "Unfilled \N{EN DASH} deadline passed" in text and "Over capacity" in text
    assert _svg(html).findtext("{http://www.w3.org/2000/svg}title") == "Load against capacity"
    assert "Visit</td><td>Sara" in html and "Awaiting the municipality" in text
    # The language link leads to the Danish page.
    assert 'href="/staff/circles/c-123?lang=da" lang="da" hreflang="da">Dansk</a>' in html


async def test_head_is_no_login_and_a_refused_login_is_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """HEAD is the login page's GET, never a login attempt: before, each one counted
    against the address's login limit (ten, then 429). A refused login is logged with its
    tenant when it is one, never with what was typed."""
    for _ in range(12):
        head = await client.request("HEAD", "/staff/login", headers=SAME_ORIGIN)
        assert head.status_code == 200
    caplog.set_level(logging.WARNING, logger="plugin.web.staff")
    assert (await _login(client, "north", "wrong password")).status_code == 401
    assert (await _login(client, "my secret password", "")).status_code == 401
    said = [(r.getMessage(), r.tenant) for r in caplog.records if r.name == "plugin.web.staff"]  # type: ignore[attr-defined]
    assert said == [("staff login refused", "north"), ("staff login refused", "(unknown)")]
    assert "my secret password" not in caplog.text and "wrong password" not in caplog.text
    assert (await _login(client)).status_code == 303
