"""The composition root: `create_app(settings, **overrides)` builds every adapter.

Nothing is opened at import. The lifespan opens the store (bringing an SQLite database up to
date when asked), starts the inbox writer and applier, starts the background worker when
asked, and on shutdown stops them, returns the worker's leased jobs to the queue and closes
the store. With `calendar.type = "embedded"` it also serves the embedded CalDAV server
(Radicale) at `/dav/`, with `/.well-known/caldav` pointing there, and hands the worker a
CalDAV client logged in to it as the service identity (`service_calendar`), so that it can sync
members' views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route

from plugin.config import CaldavCalendarSettings, EmbeddedCalendarSettings, Settings
from plugin.metrics import Metrics
from plugin.services.calendars import AccountClients, CalendarAccess, Calendars
from plugin.services.commands import HostCommand
from plugin.services.inbox import InboxApplier, InboxWriter
from plugin.services.ingest import ApplyResult
from plugin.services.ports import InboxEntry, Store
from plugin.web import api, links, ops, staff, webhooks
from plugin.web.middleware import RequestContextMiddleware
from plugin.web.problems import install_handlers
from plugin.web.schemas import parse_event
from plugin.worker import Worker

if TYPE_CHECKING:
    from adapters.caldav.embedded import EmbeddedCalDAV

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AppState(TypedDict):
    settings: Settings
    store: Store
    metrics: Metrics
    clock: Clock
    inbox: InboxWriter
    applier: InboxApplier
    calendar_server: EmbeddedCalDAV | None  # the embedded CalDAV server, when configured


def decode_entry(entry: InboxEntry) -> HostCommand:
    """Inbox bodies were validated before they were recorded; parse them again to apply."""
    return parse_event(entry.body).to_command(entry.tenant_id)


async def open_store(settings: Settings, *, migrate: bool) -> Store:
    from adapters.crypto import TenantCipher
    from adapters.store.migrate import upgrade
    from adapters.store.sql import SqlStore

    url = settings.database.url
    if migrate:
        await upgrade(url)
    cipher = TenantCipher({t.id: t.data_keys for t in settings.tenants})
    return await SqlStore.open(url, cipher=cipher)


def make_applier(
    store: Store,
    settings: Settings,
    *,
    metrics: Metrics,
    clock: Clock,
    defer_to: Callable[[], Awaitable[None]] | None = None,
) -> InboxApplier:
    def count(result: ApplyResult) -> None:
        metrics.webhooks_applied.labels(result.entry.event_type, result.outcome.value).inc()

    return InboxApplier(
        store,
        decode_entry,
        clock=clock,
        horizon=timedelta(weeks=settings.horizon_weeks),
        poll_seconds=settings.worker.poll_seconds,
        on_applied=count,
        defer_to=defer_to,
    )


def local_base_url(settings: Settings) -> str:
    """Where this process listens, for talking to itself: the embedded calendar server is
    reached on the loopback, not through `public_url` (which may be a proxy's address)."""
    host = settings.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


@contextlib.asynccontextmanager
async def service_calendar(
    settings: Settings, dav: EmbeddedCalDAV
) -> AsyncIterator[CalendarAccess]:
    """The view sync's way into the embedded server: a CalDAV client logged in as the
    service identity, open for the lifespan."""
    from adapters.caldav.client import CalDAVClient, CalDAVSettings
    from adapters.caldav.embedded import MOUNT_PATH

    client = CalDAVClient(
        CalDAVSettings(
            f"{local_base_url(settings)}{MOUNT_PATH}/",
            dav.service.username,
            dav.service.password,
            server="radicale",
        )
    )
    async with client:
        yield CalendarAccess(client, MOUNT_PATH)


@contextlib.asynccontextmanager
async def open_calendars(
    settings: Settings, service: CalendarAccess | None
) -> AsyncIterator[Calendars]:
    """The worker's calendar resolver, open for the block: `service` for hosted views, and
    clients for members' own accounts, kept open from one poll round to the next."""
    from adapters.caldav.accounts import open_account

    keep = 2 * settings.calendar.poll_interval_seconds
    accounts = AccountClients(open_account, keep_seconds=keep)
    try:
        yield Calendars(settings, service=service, open_account=accounts)
    finally:
        await accounts.aclose()


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    run_worker: bool = False,
    auto_migrate: bool = False,
) -> Starlette:
    """Build the ASGI app.

    `store`: an already open store (tests pass a MemoryStore or a shared SqlStore; it is not
    closed by the app). Otherwise the lifespan opens the configured database, running the
    migrations first when `auto_migrate` is set (what `carecal serve` does for SQLite).
    """
    app_metrics = metrics or Metrics()
    dav: EmbeddedCalDAV | None = None
    if isinstance(settings.calendar, EmbeddedCalendarSettings):
        from adapters.caldav.embedded import MOUNT_PATH, EmbeddedCalDAV

        dav = EmbeddedCalDAV(settings.calendar, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        owned = store is None
        active = store if store is not None else await open_store(settings, migrate=auto_migrate)
        inbox = InboxWriter(active)
        applier = make_applier(
            active, settings, metrics=app_metrics, clock=clock, defer_to=inbox.wait_idle
        )
        inbox.on_accepted = applier.notify
        applier_task = asyncio.create_task(applier.run(), name="carecal-inbox-applier")
        try:
            async with contextlib.AsyncExitStack() as stack:
                service: CalendarAccess | None = None
                if dav is not None:
                    await stack.enter_async_context(dav.running(active))
                    service = await stack.enter_async_context(service_calendar(settings, dav))
                elif isinstance(settings.calendar, CaldavCalendarSettings):
                    from adapters.caldav.accounts import municipal_calendar

                    service = await stack.enter_async_context(municipal_calendar(settings.calendar))
                if run_worker:
                    from adapters.host.events import open_event_sender

                    # Started after the calendar server and stopped before it (the exit stack
                    # unwinds in reverse), so a job in hand can finish its writes; likewise
                    # the HTTP client that delivers events to the hosts.
                    host_events = await stack.enter_async_context(
                        open_event_sender(settings.outbox, hosts=len(settings.tenants))
                    )
                    resolver = await stack.enter_async_context(open_calendars(settings, service))
                    worker = Worker(
                        active,
                        settings,
                        metrics=app_metrics,
                        clock=clock,
                        calendars=resolver,
                        host_events=host_events,
                    )
                    worker_task = asyncio.create_task(worker.run(), name="carecal-worker")
                    stack.push_async_callback(worker.stop, worker_task)
                yield AppState(
                    settings=settings,
                    store=active,
                    metrics=app_metrics,
                    clock=clock,
                    inbox=inbox,
                    applier=applier,
                    calendar_server=dav,
                )
        finally:
            # Requests are finished by now (uvicorn drains them before the lifespan ends).
            await inbox.close()
            applier.stop()
            await applier_task
            if owned:
                await active.close()

    webhook_route = Route("/webhooks/{tenant}", webhooks.receive, methods=["POST"], name="webhook")
    routes: list[BaseRoute] = [
        webhook_route,
        Mount("/api/v1", routes=api.routes()),
        *ops.routes(),
        *links.routes(),  # a member's claim pages and feed, by token
        *staff.routes(),  # the staff dashboard
    ]
    if dav is not None:
        # RFC 6764 section 5. The response itself is the endpoint: a plain ASGI app takes
        # every method, and calendar apps PROPFIND here as often as they GET.
        well_known = RedirectResponse(f"{settings.server.public_url}{MOUNT_PATH}/", status_code=301)
        routes += [
            Route("/.well-known/caldav", well_known, name="well_known_caldav"),
            Mount(MOUNT_PATH, app=dav, name="dav"),
        ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(webhooks.DirectWebhooks, route=webhook_route),  # the hot path
        ],
        lifespan=lifespan,
    )
    install_handlers(app)
    return app
