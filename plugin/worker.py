"""The background worker: leases jobs from the store and runs their handlers.

Jobs are written in the same transaction as the change that causes them, so a crash between a
change and its follow-up work loses nothing: the job is still queued, or its lease expires and
another worker takes it. On shutdown the worker finishes the job in hand and returns the rest
of its leased batch to the queue.

Job kinds and their handlers:

    view.sync         sync one member's calendar view of one circle (`services.view_sync`)
    member.withdraw   delete a removed member's calendar collection of that circle
    member.left_hosted, member.left_account
                      delete the collection in a calendar they left (hosted, or their own
                      account); a kind each, so that none is folded into another's job

Both need the calendar resolver (`calendars`, given by the composition root: a client for
the server of hosted views, and a way to log in to members' own accounts); a worker without
one leaves such jobs queued for one that has it.

Jobs run concurrently, at most `worker.concurrency` at once, each leased as a slot frees up,
so a member's slow or dead calendar server holds up only their own view.

Besides jobs, in a loop of its own (a long round over a large tenant never stops jobs from
starting), the worker extends every recurring task to the horizon as time passes, once at
start and then every `worker.horizon_refresh_seconds` (idempotent, so several workers doing it
is harmless), and queues a sync of the views of each task that gained occurrences; with it,
a sync of each view that no poll visits and that was last synced on an earlier day (its
copies move with the days: `renew_views`), and at start of every such view (a member's write
whose hook was lost to a crash). Every
`calendar.poll_interval_seconds` it queues a sync of each view that no change hook announces
(members' own accounts; every view on the municipality's server): the poll. Several workers
on one database poll each round once between them: the one whose `Store.claim_round` finds
the round due runs it (each polling would ask every server as many times a round).

Given an `EventSender` (`host_events`), the worker also delivers the outbox to the hosts, in a
loop of its own beside the jobs (`services.delivery`); and every
`escalation.interval_seconds` it sends `task.unfilled` for occurrences with free slots at
their claim deadline, once (`services.escalation`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from plugin.config import Settings
from plugin.domain.model import Delivery, TaskStatus
from plugin.metrics import Metrics
from plugin.services.calendar_port import CalendarUnavailable, Probe
from plugin.services.calendars import MEMBER_WRITE, Calendars, MissingCalendar, View
from plugin.services.delivery import OutboxDelivery
from plugin.services.escalation import escalate_unfilled
from plugin.services.ingest import (
    JOB_LEFT_ACCOUNT,
    JOB_LEFT_HOSTED,
    JOB_MEMBER_WITHDRAW,
    materialise,
)
from plugin.services.ports import EventSender, Job, KeyedJob, Store, StoreError
from plugin.services.view_sync import (
    JOB_VIEW_SYNC,
    POLL_RESULTS,
    enqueue_view_syncs,
    poll_round,
    probe_of_job,
    sync_view,
    view_of_job,
    view_sync_job,
    withdraw_retired,
    withdraw_view,
)

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=15)
RENEW_BATCH = 500  # views queued per transaction by `renew_views` (the writer stays free)
RENEWED_AT_START = "start"  # the reason of the view syncs `renew_views` queues at start
PURGE_INTERVAL = timedelta(hours=1)  # how often finished work is swept (`purge_when_due`)
POLL_ROUND = "calendar-poll"  # `Store.claim_round`: one instance polls each round
HOUSEKEEPING_GRACE = 5.0  # seconds `stop` waits for a housekeeping step before cutting it
# A job whose kind this version cannot handle waits this long between tries, so that an
# upgrade that brings its handler finds it still queued.
UNHANDLED_RETRY = timedelta(minutes=10)
JOB_DEADLINE_SHARE = 0.8  # of `worker.lease_seconds`: the longest a job may run


@dataclass(frozen=True, slots=True)
class JobContext:
    store: Store
    settings: Settings
    now: datetime
    calendars: Calendars | None = None


Handler = Callable[[Job, JobContext], Awaitable[None]]


async def extend_horizons(
    store: Store, settings: Settings, *, now: datetime, stopping: asyncio.Event | None = None
) -> int:
    """Expand every recurring task up to `now + horizon`; returns how many were looked at.
    One transaction per task keeps the single SQLite writer free for webhooks meanwhile.
    `stopping` set: the roll ends before the next task (the next roll does the rest)."""
    horizon = timedelta(weeks=settings.horizon_weeks)
    count = 0
    for tenant in settings.tenants:
        async with store.reading() as tx:
            recurring = await tx.list_recurring_tasks(tenant.id)
        for listed in recurring:
            if stopping is not None and stopping.is_set():
                return count
            async with store.transaction() as tx:
                # The task as it is now, and no one else writing it until this commits: the
                # host may have changed or cancelled it since the list was read (another
                # instance's applier), and expanding the listed version would undo that.
                task = await tx.lock_task(tenant.id, listed.id)
                if task is None or task.status is not TaskStatus.ACTIVE or task.recurrence is None:
                    continue
                # New occurrences enter the members' calendars (deduplicated per view); a
                # task whose horizon brought none queues nothing.
                if await materialise(tx, task, now=now, horizon=horizon):
                    circle = await tx.get_circle(tenant.id, task.citizen_id)
                    if circle is not None:
                        await enqueue_view_syncs(tx, tenant.id, circle, now=now)
            count += 1
    return count


async def renew_views(
    store: Store,
    settings: Settings,
    deliveries: Collection[Delivery],
    *,
    now: datetime,
    every: bool = False,
    stopping: asyncio.Event | None = None,
) -> int:
    """Queue a sync of each view of `deliveries` last synced on an earlier day (UTC); returns
    how many. A view's copies move with the days (the window, the fairness advice: see
    `view_sync._idle`), and one that nothing else touches would go on showing yesterday's. The
    poll finds these itself among the views it visits; this is for the others (the embedded
    server's, whose hook announces members' writes). Routine syncs: spread over
    `view_sync.ROUTINE_SPREAD`, after members' changes.

    `every`: each view synced before, whatever the day (at start: a member's write that the
    server stored while carecal stopped before its hook queued the sync, a crash or a kill,
    is in the collection and no job knows of it; the sync finds it)."""
    today = now.astimezone(UTC).date()
    reason = RENEWED_AT_START if every else "new day"
    count = 0
    for tenant in settings.tenants:
        async with store.reading() as tx:
            peeks = await tx.peek_views(tenant.id, list(deliveries))
        stale = [
            View(tenant.id, peek.member.id, peek.citizen_id)
            for peek in peeks
            if peek.state is not None
            and (every or peek.state.synced_at.astimezone(UTC).date() < today)
        ]
        for start in range(0, len(stale), RENEW_BATCH):
            if stopping is not None and stopping.is_set():
                return count
            jobs = [
                view_sync_job(view, now=now, reason=reason, routine=True)
                for view in stale[start : start + RENEW_BATCH]
            ]
            async with store.transaction() as tx:
                await tx.enqueue_keyed_jobs(tenant.id, JOB_VIEW_SYNC, jobs)
        count += len(stale)
    return count


async def poll_views(
    store: Store, settings: Settings, calendars: Calendars, *, now: datetime
) -> dict[str, int]:
    """Poll every view no change hook announces (`view_sync.poll_round`) and queue a sync of
    each one with something to do as soon as its probe finds it, with that probe; returns
    how many views the round found each way (`POLL_RESULTS`; "due" were queued). An idle
    view costs one small read and one PROPFIND, and no job."""
    deliveries = calendars.polled_deliveries
    tally = dict.fromkeys(POLL_RESULTS, 0)
    for tenant in settings.tenants:
        async with store.reading() as tx:
            listed = await tx.list_member_views(tenant.id, deliveries)
        views = [View(tenant.id, member_id, citizen_id) for member_id, citizen_id in listed]

        async def queue(view: View, probe: Probe | None, routine: bool) -> None:
            # As soon as its probe answers, not after the round's slowest one. Shielded:
            # `stop` cuts the round short, never this transaction (see `POLL_ROUND`'s claim).
            job = view_sync_job(view, now=now, reason="poll", probe=probe, routine=routine)
            await asyncio.shield(_enqueue(store, view.tenant_id, job))

        await poll_round(
            store,
            calendars,
            views,
            now=now,
            concurrency=settings.worker.concurrency,
            on_due=queue,
            budget=settings.calendar.poll_interval_seconds,
            tally=tally,
        )
    return tally


async def _enqueue(store: Store, tenant_id: str, job: KeyedJob) -> None:
    async with store.transaction() as tx:
        await tx.enqueue_keyed_jobs(tenant_id, JOB_VIEW_SYNC, [job])


def _calendars(ctx: JobContext) -> Calendars:
    if ctx.calendars is None:
        raise MissingCalendar("this worker has no calendar server")
    return ctx.calendars


async def handle_view_sync(job: Job, ctx: JobContext) -> None:
    view = view_of_job(job.tenant_id, job.payload)
    if view is None:
        log.warning("view.sync job names no view", extra={"job_id": job.id})
        return
    # The poll's probe saves the run a PROPFIND; a retry reads the collection afresh.
    probe = probe_of_job(job.payload) if job.attempts == 0 else None
    # At start every embedded view is synced, and nearly all are as the last run left them.
    likely_idle = job.payload.get("reason") == RENEWED_AT_START
    await sync_view(
        ctx.store,
        _calendars(ctx),
        ctx.settings,
        view,
        now=ctx.now,
        probe=probe,
        likely_idle=likely_idle,
        # The embedded server's hook: the member wrote, so the delta is worth asking first.
        member_wrote=job.payload.get("reason") == MEMBER_WRITE,
    )


async def handle_member_withdraw(job: Job, ctx: JobContext) -> None:
    """A removal (`member.withdraw`), or the copy in a calendar the member left. A
    `member.withdraw` job with a payload "was" (queued before the kinds were apart) says
    which calendar they left."""
    member_id, citizen_id = job.payload.get("member_id"), job.payload.get("citizen_id")
    if not isinstance(member_id, str) or not isinstance(citizen_id, str):
        log.warning("withdraw job names no view", extra={"job_id": job.id, "kind": job.kind})
        return
    view = View(job.tenant_id, member_id, citizen_id)
    was = {JOB_LEFT_HOSTED: "hosted", JOB_LEFT_ACCOUNT: "external"}.get(
        job.kind, job.payload.get("was")
    )
    last_try = job.attempts + 1 >= ctx.settings.worker.max_attempts
    if was == "external":
        await withdraw_retired(ctx.store, _calendars(ctx), view, last_try=last_try)
        return
    calendars = _calendars(ctx)
    await withdraw_view(ctx.store, calendars, view, was_hosted=was == "hosted", last_try=last_try)


DEFAULT_HANDLERS: Mapping[str, Handler] = {}
CALENDAR_HANDLERS: Mapping[str, Handler] = {
    JOB_VIEW_SYNC: handle_view_sync,
    JOB_MEMBER_WITHDRAW: handle_member_withdraw,
    JOB_LEFT_HOSTED: handle_member_withdraw,
    JOB_LEFT_ACCOUNT: handle_member_withdraw,
}


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with full jitter: 1 s, 2 s, 4 s … capped at 15 minutes."""
    ceiling = min(MAX_BACKOFF.total_seconds(), 2.0 ** max(0, attempts))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


class Worker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        metrics: Metrics,
        clock: Callable[[], datetime],
        handlers: Mapping[str, Handler] | None = None,
        calendars: Calendars | None = None,
        host_events: EventSender | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.calendars = calendars
        if handlers is None:
            handlers = {**DEFAULT_HANDLERS, **(CALENDAR_HANDLERS if calendars is not None else {})}
        self.handlers = handlers
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stopping = asyncio.Event()
        self._horizons_due: datetime | None = None  # now: extend at start
        self._renewed_all = False  # every embedded view is renewed once, at start
        # Events to the host: their own loop beside the jobs (`services.delivery`), so that a
        # slow host never holds up calendar syncs; escalation sweeps run between job batches.
        self.delivery = (
            None
            if host_events is None
            else OutboxDelivery(store, host_events, settings, metrics=metrics, clock=clock)
        )
        self._delivery_task: asyncio.Task[None] | None = None
        self._escalation_due: datetime | None = None  # now: sweep at start
        self._poll_due: datetime | None = None  # now: poll at start
        self._purge_due: datetime | None = None  # now: purge at start
        self._running = asyncio.Semaphore(settings.worker.concurrency)  # run_once's
        self._jobs: set[asyncio.Task[None]] = set()  # run()'s jobs in hand
        self._slot_freed = asyncio.Event()
        self._crash: BaseException | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Until stop(): jobs leased as slots free up (one slow job, say a member's server
        that never answers, takes one slot, not the worker). Beside it, each in a loop of its
        own: housekeeping when due (the horizon's roll, escalation, the purge: a long roll
        over a large tenant does not stop jobs from starting), the poll of members'
        calendars, and the delivery of events to the host."""
        log.info("worker started", extra={"worker": self.name})
        if self.delivery is not None and self._delivery_task is None:
            self._delivery_task = asyncio.create_task(
                self.delivery.run(self._stopping), name="carecal-outbox"
            )
        if self.calendars is not None and self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll_loop(), name="carecal-poll")
        if self._housekeeping_task is None:
            self._housekeeping_task = asyncio.create_task(
                self._housekeeping_loop(), name="carecal-housekeeping"
            )
        try:
            while not self._stopping.is_set():
                self._raise_crash()
                try:
                    self._slot_freed.clear()  # a job ending from here on wakes _wait
                    leased = await self._lease_into_free_slots()
                except StoreError:
                    log.exception("worker cannot reach the store; retrying")
                    leased = 0
                if leased == 0:
                    await self._wait(self.settings.worker.poll_seconds)
        finally:
            # The jobs in hand finish; nothing new starts (none is leased but to run at once).
            if self._jobs:
                await asyncio.gather(*self._jobs, return_exceptions=True)
        self._raise_crash()

    async def _lease_into_free_slots(self) -> int:
        """Lease as many due jobs as there are free slots (at most `batch_size`) and start
        them; returns how many were leased."""
        cfg = self.settings.worker
        free = min(cfg.batch_size, cfg.concurrency - len(self._jobs))
        if free <= 0:
            return 0
        jobs = await self.store.lease_jobs(
            self.name, now=self.clock(), limit=free, lease_seconds=cfg.lease_seconds
        )
        for job in jobs:
            task = asyncio.create_task(self._execute(job), name=f"carecal-job-{job.id}")
            self._jobs.add(task)
            task.add_done_callback(self._job_ended)
        return len(jobs)

    def _job_ended(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._slot_freed.set()
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, StoreError):
            # Its outcome could not be recorded: the lease runs out and the job runs again.
            log.error("worker cannot record a job's outcome", exc_info=exc)
        elif exc is not None and self._crash is None:
            self._crash = exc  # a bug: the loop re-raises it, and the process exits loudly

    def _raise_crash(self) -> None:
        if self._crash is not None:
            raise self._crash

    async def _wait(self, seconds: float) -> None:
        """Until stop(), a job ends (its slot is free: lease again), or `seconds` pass."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        freed = asyncio.ensure_future(self._slot_freed.wait())
        try:
            await asyncio.wait(
                {stopping, freed}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            freed.cancel()

    async def _rest(self) -> None:
        """Until stop() or `worker.poll_seconds` pass: between rounds of the side loops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.worker.poll_seconds)
        except TimeoutError:
            pass

    async def _housekeeping_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.extend_horizons_when_due()
                await self.escalate_when_due()
                await self.purge_when_due()
            except StoreError:
                log.exception("worker cannot reach the store for housekeeping; retrying")
            except Exception as exc:
                # A bug: run() re-raises it, and the process exits loudly.
                if self._crash is None:
                    self._crash = exc
                self._slot_freed.set()
                return
            await self._rest()

    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_calendars_when_due()
            except StoreError:
                log.exception("worker cannot reach the store to poll calendars; retrying")
            except Exception:
                # Each view's trouble is its sync's to report (poll_round); this is the
                # poll's own, and the next round tries again.
                log.exception("calendar poll failed; retrying")
            await self._rest()

    async def extend_horizons_when_due(self) -> None:
        now = self.clock()
        if self._horizons_due is not None and now < self._horizons_due:
            return
        count = await extend_horizons(self.store, self.settings, now=now, stopping=self._stopping)
        renewed = 0
        service = None if self.calendars is None else self.calendars.service
        if service is not None and not service.polled:
            # The embedded server's views, which this process syncs (the poll visits the rest):
            # at start every one of them, then those last synced on an earlier day.
            every = not self._renewed_all
            renewed = await renew_views(
                self.store, self.settings, ["hosted"], now=now, every=every, stopping=self._stopping
            )
            self._renewed_all = True
        interval = timedelta(seconds=self.settings.worker.horizon_refresh_seconds)
        self._horizons_due = now + interval
        self.metrics.horizon_refreshes.inc()
        log.info("horizons extended", extra={"recurring_tasks": count, "views_renewed": renewed})

    async def poll_calendars_when_due(self) -> None:
        if self.calendars is None:
            return
        now = self.clock()
        if self._poll_due is not None and now < self._poll_due:
            return
        interval = timedelta(seconds=self.settings.calendar.poll_interval_seconds)
        self._poll_due = now + interval
        # One instance polls each round: with several workers on one database, each polling
        # would ask every server as many times a round. Shielded: `stop` cancels this loop,
        # and a write transaction cut off in the middle leaves SQLite's write lock held (every
        # other writer, the lease release at stop first, waits out the busy timeout and fails).
        claim = self.store.claim_round(POLL_ROUND, now=now, every=interval)
        if not await asyncio.shield(claim):
            return
        tally = await poll_views(self.store, self.settings, self.calendars, now=now)
        for result, views in tally.items():
            self.metrics.poll_views.labels(result).inc(views)
        if tally["due"] or tally["down"] or tally["unanswered"]:
            log.info(
                "calendars polled",
                extra={
                    "views_to_sync": tally["due"],
                    "servers_down": tally["down"],
                    "unanswered": tally["unanswered"],
                },
            )

    async def purge_when_due(self) -> None:
        """What carecal no longer needs goes, swept every PURGE_INTERVAL (and at start):
        finished jobs once they were due `worker.keep_done_jobs_hours` ago, applied webhooks
        `server.keep_applied_webhooks_days` after they were applied, events delivered to the
        host `outbox.keep_delivered_days` ago. Failed jobs and webhooks, pending ones and
        undelivered events stay."""
        now = self.clock()
        if self._purge_due is not None and now < self._purge_due:
            return
        settings = self.settings
        jobs = await self.store.purge_done_jobs(
            due_before=now - timedelta(hours=settings.worker.keep_done_jobs_hours)
        )
        webhooks = await self.store.purge_finished_webhooks(
            finished_before=now - timedelta(days=settings.server.keep_applied_webhooks_days)
        )
        events = await self.store.purge_delivered_outbox(
            delivered_before=now - timedelta(days=settings.outbox.keep_delivered_days)
        )
        self._purge_due = now + PURGE_INTERVAL
        if jobs or webhooks or events:
            log.info("history purged", extra={"jobs": jobs, "webhooks": webhooks, "events": events})

    async def escalate_when_due(self) -> None:
        now = self.clock()
        if self._escalation_due is not None and now < self._escalation_due:
            return
        cfg = self.settings.escalation
        sent = await escalate_unfilled(
            self.store, now=now, lookback=timedelta(hours=cfg.lookback_hours)
        )
        self._escalation_due = now + timedelta(seconds=cfg.interval_seconds)
        if sent:
            self.metrics.escalations.inc(sent)

    async def run_once(self) -> int:
        """Lease one batch and run it to its end (`concurrency` at a time); returns how many
        jobs were leased. For tests and tools: run() leases as slots free up."""
        cfg = self.settings.worker
        jobs = await self.store.lease_jobs(
            self.name, now=self.clock(), limit=cfg.batch_size, lease_seconds=cfg.lease_seconds
        )
        await asyncio.gather(*(self._execute_when_free(job) for job in jobs))
        return len(jobs)

    async def _execute_when_free(self, job: Job) -> None:
        async with self._running:
            if self._stopping.is_set():
                return  # not started: it goes back to the queue in stop()
            await self._execute(job)

    async def stop(self, task: asyncio.Task[None]) -> None:
        self._stopping.set()
        try:
            await task  # re-raises if the loop died: the process should exit loudly
        finally:
            if self._delivery_task is not None:
                # Sends in flight finish (each bounded by outbox.timeout_seconds), unsent
                # events of its round go back to the outbox; its loop never raises.
                await self._delivery_task
            # A poll round in progress is cut short: the next start polls again (its writes
            # are shielded: a transaction cut off in the middle would leave SQLite's write
            # lock held, every writer after it failing). A housekeeping step ends at its next
            # transaction (the roll and the routine syncs look at `_stopping`), and is cut
            # short only past HOUSEKEEPING_GRACE; every step is idempotent (the next start
            # does it again).
            if self._poll_task is not None:
                self._poll_task.cancel()
                await asyncio.gather(self._poll_task, return_exceptions=True)
            if self._housekeeping_task is not None:
                done, _ = await asyncio.wait({self._housekeeping_task}, timeout=HOUSEKEEPING_GRACE)
                if not done:
                    self._housekeeping_task.cancel()
                await asyncio.gather(self._housekeeping_task, return_exceptions=True)
            released = await self.store.release_leases(self.name)
            log.info("worker stopped", extra={"worker": self.name, "released_jobs": released})

    async def _execute(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        now = self.clock()
        if handler is None:
            await self.store.fail_job(
                job.id,
                self.name,
                error=f"no handler for job kind {job.kind!r} in this version",
                retry_at=now + UNHANDLED_RETRY,
            )
            self.metrics.jobs_processed.labels(job.kind, "unhandled").inc()
            return
        # A job ends well within its lease: past the lease another worker (or this one) would
        # take the same job again while it still runs, and a calendar server that answers a
        # byte at a time would in the end hold every slot. Cut short, it fails and is retried.
        deadline = self.settings.worker.lease_seconds * JOB_DEADLINE_SHARE
        try:
            async with asyncio.timeout(deadline):
                await handler(job, JobContext(self.store, self.settings, now, self.calendars))
        except Exception as exc:
            if self._stopping.is_set() and isinstance(exc, CalendarUnavailable):
                # Shutting down: uvicorn has closed the listener the embedded calendar server
                # is reached through. Not the job's fault: it stays leased and goes back to the
                # queue with the rest in stop(), no attempt counted.
                log.info("job interrupted by shutdown", extra={"job_id": job.id})
                return
            await self._failed(job, exc, now)
            return
        await self.store.finish_job(job.id, self.name)
        self.metrics.jobs_processed.labels(job.kind, "done").inc()

    async def _failed(self, job: Job, exc: Exception, now: datetime) -> None:
        final = job.attempts + 1 >= self.settings.worker.max_attempts
        retry_at = None if final else now + backoff(job.attempts)
        log.warning(
            "job failed",
            exc_info=exc,
            extra={"job_id": job.id, "kind": job.kind, "attempts": job.attempts + 1},
        )
        await self.store.fail_job(job.id, self.name, error=type(exc).__name__, retry_at=retry_at)
        self.metrics.jobs_processed.labels(job.kind, "failed" if final else "retry").inc()
