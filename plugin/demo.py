"""`carecal demo`: seed one demo circle through the same inbox a host webhook goes through.

The seed uses fixed webhook ids and versions, so running the demo again changes nothing.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from plugin.config import Settings
from plugin.services.ports import InboxItem

DEMO_CITIZEN = "c-demo"


def demo_events(today: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(webhook id, event) pairs, exactly as a host would send them."""
    monday = (today + timedelta(days=7 - today.weekday())).date()
    tuesday_ten = datetime.combine(monday + timedelta(days=1), time(10, 0))

    def at(days: int, hours: float = 0) -> str:
        return (tuesday_ten + timedelta(days=days, hours=hours)).isoformat()

    def task(task_id: str, category: str, days: int, hours: float, **extra: Any) -> dict[str, Any]:
        return {
            "id": task_id, "citizen_id": DEMO_CITIZEN, "version": 1, "kind": "task",
            "category": category, "start": at(days), "end": at(days, hours),
            "timezone": "Europe/Copenhagen", **extra,
        }  # fmt: skip

    members = [
        {"id": "m-anna", "name": "Anna", "email": "anna@example.org", "role": "relative",
         "visibility": "full", "locale": "da", "calendar": "hosted",
         "capacity": {"hours_per_week": 4, "tasks_per_week": 3}},
        {"id": "m-bo", "name": "Bo", "email": "bo@example.org", "role": "relative",
         "visibility": "limited", "locale": "en", "calendar": "hosted",
         "capacity": {"tasks_per_week": 2}},
        {"id": "m-sara", "name": "Sara", "email": "sara@kommune.example", "role": "staff",
         "visibility": "full", "locale": "da", "calendar": "hosted"},
    ]  # fmt: skip
    return [
        ("demo-seed-circle", {"type": "circle.updated", "data": {
            "version": 1,
            "citizen": {"id": DEMO_CITIZEN, "display_name": "Fru Jensen",
                        "timezone": "Europe/Copenhagen", "locale": "da"},
            "members": members}}),
        ("demo-seed-shopping", {"type": "task.upserted", "data": task(
            "demo-shopping", "shopping", 0, 1, people_needed=1,
            recurrence="FREQ=WEEKLY;COUNT=8", claim_deadline_hours=24)}),
        ("demo-seed-walk", {"type": "task.upserted", "data": task(
            "demo-walk", "walk", 2, 1.5, people_needed=2, recurrence="FREQ=WEEKLY;COUNT=8")}),
        ("demo-seed-doctor", {"type": "task.upserted", "data": task(
            "demo-doctor", "doctor_escort", 8, 2, people_needed=1)}),
        ("demo-seed-visit", {"type": "visit.assigned", "data": {
            "id": "demo-visit", "citizen_id": DEMO_CITIZEN, "version": 1,
            "staff_member_id": "m-sara", "category": "visit",
            "start": at(1), "end": at(1, 0.5), "timezone": "Europe/Copenhagen"}}),
    ]  # fmt: skip


async def seed_demo(settings: Settings) -> None:
    from plugin.cli import ensure_sqlite_folder
    from plugin.metrics import Metrics
    from plugin.web.app import make_applier, open_store, utc_now
    from plugin.web.schemas import parse_event

    if not settings.tenants:
        print("carecal demo: no tenant configured", file=sys.stderr)
        return
    tenant = settings.tenants[0]
    ensure_sqlite_folder(settings.database.url)
    store = await open_store(settings, migrate=settings.database.url.startswith("sqlite"))
    now = utc_now()
    local_today = now.astimezone(ZoneInfo(tenant.timezone)).replace(tzinfo=None)
    items = []
    for webhook_id, event in demo_events(local_today):
        body = json.dumps(event).encode()
        items.append(InboxItem(tenant.id, webhook_id, parse_event(body).type, body, now))
    try:
        await store.accept_webhooks(items)
        await make_applier(store, settings, metrics=Metrics(), clock=utc_now).catch_up()
    finally:
        await store.close()
    base = settings.server.public_url
    token = tenant.api_token.get_secret_value()
    print(
        f"""
carecal demo — tenant {tenant.id!r}, citizen {DEMO_CITIZEN!r} (Fru Jensen: Anna, Bo, Sara)

  curl {base}/healthz
  curl -H 'Authorization: Bearer {token}' {base}/api/v1/circles/{DEMO_CITIZEN}
  curl -H 'Authorization: Bearer {token}' {base}/api/v1/tasks/demo-shopping

Anna's calendar in your calendar app (Thunderbird, DAVx5, Apple Calendar): this answers its
CalDAV URL, username and password (shown once), her setup page and her feed:

  curl -X POST -H 'Authorization: Bearer {token}' \\
       {base}/api/v1/members/m-anna/calendar-credentials

Webhooks go to {base}/webhooks/{tenant.id} (Standard Webhooks; secret in config/carecal.toml).
Staff dashboard: {base}/staff/ (tenant {tenant.id!r}, staff_password in config/carecal.toml).
The demo keeps its data in var/ between runs; `rm -rf var` starts afresh.
""",
        file=sys.stderr,
    )
