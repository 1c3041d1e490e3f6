"""`POST /webhooks/{tenant}`: host events, Standard Webhooks signed.

Checks run cheapest and safest first, and nothing unauthenticated is parsed:

    unknown tenant 404 → not JSON 415 → body over the limit 413 (while reading) →
    bad or stale signature 401 → malformed JSON 400 → schema errors 422 →
    202 once recorded durably in the inbox, or 200 for a webhook-id seen before

The inbox applier applies the event right after (`plugin.services.inbox`); an event older than
what is stored is acknowledged here and ignored there.
"""

from __future__ import annotations

import logging
import re
import time
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.host.signing import InvalidWebhook, StaleTimestamp, verify
from plugin.services.calendars import literal_url_problem
from plugin.services.ports import InboxItem, StoreError
from plugin.web.body import BodyTooLarge, read_limited_body
from plugin.web.problems import PROBLEM_STATUSES, problem, problem_from_exception
from plugin.web.schemas import (
    CircleUpdated,
    EventError,
    FieldError,
    HostEvent,
    MalformedEvent,
    parse_event,
)
from plugin.web.state import state_of

log = logging.getLogger(__name__)

# Constant bodies, encoded once: this is the hot path of every host event.
_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'


async def receive(request: Request) -> Response:
    state = state_of(request)
    settings, metrics = state["settings"], state["metrics"]
    started = time.perf_counter()

    def reject(reason: str, status: int, detail: str, **ext: Any) -> Response:
        """A problem titled as its status (RFC 9457 with type about:blank), what went wrong
        in `detail`, and `reason` for the host's code to tell the cases apart."""
        metrics.webhooks_rejected.labels(reason).inc()
        log.info("webhook rejected", extra={"reason": reason, "status": status})
        # After a 413 the rest of the upload is unread: closing stops the server draining it.
        headers = {"connection": "close"} if status == 413 else None
        phrase = HTTPStatus(status).phrase
        return problem(status, phrase, detail, headers=headers, reason=reason, **ext)

    tenant = settings.tenant(request.path_params["tenant"])
    if tenant is None:
        return reject("unknown_tenant", 404, "Unknown tenant.")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return reject("unsupported_media_type", 415, "The body must be application/json.")
    try:
        body = await read_limited_body(request, settings.server.max_body_bytes)
    except BodyTooLarge:
        limit = settings.server.max_body_bytes
        return reject(
            "too_large", 413, f"The body is over the limit of {limit} bytes.", max_bytes=limit
        )
    try:
        verify(
            tenant.webhook_secrets,
            request.headers,
            body,
            now=time.time(),
            tolerance_seconds=settings.server.webhook_tolerance_seconds,
        )
    except StaleTimestamp:
        tolerance = settings.server.webhook_tolerance_seconds
        return reject("stale", 401, f"The webhook-timestamp is more than {tolerance} s from now.")
    except InvalidWebhook as exc:
        return reject("bad_signature", 401, f"Invalid webhook signature: {exc}")
    try:
        event = parse_event(body)
    except MalformedEvent as exc:
        return reject("malformed_json", 400, f"Malformed JSON: {exc}")
    except EventError as exc:
        return reject("schema", 422, "The event does not match the schema.", errors=exc.errors)

    if not tenant.data_keys and _has_external_calendar(event):
        return reject(
            "no_data_key",
            422,
            "External calendars are not enabled for this tenant: it has no data_key to "
            "encrypt members' calendar passwords with.",
        )
    if not tenant.allow_private_calendar_urls:
        errors = _private_calendar_urls(event)
        if errors:
            return reject(
                "private_calendar_url",
                422,
                "A member's calendar URL points at a non-public address.",
                errors=errors,
            )
    item = InboxItem(
        tenant_id=tenant.id,
        webhook_id=request.headers["webhook-id"],
        event_type=event.type,
        body=body,
        received_at=state["clock"](),
    )
    try:
        new = await state["inbox"].accept(item)
    except StoreError:
        # Not recorded, so not accepted: the host keeps it and retries (Standard Webhooks).
        log.exception("webhook could not be recorded")
        response = reject("store_unavailable", 503, "Not recorded; please retry.")
        response.headers["retry-after"] = "5"
        return response
    metrics.count_accepted(tenant.id, event.type, "new" if new else "duplicate")
    metrics.request_seconds.observe(time.perf_counter() - started)
    if not new:
        return Response(_DUPLICATE, status_code=200, media_type="application/json")
    return Response(_ACCEPTED, status_code=202, media_type="application/json")


def _private_calendar_urls(event: HostEvent) -> list[FieldError]:
    """Members' calendar URLs whose host is literally a non-public address, in the shape of
    the schema errors. Names are resolved before each sync (`services.calendars`)."""
    if not isinstance(event, CircleUpdated):
        return []
    errors: list[FieldError] = []
    for index, member in enumerate(event.data.members):
        if member.external is None:
            continue
        found = literal_url_problem(member.external.url)
        if found is not None:
            errors.append({"loc": ["data", "members", index, "external", "url"], "msg": found})
    return errors


def _has_external_calendar(event: HostEvent) -> bool:
    return isinstance(event, CircleUpdated) and any(
        member.external is not None for member in event.data.members
    )


class DirectWebhooks:
    """ASGI middleware: `POST /webhooks/{tenant}` straight to `receive`, past the router and
    Starlette's exception middleware, which every host event would otherwise go through
    (bench.webhooks: ~20% more webhooks a second). The route itself stays registered (the
    OpenAPI document, other methods answered 405 by the router); what the skipped layers do
    for it is done here: the route in the scope (the access log names its template) and
    problem+json for the exceptions the app maps (`PROBLEM_STATUSES`). Anything else raised
    goes on to the server-error middleware as before."""

    def __init__(self, app: ASGIApp, route: Route) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, read: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            found = _WEBHOOK_PATH.fullmatch(scope["path"])
            if found is not None:
                scope["route"] = self.route
                scope["endpoint"] = self.route.endpoint
                scope["path_params"] = {"tenant": found[1]}
                try:
                    response = await receive(Request(scope, read, send))
                except _MAPPED as exc:
                    response = problem_from_exception(exc)
                await response(scope, read, send)
                return
        await self.app(scope, read, send)


_WEBHOOK_PATH = re.compile(r"/webhooks/([^/]+)")
_MAPPED: tuple[type[Exception], ...] = (HTTPException, *PROBLEM_STATUSES)
