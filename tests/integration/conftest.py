"""Fixtures for driving the whole ASGI app in-process on a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from adapters.store.sql import SqlStore
from plugin.config import Settings
from plugin.web.app import create_app, open_store
from tests.integration.support import FIXED_NOW, Clock, make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlStore]:
    opened = await open_store(settings, migrate=True)
    assert isinstance(opened, SqlStore)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(FIXED_NOW)


@pytest.fixture
async def client(
    settings: Settings, store: SqlStore, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, store=store, clock=clock)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
