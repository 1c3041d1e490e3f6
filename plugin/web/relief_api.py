"""`POST /api/v1/relief-requests`: the host (or a staff tool) asks relief for a member.

Body: `{"citizen_id": "c-123", "member_id": "m-anna", "start": ..., "end": ...}`. `start` and
`end` are ISO 8601: a date-time with an offset, a local date-time without one (the citizen's
time zone), or a date (whole days: `start` from 00:00, `end` through that day). Answers 201
with the request (`id`, `status`, `citizen_id`, `member_id`, `start`, `end` with offset) and
the occurrences whose claims were released (`released`); what else happens is
`plugin.services.relief`.

A host that may send a request again (a retry after a timeout) names it with an
`Idempotency-Key` header (1-255 visible ASCII characters, its own per request): the same key
again answers 200 with the request it made, and asks nothing twice (`released` then lists
nothing: the first answer had them); with another body, 422 (`reason`: `idempotency_key_reused`).

    POST /api/v1/relief-requests {"citizen_id": "c-123", "member_id": "m-anna",
                                  "start": "2027-03-08", "end": "2027-03-14"}
    201 {"id": "r-5f0c…", "status": "requested", ..., "start": "2027-03-08T00:00:00+01:00",
         "end": "2027-03-15T00:00:00+01:00", "released": ["t-1_20270309T1000", …]}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from http import HTTPStatus
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from plugin.services.relief import ReliefRefusal, request_relief
from plugin.web.body import read_limited_body, require_json
from plugin.web.problems import problem
from plugin.web.schemas import HOST_ID, FieldError, InvalidEvent, MalformedEvent
from plugin.web.state import state_of

__all__ = ["ReliefBody", "create_relief_request", "parse_moment", "parse_relief_body"]

MAX_BYTES = 4096
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
MIN_YEAR, MAX_YEAR = 1900, 9000  # far beyond any relief period; keeps date arithmetic in range
FIELDS = ("citizen_id", "member_id", "start", "end")

_REFUSALS = {
    ReliefRefusal.UNKNOWN_CIRCLE: (404, "No such citizen."),
    ReliefRefusal.NOT_IN_CIRCLE: (422, "The member is not in this citizen's circle."),
    ReliefRefusal.ROLE: (422, "Staff members cannot ask for relief here."),
    ReliefRefusal.INVALID_PERIOD: (
        422,
        "The period must end after it starts, not be over, and last at most a year.",
    ),
}


@dataclass(frozen=True, slots=True)
class ReliefBody:
    citizen_id: str
    member_id: str
    start: str
    end: str


def parse_relief_body(body: bytes) -> ReliefBody:
    """Raises MalformedEvent (400) or InvalidEvent (422, naming each bad field)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidEvent([{"loc": [], "msg": "an object is required"}])
    errors: list[FieldError] = [
        {"loc": [str(name)], "msg": "unknown field"} for name in data if name not in FIELDS
    ]
    for name in ("citizen_id", "member_id"):
        value = data.get(name)
        if not isinstance(value, str) or not HOST_ID.fullmatch(value):
            errors.append({"loc": [name], "msg": "an id is required"})
    for name in ("start", "end"):
        value = data.get(name)
        if not isinstance(value, str) or len(value) > 40 or not _parses(value):
            errors.append({"loc": [name], "msg": "an ISO 8601 date or date-time is required"})
    if errors:
        raise InvalidEvent(errors)
    return ReliefBody(data["citizen_id"], data["member_id"], data["start"], data["end"])


def _parses(value: str) -> bool:
    try:
        parse_moment(value, ZoneInfo("UTC"), end=False)
    except ValueError:
        return False
    return True


def parse_moment(value: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A date-time (naive ones in `zone`), or a date: its start, or for an `end` the start of
    the next day (a date as `end` means "through that day")."""
    if "T" in value or " " in value:
        moment = datetime.fromisoformat(value)
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise ValueError("out of range")
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
    day = date.fromisoformat(value)
    if not MIN_YEAR <= day.year <= MAX_YEAR:  # a day later, or in UTC, must still be a date
        raise ValueError("out of range")
    if end:
        day += timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=zone)


def request_id_of(tenant_id: str, key: str) -> str:
    """The request id an `Idempotency-Key` names: stable per tenant and key."""
    digest = hashlib.sha256(f"{tenant_id}\0api\0{key}".encode()).hexdigest()
    return f"r-api-{digest[:24]}"


async def create_relief_request(request: Request, tenant_id: str) -> Response:
    """The handler behind the route (`api.py` authenticates the tenant first)."""
    require_json(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidEvent(
            [{"loc": ["header", "Idempotency-Key"], "msg": "1-255 visible ASCII characters"}]
        )
    request_id = request_id_of(tenant_id, key) if key is not None else None
    body = parse_relief_body(await read_limited_body(request, MAX_BYTES))
    state = state_of(request)
    await state["applier"].catch_up()  # a member added by a webhook just accepted is known
    now = state["clock"]()
    async with state["store"].transaction() as tx:
        circle = await tx.get_circle(tenant_id, body.citizen_id)
        if circle is None:
            outcome = None
        else:
            zone = ZoneInfo(circle.citizen.timezone)
            outcome = await request_relief(
                tx,
                tenant_id,
                body.citizen_id,
                body.member_id,
                parse_moment(body.start, zone, end=False),
                parse_moment(body.end, zone, end=True),
                channel="api",
                now=now,
                request_id=request_id,
            )
    if outcome is None or isinstance(outcome, ReliefRefusal):
        refusal = outcome or ReliefRefusal.UNKNOWN_CIRCLE
        status, detail = _REFUSALS[refusal]
        return problem(status, HTTPStatus(status).phrase, detail, reason=refusal.value)
    relief = outcome.request
    if not outcome.created:
        asked = (
            body.citizen_id,
            body.member_id,
            parse_moment(body.start, zone, end=False),
            parse_moment(body.end, zone, end=True),
        )
        if asked != (relief.citizen_id, relief.member_id, relief.start, relief.end):
            return problem(
                422,
                HTTPStatus(422).phrase,
                "This Idempotency-Key was used for another request.",
                reason="idempotency_key_reused",
            )
    return JSONResponse(
        {
            "id": relief.id,
            "status": relief.status,
            "citizen_id": relief.citizen_id,
            "member_id": relief.member_id,
            "start": relief.start.astimezone(zone).isoformat(),
            "end": relief.end.astimezone(zone).isoformat(),
            "released": list(outcome.released),
        },
        status_code=201 if outcome.created else 200,
    )
