"""Helpers shared by the contract tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.crypto import TenantCipher
from adapters.store.sql import create_engine
from plugin.services.ports import Store

POSTGRES_ENV = "CARECAL_TEST_POSTGRES_URL"
POSTGRES_SKIP = (
    "PostgreSQL tests need CARECAL_TEST_POSTGRES_URL "
    "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
)
BACKENDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


def make_cipher() -> TenantCipher:
    """The real cipher, with a fresh key for each tenant the suite uses."""
    return TenantCipher({t: [Fernet.generate_key().decode()] for t in ("demo", "other")})


@dataclass
class PostgresSchema:
    url: str
    schema: str

    def engine(self, **options: Any) -> AsyncEngine:
        return create_engine(
            self.url, connect_args={"server_settings": {"search_path": self.schema}}, **options
        )


@dataclass
class Backend:
    """The store under test, and a way to open more stores on the same database (as other
    processes would)."""

    name: str
    store: Store
    open_another: Callable[[], Awaitable[Store]]
    _opened: list[Store] = field(default_factory=list)

    async def another(self) -> Store:
        store = await self.open_another()
        self._opened.append(store)
        return store

    async def close(self) -> None:
        for store in [*self._opened, self.store]:
            await store.close()
