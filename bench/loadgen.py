"""A closed-loop HTTP/1.1 load generator that spends as little CPU per request as Python allows.

Each of `concurrency` keep-alive connections is an `asyncio.Protocol` with exactly one request
in flight: when a response is complete, `data_received` records its latency and writes the next
prebuilt request at once. No coroutine, task or future exists per request, and nothing is
formatted or signed during the run (the caller hands in finished request bytes), so on a small
machine the generator steals as little CPU from the server as possible.

Only responses *received* inside the measurement window (after `warmup`) count, like wrk does:
throughput is those responses over the window, latency is theirs (send to last byte). Requests
still in flight when the window closes are reported as `unfinished`.

    >>> summarize([1_000_000, 2_000_000, 3_000_000, 4_000_000]).p50_ms
    2.0
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

# After the window closes, give in-flight responses this long before cutting connections.
_DRAIN_SECONDS = 5.0
_RECONNECT_PAUSE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


@dataclass(frozen=True, slots=True)
class LoadResult:
    concurrency: int
    window_seconds: float
    completed: int  # responses, of any status, inside the window
    statuses: dict[int, int]
    errors: dict[str, int]  # connection-level failures inside the window, by kind
    unfinished: int  # requests still in flight when the window closed
    latency: LatencyStats
    # CPU seconds inside the window: "client" (this process) and one entry per probe.
    cpu_seconds: dict[str, float]
    requests_used: int  # prebuilt requests consumed (warm-up included)
    pool_wrapped: bool  # more requests were sent than prebuilt, so some were sent twice
    first_unexpected: bytes | None = None  # the head of the first response that was not expected

    @property
    def requests_per_second(self) -> float:
        return self.completed / self.window_seconds if self.window_seconds else 0.0

    def share_not(self, status: int) -> float:
        """Fraction of window responses and errors that were not `status`."""
        total = self.completed + sum(self.errors.values())
        return (total - self.statuses.get(status, 0)) / total if total else 1.0


def summarize(latencies_ns: Sequence[int]) -> LatencyStats:
    """Nearest-rank percentiles, in milliseconds."""
    if not latencies_ns:
        nan = math.nan
        return LatencyStats(nan, nan, nan, nan, nan)
    ordered = sorted(latencies_ns)

    def rank(p: float) -> float:
        index = max(0, math.ceil(p / 100 * len(ordered)) - 1)
        return ordered[index] / 1e6

    return LatencyStats(
        p50_ms=rank(50),
        p90_ms=rank(90),
        p99_ms=rank(99),
        max_ms=ordered[-1] / 1e6,
        mean_ms=sum(ordered) / len(ordered) / 1e6,
    )


@dataclass(slots=True)
class _Run:
    """Shared state of one run; mutated only from the event loop thread."""

    requests: Sequence[bytes]
    expected_status: int
    measure_from: int = 0  # perf_counter_ns; 0 until the run starts
    measure_until: int = 0
    stopping: bool = False
    next_index: int = 0
    latencies: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_unexpected: bytes | None = None
    live: set[_Connection] = field(default_factory=set)
    reconnects: set[asyncio.Task[None]] = field(default_factory=set)
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)

    def take_request(self) -> bytes:
        request = self.requests[self.next_index % len(self.requests)]
        self.next_index += 1
        return request

    def in_window(self, now: int) -> bool:
        return self.measure_from <= now <= self.measure_until


class _Connection(asyncio.Protocol):
    """One keep-alive connection that keeps one request in flight until the run stops."""

    def __init__(self, run: _Run, peer: tuple[str, int]) -> None:
        self._run = run
        self._peer = peer
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._body_start = -1  # offset of the body in _buffer once the head is parsed
        self._status = 0
        self._length = -1  # Content-Length, or -1 for chunked
        self._sent_at = 0
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._run.live.add(self)

    def send_next(self) -> None:
        run = self._run
        if run.stopping or self._transport is None or self._transport.is_closing():
            self.close()
            return
        self._sent_at = time.perf_counter_ns()
        self.in_flight = True
        self._transport.write(run.take_request())

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        while self.in_flight:
            end = self._response_end()
            if end < 0:
                return
            self._complete(self._buffer[:end])
            self._buffer = self._buffer[end:]
            self.send_next()

    def _response_end(self) -> int:
        """Offset just past the current response in the buffer, or -1 if it is incomplete."""
        buf = self._buffer
        if self._body_start < 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                return -1
            head = buf[:head_end].lower()
            self._status = int(buf[9:12])
            self._body_start = head_end + 4
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                self._length = int(head[at + 17 : line_end if line_end >= 0 else None])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._length = -1
            else:
                self._length = 0  # 204/304 or a server that closes; nothing to wait for
        if self._length >= 0:
            end = self._body_start + self._length
            return end if len(buf) >= end else -1
        return chunked_end(buf, self._body_start)

    def _complete(self, response: bytes) -> None:
        now = time.perf_counter_ns()
        run = self._run
        self.in_flight = False
        self._body_start = -1
        if run.in_window(now):
            run.latencies.append(now - self._sent_at)
            run.statuses[self._status] += 1
        if self._status != run.expected_status and run.first_unexpected is None:
            run.first_unexpected = response[:2048]

    def connection_lost(self, exc: Exception | None) -> None:
        run = self._run
        run.live.discard(self)
        if self.in_flight:
            if run.in_window(time.perf_counter_ns()):
                run.errors["connection lost" if exc is None else type(exc).__name__] += 1
            self.in_flight = False
        if not run.stopping:
            run.reconnects.add(asyncio.get_running_loop().create_task(_reconnect(run, self._peer)))
        elif not run.live:
            run.all_closed.set()


def chunked_end(buf: bytes, pos: int) -> int:
    """Offset past the last chunk (no trailers expected), or -1 while incomplete."""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return -1
        size = int(buf[pos:line_end].split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            return pos + 2 if len(buf) >= pos + 2 else -1
        pos += size + 2
        if pos > len(buf):
            return -1


async def _open(run: _Run, peer: tuple[str, int]) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _Connection(run, peer), *peer)
    return protocol


async def _reconnect(run: _Run, peer: tuple[str, int]) -> None:
    while not run.stopping:
        try:
            connection = await _open(run, peer)
        except OSError as exc:
            if run.in_window(time.perf_counter_ns()):
                run.errors[type(exc).__name__] += 1
            await asyncio.sleep(_RECONNECT_PAUSE_SECONDS)
            continue
        connection.send_next()
        return
    if not run.live:
        run.all_closed.set()


async def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    expected_status: int = 202,
    cpu_probes: Mapping[str, Callable[[], float]] | None = None,
) -> LoadResult:
    """Drive `concurrency` closed-loop connections for `warmup + duration` seconds.

    `requests` are complete HTTP/1.1 requests (keep-alive), taken in order and reused from the
    start if the run needs more of them. Each of `cpu_probes` answers CPU seconds used so far
    (by the server, by the whole machine…) and is sampled at both ends of the window.
    """
    if not requests:
        raise ValueError("no requests to send")
    run = _Run(requests=requests, expected_status=expected_status)
    connections = await asyncio.gather(*(_open(run, (host, port)) for _ in range(concurrency)))
    start = time.perf_counter_ns()
    run.measure_from = start + int(warmup * 1e9)
    run.measure_until = run.measure_from + int(duration * 1e9)
    for connection in connections:
        connection.send_next()

    await asyncio.sleep(warmup)
    probes = {"client": time.process_time, **(cpu_probes or {})}
    cpu_0 = {name: probe() for name, probe in probes.items()}
    await asyncio.sleep(max(0.0, (run.measure_until - time.perf_counter_ns()) / 1e9))
    cpu = {name: probe() - cpu_0[name] for name, probe in probes.items()}
    run.stopping = True

    # Connections close themselves after their in-flight response; idle ones are closed here.
    unfinished = sum(1 for c in run.live if c.in_flight)
    for connection in list(run.live):
        if not connection.in_flight:
            connection.close()
    if run.live:
        try:
            await asyncio.wait_for(run.all_closed.wait(), _DRAIN_SECONDS)
        except TimeoutError:
            for connection in list(run.live):
                connection.close()
            await asyncio.sleep(0.1)  # let connection_lost run before the loop closes
    for task in run.reconnects:
        task.cancel()
    await asyncio.gather(*run.reconnects, return_exceptions=True)

    return LoadResult(
        concurrency=concurrency,
        window_seconds=duration,
        completed=len(run.latencies),
        statuses=dict(run.statuses),
        errors=dict(run.errors),
        unfinished=unfinished,
        latency=summarize(run.latencies),
        cpu_seconds=cpu,
        requests_used=run.next_index,
        pool_wrapped=run.next_index > len(requests),
        first_unexpected=run.first_unexpected,
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (cheaper per callback), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_load_sync(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    expected_status: int = 202,
    cpu_probes: Mapping[str, Callable[[], float]] | None = None,
) -> LoadResult:
    """`run_load` on a fresh event loop of its own (uvloop when available)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(
            run_load(
                host,
                port,
                requests,
                concurrency=concurrency,
                duration=duration,
                warmup=warmup,
                expected_status=expected_status,
                cpu_probes=cpu_probes,
            )
        )
