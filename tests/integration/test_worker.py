"""The background worker on a real SQLite store: handlers, retries, graceful stop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from adapters.store.sql import SqlStore
from plugin.config import Settings
from plugin.metrics import Metrics
from plugin.services.ports import Job
from plugin.worker import JobContext, Worker, backoff
from tests.integration.support import FIXED_NOW, Clock


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

    worker = Worker(store, settings, metrics=Metrics(), clock=clock, handlers={"test.slow": slow})
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
