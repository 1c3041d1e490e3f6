"""Events to the host end to end: claims made through the service layer, the real Worker
delivering over HTTP to a real local receiver that verifies every signature, a 30-second outage,
escalation with several workers, and `carecal outbox replay` on a real database."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from adapters.host.events import open_event_sender
from adapters.store.sql import SqlStore
from adapters.store.tables import outbox
from plugin.config import Settings, validate_settings
from plugin.domain.model import Circle, Citizen, Member, Task, TaskStatus
from plugin.metrics import Metrics
from plugin.services.claiming import Ask, decide
from plugin.services.delivery import OutboxDelivery
from plugin.services.ingest import materialise
from plugin.services.ports import Store
from plugin.web.app import open_store, utc_now
from plugin.worker import Worker
from tests.integration.host_receiver import HostReceiver
from tests.integration.support import NORTH_SECRET, NORTH_TOKEN, SOUTH_SECRET, SOUTH_TOKEN

EVENTS_SECRET = "whsec_" + base64.b64encode(b"north-host-events-0123456789abcd").decode()
CPH = ZoneInfo("Europe/Copenhagen")
HORIZON = timedelta(weeks=8)


def outbox_settings(database_url: str, events_url: str, **outbox_keys: Any) -> Settings:
    return validate_settings(
        {
            "database": {"url": database_url},
            "worker": {"poll_seconds": 0.2},
            # Small backoff, so that the outage test waits seconds after the host is back. The
            # timeout stays generous: a slow answer taken for a failure would be sent again (at
            # least once), and the outage test counts every repeat as a duplicate.
            "outbox": {"poll_seconds": 0.1, "backoff_base_seconds": 0.2,
                       "backoff_max_seconds": 2, "timeout_seconds": 10, "concurrency": 4,
                       "batch_size": 20, **outbox_keys},
            "escalation": {"interval_seconds": 0.01},
            "tenants": [
                {"id": "north", "webhook_secret": NORTH_SECRET, "api_token": NORTH_TOKEN,
                 "host_events_url": events_url, "host_events_secret": EVENTS_SECRET},
                {"id": "south", "webhook_secret": SOUTH_SECRET, "api_token": SOUTH_TOKEN},
            ],
        }
    )  # fmt: skip


def local_task(task_id: str, start: datetime, **changes: Any) -> Task:
    wall = start.astimezone(CPH).replace(tzinfo=None, second=0, microsecond=0)
    base = Task(
        tenant_id="north", id=task_id, citizen_id="c-1", version=1, kind="task",
        category="shopping", start=wall, end=wall + timedelta(hours=1),
        timezone="Europe/Copenhagen", people_needed=1,
    )  # fmt: skip
    return replace(base, **changes)


async def seed(store: Store, *tasks: Task, members: int = 10) -> dict[str, str]:
    """A circle of `members` and the tasks; returns each task's (single) occurrence id."""
    now = utc_now()
    people = (
        Member(f"m-{n:02}", f"M{n}", "relative", "full", calendar="feed") for n in range(members)
    )
    circle = Circle(Citizen("north", "c-1", "Fru Jensen"), 1, tuple(people))
    occurrences = {}
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", circle, now)
        for task in tasks:
            await tx.save_task(task)
            await materialise(tx, task, now=now, horizon=HORIZON)
            [record] = await tx.get_occurrences("north", task.id)
            occurrences[task.id] = record.occurrence.id
    return occurrences


async def claim(store: Store, occurrence_id: str, member_id: str) -> None:
    async with store.transaction() as tx:
        decision = await decide(
            tx, "north", occurrence_id, member_id, Ask.CLAIM, channel="api", now=utc_now()
        )
    assert decision is not None and decision.add_claim is not None


async def wait_until_delivered(store: Store, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (await store.outbox_counts())["pending"]:
        assert time.monotonic() < deadline, "events still pending"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_host_down_for_30_seconds_during_100_claims_loses_nothing_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'carecal.db'}"
    with HostReceiver(EVENTS_SECRET) as host:
        settings = outbox_settings(url, host.url)
        # Two workers, each with its own connection pool, as two processes would be.
        stores = [
            await open_store(settings, migrate=True),
            await open_store(settings, migrate=False),
        ]
        start = utc_now() + timedelta(days=2)
        tasks = [
            local_task(f"t-{n}", start + timedelta(hours=n), people_needed=10) for n in range(10)
        ]
        occurrences = await seed(stores[0], *tasks)
        # 100 claims: every member takes every task, the tasks interleaved.
        claims = [(occurrences[t.id], f"m-{m:02}") for m in range(10) for t in tasks]
        metrics = Metrics()
        async with open_event_sender(settings.outbox) as sender:
            workers = [
                Worker(s, settings, metrics=metrics, clock=utc_now, handlers={}, host_events=sender,
                       name=f"w{n}")
                for n, s in enumerate(stores)
            ]  # fmt: skip
            running = [asyncio.create_task(w.run()) for w in workers]
            try:
                for occurrence_id, member_id in claims[:30]:
                    await claim(stores[0], occurrence_id, member_id)
                    await asyncio.sleep(0.02)
                host.stop()  # the host goes down, in the middle of the claims
                down_at = time.monotonic()
                for occurrence_id, member_id in claims[30:70]:
                    await claim(stores[1], occurrence_id, member_id)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(max(0.0, 30.0 - (time.monotonic() - down_at)))
                pending_during_outage = (await stores[0].outbox_counts())["pending"]
                host.start()  # back, on the same port
                outage = time.monotonic() - down_at
                for occurrence_id, member_id in claims[70:]:
                    await claim(stores[0], occurrence_id, member_id)
                    await asyncio.sleep(0.02)
                await wait_until_delivered(stores[0], seconds=30)
            finally:
                for worker, task in zip(workers, running, strict=True):
                    await worker.stop(task)
        assert isinstance(stores[0], SqlStore)
        async with stores[0].engine.connect() as connection:
            rows = (
                await connection.execute(select(outbox).order_by(outbox.c.created_at, outbox.c.id))
            ).all()
        for store in stores:
            await store.close()

    assert outage >= 30.0
    assert pending_during_outage > 0  # the claims made while it was down waited
    assert host.refused == []  # every signature checked out
    received = host.events()
    ids = [r.webhook_id for r in received]
    # Nothing lost: every claim's event arrived; nothing twice: no id was sent again after
    # the host had answered 2xx (the receiver saw each exactly once).
    assert len(rows) == 100 and all(row.type == "task.claimed" for row in rows)
    assert sorted(ids) == sorted(row.id for row in rows)
    assert len(set(ids)) == len(ids) == 100
    assert all(row.delivered_at is not None and row.dead_at is None for row in rows)
    assert sum(row.attempts > 1 for row in rows) > 0  # some were retried across the outage
    assert metrics.outbox_failed.labels("north", "unreachable")._value.get() > 0
    # Order per task: the host saw each task's events in the order they were made.
    made: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        made[row.ordering_key].append(row.id)
    seen: dict[str, list[str]] = defaultdict(list)
    for r in received:
        assert r.event["tenant"] == "north" and r.event["type"] == "task.claimed"
        seen[r.event["data"]["task_id"]].append(r.webhook_id)
    assert seen == made
    # The body is the contract's: type, tenant and the claim's data.
    sample = received[0].event["data"]
    assert set(sample) == {"task_id", "occurrence_id", "occurrence_start", "member_id", "channel"}
    assert sample["channel"] == "api"


async def test_unfilled_is_sent_once_by_repeated_sweeps_and_several_workers(
    database_url: str, tmp_path: Path
) -> None:
    with HostReceiver(EVENTS_SECRET) as host:
        settings = outbox_settings(database_url, host.url)
        stores = [
            await open_store(settings, migrate=True),
            await open_store(settings, migrate=False),
        ]
        now = utc_now()
        soon = now + timedelta(hours=2)  # a 24 h deadline passed 22 h ago
        occurrences = await seed(
            stores[0],
            local_task("t-short", soon, people_needed=2, claim_deadline_hours=24),
            local_task("t-full", soon, claim_deadline_hours=24),
            local_task("t-later", now + timedelta(days=3), claim_deadline_hours=24),
            local_task("t-free", soon),  # no deadline
            local_task("t-old", now - timedelta(days=3), claim_deadline_hours=24),  # too old
            local_task("v-1", soon, kind="visit", category="visit", claim_deadline_hours=24),
            local_task("t-gone", soon, claim_deadline_hours=24),
        )
        await claim(stores[0], occurrences["t-short"], "m-00")
        await claim(stores[0], occurrences["t-full"], "m-01")
        async with stores[0].transaction() as tx:
            gone = local_task("t-gone", soon, claim_deadline_hours=24, version=2,
                              status=TaskStatus.CANCELLED)  # fmt: skip
            await tx.save_task(gone)
            await materialise(tx, gone, now=now, horizon=HORIZON)

        metrics = Metrics()
        async with open_event_sender(settings.outbox) as sender:
            workers = [
                Worker(s, settings, metrics=metrics, clock=utc_now, handlers={}, host_events=sender)
                for s in stores
            ]
            # Two workers sweep at the same moment, then again, then a restarted one.
            await asyncio.gather(*(w.escalate_when_due() for w in workers))
            await asyncio.sleep(0.02)
            await asyncio.gather(*(w.escalate_when_due() for w in workers))
            restarted = Worker(stores[1], settings, metrics=metrics, clock=utc_now, handlers={})
            await restarted.escalate_when_due()
            for _ in range(3):  # both workers deliver, concurrently
                await asyncio.gather(*(w.delivery.deliver_due() for w in workers if w.delivery))
        for store in stores:
            await store.close()

    assert host.refused == []
    unfilled = [r for r in host.events() if r.event["type"] == "task.unfilled"]
    assert [(r.event["tenant"], r.event["data"]) for r in unfilled] == [
        ("north", {"task_id": "t-short", "occurrence_id": occurrences["t-short"], "free_slots": 1})
    ]
    assert metrics.escalations._value.get() == 1
    # The claims' events went out too, each once.
    assert sorted(r.event["type"] for r in host.events()) == [
        "task.claimed", "task.claimed", "task.unfilled",
    ]  # fmt: skip


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        check=False,
    )


async def test_outbox_replay_requeues_dead_events_with_the_same_webhook_id(
    store: SqlStore, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    earlier = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    later = datetime(2027, 3, 2, 8, 0, tzinfo=UTC)
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.ensure_tenant("south")
        old = await tx.add_outbox(
            "north", "task.claimed", {"n": 1}, now=earlier, ordering_key="t-1"
        )
        new = await tx.add_outbox("north", "task.released", {"n": 2}, now=later, ordering_key="t-1")
        south = await tx.add_outbox("south", "task.claimed", {"n": 3}, now=later)
    for event_id in (old, new, south):
        await store.mark_outbox_failed(event_id, now=later, error="HTTP 500", retry_at=None)
    assert await store.outbox_counts() == {"pending": 0, "dead": 3}

    with HostReceiver(EVENTS_SECRET) as host:
        config = tmp_path / "carecal.toml"
        config.write_text(
            f"""
[database]
url = "{database_url}"

[[tenants]]
id = "north"
webhook_secret = "{NORTH_SECRET}"
api_token = "{NORTH_TOKEN}"
host_events_url = "{host.url}"
host_events_secret = "{EVENTS_SECRET}"

[[tenants]]
id = "south"
webhook_secret = "{SOUTH_SECRET}"
api_token = "{SOUTH_TOKEN}"
""",
            encoding="utf-8",
        )
        replayed = await asyncio.to_thread(
            run_cli,
            config,
            "outbox",
            "replay",
            "--tenant",
            "north",
            "--since",
            "2027-03-02T09:00+01:00",
        )
        assert replayed.returncode == 0, replayed.stderr
        assert "carecal: 1 dead event(s) requeued for delivery" in replayed.stdout
        assert await store.outbox_counts() == {"pending": 1, "dead": 2}

        replay_settings = outbox_settings(database_url, host.url)
        async with open_event_sender(replay_settings.outbox) as sender:
            delivery = OutboxDelivery(
                store, sender, replay_settings, metrics=Metrics(), clock=utc_now
            )
            await delivery.deliver_due()
        assert host.ids() == [new]  # the same webhook-id as before it died

        everything = await asyncio.to_thread(run_cli, config, "outbox", "replay")
        assert everything.returncode == 0, everything.stderr
        assert "carecal: 2 dead event(s) requeued for delivery" in everything.stdout
    assert await store.outbox_counts() == {"pending": 2, "dead": 0}
    # Bad input is refused before anything is touched.
    naive = await asyncio.to_thread(run_cli, config, "outbox", "replay", "--since", "2027-03-02")
    assert naive.returncode == 2 and "no offset" in naive.stderr


async def test_metrics_show_the_outbox(client: httpx.AsyncClient, store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.add_outbox("north", "task.claimed", {}, now=utc_now(), ordering_key="t-1")
    text = (await client.get("/metrics")).text
    assert 'carecal_outbox{status="pending"} 1.0' in text
    assert 'carecal_outbox{status="dead"} 0.0' in text
    for name in ("delivered", "failed", "dead"):
        assert f"# TYPE carecal_outbox_{name}_total counter" in text
