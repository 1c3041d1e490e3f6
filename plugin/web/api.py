"""`/api/v1`: REST for the host and staff tools, one bearer token per tenant.

A token names its tenant; every lookup is made inside that tenant, so another tenant's citizen
or task is simply not found (404) and nothing about it leaks.
"""

from __future__ import annotations

import hmac
import json
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from plugin.config import EmbeddedCalendarSettings, TenantSettings
from plugin.domain.model import Circle, Member, OccurrenceRecord
from plugin.domain.states import state_of as occurrence_state
from plugin.services.assign import AssignRefusal, assign_occurrence
from plugin.services.calendar_access import issue_calendar_credential
from plugin.services.ingest import is_tombstone
from plugin.services.links import personal_urls, renew_links
from plugin.services.queries import TaskView, read_circle, read_task
from plugin.web import relief_api
from plugin.web.body import read_limited_body, require_json
from plugin.web.openapi import openapi_document
from plugin.web.problems import problem
from plugin.web.schemas import HOST_ID, InvalidEvent, MalformedEvent
from plugin.web.state import state_of


def routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/circles/{citizen_id:id}", get_circle, methods=["GET"], name="circle"),
        Route("/tasks/{task_id:id}", get_task, methods=["GET"], name="task"),
        Route(
            "/members/{member_id:id}/calendar-credentials",
            issue_calendar_credentials,
            methods=["POST"],
            name="calendar_credentials",
        ),
        Route(
            "/members/{member_id:id}/links/renew",
            renew_member_links,
            methods=["POST"],
            name="renew_links",
        ),
        Route("/relief-requests", create_relief_request, methods=["POST"], name="relief_requests"),
        Route(
            "/occurrences/{occurrence_id:id}/assign",
            assign,
            methods=["POST"],
            name="assign_occurrence",
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
        return problem(404, "Not Found", "No such citizen.", reason="unknown_circle")
    return JSONResponse(circle_json(circle))


async def get_task(request: Request) -> Response:
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    state = state_of(request)
    await state["applier"].catch_up()
    view = await read_task(state["store"], tenant.id, request.path_params["task_id"])
    if view is None:
        return problem(404, "Not Found", "No such task.", reason="unknown_task")
    if is_tombstone(view.task):
        # Only its cancellation came (before the task itself): nothing to show but that.
        return problem(
            404, "Not Found", "Only a cancellation of this task was received.", reason="cancelled"
        )
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
        return problem(404, "Not Found", "No such member.", reason="unknown_member")
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
        return problem(404, "Not Found", "No such member.", reason="unknown_member")
    return JSONResponse(
        {"feed_url": urls.feed_url, "setup_url": urls.setup_url},
        headers={"cache-control": "no-store"},
    )


_ASSIGN_PROBLEMS = {
    AssignRefusal.UNKNOWN_OCCURRENCE: (404, "No such occurrence."),
    AssignRefusal.UNKNOWN_MEMBER: (404, "No such member in any circle."),
    AssignRefusal.NOT_IN_CIRCLE: (422, "The member is not in this occurrence's circle."),
    AssignRefusal.FULL: (409, "The occurrence has no free place."),
    AssignRefusal.CANCELLED: (409, "The occurrence is cancelled."),
    AssignRefusal.OVER: (409, "The occurrence has ended."),
    AssignRefusal.VISIT: (409, "Visits are assigned by the host (visit.assigned)."),
}
MAX_ASSIGN_BYTES = 4096


def _member_id(body: bytes) -> str:
    """`{"member_id": "m-sara"}`; raises MalformedEvent (400) or InvalidEvent (422)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent("the body is not JSON") from exc
    member_id = data.get("member_id") if isinstance(data, dict) else None
    if not isinstance(member_id, str) or not HOST_ID.fullmatch(member_id):
        raise InvalidEvent([{"loc": ["member_id"], "msg": "a member id is required"}])
    if set(data) != {"member_id"}:
        raise InvalidEvent([{"loc": [], "msg": "only member_id is accepted"}])
    return member_id


async def assign(request: Request) -> Response:
    """Staff assign an occurrence: a staff member is bound to it (a claim through channel
    "staff"); anyone else is asked (a targeted offer they accept or decline themselves)."""
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    require_json(request)
    member_id = _member_id(await read_limited_body(request, MAX_ASSIGN_BYTES))
    state = state_of(request)
    await state["applier"].catch_up()
    result = await assign_occurrence(
        state["store"],
        tenant.id,
        request.path_params["occurrence_id"],
        member_id,
        actor="api",
        now=state["clock"](),
    )
    if isinstance(result, AssignRefusal):
        status, detail = _ASSIGN_PROBLEMS[result]
        return problem(status, HTTPStatus(status).phrase, detail, reason=result.value)
    return JSONResponse(
        {
            "occurrence_id": result.record.occurrence.id,
            "member_id": result.member.id,
            "outcome": result.outcome.value,
            "occurrence": occurrence_json(result.record),
        }
    )


async def create_relief_request(request: Request) -> Response:
    """A member asks for relief for a period (`plugin.web.relief_api`): their claims in it are
    offered to the others, and `relief.requested` goes to the host."""
    tenant = authenticate(request)
    if tenant is None:
        return unauthorized()
    return await relief_api.create_relief_request(request, tenant.id)


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
