"""View state: each view's collection and its last seen sync token and ctag.

Revision ID: 0005
Revises: 0004
Create Date: 2027-03-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "view_state",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("collection", sa.String(1024), nullable=False),
        sa.Column("sync_token", sa.String(1024), nullable=True),
        sa.Column("ctag", sa.String(1024), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "member_id", "citizen_id", name="pk_view_state"),
    )


def downgrade() -> None:
    op.drop_table("view_state")
