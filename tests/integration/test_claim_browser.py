"""A person claims through their link in a real browser: headless Chromium from Debian's
packages, driven by Playwright, against `carecal` served by uvicorn on a loopback port.

Screenshots are kept in `tests/artifacts/` (git-ignored): the claim page before and after the
click, and with the keyboard focus on a button.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from icalendar import Calendar

from tests.integration.caldav.support import CPH, free_port, one_off, serve_in_thread
from tests.integration.support import auth, circle_event, make_settings, sign_event

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

pytestmark = pytest.mark.slow


def _chromium() -> str:
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM}: `make browser` installs it")
    pytest.importorskip("playwright.sync_api", reason="needs Playwright (the `test` extra)")
    return str(CHROMIUM)


def _post(http: httpx.Client, event: dict[str, object]) -> None:
    body, headers = sign_event(event)
    response = http.post("/webhooks/north", content=body, headers=headers)
    assert response.status_code == 202, response.text


def test_a_member_claims_in_a_real_browser(tmp_path: Path, database_url: str) -> None:
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path, database={"url": database_url}, server={"public_url": base, "port": port}
    )
    start = (datetime.now(CPH) + timedelta(days=2)).replace(
        hour=10, minute=0, second=0, microsecond=0, tzinfo=None
    )
    with serve_in_thread(settings), httpx.Client(base_url=base, timeout=10) as http:
        _post(http, circle_event())  # Bo takes a feed and reads English
        _post(http, one_off(start))
        issued = http.post("/api/v1/members/m-bo/calendar-credentials", headers=auth())
        assert issued.status_code == 201, issued.text
        feed = Calendar.from_ical(http.get(issued.json()["feed_url"]).content)
        [event] = feed.walk("VEVENT")
        claim_url = str(event["url"])
        assert claim_url.startswith(f"{base}/c/")

        ARTIFACTS.mkdir(exist_ok=True)
        for earlier in ARTIFACTS.glob("claim-page*.png"):
            earlier.unlink()  # what is kept is this run's
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable)
            try:
                page = browser.new_page(java_script_enabled=False)  # works without it
                response = page.goto(claim_url)
                assert response is not None and response.status == 200
                assert page.get_attribute("html", "lang") == "en"
                expect(page.get_by_role("heading", level=1)).to_have_text("Shopping")
                expect(page.get_by_role("group", name="What would you like to do?")).to_be_visible()
                page.screenshot(path=ARTIFACTS / "claim-page.png", full_page=True)
                page.keyboard.press("Tab")
                expect(page.get_by_role("button", name="Claim")).to_be_focused()
                page.screenshot(path=ARTIFACTS / "claim-page-focus.png", full_page=True)

                page.get_by_role("button", name="Claim").click()

                expect(page.get_by_role("status")).to_have_text("Thank you! The task is yours.")
                expect(page.get_by_role("button", name="Release")).to_be_visible()
                expect(page.get_by_role("button", name="Claim")).to_have_count(0)
                page.screenshot(path=ARTIFACTS / "claim-page-claimed.png", full_page=True)
            finally:
                browser.close()

        task = http.get("/api/v1/tasks/t-1", headers=auth()).json()
        [occurrence] = task["occurrences"]
        assert [(c["member_id"], c["channel"]) for c in occurrence["claims"]] == [("m-bo", "link")]
    assert (ARTIFACTS / "claim-page-claimed.png").stat().st_size > 0
