"""The test servers later integration tests and benches build on: they answer on loopback, do
what their arguments say, and are gone when the block exits."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from adapters.caldav.testing import radicale_server, xandikos_server

PROPFIND = '<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>'


def propfind(url: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.request(
        "PROPFIND",
        url,
        content=PROPFIND,
        auth=auth,
        timeout=5,
        headers={"Depth": "0", "Content-Type": "application/xml"},
    )


def is_closed(base_url: str) -> bool:
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1" and parts.port
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return True
    return False


def test_radicale_lets_in_exactly_its_users(tmp_path: Path) -> None:
    with radicale_server(tmp_path, users={"carecal": "pw"}) as base_url:
        assert propfind(f"{base_url}/carecal/", ("carecal", "pw")).status_code == 207
        assert propfind(f"{base_url}/carecal/", ("carecal", "nope")).status_code == 401
        assert propfind(f"{base_url}/carecal/").status_code == 401
    assert is_closed(base_url)


def test_radicale_without_users_lets_anyone_in(tmp_path: Path) -> None:
    with radicale_server(tmp_path) as base_url:
        assert propfind(f"{base_url}/").status_code == 207
    assert is_closed(base_url)
    assert (tmp_path / "collections").is_dir()


def test_xandikos_serves_the_default_calendar_and_stops(tmp_path: Path) -> None:
    with xandikos_server(tmp_path) as base_url:
        assert propfind(f"{base_url}/user/calendars/calendar/").status_code == 207
    assert is_closed(base_url)


def test_a_failing_block_still_stops_the_servers(tmp_path: Path) -> None:
    urls: list[str] = []
    with pytest.raises(RuntimeError), radicale_server(tmp_path / "r") as radicale:
        urls.append(radicale)
        with xandikos_server(tmp_path / "x") as xandikos:
            urls.append(xandikos)
            raise RuntimeError("test body failed")
    assert len(urls) == 2 and all(is_closed(url) for url in urls)
