"""Start a target server as a subprocess, wait until it answers, measure it, stop it.

Both targets run as their own process so the load generator (this process) and the server
compete for the machine's cores the same way for both.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerFailed(Exception):
    """The target did not start, or died; the message carries the tail of its log."""


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    pid: int
    host: str
    port: int
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and every process it started."""
        return tree_cpu_seconds(self.pid)

    def loaded(self, *names: str) -> dict[str, bool]:
        """Which of the named libraries are mapped into the server process."""
        try:
            maps = Path(f"/proc/{self.pid}/maps").read_text()
        except OSError:
            return {}
        return {name: f"/{name}/" in maps for name in names}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One plain request outside the timed phase (readiness checks, seeding)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and its descendants, from /proc (Linux only)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid ... utime(14) stime(15).
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    total = 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor > 1 and ancestor != root:
            ancestor = parents.get(ancestor, 0)
        if ancestor == root:
            total += seconds
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idling, from /proc/stat (Linux only)."""
    with open("/proc/stat") as stat:
        # cpu  user nice system idle iowait irq softirq steal ...
        ticks = [int(field) for field in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(
    process: subprocess.Popen[bytes],
    host: str,
    port: int,
    health_path: str | None,
    log_path: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(
                f"exited with {process.returncode} before it was ready; log:\n{_log_tail(log_path)}"
            )
        try:
            if health_path is None:
                with socket.create_connection((host, port), timeout=1.0):
                    return
            elif request(host, port, "GET", health_path, timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise ServerFailed(f"not ready after {timeout:.0f} s; log:\n{_log_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@contextmanager
def serve(
    name: str,
    argv: list[str],
    *,
    host: str,
    port: int,
    cwd: Path,
    log_path: Path,
    health_path: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[Server]:
    """Run `argv` until the block ends, with this environment plus `env`. Inherited
    `CARECAL_*` variables are dropped, so that the generated configuration is the whole one."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CARECAL_")}
    environ.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(process, host, port, health_path, log_path, timeout)
            yield Server(name=name, pid=process.pid, host=host, port=port, log_path=log_path)
            if process.poll() is not None:
                raise ServerFailed(f"died during the run; log:\n{_log_tail(log_path)}")
        finally:
            _stop(process)
