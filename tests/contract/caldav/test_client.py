"""The calendar port contract, run against real Radicale and Xandikos (fixtures in conftest)."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import icalendar
import pytest

from adapters.caldav.client import CalDAVClient, CalDAVSettings, new_session
from adapters.caldav.port import (
    AlreadyExists,
    CalendarClient,
    CalendarUnavailable,
    EtagMismatch,
    Forbidden,
    InvalidSyncToken,
    NotFound,
    object_href,
)
from tests.contract.caldav.support import PASSWORD, USER, Requests, Server


def event(uid: str, summary: str = "[Ledig] Indkøb", sequence: int = 0) -> bytes:
    """A minimal VEVENT as the renderer would send it (no DTSTAMP: servers may add one)."""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//carecal//test//EN\r\n"
        "BEGIN:VEVENT\r\n"
        f"UID:{uid}\r\n"
        "DTSTART:20270323T090000Z\r\nDTEND:20270323T100000Z\r\n"
        f"SUMMARY:{summary}\r\nSEQUENCE:{sequence}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def vevent(body: bytes) -> icalendar.Component:
    calendar = icalendar.Calendar.from_ical(body)
    (found,) = calendar.walk("VEVENT")
    return found


def uid() -> str:
    return f"occ-{secrets.token_hex(4)}@test.carecal"


def test_the_adapter_is_a_calendar_client(client: CalDAVClient) -> None:
    port: CalendarClient = client  # mypy checks the Protocol; this keeps the line honest
    assert port is client


# -- collections ---------------------------------------------------------------------------


async def test_ensure_collection_creates_once_and_is_idempotent(
    server: Server, client: CalDAVClient
) -> None:
    path = server.home(USER) + f"view-{secrets.token_hex(4)}"
    created = await client.ensure_collection(path, "Fru Jensen - omsorg")
    try:
        assert created == path + "/"
        assert await client.ensure_collection(path + "/", "Fru Jensen - omsorg") == created
        assert await client.list_etags(created) == {}
    finally:
        await client.delete_collection(created)


async def test_ensure_collection_in_a_home_that_does_not_exist_yet(
    server: Server, client: CalDAVClient, requests_seen: Requests
) -> None:
    # Radicale: the service identity writes into a member's home that nobody created; the
    # principal collection is MKCOLed first (needs_principal_mkcol), or MKCALENDAR gets 409.
    home = server.home(f"anna-{secrets.token_hex(3)}")
    path = await client.ensure_collection(home + "fru-jensen/", "Fru Jensen - omsorg")
    try:
        assert (await client.probe(path)).sync_token
        methods = [method for method, _, _ in requests_seen.sent]
        assert ("MKCOL" in methods) == (server.kind == "radicale")
    finally:
        await client.delete_collection(path)


async def test_ensure_collection_renames_an_existing_one(
    client: CalDAVClient, collection: str, requests_seen: Requests
) -> None:
    requests_seen.clear()
    await client.ensure_collection(collection, "Fru Hansen - omsorg")
    assert [m for m, _, _ in requests_seen.sent] == ["PROPFIND", "PROPPATCH"]
    requests_seen.clear()
    await client.ensure_collection(collection, "Fru Hansen - omsorg")
    assert [m for m, _, _ in requests_seen.sent] == ["PROPFIND"]


async def test_delete_collection_removes_it_and_tolerates_absence(
    server: Server, client: CalDAVClient
) -> None:
    path = await client.ensure_collection(server.home(USER) + f"view-{secrets.token_hex(4)}/", "x")
    await client.create(path, "a.ics", event(uid()))
    await client.delete_collection(path)
    with pytest.raises(NotFound):
        await client.probe(path)
    await client.delete_collection(path)


async def test_missing_collection_is_not_found_everywhere(
    server: Server, client: CalDAVClient
) -> None:
    # Radicale answers 404; Xandikos a 207 whose only response is a 404.
    missing = server.home(USER) + f"missing-{secrets.token_hex(4)}/"
    with pytest.raises(NotFound):
        await client.probe(missing)
    with pytest.raises(NotFound):
        await client.list_etags(missing)


# -- conditional writes --------------------------------------------------------------------


async def test_create_answers_the_etag_of_what_the_server_stored(
    server: Server, client: CalDAVClient, collection: str
) -> None:
    sent = event(uid())
    etag = await client.create(collection, "a.ics", sent)
    href = object_href(collection, "a.ics")
    listed = await client.list_etags(collection)
    fetched_etag, stored = (await client.fetch(collection, [href]))[href]
    assert etag is not None and etag == listed[href] == fetched_etag
    # Servers normalise what they store, so the stored bytes, and the ETag, are theirs.
    assert vevent(stored)["UID"] == vevent(sent)["UID"]
    assert str(vevent(stored)["SUMMARY"]) == "[Ledig] Indkøb"
    if server.kind == "radicale":
        assert "DTSTAMP" in vevent(stored) and b"DTSTAMP" not in sent
    assert stored.replace(b"\r\n", b"\n") != sent.replace(b"\r\n", b"\n")


async def test_create_over_an_existing_object_raises_already_exists(
    client: CalDAVClient, collection: str
) -> None:
    the_uid = uid()
    first = await client.create(collection, "a.ics", event(the_uid, "first"))
    with pytest.raises(AlreadyExists) as raised:
        await client.create(collection, "a.ics", event(the_uid, "second"))
    assert raised.value.status == 412
    href = object_href(collection, "a.ics")
    etag, body = (await client.fetch(collection, [href]))[href]
    assert etag == first and str(vevent(body)["SUMMARY"]) == "first"


async def test_create_with_a_uid_already_in_the_collection_raises_already_exists(
    server: Server, client: CalDAVClient, collection: str
) -> None:
    the_uid = uid()
    await client.create(collection, "a.ics", event(the_uid))
    with pytest.raises(AlreadyExists) as raised:
        await client.create(collection, "b.ics", event(the_uid))
    # Radicale 409, Xandikos 412: the precondition says what happened, the status does not.
    assert raised.value.preconditions == ("{urn:ietf:params:xml:ns:caldav}no-uid-conflict",)
    assert raised.value.status == {"radicale": 409, "xandikos": 412}[server.kind]


async def test_update_needs_the_current_etag(client: CalDAVClient, collection: str) -> None:
    the_uid = uid()
    href = object_href(collection, "a.ics")
    first = await client.create(collection, "a.ics", event(the_uid))
    assert first is not None
    second = await client.update(href, event(the_uid, "[Dig] Indkøb", 1), if_match=first)
    assert second is not None and second != first
    with pytest.raises(EtagMismatch) as raised:
        await client.update(href, event(the_uid, "stale", 2), if_match=first)
    assert raised.value.status == 412
    assert (await client.list_etags(collection)) == {href: second}


async def test_delete_needs_the_current_etag(client: CalDAVClient, collection: str) -> None:
    href = object_href(collection, "a.ics")
    etag = await client.create(collection, "a.ics", event(uid()))
    assert etag is not None
    with pytest.raises(EtagMismatch):
        await client.delete(href, if_match='"not-the-etag"')
    await client.delete(href, if_match=etag)
    assert await client.list_etags(collection) == {}
    with pytest.raises((NotFound, EtagMismatch)):
        await client.delete(href, if_match=etag)


async def test_update_of_a_deleted_object_fails(client: CalDAVClient, collection: str) -> None:
    href = object_href(collection, "a.ics")
    etag = await client.create(collection, "a.ics", event(uid()))
    assert etag is not None
    await client.delete(href, if_match=etag)
    # RFC 7232: If-Match on a missing resource is a failed precondition; both say 412.
    with pytest.raises((EtagMismatch, NotFound)):
        await client.update(href, event(uid()), if_match=etag)


async def test_names_are_spelled_one_way(client: CalDAVClient, collection: str) -> None:
    name = "occ 1@kommune.example.ics"
    await client.create(collection, name, event(uid()))
    href = object_href(collection, name)
    assert href.endswith("/occ%201@kommune.example.ics")
    assert list(await client.list_etags(collection)) == [href]
    assert list(await client.fetch(collection, [href])) == [href]


# -- reading and deltas --------------------------------------------------------------------


async def test_probe_answers_a_token_and_a_ctag_that_move(
    client: CalDAVClient, collection: str, requests_seen: Requests
) -> None:
    requests_seen.clear()
    before = await client.probe(collection)
    assert [m for m, _, _ in requests_seen.sent] == ["PROPFIND"]
    assert before.sync_token and before.ctag
    assert before.display_name == "Fru Jensen - omsorg"  # in the same request
    await client.create(collection, "a.ics", event(uid()))
    after = await client.probe(collection)
    assert after.sync_token != before.sync_token and after.ctag != before.ctag


async def test_a_home_is_probed_in_one_request_as_each_collection_alone(
    server: Server, client: CalDAVClient, requests_seen: Requests
) -> None:
    """A poll of many views in one home asks once (depth 1): each collection's token and
    ctag are the ones its own probe answers; a missing home is NotFound."""
    home = server.home(f"home-{secrets.token_hex(3)}")
    paths = [
        await client.ensure_collection(home + f"view-{n}/", f"Fru {n} - omsorg") for n in range(3)
    ]
    try:
        await client.create(paths[1], "a.ics", event(uid()))
        requests_seen.clear()
        found = await client.probe_children(home)
        assert [m for m, _, _ in requests_seen.sent] == ["PROPFIND"]
        assert set(paths) <= set(found)  # Xandikos: one home, with its default calendar too
        for path in paths:
            assert found[path] == await client.probe(path)
            assert found[path].sync_token and found[path].ctag
        assert found[paths[0]].sync_token != found[paths[1]].sync_token
        with pytest.raises(NotFound):
            await client.probe_children(home + f"missing-{secrets.token_hex(3)}/")
    finally:
        for path in paths:
            await client.delete_collection(path)


async def test_changes_since_lists_exactly_what_changed(
    client: CalDAVClient, collection: str
) -> None:
    a, a_uid = object_href(collection, "a.ics"), uid()
    a_etag = await client.create(collection, "a.ics", event(a_uid))
    await client.create(collection, "b.ics", event(uid()))
    token = (await client.probe(collection)).sync_token
    assert token is not None

    nothing = await client.changes_since(collection, token)
    assert nothing.changed == () and nothing.deleted == ()

    assert a_etag is not None
    new_etag = await client.update(a, event(a_uid, "changed", 1), if_match=a_etag)
    delta = await client.changes_since(collection, token)
    assert delta.changed == ((a, new_etag),) and delta.deleted == ()
    assert delta.new_token != token

    assert new_etag is not None
    await client.delete(a, if_match=new_etag)
    after_delete = await client.changes_since(collection, delta.new_token)
    assert after_delete.changed == () and after_delete.deleted == (a,)


async def test_changes_since_without_a_token_lists_everything(
    client: CalDAVClient, collection: str
) -> None:
    await client.create(collection, "a.ics", event(uid()))
    await client.create(collection, "b.ics", event(uid()))
    delta = await client.changes_since(collection, None)
    assert dict(delta.changed) == await client.list_etags(collection)
    assert delta.deleted == () and delta.new_token


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "http://example.invalid/never-issued",
        "0" * 40,
        "http://radicale.org/ns/sync/" + "0" * 64,
    ],
)
async def test_an_invalid_token_raises_invalid_sync_token(
    server: Server, client: CalDAVClient, collection: str, token: str
) -> None:
    with pytest.raises(InvalidSyncToken) as raised:
        await client.changes_since(collection, token)
    # Radicale 403, Xandikos 412; both name the precondition.
    assert raised.value.preconditions == ("{DAV:}valid-sync-token",)
    assert raised.value.status == {"radicale": 403, "xandikos": 412}[server.kind]


async def test_list_etags_lists_objects_not_the_collection(
    client: CalDAVClient, collection: str
) -> None:
    etags = {
        object_href(collection, name): await client.create(collection, name, event(uid()))
        for name in ("a.ics", "b.ics", "c.ics")
    }
    assert await client.list_etags(collection) == etags


async def test_fetch_gets_many_objects_in_one_multiget(
    client: CalDAVClient, collection: str, requests_seen: Requests
) -> None:
    uids = {object_href(collection, f"{n}.ics"): uid() for n in range(5)}
    for href, the_uid in uids.items():
        await client.create(collection, href.rsplit("/", 1)[1], event(the_uid))
    listed = await client.list_etags(collection)
    gone = object_href(collection, "gone.ics")

    requests_seen.clear()
    fetched = await client.fetch(collection, [*uids, gone])

    assert [(m, p) for m, p, _ in requests_seen.sent] == [("REPORT", collection)]
    assert set(fetched) == set(uids)  # an href the server does not have is left out
    for href, (etag, body) in fetched.items():
        assert etag == listed[href]
        assert vevent(body)["UID"] == uids[href]


async def test_fetch_asks_again_in_halves_for_an_answer_too_large_to_read(
    server: Server, collection: str
) -> None:
    """A multiget whose answer runs past what the client reads is asked again in halves; an
    object too large alone is answered with its ETag and no body (a PROPFIND of it), never
    left out (it would read as gone) and never failing the fetch (every run of the view
    would fail with it)."""
    limit = 150_000
    requests_seen = Requests()
    session = new_session(2, hooks=requests_seen.hooks(), max_answer_bytes=limit)
    settings = dataclasses.replace(server.settings, max_answer_bytes=limit)
    async with CalDAVClient(settings, session=session) as client:
        hrefs = []
        for name, size in (("a", 40_000), ("b", 40_000), ("c", 40_000), ("d", 40_000),
                           ("big", 2 * limit)):  # fmt: skip
            await client.create(collection, f"{name}.ics", padded(uid(), size))
            hrefs.append(object_href(collection, f"{name}.ics"))
        listed = await client.list_etags(collection)

        requests_seen.clear()
        fetched = await client.fetch(collection, hrefs[:4])
        # [a b c d] too large; [a b] and [c d] answered
        assert [m for m, _, _ in requests_seen.sent] == ["REPORT"] * 3

        requests_seen.clear()
        with_big = await client.fetch(collection, [hrefs[0], hrefs[4]])
        # [a big] too large; [big] too large, its ETag asked for; [a] answered
        assert [m for m, _, _ in requests_seen.sent] == ["REPORT", "REPORT", "PROPFIND", "REPORT"]
    await session.close()

    assert sorted(fetched) == sorted(hrefs[:4])
    assert all(fetched[href][0] == listed[href] for href in fetched)
    assert with_big[hrefs[4]] == (listed[hrefs[4]], None)
    assert with_big[hrefs[0]] == fetched[hrefs[0]]


def padded(the_uid: str, size: int) -> bytes:
    """An event of about `size` bytes: a long description, folded as RFC 5545 says."""
    text = icalendar.Calendar.from_ical(event(the_uid))
    text.walk("VEVENT")[0].add("DESCRIPTION", "x" * size)
    return bytes(text.to_ical())


async def test_fetch_of_nothing_sends_nothing(
    client: CalDAVClient, collection: str, requests_seen: Requests
) -> None:
    requests_seen.clear()
    assert await client.fetch(collection, []) == {}
    assert requests_seen.sent == []


# -- failures and limits -------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (the kernel does, via the backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_a_dead_server_is_unavailable_at_once(server: Server, closed_port: int) -> None:
    settings = dataclasses.replace(server.settings, base_url=f"http://127.0.0.1:{closed_port}")
    async with CalDAVClient(settings) as dead:
        started = time.monotonic()
        with pytest.raises(CalendarUnavailable) as raised:
            await dead.probe(server.home(USER) + "view/")
        assert time.monotonic() - started < 2
    assert raised.value.__cause__ is not None  # translated, with the cause kept


async def test_a_server_that_never_answers_times_out(server: Server, silent_port: int) -> None:
    settings = dataclasses.replace(
        server.settings, base_url=f"http://127.0.0.1:{silent_port}", timeout_seconds=0.3
    )
    async with CalDAVClient(settings) as stuck:
        started = time.monotonic()
        with pytest.raises(CalendarUnavailable):
            await stuck.list_etags(server.home(USER) + "view/")
        assert time.monotonic() - started < 3


async def test_wrong_credentials_are_forbidden(radicale_url: str) -> None:
    # Radicale only: xandikos --defaults has no authentication.
    seen = Requests()
    session = new_session(2, hooks=seen.hooks())
    settings = CalDAVSettings(radicale_url, USER, PASSWORD + "-wrong", server="radicale")
    try:
        async with CalDAVClient(settings, session=session) as intruder:
            for _ in range(2):
                with pytest.raises(Forbidden) as raised:
                    await intruder.probe(f"/{USER}/")
                assert raised.value.status == 401
    finally:
        await session.close()
    # One request each, both on our session: caldav neither retried nor swapped the session.
    assert [(m, status) for m, _, status in seen.sent] == [("PROPFIND", 401)] * 2


@pytest.mark.parametrize("max_connections", [2, 12])
async def test_the_pool_bounds_requests_in_flight(
    server: Server, collection: str, max_connections: int
) -> None:
    seen = Requests()
    settings = dataclasses.replace(server.settings, max_connections=max_connections)
    session = new_session(settings.max_connections, hooks=seen.hooks())
    try:
        async with CalDAVClient(settings, session=session) as bounded:
            await asyncio.gather(*(bounded.probe(collection) for _ in range(12)))
    finally:
        await session.close()
    assert len(seen.sent) == 12
    assert seen.max_in_flight <= max_connections
    if max_connections > 2:
        assert seen.max_in_flight > 2  # the hooks do see concurrency when it is allowed


@pytest.fixture
def locked_server() -> Iterator[str]:
    """Answers every request 423 Locked, as Xandikos does to a write while another write to
    the same collection holds its repository's lock."""

    class Locked(http.server.BaseHTTPRequestHandler):
        def _locked(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(423, "Locked")
            self.send_header("content-length", "0")
            self.end_headers()

        do_PUT = do_PROPFIND = do_DELETE = _locked

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Locked)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_locked_collection_is_unavailable_for_now(locked_server: str) -> None:
    async with CalDAVClient(CalDAVSettings(locked_server)) as locked:
        with pytest.raises(CalendarUnavailable) as raised:
            await locked.update("/user/calendars/v/a.ics", b"BEGIN:VCALENDAR", '"1"')
    assert raised.value.status == 423
