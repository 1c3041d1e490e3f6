"""Store-level benchmark of the inbox applier's path: the raw `Tx` calls a `task.upserted`
costs, without HTTP, decoding or the service layer (which may change under it).

    .venv/bin/python -m bench.store_apply                      # SQLite in a temporary folder
    .venv/bin/python -m bench.store_apply --url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.store_apply --events 4000 --batch 50 --profile

For each of `--events` synthetic, non-recurring tasks (one occurrence each) one inbox entry is
accepted (`accept_webhooks`, in pages of `--accept-batch`, timed on its own); then the inbox is
drained in transactions of `--batch` entries, each entry inside `tx.savepoint()` making the calls
the applier makes: get_task, save_task, get_occurrences, sync_occurrences, audit,
finish_webhook. On PostgreSQL the run works in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import secrets
import tempfile
import time
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from adapters.store.migrate import upgrade
from adapters.store.sql import SqlStore, create_engine
from plugin.domain.model import Occurrence, Task
from plugin.services.ports import AuditEntry, InboxEntry, InboxItem, Tx

TENANT = "bench"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CPH = ZoneInfo("Europe/Copenhagen")


def _task(n: int) -> Task:
    start = datetime(2027, 3, 4, 10) + timedelta(minutes=n)
    return Task(
        tenant_id=TENANT,
        id=f"t-{n:08}",
        citizen_id="c-1",
        version=1,
        kind="task",
        category="shopping",
        start=start,
        end=start + timedelta(hours=1),
        timezone="Europe/Copenhagen",
        people_needed=2,
        details="Netto",
    )


def _occurrence(task: Task) -> Occurrence:
    start = task.start.replace(tzinfo=CPH)
    return Occurrence(
        id=f"{task.id}@0", task_id=task.id, start=start, end=start + timedelta(hours=1)
    )


def _savepoint(tx: Tx) -> AbstractAsyncContextManager[Any]:
    savepoint = getattr(tx, "savepoint", None)
    return savepoint() if savepoint is not None else nullcontext()


async def _pending(tx: Any, limit: int) -> list[InboxEntry]:
    if hasattr(tx, "pending_webhooks"):
        found: list[InboxEntry] = await tx.pending_webhooks(limit)
        return found
    entry = await tx.next_pending_webhook()  # before the port change: one at a time
    return [] if entry is None else [entry]


async def apply_one(tx: Tx, entry: InboxEntry) -> None:
    task = _task(int(entry.webhook_id.removeprefix("wh-")))
    async with _savepoint(tx):
        stored = await tx.get_task(TENANT, task.id)
        assert stored is None
        await tx.save_task(task)
        await tx.get_occurrences(TENANT, task.id)
        await tx.sync_occurrences(TENANT, task.id, [_occurrence(task)])
        await tx.audit(
            AuditEntry(
                tenant_id=TENANT,
                at=NOW,
                actor="host",
                action=entry.event_type,
                channel="host",
                subject=f"task:{task.id}",
                detail={"webhook_id": entry.webhook_id, "outcome": "applied"},
            )
        )
        await tx.finish_webhook(entry.seq, status="applied", now=NOW)


async def drain(store: SqlStore, batch: int) -> int:
    done = 0
    while True:
        async with store.transaction() as tx:
            taken = 0
            while taken < batch:
                entries = await _pending(tx, batch - taken)
                if not entries:
                    break
                for entry in entries:
                    await apply_one(tx, entry)
                taken += len(entries)
        done += taken
        if taken == 0:
            return done


async def run(args: argparse.Namespace) -> None:
    schema = None
    if args.url is None:
        folder = tempfile.mkdtemp(prefix="carecal-bench-")
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        await upgrade(url)
        engine = create_engine(url)
    else:
        url = args.url
        schema = f"carecal_bench_{secrets.token_hex(4)}"
        admin = create_engine(url)
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        connect_args = {"server_settings": {"search_path": schema}}
        engine = create_engine(url, connect_args=connect_args)
        await upgrade(engine)
    store = SqlStore(engine)
    try:
        async with store.transaction() as tx:
            await tx.ensure_tenant(TENANT)
        # warm up: compile caches, connection pool
        await store.accept_webhooks([_item(10_000_000 + n) for n in range(args.batch)])
        await drain(store, args.batch)

        items = [_item(n) for n in range(args.events)]
        started = time.perf_counter()
        for page in range(0, len(items), args.accept_batch):
            await store.accept_webhooks(items[page : page + args.accept_batch])
        accepted = time.perf_counter() - started

        profile = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        applied = await drain(store, args.batch)
        if profile is not None:
            profile.disable()
        elapsed = time.perf_counter() - started
        assert applied == args.events, applied
        print(
            f"{engine.dialect.name:10} accept {args.events / accepted:8.0f} webhooks/s "
            f"(pages of {args.accept_batch})   apply {applied / elapsed:6.0f} events/s "
            f"({elapsed / applied * 1e3:.2f} ms each, batches of {args.batch})"
        )
        if profile is not None:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    finally:
        await store.close()
        if schema is not None:
            admin = create_engine(url)
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()


def _item(n: int) -> InboxItem:
    return InboxItem(
        tenant_id=TENANT,
        webhook_id=f"wh-{n}",
        event_type="task.upserted",
        body=b'{"type": "task.upserted"}' + b" " * 600,
        received_at=NOW,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50, help="entries per transaction")
    parser.add_argument("--accept-batch", type=int, default=100, help="webhooks per accept")
    parser.add_argument("--profile", action="store_true", help="cProfile the apply phase")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
