"""The outgoing event sender on httpx, against plain handler functions (httpx.MockTransport)."""

from __future__ import annotations

import base64
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from adapters.host.events import MAX_ANSWER_BYTES, HttpEventSender, make_client
from plugin.config import OutboxSettings
from plugin.services.ports import HostRejected, HostUnreachable

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the reference implementation's import warnings
    from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"host-events-key-0123456789abcdef").decode()
URL = "https://host.example/events?token=s3cr3t-query-token"
BODY = b'{"type":"task.claimed","tenant":"north","data":{"task_id":"t-1"}}'
TS = 1_790_000_000


def sender(handler: httpx.MockTransport) -> HttpEventSender:
    return HttpEventSender(httpx.AsyncClient(transport=handler))


async def test_sends_the_body_signed_with_the_event_id() -> None:
    seen: list[httpx.Request] = []

    def host(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    await sender(httpx.MockTransport(host)).send(URL, SECRET, "msg_1", BODY, timestamp=TS)
    [request] = seen
    assert request.method == "POST" and str(request.url) == URL
    assert request.content == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["webhook-timestamp"] == str(TS)
    # The reference implementation agrees with the signature (its clock check aside).
    wh = Webhook(SECRET)
    expected = wh.sign("msg_1", datetime.fromtimestamp(TS, UTC), BODY.decode())
    assert request.headers["webhook-signature"] == expected


@pytest.mark.parametrize("status", [301, 400, 404, 410, 429, 500, 503])
async def test_anything_but_2xx_is_rejected_with_its_status(status: int) -> None:
    def host(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"location": "https://elsewhere.example/"})

    with pytest.raises(HostRejected) as caught:
        await sender(httpx.MockTransport(host)).send(URL, SECRET, "msg_1", BODY, timestamp=TS)
    assert caught.value.status == status and caught.value.reason == f"HTTP {status}"


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
)
async def test_no_answer_is_unreachable_and_the_reason_names_no_url(error: Exception) -> None:
    def host(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(HostUnreachable) as caught:
        await sender(httpx.MockTransport(host)).send(URL, SECRET, "msg_1", BODY, timestamp=TS)
    assert caught.value.reason == type(error).__name__
    assert "token" not in str(caught.value) and "host.example" not in str(caught.value)


async def test_a_huge_answer_is_not_read_whole() -> None:
    served = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal served
        for _ in range(1000):
            served += 65536
            yield b"x" * 65536

    def host(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    await sender(httpx.MockTransport(host)).send(URL, SECRET, "msg_1", BODY, timestamp=TS)
    assert served <= MAX_ANSWER_BYTES + 2 * 65536


def test_the_client_pool_and_timeout_come_from_the_settings() -> None:
    client = make_client(OutboxSettings(concurrency=3, timeout_seconds=2.5))
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections == 3
    assert client.timeout.connect == 2.5 and client.timeout.read == 2.5
    assert client.follow_redirects is False
