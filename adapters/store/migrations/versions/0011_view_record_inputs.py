"""Sync records remember what each copy was rendered from, so a change renders only itself.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty for existing records: their copies are rendered once more, then remembered.
    op.add_column(
        "view_records", sa.Column("inputs", sa.String(64), nullable=False, server_default="")
    )


def downgrade() -> None:
    with op.batch_alter_table("view_records") as batch:
        batch.drop_column("inputs")
