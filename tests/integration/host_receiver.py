"""A real HTTP receiver playing the host: a threaded http.server on a loopback port that checks
every request's Standard Webhooks signature with the tenant's secret and keeps what it saw.

    with HostReceiver(secret) as host:        # listening on host.url
        ...
        host.stop()                           # the host is down: connections are refused
        host.start()                          # back, on the same port
    host.received  ->  [Received(webhook_id, event, status), ...]
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the reference implementation's import warnings
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Received:
    webhook_id: str
    event: dict[str, Any]
    status: int


class HostReceiver:
    def __init__(self, secret: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self.refused: list[str] = []  # bad signatures: must stay empty
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/carecal/events"

    def start(self) -> None:
        receiver = self
        verifier = Webhook(self.secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    # The reference implementation, with its own ±5 min clock check.
                    event = verifier.verify(body, headers)
                except WebhookVerificationError:
                    with receiver._lock:
                        receiver.refused.append(headers.get("webhook-id", ""))
                    self.send_response(401)
                    self.end_headers()
                    return
                status = 204
                with receiver._lock:
                    receiver.received.append(Received(headers["webhook-id"], event, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket; requests in hand finish."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.received]

    def events(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def __enter__(self) -> HostReceiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
