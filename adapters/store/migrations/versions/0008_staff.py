"""Staff (issue #6): targeted offers, the durable mark that staff asked a member to take an
occurrence (`POST /api/v1/occurrences/{id}/assign` for someone who is not staff). It goes with
its occurrence.

Revision ID: 0008
Revises: 0007
Create Date: 2027-04-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "targeted_offers",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("occurrence_id", sa.String(255), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "occurrence_id", "member_id", name="pk_targeted_offers"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "occurrence_id"],
            ["occurrences.tenant_id", "occurrences.id"],
            name="fk_targeted_offers_tenant_id_occurrence_id_occurrences",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("targeted_offers")
