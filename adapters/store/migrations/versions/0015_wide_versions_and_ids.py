"""The host's versions and the ids of tables that grow for good are 64-bit on PostgreSQL.

Hosts often version their entities by time (epoch milliseconds, beyond 32 bits), and the
schema accepts versions up to 2**63 - 1: on PostgreSQL's 32-bit INTEGER every such webhook
failed to apply. The inbox's, jobs' and audit log's ids count up for good (rows are deleted,
numbers not reused). SQLite's INTEGER is 64-bit already: nothing changes there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERSIONS = [
    ("citizens", "circle_version"),
    ("tasks", "version"),
    ("relief_requests", "version"),
    ("member_settings", "circle_version"),
]
SERIALS = [("inbox", "seq"), ("jobs", "id"), ("audit", "id")]


def _widen(to: type[sa.Integer], sequence_as: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column in VERSIONS + SERIALS:
        op.alter_column(table, column, type_=to(), existing_nullable=False)
    for table, column in SERIALS:
        sequence = bind.execute(
            sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table, "column": column},
        ).scalar_one()
        op.execute(f"ALTER SEQUENCE {sequence} AS {sequence_as}")


def upgrade() -> None:
    _widen(sa.BigInteger, "bigint")


def downgrade() -> None:
    # Fails, as it should, once a value no longer fits in 32 bits.
    _widen(sa.Integer, "integer")
