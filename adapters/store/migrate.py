"""Run the Alembic migrations from code (used by `carecal migrate` and at start-up).

    await upgrade("sqlite+aiosqlite:///var/carecal.db")
    assert await is_up_to_date("sqlite+aiosqlite:///var/carecal.db")

Each function takes a database URL or an `AsyncEngine` (for example one whose connections use a
particular PostgreSQL `search_path`); an engine it was given is left open, one it made is disposed.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.store.sql import create_engine, translate_errors

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock key held while migrating: instances started at once migrate one
# after the other (the later ones find the schema at head), instead of racing to create the
# same tables and failing.
MIGRATION_LOCK = 0x63617265_6D696772  # "caremigr"


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database behind a (sync) connection is at; None when never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(url: str | AsyncEngine, revision: str = "head") -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    engine = create_engine(url) if isinstance(url, str) else url
    try:
        with translate_errors():
            async with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                await connection.run_sync(run)
    finally:
        if isinstance(url, str):
            await engine.dispose()


async def schema_behind(url: str | AsyncEngine) -> str | None:
    """Why this carecal cannot run on the database (a sentence to show), or None: its schema
    lacks migrations this code needs. A schema a newer carecal migrated is fine: during a
    rolling upgrade the instances not yet upgraded go on beside the new ones (migrations
    only add to the schema)."""
    current = await _revision_of(url)
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return "the database has no carecal schema yet: run `carecal migrate` first"
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if current not in known:
        return None  # a newer carecal's
    return (
        f"the database schema is at revision {current}, and this carecal needs {head}: "
        "run `carecal migrate` first"
    )


async def is_up_to_date(url: str | AsyncEngine) -> bool:
    return await _revision_of(url) == head_revision()


async def _revision_of(url: str | AsyncEngine) -> str | None:
    """`current_revision` of the database at `url` (an engine given is left open)."""
    engine = create_engine(url) if isinstance(url, str) else url
    try:
        with translate_errors():
            async with engine.connect() as connection:
                revision: str | None = await connection.run_sync(current_revision)
                return revision
    finally:
        if isinstance(url, str):
            await engine.dispose()
