"""carecal served for real (uvicorn in a thread on a free loopback port: the embedded WSGI
CalDAV server needs a real server), and a member's calendar app against it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from adapters.caldav.client import CalDAVClient, CalDAVSettings
from plugin.config import Settings
from plugin.web.app import create_app
from tests.integration.support import auth


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Served:
    base: str
    settings: Settings


@contextmanager
def serve_in_thread(settings: Settings, *, run_worker: bool = False) -> Iterator[None]:
    """Run carecal on `settings.server.port` until the block ends."""
    app = create_app(settings, auto_migrate=True, run_worker=run_worker)
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
