"""`carecal serve` behind a municipality's reverse proxy: the pages' per-address limits count
the client the proxy names, when (and only when) the operator trusts that proxy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from plugin.cli import server_config
from plugin.config import Settings
from plugin.web.app import create_app
from tests.integration.caldav.support import free_port
from tests.integration.support import make_settings


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The app under uvicorn exactly as `carecal serve` configures it."""
    app = create_app(settings, auto_migrate=True)
    server = uvicorn.Server(server_config(settings, app))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.server.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def login_from(http: httpx.Client, client_address: str) -> int:
    answer = http.post(
        "/staff/login",
        data={"tenant": "north", "password": "wrong"},
        headers={"X-Forwarded-For": client_address, "Sec-Fetch-Site": "same-origin"},
    )
    return answer.status_code


@pytest.mark.parametrize("trusted", [["127.0.0.1"], []])
def test_logins_are_limited_per_client_behind_a_trusted_proxy(
    tmp_path: Path, trusted: list[str]
) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        server={"public_url": f"http://127.0.0.1:{port}", "port": port, "trusted_proxies": trusted},
    )
    with served(settings) as base, httpx.Client(base_url=base) as http:
        statuses = [login_from(http, "203.0.113.1") for _ in range(11)]
        assert statuses[-1] == 429 and 429 not in statuses[:10]
        other = login_from(http, "203.0.113.2")
        # Trusted, the proxy names another client, whose share is whole; untrusted, its
        # header is not believed: the same address (the proxy's) was used up.
        assert (other != 429) if trusted else (other == 429)


def test_a_trusted_proxy_is_an_address_or_a_network(tmp_path: Path) -> None:
    ok = make_settings(tmp_path, server={"trusted_proxies": ["10.0.0.0/8", "192.0.2.7", "::1"]})
    assert ok.server.trusted_proxies == ["10.0.0.0/8", "192.0.2.7", "::1"]
    with pytest.raises(Exception, match="trusted_proxies"):
        make_settings(tmp_path, server={"trusted_proxies": ["proxy.example"]})
