"""The calendar port: what the view sync engine asks of one CalDAV server (implemented by
`adapters.caldav.client.CalDAVClient`).

Glossary
    view          one member's copy of one circle's occurrences: exactly one collection.
    collection    a CalDAV calendar collection, named by its absolute path on the server,
                  with a trailing slash: "/carecal/fru-jensen-m-anna/".
    href          the absolute path of one calendar object resource in a collection:
                  "/carecal/fru-jensen-m-anna/occ-17.ics", in the canonical spelling of
                  `canonical_href` (servers may percent-encode differently).
    etag          the server's entity tag of an object, verbatim with its quotes ('"3f2a"').
                  Opaque: compared for equality and sent back in If-Match, never derived from
                  the bytes we sent (servers normalise what they store, so the ETag a write
                  returns is that of the stored object, not of our body).
    sync token    DAV:sync-token of a collection (RFC 6578), opaque; `changes_since` takes the
                  last one and answers what changed since, and the next token.
    ctag          CS:getctag, changes whenever anything in the collection changes; the cheap
                  "anything new?" signal for servers without sync tokens.

Errors, translated once at the adapter boundary; nothing from caldav, niquests or httpx
escapes:

    CalendarError
    ├── CalendarUnavailable   connection refused or reset, timeout, 5xx, 423, 429: retry later
    ├── EtagMismatch          412 on If-Match: the object changed since we read it
    ├── AlreadyExists         create found the href taken (If-None-Match: *), or the server
    │                         holds the same UID under another href (CALDAV:no-uid-conflict)
    ├── InvalidSyncToken      the server no longer knows the token: list_etags instead
    ├── NotFound              the collection or the object is not there
    └── Forbidden             401/403 for any other reason than an invalid sync token
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias
from urllib.parse import quote, unquote, urlsplit

# What `quote` leaves alone in a path: RFC 3986 pchar minus "%" plus "/".
_PATH_SAFE = "/-._~!$&'()*+,;=:@"


def canonical_href(href: str) -> str:
    """One spelling per resource: the path only, percent-encoding normalised.

    >>> canonical_href("http://dav.example/u/v/a%40b%2Dc.ics")
    '/u/v/a@b-c.ics'
    >>> canonical_href("/u/v/with space.ics")
    '/u/v/with%20space.ics'
    """
    return quote(unquote(urlsplit(href).path), safe=_PATH_SAFE)


def collection_path(path: str) -> str:
    """A collection's canonical path, always with one trailing slash. Raises ValueError for a
    path with a "." or ".." segment: HTTP clients resolve those before they send, so
    "/dav/anna/./" would be the member's whole home, and deleting it everything in there.

    >>> collection_path("/dav/north~m-anna/../")
    Traceback (most recent call last):
    ...
    ValueError: a calendar path may not have a '.' or '..' segment: '/dav/north~m-anna/../'
    """
    canonical = canonical_href(path).rstrip("/") + "/"
    if any(segment in (".", "..") for segment in canonical.split("/")):
        raise ValueError(f"a calendar path may not have a '.' or '..' segment: {canonical!r}")
    return canonical


def object_href(path: str, name: str) -> str:
    """The href `create(path, name, ...)` writes: `object_href("/u/v/", "occ-1.ics")` ->
    "/u/v/occ-1.ics". `name` is one path segment."""
    if "/" in name or not name:
        raise ValueError(f"object name must be one non-empty path segment, got {name!r}")
    return canonical_href(collection_path(path) + name)


# An object's iCalendar bytes as `fetch` answers them; None for one that is there but too large
# for the client to read (past its answer limit: a member's 20 MB attachment). Such an object
# is never parsed: it is overwritten or deleted by its ETag, as an unreadable copy is.
Body: TypeAlias = bytes | None


@dataclass(frozen=True, slots=True)
class Probe:
    """A collection's change markers, either None when the server has none, and its display
    name (read in the same request: a renamed citizen renames the collection)."""

    sync_token: str | None
    ctag: str | None
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed in a collection since a sync token (RFC 6578 sync-collection)."""

    new_token: str
    changed: tuple[tuple[str, str], ...]  # (href, etag), created or modified
    deleted: tuple[str, ...]  # hrefs


class CalendarClient(Protocol):
    """One CalDAV account (base URL and credentials); every method names its collection."""

    async def ensure_collection(self, path: str, display_name: str) -> str:
        """Create the calendar collection at `path` unless it exists; set its display name.
        Answers the collection's canonical path."""
        ...

    async def delete_collection(self, path: str) -> None:
        """Delete the collection and everything in it; a missing collection is fine."""
        ...

    async def probe(self, path: str) -> Probe:
        """The collection's sync token and ctag, in one small PROPFIND (depth 0)."""
        ...

    async def probe_children(self, parent: str) -> dict[str, Probe]:
        """`probe` of every collection directly under `parent`, in one PROPFIND (depth 1):
        by the collection's canonical path (`collection_path`). A poll of many views in one
        home asks once. Raises NotFound when `parent` is missing."""
        ...

    async def changes_since(self, path: str, sync_token: str | None) -> Delta:
        """Hrefs changed and deleted since `sync_token` (None: everything, as created).
        Raises InvalidSyncToken when the server no longer accepts the token."""
        ...

    async def list_etags(self, path: str) -> dict[str, str]:
        """Every object's href and ETag: the full listing behind an invalid token."""
        ...

    async def fetch(self, path: str, hrefs: Sequence[str]) -> dict[str, tuple[str, Body]]:
        """ETag and iCalendar bytes of each href, in one calendar-multiget (or a few, for
        many hrefs or large answers). Hrefs the server no longer has are absent from the
        answer; one too large to read is there with its ETag and None (`Body`)."""
        ...

    async def create(self, path: str, name: str, body: bytes) -> str | None:
        """Write a new object at `object_href(path, name)` with If-None-Match: *. Answers
        its ETag, or None when the server did not say. Raises AlreadyExists."""
        ...

    async def update(self, href: str, body: bytes, if_match: str) -> str | None:
        """Overwrite the object if its ETag is still `if_match`; answers the new ETag or None.
        Raises EtagMismatch or NotFound."""
        ...

    async def delete(self, href: str, if_match: str) -> None:
        """Delete the object if its ETag is still `if_match`. Raises EtagMismatch or
        NotFound."""
        ...


class CalendarError(Exception):
    """Base of every error the calendar port raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        href: str | None = None,
        preconditions: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.href = href
        # Clark names of the DAV:error children, e.g. ("{DAV:}valid-sync-token",)
        self.preconditions = preconditions


class CalendarUnavailable(CalendarError):
    """The server could not be reached or failed (5xx, 429, timeout): try again later."""


class EtagMismatch(CalendarError):
    """If-Match failed: the object changed since it was read."""


class AlreadyExists(CalendarError):
    """If-None-Match: * failed, or the UID already lives under another href."""


class InvalidSyncToken(CalendarError):
    """The server rejected the sync token (DAV:valid-sync-token): do a full listing."""


class NotFound(CalendarError):
    """The collection or object does not exist."""


class Forbidden(CalendarError):
    """Authentication failed or access was denied."""
