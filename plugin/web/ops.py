"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from plugin.services.ports import StoreUnavailable
from plugin.web.state import state_of


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/readyz", readyz, methods=["GET"], name="readyz"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
    ]


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await state_of(request)["store"].ping()
    except StoreUnavailable:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})


async def metrics(request: Request) -> Response:
    state = state_of(request)
    try:
        state["metrics"].set_job_counts(await state["store"].job_counts())
        state["metrics"].set_inbox_counts(await state["store"].inbox_counts())
        state["metrics"].set_outbox_counts(await state["store"].outbox_counts())
    except StoreUnavailable:
        pass  # the gauges keep their last values; /readyz reports the outage
    return Response(
        state["metrics"].render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
