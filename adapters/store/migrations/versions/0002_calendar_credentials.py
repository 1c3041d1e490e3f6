"""Calendar credentials: members' app passwords for the embedded CalDAV server.

Revision ID: 0002
Revises: 0001
Create Date: 2027-03-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendar_credentials",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "member_id", name="pk_calendar_credentials"),
        sa.UniqueConstraint("username", name="uq_calendar_credentials_username"),
    )


def downgrade() -> None:
    op.drop_table("calendar_credentials")
