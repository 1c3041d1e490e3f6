"""The hand-written migrations build exactly the schema of `adapters/store/tables.py`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.store.migrate import head_revision, is_up_to_date, schema_behind, upgrade
from adapters.store.sql import create_engine
from adapters.store.tables import metadata
from plugin.cli import main
from tests.contract.support import POSTGRES_ENV, POSTGRES_SKIP


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _assert_migrations_match_tables(engine: AsyncEngine, url: str | AsyncEngine) -> None:
    assert not await is_up_to_date(url)
    await upgrade(url)
    assert await is_up_to_date(url)
    await upgrade(url)  # a second run is a no-op
    async with engine.connect() as connection:
        assert await connection.run_sync(_diff) == []
        version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).one()
    assert version == (head_revision(),)


async def test_sqlite_migrations_match_tables(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/carecal.db"
    engine = create_engine(url)
    try:
        await _assert_migrations_match_tables(engine, url)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_migrations_match_tables() -> None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(POSTGRES_SKIP)
    schema = f"carecal_migrate_{secrets.token_hex(6)}"
    admin = create_engine(url)
    engine = create_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await _assert_migrations_match_tables(engine, engine)
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@pytest.mark.postgres
async def test_instances_migrating_at_once_wait_for_each_other() -> None:
    """Three instances started at once on an empty database: one migrates, the others wait
    and find the schema at head (before, two failed on the tables the first was creating)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(POSTGRES_SKIP)
    schema = f"carecal_migrate_{secrets.token_hex(6)}"
    admin = create_engine(url)
    engines = [
        create_engine(url, connect_args={"server_settings": {"search_path": schema}})
        for _ in range(3)
    ]
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await asyncio.wait_for(asyncio.gather(*(upgrade(e) for e in engines)), timeout=60)
        assert all([await is_up_to_date(engine) for engine in engines])
    finally:
        for engine in engines:
            await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


async def test_withdraw_jobs_queued_before_their_kinds_were_apart_take_their_kind(
    tmp_path: Path,
) -> None:
    """0016: a waiting `member.withdraw` job with "was" becomes the kind that says it, so a
    removal queued after the upgrade is not folded into it (and lost); a removal stays one,
    and jobs done are left as they were."""
    url = f"sqlite+aiosqlite:///{tmp_path}/carecal.db"
    engine = create_engine(url)
    try:
        await upgrade(url, "0015")
        at = "2027-03-01 09:00:00.000000"
        rows = [
            (1, '{"citizen_id": "c", "member_id": "a", "was": "external"}', "queued"),
            (2, '{"citizen_id": "c", "member_id": "b", "was": "hosted"}', "running"),
            (3, '{"citizen_id": "c", "member_id": "d"}', "queued"),
            (4, '{"citizen_id": "c", "member_id": "e", "was": "external"}', "done"),
            # a job of the new kind already waits for the view of job 5: 5 folds into it
            (5, '{"citizen_id": "c", "member_id": "f", "was": "hosted"}', "queued"),
        ]
        async with engine.begin() as connection:
            await connection.execute(text(f"INSERT INTO tenants VALUES ('north', '{at}')"))
            for job_id, payload, status in rows:
                await connection.execute(
                    text(
                        "INSERT INTO jobs (id, tenant_id, kind, key, payload, status, run_at,"
                        " attempts, created_at, updated_at) VALUES (:id, 'north',"
                        " 'member.withdraw', :key, :payload, :status, :at, 0, :at, :at)"
                    ),
                    {"id": job_id, "key": f"c:{job_id}", "payload": payload, "status": status,
                     "at": at},
                )  # fmt: skip
            await connection.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, kind, key, payload, status, run_at,"
                    " attempts, created_at, updated_at) VALUES (6, 'north', 'member.left_hosted',"
                    " 'c:5', :payload, 'queued', :at, 0, :at, :at)"
                ),
                {"payload": '{"citizen_id": "c", "member_id": "f"}', "at": at},
            )
        await upgrade(url)
        async with engine.connect() as connection:
            found = (await connection.execute(text("SELECT id, kind, payload FROM jobs"))).all()
        kinds = {job_id: (kind, json.loads(payload)) for job_id, kind, payload in found}
        assert kinds == {
            1: ("member.left_account", {"citizen_id": "c", "member_id": "a"}),
            2: ("member.left_hosted", {"citizen_id": "c", "member_id": "b"}),
            3: ("member.withdraw", {"citizen_id": "c", "member_id": "d"}),
            4: ("member.withdraw", {"citizen_id": "c", "member_id": "e", "was": "external"}),
            6: ("member.left_hosted", {"citizen_id": "c", "member_id": "f"}),
        }
    finally:
        await engine.dispose()


async def test_a_schema_behind_the_code_is_named_and_one_ahead_is_fine(tmp_path: Path) -> None:
    """`carecal serve` and `carecal worker` on PostgreSQL do not migrate (`carecal migrate`
    does): one started on a schema missing a migration would take webhooks and fail every
    sync. It is told why instead. A schema a newer carecal migrated (a rolling upgrade) is
    fine: migrations only add."""
    url = f"sqlite+aiosqlite:///{tmp_path}/carecal.db"
    assert "no carecal schema yet" in str(await schema_behind(url))
    await upgrade(url, "0018")
    assert await schema_behind(url) == (
        f"the database schema is at revision 0018, and this carecal needs {head_revision()}: "
        "run `carecal migrate` first"
    )
    await upgrade(url)
    assert await schema_behind(url) is None
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        await engine.dispose()
    assert await schema_behind(url) is None  # a newer carecal's


@pytest.mark.postgres
async def test_carecal_started_before_migrate_on_postgresql_says_so_and_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(POSTGRES_SKIP)
    name = f"carecal_cli_{secrets.token_hex(6)}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        fresh = url.rsplit("/", 1)[0] + f"/{name}"
        environ = {"CARECAL_DATABASE__URL": fresh}
        with pytest.MonkeyPatch.context() as patch:
            for key, value in environ.items():
                patch.setenv(key, value)
            code = await asyncio.to_thread(main, ["outbox", "replay"])
            err = capsys.readouterr().err
            assert code == 2 and "run `carecal migrate` first" in err
            assert await asyncio.to_thread(main, ["migrate"]) == 0
            assert await asyncio.to_thread(main, ["outbox", "replay"]) == 0
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
