"""Helpers for the integration tests: signed host events, fixed secrets and times."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from adapters.host.signing import signed_headers
from plugin.config import Settings, validate_settings

NORTH_SECRET = "whsec_" + base64.b64encode(b"north-secret-key-0123456789abcdef").decode()
NORTH_OLD_SECRET = "whsec_" + base64.b64encode(b"north-old-key-0123456789abcdefgh").decode()
SOUTH_SECRET = "whsec_" + base64.b64encode(b"south-secret-key-0123456789abcdef").decode()
NORTH_TOKEN = "north-api-token-0123456789"
NORTH_DATA_KEY = base64.urlsafe_b64encode(b"north-data-key-0123456789abcdefg").decode()
SOUTH_TOKEN = "south-api-token-0123456789"

# Before the DST change of 28 March 2027, so the fixtures' tasks are all in the future.
FIXED_NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "server": {"public_url": "http://testserver", "max_body_bytes": 256 * 1024},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'carecal.db'}"},
        "calendar": {"type": "embedded", "folder": str(tmp_path / "dav")},
        "tenants": [
            {
                "id": "north",
                "webhook_secret": [NORTH_SECRET, NORTH_OLD_SECRET],
                "api_token": NORTH_TOKEN,
                "data_key": NORTH_DATA_KEY,
            },
            {"id": "south", "webhook_secret": SOUTH_SECRET, "api_token": SOUTH_TOKEN},
        ],
    }
    raw.update(overrides)
    return validate_settings(raw)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def sign_event(
    event: dict[str, Any],
    *,
    secret: str = NORTH_SECRET,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers a host sends: Standard Webhooks signed, JSON."""
    body = json.dumps(event).encode()
    headers = signed_headers(
        secret,
        msg_id or f"msg_{uuid.uuid4().hex}",
        body,
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )
    headers["content-type"] = "application/json"
    return body, headers


async def post_event(
    client: httpx.AsyncClient, event: dict[str, Any], *, tenant: str = "north", **kwargs: Any
) -> httpx.Response:
    body, headers = sign_event(event, **kwargs)
    return await client.post(f"/webhooks/{tenant}", content=body, headers=headers)


def circle_event(
    version: int = 1, members: list[dict[str, Any]] | None = None, citizen_id: str = "c-123"
) -> dict[str, Any]:
    return {
        "type": "circle.updated",
        "data": {
            "version": version,
            "citizen": {"id": citizen_id, "display_name": "Fru Jensen",
                        "timezone": "Europe/Copenhagen", "locale": "da"},
            "members": members if members is not None else [
                {"id": "m-anna", "name": "Anna", "email": "anna@example.org",
                 "role": "relative", "visibility": "full", "locale": "da", "calendar": "hosted",
                 "capacity": {"hours_per_week": 4, "tasks_per_week": 3},
                 "availability": [{"weekday": 1, "start": "16:00", "end": "20:00"}],
                 "paused_until": None},
                {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "limited",
                 "locale": "en", "calendar": "feed"},
                {"id": "m-sara", "name": "Sara", "email": "sara@kommune.example",
                 "role": "staff", "visibility": "full", "locale": "da", "calendar": "hosted"},
            ],
        },
    }  # fmt: skip


def task_event(version: int = 1, task_id: str = "t-1", **data: Any) -> dict[str, Any]:
    """A weekly task from 16 March 2027, across the DST change of 28 March."""
    payload: dict[str, Any] = {
        "id": task_id, "citizen_id": "c-123", "version": version, "kind": "task",
        "category": "shopping", "details": "Netto; the list is on the fridge", "location": None,
        "start": "2027-03-16T10:00:00", "end": "2027-03-16T11:00:00",
        "timezone": "Europe/Copenhagen", "people_needed": 2,
        "recurrence": "FREQ=WEEKLY;COUNT=4", "claim_deadline_hours": 24,
    }  # fmt: skip
    payload.update(data)
    return {"type": "task.upserted", "data": payload}


def auth(token: str = NORTH_TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
