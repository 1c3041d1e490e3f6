"""A counting TCP proxy in front of the CalDAV server: what each client costs on the wire.

Every client `bench.sync` compares (carecal, the hand-written floor, vdirsyncer) talks to the
server through this proxy, so all three are counted the same way, whatever HTTP library they
use. It counts

- bytes in both directions: the TCP payload, HTTP heads and bodies (no TCP/IP overhead);
- requests: the client-to-server stream is framed as HTTP/1.1 (`RequestFramer`: the head up to
  the blank line, then `Content-Length` bytes or a chunked body), so a request line inside a
  body is never counted; each request is counted by method when its head has arrived.

It runs in a process of its own (`CountingProxy`), so its work competes with neither carecal
nor the floor for this process' interpreter; the counters live in shared memory and are read
between measurements, when the clients are idle. Reading them mid-request would see a request
counted whose answer is still on its way; the bench never does.

    proxy = CountingProxy("127.0.0.1", xandikos_port)
    with proxy:
        before = proxy.counts()
        ...  # a client talks to f"http://127.0.0.1:{proxy.port}"
        cost = proxy.counts() - before   # Counts(requests=..., sent=..., received=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.sharedctypes
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from bench.loadgen import chunked_end

METHODS = (
    "PROPFIND",
    "REPORT",
    "GET",
    "PUT",
    "DELETE",
    "MKCALENDAR",
    "MKCOL",
    "PROPPATCH",
    "OPTIONS",
    "HEAD",
    "POST",
)
OTHER = len(METHODS)  # any other method
# Counter slots: one per method, then "other", then bytes up, bytes down, connections.
SENT, RECEIVED, CONNECTIONS = OTHER + 1, OTHER + 2, OTHER + 3
SLOTS = OTHER + 4
_READ_SIZE = 256 * 1024
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Counts:
    """What crossed the proxy: `sent` is client to server, `received` server to client."""

    by_method: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    received: int = 0
    connections: int = 0

    @property
    def requests(self) -> int:
        return sum(self.by_method.values())

    @property
    def bytes(self) -> int:
        return self.sent + self.received

    def __sub__(self, other: Counts) -> Counts:
        methods = {
            m: n - other.by_method.get(m, 0)
            for m, n in self.by_method.items()
            if n - other.by_method.get(m, 0)
        }
        return Counts(
            methods,
            self.sent - other.sent,
            self.received - other.received,
            self.connections - other.connections,
        )

    def methods(self) -> str:
        """`PROPFIND 2, REPORT 1`, in the order of METHODS."""
        return ", ".join(f"{m} {n}" for m, n in self.by_method.items())

    @classmethod
    def from_slots(cls, slots: MutableSequence[int]) -> Counts:
        names = (*METHODS, "other")
        methods = {names[i]: int(slots[i]) for i in range(OTHER + 1) if slots[i]}
        return cls(methods, int(slots[SENT]), int(slots[RECEIVED]), int(slots[CONNECTIONS]))


class RequestFramer:
    """Finds the requests in one connection's client-to-server byte stream, however it is cut
    into reads: `feed(data)` answers the methods of the requests whose heads completed.

    >>> framer = RequestFramer()
    >>> framer.feed(b"PUT /a HTTP/1.1\\r\\nContent-Length: 5\\r\\n\\r\\nGET /")
    ['PUT']
    >>> framer.feed(b"\\r\\nGET / HTTP/1.1\\r\\n\\r\\n")
    ['GET']
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._body_left = 0  # bytes of a Content-Length body still to skip
        self._chunked = False  # inside a chunked body, buffered until its end

    def feed(self, data: bytes) -> list[str]:
        methods: list[str] = []
        self._buffer += data
        while self._buffer:
            if self._body_left:
                taken = min(self._body_left, len(self._buffer))
                del self._buffer[:taken]
                self._body_left -= taken
                continue
            if self._chunked:
                end = chunked_end(bytes(self._buffer), 0)
                if end < 0:
                    break
                del self._buffer[:end]
                self._chunked = False
                continue
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise ValueError("an HTTP request head longer than 64 KiB")
                break
            head = bytes(self._buffer[:head_end]).decode("latin-1")
            del self._buffer[: head_end + 4]
            request_line, *header_lines = head.split("\r\n")
            methods.append(request_line.split(" ", 1)[0].upper())
            for line in header_lines:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    self._body_left = int(value)
                elif name == "transfer-encoding" and value.endswith("chunked"):
                    self._chunked = True
        return methods


def _count(slots: MutableSequence[int], methods: list[str]) -> None:
    for method in methods:
        slot = METHODS.index(method) if method in METHODS else OTHER
        slots[slot] += 1


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    slots: MutableSequence[int],
    slot: int,
    framer: RequestFramer | None,
) -> None:
    try:
        while data := await reader.read(_READ_SIZE):
            # Counted before it is passed on: once a client holds an answer, it is counted.
            slots[slot] += len(data)
            if framer is not None:
                _count(slots, framer.feed(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def serve(
    upstream_host: str, upstream_port: int, slots: MutableSequence[int], host: str = "127.0.0.1"
) -> asyncio.Server:
    """Start the proxy on a free port of `host` in this event loop; counts go to `slots`."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        slots[CONNECTIONS] += 1
        try:
            server_r, server_w = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pump(client_r, server_w, slots, SENT, RequestFramer()),
                _pump(server_r, client_w, slots, RECEIVED, None),
            )
        finally:
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    return await asyncio.start_server(handle, host, 0, backlog=256)


def _run(
    upstream_host: str,
    upstream_port: int,
    slots: MutableSequence[int],
    port_out: multiprocessing.sharedctypes.Synchronized,  # type: ignore[type-arg]
) -> None:
    async def main() -> None:
        server = await serve(upstream_host, upstream_port, slots)
        port_out.value = server.sockets[0].getsockname()[1]
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class CountingProxy:
    """The proxy in a child process (spawned, so no event loop or thread is inherited)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._slots = context.Array("q", SLOTS, lock=False)
        self._port = context.Value("i", 0)
        self._process = context.Process(
            target=_run,
            args=(upstream_host, upstream_port, self._slots, self._port),
            name="carecal-bench-proxy",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._port.value)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def counts(self) -> Counts:
        return Counts.from_slots(self._slots)

    def start(self, timeout: float = 20.0) -> None:
        import time

        self._process.start()
        deadline = time.monotonic() + timeout
        while not self._port.value:
            if not self._process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the counting proxy did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
