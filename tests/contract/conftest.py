"""Fixtures for the store contract: the same tests run on MemoryStore, SQLite and PostgreSQL.

PostgreSQL runs when CARECAL_TEST_POSTGRES_URL is set. Each test session works in a schema of its
own (random name, reached through `search_path`), dropped at the end, so repeated and parallel
runs never see each other's rows; tables are emptied before each test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.memory import MemoryStore
from adapters.store.migrate import upgrade
from adapters.store.sql import SqlStore, create_engine
from adapters.store.tables import metadata
from plugin.services.ports import Store
from tests.contract.support import (
    BACKENDS,
    POSTGRES_ENV,
    POSTGRES_SKIP,
    Backend,
    PostgresSchema,
    make_cipher,
)


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[PostgresSchema]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(POSTGRES_SKIP)
    found = PostgresSchema(url, f"carecal_test_{secrets.token_hex(6)}")

    async def create() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'CREATE SCHEMA "{found.schema}"'))
        finally:
            await engine.dispose()
        engine = found.engine()
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    async def drop() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{found.schema}" CASCADE'))
        finally:
            await engine.dispose()

    asyncio.run(create())
    try:
        yield found
    finally:
        asyncio.run(drop())


async def _sqlite_backend(path: Path) -> Backend:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url)

    async def open_another() -> Store:
        return await SqlStore.open(url, cipher=make_cipher())

    return Backend("sqlite", await open_another(), open_another)


async def _postgres_backend(pg: PostgresSchema) -> Backend:
    engine = pg.engine()
    async with engine.begin() as connection:
        names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
        await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    async def open_another() -> Store:
        return SqlStore(pg.engine(), cipher=make_cipher())

    return Backend("postgres", SqlStore(engine, cipher=make_cipher()), open_another)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, PostgresSchema | None]:
    # Resolved in a sync fixture: the session schema is made with asyncio.run, which cannot
    # run inside the test's event loop.
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("postgres_schema")
    return request.param, None


@pytest.fixture
async def backend(
    backend_kind: tuple[str, PostgresSchema | None], tmp_path: Path
) -> AsyncIterator[Backend]:
    name, pg = backend_kind
    if name == "memory":
        memory = MemoryStore()

        async def same() -> Store:
            return memory

        found = Backend("memory", memory, same)
    elif name == "sqlite":
        found = await _sqlite_backend(tmp_path / "carecal.db")
    else:
        assert pg is not None
        found = await _postgres_backend(pg)
    try:
        yield found
    finally:
        await found.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store
