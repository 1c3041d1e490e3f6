"""The embedded CalDAV server end to end: carecal served by uvicorn on a free loopback port (a
WSGI app inside needs a real server), credentials issued through the API, and a real CalDAV
client playing the member's calendar app."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.caldav import embedded
from adapters.caldav.embedded import SERVICE_USER, VIEW_SYNC
from adapters.caldav.port import Forbidden
from plugin.services.calendars import View
from plugin.services.ports import Store
from plugin.services.view_sync import view_of_job
from plugin.web.app import open_store
from tests.integration.caldav.support import (
    Served,
    calendar_app,
    free_port,
    issue,
    serve_in_thread,
)
from tests.integration.support import auth, circle_event, make_settings, post_event

PROPFIND = '<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>'
EVENT = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//member's app//EN\r
BEGIN:VEVENT\r
UID:anna-1@example.org\r
DTSTAMP:20270301T090000Z\r
DTSTART:20270316T090000Z\r
DTEND:20270316T100000Z\r
SUMMARY:Mine\r
END:VEVENT\r
END:VCALENDAR\r
"""


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Served]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path, database={"url": database_url}, server={"public_url": base, "port": port}
    )
    with serve_in_thread(settings):
        yield Served(base, settings)


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        response = await post_event(client, circle_event())
        assert response.status_code == 202
        yield client


@pytest.fixture
async def store(served: Served) -> AsyncIterator[Store]:
    """The same database, opened as another process would (the app migrated it)."""
    opened = await open_store(served.settings, migrate=False)
    try:
        yield opened
    finally:
        await opened.close()


async def propfind(
    http: httpx.AsyncClient, path: str, username: str, password: str
) -> httpx.Response:
    return await http.request(
        "PROPFIND",
        path,
        content=PROPFIND,
        auth=(username, password),
        headers={"Depth": "0", "Content-Type": "application/xml"},
    )


async def test_members_use_their_own_calendar_home_and_nobody_elses(
    served: Served, http: httpx.AsyncClient, store: Store
) -> None:
    anna = await issue(http, "m-anna")
    bo = await issue(http, "m-bo")
    assert anna["username"] == "north~m-anna"
    assert anna["caldav_url"] == f"{served.base}/dav/north~m-anna/"
    assert len(anna["password"]) >= 22  # at least 128 bits, URL-safe base64
    assert anna["password"] != bo["password"]

    home = "/dav/north~m-anna/"
    async with calendar_app(served, anna) as calendars:
        path = await calendars.ensure_collection(home + "care/", "Fru Jensen - omsorg")
        etag = await calendars.create(path, "mine.ics", EVENT)
        fetched = await calendars.fetch(path, [path + "mine.ics"])
        assert b"UID:anna-1@example.org" in fetched[path + "mine.ics"][1]
        assert etag is None or etag == fetched[path + "mine.ics"][0]
        # Bo's home: neither readable nor writable for Anna.
        bo_home = f"/dav/{bo['username']}/"
        with pytest.raises(Forbidden):
            await calendars.ensure_collection(bo_home + "care/", "not hers")
    assert (await propfind(http, bo_home, anna["username"], anna["password"])).status_code == 403
    put = await http.put(
        bo_home + "care/x.ics",
        content=EVENT,
        auth=(anna["username"], anna["password"]),
        headers={"Content-Type": "text/calendar"},
    )
    assert put.status_code == 403
    # Bo reaches his own home.
    assert (await propfind(http, bo_home, bo["username"], bo["password"])).status_code == 207

    # The member's write is queued for a view sync, durably, in the store.
    jobs = await store.lease_jobs(
        "test", now=datetime.now(UTC) + timedelta(minutes=1), limit=10, lease_seconds=60
    )
    # (the circle.updated before it queued a sync of each hosted member's view as well)
    # Keyed like the view's other syncs (citizen:member), so they are not queued twice.
    written = [j for j in jobs if j.payload.get("reason") == "member_write"]
    assert [(j.tenant_id, j.kind, j.key) for j in written] == [("north", VIEW_SYNC, "care:m-anna")]
    assert written[0].payload["member_id"] == "m-anna"
    assert written[0].payload["collection"] == "/dav/north~m-anna/care/"
    # The worker reads it as the view `view_sync_job` queues syncs of, under the same key.
    view = view_of_job("north", written[0].payload)
    assert view == View("north", "m-anna", "care") and written[0].key == view.job_key


async def test_wrong_and_replaced_passwords_are_refused(
    served: Served, http: httpx.AsyncClient
) -> None:
    first = await issue(http, "m-anna")
    home = f"/dav/{first['username']}/"
    assert (await propfind(http, home, first["username"], first["password"])).status_code == 207
    wrong = await propfind(http, home, first["username"], first["password"] + "x")
    assert wrong.status_code == 401
    assert (await propfind(http, home, "north~m-nobody", "whatever")).status_code == 401
    assert (await propfind(http, home, SERVICE_USER, "guess")).status_code == 401

    second = await issue(http, "m-anna")
    assert second["username"] == first["username"]
    old = await propfind(http, home, first["username"], first["password"])
    assert old.status_code == 401
    assert (await propfind(http, home, second["username"], second["password"])).status_code == 207


async def test_a_member_who_leaves_the_tenants_last_circle_loses_her_password(
    served: Served, http: httpx.AsyncClient, store: Store
) -> None:
    """Consent withdrawn: her links and feed stop, and so does her calendar login (before, an
    ex-member kept full access to her home, and could not even be given a new password)."""
    anna, sara = await issue(http, "m-anna"), await issue(http, "m-sara")
    home = f"/dav/{anna['username']}/"
    assert (await propfind(http, home, anna["username"], anna["password"])).status_code == 207
    members = circle_event()["data"]["members"]
    in_another = circle_event(1, [members[0]], citizen_id="c-456")  # Anna, in a second circle
    assert (await post_event(http, in_another)).status_code == 202
    without_anna = circle_event(2, members[1:])
    assert (await post_event(http, without_anna)).status_code == 202
    await http.get("/api/v1/circles/c-123", headers=auth())  # applied by now
    # Still in c-456: still hers.
    assert (await propfind(http, home, anna["username"], anna["password"])).status_code == 207
    assert (await post_event(http, circle_event(2, [], citizen_id="c-456"))).status_code == 202
    await http.get("/api/v1/circles/c-456", headers=auth())
    assert (await propfind(http, home, anna["username"], anna["password"])).status_code == 401
    sara_home = f"/dav/{sara['username']}/"
    assert (await propfind(http, sara_home, sara["username"], sara["password"])).status_code == 207
    async with store.transaction() as tx:
        audit = await tx.list_audit("north", subject="m-anna")
    assert [e.action for e in audit].count("calendar_credential.revoked") == 1


async def test_credentials_only_for_current_members_of_the_tenant(
    http: httpx.AsyncClient,
) -> None:
    path = "/api/v1/members/{}/calendar-credentials"
    assert (await http.post(path.format("m-anna"))).status_code == 401
    assert (await http.post(path.format("m-nobody"), headers=auth())).status_code == 404
    south = auth("south-api-token-0123456789")
    assert (await http.post(path.format("m-anna"), headers=south)).status_code == 404


async def test_well_known_caldav_redirects_to_dav(served: Served, http: httpx.AsyncClient) -> None:
    for method in ("GET", "PROPFIND"):
        response = await http.request(method, "/.well-known/caldav")
        assert response.status_code == 301
        assert response.headers["location"] == f"{served.base}/dav/"
    # Without credentials the server asks for them.
    assert (await http.request("PROPFIND", "/dav/", content=PROPFIND)).status_code == 401


async def test_a_listing_while_items_are_deleted_never_fails(
    served: Served, http: httpx.AsyncClient
) -> None:
    """Radicale 3.9 renders a PROPFIND's properties after it has released its storage lock, and a
    collection's etag reads every item file: a DELETE in between made the listing answer 500
    (seen in CI). The embedded server holds the read lock for the whole PROPFIND."""
    anna = await issue(http, "m-anna")
    async with calendar_app(served, anna) as calendars:
        path = await calendars.ensure_collection("/dav/north~m-anna/busy/", "busy")

        async def churn() -> None:
            for round_ in range(6):
                names = [f"r{round_}-{n}.ics" for n in range(15)]
                for name in names:
                    body = EVENT.replace(b"anna-1@", f"{name}@".encode())
                    await calendars.create(path, name, body)
                listing = await calendars.list_etags(path)
                for name in names:
                    await calendars.delete(path + name, listing[path + name])

        async def list_all(done: asyncio.Event) -> int:
            listings = 0
            while not done.is_set():
                await calendars.list_etags(path)  # raises CalendarUnavailable on a 500
                listings += 1
            return listings

        done = asyncio.Event()
        listers = [asyncio.create_task(list_all(done)) for _ in range(3)]
        try:
            await churn()
        finally:
            done.set()
        counts = await asyncio.gather(*listers)
        assert min(counts) > 0


# --- what one member's app can do to the server that everyone shares ------------------------


async def test_bodies_that_arrive_slowly_hold_up_no_one(
    served: Served, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Radicale reads a body blocking, in one of the server's few threads: twelve PUTs whose
    bodies never came held them all, and every member's calendar with them (Sara's PROPFIND
    timed out). Bodies are read before a thread is taken, and one that is late is refused."""
    monkeypatch.setattr(embedded, "BODY_SECONDS", 1.0)
    anna, sara = await issue(http, "m-anna"), await issue(http, "m-sara")
    port = int(served.base.rsplit(":", 1)[1])
    token = base64.b64encode(f"{anna['username']}:{anna['password']}".encode()).decode()
    slow = []
    for n in range(2 * embedded.WSGI_THREADS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"PUT /dav/{anna['username']}/care/s{n}.ics HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: text/calendar\r\n"
            "Content-Length: 1000\r\n\r\nBEGIN".encode()
        )
        await writer.drain()
        slow.append((reader, writer))
    try:
        home = f"/dav/{sara['username']}/"
        started = time.monotonic()
        answer = await asyncio.wait_for(
            propfind(http, home, sara["username"], sara["password"]), timeout=5
        )
        assert answer.status_code == 207 and time.monotonic() - started < 2
        for reader, _ in slow:
            status = await asyncio.wait_for(reader.readline(), timeout=5)
            assert status.split()[1] == b"408"
    finally:
        for _, writer in slow:
            writer.close()


@pytest.mark.parametrize("header", ["Basic !!!", "Basic bm9jb2xvbg==", "Basic", "basic bm8="])
async def test_a_malformed_login_is_asked_again_not_answered_with_an_error(
    served: Served, http: httpx.AsyncClient, header: str
) -> None:
    response = await http.request(
        "PROPFIND", "/dav/", content=PROPFIND, headers={"Authorization": header, "Depth": "0"}
    )
    assert response.status_code == 401 and "Basic" in response.headers["www-authenticate"]


async def test_a_members_home_stays_and_her_writes_in_it_are_all_seen(
    served: Served, http: httpx.AsyncClient, store: Store
) -> None:
    """Her home holds her views: deleting or moving it is refused. Moving an object between
    her calendars queues both calendars' syncs (Radicale tells its hook nothing of a MOVE);
    a whole calendar PUT over a calendar's own path, which no hook sees either, is refused.
    An error costs no second: Radicale's sleep after a 5xx, holding a thread, is off."""
    anna = await issue(http, "m-anna")
    login = (anna["username"], anna["password"])
    home = f"/dav/{anna['username']}/"
    async with calendar_app(served, anna) as calendars:
        care = await calendars.ensure_collection(home + "care/", "care")
        other = await calendars.ensure_collection(home + "other/", "other")
        await calendars.create(care, "mine.ics", EVENT)
    earlier = await store.lease_jobs(  # what the writes so far queued: out of the way
        "test", now=datetime.now(UTC) + timedelta(minutes=1), limit=50, lease_seconds=600
    )
    for job in earlier:
        await store.finish_job(job.id, "test")
    for method in ("DELETE", "MOVE"):
        headers = {"Destination": f"{served.base}/dav/{anna['username']}x/"}
        assert (await http.request(method, home, auth=login, headers=headers)).status_code == 403
    assert (await propfind(http, care, *login)).status_code == 207

    moved = await http.request(
        "MOVE", care + "mine.ics", auth=login, headers={"Destination": other + "mine.ics"}
    )
    assert moved.status_code == 201
    jobs = await store.lease_jobs(
        "test", now=datetime.now(UTC) + timedelta(minutes=1), limit=10, lease_seconds=60
    )
    assert sorted(j.key for j in jobs if j.payload.get("change") == "move") == [
        "care:m-anna",
        "other:m-anna",
    ]

    whole = EVENT.replace(b"anna-1@", b"anna-2@")
    put = await http.put(
        other, content=whole, auth=login, headers={"Content-Type": "text/calendar"}
    )
    assert put.status_code in (401, 403)
    assert (await propfind(http, other, *login)).status_code == 207

    laughs = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><propfind>&a;</propfind>'
    started = time.monotonic()
    broken = await http.request("PROPFIND", care, content=laughs, auth=login)
    assert broken.status_code >= 400 and time.monotonic() - started < 0.5
