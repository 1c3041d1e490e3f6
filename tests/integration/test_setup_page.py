"""The setup page through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import plistlib
import re

import httpx
from icalendar import Calendar

from adapters.store.sql import SqlStore
from plugin.services.calendar_access import verify_password
from tests.integration.support import auth, circle_event, post_event, task_event

SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


async def _urls(client: httpx.AsyncClient, member_id: str) -> dict[str, str]:
    response = await client.post(
        f"/api/v1/members/{member_id}/calendar-credentials", headers=auth()
    )
    assert response.status_code == 201
    body: dict[str, str] = response.json()
    return body


def _path(url: str) -> str:
    return url.removeprefix("http://testserver")


def _form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_a_hosted_member_gets_a_profile_and_device_details(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    first = await _urls(client, "m-anna")
    setup = _path(first["setup_url"])

    page = await client.get(setup)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<html lang="da">' in page.text
    assert "Fru Jensen" in page.text
    assert first["feed_url"] in page.text
    assert 'href="webcal://testserver/feeds/' in page.text
    assert 'value="apple"' in page.text and 'value="device"' in page.text
    token = _form_token(page.text)

    profile = await client.post(
        setup, data={"action": "apple", "form_token": token}, headers=SAME_ORIGIN
    )
    assert profile.status_code == 200
    assert profile.headers["content-type"] == "application/x-apple-aspen-config"
    assert profile.headers["cache-control"] == "no-store"
    assert "carecal.mobileconfig" in profile.headers["content-disposition"]
    [account] = plistlib.loads(profile.content)["PayloadContent"]
    assert account["CalDAVHostName"] == "testserver"
    assert account["CalDAVPort"] == 80
    assert account["CalDAVUseSSL"] is False
    assert account["CalDAVPrincipalURL"] == "/dav/north~m-anna/"
    assert account["CalDAVUsername"] == "north~m-anna"
    async with store.transaction() as tx:
        stored = await tx.get_calendar_credential("north~m-anna")
    assert stored is not None
    assert verify_password(account["CalDAVPassword"], stored.password_hash)
    assert not verify_password(first["password"], stored.password_hash)  # replaced

    device = await client.post(
        setup, data={"action": "device", "form_token": token}, headers=SAME_ORIGIN
    )
    assert device.status_code == 200
    assert "<svg" in device.text and 'role="img"' in device.text
    link = re.search(r'href="(caldav://[^"]+)"', device.text)
    assert link and "@testserver/dav/north~m-anna/" in link.group(1)
    password = re.search(r"<dt>Adgangskode</dt><dd><code>([^<]+)</code>", device.text)
    assert password
    async with store.transaction() as tx:
        stored = await tx.get_calendar_credential("north~m-anna")
        audit = await tx.list_audit("north", subject="m-anna")
    assert stored is not None and verify_password(password.group(1), stored.password_hash)
    # Issued through her setup link: audited as hers, through a link, not as the host's.
    issued = [(e.actor, e.channel) for e in audit if e.action == "calendar_credential.issued"]
    assert issued == [("api", "api"), ("m-anna", "link"), ("m-anna", "link")]

    # The link leaked: the municipality renews her links. Whoever made a password with the
    # old setup link is out of her calendar too, not only out of the pages.
    login = ("north~m-anna", password.group(1))
    home = {"depth": "0"}
    assert (
        await client.request("PROPFIND", "/dav/north~m-anna/", auth=login, headers=home)
    ).status_code == 207
    assert (
        await client.post("/api/v1/members/m-anna/links/renew", headers=auth())
    ).status_code == 200
    assert (
        await client.request("PROPFIND", "/dav/north~m-anna/", auth=login, headers=home)
    ).status_code == 401
    async with store.transaction() as tx:
        assert (await tx.get_calendar_credential("north~m-anna")).revoked_at is not None  # type: ignore[union-attr]


async def test_a_feed_member_gets_the_feed_only(client: httpx.AsyncClient) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    assert (await post_event(client, task_event())).status_code == 202
    urls = await _urls(client, "m-bo")  # calendar "feed", English
    page = await client.get(_path(urls["setup_url"]))
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    # No calendar-app forms (only capacity and relief, which every member has: test_capacity_page)
    assert 'value="apple"' not in page.text and 'value="device"' not in page.text
    assert urls["feed_url"] in page.text
    feed = Calendar.from_ical((await client.get(_path(urls["feed_url"]))).content)
    assert len(list(feed.walk("VEVENT"))) == 4
    refused = await client.post(
        _path(urls["setup_url"]), data={"action": "apple", "form_token": "x"}, headers=SAME_ORIGIN
    )
    assert refused.status_code == 403


async def test_setup_posts_need_the_pages_form_token_and_the_same_origin(
    client: httpx.AsyncClient,
) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    setup = _path((await _urls(client, "m-anna"))["setup_url"])
    token = _form_token((await client.get(setup)).text)
    for data, headers in [
        ({"action": "apple"}, SAME_ORIGIN),
        ({"action": "apple", "form_token": token}, {"sec-fetch-site": "cross-site"}),
        ({"action": "apple", "form_token": token}, {"origin": "https://evil.example"}),
        ({"action": "nothing", "form_token": token}, SAME_ORIGIN),
    ]:
        response = await client.post(setup, data=data, headers=headers)
        assert response.status_code == 403, (data, headers)
        assert "mobileconfig" not in response.headers.get("content-disposition", "")


async def test_unknown_and_revoked_setup_pages(client: httpx.AsyncClient) -> None:
    assert (await post_event(client, circle_event())).status_code == 202
    setup = _path((await _urls(client, "m-anna"))["setup_url"])
    assert (await client.get("/setup/nothing")).status_code == 404
    feed_token = (await _urls(client, "m-anna"))["feed_url"].rsplit("/", 1)[1][: -len(".ics")]
    assert (await client.get(f"/setup/{feed_token}")).status_code == 404  # another kind
    renewed = await client.post("/api/v1/members/m-anna/links/renew", headers=auth())
    assert (await client.get(setup)).status_code == 410
    assert (await client.get(_path(renewed.json()["setup_url"]))).status_code == 200
