"""Outgoing events to the host: one signed POST per event (`ports.EventSender` over httpx).

    async with open_event_sender(settings.outbox) as sender:
        await sender.send(url, secret, "msg_…", body, timestamp=1700000000)
        # returns on 2xx; raises HostUnreachable (no answer) or HostRejected (status)

The body goes out exactly as given, with the three Standard Webhooks headers
(`adapters.host.signing`) and `content-type: application/json`. Redirects are not followed
(a 3xx is a failure to retry, and never carries the body elsewhere), and at most
`MAX_ANSWER_BYTES` of an answer are read, only so that the connection can be reused.

httpx errors stop here: they become `HostUnreachable` whose reason is the exception's class
name (`ConnectError`, `ReadTimeout`…). Neither the URL nor the body nor the secret appears in
a reason, because reasons are logged and stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from adapters.host.signing import signed_headers
from plugin.config import OutboxSettings
from plugin.domain.retries import delivered
from plugin.services.ports import HostRejected, HostUnreachable

MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "carecal"


class HttpEventSender:
    """Takes its `httpx.AsyncClient` from outside (tests hand one a `MockTransport`)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(
        self, url: str, secret: str, event_id: str, body: bytes, *, timestamp: int
    ) -> None:
        headers = signed_headers(secret, event_id, body, timestamp=timestamp)
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as answer:
                status = answer.status_code
                read = 0
                async for chunk in answer.aiter_bytes():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
        except httpx.HTTPError as exc:
            # Transport errors (refused, reset, timeout) and protocol errors alike: no answer.
            raise HostUnreachable(type(exc).__name__) from exc
        if not delivered(status):
            raise HostRejected(status)


def make_client(settings: OutboxSettings, *, hosts: int = 1) -> httpx.AsyncClient:
    """A client whose pool holds `concurrency` connections for each of `hosts` (the tenants:
    delivery sends at most `concurrency` requests per tenant at once, and one tenant's host
    that never answers must not hold the connections another's requests wait for), each
    request bounded by `timeout_seconds` (connect, write, read and waiting for a pooled
    connection)."""
    connections = settings.concurrency * max(1, hosts)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_seconds),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
    )


@contextlib.asynccontextmanager
async def open_event_sender(
    settings: OutboxSettings, *, hosts: int = 1
) -> AsyncIterator[HttpEventSender]:
    async with make_client(settings, hosts=hosts) as client:
        yield HttpEventSender(client)
