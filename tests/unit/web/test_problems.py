import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.host.signing import BadSignature, InvalidWebhook, StaleTimestamp
from plugin.web.body import BodyTooLarge, UnsupportedMediaType
from plugin.web.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_STATUSES,
    install_handlers,
    problem,
    problem_exception_handlers,
    problem_from_exception,
)
from plugin.web.schemas import InvalidEvent, MalformedEvent, parse_event


def body_of(response: Response) -> dict[str, object]:
    return json.loads(bytes(response.body))  # type: ignore[no-any-return]


def test_minimal_problem() -> None:
    response = problem(404, "Not Found")
    assert response.status_code == 404
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert response.headers["content-type"] == "application/problem+json"
    assert body_of(response) == {"type": "about:blank", "title": "Not Found", "status": 404}


def test_problem_with_detail_type_extensions_and_headers() -> None:
    response = problem(
        401,
        "Unauthorized",
        "A valid bearer token is required.",
        type_="https://carecal.example/problems/token",
        headers={"WWW-Authenticate": "Bearer"},
        instance="/api/v1/circles/c-1",
        retry=False,
    )
    assert body_of(response) == {
        "type": "https://carecal.example/problems/token",
        "title": "Unauthorized",
        "status": 401,
        "detail": "A valid bearer token is required.",
        "instance": "/api/v1/circles/c-1",
        "retry": False,
    }
    assert response.headers["www-authenticate"] == "Bearer"


def test_type_cannot_be_smuggled_in_as_an_extension() -> None:
    with pytest.raises(TypeError):
        problem(400, "Bad Request", **{"type": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (MalformedEvent("Invalid JSON: expected value at line 1 column 1"), 400),
        (BadSignature("no matching v1 signature"), 401),
        (StaleTimestamp("too old"), 401),
        (InvalidWebhook("x"), 401),
        (BodyTooLarge(262144), 413),
        (UnsupportedMediaType(), 415),
        (
            InvalidEvent([{"loc": ["data", "version"], "msg": "Input should be a valid integer"}]),
            422,
        ),
    ],
)
def test_the_table_maps_each_error_tree(exc: Exception, status: int) -> None:
    response = problem_from_exception(exc)
    assert response.status_code == status
    body = body_of(response)
    assert body["status"] == status and body["detail"] == str(exc)


def test_subclasses_are_found_through_the_table_roots() -> None:
    assert StaleTimestamp not in PROBLEM_STATUSES
    assert problem_from_exception(StaleTimestamp("old")).status_code == 401


def test_schema_errors_are_listed() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(b'{"type": "task.cancelled", "data": {"id": "t-1", "citizen_id": "c-1"}}')
    body = body_of(problem_from_exception(info.value))
    assert body["title"] == "Unprocessable Entity"
    assert body["errors"] == [{"loc": ["data", "version"], "msg": "Field required"}]


def test_unknown_exceptions_are_500_without_detail() -> None:
    body = body_of(problem_from_exception(RuntimeError("db password is hunter2")))
    assert body == {"type": "about:blank", "title": "Internal Server Error", "status": 500}


def test_http_exceptions_keep_their_status_headers_and_detail() -> None:
    response = problem_from_exception(HTTPException(405, headers={"Allow": "POST"}))
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert body_of(response) == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
    }
    response = problem_from_exception(HTTPException(404, "no such tenant"))
    assert body_of(response)["detail"] == "no such tenant"


async def test_handlers_answer_problems_from_a_starlette_app() -> None:
    async def fail(request: Request) -> Response:
        raise {"signature": BadSignature("no matching v1 signature"), "json": MalformedEvent("x")}[
            request.path_params["kind"]
        ]

    app = Starlette(
        routes=[Route("/fail/{kind}", fail, methods=["POST"])],
        exception_handlers=problem_exception_handlers(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        signature = await client.post("/fail/signature")
        malformed = await client.post("/fail/json")
        missing = await client.get("/nowhere")
        wrong_method = await client.get("/fail/json")
    assert (signature.status_code, signature.json()["title"]) == (401, "Unauthorized")
    assert malformed.status_code == 400
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


async def test_install_handlers_on_a_built_app() -> None:
    async def fail(request: Request) -> Response:
        raise UnsupportedMediaType()

    app = Starlette(routes=[Route("/fail", fail, methods=["POST"])])
    install_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/fail")
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
