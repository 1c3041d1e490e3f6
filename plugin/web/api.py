"""`/api/v1`: REST for the host and staff tools, one bearer token per tenant.

A token names its tenant; every lookup is made inside that tenant, so another tenant's citizen
or task is simply not found (404) and nothing about it leaks.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from plugin.config import EmbeddedCalendarSettings, TenantSettings
from plugin.domain.model import Circle, Member, OccurrenceRecord
from plugin.domain.states import state_of as occurrence_state
from plugin.services.calendar_access import issue_calendar_credential
from plugin.services.links import personal_urls, renew_links
from plugin.services.queries import TaskView, read_circle, read_task
from plugin.web.openapi import openapi_document
from plugin.web.problems import problem
from plugin.web.state import state_of


def routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/circles/{citizen_id}", get_circle, methods=["GET"], name="circle"),
        Route("/tasks/{task_id}", get_task, methods=["GET"], name="task"),
        Route(
            "/members/{member_id}/calendar-credentials",
            issue_calendar_credentials,
            methods=["POST"],
            name="calendar_credentials",
        ),
        Route(
            "/members/{member_id}/links/renew",
            renew_member_links,
            methods=["POST"],
            name="renew_links",
        ),
    ]


def authenticate(request: Request) -> TenantSettings | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    found = None
    for tenant in state_of(request)["settings"].tenants:
        # Compare against every tenant, so timing says nothing about which one matched.
        if hmac.compare_digest(token.encode(), tenant.api_token.get_secret_value().encode()):
            found = tenant
    return found


def unauthorized() -> Response:
    response = problem(401, "Unauthorized", "A valid bearer token is required.")
    response.headers["www-authenticate"] = 'Bearer realm="carecal"'
    return response


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(state_of(request)["settings"].server.public_url))


async def get_circle(request: Request) -> Response:
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    state = state_of(request)
    await state["applier"].catch_up()  # read your writes: every accepted webhook is applied
    circle = await read_circle(state["store"], tenant.id, request.path_params["citizen_id"])
    if circle is None:
        return problem(404, "Not found")
    return JSONResponse(circle_json(circle))


async def get_task(request: Request) -> Response:
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    state = state_of(request)
    await state["applier"].catch_up()
    view = await read_task(state["store"], tenant.id, request.path_params["task_id"])
    if view is None:
        return problem(404, "Not found")
    return JSONResponse(task_json(view))


async def issue_calendar_credentials(request: Request) -> Response:
    """A new app password for the member's calendar on the embedded CalDAV server, shown
    once; it replaces (and so disables) the one issued before."""
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    state = state_of(request)
    settings = state["settings"]
    if not isinstance(settings.calendar, EmbeddedCalendarSettings):
        return problem(409, "Conflict", "Calendars are not on the embedded CalDAV server.")
    await state["applier"].catch_up()  # a member added by a webhook just accepted is known
    issued = await issue_calendar_credential(
        state["store"], tenant.id, request.path_params["member_id"], now=state["clock"]()
    )
    if issued is None:
        return problem(404, "Not found")
    public_url = settings.server.public_url
    urls = await personal_urls(
        state["store"],
        public_url,
        tenant.id,
        request.path_params["member_id"],
        now=state["clock"](),
    )
    return JSONResponse(
        {
            "caldav_url": f"{public_url}/dav/{issued.username}/",
            "username": issued.username,
            "password": issued.password,
            "setup_url": urls.setup_url,
            "feed_url": urls.feed_url,
        },
        status_code=201,
        headers={"cache-control": "no-store"},
    )


async def renew_member_links(request: Request) -> Response:
    """Revoke every personal link of the member (claim links, feed, setup page) and answer
    the new feed and setup addresses; their calendar copies get the new claim links."""
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    state = state_of(request)
    await state["applier"].catch_up()
    urls = await renew_links(
        state["store"],
        state["settings"].server.public_url,
        tenant.id,
        request.path_params["member_id"],
        now=state["clock"](),
    )
    if urls is None:
        return problem(404, "Not found")
    return JSONResponse(
        {"feed_url": urls.feed_url, "setup_url": urls.setup_url},
        headers={"cache-control": "no-store"},
    )


def circle_json(circle: Circle) -> dict[str, Any]:
    citizen = circle.citizen
    return {
        "citizen": {
            "id": citizen.id,
            "display_name": citizen.display_name,
            "timezone": citizen.timezone,
            "locale": citizen.locale,
        },
        "version": circle.version,
        "members": [member_json(m) for m in circle.members],
    }


def member_json(member: Member) -> dict[str, Any]:
    return {
        "id": member.id,
        "name": member.name,
        "email": member.email,
        "role": member.role,
        "visibility": member.visibility,
        "locale": member.locale,
        "calendar": member.calendar,
        # The member's own account: where, never the password.
        "external": (
            {"url": member.external.url, "username": member.external.username}
            if member.external
            else None
        ),
        "capacity": {
            "hours_per_week": member.capacity.hours_per_week,
            "tasks_per_week": member.capacity.tasks_per_week,
        },
        "availability": [
            {
                "weekday": w.weekday,
                "start": w.start.strftime("%H:%M"),
                "end": w.end.strftime("%H:%M"),
            }
            for w in member.availability
        ],
        "paused_until": member.paused_until.isoformat() if member.paused_until else None,
    }


def task_json(view: TaskView) -> dict[str, Any]:
    task = view.task
    return {
        "id": task.id,
        "citizen_id": task.citizen_id,
        "version": task.version,
        "kind": task.kind,
        "category": task.category,
        "status": task.status.value,
        "details": task.details,
        "location": task.location,
        "start": task.start.isoformat(),
        "end": task.end.isoformat(),
        "timezone": task.timezone,
        "people_needed": task.people_needed,
        "recurrence": task.recurrence,
        "claim_deadline_hours": task.claim_deadline_hours,
        "assigned_member_id": task.assigned_member_id,
        "occurrences": [occurrence_json(r) for r in view.occurrences],
    }


def occurrence_json(record: OccurrenceRecord) -> dict[str, Any]:
    occurrence = record.occurrence
    return {
        "id": occurrence.id,
        "start": occurrence.start.isoformat(),
        "end": occurrence.end.isoformat(),
        "status": occurrence_state(record).value,
        "free_slots": 0 if occurrence.cancelled else record.free_slots,
        "claims": [
            {"member_id": c.member_id, "channel": c.channel, "at": c.at.isoformat()}
            for c in record.claims
        ],
    }
