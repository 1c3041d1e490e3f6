"""The composition root: `create_app(settings, **overrides)` builds every adapter.

Nothing is opened at import. The lifespan opens the store (bringing an SQLite database up to
date when asked), starts the inbox writer and applier, starts the background worker when
asked, and on shutdown stops them, returns the worker's leased jobs to the queue and closes
the store. With `calendar.type = "embedded"` it also serves the embedded CalDAV server
(Radicale) at `/dav/`, with `/.well-known/caldav` pointing there.
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

from plugin.config import EmbeddedCalendarSettings, Settings
from plugin.metrics import Metrics
from plugin.services.commands import HostCommand
from plugin.services.inbox import InboxApplier, InboxWriter
from plugin.services.ingest import ApplyResult
from plugin.services.ports import InboxEntry, Store
from plugin.web import api, ops, webhooks
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
        worker: Worker | None = None
        worker_task: asyncio.Task[None] | None = None
        if run_worker:
            worker = Worker(active, settings, metrics=app_metrics, clock=clock)
            worker_task = asyncio.create_task(worker.run(), name="carecal-worker")
        try:
            async with contextlib.AsyncExitStack() as stack:
                if dav is not None:
                    await stack.enter_async_context(dav.running(active))
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
            if worker is not None and worker_task is not None:
                await worker.stop(worker_task)
            if owned:
                await active.close()

    routes: list[BaseRoute] = [
        Route("/webhooks/{tenant}", webhooks.receive, methods=["POST"], name="webhook"),
        Mount("/api/v1", routes=api.routes()),
        *ops.routes(),
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
        middleware=[Middleware(RequestContextMiddleware)],
        lifespan=lifespan,
    )
    install_handlers(app)
    return app
