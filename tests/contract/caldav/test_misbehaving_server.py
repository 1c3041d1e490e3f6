"""What a member's own CalDAV server can do to carecal's client, shown against a small server of
its own that misbehaves on purpose (a real Radicale or Xandikos never does these): it is
answered with a port error, in bounded time, and sends carecal nowhere else."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from adapters.caldav.accounts import ACCOUNT_MAX_ANSWER_BYTES, open_account
from adapters.caldav.client import MAX_MARKER, MAX_SYNC_PAGES, CalDAVClient, CalDAVSettings
from adapters.caldav.port import CalendarError, CalendarUnavailable, InvalidSyncToken
from plugin.logs import configure
from plugin.services.calendars import Account

HOME = "/cal/anna/"
VIEW = HOME + "carecal-c-1/"
Answer = Callable[[str, str, asyncio.StreamWriter], Awaitable[None]]


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[str, Seen]]:
    """An HTTP/1.1 server on a free loopback port answering each request with `answer`."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                length = 0
                for line in head.decode().split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                seen.requests.append((method, path))
                await answer(method, path, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        listening.close()


def reply(writer: asyncio.StreamWriter, status: str, body: bytes, **headers: str) -> None:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n" + body)


def multistatus(*responses: str, sync_token: str | None = None) -> bytes:
    token = f"<D:sync-token>{sync_token}</D:sync-token>" if sync_token is not None else ""
    return (
        '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" '
        'xmlns:CS="http://calendarserver.org/ns/">' + "".join(responses) + token
        + "</D:multistatus>"
    ).encode()  # fmt: skip


def probe_answer(path: str, sync_token: str) -> str:
    return (
        f"<D:response><D:href>{path}</D:href><D:propstat><D:prop>"
        f"<D:sync-token>{sync_token}</D:sync-token><CS:getctag>c1</CS:getctag>"
        "<D:displayname>Fru Jensen</D:displayname></D:prop>"
        "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    )


async def test_a_redirect_is_an_error_never_followed() -> None:
    """A member's server (its name public, as checked) redirecting carecal to an address of
    the municipality's own network must not get it there: no redirect is followed."""

    async def internal(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        reply(writer, "207 Multi-Status", multistatus(probe_answer(path, "tok")))

    async with server(internal) as (inside, inner):
        for status in ("301 Moved Permanently", "302 Found", "307 Temporary Redirect",
                       "308 Permanent Redirect"):  # fmt: skip

            async def redirecting(
                method: str, path: str, writer: asyncio.StreamWriter, status: str = status
            ) -> None:
                reply(writer, status, b"", Location=f"{inside}{path}")

            async with (
                server(redirecting) as (outside, outer),
                open_account(Account(outside + HOME, "anna", "app-pw")) as client,
            ):
                with pytest.raises(CalendarError) as caught:
                    await client.probe(VIEW)
                assert not isinstance(caught.value, CalendarUnavailable)
                assert caught.value.status == int(status.split()[0])
                with pytest.raises(CalendarError):
                    await client.create(VIEW, "x.ics", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
                assert [m for m, _ in outer.requests] == ["PROPFIND", "PUT"]
        assert inner.requests == []


async def test_an_answer_that_trickles_ends_at_the_deadline() -> None:
    """A byte every half second never trips the transport's timeout (between two reads)."""

    async def trickling(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.5)

    async with server(trickling) as (url, _):
        settings = CalDAVSettings(url, "anna", "pw", timeout_seconds=5, deadline_seconds=1.5)
        async with CalDAVClient(settings) as client:
            started = time.monotonic()
            with pytest.raises(CalendarUnavailable):
                await client.probe(VIEW)
            assert time.monotonic() - started < 4


async def test_an_answer_without_end_is_read_no_further_than_the_limit() -> None:
    """A member's server sending a gigabyte is cut off at what carecal reads of one answer
    (`ACCOUNT_MAX_ANSWER_BYTES`): caldav would hold it whole, and its XML tree ten times
    that, in the memory every tenant's syncs share."""
    sent = 0

    async def endless(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 1000000000\r\n\r\n")
        chunk = b"<D:x/>" * 10_000
        while sent < 1_000_000_000:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    async with server(endless) as (url, _):
        async with open_account(Account(url + HOME, "anna", "app-pw")) as client:
            with pytest.raises(CalendarUnavailable, match="answer over"):
                await client.probe(VIEW)
    assert ACCOUNT_MAX_ANSWER_BYTES <= sent < 2 * ACCOUNT_MAX_ANSWER_BYTES + 8 * 2**20


async def test_a_compressed_answer_is_limited_by_what_it_unpacks_to() -> None:
    """64 KiB of gzip that unpack to 64 MiB: what is counted is what would be held."""
    bomb = gzip.compress(b" " * 64 * 2**20)

    async def packed(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        reply(writer, "207 Multi-Status", bomb, Content_Encoding="gzip")

    async with server(packed) as (url, _):
        settings = CalDAVSettings(url, "anna", "pw", max_answer_bytes=2**20)
        async with CalDAVClient(settings) as client:
            with pytest.raises(CalendarUnavailable, match="answer over"):
                await client.probe(VIEW)
    assert len(bomb) < 2**20


async def test_a_small_length_beside_a_chunked_body_is_not_believed() -> None:
    """A length the transport ignores (the body is chunked, and carries 3 MB) does not let
    the answer past the limit."""

    async def lying(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 100\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(30):
            chunk = b"<D:x/>" * 16_666
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        writer.write(b"0\r\n\r\n")

    async with server(lying) as (url, _):
        settings = CalDAVSettings(url, "anna", "pw", max_answer_bytes=100_000)
        async with CalDAVClient(settings) as client:
            with pytest.raises(CalendarUnavailable, match="answer over"):
                await client.probe(VIEW)


async def test_a_delta_that_never_ends_is_no_delta() -> None:
    """A sync-collection REPORT that is always "truncated" would have been taken, after the
    last page, as the whole change; the caller now lists every ETag instead."""
    pages = 0

    async def truncated(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        nonlocal pages
        pages += 1
        cut = f"<D:response><D:href>{path}</D:href><D:status>HTTP/1.1 507 x</D:status></D:response>"
        reply(writer, "207 Multi-Status", multistatus(cut, sync_token=f"tok-{pages}"))

    async with server(truncated) as (url, _):
        async with CalDAVClient(CalDAVSettings(url, "anna", "pw")) as client:
            with pytest.raises(InvalidSyncToken):
                await client.changes_since(VIEW, "tok-0")
    assert pages == MAX_SYNC_PAGES


async def test_markers_too_long_to_keep_are_not_taken() -> None:
    """A sync token of megabytes would be kept in every job's payload and the view's state."""
    long = "t" * (MAX_MARKER + 1)

    async def huge_token(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        reply(writer, "207 Multi-Status", multistatus(probe_answer(path, long)))

    async with server(huge_token) as (url, _):
        async with CalDAVClient(CalDAVSettings(url, "anna", "pw")) as client:
            probe = await client.probe(VIEW)
    assert probe.sync_token is None and probe.ctag == "c1"


async def test_an_answer_that_is_not_xml_is_not_written_to_the_log(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """caldav logs a body it cannot parse, whole, at INFO on the root logger: what a member's
    server sends (or a page of an internal one) is kept out of carecal's log."""

    async def html(method: str, path: str, writer: asyncio.StreamWriter) -> None:
        reply(writer, "207 Multi-Status", b"<html>internal console, token=abc123</html" + b"x" * 99)

    configure("INFO", "json")
    try:
        async with server(html) as (url, _):
            async with CalDAVClient(CalDAVSettings(url, "anna", "pw")) as client:
                with pytest.raises(CalendarError):
                    await client.probe(VIEW)
        logging.getLogger("carecal.test").info("still logging")
    finally:
        logging.getLogger().handlers[:] = []
    err = capfd.readouterr().err
    assert "still logging" in err and "token=abc123" not in err
