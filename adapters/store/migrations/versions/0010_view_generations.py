"""Views count the changes to what they are rendered from, so an idle poll renders nothing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "view_generations",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "member_id", "citizen_id"),
    )
    op.add_column(
        "view_state",
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.drop_column("generation")
    op.drop_table("view_generations")
