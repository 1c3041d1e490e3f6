"""The pieces of `bench.sync` that decide its figures: the proxy's request and byte counts, and
the floor's reading of CalDAV answers. No timing is asserted (a benchmark is not a test)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.dav_floor import (
    ChangeWriter,
    parse_multiget,
    parse_sync_collection,
    parse_sync_token,
    parse_sync_tokens,
)
from bench.dav_proxy import SLOTS, Counts, RequestFramer, serve


def test_requests_are_framed_however_the_stream_is_cut() -> None:
    body = b"GET /not-a-request HTTP/1.1\r\n\r\n"  # a body that looks like a request
    stream = (
        b"PUT /c/a.ics HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        + b"REPORT /c/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n\r\n"
        + b"PROPFIND /c/ HTTP/1.1\r\nDepth: 0\r\ncontent-length: 0\r\n\r\n"
    )
    for size in (1, 7, len(stream)):
        framer = RequestFramer()
        methods = []
        for start in range(0, len(stream), size):
            methods += framer.feed(stream[start : start + size])
        assert methods == ["PUT", "REPORT", "PROPFIND"], size


async def test_the_proxy_counts_requests_and_bytes_both_ways() -> None:
    answer = b"<multistatus/>"
    response = b"HTTP/1.1 207 Multi-Status\r\nContent-Length: %d\r\n\r\n%s" % (
        len(answer),
        answer,
    )
    seen = bytearray()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer_requests(reader, writer)
        except asyncio.IncompleteReadError:
            pass  # the proxy closed the connection
        finally:
            writer.close()
            await writer.wait_closed()

    async def answer_requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            seen.extend(head)
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")), 0,
            )  # fmt: skip
            seen.extend(await reader.readexactly(length))
            writer.write(response)
            await writer.drain()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    slots = [0] * SLOTS
    proxy = await serve("127.0.0.1", server.sockets[0].getsockname()[1], slots)
    port = proxy.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            first = await client.request("PROPFIND", "/c/", content=b"<propfind/>")
            second = await client.put("/c/a.ics", content=b"BEGIN:VCALENDAR\r\n")
        assert first.status_code == second.status_code == 207
        counts = Counts.from_slots(slots)
        assert counts.by_method == {"PROPFIND": 1, "PUT": 1}
        assert counts.requests == 2
        assert counts.connections == 1  # keep-alive: one connection for both
        assert counts.sent == len(seen)
        assert counts.received == 2 * len(response)
        assert (counts - Counts({"PROPFIND": 1}, 10, 5)).by_method == {"PUT": 1}
    finally:
        proxy.close()
        await proxy.wait_closed()
        server.close()
        await server.wait_closed()


XANDIKOS_DELTA = b"""<?xml version='1.0' encoding='utf-8'?>
<ns0:multistatus xmlns:ns0="DAV:">
  <ns0:response><ns0:href>/user/calendars/v/</ns0:href><ns0:propstat><ns0:prop>
    <ns0:getetag>"c0"</ns0:getetag></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status>
  </ns0:propstat></ns0:response>
  <ns0:response><ns0:href>/user/calendars/v/o%401.ics</ns0:href><ns0:propstat><ns0:prop>
    <ns0:getetag>"e1"</ns0:getetag></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status>
  </ns0:propstat></ns0:response>
  <ns0:response><ns0:href>/user/calendars/v/gone.ics</ns0:href>
    <ns0:status>HTTP/1.1 404 Not Found</ns0:status></ns0:response>
  <ns0:sync-token>http://xandikos/sync/abc</ns0:sync-token>
</ns0:multistatus>"""

MULTIGET = b"""<?xml version='1.0' encoding='utf-8'?>
<ns0:multistatus xmlns:ns0="DAV:" xmlns:ns1="urn:ietf:params:xml:ns:caldav">
  <ns0:response><ns0:href>/user/calendars/v/o@1.ics</ns0:href><ns0:propstat><ns0:prop>
    <ns0:getetag>"e1"</ns0:getetag><ns1:calendar-data>BEGIN:VCALENDAR&#13;
STATUS:TENTATIVE&#13;
END:VCALENDAR&#13;
</ns1:calendar-data></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat>
  </ns0:response>
</ns0:multistatus>"""


def test_the_floor_reads_a_delta_and_a_multiget() -> None:
    delta = parse_sync_collection(XANDIKOS_DELTA, "/user/calendars/v/")
    assert delta.token == "http://xandikos/sync/abc"
    assert delta.changed == {"/user/calendars/v/o@1.ics": '"e1"'}
    assert delta.deleted == ("/user/calendars/v/gone.ics",)

    [(href, (etag, body))] = parse_multiget(MULTIGET).items()
    assert (href, etag) == ("/user/calendars/v/o@1.ics", '"e1"')
    written = ChangeWriter(b"STATUS:TENTATIVE", b"STATUS:CONFIRMED")(body)
    assert written == b"BEGIN:VCALENDAR\r\nSTATUS:CONFIRMED\r\nEND:VCALENDAR\r\n"
    assert len(written) == len(body)


def test_the_floor_reads_a_sync_token() -> None:
    answer = (
        b'<multistatus xmlns="DAV:"><response><href>/c/</href><propstat><prop>'
        b"<sync-token> t-1 </sync-token></prop></propstat></response></multistatus>"
    )
    assert parse_sync_token(answer) == "t-1"


def test_the_floor_reads_a_homes_sync_tokens() -> None:
    answer = (
        b'<multistatus xmlns="DAV:">'
        b"<response><href>/user/calendars/</href><propstat><prop/></propstat></response>"
        b"<response><href>/user/calendars/a%7Eb</href><propstat><prop>"
        b"<sync-token>t-1</sync-token></prop></propstat></response>"
        b"<response><href>http://x/user/calendars/c/</href><propstat><prop>"
        b"<sync-token>t-2</sync-token></prop></propstat></response></multistatus>"
    )
    assert parse_sync_tokens(answer) == {"/user/calendars/a~b/": "t-1", "/user/calendars/c/": "t-2"}


def test_the_client_overhead_bench_times_every_step_of_both_clients(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A short run of `bench.client_overhead` (real Xandikos): every step is timed for both
    clients (so each request succeeded, or the run raised), and the report names them."""
    from bench.client_overhead import main

    assert main(["--events", "3", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    for step in ("probe", "delta", "multiget", "put", "the four"):
        assert f"  {step}" in out
