"""View records: what the view sync last wrote into each member's calendar collection.

Revision ID: 0003
Revises: 0002
Create Date: 2027-03-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "view_records",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("uid", sa.String(255), nullable=False),
        sa.Column("href", sa.String(1024), nullable=True),
        sa.Column("etag", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("material", sa.String(128), nullable=False),
        sa.Column("partstat", sa.String(32), nullable=False),
        sa.Column("member_alarms", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "member_id", "citizen_id", "uid", name="pk_view_records"
        ),
    )


def downgrade() -> None:
    op.drop_table("view_records")
