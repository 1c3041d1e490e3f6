"""Migration 0006 gives the occurrences already stored their claim deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from adapters.store.migrate import upgrade
from adapters.store.sql import SqlStore, create_engine
from plugin.services.ports import DueDeadline

START = datetime(2027, 3, 10, 9, 0, tzinfo=UTC)


async def test_existing_occurrences_get_their_deadline(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/carecal.db"
    await upgrade(url, "0005")
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO tenants (id, created_at) VALUES ('north', '2027-03-01')")
            )
            for task_id, kind, hours in (
                ("t-1", "task", 24),
                ("v-1", "visit", 24),
                ("t-2", "task", None),
            ):
                await connection.execute(
                    text(
                        "INSERT INTO tasks (tenant_id, id, citizen_id, version, kind, category,"
                        " start_local, end_local, timezone, people_needed, exdates, rdates,"
                        " claim_deadline_hours, status) VALUES ('north', :id, 'c-1', 1, :kind,"
                        " 'walk', '2027-03-10 10:00:00', '2027-03-10 11:00:00',"
                        " 'Europe/Copenhagen', 1, '[]', '[]', :hours, 'active')"
                    ),
                    {"id": task_id, "kind": kind, "hours": hours},
                )
                await connection.execute(
                    text(
                        "INSERT INTO occurrences (tenant_id, id, task_id, start_utc, end_utc, tz,"
                        " cancelled) VALUES ('north', :occ, :task, :start, :end,"
                        " 'Europe/Copenhagen', 0)"
                    ),
                    {
                        "occ": f"{task_id}_20270310T1000",
                        "task": task_id,
                        "start": START.replace(tzinfo=None).isoformat(sep=" "),
                        "end": (START + timedelta(hours=1)).replace(tzinfo=None).isoformat(sep=" "),
                    },
                )  # fmt: skip
        await upgrade(engine)
        store = SqlStore(engine)
        now = START - timedelta(hours=23)
        due = await store.due_claim_deadlines(now=now, since=now - timedelta(days=2), limit=10)
        assert due == [DueDeadline("north", "t-1_20270310T1000")]
        assert (
            await store.due_claim_deadlines(
                now=START - timedelta(hours=25), since=now - timedelta(days=2), limit=10
            )
            == []
        )
    finally:
        await engine.dispose()
