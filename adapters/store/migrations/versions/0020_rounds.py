"""`rounds`: a round several instances would each run (the calendar poll), claimed by one.

Before, every worker polled every view each `calendar.poll_interval_seconds`: with N
instances, the municipality's server and every member's own server answered N probes a
round. Now the instance whose claim finds the round due runs it (`Store.claim_round`).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rounds",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rounds"),
    )


def downgrade() -> None:
    op.drop_table("rounds")
