"""The floor: the fewest CalDAV requests a sync can make, on a bare `httpx.AsyncClient`.

No domain logic, no rendering, no store: it does exactly the protocol steps of DESIGN.md's
sync loop and nothing else, so what carecal spends beyond it is carecal's own doing.

    idle poll of one collection   PROPFIND depth 0 for DAV:sync-token; compare with the stored one
    idle poll of a home's views   one PROPFIND depth 1 on the home for every child's sync-token
    one changed item              REPORT sync-collection since the stored token (DAV:getetag;
                                  its answer carries the new token, so no probe before it);
                                  REPORT calendar-multiget of the changed href (getetag,
                                  calendar-data); PUT the given body with If-Match; REPORT
                                  sync-collection since the first one's token, which must hold
                                  only that write: its token is the one to keep (after a write
                                  a client must learn a token that holds it, and a content-hash
                                  token, Radicale's and Xandikos', may come back to the old one)

Its XML is read with the standard library's ElementTree (`parse_*`), namespace-qualified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import httpx

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"

PROBE_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<propfind xmlns="DAV:"><prop><sync-token/></prop></propfind>'
)


def sync_collection_body(token: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<sync-collection xmlns="DAV:">'
        f"<sync-token>{_escape(token)}</sync-token><sync-level>1</sync-level>"
        "<prop><getetag/></prop></sync-collection>"
    ).encode()


def multiget_body(hrefs: Sequence[str]) -> bytes:
    listed = "".join(f"<D:href>{_escape(href)}</D:href>" for href in hrefs)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f"<D:prop><D:getetag/><C:calendar-data/></D:prop>{listed}</C:calendar-multiget>"
    ).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _path(href: str) -> str:
    """One spelling per href (the path, percent-encoding normalised), as carecal compares."""
    return quote(unquote(urlsplit(href).path), safe="/@:+!$&'()*,;=-._~")


def parse_sync_token(xml: bytes) -> str:
    """The DAV:sync-token of a depth-0 PROPFIND answer.

    >>> parse_sync_token(b'<multistatus xmlns="DAV:"><response><href>/c/</href><propstat>'
    ...                  b'<prop><sync-token>t1</sync-token></prop></propstat></response>'
    ...                  b'</multistatus>')
    't1'
    """
    token = ElementTree.fromstring(xml).find(f".//{DAV}prop/{DAV}sync-token")
    if token is None or not token.text:
        raise ValueError("no DAV:sync-token in the answer")
    return token.text.strip()


def parse_sync_tokens(xml: bytes) -> dict[str, str]:
    """Each response's DAV:sync-token in a depth-1 PROPFIND answer, by path (with `/`).

    >>> parse_sync_tokens(b'<multistatus xmlns="DAV:"><response><href>/h/c/</href><propstat>'
    ...                   b'<prop><sync-token>t1</sync-token></prop></propstat></response>'
    ...                   b'</multistatus>')
    {'/h/c/': 't1'}
    """
    found: dict[str, str] = {}
    for response in ElementTree.fromstring(xml).iter(f"{DAV}response"):
        href, token = response.find(f"{DAV}href"), response.find(f".//{DAV}prop/{DAV}sync-token")
        if href is not None and href.text and token is not None and token.text:
            found[_path(href.text).rstrip("/") + "/"] = token.text.strip()
    return found


@dataclass(frozen=True, slots=True)
class Delta:
    token: str
    changed: dict[str, str]  # href -> ETag
    deleted: tuple[str, ...]


def parse_sync_collection(xml: bytes, collection: str) -> Delta:
    """A sync-collection answer: the new token, changed hrefs with their ETags, deleted hrefs
    (a response with a 404 status and no propstat). The collection itself is left out."""
    root = ElementTree.fromstring(xml)
    changed: dict[str, str] = {}
    deleted: list[str] = []
    own = _path(collection)
    for response in root.findall(f"{DAV}response"):
        href = _path(response.findtext(f"{DAV}href", "").strip())
        if href == own:
            continue
        status = response.findtext(f"{DAV}status", "")
        if " 404 " in status:
            deleted.append(href)
            continue
        etag = response.findtext(f".//{DAV}getetag")
        if etag:
            changed[href] = etag.strip()
    token = root.findtext(f"{DAV}sync-token")
    if not token:
        raise ValueError("no DAV:sync-token in the sync-collection answer")
    return Delta(token.strip(), changed, tuple(deleted))


def parse_multiget(xml: bytes) -> dict[str, tuple[str, bytes]]:
    """href -> (ETag, calendar data) of a calendar-multiget answer."""
    found: dict[str, tuple[str, bytes]] = {}
    for response in ElementTree.fromstring(xml).findall(f"{DAV}response"):
        href = _path(response.findtext(f"{DAV}href", "").strip())
        etag = response.findtext(f".//{DAV}getetag")
        data = response.findtext(f".//{CALDAV}calendar-data")
        if etag and data is not None:
            found[href] = (etag.strip(), data.encode())
    return found


class Floor:
    """One server, one connection pool; paths are absolute on the client's base URL."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _probe(self, path: str, depth: str) -> bytes:
        response = await self.client.request(
            "PROPFIND",
            path,
            content=PROBE_BODY,
            headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"},
        )
        _expect(response, 207)
        return response.content

    async def sync_token(self, collection: str) -> str:
        return parse_sync_token(await self._probe(collection, "0"))

    async def idle_poll(self, collection: str, stored_token: str) -> bool:
        """One idle poll: has the collection changed since `stored_token`?"""
        return await self.sync_token(collection) != stored_token

    async def home_tokens(self, home: str) -> dict[str, str]:
        return parse_sync_tokens(await self._probe(home, "1"))

    async def round(self, polled: Sequence[tuple[str, str]], concurrency: int = 8) -> list[bool]:
        """An idle poll of every (collection, stored token), `concurrency` at once: which
        collections changed. Collections that share a home with others are polled with one
        PROPFIND of the home (as carecal's poll does), the rest one by one."""
        semaphore = asyncio.Semaphore(concurrency)
        homes: dict[str, int] = {}
        for collection, _ in polled:
            home = _home(collection)
            homes[home] = homes.get(home, 0) + 1

        async def home_tokens(home: str) -> dict[str, str]:
            async with semaphore:
                return await self.home_tokens(home)

        shared = [home for home, count in homes.items() if count > 1]
        tokens: dict[str, str] = {}
        for found in await asyncio.gather(*(home_tokens(h) for h in shared)):
            tokens.update(found)

        async def one(collection: str, token: str) -> bool:
            known = tokens.get(_path(collection).rstrip("/") + "/")
            if known is not None:
                return known != token
            async with semaphore:
                return await self.idle_poll(collection, token)

        return await asyncio.gather(*(one(c, t) for c, t in polled))

    async def changes_since(self, collection: str, token: str) -> Delta:
        response = await self.client.request(
            "REPORT",
            collection,
            content=sync_collection_body(token),
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
        )
        _expect(response, 207)
        return parse_sync_collection(response.content, collection)

    async def multiget(self, collection: str, hrefs: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        response = await self.client.request(
            "REPORT",
            collection,
            content=multiget_body(hrefs),
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
        )
        _expect(response, 207)
        return parse_multiget(response.content)

    async def put(self, href: str, body: bytes, if_match: str) -> str | None:
        response = await self.client.put(
            href,
            content=body,
            headers={"If-Match": if_match, "Content-Type": "text/calendar; charset=utf-8"},
        )
        if response.status_code not in (200, 201, 204):
            _expect(response, 204)
        etag: str | None = response.headers.get("ETag")
        return etag

    async def one_change(
        self, collection: str, stored_token: str, rewrite: ChangeWriter
    ) -> tuple[str, bytes, str]:
        """Delta, multiget of what changed, one PUT with If-Match of the body `rewrite`
        makes of the fetched one, and the delta that settles the token: the protocol steps
        of carecal's sync of one change (`view_sync`). Answers the href written, the body
        sent and the token to keep for the next change."""
        delta = await self.changes_since(collection, stored_token)
        if not delta.changed:
            raise RuntimeError(f"{collection} did not change")
        fetched = await self.multiget(collection, sorted(delta.changed))
        if len(fetched) != 1:
            raise RuntimeError(f"expected one changed item in {collection}, got {len(fetched)}")
        [(href, (etag, body))] = fetched.items()
        new_body = rewrite(body)
        written = await self.put(href, new_body, etag)
        if written is None:
            raise RuntimeError(f"PUT {href} named no ETag: the floor cannot tell its own write")
        settled = await self.changes_since(collection, delta.token)
        if list(settled.changed.items()) != [(href, written)] or settled.deleted:
            raise RuntimeError(f"{collection} changed beside the floor's own write: {settled}")
        return href, new_body, settled.token


class ChangeWriter:
    """What the floor writes back: the fetched bytes with one substitution, standing for the
    copy a sync engine writes after reading a member's gesture (no parsing, no rendering)."""

    def __init__(self, old: bytes, new: bytes) -> None:
        self.old, self.new = old, new

    def __call__(self, body: bytes) -> bytes:
        if self.old not in body:
            raise RuntimeError(f"{self.old!r} is not in the fetched copy")
        return body.replace(self.old, self.new, 1)


def _home(collection: str) -> str:
    return collection.rstrip("/").rsplit("/", 1)[0] + "/"


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
