"""The database schema, as SQLAlchemy Core tables.

`migrations/versions/` is written by hand to match this module; `tests/contract/test_migrations.py`
checks that the two never drift apart.

Every row belongs to a tenant, and every key starts with `tenant_id`. Timestamps are stored as
UTC (`UTCDateTime`); wall-clock task times are stored naive, next to their IANA zone.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# 64 bits on both databases: the host's versions (often epoch milliseconds; the schema takes
# up to 2**63 - 1) and the ids of tables that grow for good. SQLite's INTEGER is 64-bit already,
# and only an INTEGER PRIMARY KEY is its rowid; PostgreSQL's INTEGER is 32-bit (migration 0015).
Int64 = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored in UTC and read back aware in UTC.

    SQLite keeps no offset, so values are written as naive UTC there and made aware on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} where an aware one is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _tenant_id() -> Column[str]:
    return Column("tenant_id", String(64), nullable=False)


tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

citizens = Table(
    "citizens",
    metadata,
    _tenant_id(),
    Column("id", String(128), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("circle_version", Int64, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
)

memberships = Table(
    "memberships",
    metadata,
    _tenant_id(),
    Column("citizen_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=True),
    Column("role", String(16), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("calendar", String(16), nullable=False),
    Column("external_url", Text, nullable=True),
    Column("external_username", Text, nullable=True),
    # Ciphertext from the store's `Cipher`; the plaintext password never reaches the database.
    Column("external_password_enc", LargeBinary, nullable=True),
    Column("capacity_hours", Float, nullable=True),
    Column("capacity_tasks", Integer, nullable=True),
    Column("availability", JSON, nullable=False),
    Column("paused_until", Date, nullable=True),
    Column("position", Integer, nullable=False),  # order of the members in the host's list
    Column("removed_at", UTCDateTime(), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "citizen_id", "member_id"),
    ForeignKeyConstraint(
        ["tenant_id", "citizen_id"], ["citizens.tenant_id", "citizens.id"], ondelete="CASCADE"
    ),
    Index(None, "tenant_id", "member_id"),
)

tasks = Table(
    "tasks",
    metadata,
    _tenant_id(),
    Column("id", String(128), nullable=False),
    Column("citizen_id", String(128), nullable=False),
    Column("version", Int64, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("category", String(32), nullable=False),
    Column("start_local", DateTime(timezone=False), nullable=False),
    Column("end_local", DateTime(timezone=False), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("people_needed", Integer, nullable=False),
    Column("details", Text, nullable=True),
    Column("location", Text, nullable=True),
    Column("recurrence", Text, nullable=True),
    Column("exdates", JSON, nullable=False),  # naive local ISO strings
    Column("rdates", JSON, nullable=False),
    Column("claim_deadline_hours", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("assigned_member_id", String(128), nullable=True),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index(None, "tenant_id", "citizen_id"),
)

# `claim_deadline_at` is start minus the task's claim_deadline_hours (NULL for visits and tasks
# without one), kept by `sync_occurrences`; `deadline_checked_at` is when the escalation sweep
# dealt with the passed deadline (and sent `task.unfilled` if slots were free). The partial
# index holds only unchecked occurrences, so the sweep's "deadline passed, not yet checked" is
# one range scan however long the history grows (queries spell the predicate as below).
OCCURRENCE_UNCHECKED = text("deadline_checked_at IS NULL")

occurrences = Table(
    "occurrences",
    metadata,
    _tenant_id(),
    Column("id", String(255), nullable=False),
    Column("task_id", String(128), nullable=False),
    Column("start_utc", UTCDateTime(), nullable=False),
    Column("end_utc", UTCDateTime(), nullable=False),
    Column("tz", String(64), nullable=False),
    Column("cancelled", Boolean, nullable=False),
    Column("claim_deadline_at", UTCDateTime(), nullable=True),
    Column("deadline_checked_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("tenant_id", "id"),
    ForeignKeyConstraint(
        ["tenant_id", "task_id"], ["tasks.tenant_id", "tasks.id"], ondelete="CASCADE"
    ),
    Index(None, "tenant_id", "task_id", "start_utc"),
    Index(
        "ix_occurrences_deadline_unchecked",
        "claim_deadline_at",
        sqlite_where=OCCURRENCE_UNCHECKED,
        postgresql_where=OCCURRENCE_UNCHECKED,
    ),
)

claims = Table(
    "claims",
    metadata,
    _tenant_id(),
    Column("occurrence_id", String(255), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    # One claim per member and occurrence: the key is the uniqueness rule.
    PrimaryKeyConstraint("tenant_id", "occurrence_id", "member_id"),
    ForeignKeyConstraint(
        ["tenant_id", "occurrence_id"],
        ["occurrences.tenant_id", "occurrences.id"],
        ondelete="CASCADE",
    ),
    Index(None, "tenant_id", "member_id"),
)

passes = Table(
    "passes",
    metadata,
    _tenant_id(),
    Column("occurrence_id", String(255), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "occurrence_id", "member_id"),
    ForeignKeyConstraint(
        ["tenant_id", "occurrence_id"],
        ["occurrences.tenant_id", "occurrences.id"],
        ondelete="CASCADE",
    ),
)

# Staff asked this member to take the occurrence (`POST /api/v1/occurrences/{id}/assign` for a
# non-staff member): a targeted offer, shown in their copy until they accept or decline it.
targeted_offers = Table(
    "targeted_offers",
    metadata,
    _tenant_id(),
    Column("occurrence_id", String(255), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "occurrence_id", "member_id"),
    ForeignKeyConstraint(
        ["tenant_id", "occurrence_id"],
        ["occurrences.tenant_id", "occurrences.id"],
        ondelete="CASCADE",
    ),
)

relief_requests = Table(
    "relief_requests",
    metadata,
    _tenant_id(),
    Column("id", String(128), nullable=False),
    Column("citizen_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("start_at", UTCDateTime(), nullable=False),
    Column("end_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Int64, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index(None, "tenant_id", "citizen_id"),
)

# What a member set themselves for one circle (capacity, weekly availability, pause), next to
# the host's values when they set it; `fields` names the ones the member's setting still
# decides (a newer host decision about a field takes it back: `plugin.services.capacity`).
member_settings = Table(
    "member_settings",
    metadata,
    _tenant_id(),
    Column("citizen_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("member_values", JSON, nullable=False),
    Column("host_values", JSON, nullable=False),
    Column("fields", JSON, nullable=False),
    Column("circle_version", Int64, nullable=False),
    Column("set_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "citizen_id", "member_id"),
)

# `member.overloaded` went to the host for this member, circle and four-week period: the key
# makes the notice once only, whichever claim (and however many at once) crossed the line.
overload_notices = Table(
    "overload_notices",
    metadata,
    _tenant_id(),
    Column("citizen_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("noticed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "citizen_id", "member_id", "period_start"),
)

# Accepted host webhooks, applied one at a time in `seq` (arrival) order. `body` is the verified
# request body, dropped (NULL) once the entry is applied or stale; failed entries keep it for
# replay. The partial index holds only pending rows, so "oldest pending" stays one index probe
# however long the history grows (queries must spell the predicate as the literal below).
INBOX_PENDING = text("status = 'pending'")
INBOX_ERROR_MAX = 1000  # longer `error` texts are cut to this many characters

inbox = Table(
    "inbox",
    metadata,
    # On SQLite an INTEGER PRIMARY KEY (the rowid); on PostgreSQL a SERIAL.
    Column("seq", Int64, primary_key=True, autoincrement=True),
    _tenant_id(),
    Column("webhook_id", String(255), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("body", LargeBinary, nullable=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),  # pending / applied / stale / failed
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("error", String(INBOX_ERROR_MAX), nullable=True),
    # What makes `accept_webhooks` race-safe (INSERT ... ON CONFLICT DO NOTHING).
    UniqueConstraint("tenant_id", "webhook_id"),
    Index(
        "ix_inbox_pending_seq",
        "seq",
        sqlite_where=INBOX_PENDING,
        postgresql_where=INBOX_PENDING,
    ),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", String(64), primary_key=True),
    _tenant_id(),
    Column("type", String(64), nullable=False),
    Column("data", JSON, nullable=False),
    Column("ordering_key", String(255), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("dead_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    # Set by `carecal outbox replay`; the dead-letter age counts from it (else created_at).
    Column("requeued_at", UTCDateTime(), nullable=True),
    Index(None, "delivered_at", "dead_at", "created_at"),
    Index(None, "tenant_id", "ordering_key"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Int64, primary_key=True, autoincrement=True),
    _tenant_id(),
    Column("kind", String(64), nullable=False),
    Column("key", String(255), nullable=True),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("run_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "status", "run_at"),
    # At most one *queued* job per (tenant, kind, key): what makes `enqueue_job` dedupe race-safe.
    Index(
        "uq_jobs_queued_key",
        "tenant_id",
        "kind",
        "key",
        unique=True,
        sqlite_where=text("status = 'queued'"),
        postgresql_where=text("status = 'queued'"),
    ),
)

# Rounds each instance would run (the calendar poll), claimed by one at a time (`claim_round`):
# the one whose claim finds `due_at` passed runs it, and sets the next.
rounds = Table(
    "rounds",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("due_at", UTCDateTime(), nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Int64, primary_key=True, autoincrement=True),
    _tenant_id(),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("detail", JSON, nullable=False),
    Index(None, "tenant_id", "subject", "at"),
)

# App passwords for the embedded CalDAV server: one per member of a tenant, replaced when
# issued again. `username` is what the member's calendar app sends (unique across tenants,
# since Radicale knows nothing else); `password_hash` is a slow salted hash, never the password.
calendar_credentials = Table(
    "calendar_credentials",
    metadata,
    _tenant_id(),
    Column("member_id", String(128), nullable=False),
    Column("username", String(255), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("tenant_id", "member_id"),
    UniqueConstraint("username"),
)

# What carecal last wrote into one member's calendar view (member, circle), per event UID:
# the sync planner's `SyncRecord`. `href` NULL is a tombstone (the member deleted the copy).
view_records = Table(
    "view_records",
    metadata,
    _tenant_id(),
    Column("member_id", String(128), nullable=False),
    Column("citizen_id", String(128), nullable=False),
    Column("uid", String(255), nullable=False),
    Column("href", String(1024), nullable=True),
    Column("etag", String(255), nullable=True),
    Column("fingerprint", String(128), nullable=False),
    Column("material", String(128), nullable=False),
    Column("partstat", String(32), nullable=False),
    Column("member_alarms", Boolean, nullable=False),
    # A digest of what the copy was rendered from (view_sync._item_keys): while it holds,
    # the copy need not be rendered again.
    Column("inputs", String(64), nullable=False, server_default=""),
    # The advice marks it was rendered with (view_sync.marks_of): NULL before they were kept.
    Column("marks", SmallInteger, nullable=True),
    # The SEQUENCE of the copy carecal last wrote (0: not known, a record from before).
    Column("sequence", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("tenant_id", "member_id", "citizen_id", "uid"),
)

# Per view: where its collection is, and the collection's change markers as the last sync saw
# them (RFC 6578 sync token, CS:getctag), so the next sync asks only for what changed since.
view_state = Table(
    "view_state",
    metadata,
    _tenant_id(),
    Column("member_id", String(128), nullable=False),
    Column("citizen_id", String(128), nullable=False),
    Column("collection", String(1024), nullable=False),
    Column("sync_token", String(1024), nullable=True),
    Column("ctag", String(1024), nullable=True),
    Column("synced_at", UTCDateTime(), nullable=False),
    # A digest of everything the view was rendered from (view_sync._inputs_digest): when
    # neither it nor the collection's token changed, a sync has nothing to do.
    Column("inputs", String(64), nullable=True),
    # The view's generation (view_generations) that run rendered from.
    Column("generation", Integer, nullable=False, server_default="0"),
    # A digest of the server and account the collection is in ("" for rows from before).
    Column("server", String(64), nullable=False, server_default=""),
    # The display name carecal last gave the collection (NULL: not known).
    Column("name", String(512), nullable=True),
    # The href after which the member's own objects are still to be read (NULL: none).
    Column("foreign_after", Text, nullable=True),
    PrimaryKeyConstraint("tenant_id", "member_id", "citizen_id"),
)

# Per view: a counter every change to what the view is rendered from bumps, in the change's
# own transaction (view_sync.enqueue_view_syncs). A poll whose probe finds the collection
# unchanged and whose view_state.generation is still the current one has nothing to render.
# A table of its own, not a column of view_state: a change before the view's first sync must
# count too, and the sync's own write of view_state must never overwrite a concurrent bump.
view_generations = Table(
    "view_generations",
    metadata,
    _tenant_id(),
    Column("member_id", String(128), nullable=False),
    Column("citizen_id", String(128), nullable=False),
    Column("generation", Integer, nullable=False),
    PrimaryKeyConstraint("tenant_id", "member_id", "citizen_id"),
)

# A member's own CalDAV account that no longer holds their view of a circle (they left
# `external` delivery, or gave another account): kept, the password encrypted as in
# `memberships`, only until carecal has deleted its collection there (`member.left_account`).
# `account` is a digest of the URL and the username (`retired_account_key`).
retired_calendars = Table(
    "retired_calendars",
    metadata,
    _tenant_id(),
    Column("citizen_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("account", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("password_enc", LargeBinary, nullable=False),
    Column("retired_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "citizen_id", "member_id", "account"),
)


def retired_account_key(url: str, username: str) -> str:
    return hashlib.sha256(f"{url}\n{username}".encode()).hexdigest()


# Members' personal links (claim pages, ICS feed, setup page): the secret that signs a member's
# tokens (`plugin.services.links`). `id` is the public reference a token carries: random and
# unique across tenants, because a token names nothing else. One active row per member of a
# tenant; revoking sets `revoked_at` and keeps the row, so an old token is answered 410 (gone)
# rather than 404, and the member's next link comes from a new row with a new secret.
MEMBER_LINK_ACTIVE = text("revoked_at IS NULL")

member_links = Table(
    "member_links",
    metadata,
    Column("id", String(32), primary_key=True),
    _tenant_id(),
    Column("member_id", String(128), nullable=False),
    Column("secret", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Index(
        "uq_member_links_active",
        "tenant_id",
        "member_id",
        unique=True,
        sqlite_where=MEMBER_LINK_ACTIVE,
        postgresql_where=MEMBER_LINK_ACTIVE,
    ),
)
