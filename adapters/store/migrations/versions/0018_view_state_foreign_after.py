"""`view_state.foreign_after`: where the reading of a member's own objects goes on.

A run reads at most `relief_calendar.MAX_FOREIGN` of the member's own objects in a view's
collection (a relief event is one). Before, when more of them changed at once (a calendar
app importing or copying events into carecal's calendar), the rest were never read: the
next delta starts after them. Now the run keeps the href it read up to, and the next runs
read on from there.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.add_column(sa.Column("foreign_after", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.drop_column("foreign_after")
