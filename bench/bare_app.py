"""The baseline target: the least a Starlette app can do for a webhook.

It reads the body (so the transfer cost is the same as for carecal) and answers 202 with an
empty body. Served by the same uvicorn, with the same options, as `carecal serve`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    await request.body()
    return Response(status_code=202)


app = Starlette(routes=[Route("/webhooks/{tenant}", accept, methods=["POST"])])
