"""Real CalDAV servers on loopback, for tests and benches.

    with radicale_server(tmp / "radicale", users={"carecal": "secret"}) as base_url:
        ...  # base_url == "http://127.0.0.1:41234"
    with xandikos_server(tmp / "xandikos") as base_url:
        ...  # calendars live under f"{base_url}/user/calendars/"

Radicale runs in a thread of this process, Xandikos as a subprocess; both listen on 127.0.0.1
only and are stopped when the block exits. Radicale binds port 0 itself (its own `serve()`
cannot say which port it got, so we drive its WSGI `Application` and `RequestHandler` from a
threading WSGI server, the same pieces `radicale.server.serve` uses); Xandikos is given a port
that was free a moment ago and is restarted on another one if it loses that race.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import socketserver
import subprocess
import sys
import threading
import time
import wsgiref.simple_server
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import radicale.config
import radicale.server
from radicale.app import Application as RadicaleApplication

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0


class _RadicaleHTTPServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of concurrent connections past it waits
    # for a SYN retransmit (1 s); benches open many.
    request_queue_size = 128
    # Wait for in-flight requests on shutdown so the storage folder is quiet when it goes away.
    block_on_close = True


@contextlib.contextmanager
def radicale_server(
    folder: Path,
    users: Mapping[str, str] | None = None,
    config: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[str]:
    """Serve Radicale from `folder`; yields its base URL.

    `users` (name -> password) turns on htpasswd auth with exactly those users; without it
    anyone is let in (`auth.type = none`; Radicale's own default, `denyall`, refuses everyone).
    `config` overrides other sections, e.g. `{"rights": {"type": "authenticated"}}`.
    `auth.delay` is 0 here: Radicale otherwise sleeps about a second on every 401 and 403,
    and it answers an invalid sync token with a 403.
    """
    folder.mkdir(parents=True, exist_ok=True)
    auth: dict[str, str] = {"type": "none"}
    if users:
        htpasswd = folder / "htpasswd"
        htpasswd.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
        auth = {
            "type": "htpasswd",
            "htpasswd_filename": str(htpasswd),
            "htpasswd_encryption": "plain",
        }
    configuration = radicale.config.load()
    configuration.update(
        {
            "storage": {"filesystem_folder": str(folder / "collections")},
            # Radicale sleeps auth.delay (1 s) on every 401/403, an invalid sync token included.
            "auth": {**auth, "delay": "0"},
        },
        "carecal-testing",
    )
    for section, values in (config or {}).items():
        configuration.update({section: dict(values)}, "carecal-testing")
    # What `radicale.server.serve` sets for its own built-in server.
    configuration.update(
        {"server": {"_internal_server": "True"}}, "carecal-testing", privileged=True
    )
    server = _RadicaleHTTPServer((LOOPBACK, 0), radicale.server.RequestHandler)
    server.set_app(RadicaleApplication(configuration))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="radicale", daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        # The socket listens before serve_forever runs, but make sure the app answers.
        _wait_until_answering(port, thread.is_alive)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def xandikos_server(folder: Path, port: int | None = None) -> Iterator[str]:
    """Serve Xandikos (`--defaults`: one user, calendars under /user/calendars/) from `folder`
    as a subprocess; yields its base URL. `port`: listen there (one attempt), e.g. to bring a
    server back where its clients expect it."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "xandikos.log"
    for _attempt in range(3 if port is None else 1):
        port = port or _free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "xandikos",
                    "--defaults",
                    "-d",
                    str(folder / "data"),
                    "-l",
                    LOOPBACK,
                    "-p",
                    str(port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            try:
                _wait_until_answering(port, functools.partial(_running, process))
            except _ServerDied:
                continue  # most likely lost the port to someone else; try another
            yield f"http://{LOOPBACK}:{port}"
            return
        finally:
            _stop(process)
    raise RuntimeError(f"xandikos did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")


class _ServerDied(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_answering(port: int, alive: Callable[[], bool]) -> None:
    """Poll with a bare HTTP request until the server answers anything at all."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    request = f"OPTIONS / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if not alive():
            raise _ServerDied(f"server on port {port} exited during startup")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as conn:
                conn.sendall(request.encode())
                if conn.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer within {STARTUP_TIMEOUT} s")


def _running(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


__all__ = ["radicale_server", "xandikos_server"]
