"""Reading request bodies without trusting the sender about their size or type.

A chunked request has no Content-Length, so the limit is enforced on the running total while
the body streams in: reading stops, and `BodyTooLarge` is raised, as soon as the total passes
the limit. At most `limit` bytes plus one received chunk are ever held in memory.

Errors:

    BodyRejected
     ├── BodyTooLarge           more than `limit` bytes (declared or received)   (HTTP 413)
     └── UnsupportedMediaType   Content-Type is not JSON                          (HTTP 415)
"""

from __future__ import annotations

from starlette.requests import Request

__all__ = [
    "BodyRejected",
    "BodyTooLarge",
    "UnsupportedMediaType",
    "first_value",
    "page_csp",
    "read_form",
    "read_limited_body",
    "require_json",
]

DEFAULT_LIMIT = 256 * 1024


class BodyRejected(Exception):
    """The request body is refused before it is interpreted."""


class BodyTooLarge(BodyRejected):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class UnsupportedMediaType(BodyRejected):
    def __init__(self) -> None:
        super().__init__("request body must be application/json")


def require_json(request: Request) -> None:
    """Refuse anything but `application/json` (parameters such as charset allowed)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType()


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body, or `BodyTooLarge` once it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    # An unreadable Content-Length is the server's to reject (it frames the request); here it
    # only serves to refuse early, and the running total below is the real guard.
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            # Returning here leaves the rest unread: the server discards or closes it.
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


MAX_FORM_BYTES = 2048  # the largest HTML form carecal serves posts well under 1 KiB


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, list[str]] | None:
    """An `application/x-www-form-urlencoded` body, or None when it is too large or not
    UTF-8 (the pages answer both alike)."""
    from urllib.parse import parse_qs

    try:
        return parse_qs((await read_limited_body(request, limit)).decode("utf-8"))
    except (BodyTooLarge, UnicodeDecodeError):
        return None


def first_value(form: dict[str, list[str]], name: str) -> str:
    """The form's first value of `name`, or "" when it has none."""
    return next(iter(form.get(name, [])), "")


def page_csp(style: str) -> str:
    """The Content-Security-Policy of a server-rendered page whose only style is `style`
    (allowed by its hash): nothing else loads, forms post only here, no framing."""
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
