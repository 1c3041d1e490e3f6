"""The webhook inbox: record durably with group commit, then apply in arrival order.

    request ──accept()──▶ InboxWriter ──one INSERT per batch──▶ inbox ──▶ InboxApplier
       ◀── 202 once the batch has committed                 apply_batch(): a few per transaction

Why: applying a webhook touches many rows (citizen, members, task, occurrences, jobs, audit);
doing that inside the request made every request wait for dozens of statements. Recording the
verified, validated webhook is one row, and concurrent requests share one transaction, so the
host gets its 202 as soon as its event is durable. The applier then applies entries in small
batches, in arrival order; readers that must see every accepted event first (the API) call
`catch_up()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from plugin.services.ingest import ApplyResult, Decode, apply_batch
from plugin.services.ports import InboxItem, Store, StoreError

log = logging.getLogger(__name__)


class InboxWriter:
    """Batches concurrent `accept()` calls into one `Store.accept_webhooks` transaction.

    While one batch is being written, new arrivals queue up and form the next batch, so the
    batch size follows the load by itself: one item when idle, hundreds under a burst.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 500,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_accepted = on_accepted
        self._pending: list[tuple[InboxItem, asyncio.Future[bool]]] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def wait_idle(self) -> None:
        """Until nothing is queued or being written (the applier defers to ingestion)."""
        await self._idle.wait()

    async def accept(self, item: InboxItem) -> bool:
        """Durably record `item`; True if new, False for a webhook-id seen before."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="carecal-inbox-writer")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._idle.clear()
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            await self._flush()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._flush()

    async def _flush(self) -> None:
        try:
            await self._write_batches()
        finally:
            if not self._pending:
                self._idle.set()

    async def _write_batches(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                results = await self.store.accept_webhooks([item for item, _ in batch])
            except Exception as exc:  # every waiter must hear of it, not just the first
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), new in zip(batch, results, strict=True):
                if not future.done():  # the client may have gone away meanwhile
                    future.set_result(new)
            if any(results):
                self.on_accepted()


class InboxApplier:
    """Applies pending inbox entries; woken by the writer, and polling for entries that other
    instances recorded (several `carecal serve` on one PostgreSQL)."""

    def __init__(
        self,
        store: Store,
        decode: Decode,
        *,
        clock: Callable[[], datetime],
        horizon: timedelta,
        poll_seconds: float,
        on_applied: Callable[[ApplyResult], None] = lambda _: None,
        defer_to: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.decode = decode
        self.clock = clock
        self.horizon = horizon
        self.poll_seconds = poll_seconds
        self.on_applied = on_applied
        # Ingestion first: on SQLite the applier and the inbox writer share one writer lock,
        # so the background loop waits until the writer is idle before each batch. Under a
        # burst the backlog grows and drains right after; `catch_up()` (API reads) never waits.
        self.defer_to = defer_to
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    def notify(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.catch_up(background=True)
            except StoreError:
                log.exception("inbox applier cannot reach the store; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_seconds)
            self._wakeup.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def catch_up(self, *, background: bool = False) -> int:
        """Apply everything pending now; returns how many entries were applied."""
        count = 0
        while not self._stopping.is_set():
            if background and self.defer_to is not None:
                await self.defer_to()
            async with self._lock:
                results = await apply_batch(
                    self.store, self.decode, now=self.clock(), horizon=self.horizon
                )
            if not results:
                break
            count += len(results)
            for result in results:
                self.on_applied(result)
        return count
