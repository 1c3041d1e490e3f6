"""ASGI middleware: a request id for every request, and one access-log line per request.

The access log names the route template (`/c/{token}`), never the raw path, because paths carry
personal claim and feed tokens.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plugin.logs import request_id_var

log = logging.getLogger("carecal.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# Unique across processes (random prefix) and cheap per request (a counter), unlike uuid4.
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def route_template(scope: Scope, root: str) -> str:
    """The matched route's template with the mounts it is under (the router adds each
    mount's path to the scope's root path): `/api/v1/circles/{citizen_id}`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        return "(unmatched)"
    mounted = str(scope.get("root_path", ""))[len(root) :]
    return _CONVERTER.sub(r"{\1}", mounted + path)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"x-request-id"
            ),
            "",
        )
        request_id = (
            incoming if _SAFE_REQUEST_ID.match(incoming) else f"{_PREFIX}-{next(_COUNTER):x}"
        )
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        root = scope.get("root_path", "")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.INFO):  # the record's fields cost even when dropped
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": route_template(scope, root),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            request_id_var.reset(token)
