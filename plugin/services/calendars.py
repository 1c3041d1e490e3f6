"""Where each view's collection lives, and a logged-in client to reach it.

A view is one member's copy of one circle (`View`). Its collection is on one of two kinds of
server, by the member's calendar delivery:

    hosted    the tenant-wide server carecal writes with its service account: the embedded
              Radicale (`/dav/<tenant>~<member>/<citizen>/`, one home per member, its change
              hook wakes the sync at once) or the municipality's own CalDAV server
              (`calendar.type = "caldav"`: `url` + `collection_template`, polled);
    external  the member's own CalDAV account (URL of their calendar home, username, app
              password decrypted from the store): `<home>/carecal-<citizen>/`, polled.

`feed` members have no collection.

A member's own account URL is refused when its host is, or resolves to, a loopback, private,
link-local or otherwise non-public address, unless the tenant sets
`allow_private_calendar_urls`: carecal must not become a way to reach the municipality's
internal network. The check resolves the name before each probe and sync (its answers kept
for a minute, `KeptAnswers`); the HTTP client resolves it again when it connects, so a name
whose answers change between the two (DNS rebinding) can slip through. Pin addresses at the
network layer (egress rules) where that matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from plugin.config import Settings
from plugin.domain.model import Delivery, ExternalCalendar, Member
from plugin.services.calendar_access import caldav_username
from plugin.services.calendar_port import (
    CalendarClient,
    CalendarError,
    CalendarUnavailable,
    collection_path,
)

log = logging.getLogger(__name__)

EMBEDDED_TEMPLATE = "{username}/{citizen}/"  # Radicale: one home per member login
EXTERNAL_PREFIX = "carecal-"
KEPT_ACCOUNTS = 512  # members' accounts whose clients are kept open at most (`AccountClients`)


@dataclass(frozen=True, slots=True)
class View:
    tenant_id: str
    member_id: str
    citizen_id: str

    @property
    def username(self) -> str:
        return caldav_username(self.tenant_id, self.member_id)

    def collection(self, home_root: str, template: str = EMBEDDED_TEMPLATE) -> str:
        """`View("north", "m-anna", "c-123").collection("/dav")` is
        "/dav/north~m-anna/c-123/"; with the template "{tenant}~{member}~{citizen}/" it is
        "/dav/north~m-anna~c-123/"."""
        segments = {
            "tenant": self.tenant_id,
            "member": self.member_id,
            "citizen": self.citizen_id,
            "username": self.username,
        }
        relative = template.format(**{k: quote(v, safe="") for k, v in segments.items()})
        return collection_path(f"{home_root.rstrip('/')}/{relative}")

    @property
    def job_key(self) -> str:
        return view_job_key(self.citizen_id, self.member_id)


MAX_JOB_KEY = 255  # `jobs.key`


# The reason of a view's sync the embedded server's hook queues: the member wrote to it.
MEMBER_WRITE = "member_write"


def view_job_key(citizen_id: str, member_id: str) -> str:
    """The key of one view's jobs (its syncs, its withdrawal): `<citizen>:<member>`, or, where
    that is longer than the jobs table holds (two ids of up to 128 characters), a digest of it.

    >>> view_job_key("c-123", "m-anna")
    'c-123:m-anna'
    >>> len(view_job_key("c" * 128, "m" * 128))
    71
    """
    key = f"{citizen_id}:{member_id}"
    if len(key) <= MAX_JOB_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CalendarAccess:
    """carecal's service account on the server of hosted members' views: a client logged in
    as the service identity, the path under which the views live (`/dav` when embedded), how
    a view's collection is named there, and whether carecal must poll it (no change hook)."""

    client: CalendarClient
    home_root: str
    template: str = EMBEDDED_TEMPLATE
    polled: bool = False

    def collection(self, view: View) -> str:
        return view.collection(self.home_root, self.template)


@dataclass(frozen=True, slots=True)
class Account:
    """A member's own CalDAV account."""

    url: str  # their calendar home, e.g. https://dav.example.org/calendars/anna/
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where one sync of a view reads and writes. `server` names the server and account
    (`HOSTED`, or `account_server`): a collection's path alone does not, since two accounts
    can hold one at the same path."""

    client: CalendarClient
    collection: str
    polled: bool
    server: str


HOSTED = "hosted"


def account_server(url: str, username: str) -> str:
    """A member's own account, as `Target.server` and `ViewState.server` name it: a digest
    of the server's origin and the username (no personal data in the view's state)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    return hashlib.sha256(f"{origin}\n{username}".encode()).hexdigest()[:32]


class MissingCalendar(RuntimeError):
    """A calendar job reached a worker that has no client for the view's server."""


class NoCollection(Exception):
    """The member's delivery has no calendar collection (a feed, or an incomplete account)."""


class UnsafeCalendarUrl(Exception):
    """A member's calendar URL points at a non-public address (or is not http/https)."""


OpenAccount = Callable[[Account], AbstractAsyncContextManager[CalendarClient]]
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]


@dataclass(slots=True)
class _Kept:
    client: CalendarClient
    closing: AsyncExitStack  # what closes the client
    users: int = 0
    used_at: float = 0.0
    retired: bool = False  # handed out no more; closed when its last user is done


class AccountClients:
    """An `OpenAccount` that keeps members' accounts' clients open between uses. Opened for
    each use, every poll of a member's own account and every sync after it would open a
    connection of its own: a TCP and TLS handshake with the member's server, every round.
    Kept, the poll's probe, the sync it queues and the next round's probe share one client
    and its keep-alive connections (for as long as the server keeps them).

    A client nobody used for `keep_seconds` is closed at the pool's next use, and so is the
    least recently used idle one beyond `most` kept; one whose server failed
    (CalendarUnavailable) is not handed out again, and is closed when its last user is done;
    `aclose` closes them all. Keyed by the whole account: a changed password opens a client
    of its own, and the old one ages out."""

    def __init__(
        self,
        open_account: OpenAccount,
        *,
        keep_seconds: float,
        most: int = KEPT_ACCOUNTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_account = open_account
        self._keep_seconds = keep_seconds
        self._most = most
        self._clock = clock
        self._kept: dict[Account, _Kept] = {}  # the least recently used first
        self._lock = asyncio.Lock()

    @property
    def kept(self) -> int:
        """Clients open now."""
        return len(self._kept)

    @asynccontextmanager
    async def __call__(self, account: Account) -> AsyncIterator[CalendarClient]:
        kept = await self._take(account)
        try:
            yield kept.client
        except CalendarUnavailable:
            kept.retired = True  # the next use starts afresh, with new connections
            raise
        finally:
            kept.users -= 1
            kept.used_at = self._clock()
            if self._kept.get(account) is kept:
                del self._kept[account]
                if not kept.retired:
                    self._kept[account] = kept  # the most recently used, last
            if kept.retired and kept.users == 0:
                await _close(kept)

    async def _take(self, account: Account) -> _Kept:
        async with self._lock:
            kept = self._kept.pop(account, None)
            if kept is None:
                closing = AsyncExitStack()
                client = await closing.enter_async_context(self._open_account(account))
                kept = _Kept(client, closing)
            self._kept[account] = kept  # the most recently used, last
            kept.users += 1
            await self._close_idle()
            return kept

    async def _close_idle(self) -> None:
        now = self._clock()
        idle = [(a, k) for a, k in self._kept.items() if k.users == 0]
        beyond = len(self._kept) - self._most
        for n, (account, kept) in enumerate(idle):
            if n < beyond or now - kept.used_at >= self._keep_seconds:
                del self._kept[account]
                await _close(kept)

    async def aclose(self) -> None:
        async with self._lock:
            kept, self._kept = list(self._kept.values()), {}
            for one in kept:
                await _close(one)


async def _close(kept: _Kept) -> None:
    try:
        await kept.closing.aclose()
    except Exception:  # a client that fails to close is still let go
        log.warning("a member's calendar client failed to close", exc_info=True)


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class KeptAnswers:
    """`resolve` with its answers kept for `keep_seconds`: every probe and sync of a member's
    own account checks its host's addresses, and without this each one would ask DNS again
    (the process has no cache of its own). A failure is not kept: the next check asks anew.
    At most `most` names are kept, the least recently asked going first."""

    def __init__(
        self,
        resolve: Resolve = system_resolve,
        *,
        keep_seconds: float = 60.0,
        most: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve, self._keep, self._most, self._clock = resolve, keep_seconds, most, clock
        self._kept: OrderedDict[tuple[str, int], tuple[float, Sequence[str]]] = OrderedDict()

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        key = (host, port)
        kept = self._kept.get(key)
        if kept is not None and self._clock() < kept[0]:
            self._kept.move_to_end(key)
            return kept[1]
        addresses = await self._resolve(host, port)
        self._kept[key] = (self._clock() + self._keep, addresses)
        self._kept.move_to_end(key)
        while len(self._kept) > self._most:
            self._kept.popitem(last=False)
        return addresses


def _non_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def literal_url_problem(url: str) -> str | None:
    """What is wrong with `url` as a member's calendar URL, judged without the network: not
    http(s), no host, or a host that is literally a non-public address or `localhost`.
    None when nothing is (yet) wrong.

    >>> literal_url_problem("https://dav.example.org/anna/") is None
    True
    >>> literal_url_problem("http://127.0.0.1:5232/anna/")
    'the host is not a public address'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "the URL must start with http:// or https://"
    host = parts.hostname
    if not host:
        return "the URL names no host"
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return "the host is not a public address"
    try:
        if _non_public(host):
            return "the host is not a public address"
    except ValueError:
        pass  # a name, not an address: resolved before each connection
    return None


async def check_public_url(url: str, resolve: Resolve = system_resolve) -> None:
    """Raise UnsafeCalendarUrl unless every address `url`'s host resolves to is public."""
    problem = literal_url_problem(url)
    if problem is not None:
        raise UnsafeCalendarUrl(problem)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise UnsafeCalendarUrl(f"the host does not resolve ({exc.strerror or exc})") from exc
    if not addresses or any(_non_public(a) for a in addresses):
        raise UnsafeCalendarUrl("the host resolves to a non-public address")


def external_collection(url: str, citizen_id: str) -> str:
    """The collection of one circle in a member's own calendar home:
    `external_collection("https://dav.example.org/cal/anna/", "c-1")` is
    "/cal/anna/carecal-c-1/"."""
    home = urlsplit(url).path or "/"
    return collection_path(f"{home.rstrip('/')}/{EXTERNAL_PREFIX}{quote(citizen_id, safe='')}/")


class Calendars:
    """Resolves a view to its server, collection and client (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        service: CalendarAccess | None,
        open_account: OpenAccount,
        resolve: Resolve | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self._open_account = open_account
        self._resolve = resolve or KeptAnswers(system_resolve)

    @property
    def polled_deliveries(self) -> tuple[Delivery, ...]:
        """Deliveries whose views no change hook announces: the worker polls them."""
        service_polled = self.service is not None and self.service.polled
        return ("hosted", "external") if service_polled else ("external",)

    @asynccontextmanager
    async def target(self, view: View, member: Member) -> AsyncIterator[Target]:
        """A client for `member`'s view, open for the block. Raises MissingCalendar (hosted,
        but this process has no service client), NoCollection or UnsafeCalendarUrl."""
        if member.calendar == "hosted":
            if self.service is None:
                raise MissingCalendar("this worker has no client for hosted calendars")
            service = self.service
            yield Target(service.client, service.collection(view), service.polled, HOSTED)
            return
        if member.calendar != "external" or member.external is None:
            raise NoCollection(f"calendar delivery {member.calendar!r} has no collection")
        async with self.external(view, member.external) as target:
            yield target

    @asynccontextmanager
    async def external(self, view: View, account: ExternalCalendar) -> AsyncIterator[Target]:
        """A client for `view`'s collection in a member's own `account`, open for the block
        (their current one, or one they left: `Tx.retired_calendars`). Raises
        UnsafeCalendarUrl for a non-public address the tenant does not allow."""
        tenant = self.settings.tenant(view.tenant_id)
        if tenant is None or not tenant.allow_private_calendar_urls:
            await check_public_url(account.url, self._resolve)
        async with self._open_account(
            Account(account.url, account.username, account.password)
        ) as client:
            collection = external_collection(account.url, view.citizen_id)
            try:
                yield Target(
                    client, collection, True, account_server(account.url, account.username)
                )
            except CalendarError as exc:
                raise _unnamed(exc) from None


def _unnamed(exc: CalendarError) -> CalendarError:
    """`exc` as it leaves a member's own account for the job's log: its kind and status, not
    its text, which names the account's path and server (often the member's e-mail address:
    Nextcloud's and SOGo's paths), nor the HTTP library's error chained to it."""
    status = f" (HTTP {exc.status})" if exc.status is not None else ""
    return type(exc)(
        f"{type(exc).__name__}{status} from the member's own calendar server",
        status=exc.status,
        preconditions=exc.preconditions,
    )
