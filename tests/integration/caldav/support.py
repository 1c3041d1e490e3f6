"""carecal served for real (uvicorn in a thread on a free loopback port: the embedded WSGI
CalDAV server needs a real server), and a member's calendar app against it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import uvicorn

from adapters.caldav.client import CalDAVClient, CalDAVSettings
from plugin.config import Settings
from plugin.web.app import Clock, create_app, utc_now
from tests.integration.support import auth, make_settings, task_event

T = TypeVar("T")
CPH = ZoneInfo("Europe/Copenhagen")
WITHIN = 2.0  # seconds: DESIGN's "within one sync cycle" on one machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Served:
    base: str
    settings: Settings


@contextmanager
def serve_in_thread(
    settings: Settings, *, run_worker: bool = False, clock: Clock = utc_now
) -> Iterator[None]:
    """Run carecal on `settings.server.port` until the block ends."""
    app = create_app(settings, auto_migrate=True, run_worker=run_worker, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.server.port,
            lifespan="on",
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, name="carecal-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=20)


async def issue(http: httpx.AsyncClient, member_id: str) -> dict[str, str]:
    response = await http.post(f"/api/v1/members/{member_id}/calendar-credentials", headers=auth())
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    found: dict[str, str] = response.json()
    return found


def calendar_app(served: Served, credentials: dict[str, str]) -> CalDAVClient:
    return CalDAVClient(
        CalDAVSettings(
            served.base,
            credentials["username"],
            credentials["password"],
            server="radicale",
            timeout_seconds=10,
        )
    )


@contextmanager
def serve_with_worker(
    tmp_path: Path, database_url: str, *, clock: Clock = utc_now
) -> Iterator[Served]:
    """carecal with its worker polling every 50 ms, as the view-sync tests need it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        server={"public_url": base, "port": port},
        worker={"poll_seconds": 0.05},
    )
    with serve_in_thread(settings, run_worker=True, clock=clock):
        yield Served(base, settings)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], within: float = WITHIN, *, every: float = 0.05
) -> T:
    """Poll `probe` every `every` s until it answers something other than None, for at most
    `within` s. (The probes run in the served process: costly ones should poll less often.)"""
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(every)


def one_off(start: datetime, version: int = 1, **data: Any) -> dict[str, Any]:
    """A one-hour task for one person at `start` (Copenhagen wall-clock time)."""
    return task_event(
        version,
        **{
            "start": f"{start:%Y-%m-%dT%H:%M:%S}",
            "end": f"{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}",
            "people_needed": 1,
            "recurrence": None,
            **data,
        },
    )
