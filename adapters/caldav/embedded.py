"""The embedded CalDAV server: Radicale's WSGI app at `/dav`, its auth, rights and hook
backed by carecal's store.

    dav = EmbeddedCalDAV(settings.calendar, clock=utc_now)
    Mount("/dav", app=dav)                      # at create_app time; answers 503 until started
    async with dav.running(store):              # in the lifespan
        ...

Radicale runs its plugins synchronously, in the WSGI worker threads of `a2wsgi`; the store is
async and bound to the app's event loop. The bridge is `asyncio.run_coroutine_threadsafe` onto
that loop: a plugin submits one small store call and blocks its own worker thread (never the
loop) until it is done. So every login sees the store as it is — a re-issued password stops the
old one at once, in every instance sharing the database — and no cache has to be kept in step.
What would make that costly is the slow hash, so a password once verified against a given stored
hash is remembered (keyed by that hash, as an HMAC under a per-process key): issuing a new
password changes the stored hash, and the remembered entry no longer matches anything.

Identities:
    member    `<tenant>~<member>` (see plugin.services.calendar_access), password issued by the
              API, reads and writes only under `/<username>/`
    service   `carecal`, a random password made per process and kept in memory only; carecal's
              own view sync uses it to write into every member's home

Request bodies are limited to `MAX_BODY_BYTES` here, before Radicale sees them: Radicale checks
its own `server.max_content_length` only in its built-in server, never as a WSGI app, so it would
store a member's object of up to `max_resource_size` (10 MB), which every sync that reads the
copy would then download and hold in memory whole.

Radicale's `auth.delay` (a sleep of about a second on every 401/403) is 0: passwords are 256-bit
random tokens that cannot be guessed, and sleeping would hold one of the few WSGI threads, so a
stream of bad logins could starve the real members. So is `server.delay_on_error` (the same
sleep after a 5xx), and for the same reason a request's body is read here, on the event loop,
within `BODY_SECONDS`, before a thread is taken (Radicale reads it blocking). A malformed Basic
header is answered 401 here (Radicale would fail with a 500); a member's home is never deleted
or moved (it holds their views); a MOVE between a member's calendars queues both calendars'
syncs, as the hook does for a PUT or a DELETE.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import posixpath
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import radicale.config
from a2wsgi import WSGIMiddleware
from radicale.app import Application as RadicaleApplication
from radicale.pathutils import sanitize_path
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from plugin.config import EmbeddedCalendarSettings
from plugin.services.calendar_access import verify_password
from plugin.services.calendars import MEMBER_WRITE, view_job_key
from plugin.services.ports import Store, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

MOUNT_PATH = "/dav"  # where create_app mounts the server; hrefs clients see start with it
SERVICE_USER = "carecal"  # never a member username: those always contain "~"
VIEW_SYNC = "view.sync"
STORE_TIMEOUT_SECONDS = 10.0
# A member's write whose sync could not be queued (the store did not answer) is tried again
# this often while the server runs.
REQUEUE_SECONDS = 1.0
# Four times view_sync.MAX_MEMBER_BYTES (256 KiB, the largest member copy the sync reads): a
# copy it still reads, merged with ours on the way back, always fits; a larger one the sync
# reads at most once (then replaces it). Calendar-multiget bodies (hrefs) stay far below it.
MAX_BODY_BYTES = 1024 * 1024
# How long a request body may take to arrive. It is read here, on the event loop, before a WSGI
# thread is taken: Radicale reads it blocking, so a few members' apps (or one member's script)
# sending bodies slowly would otherwise hold every thread, and everyone's calendar with them.
BODY_SECONDS = 15.0
WSGI_THREADS = 10
VERIFIED_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"ServiceIdentity(username={self.username!r}, password='***')"


@dataclass(frozen=True, slots=True)
class Login:
    """Who a Radicale user name stands for."""

    username: str
    tenant_id: str | None  # None for the service identity
    member_id: str | None


class EmbeddedCalDAV:
    """The ASGI app mounted at `/dav`, and the bridge its Radicale plugins call."""

    def __init__(
        self, settings: EmbeddedCalendarSettings, *, clock: Callable[[], datetime]
    ) -> None:
        self._settings = settings
        self._clock = clock
        self.service = ServiceIdentity(SERVICE_USER, secrets.token_urlsafe(32))
        self._store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asgi: WSGIMiddleware | None = None
        self._verified: dict[str, bytes] = {}  # stored hash -> HMAC of the password
        self._verified_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # collection -> (actor, change) of members' writes whose sync is still to be queued
        self._unqueued: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:  # Radicale may log its configuration, which holds us
        return f"EmbeddedCalDAV(folder={str(self._settings.folder)!r})"

    @contextlib.asynccontextmanager
    async def running(self, store: Store) -> AsyncIterator[None]:
        self._store = store
        self._loop = asyncio.get_running_loop()
        self._settings.folder.mkdir(parents=True, exist_ok=True)
        wsgi = WSGIMiddleware(_Radicale(self._radicale_config()), workers=WSGI_THREADS)
        self._asgi = wsgi
        requeue = asyncio.create_task(self._requeue_loop(store), name="carecal-dav-requeue")
        try:
            yield
        finally:
            self._asgi = None
            await asyncio.to_thread(wsgi.executor.shutdown, wait=True)
            requeue.cancel()
            await asyncio.gather(requeue, return_exceptions=True)
            # What is still unqueued is found at the next start (`worker.renew_views`).
            self._store = None
            self._loop = None

    async def _requeue_loop(self, store: Store) -> None:
        """Queue the syncs that members' writes could not queue when they were made."""
        while True:
            await asyncio.sleep(REQUEUE_SECONDS)
            with self._lock:
                waiting, self._unqueued = self._unqueued, {}
            for collection, (actor, change) in waiting.items():
                try:
                    await self._queue_sync(store, actor, collection, change)
                except StoreError:
                    with self._lock:
                        self._unqueued.setdefault(collection, (actor, change))
                except Exception:
                    # Not the store's absence: trying again every second would not help. The
                    # next start finds the write (`worker.renew_views`); the loop goes on.
                    log.exception("could not queue a view sync", extra={"collection": collection})
                else:
                    log.info("queued a view sync at last", extra={"collection": collection})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._asgi is None:
            await PlainTextResponse("The calendar server is not running.", 503)(
                scope, receive, send
            )
            return
        length = _content_length(scope)
        if length > MAX_BODY_BYTES:
            log.info("calendar request body too large", extra={"content_length": length})
            await PlainTextResponse(f"The limit is {MAX_BODY_BYTES} bytes.", 413)(
                scope, receive, send
            )
            return
        user = _basic_user(scope)
        if user is None:  # Radicale would answer a malformed header with a 500
            await PlainTextResponse(
                "Malformed Authorization header.",
                401,
                headers={"WWW-Authenticate": 'Basic realm="carecal"'},
            )(scope, receive, send)
            return
        if scope.get("method") in ("DELETE", "MOVE") and user and _is_home(scope, user):
            # A member's home holds their views: deleting or moving it would take every view
            # with it, and no change hook would tell carecal.
            await PlainTextResponse("A calendar home cannot be deleted or moved.", 403)(
                scope, receive, send
            )
            return
        if length:
            try:
                body = await asyncio.wait_for(_read_body(receive), BODY_SECONDS)
            except TimeoutError:
                log.info("calendar request body too slow", extra={"content_length": length})
                await PlainTextResponse("The request body did not arrive in time.", 408)(
                    scope, receive, send
                )
                return
            except _Disconnected:
                return
            receive = _replaying(body, receive)
        # a2wsgi types the ASGI triple more narrowly than Starlette; the values are the same.
        await self._asgi(cast(Any, scope), cast(Any, receive), cast(Any, send))

    def _radicale_config(self) -> radicale.config.Configuration:
        configuration = radicale.config.load()  # defaults only: no files are read
        plugin = {"carecal": self}  # a plugin section with a module `type` takes extra options
        configuration.update(
            {
                "storage": {"filesystem_folder": str(self._settings.folder)},
                "auth": {"type": "adapters.caldav.radicale_auth", "delay": "0", **plugin},
                # Radicale sleeps a second after every 5xx by default, holding a WSGI thread:
                # a stream of bad requests (malformed XML) would starve the real members.
                "server": {"delay_on_error": "0"},
                # A PUT of a whole calendar to a view's own path would replace it unseen (no
                # change hook): members write objects only.
                "rights": {
                    "type": "adapters.caldav.radicale_rights",
                    "permit_overwrite_collection": "False",
                    **plugin,
                },
                "hook": {"type": "adapters.caldav.radicale_hook", **plugin},
                "web": {"type": "none"},
            },
            "carecal",
        )
        return configuration

    # called from Radicale's worker threads

    def _call(self, make: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        store, loop = self._store, self._loop
        if store is None or loop is None:
            raise StoreError("the calendar server is not running")
        future = asyncio.run_coroutine_threadsafe(make(store), loop)
        try:
            return future.result(timeout=STORE_TIMEOUT_SECONDS)
        except FutureTimeout:
            future.cancel()
            raise StoreError("the store did not answer in time") from None

    def login(self, username: str, password: str) -> Login | None:
        """The identity behind (username, password), or None. Never logs the password."""
        if hmac.compare_digest(username.encode(), self.service.username.encode()):
            ok = hmac.compare_digest(password.encode(), self.service.password.encode())
            return Login(username, None, None) if ok else None
        if "~" not in username:
            return None

        async def lookup(store: Store) -> Any:
            async with store.transaction() as tx:
                return await tx.get_calendar_credential(username)

        try:
            credential = self._call(lookup)
        except StoreError:
            log.warning("caldav login could not reach the store", extra={"username": username})
            return None
        if credential is None or credential.revoked_at is not None:
            return None
        if not self._verify(password, credential.password_hash):
            return None
        return Login(username, credential.tenant_id, credential.member_id)

    def _verify(self, password: str, stored_hash: str) -> bool:
        mac = hmac.new(self._verified_key, password.encode(), hashlib.sha256).digest()
        with self._lock:
            remembered = self._verified.get(stored_hash)
        if remembered is not None and hmac.compare_digest(remembered, mac):
            return True
        if not verify_password(password, stored_hash):
            return False
        with self._lock:
            if len(self._verified) >= VERIFIED_CACHE_MAX:
                self._verified.clear()
            self._verified[stored_hash] = mac
        return True

    def authorization(self, user: str, path: str) -> str:
        """Radicale rights letters for `user` on the sanitised `path` ("/", "/u/", "/u/c/")."""
        if not user:
            return ""
        if user == self.service.username:
            return "RWrw"
        parts = path.strip("/").split("/") if path.strip("/") else []
        if not parts:
            return "R"  # the root: discovery (current-user-principal) starts here
        if parts[0] != user:
            return ""
        if len(parts) == 1:
            return "RW"  # the member's home: list and create calendars
        if len(parts) == 2:
            return "rw"  # a calendar: its objects
        return ""

    def member_wrote(self, actor: str, collection: str, change: str) -> None:
        """A member created, changed or deleted an object of `collection` ("u/cal"): queue a
        `view.sync` of that collection now, durably (the job is in the store when this
        returns). Writes by the service identity are carecal's own and queue nothing."""
        if not actor or actor == self.service.username or "~" not in actor:
            return
        user, _, name = collection.partition("/")
        if user != actor or not name:
            return  # rights keep members inside their home; nothing else is a view
        try:
            self._call(lambda store: self._queue_sync(store, actor, collection, change))
        except StoreError:
            # The object is stored already: the sync is queued again every REQUEUE_SECONDS
            # until the store answers (and, should carecal stop first, at the next start:
            # `worker.renew_views`).
            log.exception(
                "could not queue a view sync; trying again", extra={"collection": collection}
            )
            with self._lock:
                self._unqueued[collection] = (actor, change)

    async def _queue_sync(self, store: Store, actor: str, collection: str, change: str) -> None:
        _, _, name = collection.partition("/")
        async with store.transaction() as tx:
            credential = await tx.get_calendar_credential(actor)
            if credential is None:
                return
            path = f"{MOUNT_PATH}/{collection}/"  # the href a CalDAV client uses
            await tx.enqueue_job(
                credential.tenant_id,
                VIEW_SYNC,
                {
                    "member_id": credential.member_id,
                    "username": actor,
                    "collection": path,
                    "reason": MEMBER_WRITE,
                    "change": change,
                },
                run_at=self._clock(),
                # The key `enqueue_view_syncs` uses for this view (`View.job_key`): a member's
                # write and a host change queued together sync the view once.
                key=view_job_key(unquote(name.rstrip("/")), credential.member_id),
            )


class _Radicale(RadicaleApplication):
    """Radicale, with its PROPFIND answered wholly under the storage read lock.

    Radicale 3.9 releases the lock before it renders a PROPFIND's properties, and a collection's
    getetag/getctag reads every item file then: a DELETE in between (a view sync removing a
    moved occurrence) made the listing fail with 500 (`FileNotFoundError` in `get_all`). The
    lock is a shared one (flock, per open file), so taking it again inside Radicale's own
    handler neither blocks other readers nor deadlocks.
    """

    def do_PROPFIND(
        self, environ: Any, base_prefix: str, path: str, user: str, *args: Any, **kwargs: Any
    ) -> Any:
        with self._storage.acquire_lock("r", user):
            return super().do_PROPFIND(environ, base_prefix, path, user, *args, **kwargs)

    def do_MOVE(
        self, environ: Any, base_prefix: str, path: str, user: str, *args: Any, **kwargs: Any
    ) -> Any:
        """A member's app moving an object between their calendars (Radicale 3.9 tells its
        hook nothing of a MOVE): both collections' syncs are queued, as for a PUT and a
        DELETE."""
        answer = super().do_MOVE(environ, base_prefix, path, user, *args, **kwargs)
        if answer[0] in (200, 201, 204):
            to = sanitize_path(urlsplit(unquote(environ.get("HTTP_DESTINATION", ""))).path)
            if base_prefix and (to + "/").startswith(base_prefix + "/"):
                to = to[len(base_prefix) :]
            dav = embedded_of(self.configuration, "hook")
            for moved in dict.fromkeys((path, to)):
                collection = posixpath.dirname(moved.strip("/"))
                if collection:
                    dav.member_wrote(user, collection, "move")
        return answer


def _content_length(scope: Scope) -> int:
    """The declared body length (0 without one). A body sent without a Content-Length never
    reaches Radicale, which reads exactly CONTENT_LENGTH bytes; the HTTP server has refused a
    malformed header already."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            return bytes(value)
    return None


def _basic_user(scope: Scope) -> str | None:
    """The user name of a Basic Authorization header, "" without one (or another scheme), None
    when it is malformed (not base64, or no colon)."""
    header = _header(scope, b"authorization")
    if header is None:
        return ""
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return ""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, _ = decoded.partition(":")
    return user if colon else None


def _is_home(scope: Scope, user: str) -> bool:
    """Whether the request's path, as Radicale reads it, is `user`'s own home `/<user>/`."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    relative = path[len(root) :] if root and path.startswith(root) else path
    return sanitize_path(unquote(relative)).strip("/") == user


class _Disconnected(Exception):
    """The client went away before its request body had arrived."""


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:  # longer than it said: Radicale reads what it said
            chunks.append(chunk[: len(chunk) - (size - MAX_BODY_BYTES)])
            return b"".join(chunks)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` with `body` read already: handed over whole, then the client's own messages
    (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def embedded_of(configuration: Any, section: str) -> EmbeddedCalDAV:
    """The bridge a Radicale plugin was configured with (see `_radicale_config`)."""
    found = configuration.get(section, "carecal")
    if not isinstance(found, EmbeddedCalDAV):
        raise RuntimeError(f"the {section} plugin needs carecal's embedded CalDAV server")
    return found
