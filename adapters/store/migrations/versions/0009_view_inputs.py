"""View state remembers a digest of what each view was rendered from.

Revision ID: 0009
Revises: 0008
Create Date: 2027-04-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("view_state", sa.Column("inputs", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.drop_column("inputs")
