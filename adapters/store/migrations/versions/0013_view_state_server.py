"""A view's state names the server and account its collection is in, not only its path.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty for existing states: compared by path alone until their next sync stores it.
    op.add_column(
        "view_state", sa.Column("server", sa.String(64), nullable=False, server_default="")
    )


def downgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.drop_column("server")
