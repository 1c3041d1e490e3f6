"""`view_records.sequence`: the SEQUENCE of the copy carecal last wrote.

DESIGN.md: SEQUENCE is bumped on every change the plugin makes. Before, a copy's SEQUENCE was
its task's version, so a change of holders ([Ledig] -> [Anna]) or of the advice kept it, and
a copy whose SEQUENCE the member's app had raised was written back with a lower one. Now each
write of a copy goes past the SEQUENCE it had (`planner._sequenced`); rows from before hold 0,
and their next write takes the task's version or more, as before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("view_records") as batch:
        batch.add_column(sa.Column("sequence", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("view_records") as batch:
        batch.drop_column("sequence")
