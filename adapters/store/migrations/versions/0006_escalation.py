"""Escalation and outbox replay: occurrences carry their claim deadline and whether the
escalation sweep has checked it; outbox events remember when they were last replayed.

Existing occurrences get their deadline computed here (start minus the task's
claim_deadline_hours; none for visits), so the sweep sees them at once: an unfilled one whose
deadline passed within `escalation.lookback_hours` is escalated after the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2027-03-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNCHECKED = sa.text("deadline_checked_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("occurrences") as batch:
        batch.add_column(sa.Column("claim_deadline_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("deadline_checked_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_occurrences_deadline_unchecked",
        "occurrences",
        ["claim_deadline_at"],
        sqlite_where=UNCHECKED,
        postgresql_where=UNCHECKED,
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True))
    _backfill_deadlines()


def _backfill_deadlines() -> None:
    occurrences = sa.table(
        "occurrences",
        sa.column("tenant_id", sa.String),
        sa.column("id", sa.String),
        sa.column("task_id", sa.String),
        sa.column("start_utc", sa.DateTime(timezone=True)),
        sa.column("claim_deadline_at", sa.DateTime(timezone=True)),
    )
    tasks = sa.table(
        "tasks",
        sa.column("tenant_id", sa.String),
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("claim_deadline_hours", sa.Integer),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(occurrences.c.tenant_id, occurrences.c.id, occurrences.c.start_utc,
                  tasks.c.claim_deadline_hours)
        .join(tasks, (tasks.c.tenant_id == occurrences.c.tenant_id)
              & (tasks.c.id == occurrences.c.task_id))
        .where(tasks.c.kind != "visit", tasks.c.claim_deadline_hours.is_not(None))
    ).all()  # fmt: skip
    if not rows:
        return
    # Same type in and out (naive UTC text on SQLite, timestamptz on PostgreSQL).
    bind.execute(
        sa.update(occurrences)
        .where(
            occurrences.c.tenant_id == sa.bindparam("p_tenant"),
            occurrences.c.id == sa.bindparam("p_id"),
        )
        .values(claim_deadline_at=sa.bindparam("p_deadline")),
        [
            {
                "p_tenant": row.tenant_id,
                "p_id": row.id,
                "p_deadline": row.start_utc - timedelta(hours=row.claim_deadline_hours),
            }
            for row in rows
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("requeued_at")
    op.drop_index("ix_occurrences_deadline_unchecked", table_name="occurrences")
    with op.batch_alter_table("occurrences") as batch:
        batch.drop_column("deadline_checked_at")
        batch.drop_column("claim_deadline_at")
