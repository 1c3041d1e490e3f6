"""Capacity and relief (issue #6): members' own capacity settings, the record of overload
notices sent to the host (once per member and period), and an index to list a circle's
relief requests.

- `member_settings`: what a member set themselves on their setup page (capacity, weekly
  availability, pause) for one circle, next to the host's values at that moment, so a newer
  host decision about the same field can be told from a `circle.updated` that merely repeats
  the old one (`plugin.services.capacity`);
- `overload_notices`: one row per (member, circle, four-week period) for which
  `member.overloaded` went to the host; its key makes the notice race-safe and once only.

Revision ID: 0007
Revises: 0006
Create Date: 2027-04-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_settings",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("member_values", sa.JSON(), nullable=False),
        sa.Column("host_values", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("circle_version", sa.Integer(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "citizen_id", "member_id", name="pk_member_settings"),
    )
    op.create_table(
        "overload_notices",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "citizen_id", "member_id", "period_start", name="pk_overload_notices"
        ),
    )
    op.create_index(
        "ix_relief_requests_tenant_id_citizen_id",
        "relief_requests",
        ["tenant_id", "citizen_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_relief_requests_tenant_id_citizen_id", table_name="relief_requests")
    op.drop_table("overload_notices")
    op.drop_table("member_settings")
