"""Fixtures of the view-sync tests: carecal served with its worker, and a client for its API
and webhooks. (test_embedded.py serves carecal without a worker under the same names.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.caldav.support import Served, serve_with_worker


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with serve_with_worker(tmp_path, database_url) as found:
        yield found


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        yield client
