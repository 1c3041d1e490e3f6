"""Outbox delivery: the round, the order per key, retries, dead letters and at-least-once, on the
in-memory store with the real sender over httpx.MockTransport (a plain handler function)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.host.events import HttpEventSender, make_client
from adapters.host.signing import verify
from adapters.memory import MemoryStore
from plugin.config import Settings, validate_settings
from plugin.metrics import Metrics
from plugin.services.delivery import OutboxDelivery, Outcome, event_body
from plugin.services.ports import HostUnreachable, OutboxEvent

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"north-events-key-0123456789abcde").decode()
HOOK = "whsec_" + base64.b64encode(b"north-webhook-key-0123456789abcd").decode()
URL = "https://host.example/carecal/events"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def settings(**outbox: Any) -> Settings:
    return validate_settings(
        {
            "outbox": {"backoff_base_seconds": 1, "backoff_max_seconds": 60, **outbox},
            "tenants": [
                {"id": "north", "webhook_secret": HOOK, "api_token": "north-api-token-0123",
                 "host_events_url": URL, "host_events_secret": SECRET},
                {"id": "quiet", "webhook_secret": HOOK, "api_token": "quiet-api-token-0123"},
            ],
        }
    )  # fmt: skip


class Host:
    """The host as a handler: verifies every signature, answers what `answer` says."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.answer: Callable[[dict[str, Any]], int] = lambda event: 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        now = int(request.headers["webhook-timestamp"])
        verify([SECRET], request.headers, request.content, now=now)
        event = json.loads(request.content)
        self.seen.append((request.headers["webhook-id"], event))
        return httpx.Response(self.answer(event))

    def ids(self) -> list[str]:
        return [webhook_id for webhook_id, _ in self.seen]


def delivery(
    store: MemoryStore, host: Host, clock: Clock, config: Settings | None = None
) -> OutboxDelivery:
    sender = HttpEventSender(httpx.AsyncClient(transport=httpx.MockTransport(host)))
    return OutboxDelivery(
        store, sender, config or settings(), metrics=Metrics(), clock=clock, draw=lambda: 0.5
    )


async def add(store: MemoryStore, *events: tuple[str, str, str | None]) -> list[str]:
    ids: list[str] = []
    async with store.transaction() as tx:
        for tenant_id, event_type, key in events:
            ids.append(
                await tx.add_outbox(
                    tenant_id, event_type, {"task_id": key, "n": len(ids)}, now=NOW,
                    ordering_key=key,
                )
            )  # fmt: skip
    return ids


def pending(store: MemoryStore) -> dict[str, OutboxEvent]:
    return {e.id: e for e in store._state.outbox.values() if e.delivered_at is None}


def test_the_body_is_type_tenant_and_data() -> None:
    event = OutboxEvent("msg_1", "north", "task.unfilled", {"free_slots": 1}, "t-1", NOW)
    assert event_body(event) == b'{"type":"task.unfilled","tenant":"north","data":{"free_slots":1}}'


async def test_a_round_delivers_every_due_event_signed() -> None:
    store, host, clock = MemoryStore(), Host(), Clock()
    ids = await add(store, ("north", "task.claimed", "t-1"), ("north", "task.claimed", "t-2"))
    worker = delivery(store, host, clock)
    done = await worker.deliver_due()
    assert done.leased == 2 and done.count(Outcome.DELIVERED) == 2
    assert sorted(host.ids()) == sorted(ids)
    assert {e["tenant"] for _, e in host.seen} == {"north"}
    assert {e["type"] for _, e in host.seen} == {"task.claimed"}
    assert pending(store) == {}
    assert (await worker.deliver_due()).leased == 0
    metric = worker.metrics.outbox_delivered.labels("north", "task.claimed")
    assert metric._value.get() == 2


async def test_a_failing_event_holds_back_its_key_and_nothing_else() -> None:
    store, host, clock = MemoryStore(), Host(), Clock()
    first, second, other = await add(
        store,
        ("north", "task.claimed", "t-1"),
        ("north", "task.released", "t-1"),
        ("north", "task.claimed", "t-2"),
    )
    host.answer = lambda event: 503 if event["data"]["task_id"] == "t-1" else 204
    worker = delivery(store, host, clock)
    await worker.deliver_due()
    assert host.ids() == [first, other]  # t-1's second event waits behind its first
    retry = pending(store)[first]
    assert retry.attempts == 1 and retry.next_attempt_at == NOW + timedelta(seconds=0.5)

    clock.now += timedelta(seconds=1)
    await worker.deliver_due()
    assert host.ids() == [first, other, first]  # again, with the same webhook-id
    host.answer = lambda event: 200
    clock.now += timedelta(seconds=2)
    await worker.deliver_due()
    await worker.deliver_due()
    assert host.ids() == [first, other, first, first, second]
    assert pending(store) == {}


async def test_a_connection_error_is_retried_like_an_error_answer() -> None:
    store, clock = MemoryStore(), Clock()
    [event_id] = await add(store, ("north", "task.claimed", "t-1"))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    sender = HttpEventSender(httpx.AsyncClient(transport=httpx.MockTransport(down)))
    worker = OutboxDelivery(store, sender, settings(), metrics=Metrics(), clock=clock)
    done = await worker.deliver_due()
    assert done.outcomes == (Outcome.RETRY,)
    assert store._state.outbox[event_id].attempts == 1
    assert worker.metrics.outbox_failed.labels("north", "unreachable")._value.get() == 1


async def test_dead_after_the_configured_age_then_replayed_with_the_same_id() -> None:
    store, host, clock = MemoryStore(), Host(), Clock()
    [event_id] = await add(store, ("north", "task.claimed", "t-1"))
    host.answer = lambda event: 500
    worker = delivery(store, host, clock, settings(dead_after_hours=1))
    rounds = 0
    while pending(store)[event_id].dead_at is None:
        clock.now += timedelta(minutes=1)
        await worker.deliver_due()
        rounds += 1
        assert rounds < 200
    dead = pending(store)[event_id]
    assert dead.dead_at is not None and dead.dead_at >= NOW + timedelta(hours=1)
    assert worker.metrics.outbox_dead.labels("north", "expired")._value.get() == 1
    tries = len(host.seen)
    clock.now += timedelta(hours=5)
    assert (await worker.deliver_due()).leased == 0  # dead letters are left alone

    host.answer = lambda event: 200
    assert await store.replay_dead_outbox(now=clock.now) == 1
    await worker.deliver_due()
    assert host.ids()[tries:] == [event_id]
    assert pending(store) == {}


async def test_a_tenant_without_a_url_keeps_its_events_as_dead_letters() -> None:
    store, host, clock = MemoryStore(), Host(), Clock()
    [quiet] = await add(store, ("quiet", "task.claimed", "t-1"))
    worker = delivery(store, host, clock)
    done = await worker.deliver_due()
    assert done.outcomes == (Outcome.DEAD,) and host.seen == []
    assert store._state.outbox[quiet].dead_at == NOW
    assert await store.outbox_counts() == {"pending": 0, "dead": 1}
    assert worker.metrics.outbox_dead.labels("quiet", "no_url")._value.get() == 1
    # Once replayed they try again (and, still without a URL, are kept again).
    assert await store.replay_dead_outbox(now=NOW, tenant_id="quiet") == 1
    assert (await worker.deliver_due()).outcomes == (Outcome.DEAD,)


async def test_a_delivery_that_cannot_be_recorded_is_sent_again_later() -> None:
    store, host, clock = MemoryStore(), Host(), Clock()
    [event_id] = await add(store, ("north", "task.claimed", "t-1"))

    def answer_then_lose_the_database(event: dict[str, Any]) -> int:
        store.unavailable = True
        return 200

    host.answer = answer_then_lose_the_database
    worker = delivery(store, host, clock)
    assert (await worker.deliver_due()).outcomes == (Outcome.UNRECORDED,)
    store.unavailable = False
    host.answer = lambda event: 200
    assert (await worker.deliver_due()).leased == 0  # leased: nobody else sends it meanwhile
    clock.now += timedelta(seconds=worker.lease_seconds)
    await worker.deliver_due()
    assert host.ids() == [event_id, event_id]  # at least once, same webhook-id
    assert pending(store) == {}


async def test_stopping_sends_nothing_new_and_gives_the_batch_back() -> None:
    store, host, clock = MemoryStore(), Host(), Clock()
    ids = await add(store, *(("north", "task.claimed", f"t-{n}") for n in range(5)))
    worker = delivery(store, host, clock)
    stopping = asyncio.Event()
    stopping.set()
    done = await worker.deliver_due(stopping)
    assert done.count(Outcome.RETURNED) == 5 and host.seen == []
    # Given back: due again at once, for this worker or another.
    assert sorted(e.id for e in await store.due_outbox(now=clock.now, limit=10)) == sorted(ids)


async def test_requests_in_flight_are_bounded_by_concurrency() -> None:
    store, clock = MemoryStore(), Clock()
    await add(store, *(("north", "task.claimed", f"t-{n}") for n in range(12)))
    in_flight = peak = 0

    async def slow_host(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200)

    sender = HttpEventSender(httpx.AsyncClient(transport=httpx.MockTransport(slow_host)))
    worker = OutboxDelivery(store, sender, settings(concurrency=3), metrics=Metrics(), clock=clock)
    assert (await worker.deliver_due()).count(Outcome.DELIVERED) == 12
    assert peak == 3


async def test_a_host_that_never_answers_holds_up_no_other_tenant() -> None:
    """Tenant "slow"'s host takes every request to its timeout (a firewall that drops): its
    events wait, and another municipality's go out at once, including one recorded while
    slow's requests hang. Over real TCP, with the sender's own client and timeout."""
    answered: list[float] = []

    async def hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.closing(writer), contextlib.suppress(ConnectionError):
            await reader.read()  # never answers; the client gives up at its timeout

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with (
            contextlib.closing(writer),
            contextlib.suppress(asyncio.IncompleteReadError, ConnectionError),
        ):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                answered.append(asyncio.get_running_loop().time())
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()

    slow_server = await asyncio.start_server(hangs, "127.0.0.1", 0)
    north_server = await asyncio.start_server(answers, "127.0.0.1", 0)
    urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/events"
            for s in (slow_server, north_server)]  # fmt: skip
    config = validate_settings(
        {
            "outbox": {"concurrency": 2, "timeout_seconds": 2, "poll_seconds": 0.1},
            "tenants": [
                {"id": tenant, "webhook_secret": HOOK, "api_token": f"{tenant}-api-token-0123",
                 "host_events_url": url, "host_events_secret": SECRET}
                for tenant, url in zip(("slow", "north"), urls, strict=True)
            ],
        }
    )  # fmt: skip
    store, clock = MemoryStore(), Clock()
    await add(store, *(("slow", "task.claimed", f"s-{n}") for n in range(10)))
    [first] = await add(store, ("north", "task.claimed", "n-1"))
    async with make_client(config.outbox, hosts=2) as client:
        worker = OutboxDelivery(
            store, HttpEventSender(client), config, metrics=Metrics(), clock=clock
        )
        stopping = asyncio.Event()
        started = asyncio.get_running_loop().time()
        running = asyncio.create_task(worker.run(stopping))
        await asyncio.sleep(0.5)
        [second] = await add(store, ("north", "task.claimed", "n-2"))
        recorded = asyncio.get_running_loop().time()
        for _ in range(40):
            if second not in pending(store):
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await running
    for server in (slow_server, north_server):
        server.close()
        await server.wait_closed()
    assert first not in pending(store) and second not in pending(store)
    # Well before slow's first requests time out (2 s each; it waited for five waves of them)
    assert answered[0] - started < 1.5
    assert answered[1] - recorded < 1.5
    # slow's: two at a time timed out, retried later; none delivered, none lost
    slow = [e for e in pending(store).values() if e.tenant_id == "slow"]
    assert len(slow) == 10 and max(e.attempts for e in slow) == 1


@contextlib.asynccontextmanager
async def looping(
    store: MemoryStore,
    host: Callable[[httpx.Request], Awaitable[httpx.Response]],
    config: Settings,
    clock: Clock,
) -> AsyncIterator[OutboxDelivery]:
    """`OutboxDelivery.run` going, `host` answering; stopped (within a second) at the end."""
    sender = HttpEventSender(httpx.AsyncClient(transport=httpx.MockTransport(host)))
    worker = OutboxDelivery(store, sender, config, metrics=Metrics(), clock=clock)
    stopping = asyncio.Event()
    running = asyncio.create_task(worker.run(stopping))
    try:
        yield worker
    finally:
        stopping.set()
        await asyncio.wait_for(running, timeout=1)


async def test_the_loop_stops_after_its_sends_in_flight_and_leaves_the_rest_due() -> None:
    store, clock = MemoryStore(), Clock()
    ids = await add(store, *(("north", "task.claimed", f"t-{n}") for n in range(5)))
    sent: list[str] = []

    async def slow_host(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        sent.append(request.headers["webhook-id"])
        return httpx.Response(200)

    async with looping(store, slow_host, settings(concurrency=2, poll_seconds=0.05), clock):
        await asyncio.sleep(0.1)  # two in flight (its two slots), two in hand waiting for one
    assert sent == ids[:2]  # the sends in flight finished, and were recorded
    assert sorted(pending(store)) == sorted(ids[2:])
    due = await store.due_outbox(now=clock.now, limit=10)
    assert sorted(e.id for e in due) == sorted(ids[2:]) and {e.attempts for e in due} == {0}


async def test_the_loop_leases_again_as_a_tenants_share_frees_not_each_poll() -> None:
    """One tenant's backlog goes out at its host's pace: the loop leases again as soon as
    half its share (twice `concurrency`) is free, not once per `poll_seconds`."""
    store, clock = MemoryStore(), Clock()
    ids = await add(store, *(("north", "task.claimed", f"t-{n}") for n in range(60)))

    async def host(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(200)

    async with looping(store, host, settings(concurrency=4, poll_seconds=5), clock):
        for _ in range(100):
            if not pending(store):
                break
            await asyncio.sleep(0.02)
    assert pending(store) == {} and len(ids) == 60  # 8 at a time: a poll each, 40 s


class Hosts:
    """`EventSender` for tenants whose hosts answer `slow` (every request takes `delay`
    and fails, as a timeout) or at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.delivered: dict[str, float] = {}

    async def send(
        self, url: str, secret: str, event_id: str, body: bytes, *, timestamp: int
    ) -> None:
        if "slow" in url:
            await asyncio.sleep(self.delay)
            raise HostUnreachable("ReadTimeout")
        self.delivered[event_id] = asyncio.get_running_loop().time()


@pytest.mark.parametrize(("slow_tenants", "concurrency"), [(1, 50), (7, 8)])
async def test_no_number_of_slow_hosts_fills_what_another_tenant_waits_for(
    slow_tenants: int, concurrency: int
) -> None:
    """Slow hosts with backlogs older than north's event: each holds its own share, and
    north's event goes out at once (their backlogs filled the batch before: north's waited
    for them to drain, backlog / concurrency x timeout)."""
    names = [f"slow{n}" for n in range(slow_tenants)]
    config = validate_settings(
        {
            "outbox": {"batch_size": 100, "concurrency": concurrency, "poll_seconds": 0.05},
            "tenants": [
                {"id": t, "webhook_secret": HOOK, "api_token": f"{t}-api-token-0123456",
                 "host_events_url": f"https://{t}.example/events", "host_events_secret": SECRET}
                for t in [*names, "north"]
            ],
        }
    )  # fmt: skip
    store, clock = MemoryStore(), Clock()
    for t in names:
        await add(store, *((t, "task.claimed", f"{t}-k{n}") for n in range(8 * concurrency)))
    [north] = await add(store, ("north", "task.claimed", "n-1"))
    hosts = Hosts(delay=2.0)
    worker = OutboxDelivery(store, hosts, config, metrics=Metrics(), clock=clock)
    stopping = asyncio.Event()
    started = asyncio.get_running_loop().time()
    running = asyncio.create_task(worker.run(stopping))
    for _ in range(200):
        if north in hosts.delivered:
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(running, 5)
    # Before the first slow request ends (2 s)
    assert hosts.delivered.get(north, float("inf")) - started < 1.5


async def test_an_event_whose_slot_comes_as_the_loop_stops_is_given_back() -> None:
    """One slot: A in flight, B waiting for it. The loop stops as A's answer comes; B gets
    the slot, sends nothing, and is due again at once (not after its lease)."""
    store, clock = MemoryStore(), Clock()
    a, b = await add(store, ("north", "task.claimed", "t-1"), ("north", "task.claimed", "t-2"))
    stopping = asyncio.Event()
    sent: list[str] = []

    class AnswersAsItStops:
        async def send(
            self, url: str, secret: str, event_id: str, body: bytes, *, timestamp: int
        ) -> None:
            sent.append(event_id)
            await stopping.wait()

    config = settings(concurrency=1, poll_seconds=5)
    worker = OutboxDelivery(store, AnswersAsItStops(), config, metrics=Metrics(), clock=clock)
    running = asyncio.create_task(worker.run(stopping))
    for _ in range(50):
        await asyncio.sleep(0)
    assert sent == [a]
    stopping.set()
    await asyncio.wait_for(running, 2)
    assert sent == [a] and list(pending(store)) == [b]
    assert [e.id for e in await store.due_outbox(now=clock.now, limit=10)] == [b]


async def test_the_loop_lets_go_of_finished_sends_while_leases_come_back_full() -> None:
    """Twenty tenants' backlog, every lease full: the loop kept every finished send's task
    (2 500 here) until a lease came back short."""
    tenants = [f"t{n}" for n in range(20)]
    config = validate_settings(
        {
            "outbox": {"batch_size": 10, "concurrency": 2, "poll_seconds": 5},
            "tenants": [
                {"id": t, "webhook_secret": HOOK, "api_token": f"{t}-api-token-0123456",
                 "host_events_url": f"https://{t}.example/events", "host_events_secret": SECRET}
                for t in tenants
            ],
        }
    )  # fmt: skip

    class RoundTrip(MemoryStore):
        async def lease_outbox(self, **kwargs: Any) -> list[OutboxEvent]:  # type: ignore[override]
            for _ in range(5):
                await asyncio.sleep(0)  # a lease takes a round trip, as a database's does
            return await super().lease_outbox(**kwargs)

    class Instant:
        sent = 0

        async def send(
            self, url: str, secret: str, event_id: str, body: bytes, *, timestamp: int
        ) -> None:
            self.sent += 1

    def finished_sends() -> int:
        gc.collect()
        return sum(
            1
            for o in gc.get_objects()
            if isinstance(o, asyncio.Task) and o.done() and "_hand" in repr(o.get_coro())
        )

    store, sender = RoundTrip(), Instant()
    async with store.transaction() as tx:
        for n in range(1500):
            await tx.add_outbox(tenants[n % 20], "task.claimed", {}, now=NOW, ordering_key=None)
    worker = OutboxDelivery(store, sender, config, metrics=Metrics(), clock=Clock())
    stopping = asyncio.Event()
    running = asyncio.create_task(worker.run(stopping))
    peak = 0
    while sender.sent < 1200 and not running.done():
        await asyncio.sleep(0)
        if sender.sent % 100 == 0:
            peak = max(peak, finished_sends())
    stopping.set()
    await asyncio.wait_for(running, 10)
    assert peak <= 100  # a lease's worth, and each tenant's share (4 x 20)
