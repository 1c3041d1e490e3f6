"""Queued `member.withdraw` jobs that say which calendar the member left ("was") become jobs
of the kinds that say it now (`member.left_hosted`, `member.left_account`).

Jobs of one view share a key, and a job queued beside a waiting one of its kind is folded
into it, payload and all. A removal queued after the upgrade beside such a job, still
waiting from the version before (say in its backoff), was folded into it and lost: the
removed member's copies and password stayed. Data only; the schema does not change.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = {"hosted": "member.left_hosted", "external": "member.left_account"}
jobs = sa.table(
    "jobs",
    sa.column("id", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("status", sa.String),
    sa.column("payload", sa.JSON),
)


def upgrade() -> None:
    bind = op.get_bind()
    waiting = bind.execute(
        sa.select(jobs.c.id, jobs.c.payload).where(
            jobs.c.kind == "member.withdraw", jobs.c.status.in_(("queued", "running"))
        )
    ).all()
    for job_id, payload in waiting:
        left = (payload or {}).get("was")
        kind = KINDS.get(left) if isinstance(left, str) else None
        if kind is None:
            continue
        rest = {k: v for k, v in payload.items() if k != "was"}
        try:
            with bind.begin_nested():
                bind.execute(
                    sa.update(jobs).where(jobs.c.id == job_id).values(kind=kind, payload=rest)
                )
        except sa.exc.IntegrityError:
            # A job of the new kind already waits for the same view (queued by a worker of
            # this version): it does the same work, so this one folds into it.
            bind.execute(sa.delete(jobs).where(jobs.c.id == job_id))


def downgrade() -> None:
    bind = op.get_bind()
    waiting = bind.execute(
        sa.select(jobs.c.id, jobs.c.kind, jobs.c.payload).where(
            jobs.c.kind.in_(tuple(KINDS.values())), jobs.c.status.in_(("queued", "running"))
        )
    ).all()
    was = {kind: name for name, kind in KINDS.items()}
    for job_id, kind, payload in waiting:
        # The version before knows these only as `member.withdraw` with "was"; where one of
        # those waits for the same view already, this one stays as it is (left to fail).
        try:
            with bind.begin_nested():
                bind.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(kind="member.withdraw", payload={**payload, "was": was[kind]})
                )
        except sa.exc.IntegrityError:
            pass
