"""The statements `SqlTx` runs, built once per dialect with `bindparam()` placeholders.

Building a Core statement (`select(...).where(...)`, `.values(...)`) coerces every argument and
generating its cache key walks the whole tree: on the applier's path that cost more than the
database work. Built once here and executed with a params dict, each statement is looked up in
SQLAlchemy's compiled cache by identity of an already-made cache key and never rebuilt.

INSERT and UPDATE statements carry no `.values()`: SQLAlchemy takes the columns from the keys
of the params dict (the set of keys is part of the cache key), so one statement serves every
call that passes the same columns. Placeholders in WHERE clauses are named `p_*`, never a
column name (SQLAlchemy reserves those for the VALUES/SET clause).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    bindparam,
    case,
    delete,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from adapters.store.tables import (
    INBOX_PENDING,
    OCCURRENCE_UNCHECKED,
    Int64,
    UTCDateTime,
    audit,
    calendar_credentials,
    citizens,
    claims,
    inbox,
    jobs,
    member_links,
    member_settings,
    memberships,
    outbox,
    overload_notices,
    passes,
    relief_requests,
    retired_calendars,
    targeted_offers,
    tasks,
    tenants,
    view_generations,
    view_records,
    view_state,
)
from adapters.store.tables import (
    occurrences as occ_t,
)
from plugin.domain.model import TaskStatus

# pg_advisory_xact_lock keys (bigint), held for the length of a transaction:
# the inbox applier, int.from_bytes(b"ccinbapp"), "carecal inbox applier" ...
INBOX_APPLIER_LOCK = 0x6363696E62617070
# ... and `accept_webhooks`, int.from_bytes(b"ccinbacc"), "carecal inbox accept" ...
INBOX_ACCEPT_LOCK = 0x6363696E62616363
# ... and `lease_jobs`, int.from_bytes(b"ccjoblse"), "carecal job lease".
JOB_LEASE_LOCK = 0x63636A6F626C7365

TENANT = bindparam("p_tenant", type_=String)
TASK_COLUMNS = tuple(c.name for c in tasks.c if c.name not in ("tenant_id", "id"))
CITIZEN_COLUMNS = ("display_name", "timezone", "locale", "circle_version", "updated_at")
RELIEF_COLUMNS = ("citizen_id", "member_id", "start_at", "end_at", "status", "version")
VIEW_RECORD_COLUMNS = (
    "href", "etag", "fingerprint", "material", "partstat", "member_alarms", "inputs", "marks",
    "sequence",
)  # fmt: skip
VIEW_STATE_COLUMNS = (
    "collection",
    "sync_token",
    "ctag",
    "synced_at",
    "inputs",
    "generation",
    "server",
    "name",
    "foreign_after",
)


def _upsert(dialect: Any, table: Table, keys: list[str], columns: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET column = excluded.column, for `columns`."""
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in columns}
    )


def _records(where: Any, *, lock: bool) -> Any:
    """Occurrences with their tasks' `people_needed`: the columns `SqlTx._records` reads by
    position, in its order."""
    query = (
        select(
            occ_t.c.id,
            occ_t.c.task_id,
            occ_t.c.start_utc,
            occ_t.c.end_utc,
            occ_t.c.tz,
            occ_t.c.cancelled,
            tasks.c.people_needed,
        )
        .join(tasks, (tasks.c.tenant_id == occ_t.c.tenant_id) & (tasks.c.id == occ_t.c.task_id))
        .where(occ_t.c.tenant_id == TENANT, where)
        .order_by(occ_t.c.start_utc, occ_t.c.id)
    )
    if lock:
        # Row lock on PostgreSQL; SQLite renders no FOR UPDATE (its transactions already
        # hold the single write lock from BEGIN IMMEDIATE).
        query = query.with_for_update(of=occ_t)
    return query


def _claims_and_passes(occurrence_ids: Any) -> Any:
    """Claims, passes and targeted offers of some occurrences (`occurrence_ids`: what an IN
    takes) in one query: `kind` 0 is a claim, 1 a pass, 2 a targeted offer (only claims have
    a channel); each kind in (at, member_id) order."""
    held = select(
        literal_column("0", Integer).label("kind"),
        claims.c.occurrence_id,
        claims.c.member_id,
        claims.c.channel,
        claims.c.at,
    ).where(claims.c.tenant_id == TENANT, claims.c.occurrence_id.in_(occurrence_ids))
    passed = select(
        literal_column("1", Integer).label("kind"),
        passes.c.occurrence_id,
        passes.c.member_id,
        null().label("channel"),
        passes.c.at,
    ).where(passes.c.tenant_id == TENANT, passes.c.occurrence_id.in_(occurrence_ids))
    offered = select(
        literal_column("2", Integer).label("kind"),
        targeted_offers.c.occurrence_id,
        targeted_offers.c.member_id,
        null().label("channel"),
        targeted_offers.c.at,
    ).where(
        targeted_offers.c.tenant_id == TENANT,
        targeted_offers.c.occurrence_id.in_(occurrence_ids),
    )
    both = union_all(held, passed, offered).subquery()
    return select(both).order_by(both.c.kind, both.c.at, both.c.member_id, both.c.occurrence_id)


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement of `SqlTx`, for one dialect."""

    add_tenant: Any
    applier_lock: Any
    accept_lock: Any
    pending_webhooks: Any
    finish_webhook: Any
    # circles
    get_citizen: Any
    get_members: Any
    upsert_citizen: Any
    stored_members: Any
    add_member: Any
    update_member: Any
    remove_members: Any
    current_member: Any
    get_membership: Any
    # calendar credentials
    upsert_credential: Any
    get_credential: Any
    # member links
    add_member_link: Any
    active_member_link: Any
    get_member_link: Any
    revoke_member_link: Any
    member_circles: Any
    # view sync records
    list_view_records: Any
    upsert_view_record: Any
    delete_view_record: Any
    delete_view: Any
    delete_view_state: Any
    get_view_state: Any
    collection_in_use: Any
    upsert_view_state: Any
    bump_view_generation: Any
    bump_view_generations: Any
    get_view_generation: Any
    list_member_views: Any
    peek_views: Any
    peek_view: Any
    retire_calendar: Any
    erase_removed_account: Any
    retired_calendars: Any
    forget_retired_calendar: Any
    # tasks and occurrences
    get_task: Any
    lock_task: Any
    upsert_task: Any
    list_tasks: Any
    list_recurring_tasks: Any
    stored_occurrences: Any
    add_occurrence: Any
    update_occurrence: Any
    cancel_occurrences: Any
    task_records: Any
    citizen_records: Any
    locked_record: Any
    occurrence_record: Any
    claims_and_passes: Any
    citizen_claims_and_passes: Any
    add_claim: Any
    remove_claim: Any
    add_pass: Any
    remove_pass: Any
    # relief
    upsert_relief: Any
    get_relief: Any
    list_relief: Any
    # staff
    add_targeted_offer: Any
    list_citizens: Any
    # capacity and fairness
    list_held: Any
    get_member_settings: Any
    upsert_member_settings: Any
    delete_member_settings: Any
    note_overload: Any
    # jobs, outbox, audit
    add_job: Any
    add_keyed_job: Any
    add_keyed_job_keeping_retry: Any
    retrying_jobs: Any
    add_outbox: Any
    check_deadline: Any
    add_audit: Any
    list_audit: Any
    list_audit_subject: Any


@cache
def statements(dialect_name: str) -> Statements:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    task_id = bindparam("p_task", type_=String)
    ids: Any = bindparam("p_ids", expanding=True)
    # A synced view as a poll (all of a tenant's) or a run (one) first reads it.
    peeked = (
        select(
            memberships,
            view_state.c.collection.label("vs_collection"),
            view_state.c.sync_token.label("vs_sync_token"),
            view_state.c.ctag.label("vs_ctag"),
            view_state.c.synced_at.label("vs_synced_at"),
            view_state.c.inputs.label("vs_inputs"),
            view_state.c.generation.label("vs_generation"),
            view_state.c.server.label("vs_server"),
            view_state.c.name.label("vs_name"),
            view_state.c.foreign_after.label("vs_foreign_after"),
            view_generations.c.generation.label("current_generation"),
        )
        .select_from(
            memberships.outerjoin(
                view_state,
                (view_state.c.tenant_id == memberships.c.tenant_id)
                & (view_state.c.member_id == memberships.c.member_id)
                & (view_state.c.citizen_id == memberships.c.citizen_id),
            ).outerjoin(
                view_generations,
                (view_generations.c.tenant_id == memberships.c.tenant_id)
                & (view_generations.c.member_id == memberships.c.member_id)
                & (view_generations.c.citizen_id == memberships.c.citizen_id),
            )
        )
        .where(
            memberships.c.tenant_id == TENANT,
            memberships.c.removed_at.is_(None),
            memberships.c.calendar.in_(bindparam("p_deliveries", expanding=True)),
        )
    )
    member_key = (memberships.c.tenant_id == TENANT) & (
        memberships.c.citizen_id == bindparam("p_citizen", type_=String)
    )
    view_key = (
        (view_records.c.tenant_id == TENANT)
        & (view_records.c.member_id == bindparam("p_member", type_=String))
        & (view_records.c.citizen_id == bindparam("p_citizen", type_=String))
    )
    state_key = (
        (view_state.c.tenant_id == TENANT)
        & (view_state.c.member_id == bindparam("p_member", type_=String))
        & (view_state.c.citizen_id == bindparam("p_citizen", type_=String))
    )
    # A citizen's occurrences that end at or after a time, and their ids, for the claims of
    # all of them (not a list of every id). Found from the citizen's tasks: the occurrences'
    # index leads with (tenant_id, task_id). Joined to the tasks instead, SQLite (no
    # statistics) walks every occurrence of the tenant and looks each one's task up.
    citizen_tasks = select(tasks.c.id).where(
        tasks.c.tenant_id == TENANT, tasks.c.citizen_id == bindparam("p_citizen", type_=String)
    )
    of_citizen_since = occ_t.c.task_id.in_(citizen_tasks) & (
        occ_t.c.end_utc >= bindparam("p_ended_after", type_=UTCDateTime())
    )
    of_citizen = select(occ_t.c.id).where(occ_t.c.tenant_id == TENANT, of_citizen_since)
    bump = (
        dialect.insert(view_generations)
        .values(
            tenant_id=TENANT,
            member_id=bindparam("p_member", type_=String),
            citizen_id=bindparam("p_citizen", type_=String),
            generation=1,
        )
        .on_conflict_do_update(
            index_elements=["tenant_id", "member_id", "citizen_id"],
            set_={"generation": view_generations.c.generation + 1},
        )
    )
    keyed_job = dialect.insert(jobs)
    earlier = case(
        (keyed_job.excluded.run_at < jobs.c.run_at, keyed_job.excluded.run_at),
        else_=jobs.c.run_at,
    )
    earlier_unless_retrying = case(
        (
            (keyed_job.excluded.run_at < jobs.c.run_at) & (jobs.c.attempts == 0),
            keyed_job.excluded.run_at,
        ),
        else_=jobs.c.run_at,
    )
    return Statements(
        add_tenant=dialect.insert(tenants).on_conflict_do_nothing(index_elements=["id"]),
        applier_lock=select(func.pg_advisory_xact_lock(literal(INBOX_APPLIER_LOCK, BigInteger))),
        accept_lock=select(func.pg_advisory_xact_lock(literal(INBOX_ACCEPT_LOCK, BigInteger))),
        pending_webhooks=select(
            inbox.c.seq,
            inbox.c.tenant_id,
            inbox.c.webhook_id,
            inbox.c.event_type,
            inbox.c.body,
            inbox.c.received_at,
        )
        .where(INBOX_PENDING)  # a literal, so the partial index applies
        .order_by(inbox.c.seq)
        .limit(bindparam("p_limit", type_=Integer)),
        finish_webhook=update(inbox).where(inbox.c.seq == bindparam("p_seq", type_=Int64)),
        get_citizen=select(citizens).where(
            citizens.c.tenant_id == TENANT, citizens.c.id == bindparam("p_citizen", type_=String)
        ),
        get_members=select(memberships)
        .where(member_key, memberships.c.removed_at.is_(None))
        .order_by(memberships.c.position),
        upsert_citizen=_upsert(dialect, citizens, ["tenant_id", "id"], CITIZEN_COLUMNS),
        stored_members=select(memberships).where(member_key),
        get_membership=select(memberships).where(
            member_key, memberships.c.member_id == bindparam("p_member", type_=String)
        ),
        add_member=memberships.insert(),
        update_member=update(memberships).where(
            member_key, memberships.c.member_id == bindparam("p_member", type_=String)
        ),
        remove_members=update(memberships).where(member_key, memberships.c.member_id.in_(ids)),
        erase_removed_account=update(memberships)
        .where(
            member_key,
            memberships.c.member_id == bindparam("p_member", type_=String),
            memberships.c.removed_at.is_not(None),
        )
        .values(external_url=None, external_username=None, external_password_enc=None),
        current_member=select(literal(1))
        .where(
            memberships.c.tenant_id == TENANT,
            memberships.c.member_id == bindparam("p_member", type_=String),
            memberships.c.removed_at.is_(None),
        )
        .limit(1),
        upsert_credential=_upsert(
            dialect,
            calendar_credentials,
            ["tenant_id", "member_id"],
            ("username", "password_hash", "created_at", "revoked_at"),
        ),
        get_credential=select(calendar_credentials).where(
            calendar_credentials.c.username == bindparam("p_username", type_=String)
        ),
        # No conflict target: the partial unique index on the member's active link (or, never
        # in practice, the random id) makes a concurrent second insert a no-op.
        add_member_link=dialect.insert(member_links).on_conflict_do_nothing(),
        active_member_link=select(member_links).where(
            member_links.c.tenant_id == TENANT,
            member_links.c.member_id == bindparam("p_member", type_=String),
            member_links.c.revoked_at.is_(None),
        ),
        get_member_link=select(member_links).where(
            member_links.c.id == bindparam("p_id", type_=String)
        ),
        revoke_member_link=update(member_links)
        .where(
            member_links.c.tenant_id == TENANT,
            member_links.c.member_id == bindparam("p_member", type_=String),
            member_links.c.revoked_at.is_(None),
        )
        .returning(literal(1)),
        # Not ordered here: for an ORDER BY citizen_id SQLite would walk the tenant's every
        # membership in key order instead of the (tenant_id, member_id) index.
        member_circles=select(memberships.c.citizen_id).where(
            memberships.c.tenant_id == TENANT,
            memberships.c.member_id == bindparam("p_member", type_=String),
            memberships.c.removed_at.is_(None),
        ),
        # The columns `SyncRecord` takes, in its order (read by position).
        list_view_records=select(
            view_records.c.uid,
            view_records.c.href,
            view_records.c.etag,
            view_records.c.fingerprint,
            view_records.c.material,
            view_records.c.partstat,
            view_records.c.member_alarms,
            view_records.c.inputs,
            view_records.c.marks,
            view_records.c.sequence,
        ).where(view_key),
        upsert_view_record=_upsert(
            dialect,
            view_records,
            ["tenant_id", "member_id", "citizen_id", "uid"],
            VIEW_RECORD_COLUMNS,
        ),
        delete_view_record=delete(view_records).where(
            view_key, view_records.c.uid == bindparam("p_uid", type_=String)
        ),
        delete_view=delete(view_records).where(view_key),
        delete_view_state=delete(view_state).where(state_key),
        get_view_state=select(view_state).where(state_key),
        collection_in_use=select(literal(1))
        .where(
            view_state.c.collection == bindparam("p_collection", type_=String),
            view_state.c.server.in_([bindparam("p_server", type_=String), ""]),
            ~state_key,
        )
        .limit(1),
        upsert_view_state=_upsert(
            dialect,
            view_state,
            ["tenant_id", "member_id", "citizen_id"],
            VIEW_STATE_COLUMNS,
        ),
        bump_view_generation=bump.returning(view_generations.c.generation),
        bump_view_generations=bump,
        retire_calendar=_upsert(
            dialect,
            retired_calendars,
            ["tenant_id", "citizen_id", "member_id", "account"],
            ("password_enc",),
        ),
        retired_calendars=select(retired_calendars)
        .where(
            retired_calendars.c.tenant_id == TENANT,
            retired_calendars.c.citizen_id == bindparam("p_citizen", type_=String),
            retired_calendars.c.member_id == bindparam("p_member", type_=String),
        )
        .order_by(retired_calendars.c.retired_at, retired_calendars.c.account),
        forget_retired_calendar=delete(retired_calendars).where(
            retired_calendars.c.tenant_id == TENANT,
            retired_calendars.c.citizen_id == bindparam("p_citizen", type_=String),
            retired_calendars.c.member_id == bindparam("p_member", type_=String),
            retired_calendars.c.account == bindparam("p_account", type_=String),
        ),
        get_view_generation=select(view_generations.c.generation).where(
            view_generations.c.tenant_id == TENANT,
            view_generations.c.member_id == bindparam("p_member", type_=String),
            view_generations.c.citizen_id == bindparam("p_citizen", type_=String),
        ),
        list_member_views=select(memberships.c.member_id, memberships.c.citizen_id)
        .where(
            memberships.c.tenant_id == TENANT,
            memberships.c.removed_at.is_(None),
            memberships.c.calendar.in_(bindparam("p_deliveries", expanding=True)),
        )
        .order_by(memberships.c.citizen_id, memberships.c.member_id),
        peek_views=peeked.order_by(memberships.c.citizen_id, memberships.c.member_id),
        peek_view=peeked.where(
            memberships.c.member_id == bindparam("p_member", type_=String),
            memberships.c.citizen_id == bindparam("p_citizen", type_=String),
        ),
        get_task=select(tasks).where(tasks.c.tenant_id == TENANT, tasks.c.id == task_id),
        # (SQLite renders no FOR UPDATE: its transactions hold the single write lock.)
        lock_task=select(tasks)
        .where(tasks.c.tenant_id == TENANT, tasks.c.id == task_id)
        .with_for_update(),
        upsert_task=_upsert(dialect, tasks, ["tenant_id", "id"], TASK_COLUMNS),
        list_tasks=select(tasks)
        .where(tasks.c.tenant_id == TENANT, tasks.c.citizen_id == bindparam("p_citizen"))
        .order_by(tasks.c.start_local, tasks.c.id),
        list_recurring_tasks=select(tasks)
        .where(
            tasks.c.tenant_id == TENANT,
            tasks.c.status == TaskStatus.ACTIVE.value,
            tasks.c.recurrence.is_not(None),
        )
        .order_by(tasks.c.id),
        # The task's zone and its stored occurrences in one query (no row: no such task).
        stored_occurrences=select(
            tasks.c.timezone,
            tasks.c.kind,
            tasks.c.claim_deadline_hours,
            occ_t.c.id,
            occ_t.c.start_utc,
            occ_t.c.end_utc,
            occ_t.c.cancelled,
            occ_t.c.tz,
            occ_t.c.claim_deadline_at,
        )
        .select_from(tasks)
        .outerjoin(
            occ_t, (occ_t.c.tenant_id == tasks.c.tenant_id) & (occ_t.c.task_id == tasks.c.id)
        )
        .where(tasks.c.tenant_id == TENANT, tasks.c.id == task_id),
        add_occurrence=occ_t.insert(),
        update_occurrence=update(occ_t).where(
            occ_t.c.tenant_id == TENANT, occ_t.c.id == bindparam("p_id", type_=String)
        ),
        cancel_occurrences=update(occ_t)
        .where(occ_t.c.tenant_id == TENANT, occ_t.c.id.in_(ids))
        .values(cancelled=True),
        task_records=_records(occ_t.c.task_id == task_id, lock=False),
        citizen_records=_records(of_citizen_since, lock=False),
        locked_record=_records(occ_t.c.id == bindparam("p_id", type_=String), lock=True),
        occurrence_record=_records(occ_t.c.id == bindparam("p_id", type_=String), lock=False),
        claims_and_passes=_claims_and_passes(ids),
        citizen_claims_and_passes=_claims_and_passes(of_citizen),
        add_claim=dialect.insert(claims)
        .on_conflict_do_nothing(index_elements=["tenant_id", "occurrence_id", "member_id"])
        .returning(literal(1)),
        remove_claim=delete(claims)
        .where(
            claims.c.tenant_id == TENANT,
            claims.c.occurrence_id == bindparam("p_occurrence", type_=String),
            claims.c.member_id == bindparam("p_member", type_=String),
        )
        .returning(literal(1)),
        remove_pass=delete(passes)
        .where(
            passes.c.tenant_id == TENANT,
            passes.c.occurrence_id == bindparam("p_occurrence", type_=String),
            passes.c.member_id == bindparam("p_member", type_=String),
        )
        .returning(literal(1)),
        add_pass=dialect.insert(passes).on_conflict_do_nothing(
            index_elements=["tenant_id", "occurrence_id", "member_id"]
        ),
        upsert_relief=_upsert(dialect, relief_requests, ["tenant_id", "id"], RELIEF_COLUMNS),
        get_relief=select(relief_requests).where(
            relief_requests.c.tenant_id == TENANT,
            relief_requests.c.id == bindparam("p_id", type_=String),
        ),
        list_relief=select(relief_requests)
        .where(
            relief_requests.c.tenant_id == TENANT,
            relief_requests.c.citizen_id == bindparam("p_citizen", type_=String),
        )
        .order_by(relief_requests.c.start_at, relief_requests.c.id),
        add_targeted_offer=dialect.insert(targeted_offers)
        .on_conflict_do_nothing(index_elements=["tenant_id", "occurrence_id", "member_id"])
        .returning(literal(1)),
        list_citizens=select(citizens)
        .where(citizens.c.tenant_id == TENANT)
        .order_by(citizens.c.display_name, citizens.c.id),
        # From the citizen's active tasks to their occurrences in the period to the claims
        # (each step by an index that leads with its key), not from the tenant's every claim.
        list_held=select(
            claims.c.member_id,
            claims.c.occurrence_id,
            occ_t.c.start_utc,
            occ_t.c.end_utc,
            occ_t.c.tz,
        )
        .join(
            occ_t,
            (occ_t.c.tenant_id == claims.c.tenant_id) & (occ_t.c.id == claims.c.occurrence_id),
        )
        .where(
            claims.c.tenant_id == TENANT,
            claims.c.occurrence_id.in_(
                select(occ_t.c.id).where(
                    occ_t.c.tenant_id == TENANT,
                    occ_t.c.task_id.in_(
                        citizen_tasks.where(tasks.c.status == TaskStatus.ACTIVE.value)
                    ),
                    occ_t.c.cancelled.is_(False),
                    occ_t.c.start_utc >= bindparam("p_start", type_=UTCDateTime()),
                    occ_t.c.start_utc < bindparam("p_end", type_=UTCDateTime()),
                )
            ),
        )
        .order_by(occ_t.c.start_utc, occ_t.c.id, claims.c.member_id),
        get_member_settings=select(member_settings).where(
            member_settings.c.tenant_id == TENANT,
            member_settings.c.citizen_id == bindparam("p_citizen", type_=String),
        ),
        upsert_member_settings=_upsert(
            dialect,
            member_settings,
            ["tenant_id", "citizen_id", "member_id"],
            ("member_values", "host_values", "fields", "circle_version", "set_at"),
        ),
        delete_member_settings=delete(member_settings).where(
            member_settings.c.tenant_id == TENANT,
            member_settings.c.citizen_id == bindparam("p_citizen", type_=String),
            member_settings.c.member_id == bindparam("p_member", type_=String),
        ),
        note_overload=dialect.insert(overload_notices)
        .on_conflict_do_nothing(
            index_elements=["tenant_id", "citizen_id", "member_id", "period_start"]
        )
        .returning(literal(1)),
        add_job=jobs.insert(),
        # The partial unique index `uq_jobs_queued_key` is the conflict target.
        add_keyed_job=keyed_job.on_conflict_do_update(
            index_elements=["tenant_id", "kind", "key"],
            index_where=text("status = 'queued'"),
            set_={"run_at": earlier, "updated_at": keyed_job.excluded.updated_at},
        ),
        add_keyed_job_keeping_retry=keyed_job.on_conflict_do_update(
            index_elements=["tenant_id", "kind", "key"],
            index_where=text("status = 'queued'"),
            set_={"run_at": earlier_unless_retrying, "updated_at": keyed_job.excluded.updated_at},
        ),
        # By the partial index of queued jobs (a literal status, so that it applies).
        retrying_jobs=select(jobs.c.key).where(
            jobs.c.tenant_id == TENANT,
            jobs.c.kind == bindparam("p_kind", type_=String),
            text("jobs.status = 'queued'"),
            jobs.c.attempts > 0,
        ),
        add_outbox=outbox.insert(),
        # SET deadline_checked_at from the params; RETURNING tells the first caller it was first.
        check_deadline=update(occ_t)
        .where(
            occ_t.c.tenant_id == TENANT,
            occ_t.c.id == bindparam("p_id", type_=String),
            OCCURRENCE_UNCHECKED,
        )
        .returning(occ_t.c.id),
        add_audit=audit.insert(),
        list_audit=select(audit)
        .where(audit.c.tenant_id == TENANT)
        .order_by(audit.c.at, audit.c.id),
        list_audit_subject=select(audit)
        .where(audit.c.tenant_id == TENANT, audit.c.subject == bindparam("p_subject"))
        .order_by(audit.c.at, audit.c.id),
    )
