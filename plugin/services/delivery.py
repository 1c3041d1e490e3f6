"""Deliver the outbox to the hosts: every event, signed, at least once, in order per key.

One round (`OutboxDelivery.deliver_due`):

1. lease up to `outbox.batch_size` due events (`Store.lease_outbox`: at most the oldest
   pending event of each ordering key, so a failing event holds back the later ones of its key
   — its task — and nothing else);
2. send them concurrently, at most `outbox.concurrency` at a time, each as
   `{"type": ..., "tenant": ..., "data": {...}}` to the tenant's `host_events_url`, signed
   with `host_events_secret`, with the event id as the `webhook-id` (the same on every try);
3. record each outcome in its own short transaction: a 2xx is delivered; anything else, a
   refused connection or a timeout is retried after exponential backoff with full jitter, or
   becomes a dead letter once the event has been pending `outbox.dead_after_hours`
   (`plugin.domain.retries`). `carecal outbox replay` requeues dead letters.

A tenant without `host_events_url` (or no longer configured) cannot receive anything: its
events become dead letters at once with the reason "no host_events_url". They are kept, and
`carecal outbox replay --tenant <id>` sends them once a URL is configured.

At least once, not exactly once: a 2xx whose recording fails (the database is gone at that
moment, or the process dies between the answer and the commit) leaves the event pending, and
it is sent again, with the same `webhook-id`, when its lease ends. Hosts deduplicate by
`webhook-id`. Nothing is lost: an event leaves the pending set only by a recorded 2xx or by
becoming a dead letter, which is kept.

Logs name the event id, tenant, type, attempt and reason; never the body, URL or a secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from plugin.config import OutboxSettings, Settings
from plugin.domain.retries import RetryPolicy, lease_seconds, next_attempt
from plugin.metrics import Metrics
from plugin.services.ports import (
    DeliveryFailed,
    EventSender,
    HostRejected,
    OutboxEvent,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

NO_URL = "no host_events_url"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    RETURNED = "returned"  # not sent: the worker is stopping; due again at once
    UNRECORDED = "unrecorded"  # the outcome could not be stored; the lease will expire


@dataclass(frozen=True, slots=True)
class Round:
    leased: int
    outcomes: tuple[Outcome, ...] = ()

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o is outcome)


def event_body(event: OutboxEvent) -> bytes:
    """The JSON the host receives (DESIGN.md "Events to the host"), e.g.
    `{"type":"task.unfilled","tenant":"north","data":{"task_id":"t-1",…,"free_slots":1}}`."""
    document = {"type": event.type, "tenant": event.tenant_id, "data": dict(event.data)}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def retry_policy(settings: OutboxSettings) -> RetryPolicy:
    return RetryPolicy(
        base=timedelta(seconds=settings.backoff_base_seconds),
        cap=timedelta(seconds=settings.backoff_max_seconds),
        dead_after=timedelta(hours=settings.dead_after_hours),
    )


class OutboxDelivery:
    def __init__(
        self,
        store: Store,
        sender: EventSender,
        settings: Settings,
        *,
        metrics: Metrics,
        clock: Callable[[], datetime],
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.sender = sender
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.draw = draw
        cfg = settings.outbox
        self.policy = retry_policy(cfg)
        self.lease_seconds = lease_seconds(cfg.batch_size, cfg.concurrency, cfg.timeout_seconds)
        self._slots = asyncio.Semaphore(cfg.concurrency)

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; sends in flight then finish, the rest go back."""
        log.info("outbox delivery started")
        while not stopping.is_set():
            try:
                done = await self.deliver_due(stopping)
                busy = done.leased >= self.settings.outbox.batch_size
            except StoreError:
                log.exception("outbox delivery cannot reach the store; retrying")
                busy = False
            except Exception:
                # A bug in one round must not silently end delivery for the process' lifetime.
                log.exception("outbox delivery round failed; retrying")
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(
                        stopping.wait(), timeout=self.settings.outbox.poll_seconds
                    )
                except TimeoutError:
                    pass
        log.info("outbox delivery stopped")

    async def deliver_due(self, stopping: asyncio.Event | None = None) -> Round:
        """One round: lease, send concurrently, record. Raises StoreError only if the lease
        itself fails; a failure to record one outcome is logged and left to the lease."""
        cfg = self.settings.outbox
        events = await self.store.lease_outbox(
            now=self.clock(), limit=cfg.batch_size, lease_seconds=self.lease_seconds
        )
        if not events:
            return Round(0)
        outcomes = await asyncio.gather(*(self._deliver(event, stopping) for event in events))
        returned = [e.id for e, o in zip(events, outcomes, strict=True) if o is Outcome.RETURNED]
        if returned:
            await self.store.release_outbox(returned, now=self.clock())
        return Round(len(events), tuple(outcomes))

    async def _deliver(self, event: OutboxEvent, stopping: asyncio.Event | None) -> Outcome:
        tenant = self.settings.tenant(event.tenant_id)
        if tenant is None or not tenant.host_events_url or tenant.host_events_secret is None:
            # Kept as a dead letter for `carecal outbox replay` once a URL is configured.
            return await self._safely(event, self._mark_dead(event, NO_URL, "no_url"))
        async with self._slots:
            if stopping is not None and stopping.is_set():
                return Outcome.RETURNED
            now = self.clock()
            try:
                await self.sender.send(
                    tenant.host_events_url,
                    tenant.host_events_secret.get_secret_value(),
                    event.id,
                    event_body(event),
                    timestamp=int(now.timestamp()),
                )
            except DeliveryFailed as failure:
                kind = "rejected" if isinstance(failure, HostRejected) else "unreachable"
                self.metrics.outbox_failed.labels(event.tenant_id, kind).inc()
                return await self._safely(event, self._mark_failed(event, failure.reason))
        return await self._safely(event, self._mark_delivered(event))

    async def _mark_delivered(self, event: OutboxEvent) -> Outcome:
        await self.store.mark_outbox_delivered(event.id, now=self.clock())
        self.metrics.outbox_delivered.labels(event.tenant_id, event.type).inc()
        log.debug("event delivered", extra=_fields(event))
        return Outcome.DELIVERED

    async def _mark_failed(self, event: OutboxEvent, reason: str) -> Outcome:
        now = self.clock()
        retry_at = next_attempt(
            self.policy,
            failures=event.attempts + 1,
            pending_since=event.pending_since,
            now=now,
            draw=self.draw(),
        )
        if retry_at is None:
            return await self._mark_dead(event, reason, "expired")
        await self.store.mark_outbox_failed(event.id, now=now, error=reason, retry_at=retry_at)
        log.warning(
            "event not delivered; will retry",
            extra={**_fields(event), "reason": reason, "retry_at": retry_at.isoformat()},
        )
        return Outcome.RETRY

    async def _mark_dead(self, event: OutboxEvent, reason: str, label: str) -> Outcome:
        await self.store.mark_outbox_failed(event.id, now=self.clock(), error=reason, retry_at=None)
        self.metrics.outbox_dead.labels(event.tenant_id, label).inc()
        # A tenant that takes no events is a choice, not an incident.
        level = logging.INFO if label == "no_url" else logging.ERROR
        log.log(level, "event is a dead letter", extra={**_fields(event), "reason": reason})
        return Outcome.DEAD

    async def _safely(self, event: OutboxEvent, marking: Awaitable[Outcome]) -> Outcome:
        try:
            return await marking
        except StoreError:
            # Delivered but not recorded means sent again after the lease: at least once.
            log.exception("cannot record an event's delivery outcome", extra=_fields(event))
            return Outcome.UNRECORDED


def _fields(event: OutboxEvent) -> dict[str, object]:
    return {
        "event_id": event.id,
        "tenant": event.tenant_id,
        "type": event.type,
        "attempt": event.attempts + 1,
    }
