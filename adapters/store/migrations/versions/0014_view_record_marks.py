"""A view's sync record keeps the advice marks its copy was rendered with.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for existing records: not known, so a run renders as before until it writes them.
    op.add_column("view_records", sa.Column("marks", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("view_records") as batch:
        batch.drop_column("marks")
