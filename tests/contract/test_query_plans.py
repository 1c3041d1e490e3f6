"""How SQLite runs the store's statements: a per-citizen or per-member read must find its rows
by an index that leads with its key, not walk every row of the tenant.

SQLite plans without statistics (nobody runs ANALYZE), so a join it may start from either end
can start from the wrong one: reading a citizen's occurrences through a join to `tasks` walked
every occurrence of the tenant and looked each one's task up (~3 ms per 7 500 occurrences,
for each of a sync's three queries; a municipality's tenant holds far more). The plans are
read from `EXPLAIN QUERY PLAN` on the schema the migrations make (`metadata`, which
test_migrations keeps equal to them)."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Select

from adapters.store.sql_tx_statements import statements
from adapters.store.tables import metadata

# Tables that hold rows per citizen or member: a statement reads them by more than the tenant.
SCOPED = {
    "occurrences",
    "claims",
    "passes",
    "targeted_offers",
    "memberships",
    "view_records",
    "view_state",
    "view_generations",
    "member_settings",
    "relief_requests",
    "retired_calendars",
    "tasks",
}

# Statements that read a whole tenant on purpose, and why.
TENANT_WIDE = {
    "list_recurring_tasks": "the periodic horizon roll extends every recurring task",
    "list_member_views": "the worker's poll reads every synced view of the tenant",
    "peek_views": "the worker's poll reads every synced view of the tenant",
    "collection_in_use": "only when a view moves; a scan of the views, not of their data",
}

POSTGRESQL_ONLY = {"applier_lock", "accept_lock"}  # advisory locks; no table read

EXPANDING = {"p_ids": ["o-1", "o-2"], "p_deliveries": ["hosted", "external"]}


def _plans() -> Iterator[tuple[str, list[str]]]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    raw: Any = engine.raw_connection()
    db: sqlite3.Connection = raw.driver_connection
    dialect = sqlite.dialect()
    made = statements(dialect)
    for field in dataclasses.fields(made):
        statement = getattr(made, field.name)
        if not isinstance(statement, Select) or field.name in POSTGRESQL_ONLY:
            continue
        compiled = statement.compile(dialect=dialect)
        expanded = compiled.construct_expanded_state(
            {name: EXPANDING.get(name, "x") for name in compiled.binds}
        )
        values = [expanded.parameters[name] for name in expanded.positiontup or ()]
        plan = db.execute(f"EXPLAIN QUERY PLAN {expanded.statement}", values).fetchall()
        yield field.name, [row[3] for row in plan]
    raw.close()
    engine.dispose()


PLANS = dict(_plans())

# "SCAN claims", or "SEARCH claims USING ... INDEX x (tenant_id=?)": the tenant's every row.
_WHOLE_TENANT = re.compile(r"^(?:SCAN (\w+)|SEARCH (\w+) USING .*\(tenant_id=\?\))")


def _tenant_walks(plan: list[str]) -> list[str]:
    walks = []
    for step in plan:
        found = _WHOLE_TENANT.match(step)
        if found and (found.group(1) or found.group(2)) in SCOPED:
            walks.append(step)
    return walks


def test_the_plans_were_read() -> None:
    assert {"citizen_records", "citizen_claims_and_passes", "list_held"} <= set(PLANS)
    assert all(PLANS.values())


@pytest.mark.parametrize("name", sorted(set(PLANS) - set(TENANT_WIDE)))
def test_scoped_reads_do_not_walk_the_tenant(name: str) -> None:
    assert _tenant_walks(PLANS[name]) == [], PLANS[name]


@pytest.mark.parametrize("name", sorted(TENANT_WIDE))
def test_tenant_wide_reads_walk_the_tenant_once(name: str) -> None:
    # The one walk is the table the read is about; every join from it goes by key.
    assert len(_tenant_walks(PLANS[name])) == 1, PLANS[name]


def test_a_citizens_occurrences_are_found_from_its_tasks() -> None:
    for name in ("citizen_records", "citizen_claims_and_passes"):
        steps = PLANS[name]
        assert any("SEARCH tasks USING INDEX ix_tasks_tenant_id_citizen_id" in s for s in steps)
        occurrence_steps = [s for s in steps if s.startswith("SEARCH occurrences")]
        assert occurrence_steps and all("task_id=?" in s for s in occurrence_steps), steps


def test_held_claims_are_found_from_the_periods_occurrences() -> None:
    steps = PLANS["list_held"]
    assert any(s.startswith("SEARCH claims") and "occurrence_id=?" in s for s in steps), steps
    assert any(
        s.startswith("SEARCH occurrences") and "task_id=? AND start_utc>?" in s for s in steps
    ), steps


def test_the_detector_sees_a_walk() -> None:
    # The shape of the plan these statements had before: every occurrence of the tenant.
    walk = "SEARCH occurrences USING INDEX ix_occurrences_tenant_id_task_id_start_utc (tenant_id=?)"
    assert _tenant_walks([walk, "SCAN memberships"]) == [walk, "SCAN memberships"]
    assert _tenant_walks(["SEARCH tasks USING INDEX x (tenant_id=? AND citizen_id=?)"]) == []
