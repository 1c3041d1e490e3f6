"""The body limit, in-process and through a real server.

httpx.ASGITransport pulls the request body from the client lazily, one chunk per ASGI
`receive()`, so it can show that a chunked body stops being read at the limit. The uvicorn test
shows the same over a socket, where the server's own buffering and flow control are involved.
"""

import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plugin.web.body import (
    DEFAULT_LIMIT,
    BodyTooLarge,
    UnsupportedMediaType,
    read_limited_body,
    require_json,
)
from plugin.web.problems import problem_exception_handlers

LIMIT = 1024
CHUNK = 64 * 1024
FIFTY_MB = 50 * 1024 * 1024


class ReceiveCounter:
    """ASGI middleware counting the body bytes the app actually pulled from the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


def make_app(limit: int) -> ReceiveCounter:
    async def upload(request: Request) -> Response:
        if request.query_params.get("json"):
            require_json(request)
        body = await read_limited_body(request, limit)
        return JSONResponse({"length": len(body), "head": body[:16].decode("latin-1")})

    app = Starlette(
        routes=[Route("/upload", upload, methods=["POST"])],
        exception_handlers=problem_exception_handlers(),
    )
    return ReceiveCounter(app)


@pytest.fixture
def counter() -> ReceiveCounter:
    return make_app(LIMIT)


@pytest.fixture
async def client(counter: ReceiveCounter) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=counter)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def test_default_limit_is_the_documented_256_kib() -> None:
    assert DEFAULT_LIMIT == 256 * 1024


@pytest.mark.parametrize("size", [0, 1, LIMIT - 1, LIMIT])
async def test_bodies_up_to_the_limit_are_read_whole(client: httpx.AsyncClient, size: int) -> None:
    response = await client.post("/upload", content=b"x" * size)
    assert response.status_code == 200
    assert response.json()["length"] == size


async def test_declared_length_over_the_limit_is_refused_before_reading(
    client: httpx.AsyncClient, counter: ReceiveCounter
) -> None:
    response = await client.post("/upload", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    assert response.json() == {
        "type": "about:blank",
        "title": "Request Entity Too Large",
        "status": 413,
        "detail": f"request body is larger than {LIMIT} bytes",
        "max_bytes": LIMIT,
    }
    assert counter.received == 0


async def test_a_lying_small_content_length_is_caught_while_streaming() -> None:
    # ASGITransport does not check framing, so the app sees exactly what a buggy or hostile
    # server-side stack could hand it: a Content-Length that undersells the body.
    counter = make_app(LIMIT)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"y" * 600, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"10")],
        "server": ("test", 80),
        "client": ("test", 1),
    }
    await counter(scope, receive, send)
    assert sent[0]["status"] == 413
    assert counter.received == 1200  # two messages: 600 fits, 1200 is over


async def test_chunked_body_stops_being_read_at_the_limit(
    client: httpx.AsyncClient, counter: ReceiveCounter
) -> None:
    produced = 0

    async def fifty_megabytes() -> AsyncIterator[bytes]:
        nonlocal produced
        chunk = b"z" * CHUNK
        while produced < FIFTY_MB:
            produced += CHUNK
            yield chunk

    response = await client.post("/upload", content=fifty_megabytes())
    assert response.status_code == 413
    # No Content-Length on a generator body: the limit had to be found by counting.
    assert counter.received <= LIMIT + CHUNK
    assert produced <= 2 * CHUNK


async def test_small_chunks_are_joined(client: httpx.AsyncClient) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"ab", b"", b"cd", b"e" * 100):
            yield piece

    response = await client.post("/upload", content=pieces())
    assert response.json() == {"length": 104, "head": "abcd" + "e" * 12}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON"],
)
async def test_json_media_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        "/upload?json=1", content=b"{}", headers={"content-type": content_type}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/jsonx", "multipart/form-data"]
)
async def test_other_media_types_are_unsupported(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/upload?json=1", content=b"{}", headers=headers)
    assert response.status_code == 415
    assert response.json()["title"] == "Unsupported Media Type"


def test_errors_carry_their_meaning() -> None:
    assert BodyTooLarge(10).limit == 10
    assert "application/json" in str(UnsupportedMediaType())


# --- through a real server ---------------------------------------------------------------


@pytest.fixture(params=["h11", "httptools"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, ReceiveCounter]]:
    counter = make_app(DEFAULT_LIMIT)
    config = uvicorn.Config(
        counter,
        host="127.0.0.1",
        port=0,
        http=request.param,
        loop="asyncio",
        ws="none",
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port, counter
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_real_server_answers_413_long_before_a_chunked_50_mb_body_is_sent(
    server: tuple[int, ReceiveCounter],
) -> None:
    port, counter = server
    chunk = b"z" * CHUNK
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < FIFTY_MB:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection on us: also an answer
        try:
            sock.settimeout(5)
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass

    # The app pulled at most the limit plus what the server had buffered of the next chunk(s),
    # never the 50 MB the client was prepared to send.
    assert counter.received <= DEFAULT_LIMIT + 4 * CHUNK
    # Kernel socket buffers absorb a few MB before the client notices the answer.
    assert sent < 16 * 1024 * 1024
    # A reset can race the response on the wire; when the response got through, it is a 413.
    if answer:
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"application/problem+json" in answer
