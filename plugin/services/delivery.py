"""Deliver the outbox to the hosts: every event, signed, at least once, in order per key.

Each event:

1. is leased (`Store.lease_outbox`: at most the oldest pending event of each ordering key, so
   a failing event holds back the later ones of its key — its task — and nothing else);
2. is sent, at most `outbox.concurrency` requests in flight per tenant, as
   `{"type": ..., "tenant": ..., "data": {...}}` to the tenant's `host_events_url`, signed
   with `host_events_secret`, with the event id as the `webhook-id` (the same on every try);
3. has its outcome recorded in its own short transaction: a 2xx is delivered; anything else, a
   refused connection or a timeout is retried after exponential backoff with full jitter, or
   becomes a dead letter once the event has been pending `outbox.dead_after_hours`
   (`plugin.domain.retries`). `carecal outbox replay` requeues dead letters.

The worker's loop (`OutboxDelivery.run`) leases events as sends finish, at most
`outbox.batch_size` at a time and twice `outbox.concurrency` of one tenant in hand. Tenants
are kept apart: each has its own requests in flight and its own share of events in hand, so a
host that takes every request to its timeout (a firewall that drops) delays its own events,
not another municipality's, and the loop never waits for a round's slowest send before
leasing the next event. `deliver_due` is one round of the same steps (lease, send, record),
for tests and tools.

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
from collections import Counter
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
        # Events in hand wait for their tenant's slots: up to two waves of timeouts in `run`
        # (a tenant's share is twice its `concurrency`), a batch's in `deliver_due`.
        self.lease_seconds = lease_seconds(
            max(cfg.batch_size, 2 * cfg.concurrency), cfg.concurrency, cfg.timeout_seconds
        )
        self._slots: dict[str, asyncio.Semaphore] = {}  # requests in flight, per tenant
        self._in_hand: Counter[str] = Counter()  # leased and not yet recorded, per tenant

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set (module docstring). Each tenant holds at most twice
        `concurrency` events (half in flight, half next), whatever the others hold: no
        tenant's backlog fills what another's events wait for. The loop leases every
        `poll_seconds`, and at once when more is due: when a lease was full, or a tenant
        whose share it filled has half of it free again. When `stopping` is set, the sends in
        flight finish, and events not yet sent are given back."""
        log.info("outbox delivery started")
        cfg = self.settings.outbox
        share = 2 * cfg.concurrency
        in_hand: set[asyncio.Task[Outcome]] = set()
        stopped = asyncio.ensure_future(stopping.wait())
        clock = asyncio.get_running_loop().time
        try:
            while not stopping.is_set():
                in_hand = {task for task in in_hand if not task.done()}
                events = await self._lease(cfg.batch_size, share, dict(self._in_hand))
                for event in events:
                    self._in_hand[event.tenant_id] += 1  # before the next lease
                    in_hand.add(asyncio.create_task(self._hand(event, stopping)))
                if len(events) == cfg.batch_size:
                    continue  # more may be due
                filled = {tenant for tenant, n in self._in_hand.items() if n >= share}
                deadline = clock() + cfg.poll_seconds
                while (
                    not stopping.is_set()
                    and clock() < deadline
                    and not any(self._in_hand.get(t, 0) <= cfg.concurrency for t in filled)
                ):
                    await asyncio.wait(
                        {stopped, *in_hand},
                        timeout=deadline - clock(),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    in_hand = {task for task in in_hand if not task.done()}
        finally:
            stopped.cancel()
            if in_hand:
                await asyncio.gather(*in_hand)
        log.info("outbox delivery stopped")

    async def _lease(self, limit: int, share: int, held: dict[str, int]) -> list[OutboxEvent]:
        try:
            return await self.store.lease_outbox(
                now=self.clock(),
                limit=limit,
                lease_seconds=self.lease_seconds,
                per_tenant=share,
                held=held,
            )
        except StoreError:
            log.exception("outbox delivery cannot reach the store; retrying")
        except Exception:
            # A bug in one lease must not silently end delivery for the process' lifetime.
            log.exception("outbox delivery could not lease events; retrying")
        return []

    async def _hand(self, event: OutboxEvent, stopping: asyncio.Event) -> Outcome:
        """One event in hand, sent and recorded; given back when `stopping` came first."""
        try:
            outcome = await self._deliver(event, stopping)
            if outcome is Outcome.RETURNED:
                await self._give_back(event)
            return outcome
        except Exception:
            log.exception("event delivery failed", extra=_fields(event))
            return Outcome.UNRECORDED  # its lease ends, and it is sent again
        finally:
            self._in_hand[event.tenant_id] -= 1
            if not self._in_hand[event.tenant_id]:
                del self._in_hand[event.tenant_id]

    async def _give_back(self, event: OutboxEvent) -> None:
        """An event leased and not sent: due again at once, not after its lease."""
        try:
            await self.store.release_outbox([event.id], now=self.clock())
        except StoreError:
            log.exception(
                "cannot give a leased event back; its lease will end", extra=_fields(event)
            )

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
        slots = self._slots.get(event.tenant_id)
        if slots is None:
            slots = self._slots[event.tenant_id] = asyncio.Semaphore(
                self.settings.outbox.concurrency
            )
        async with slots:
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
