"""`view_state.name`: the display name carecal last gave a view's collection.

A name on the server other than this one is the member's own (they renamed the calendar in
their app, as Apple Calendar does on the server): it is kept. Before, every run that found
the server's name other than the citizen's renamed the collection back.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.add_column(sa.Column("name", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("view_state") as batch:
        batch.drop_column("name")
