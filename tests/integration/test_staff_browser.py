"""Staff sign in and read a circle's dashboard in a real browser: headless Chromium from
Debian's packages, driven by Playwright, against `carecal` served by uvicorn on a loopback
port, with JavaScript switched off (the dashboard needs none).

Screenshots are kept in `tests/artifacts/` (git-ignored): the login page, the dashboard in
Danish and in English.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from icalendar import Calendar

from tests.integration.caldav.support import CPH, free_port, one_off, serve_in_thread
from tests.integration.support import (
    NORTH_DATA_KEY,
    NORTH_SECRET,
    NORTH_TOKEN,
    auth,
    circle_event,
    make_settings,
    sign_event,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
STAFF_PASSWORD = "north staff password"
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}

pytestmark = pytest.mark.slow


def _chromium() -> str:
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM}: `make browser` installs it")
    pytest.importorskip("playwright.sync_api", reason="needs Playwright (the `test` extra)")
    return str(CHROMIUM)


def _post(http: httpx.Client, event: dict[str, Any]) -> None:
    body, headers = sign_event(event)
    response = http.post("/webhooks/north", content=body, headers=headers)
    assert response.status_code == 202, response.text


def _claim_through_link(http: httpx.Client, feed_url: str, occurrence_id: str) -> None:
    feed = Calendar.from_ical(http.get(feed_url).content)
    [event] = [e for e in feed.walk("VEVENT") if str(e["uid"]).startswith(occurrence_id)]
    page = http.get(str(event["url"]))
    found = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert found, page.text
    claimed = http.post(
        str(event["url"]),
        data={"action": "claim", "form_token": found.group(1)},
        headers=SAME_ORIGIN,
    )
    assert claimed.status_code == 200, claimed.text


def _seed(http: httpx.Client) -> None:
    members = [
        {"id": "m-anna", "name": "Anna", "role": "relative", "visibility": "full",
         "locale": "da", "calendar": "feed", "capacity": {"hours_per_week": 3}},
        {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "limited",
         "locale": "en", "calendar": "feed", "capacity": {"hours_per_week": 0.5}},
        {"id": "m-sara", "name": "Sara", "role": "staff", "visibility": "full",
         "locale": "da", "calendar": "feed"},
    ]  # fmt: skip
    _post(http, circle_event(1, members))
    today = datetime.now(CPH).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    tomorrow = today + timedelta(days=1, hours=10)
    _post(http, one_off(tomorrow))  # t-1: due within two days, asked of Anna
    _post(http, one_off(today + timedelta(days=3, hours=14), task_id="t-walk", category="walk"))
    for day in range(2, 6):
        start = today + timedelta(days=day, hours=17)
        _post(http, one_off(start, task_id=f"t-meal-{day}", category="meal"))
    visit = today + timedelta(days=2, hours=9)
    _post(http, {"type": "visit.assigned", "data": {
        "id": "v-9", "citizen_id": "c-123", "version": 1, "staff_member_id": "m-sara",
        "category": "visit", "start": f"{visit:%Y-%m-%dT%H:%M:%S}",
        "end": f"{visit + timedelta(minutes=30):%Y-%m-%dT%H:%M:%S}",
        "timezone": "Europe/Copenhagen"}})  # fmt: skip

    walk = http.get("/api/v1/tasks/t-walk", headers=auth()).json()["occurrences"][0]["id"]
    assigned = http.post(
        f"/api/v1/occurrences/{walk}/assign", json={"member_id": "m-sara"}, headers=auth()
    )
    assert assigned.status_code == 200 and assigned.json()["outcome"] == "assigned"
    first = http.get("/api/v1/tasks/t-1", headers=auth()).json()["occurrences"][0]["id"]
    asked = http.post(
        f"/api/v1/occurrences/{first}/assign", json={"member_id": "m-anna"}, headers=auth()
    )
    assert asked.status_code == 200 and asked.json()["outcome"] == "asked"
    # Bo takes three meals: beyond the half hour a week he said he can manage.
    issued = http.post("/api/v1/members/m-bo/calendar-credentials", headers=auth()).json()
    for day in range(2, 5):
        meal = http.get(f"/api/v1/tasks/t-meal-{day}", headers=auth()).json()
        _claim_through_link(http, issued["feed_url"], meal["occurrences"][0]["id"])
    relief = http.post(
        "/api/v1/relief-requests",
        json={"citizen_id": "c-123", "member_id": "m-anna",
              "start": f"{today + timedelta(days=8):%Y-%m-%d}",
              "end": f"{today + timedelta(days=14):%Y-%m-%d}"},
        headers=auth(),
    )  # fmt: skip
    assert relief.status_code == 201, relief.text


def test_staff_sign_in_and_read_a_circle_in_a_real_browser(
    tmp_path: Path, database_url: str
) -> None:
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        server={"public_url": base, "port": port},
        tenants=[
            {"id": "north", "webhook_secret": NORTH_SECRET, "api_token": NORTH_TOKEN,
             "data_key": NORTH_DATA_KEY, "staff_password": STAFF_PASSWORD},
        ],
    )  # fmt: skip
    with serve_in_thread(settings), httpx.Client(base_url=base, timeout=10) as http:
        _seed(http)

        ARTIFACTS.mkdir(exist_ok=True)
        for earlier in ARTIFACTS.glob("staff-*.png"):
            earlier.unlink()  # what is kept is this run's
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable)
            try:
                context = browser.new_context(
                    java_script_enabled=False,
                    locale="da-DK",
                    viewport={"width": 1100, "height": 900},
                )
                page = context.new_page()
                response = page.goto(f"{base}/staff/")
                assert response is not None and response.status == 200
                assert page.url == f"{base}/staff/login"
                assert page.get_attribute("html", "lang") == "da"
                expect(page.get_by_role("heading", level=1)).to_have_text("Log ind som personale")
                page.get_by_label("Kommunens id").fill("north")
                page.get_by_label("Adgangskode").fill("not the password")
                page.get_by_role("button", name="Log ind").click()
                expect(page.get_by_role("alert")).to_have_text(
                    "Forkert kommune-id eller adgangskode."
                )
                page.get_by_label("Adgangskode").fill(STAFF_PASSWORD)
                page.screenshot(path=ARTIFACTS / "staff-login.png", full_page=True)
                page.get_by_role("button", name="Log ind").click()

                expect(page.get_by_role("heading", level=1)).to_have_text("Personaleoversigt")
                page.get_by_role("link", name="Fru Jensen \N{EN DASH} omsorg").click()

                expect(page.get_by_role("heading", level=1)).to_have_text(
                    "Fru Jensen \N{EN DASH} omsorg"
                )
                for heading in ("Mangler folk", "Belastning", "Anmodninger om aflastning",
                                "De kommende fire uger"):  # fmt: skip
                    expect(page.get_by_role("heading", level=2, name=heading)).to_be_visible()
                attention = page.get_by_role("table", name=re.compile("^Ikke besat eller i fare"))
                expect(attention).to_contain_text("Indkøb")
                expect(attention).to_contain_text("Spurgt: Anna")
                chart = page.get_by_role("img", name="Belastning mod kapacitet")
                expect(chart).to_be_visible()
                load = page.get_by_role("table", name=re.compile("^Timer og opgaver"))
                expect(load.get_by_role("row", name=re.compile("^Bo"))).to_contain_text(
                    "Over kapacitet"
                )
                coming = page.get_by_role("table", name=re.compile("^Opgaver og besøg"))
                expect(coming.get_by_role("row", name=re.compile("Gåtur"))).to_contain_text("Sara")
                expect(coming.get_by_role("row", name=re.compile("Besøg"))).to_contain_text("Sara")
                relief = page.get_by_role("table", name="Åbne anmodninger om aflastning")
                expect(relief.get_by_role("row", name=re.compile("^Anna"))).to_be_visible()
                page.screenshot(path=ARTIFACTS / "staff-dashboard.png", full_page=True)

                page.get_by_role("link", name="English").click()
                assert page.get_attribute("html", "lang") == "en"
                expect(page.get_by_role("heading", level=2, name="Needs people")).to_be_visible()
                expect(page.get_by_role("img", name="Load against capacity")).to_be_visible()
                page.screenshot(path=ARTIFACTS / "staff-dashboard-en.png", full_page=True)

                page.get_by_role("button", name="Sign out").click()
                expect(page.get_by_role("heading", level=1)).to_have_text("Log ind som personale")
                page.goto(f"{base}/staff/circles/c-123")
                assert page.url.startswith(f"{base}/staff/login")
            finally:
                browser.close()
    assert (ARTIFACTS / "staff-dashboard.png").stat().st_size > 0
