"""Fixtures for driving the whole ASGI app in-process on a real store."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from adapters.store.sql import SqlStore
from plugin.config import Settings
from plugin.web.app import create_app, open_store
from tests.integration.support import FIXED_NOW, Clock, make_settings

POSTGRES_SKIP = (
    "PostgreSQL tests need CARECAL_TEST_POSTGRES_URL "
    "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
)


async def _admin(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every integration test runs on SQLite and on PostgreSQL, each in a fresh database
    that `open_store` migrates from nothing, as `carecal migrate` would."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'carecal.db'}"
        return
    base = os.environ.get("CARECAL_TEST_POSTGRES_URL")
    if not base:
        pytest.skip(POSTGRES_SKIP)
    name = f"carecal_it_{secrets.token_hex(5)}"
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database={"url": database_url})


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
