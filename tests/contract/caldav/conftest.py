"""Real CalDAV servers for the calendar port contract: every test runs on Radicale (in a thread,
htpasswd auth) and on Xandikos (a subprocess), both started once per session (`radicale_url`,
`xandikos_url`: tests/conftest.py); each test gets a fresh collection of its own, so tests
never see each other's objects."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from adapters.caldav.client import CalDAVClient, CalDAVSettings, new_session
from tests.contract.caldav.support import PASSWORD, USER, Requests, Server


@pytest.fixture(params=["radicale", "xandikos"])
def server(request: pytest.FixtureRequest) -> Server:
    if request.param == "radicale":
        url = request.getfixturevalue("radicale_url")
        return Server(
            "radicale", CalDAVSettings(url, USER, PASSWORD, server="radicale", timeout_seconds=5)
        )
    url = request.getfixturevalue("xandikos_url")
    return Server("xandikos", CalDAVSettings(url, server="xandikos", timeout_seconds=5))


@pytest.fixture
def requests_seen() -> Requests:
    return Requests()


@pytest.fixture
async def client(server: Server, requests_seen: Requests) -> AsyncIterator[CalDAVClient]:
    session = new_session(server.settings.max_connections, hooks=requests_seen.hooks())
    try:
        async with CalDAVClient(server.settings, session=session) as calendars:
            yield calendars
    finally:
        await session.close()


@pytest.fixture
async def collection(server: Server, client: CalDAVClient) -> AsyncIterator[str]:
    """A fresh, empty view collection; removed afterwards."""
    path = await client.ensure_collection(
        server.home(USER) + f"view-{secrets.token_hex(4)}/", "Fru Jensen - omsorg"
    )
    yield path
    await client.delete_collection(path)
