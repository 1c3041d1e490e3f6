"""RFC 9457 problem details (`application/problem+json`) for every error the web layer answers.

    >>> problem(404, "Not Found", "no tenant 'x'").body
    b'{"type":"about:blank","title":"Not Found","status":404,"detail":"no tenant \\'x\\'"}'

`PROBLEM_STATUSES` maps the exceptions of the lower layers to statuses, and
`problem_exception_handlers()` turns that table into Starlette `exception_handlers`, so the
translation from exception to HTTP happens in one place. An exception's message becomes the
problem's `detail`: only list exceptions whose messages are written to be shown to the caller
(they never carry secrets, signatures or payload values).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapters.host.signing import InvalidWebhook
from plugin.web.body import BodyTooLarge, UnsupportedMediaType
from plugin.web.schemas import InvalidEvent, MalformedEvent

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_STATUSES",
    "install_handlers",
    "problem",
    "problem_exception_handlers",
    "problem_from_exception",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Subclasses are found through the MRO, so each tree needs only its root here.
PROBLEM_STATUSES: Mapping[type[Exception], int] = {
    MalformedEvent: 400,
    InvalidWebhook: 401,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidEvent: 422,
}

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response. `extensions` become extra members (RFC 9457 §3.2).

    With the default `type_` "about:blank", `title` should be the status phrase (§4.2.1).
    """
    if "type" in extensions:
        # The other standard members are named parameters; `type` is spelt `type_`.
        raise TypeError("pass the problem type as type_=")
    content: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail is not None:
        content["detail"] = detail
    content.update(extensions)
    return JSONResponse(
        content, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _status_of(exc: Exception, statuses: Mapping[type[Exception], int]) -> int | None:
    return next((statuses[cls] for cls in type(exc).__mro__ if cls in statuses), None)


def problem_from_exception(
    exc: Exception, statuses: Mapping[type[Exception], int] = PROBLEM_STATUSES
) -> JSONResponse:
    """The problem response for `exc`; 500 without detail for anything not in the table."""
    if isinstance(exc, HTTPException):
        phrase = HTTPStatus(exc.status_code).phrase
        # Starlette fills `detail` with the phrase when none is given; do not repeat it.
        detail = exc.detail if exc.detail != phrase else None
        return problem(exc.status_code, phrase, detail, headers=exc.headers)
    status = _status_of(exc, statuses)
    if status is None:
        return problem(500, HTTPStatus(500).phrase)
    extensions: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidEvent):
        extensions["errors"] = exc.errors
    if isinstance(exc, BodyTooLarge):
        extensions["max_bytes"] = exc.limit
        # The rest of the body was never read; the connection cannot carry another request,
        # and closing it stops the sender from pushing the remainder at us.
        headers["connection"] = "close"
    return problem(status, HTTPStatus(status).phrase, str(exc), headers=headers, **extensions)


def problem_exception_handlers(
    statuses: Mapping[type[Exception], int] = PROBLEM_STATUSES,
) -> dict[Any, ExceptionHandler]:
    """Starlette `exception_handlers=` answering every listed exception, and every
    `HTTPException` (404 for unknown routes, 405 …), as problem+json."""

    async def handle(request: Request, exc: Exception) -> Response:
        return problem_from_exception(exc, statuses)

    return {cls: handle for cls in (*statuses, HTTPException)}


def install_handlers(
    app: Starlette, statuses: Mapping[type[Exception], int] = PROBLEM_STATUSES
) -> None:
    """Register `problem_exception_handlers(statuses)` on an already built app."""
    for exc_class, handler in problem_exception_handlers(statuses).items():
        app.add_exception_handler(exc_class, handler)
