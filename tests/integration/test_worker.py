"""The background worker on a real SQLite store: handlers, retries, graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import func, select

import plugin.worker as worker_module
from adapters.store.sql import SqlStore
from adapters.store.tables import inbox, jobs, outbox
from plugin.config import Settings
from plugin.domain.model import Task, TaskStatus
from plugin.metrics import Metrics
from plugin.services.calendar_port import CalendarUnavailable
from plugin.services.calendars import Calendars
from plugin.services.ports import InboxItem, Job
from plugin.worker import JOB_DEADLINE_SHARE, Handler, JobContext, Worker, backoff, extend_horizons
from tests.integration.support import FIXED_NOW, Clock

# A weekly walk from Tuesday 2 March 2027, 10:00 in Copenhagen (the tests' clock: 1 March).
WEEKLY = Task(
    tenant_id="north", id="t-weekly", citizen_id="c-1", version=1, kind="task",
    category="walk", start=datetime(2027, 3, 2, 10), end=datetime(2027, 3, 2, 11),
    timezone="Europe/Copenhagen", recurrence="FREQ=WEEKLY",
)  # fmt: skip


async def stored_weekly(store: SqlStore, settings: Settings, clock: Clock) -> timedelta:
    """WEEKLY stored with its occurrences to the horizon, which it answers."""
    from plugin.services.ingest import materialise

    horizon = timedelta(weeks=settings.horizon_weeks)
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_task(WEEKLY)
        await materialise(tx, WEEKLY, now=clock.now, horizon=horizon)
    return horizon


async def enqueue(store: SqlStore, kind: str, n: int) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        for i in range(n):
            await tx.enqueue_job("north", kind, {"i": i}, run_at=FIXED_NOW, key=f"{kind}-{i}")


async def test_stop_finishes_the_job_in_hand_and_returns_the_rest(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    await enqueue(store, "test.slow", 3)
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[int] = []

    async def slow(job: Job, ctx: JobContext) -> None:
        started.set()
        await release.wait()
        done.append(int(job.payload["i"]))

    one_at_a_time = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"concurrency": 1})}
    )
    worker = Worker(
        store, one_at_a_time, metrics=Metrics(), clock=clock, handlers={"test.slow": slow}
    )
    task = asyncio.create_task(worker.run())
    await started.wait()
    stopping = asyncio.create_task(worker.stop(task))
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop must wait for the job in hand"
    release.set()
    await stopping
    assert done == [0]
    counts = await store.job_counts()
    assert counts.get("done", 0) == 1
    assert counts.get("queued", 0) == 2
    assert counts.get("running", 0) == 0


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


def three_slots(store: SqlStore, settings: Settings, clock: Clock, slow: Handler) -> Worker:
    """A worker with `worker.concurrency` 3 that runs `test.slow` jobs with `slow`."""
    limited = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"concurrency": 3})}
    )
    return Worker(store, limited, metrics=Metrics(), clock=clock, handlers={"test.slow": slow})


async def test_jobs_of_a_batch_run_concurrently_up_to_the_limit(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """A slow calendar server holds up only its own view: the other jobs of the batch run
    meanwhile, never more than `worker.concurrency` at once."""
    await enqueue(store, "test.slow", 5)
    running = peak = 0
    three_running = asyncio.Event()
    release = asyncio.Event()

    async def slow(job: Job, ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1

    worker = three_slots(store, settings, clock, slow)
    batch = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(three_running.wait(), timeout=5)
    await asyncio.sleep(0.05)
    assert peak == 3
    release.set()
    assert await batch == 5
    assert (await store.job_counts()).get("done", 0) == 5


async def test_the_workers_loop_runs_at_most_its_concurrency_at_once(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """run() leases as slots free up: five slow jobs, three slots, never more than three run
    at once, and the last two start as the first ones end."""
    await enqueue(store, "test.slow", 5)
    running = peak = started = 0
    release = asyncio.Event()

    async def slow(job: Job, ctx: JobContext) -> None:
        nonlocal running, peak, started
        running += 1
        started += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    worker = three_slots(store, settings, clock, slow)
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: started == 3)
        await asyncio.sleep(0.2)  # several turns of the loop: still three
        assert (started, peak) == (3, 3)
        assert (await store.job_counts())["queued"] == 2  # not leased while no slot is free
        release.set()
        await until(lambda: started == 5 and running == 0)
        assert peak == 3
    finally:
        release.set()
        await worker.stop(task)
    assert (await store.job_counts())["done"] == 5


async def test_a_job_that_hangs_holds_up_no_job_queued_after_it(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """A member's server that never answers keeps its job waiting for the client's timeout:
    the worker leases the jobs queued after it as slots free up, not after that job ends."""
    await enqueue(store, "test.hang", 1)
    hanging, release = asyncio.Event(), asyncio.Event()
    ran: list[int] = []

    async def hang(job: Job, ctx: JobContext) -> None:
        hanging.set()
        await release.wait()

    async def quick(job: Job, ctx: JobContext) -> None:
        ran.append(int(job.payload["i"]))

    worker = Worker(
        store,
        settings,
        metrics=Metrics(),
        clock=clock,
        handlers={"test.hang": hang, "test.quick": quick},
    )
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(hanging.wait(), timeout=5)
        await enqueue(store, "test.quick", 3)
        await until(lambda: sorted(ran) == [0, 1, 2])
        for _ in range(100):  # their outcomes are recorded just after they ran
            counts = await store.job_counts()
            if counts["done"] == 3:
                break
            await asyncio.sleep(0.01)
        assert counts == {"queued": 0, "running": 1, "done": 3, "failed": 0}  # one still hangs
    finally:
        release.set()
        await worker.stop(task)
    assert await store.job_counts() == {"queued": 0, "running": 0, "done": 4, "failed": 0}


@pytest.mark.parametrize(
    "step",
    [
        # A poll round waiting on a member's server, up to the client's timeout.
        "poll_calendars_when_due",
        # The horizon's roll: every recurring task of every tenant, one transaction each,
        # in a large municipality a long while.
        "extend_horizons_when_due",
    ],
)
async def test_a_step_beside_the_jobs_that_hangs_holds_up_no_job(
    store: SqlStore, settings: Settings, clock: Clock, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll of members' calendars and the housekeeping run beside the jobs, each in a loop
    of its own: while one of them hangs, the worker still leases and runs jobs (a member's
    claim is not kept waiting for it)."""
    await enqueue(store, "test.quick", 3)
    ran: list[int] = []
    calls = 0

    async def quick(job: Job, ctx: JobContext) -> None:
        ran.append(int(job.payload["i"]))

    worker = Worker(
        store,
        settings,
        metrics=Metrics(),
        clock=clock,
        handlers={"test.quick": quick},
        # Polled by the stand-in below only (no service: no day's renewal).
        calendars=cast(Calendars, SimpleNamespace(service=None)),
    )

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    setattr(worker, step, hangs)
    monkeypatch.setattr(worker_module, "HOUSEKEEPING_GRACE", 0.1)  # then a hang is cut short
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: sorted(ran) == [0, 1, 2])
        assert calls == 1  # still in its first round
    finally:
        await worker.stop(task)  # cuts the hanging round short


async def test_a_bug_in_housekeeping_stops_the_worker_loudly(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    worker = Worker(store, settings, metrics=Metrics(), clock=clock, handlers={})

    async def broken() -> None:
        raise ZeroDivisionError

    worker.escalate_when_due = broken  # type: ignore[method-assign]
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(worker.run(), timeout=5)


async def test_failing_job_is_retried_later_then_fails_for_good(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    await enqueue(store, "test.broken", 1)
    calls = 0

    async def broken(job: Job, ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the calendar server is down")

    worker = Worker(
        store, settings, metrics=Metrics(), clock=clock, handlers={"test.broken": broken}
    )
    for _ in range(settings.worker.max_attempts):
        await worker.run_once()
        clock.now += timedelta(hours=1)  # past any backoff
    assert calls == settings.worker.max_attempts
    counts = await store.job_counts()
    assert counts.get("failed", 0) == 1
    assert counts.get("queued", 0) == 0


async def test_a_job_ends_within_its_lease_however_long_it_would_take(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """A job still running when its lease runs out would be leased again, and run twice at
    once (a member's server answering a byte at a time did that until it held every slot).
    It is cut short well within its lease, and retried like any failure."""
    short = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"lease_seconds": 0.5})}
    )
    await enqueue(store, "test.slow", 1)
    started = 0

    async def slow(job: Job, ctx: JobContext) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(30)

    worker = Worker(store, short, metrics=Metrics(), clock=clock, handlers={"test.slow": slow})
    began = time.monotonic()
    await worker.run_once()
    assert time.monotonic() - began < 0.5 * JOB_DEADLINE_SHARE + 1
    assert started == 1
    async with store.engine.connect() as connection:
        row = (
            await connection.execute(select(jobs.c.status, jobs.c.attempts, jobs.c.last_error))
        ).one()
    assert tuple(row) == ("queued", 1, "TimeoutError")  # back in the queue, retried later


async def test_a_job_without_a_handler_waits_in_the_queue(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    await enqueue(store, "from.the.future", 1)
    worker = Worker(store, settings, metrics=Metrics(), clock=clock, handlers={})
    assert await worker.run_once() == 1
    assert (await store.job_counts()).get("queued", 0) == 1
    assert await worker.run_once() == 0  # not due again for a while


def test_backoff_grows_and_is_capped() -> None:
    assert timedelta(seconds=0.5) <= backoff(0) <= timedelta(seconds=1)
    assert timedelta(seconds=16) <= backoff(5) <= timedelta(seconds=32)
    assert backoff(50) <= timedelta(minutes=15)


async def test_recurring_tasks_grow_with_the_horizon_as_time_passes(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    from plugin.services.ingest import materialise

    weekly = WEEKLY
    once = Task(
        tenant_id="north", id="t-once", citizen_id="c-1", version=1, kind="task",
        category="walk", start=datetime(2027, 3, 3, 10), end=datetime(2027, 3, 3, 11),
        timezone="Europe/Copenhagen",
    )  # fmt: skip
    horizon = timedelta(weeks=settings.horizon_weeks)
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        for task in (weekly, once):
            await tx.save_task(task)
            await materialise(tx, task, now=clock.now, horizon=horizon)
        before = await tx.get_occurrences("north", "t-weekly")
    assert len(before) == 8  # 1 March + 8 weeks: 2 March … 20 April

    worker = Worker(store, settings, metrics=Metrics(), clock=clock, handlers={})
    await worker.extend_horizons_when_due()
    refreshes = worker.metrics.horizon_refreshes
    clock.now += timedelta(minutes=30)
    await worker.extend_horizons_when_due()  # not due yet: refreshed once an hour
    assert refreshes._value.get() == 1
    clock.now += timedelta(weeks=4)
    await worker.extend_horizons_when_due()
    assert refreshes._value.get() == 2
    async with store.transaction() as tx:
        after = await tx.get_occurrences("north", "t-weekly")
        assert len(await tx.get_occurrences("north", "t-once")) == 1
    assert len(after) == 12
    # The past stays: the first occurrences keep their ids, and nothing was cancelled.
    assert [r.occurrence.id for r in after[:8]] == [r.occurrence.id for r in before]
    assert not any(r.occurrence.cancelled for r in after)


async def test_the_horizon_roll_never_undoes_what_the_host_changed_meanwhile(
    store: SqlStore, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roll lists the recurring tasks, then expands each in a transaction of its own.
    When the host moved one in between (another instance's applier), expanding the listed
    version put every occurrence back at the old time; a cancelled one must stay cancelled."""
    from adapters.store.sql_tx import SqlTx
    from plugin.services.ingest import materialise

    weekly = WEEKLY
    horizon = await stored_weekly(store, settings, clock)
    listed = SqlTx.list_recurring_tasks

    changes = [
        replace(weekly, version=2, start=datetime(2027, 3, 2, 14), end=datetime(2027, 3, 2, 15)),
        replace(weekly, version=3, status=TaskStatus.CANCELLED),
    ]

    async def then_changed(self: SqlTx, tenant_id: str) -> list[Task]:
        found = await listed(self, tenant_id)
        if tenant_id != "north":
            return found

        async def change() -> None:  # as the applier does, in a transaction of its own
            async with store.transaction() as other:
                task = changes.pop(0)
                await other.save_task(task)
                await materialise(other, task, now=clock.now, horizon=horizon)

        await asyncio.create_task(change())
        return found

    monkeypatch.setattr(SqlTx, "list_recurring_tasks", then_changed)
    clock.now += timedelta(weeks=4)
    await extend_horizons(store, settings, now=clock.now)
    async with store.transaction() as tx:
        found = await tx.get_occurrences("north", "t-weekly")
    coming = [r.occurrence for r in found if r.occurrence.start >= clock.now]
    live = [o.id for o in coming if not o.cancelled]  # (the past stays as it was)
    assert len(live) == 8 and all(o.endswith("T1400") for o in live), live
    clock.now += timedelta(weeks=4)
    await extend_horizons(store, settings, now=clock.now)
    async with store.transaction() as tx:
        found = await tx.get_occurrences("north", "t-weekly")
    assert [r.occurrence.id for r in found if not r.occurrence.cancelled] == []


async def test_a_roll_behind_another_never_takes_back_what_that_one_planned(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """Two workers roll the horizon at once, the second with a `now` two seconds behind
    (slower, or its clock behind): the occurrence the first planned at its horizon's edge
    stays. Before, the second cancelled it (it was past its own horizon) until the next
    roll, an hour later, and every member's calendar lost it meanwhile."""
    horizon = await stored_weekly(store, settings, clock)
    async with store.transaction() as tx:
        last = max(r.occurrence.start for r in await tx.get_occurrences("north", "t-weekly"))
    edge = last + timedelta(weeks=1) - horizon  # where the next one comes into the horizon
    await extend_horizons(store, settings, now=edge + timedelta(seconds=1))
    await extend_horizons(store, settings, now=edge - timedelta(seconds=1))
    async with store.transaction() as tx:
        found = await tx.get_occurrences("north", "t-weekly")
    newest = max(found, key=lambda r: r.occurrence.start)
    assert newest.occurrence.start == last + timedelta(weeks=1)
    assert not any(r.occurrence.cancelled for r in found)


async def test_the_roll_and_the_applier_writing_one_task_at_once_both_succeed(
    store: SqlStore, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances on PostgreSQL: one rolls the horizon of a weekly task (its new
    occurrences inserted, not yet committed) while the other applies the host's edit of the
    same task. The applier waits for the roll's lock on the task and then finds its
    occurrences; before, it inserted the same ids and failed with a Conflict (the webhook
    marked failed)."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: the two never run at once")
    from plugin import worker as worker_module
    from plugin.services.ingest import materialise
    from plugin.web.app import open_store

    weekly = WEEKLY
    horizon = await stored_weekly(store, settings, clock)
    later = clock.now + timedelta(weeks=4)
    rolled, go = asyncio.Event(), asyncio.Event()

    async def roll_and_hold(tx: Any, task: Task, **kwargs: Any) -> bool:
        changed = await materialise(tx, task, **kwargs)
        rolled.set()
        await go.wait()  # the transaction stays open, its new occurrences not committed
        return changed

    monkeypatch.setattr(worker_module, "materialise", roll_and_hold)
    other = await open_store(settings, migrate=False)  # the other instance
    try:
        roll = asyncio.create_task(extend_horizons(store, settings, now=later))
        await asyncio.wait_for(rolled.wait(), timeout=10)

        async def apply_edit() -> None:
            edited = replace(weekly, version=2, details="Netto, not Føtex")
            async with other.transaction() as tx:
                await tx.save_task(edited)
                await materialise(tx, edited, now=later, horizon=horizon)

        edit = asyncio.create_task(apply_edit())
        await asyncio.sleep(0.3)
        assert not edit.done()  # waiting for the roll's lock on the task
        go.set()
        await asyncio.wait_for(asyncio.gather(roll, edit), timeout=10)
    finally:
        await other.close()
    async with store.transaction() as tx:
        found = await tx.get_occurrences("north", "t-weekly")
        task = await tx.get_task("north", "t-weekly")
    assert task is not None and task.version == 2
    assert len([r for r in found if not r.occurrence.cancelled]) == 12


async def test_extending_the_horizon_queues_a_sync_of_the_hosted_views(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    from plugin.domain.model import Circle, Citizen, Member

    circle = Circle(
        Citizen("north", "c-1", "Fru Jensen"),
        1,
        (
            Member("m-anna", "Anna", "relative", "full"),
            Member("m-bo", "Bo", "relative", "full", calendar="feed"),
        ),
    )
    weekly = WEEKLY
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", circle, clock.now)
        await tx.save_task(weekly)
    worker = Worker(store, settings, metrics=Metrics(), clock=clock, handlers={})
    await worker.extend_horizons_when_due()
    jobs = await store.lease_jobs("test", now=clock.now, limit=10, lease_seconds=60)
    assert [(j.kind, j.key) for j in jobs] == [("view.sync", "c-1:m-anna")]
    await store.finish_job(jobs[0].id, "test")

    # An hour on, the horizon brought the weekly task no new occurrence: nothing to sync
    # (before, every roll queued a sync of every view of every recurring task's circle).
    clock.now += timedelta(hours=1)
    await worker.extend_horizons_when_due()
    assert await store.lease_jobs("test", now=clock.now, limit=10, lease_seconds=60) == []
    # A week on, it brought one.
    clock.now += timedelta(weeks=1)
    await worker.extend_horizons_when_due()
    jobs = await store.lease_jobs("test", now=clock.now, limit=10, lease_seconds=60)
    assert [(j.kind, j.key) for j in jobs] == [("view.sync", "c-1:m-anna")]


async def test_views_no_poll_visits_are_synced_again_on_a_new_day(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """A view's copies move with the days (the window, the fairness advice). The poll finds
    the views it visits stale on a new day itself; the embedded server's views are queued by
    the horizon's roll of the process serving them: every one at its start, then each hour
    the ones that nothing synced today."""
    from plugin.domain.model import Circle, Citizen, Member
    from plugin.services.calendars import View
    from plugin.services.ports import ViewState
    from plugin.services.view_sync import routine_delay
    from plugin.worker import renew_views

    circle = Circle(
        Citizen("north", "c-1", "Fru Jensen"),
        1,
        (
            Member("m-anna", "Anna", "relative", "full"),
            Member("m-bo", "Bo", "relative", "full"),
            Member("m-cy", "Cy", "relative", "full"),  # never synced: its first sync is queued
            Member("m-di", "Di", "relative", "full", calendar="external"),  # the poll's
        ),
    )
    yesterday = clock.now - timedelta(days=1)
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", circle, clock.now)
        for member_id, synced in (("m-anna", yesterday), ("m-bo", clock.now), ("m-di", yesterday)):
            state = ViewState(f"/dav/{member_id}/", "tok", None, synced, "inputs", 0, "")
            await tx.save_view_state("north", member_id, "c-1", state)
    # A worker whose hosted views are polled, or that has none (`carecal worker` beside an
    # embedded server), leaves them to the poll or to the process serving them...
    for service in (SimpleNamespace(polled=True), None):
        calendars = cast(Calendars, SimpleNamespace(service=service))
        worker = Worker(store, settings, metrics=Metrics(), clock=clock, calendars=calendars)
        await worker.extend_horizons_when_due()
        assert (await store.job_counts())["queued"] == 0
    # ... which, at its start, queues every view synced before (a write whose hook a crash
    # lost is found so), each as a routine sync: due at the view's own offset into the
    # day's spread, after members' changes...
    calendars = cast(Calendars, SimpleNamespace(service=SimpleNamespace(polled=False)))
    worker = Worker(store, settings, metrics=Metrics(), clock=clock, calendars=calendars)
    await worker.extend_horizons_when_due()

    async def lease_when_due(*member_ids: str) -> list[tuple[str, str]]:
        due = [clock.now + routine_delay(View("north", m, "c-1")) for m in member_ids]
        early = min(due) - timedelta(seconds=1)
        assert await store.lease_jobs("test", now=early, limit=10, lease_seconds=60) == []
        jobs = await store.lease_jobs("test", now=max(due), limit=10, lease_seconds=60)
        for job in jobs:
            await store.finish_job(job.id, "test")
        return sorted((job.key or "", job.payload["reason"]) for job in jobs)

    assert await lease_when_due("m-anna", "m-bo") == [
        ("c-1:m-anna", "start"),
        ("c-1:m-bo", "start"),
    ]
    # ... and from then on, each hour, those that nothing synced today: once.
    clock.now += timedelta(hours=1)
    await worker.extend_horizons_when_due()
    assert await renew_views(store, settings, ["hosted"], now=clock.now) == 1  # queued already
    assert await lease_when_due("m-anna") == [("c-1:m-anna", "new day")]


async def test_a_calendar_lost_to_shutdown_returns_the_job_without_counting_a_try(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """On SIGTERM uvicorn closes its listener first, and the embedded calendar server goes with
    it: the view sync in hand fails to connect. That is no fault of the job's: no failure, no
    backoff."""
    await enqueue(store, "test.calendar", 1)
    started = asyncio.Event()
    release = asyncio.Event()

    async def cut_off(job: Job, ctx: JobContext) -> None:
        started.set()
        await release.wait()
        raise CalendarUnavailable("connection refused")

    worker = Worker(
        store, settings, metrics=Metrics(), clock=clock, handlers={"test.calendar": cut_off}
    )
    task = asyncio.create_task(worker.run())
    await started.wait()
    stopping = asyncio.create_task(worker.stop(task))
    await asyncio.sleep(0.05)
    release.set()
    await stopping
    counts = await store.job_counts()
    assert counts.get("queued", 0) == 1 and counts.get("failed", 0) == 0
    # Due at once for the next worker (a failure would have pushed it back by the backoff),
    # with only its lease counted.
    (job,) = await store.lease_jobs("next", now=clock.now, limit=1, lease_seconds=60)
    assert job.run_at == FIXED_NOW and job.attempts == 1


async def test_finished_work_is_forgotten_once_it_is_old_enough(
    store: SqlStore, settings: Settings, clock: Clock
) -> None:
    """Finished jobs (24 hours by default), applied webhooks and delivered events (7 days)
    go in the worker's hourly sweep; failed jobs and webhooks and undelivered events stay."""
    assert settings.worker.keep_done_jobs_hours == 24  # the defaults
    assert settings.server.keep_applied_webhooks_days == 7
    assert settings.outbox.keep_delivered_days == 7
    quarter = 0.25 / 24  # a quarter of an hour, in days
    short = settings.model_copy(
        update={
            "worker": settings.worker.model_copy(
                update={"keep_done_jobs_hours": 0.25, "max_attempts": 1}
            ),
            "server": settings.server.model_copy(update={"keep_applied_webhooks_days": quarter}),
            "outbox": settings.outbox.model_copy(update={"keep_delivered_days": quarter}),
        }
    )
    await enqueue(store, "test.quick", 2)
    await enqueue(store, "test.failing", 1)
    received = [InboxItem("north", f"wh-{n}", "task.upserted", b"{}", FIXED_NOW) for n in range(3)]
    await store.accept_webhooks(received)
    async with store.transaction() as tx:
        entries = await tx.pending_webhooks(2)
        await tx.finish_webhook(entries[0].seq, status="applied", now=FIXED_NOW)
        await tx.finish_webhook(entries[1].seq, status="failed", now=FIXED_NOW, error="boom")
        delivered = await tx.add_outbox("north", "task.claimed", {}, now=FIXED_NOW)
        await tx.add_outbox("north", "task.released", {}, now=FIXED_NOW)
    await store.mark_outbox_delivered(delivered, now=FIXED_NOW)

    async def quick(job: Job, ctx: JobContext) -> None:
        if job.kind == "test.failing":
            raise ValueError("fails for good")

    worker = Worker(
        store,
        short,
        metrics=Metrics(),
        clock=clock,
        handlers={"test.quick": quick, "test.failing": quick},
    )
    assert await worker.run_once() == 3
    kept = {"done": 2, "webhooks": 3, "events": 2}
    assert await history(store) == kept
    await worker.purge_when_due()  # the sweep at start: nothing is old enough
    assert await history(store) == kept
    clock.now = FIXED_NOW + timedelta(minutes=30)
    await worker.purge_when_due()  # old enough, but the next sweep is an hour after
    assert await history(store) == kept
    clock.now = FIXED_NOW + timedelta(hours=1)
    await worker.purge_when_due()
    # The failed job and webhook stay for an operator to read; the pending webhook and the
    # undelivered event are still to be dealt with.
    assert await history(store) == {"done": 0, "webhooks": 2, "events": 1}
    assert await store.job_counts() == {"queued": 0, "running": 0, "done": 0, "failed": 1}
    assert await store.inbox_counts() == {"pending": 1, "applied": 0, "stale": 0, "failed": 1}
    assert await store.outbox_counts() == {"pending": 1, "dead": 0}


async def history(store: SqlStore) -> dict[str, int | None]:
    """Done jobs, and every webhook and event as stored (finished and delivered included)."""
    async with store.engine.connect() as connection:
        webhooks = (await connection.execute(select(func.count()).select_from(inbox))).scalar()
        events = (await connection.execute(select(func.count()).select_from(outbox))).scalar()
    return {"done": (await store.job_counts())["done"], "webhooks": webhooks, "events": events}


async def test_a_members_own_server_down_is_logged_without_naming_her_account(
    settings: Settings, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Her own server refuses connections: the sync job fails and is logged, saying what
    failed, but neither her account's path (here her e-mail address, as Nextcloud's paths
    have it) nor its server: the error's text and the HTTP library's chained to it did."""
    import logging
    import socket

    from adapters.caldav.accounts import open_account
    from plugin.domain.model import Circle, Citizen, ExternalCalendar, Member
    from plugin.logs import JsonFormatter
    from plugin.services.calendars import View
    from plugin.services.view_sync import view_sync_job

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends
    url = f"http://127.0.0.1:{port}/remote.php/dav/calendars/anna.hansen@example.org/"
    tenants = [t.model_copy(update={"allow_private_calendar_urls": True}) for t in settings.tenants]
    settings = settings.model_copy(update={"tenants": tenants})
    anna = Member("m-anna", "Anna", "relative", "full", calendar="external",
                  external=ExternalCalendar(url, "anna.hansen@example.org", "app-pw"))  # fmt: skip
    view = View("north", "m-anna", "c-123")
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        circle = Circle(Citizen("north", "c-123", "Fru Jensen"), 1, (anna,))
        await tx.save_circle("north", circle, FIXED_NOW)
        await tx.enqueue_keyed_jobs(
            "north", "view.sync", [view_sync_job(view, now=FIXED_NOW, reason="changed")]
        )
    calendars = Calendars(settings, service=None, open_account=open_account)
    worker = Worker(store, settings, metrics=Metrics(), clock=Clock(FIXED_NOW), calendars=calendars)
    caplog.set_level(logging.INFO)
    [job] = await store.lease_jobs(worker.name, now=FIXED_NOW, limit=5, lease_seconds=60)
    await worker._execute(job)
    formatter = JsonFormatter()
    [line] = [formatter.format(r) for r in caplog.records if r.getMessage() == "job failed"]
    assert "CalendarUnavailable from the member's own calendar server" in line
    assert "anna.hansen" not in line and str(port) not in line


async def test_several_workers_poll_each_round_once(
    store: SqlStore, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three workers on one database (scale-out): each round of the calendar poll is run by
    one of them. Before, each polled every view every round: every server answered three
    probes a round."""
    import plugin.worker as worker_module

    polled: list[datetime] = []

    async def poll_views(*args: Any, now: datetime, **kwargs: Any) -> dict[str, int]:
        polled.append(now)
        return dict.fromkeys(worker_module.POLL_RESULTS, 0)

    monkeypatch.setattr(worker_module, "poll_views", poll_views)
    other = await SqlStore.open(settings.database.url)
    try:
        workers = [
            Worker(db, settings, metrics=Metrics(), clock=clock, calendars=object())  # type: ignore[arg-type]
            for db in (store, other, store)
        ]
        interval = timedelta(seconds=settings.calendar.poll_interval_seconds)
        for round_ in range(3):
            await asyncio.gather(*(w.poll_calendars_when_due() for w in workers))
            assert len(polled) == round_ + 1
            clock.now += interval
    finally:
        await other.close()
    assert polled == [polled[0] + n * interval for n in range(3)]


async def test_a_poll_cut_short_by_stop_leaves_the_store_free(
    store: SqlStore, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stop` cancels the poll loop wherever it is, and the round's claim is a write: cut
    off in the middle of its transaction, it left SQLite's write lock held, and the lease
    release at stop waited out the busy timeout and failed (the worker exited 1 on SIGTERM,
    now and then). The claim is shielded: every cut here leaves the store free at once."""
    import random

    import plugin.worker as worker_module

    async def poll_views(*args: Any, **kwargs: Any) -> dict[str, int]:
        return dict.fromkeys(worker_module.POLL_RESULTS, 0)

    monkeypatch.setattr(worker_module, "poll_views", poll_views)
    worker = Worker(store, settings, metrics=Metrics(), clock=clock, calendars=object())  # type: ignore[arg-type]
    interval = timedelta(seconds=settings.calendar.poll_interval_seconds)
    for _ in range(60):
        clock.now += interval
        worker._poll_due = None
        poll = asyncio.create_task(worker.poll_calendars_when_due())
        await asyncio.sleep(random.random() * 0.004)
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        await asyncio.wait_for(store.release_leases("w"), 2)


async def test_a_horizon_roll_under_way_at_stop_ends_between_its_transactions(
    store: SqlStore, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stop` cut the housekeeping loop wherever it was: a roll's transaction cut off in the
    middle could leave SQLite's write lock held, and the lease release at stop waited out
    the busy timeout and failed. The roll now ends before its next task's transaction:
    stopped at any moment, no transaction is cut, and the worker stops at once."""
    import random
    from contextlib import asynccontextmanager

    from plugin.services.ingest import materialise

    horizon = timedelta(weeks=settings.horizon_weeks)
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        for n in range(60):
            task = replace(WEEKLY, id=f"t-weekly-{n}")
            await tx.save_task(task)
            await materialise(tx, task, now=clock.now, horizon=horizon)
    cut: list[int] = []
    real = store.transaction

    @asynccontextmanager
    async def watched() -> AsyncIterator[Any]:
        try:
            async with real() as tx:
                yield tx
        except asyncio.CancelledError:
            cut.append(1)
            raise

    monkeypatch.setattr(store, "transaction", watched)
    for _ in range(10):
        clock.now += timedelta(weeks=1)  # every task gains an occurrence: a write each
        worker = Worker(store, settings, metrics=Metrics(), clock=clock, handlers={})
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.05 + random.random() * 0.1)  # the roll under way
        began = time.monotonic()
        await asyncio.wait_for(worker.stop(task), 4)
        assert time.monotonic() - began < 2
    assert cut == []
