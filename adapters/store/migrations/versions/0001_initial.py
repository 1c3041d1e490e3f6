"""Initial schema: tenants, circles, tasks, occurrences, claims, inbox, outbox, jobs, audit.

Revision ID: 0001
Revises:
Create Date: 2027-03-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "citizens",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("circle_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_citizens"),
    )
    op.create_table(
        "memberships",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("calendar", sa.String(16), nullable=False),
        sa.Column("external_url", sa.Text(), nullable=True),
        sa.Column("external_username", sa.Text(), nullable=True),
        sa.Column("external_password_enc", sa.LargeBinary(), nullable=True),
        sa.Column("capacity_hours", sa.Float(), nullable=True),
        sa.Column("capacity_tasks", sa.Integer(), nullable=True),
        sa.Column("availability", sa.JSON(), nullable=False),
        sa.Column("paused_until", sa.Date(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("removed_at", _utc(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "citizen_id", "member_id", name="pk_memberships"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "citizen_id"],
            ["citizens.tenant_id", "citizens.id"],
            name="fk_memberships_tenant_id_citizen_id_citizens",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_memberships_tenant_id_member_id", "memberships", ["tenant_id", "member_id"])
    op.create_table(
        "tasks",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("start_local", sa.DateTime(timezone=False), nullable=False),
        sa.Column("end_local", sa.DateTime(timezone=False), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("people_needed", sa.Integer(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("recurrence", sa.Text(), nullable=True),
        sa.Column("exdates", sa.JSON(), nullable=False),
        sa.Column("rdates", sa.JSON(), nullable=False),
        sa.Column("claim_deadline_hours", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assigned_member_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_tenant_id_citizen_id", "tasks", ["tenant_id", "citizen_id"])
    op.create_table(
        "occurrences",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("start_utc", _utc(), nullable=False),
        sa.Column("end_utc", _utc(), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_occurrences"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "task_id"],
            ["tasks.tenant_id", "tasks.id"],
            name="fk_occurrences_tenant_id_task_id_tasks",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_occurrences_tenant_id_task_id_start_utc",
        "occurrences",
        ["tenant_id", "task_id", "start_utc"],
    )
    op.create_table(
        "claims",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("occurrence_id", sa.String(255), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "occurrence_id", "member_id", name="pk_claims"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "occurrence_id"],
            ["occurrences.tenant_id", "occurrences.id"],
            name="fk_claims_tenant_id_occurrence_id_occurrences",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_claims_tenant_id_member_id", "claims", ["tenant_id", "member_id"])
    op.create_table(
        "passes",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("occurrence_id", sa.String(255), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "occurrence_id", "member_id", name="pk_passes"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "occurrence_id"],
            ["occurrences.tenant_id", "occurrences.id"],
            name="fk_passes_tenant_id_occurrence_id_occurrences",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "relief_requests",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("citizen_id", sa.String(128), nullable=False),
        sa.Column("member_id", sa.String(128), nullable=False),
        sa.Column("start_at", _utc(), nullable=False),
        sa.Column("end_at", _utc(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_relief_requests"),
    )
    op.create_table(
        "inbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("webhook_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("received_at", _utc(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("error", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_inbox"),
        sa.UniqueConstraint("tenant_id", "webhook_id", name="uq_inbox_tenant_id_webhook_id"),
    )
    op.create_index(
        "ix_inbox_pending_seq",
        "inbox",
        ["seq"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("ordering_key", sa.String(255), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _utc(), nullable=True),
        sa.Column("delivered_at", _utc(), nullable=True),
        sa.Column("dead_at", _utc(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index(
        "ix_outbox_delivered_at_dead_at_created_at",
        "outbox",
        ["delivered_at", "dead_at", "created_at"],
    )
    op.create_index("ix_outbox_tenant_id_ordering_key", "outbox", ["tenant_id", "ordering_key"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_at", _utc(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", _utc(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status_run_at", "jobs", ["status", "run_at"])
    op.create_index(
        "uq_jobs_queued_key",
        "jobs",
        ["tenant_id", "kind", "key"],
        unique=True,
        sqlite_where=sa.text("status = 'queued'"),
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_tenant_id_subject_at", "audit", ["tenant_id", "subject", "at"])


def downgrade() -> None:
    for table in (
        "audit",
        "jobs",
        "outbox",
        "inbox",
        "relief_requests",
        "passes",
        "claims",
        "occurrences",
        "tasks",
        "memberships",
        "citizens",
        "tenants",
    ):
        op.drop_table(table)
