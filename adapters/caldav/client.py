"""The CalDAV adapter: `CalendarClient` on caldav's async client (`caldav.aio`).

Every request goes through one `caldav.aio.AsyncDAVClient` and so through one HTTP session;
caldav brings the transport (auth, rate-limit handling), the WebDAV/CalDAV XML vocabulary
(`caldav.elements`) and the multistatus parsers (`DAVResponse.parse_*`). What it offers at a
higher level does not fit a sync engine, so each operation picks the lowest caldav layer that
does exactly one request with exactly our headers:

    operation          caldav call                        why not higher up
    probe              propfind(body=...) depth 0          its props= list drops CS:getctag
    changes_since      sync_collection(token, getetag)     (used as is) objects_by_sync_token
                                                           GETs every object one by one
    list_etags         propfind(props=[getetag]) depth 1   (used as is)
    fetch              report(calendar-multiget body)      its calendar_multiget asks for
                                                           calendar-data only, not getetag,
                                                           and (3.6) sends every href empty:
                                                           dav.Href(href) sets a name="..."
                                                           attribute; Radicale answers 500
    create/update      put(body, If-None-Match / If-Match) Event.save() bumps SEQUENCE (ours
                                                           to manage) and hides the 412 cause
    delete             delete(If-Match)                    Event.delete() is unconditional
    ensure_collection  mkcol / mkcalendar / proppatch      make_calendar() cannot MKCOL the
                                                           principal or tell "exists" apart

The session is niquests, not httpx: caldav 3.6 depends on niquests and prefers it whenever it is
installed, so an httpx.AsyncClient cannot be handed to it. STYLE's "HTTP client from outside"
holds with that session instead: pass one from `new_session` (tests add hooks to count
requests), or let the adapter build and own one. Its pool is bounded (`pool_block`), so at most
`max_connections` requests are in flight per account.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, Self, cast
from urllib.parse import urlsplit

import niquests
import niquests.adapters
import niquests.exceptions
from caldav import aio
from caldav.elements import cdav, dav
from caldav.elements.base import BaseElement
from caldav.lib import error as caldav_error
from caldav.lib.namespace import ns
from caldav.lib.python_utilities import WireBytes
from caldav.response import DAVResponse
from lxml import etree

from adapters.caldav.port import (
    AlreadyExists,
    Body,
    CalendarError,
    CalendarUnavailable,
    Delta,
    EtagMismatch,
    Forbidden,
    InvalidSyncToken,
    NotFound,
    Probe,
    canonical_href,
    collection_path,
    object_href,
)
from adapters.caldav.quirks import QUIRKS, ServerQuirks

VALID_SYNC_TOKEN = "{DAV:}valid-sync-token"
NO_UID_CONFLICT = "{urn:ietf:params:xml:ns:caldav}no-uid-conflict"
RESOURCE_MUST_BE_NULL = "{DAV:}resource-must-be-null"
RESPONSE_DESCRIPTION = "{DAV:}responsedescription"  # prose next to the precondition (Xandikos)
CALDAV_CALENDAR = "{urn:ietf:params:xml:ns:caldav}calendar"
GETCTAG = "{http://calendarserver.org/ns/}getctag"
ICALENDAR = "text/calendar; charset=utf-8"
# Servers answer a depth-1 sync-collection in one go unless they choose to truncate (507);
# we never send DAV:limit (Xandikos drops the rest), and stop following truncations here.
MAX_SYNC_PAGES = 100
# A collection's markers are short (a URL, a hash, a commit id); one longer than this is not
# kept (`view_state`'s columns hold 1 024) and not trusted: the collection is read without it.
MAX_MARKER = 1024


# The most of one answer a client reads (decoded), unless its settings say less (a member's own
# server: adapters.caldav.accounts). The municipality's server lists every view in one PROPFIND
# of its home (~400 bytes a view).
MAX_ANSWER_BYTES = 256 * 1024 * 1024
# Hrefs asked for in one calendar-multiget: 50 copies at view_sync's largest readable (256 KiB)
# come to 12.5 MiB, within what is read of a member's own server.
FETCH_BATCH = 50


class _TooLarge(CalendarUnavailable):
    """The server's answer ran past what carecal reads: to every caller but `fetch` (which
    asks again for less) a server that failed, tried again later."""


class _GetCTag(BaseElement):
    tag = GETCTAG


@dataclass(frozen=True, slots=True)
class CalDAVSettings:
    """One CalDAV account. Paths given to the client are absolute on `base_url`'s origin."""

    base_url: str
    username: str | None = None
    password: str | None = None
    server: str = "generic"  # a key of quirks.QUIRKS
    max_connections: int = 8
    timeout_seconds: float = 10.0  # between two reads of an answer
    deadline_seconds: float = 60.0  # for a whole request, however it trickles
    max_answer_bytes: int = MAX_ANSWER_BYTES  # the most of one answer read (decoded)


Hook = Callable[..., Any]


class AnswerTooLarge(niquests.exceptions.RequestException):
    """A server's answer ran past `_Session.max_answer_bytes`; it was not read further."""


class _Session(niquests.AsyncSession):
    """Never follows a redirect: a server that sends carecal elsewhere is answered with an
    error, not followed (a member's server could point it at the municipality's internal
    network, past the check of the account's own address). A whole request ends within
    `deadline_seconds`: the transport's timeout is between two reads, which a server sending
    a byte now and then never trips. And an answer is read up to `max_answer_bytes`
    (decoded), no further: caldav and lxml hold a whole answer, and then its tree, about ten
    times its size, so one member's server sending without end would take the memory every
    tenant's syncs live in."""

    deadline_seconds: float = 60.0
    max_answer_bytes: int = MAX_ANSWER_BYTES

    async def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["allow_redirects"] = False
        kwargs["stream"] = True
        async with asyncio.timeout(self.deadline_seconds):
            response = await super().request(*args, **kwargs)
            if isinstance(response, niquests.AsyncResponse):
                await _read_within(response, self.max_answer_bytes)
        return response


async def _read_within(response: niquests.AsyncResponse, limit: int) -> None:
    """Read a streamed answer's body whole, or raise `AnswerTooLarge` past `limit` bytes (the
    connection is then closed, not reused). The answer is left as a read one: caldav takes
    its `content` as a plain attribute, as on a session that does not stream."""
    length = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    # A length beside a chunked body is ignored by the transport: that body is streamed.
    chunked = "transfer-encoding" in response.headers
    if not encoded and not chunked and length.isdigit() and int(length) <= limit:
        # The common answer: its length said, nothing to unpack, nothing past that length
        # is read. One read, as a session that does not stream makes it.
        await response.content
        cast(Any, response).__class__ = niquests.Response
        return
    chunks: list[bytes] = []
    size = 0
    async for chunk in await response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            await response.close()
            raise AnswerTooLarge(f"answer over {limit} bytes")
        chunks.append(chunk)
    response._content = b"".join(chunks)
    response._content_consumed = True
    cast(Any, response).__class__ = niquests.Response  # what a session that does not stream answers


def new_session(
    max_connections: int,
    *,
    hooks: Mapping[str, Sequence[Hook]] | None = None,
    deadline_seconds: float = 60.0,
    max_answer_bytes: int = MAX_ANSWER_BYTES,
) -> niquests.AsyncSession:
    """An HTTP session whose pool never opens more than `max_connections` connections: with
    `pool_block` a request waits for a free connection instead of opening one more. It follows
    no redirect, ends every request within `deadline_seconds` and reads no answer past
    `max_answer_bytes` (`_Session`)."""
    session = _Session(
        pool_connections=1,
        pool_maxsize=max_connections,
        hooks=cast(Any, {event: list(fns) for event, fns in (hooks or {}).items()}),
    )
    session.deadline_seconds = deadline_seconds
    session.max_answer_bytes = max_answer_bytes
    for prefix in ("http://", "https://"):
        session.mount(
            prefix,
            niquests.adapters.AsyncHTTPAdapter(
                pool_connections=1, pool_maxsize=max_connections, pool_block=True
            ),
        )
    return session


class CalDAVClient:
    """`CalendarClient` for one account on a real CalDAV server.

    async with CalDAVClient(CalDAVSettings("http://127.0.0.1:5232", "carecal", "pw",
                                           server="radicale")) as calendars:
        path = await calendars.ensure_collection("/anna/fru-jensen/", "Fru Jensen - omsorg")
        etag = await calendars.create(path, "occ-1.ics", ics_bytes)
    """

    def __init__(
        self, settings: CalDAVSettings, *, session: niquests.AsyncSession | None = None
    ) -> None:
        self._quirks: ServerQuirks = QUIRKS[settings.server]
        parts = urlsplit(settings.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        # Say "no multiplexing" outright: on a 401 with an undeclared http.multiplexing,
        # caldav closes its session and builds a new one, which would drop ours.
        features: dict[str, Any] = {"http.multiplexing": {"support": "unsupported"}}
        if self._quirks.caldav_profile:
            features["base"] = self._quirks.caldav_profile
        self._dav = aio.AsyncDAVClient(
            url=settings.base_url,
            username=settings.username,
            password=settings.password,
            # Basic up front: no unauthenticated round trip to learn the scheme.
            auth_type="basic" if settings.username is not None else None,
            timeout=cast(int, settings.timeout_seconds),  # typed int, used as a float
            features=features,
            enable_rfc6764=False,
            # A 429/503 is CalendarUnavailable; the sync scheduler decides when to retry.
            rate_limit_handle=False,
        )
        self._owns_session = session is None
        # caldav's own session is unused until the first request; swap ours in before it.
        self._dav.session = session or new_session(
            settings.max_connections,
            deadline_seconds=settings.deadline_seconds,
            max_answer_bytes=settings.max_answer_bytes,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session:
            await self._dav.session.close()

    # -- collections -------------------------------------------------------------------

    async def ensure_collection(self, path: str, display_name: str) -> str:
        path = collection_path(path)
        found = await self._collection_props(path)
        if found is None:
            if self._quirks.needs_principal_mkcol:
                await self._ensure_parent(path)
            body = _tree(
                cdav.Mkcalendar(),
                _tree(dav.Set(), _tree(dav.Prop(), dav.DisplayName(display_name))),
            )
            with _translated(path):
                response = await self._dav.mkcalendar(self._url(path), _xml(body))
            if response.status in (200, 201):
                return path
            if RESOURCE_MUST_BE_NULL not in _preconditions(response):
                _fail(response, path, "MKCALENDAR")
            # Lost a race with another writer: look at what is there now.
            found = await self._collection_props(path)
            if found is None:
                _fail(response, path, "MKCALENDAR")
        resourcetype, current_name = found
        if CALDAV_CALENDAR not in resourcetype:
            raise CalendarError(f"{path} exists but is not a calendar collection", href=path)
        if current_name != display_name:
            body = _tree(
                dav.PropertyUpdate(),
                _tree(dav.Set(), _tree(dav.Prop(), dav.DisplayName(display_name))),
            )
            with _translated(path):
                response = await self._dav.proppatch(self._url(path), _xml(body))
            if response.status not in (200, 207):
                _fail(response, path, "PROPPATCH")
        return path

    async def delete_collection(self, path: str) -> None:
        path = collection_path(path)
        with _translated(path):
            response = await self._dav.delete(self._url(path))
        if response.status not in (200, 204, 404):
            _fail(response, path, "DELETE")

    async def _collection_props(self, path: str) -> tuple[list[str], str | None] | None:
        body = _tree(dav.Propfind(), _tree(dav.Prop(), dav.ResourceType(), dav.DisplayName()))
        try:
            props = await self._propfind_self(path, body)
        except NotFound:
            return None
        resourcetype = props.get(dav.ResourceType.tag) or []
        name = props.get(dav.DisplayName.tag)
        return list(resourcetype), name if isinstance(name, str) else None

    async def _ensure_parent(self, path: str) -> None:
        parent = path.rstrip("/").rsplit("/", 1)[0] + "/"
        if parent == "/":
            return
        with _translated(parent):
            response = await self._dav.mkcol(self._url(parent))
        # 405: something is there already, which is all we need.
        if response.status not in (200, 201, 405):
            _fail(response, parent, "MKCOL")

    # -- reading -----------------------------------------------------------------------

    async def probe(self, path: str) -> Probe:
        path = collection_path(path)
        return _probe_of(await self._propfind_self(path, _probe_body()))

    async def probe_children(self, parent: str) -> dict[str, Probe]:
        parent = collection_path(parent)
        with _translated(parent):
            response = await self._dav.propfind(
                self._url(parent), body=_xml(_probe_body()), depth=1
            )
        found: dict[str, Probe] = {}
        for result in _propfind_results(response, parent):
            href = collection_path(result.href)
            if href == parent or result.status not in (None, 200):
                continue
            found[href] = _probe_of(result.properties)
        return found

    async def changes_since(self, path: str, sync_token: str | None) -> Delta:
        path = collection_path(path)
        token = sync_token or ""
        changes: dict[str, str | None] = {}  # href -> etag, None when deleted
        for _page in range(MAX_SYNC_PAGES):
            with _translated(path):
                response = await self._dav.sync_collection(
                    self._url(path), sync_token=token, props=[dav.GetEtag.tag]
                )
                if response.status not in (200, 207):
                    if response.status in self._quirks.bare_invalid_token_statuses:
                        raise InvalidSyncToken(
                            f"sync-collection {path}: {response.status}",
                            status=response.status,
                            href=path,
                        )
                    _fail(response, path, "sync-collection")
                result = response.parse_sync_collection()
            for item in result.changed:
                href = canonical_href(item.href)
                if href != path:
                    changes[href] = _required_etag(item.etag, href)
            for href in map(canonical_href, result.deleted):
                changes[href] = None
            if not result.sync_token:
                raise CalendarError(f"sync-collection {path}: no sync-token", href=path)
            token = result.sync_token
            if not result.truncated:
                break
        else:
            # Still truncated after MAX_SYNC_PAGES pages: not a delta to act on. The caller
            # lists every ETag instead, as for a token the server refused.
            raise InvalidSyncToken(f"sync-collection {path}: no end after {MAX_SYNC_PAGES} pages")
        if len(token) > MAX_MARKER:
            raise InvalidSyncToken(f"sync-collection {path}: a sync token of {len(token)} chars")
        return Delta(
            new_token=token,
            changed=tuple((href, etag) for href, etag in changes.items() if etag is not None),
            deleted=tuple(href for href, etag in changes.items() if etag is None),
        )

    async def list_etags(self, path: str) -> dict[str, str]:
        path = collection_path(path)
        with _translated(path):
            response = await self._dav.propfind(self._url(path), props=[dav.GetEtag.tag], depth=1)
        results = _propfind_results(response, path)
        found: dict[str, str] = {}
        for result in results:
            href = canonical_href(result.href)
            etag = result.properties.get(dav.GetEtag.tag)
            # Skip the collection itself (Radicale and Xandikos give it an ETag too).
            if href != path and result.status == 200 and isinstance(etag, str):
                found[href] = etag
        return found

    async def fetch(self, path: str, hrefs: Sequence[str]) -> dict[str, tuple[str, Body]]:
        """The objects at `hrefs` that are there, in multigets of at most `FETCH_BATCH`
        hrefs. A multiget whose answer is too large to read is asked again in halves; an
        object too large alone is answered with its ETag (a PROPFIND of it) and None, never
        left out: left out, it would read as gone since it was listed."""
        path = collection_path(path)
        wanted = list(dict.fromkeys(canonical_href(h) for h in hrefs))
        found: dict[str, tuple[str, Body]] = {}
        batches = [wanted[i : i + FETCH_BATCH] for i in range(0, len(wanted), FETCH_BATCH)]
        while batches:
            batch = batches.pop()
            try:
                found.update(await self._multiget(path, batch))
            except _TooLarge:
                if len(batch) > 1:
                    half = len(batch) // 2
                    batches += [batch[:half], batch[half:]]
                    continue
                etag = await self._etag_of(batch[0])
                if etag is not None:  # None: gone since it was listed
                    found[batch[0]] = (etag, None)
        return found

    async def _etag_of(self, href: str) -> str | None:
        """One object's ETag (a PROPFIND depth 0 of it), None when it is not there."""
        with _translated(href):
            response = await self._dav.propfind(self._url(href), props=[dav.GetEtag.tag], depth=0)
        try:
            results = _propfind_results(response, href)
        except NotFound:
            return None
        for result in results:
            if canonical_href(result.href) == href and result.status == 200:
                return _required_etag(result.properties.get(dav.GetEtag.tag), href)
        return None

    async def _multiget(self, path: str, hrefs: Sequence[str]) -> dict[str, tuple[str, Body]]:
        body = _tree(
            cdav.CalendarMultiGet(),
            _tree(dav.Prop(), dav.GetEtag(), cdav.CalendarData()),
            *(dav.Href(value=href) for href in hrefs),
        )
        with _translated(path):
            response = await self._dav.report(self._url(path), _xml(body), depth=1)
            if response.status not in (200, 207):
                _fail(response, path, "calendar-multiget")
            results = response.parse_calendar_query()
        found: dict[str, tuple[str, Body]] = {}
        for result in results:
            href = canonical_href(result.href)
            if result.status != 200 or result.calendar_data is None:
                continue  # gone since it was listed
            found[href] = (_required_etag(result.etag, href), result.calendar_data.encode())
        return found

    async def _propfind_self(self, path: str, body: BaseElement) -> dict[str, Any]:
        with _translated(path):
            response = await self._dav.propfind(self._url(path), body=_xml(body), depth=0)
        for result in _propfind_results(response, path):
            if canonical_href(result.href) == path:
                props: dict[str, Any] = result.properties
                return props
        raise CalendarError(f"PROPFIND {path}: no answer for the collection", href=path)

    # -- writing -----------------------------------------------------------------------

    async def create(self, path: str, name: str, body: bytes) -> str | None:
        href = object_href(path, name)
        response = await self._put(href, body, {"If-None-Match": "*"})
        if response.status == 412 and not _preconditions(response):
            raise AlreadyExists(f"{href} already exists", status=412, href=href)
        return _written_etag(response, href)

    async def update(self, href: str, body: bytes, if_match: str) -> str | None:
        href = canonical_href(href)
        response = await self._put(href, body, {"If-Match": if_match})
        if response.status == 412 and not _preconditions(response):
            raise EtagMismatch(f"{href} is no longer {if_match}", status=412, href=href)
        return _written_etag(response, href)

    async def delete(self, href: str, if_match: str) -> None:
        href = canonical_href(href)
        with _translated(href):
            response = await self._dav.delete(self._url(href), headers={"If-Match": if_match})
        if response.status == 412 and not _preconditions(response):
            raise EtagMismatch(f"{href} is no longer {if_match}", status=412, href=href)
        if response.status not in (200, 204):
            _fail(response, href, "DELETE")

    async def _put(self, href: str, body: bytes, condition: dict[str, str]) -> DAVResponse:
        with _translated(href):
            # WireBytes: send our bytes as they are (caldav would rewrite line endings).
            return await self._dav.put(
                self._url(href),
                cast(str, WireBytes(body)),
                headers={"Content-Type": ICALENDAR, **condition},
            )

    def _url(self, href: str) -> str:
        return self._origin + href


def _tree(parent: BaseElement, *children: BaseElement) -> BaseElement:
    """caldav's element builder, spelled as a call: _tree(Prop(), GetEtag(), CalendarData())."""
    for child in children:
        parent.append(child)
    return parent


def _xml(element: BaseElement) -> str:
    return cast(
        bytes,
        etree.tostring(element.xmlelement(), encoding="utf-8", xml_declaration=True),
    ).decode()


def _preconditions(response: DAVResponse) -> tuple[str, ...]:
    """Clark names of the DAV:error children of an error body: ("{DAV:}valid-sync-token",)."""
    tree = response.tree
    if tree is None or tree.tag != ns("D", "error"):
        return ()
    return tuple(
        str(child.tag)
        for child in tree
        if isinstance(child.tag, str) and child.tag != RESPONSE_DESCRIPTION
    )


def _probe_body() -> BaseElement:
    return _tree(dav.Propfind(), _tree(dav.Prop(), dav.SyncToken(), _GetCTag(), dav.DisplayName()))


def _probe_of(props: Mapping[str, Any]) -> Probe:
    token, ctag = props.get(dav.SyncToken.tag), props.get(GETCTAG)
    name = props.get(dav.DisplayName.tag)
    return Probe(
        sync_token=_marker(token),
        ctag=_marker(ctag),
        display_name=_marker(name),
    )


def _marker(value: object) -> str | None:
    """A marker as the server sent it; None for none, or one too long to keep (MAX_MARKER)."""
    return value if isinstance(value, str) and len(value) <= MAX_MARKER else None


def _propfind_results(response: DAVResponse, path: str) -> list[Any]:
    if response.status not in (200, 207):
        _fail(response, path, "PROPFIND")
    results = list(response.results or [])
    # Xandikos answers a PROPFIND on a missing path with 207 and one 404 response inside.
    if not results or all(r.status == 404 for r in results):
        raise NotFound(f"PROPFIND {path}: not found", status=404, href=path)
    return results


def _written_etag(response: DAVResponse, href: str) -> str | None:
    if response.status not in (200, 201, 204):
        _fail(response, href, "PUT")
    etag = response.headers.get("ETag")
    return etag if isinstance(etag, str) and etag else None


def _required_etag(etag: str | None, href: str) -> str:
    if not etag:
        raise CalendarError(f"the server sent no ETag for {href}", href=href)
    return etag


def _fail(response: DAVResponse, href: str, what: str) -> NoReturn:
    """Raise the port error an unexpected answer means; the precondition, when the server
    names one, says more than the status (servers disagree on statuses)."""
    status = response.status
    pre = _preconditions(response)
    message = f"{what} {href}: {status} {response.reason}".rstrip()
    if pre:
        message += f" {', '.join(pre)}"
    kind: type[CalendarError]
    if VALID_SYNC_TOKEN in pre:
        kind = InvalidSyncToken
    elif NO_UID_CONFLICT in pre:
        kind = AlreadyExists
    elif status in (404, 410):
        kind = NotFound
    elif status in (401, 403):
        kind = Forbidden
    elif status in (423, 429) or status >= 500:
        # 423 Locked: Xandikos answers it while another write to the collection is in
        # progress (its git repository is locked); like 429, it means "try again soon".
        kind = CalendarUnavailable
    else:
        kind = CalendarError
    raise kind(message, status=status, href=href, preconditions=pre)


@contextlib.contextmanager
def _translated(href: str) -> Iterator[None]:
    """caldav and niquests errors -> port errors, once, at this boundary."""
    try:
        yield
    except CalendarError:
        raise
    except caldav_error.RateLimitError as exc:
        raise CalendarUnavailable(f"{href}: rate limited", status=429, href=href) from exc
    except caldav_error.AuthorizationError as exc:
        # caldav raises on 401/403 before we see the response; Radicale says "invalid sync
        # token" with a 403, so the precondition decides.
        pre = tuple(exc.preconditions or ())
        kind = InvalidSyncToken if VALID_SYNC_TOKEN in pre else Forbidden
        raise kind(
            f"{href}: {exc.reason}", status=exc.status, href=href, preconditions=pre
        ) from exc
    except caldav_error.DAVError as exc:
        raise CalendarError(f"{href}: {exc}", href=href) from exc
    except AnswerTooLarge as exc:
        raise _TooLarge(f"{href}: {exc}", href=href) from exc
    except TimeoutError as exc:  # `_Session`'s deadline
        raise CalendarUnavailable(f"{href}: no whole answer in time", href=href) from exc
    except niquests.exceptions.RequestException as exc:
        # Connection refused/reset, DNS, TLS, connect and read timeouts.
        raise CalendarUnavailable(f"{href}: {exc}", href=href) from exc
    except etree.LxmlError as exc:
        raise CalendarError(f"{href}: unreadable answer: {exc}", href=href) from exc
