"""Signed webhook requests for the benchmark, built before the clock starts.

Signing is the host's cost, not carecal's, so every request of a run is prebuilt here as the
exact bytes the load generator writes: an HTTP/1.1 keep-alive POST of a `task.upserted` event
with its own task id and `webhook-id`, signed per Standard Webhooks.

    >>> len(task_requests(2, authority="127.0.0.1:8080", tenant="t", secret="whsec_c2VjcmV0"))
    2
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from typing import Any

# The host's side of Standard Webhooks, the same function carecal uses for its own outbox.
from adapters.host.signing import sign

__all__ = ["circle_event", "new_webhook_secret", "sign", "signed_request", "task_requests"]

TASK_ID_WIDTH = 8


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def circle_event(citizen_id: str) -> dict[str, Any]:
    """A circle of two relatives with `feed` delivery.

    Feed, not hosted: this bench puts every task on ONE citizen, whose calendar would grow to
    ~100 000 events in a run, and every event would re-sync both members' whole views. That
    measures a workload no circle has (measured once: ingestion held at ~5 300 req/s, but
    applying fell from ~430/s to ~116/s). Calendar delivery gets a bench of its own
    (bench/sync, issue 4) on realistic views."""
    members = [
        {
            "id": member_id,
            "name": name,
            "email": f"{member_id}@example.org",
            "role": "relative",
            "visibility": "full",
            "locale": "da",
            "calendar": "feed",
            "capacity": {"hours_per_week": 4, "tasks_per_week": 3},
            "availability": [{"weekday": 1, "start": "16:00", "end": "20:00"}],
            "paused_until": None,
        }
        for member_id, name in (("m-1", "Anna"), ("m-2", "Bo"))
    ]
    return {
        "type": "circle.updated",
        "data": {
            "version": 1,
            "citizen": {
                "id": citizen_id,
                "display_name": "Fru Jensen",
                "timezone": "Europe/Copenhagen",
                "locale": "da",
            },
            "members": members,
        },
    }


def task_event(task_id: str, citizen_id: str, day: dt.date) -> dict[str, Any]:
    """One occurrence on `day`, two people needed; `details` pads the body to about 600 bytes."""
    return {
        "type": "task.upserted",
        "data": {
            "id": task_id,
            "citizen_id": citizen_id,
            "version": 1,
            "kind": "task",
            "category": "shopping",
            "details": (
                "Netto on Vesterbrogade; the list is on the fridge, the bags hang behind the "
                "kitchen door and the receipt goes in the blue folder. Remember rye bread, "
                "skyr and coffee; ask for help at the counter if the lift is out of order. "
                "Keys are with the neighbour at number 12. Pay with the card in the drawer."
            ),
            "location": None,
            "start": f"{day.isoformat()}T10:00:00",
            "end": f"{day.isoformat()}T11:00:00",
            "timezone": "Europe/Copenhagen",
            "people_needed": 2,
            "recurrence": None,
            "claim_deadline_hours": 24,
        },
    }


def signed_request(
    authority: str, path: str, secret: str, msg_id: str, timestamp: int, body: bytes
) -> bytes:
    """A complete keep-alive HTTP/1.1 POST of `body` with Standard Webhooks headers."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"webhook-id: {msg_id}\r\n"
        f"webhook-timestamp: {timestamp}\r\n"
        f"webhook-signature: {sign(secret, msg_id, timestamp, body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def task_requests(
    count: int,
    *,
    authority: str,
    tenant: str,
    secret: str,
    citizen_id: str = "c-1",
    days_ahead: int = 3,
) -> list[bytes]:
    """`count` signed `task.upserted` requests, each with a different task id and webhook-id.

    The body is serialised once with a placeholder id and filled in per request, which keeps
    building 200 000 requests to a second or two. All carry the same timestamp (now), well
    inside the ±5 minute tolerance for a run that lasts a minute.
    """
    placeholder = "X" * TASK_ID_WIDTH
    day = dt.date.today() + dt.timedelta(days=days_ahead)
    template = json.dumps(
        task_event(f"t-{placeholder}", citizen_id, day), separators=(",", ":")
    ).encode()
    before, after = template.split(placeholder.encode())
    run_tag = secrets.token_hex(4)
    timestamp = int(time.time())
    path = f"/webhooks/{tenant}"
    return [
        signed_request(
            authority,
            path,
            secret,
            f"msg_{run_tag}_{i:0{TASK_ID_WIDTH}d}",
            timestamp,
            b"%s%0*d%s" % (before, TASK_ID_WIDTH, i, after),
        )
        for i in range(count)
    ]
