"""`carecal serve` as a user runs it: a real process on a free port, real HTTP, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.support import (
    NORTH_SECRET,
    NORTH_TOKEN,
    circle_event,
    sign_event,
    task_event,
)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "carecal.toml"
    config.write_text(
        f"""
# The fixtures' task crosses the DST change of 28 March 2027: expand that far ahead.
horizon_weeks = 30

[server]
host = "127.0.0.1"
port = {port}
public_url = "{base}"
graceful_shutdown_seconds = 5

[database]
url = "sqlite+aiosqlite:///{tmp_path}/data/carecal.db"

[calendar]
type = "embedded"
folder = "{tmp_path}/dav"

[worker]
poll_seconds = 0.2

[[tenants]]
id = "north"
webhook_secret = "{NORTH_SECRET}"
api_token = "{NORTH_TOKEN}"
""",
        encoding="utf-8",
    )
    log = tmp_path / "carecal.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "--config", str(config), "serve"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        try:
            yield base, process, log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def wait_healthy(base: str, process: subprocess.Popen[bytes], seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        assert process.poll() is None, "carecal serve exited during start-up"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/healthz did not answer within {seconds} s")


def test_serve_end_to_end_then_sigterm(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, log = served
    # A fresh SQLite database is migrated by serve itself, and it answers within seconds.
    wait_healthy(base, process, seconds=20)
    assert httpx.get(f"{base}/readyz").json()["database"] == "ok"

    with httpx.Client(base_url=base) as client:
        for event in (circle_event(), task_event()):
            body, headers = sign_event(event)
            response = client.post("/webhooks/north", content=body, headers=headers)
            assert response.status_code == 202, response.text
        task = client.get(
            "/api/v1/tasks/t-1", headers={"authorization": f"Bearer {NORTH_TOKEN}"}
        ).json()
    assert [o["start"][-6:] for o in task["occurrences"]] == [
        "+01:00",
        "+01:00",
        "+02:00",
        "+02:00",
    ]

    # The worker in the same process runs: it has extended the horizons once at start.
    metrics = httpx.get(f"{base}/metrics").text
    assert "carecal_horizon_refreshes_total 1.0" in metrics
    assert 'carecal_webhooks_applied_total{outcome="applied",type="task.upserted"} 1.0' in metrics

    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal: "terminated by SIGTERM".
    assert process.wait(15) in (0, -signal.SIGTERM)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    stopped = [line for line in lines if line["msg"] == "worker stopped"]
    assert len(stopped) == 1 and stopped[0]["released_jobs"] == 0
    # Logs carry ids and routes, never secrets, tokens or personal data.
    text = log.read_text()
    for secret in (NORTH_SECRET, NORTH_TOKEN, "Anna", "anna@example.org", "Netto"):
        assert secret not in text
    assert all("request_id" in line for line in lines if line["msg"] == "request")


def test_serve_refuses_a_chunked_50_mb_body_early(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, _ = served
    wait_healthy(base, process, seconds=20)
    sent = 0
    chunk = b"x" * 65536

    def fifty_megabytes() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(50 * 1024 * 1024 // len(chunk)):
            sent += len(chunk)
            yield chunk

    _, headers = sign_event(circle_event())
    try:
        response = httpx.post(
            f"{base}/webhooks/north", content=fifty_megabytes(), headers=headers, timeout=30
        )
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # the server answered 413 and closed the connection while we were still sending
    # The server stopped reading long before 50 MB; its memory stayed small.
    assert sent < 50 * 1024 * 1024
    rss_kib = int(Path(f"/proc/{process.pid}/status").read_text().split("VmRSS:")[1].split()[0])
    assert rss_kib < 400 * 1024
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_worker_alone_refuses_the_embedded_calendar_server(tmp_path: Path) -> None:
    """The embedded server's views can only be synced by the `carecal serve` process hosting
    it; a worker alone would lease their syncs and fail them. It says so and does not start."""
    config = tmp_path / "carecal.toml"
    config.write_text(
        f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path}/data/carecal.db"
""",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "plugin.cli", "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=60,
    )
    assert done.returncode == 2
    assert 'calendar.type is "embedded"' in done.stderr and "carecal serve" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_worker_alone_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "carecal.toml"
    config.write_text(
        f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path}/data/carecal.db"

[worker]
poll_seconds = 0.1

[calendar]  # the municipality's server (here none listens: its poll fails and is logged)
type = "caldav"
url = "http://127.0.0.1:9/dav/"
username = "carecal"
password = "not-used"

[[tenants]]
id = "north"
webhook_secret = "{NORTH_SECRET}"
api_token = "{NORTH_TOKEN}"
""",
        encoding="utf-8",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "worker", "--config", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        try:
            deadline = time.monotonic() + 20
            while "worker started" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    messages = [
        json.loads(line)["msg"] for line in log.read_text().splitlines() if line.startswith("{")
    ]
    assert messages.count("worker stopped") == 1
