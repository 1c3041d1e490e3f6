"""Sync one view: one member's calendar collection for one citizen's circle.

A view is (tenant, member, citizen); its collection is `<home root>/<username>/<citizen id>/`,
named by `collection_name` ("Fru Jensen \N{EN DASH} omsorg"). One run (a `view.sync` job):

1. gather: the circle, its tasks and their occurrences, and the view's sync records (one
   transaction); the collection (created when missing) and its ETag listing;
2. decide: render every occurrence the member sees (`render.render_event`) and
   `plan_view_sync(desired, remote, records)`; fetch what the plan asks for, read the member's
   gestures (`read_member_copies`), apply them, render again and `plan_after_fetch`;
3. apply: conditional writes (`If-None-Match: *`, `If-Match`), then store the sync records.

A write that meets a changed object (412) is skipped: the member wrote meanwhile, their write
queued a sync of its own, and that run plans from the newer state.

Which occurrences a member sees: every occurrence of the circle's tasks inside the window
(from `LOOKBACK` ago to the horizon). An occurrence the store marked cancelled while its task
is still active was moved or dropped by a changed rule (a moved one-off task gets a new
occurrence id), so it leaves the view; a cancelled task stays as `[Aflyst]` until the window
passes it.

Not yet here: the personal claim link (issue 5) — every copy links to
`<public_url>/c/pending` until then; sync-token deltas (every run lists the ETags); renaming
an existing collection when the citizen's display name changes; SEQUENCE is the task's version,
so a change of holders alone does not bump it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from adapters.caldav.port import (
    AlreadyExists,
    CalendarClient,
    EtagMismatch,
    NotFound,
    collection_path,
    object_href,
)
from plugin.config import Settings
from plugin.domain.circle import eligible_for
from plugin.domain.model import Circle, Member, OccurrenceRecord, Task, TaskStatus
from plugin.services.calendar_access import caldav_username
from plugin.services.claiming import Ask, decide
from plugin.services.occurrences import LOOKBACK
from plugin.services.ports import Store, Tx
from plugin.sync.gestures import Gesture
from plugin.sync.planner import (
    Action,
    Create,
    Delete,
    DesiredItem,
    Fetched,
    Forget,
    Intent,
    MemberDeleted,
    MemberGesture,
    Readings,
    Remember,
    RemoteItem,
    SyncRecord,
    Update,
    desired_item,
    plan_after_fetch,
    plan_view_sync,
    read_member_copies,
)
from plugin.sync.render import RenderInput, attendee_address, render_event

log = logging.getLogger(__name__)

JOB_VIEW_SYNC = "view.sync"
PENDING_CLAIM_PATH = "/c/pending"  # until the personal claim links of issue 5
MAX_MEMBER_BYTES = 256 * 1024  # a member's copy larger than this is not read, just replaced
COLLECTION_SUFFIX = "omsorg"


def collection_name(circle: Circle) -> str:
    """DESIGN.md's "Fru Jensen \N{EN DASH} omsorg"."""
    return f"{circle.citizen.display_name} \N{EN DASH} {COLLECTION_SUFFIX}"


@dataclass(frozen=True, slots=True)
class CalendarAccess:
    """How the worker reaches the calendar server: a client logged in as carecal's service
    identity, and the path under which members' homes live (`/dav` when embedded)."""

    client: CalendarClient
    home_root: str


@dataclass(frozen=True, slots=True)
class View:
    tenant_id: str
    member_id: str
    citizen_id: str

    @property
    def username(self) -> str:
        return caldav_username(self.tenant_id, self.member_id)

    def collection(self, home_root: str) -> str:
        """`View("north", "m-anna", "c-123").collection("/dav")` is
        "/dav/north~m-anna/c-123/"."""
        return collection_path(f"{home_root}/{self.username}/{quote(self.citizen_id, safe='')}/")

    @property
    def job_key(self) -> str:
        return f"{self.citizen_id}:{self.member_id}"


def view_of_job(tenant_id: str, payload: Mapping[str, Any]) -> View | None:
    """The view a `view.sync` job names: by `citizen_id`, or (jobs the embedded server queues
    for a member's write) by the last segment of `collection`."""
    member_id = payload.get("member_id")
    citizen_id = payload.get("citizen_id")
    if citizen_id is None and isinstance(payload.get("collection"), str):
        citizen_id = unquote(payload["collection"].rstrip("/").rsplit("/", 1)[-1]) or None
    if not isinstance(member_id, str) or not isinstance(citizen_id, str):
        return None
    return View(tenant_id, member_id, citizen_id)


async def enqueue_view_syncs(
    tx: Tx, tenant_id: str, circle: Circle, *, now: datetime, exclude: str | None = None
) -> None:
    """Queue a sync of every hosted member's view of `circle` but `exclude`'s (deduplicated
    per view while queued); called in the transaction of the change that makes it necessary."""
    for member in circle.members:
        if member.calendar != "hosted" or member.id == exclude:
            continue
        view = View(tenant_id, member.id, circle.citizen.id)
        await tx.enqueue_job(
            tenant_id,
            JOB_VIEW_SYNC,
            {"member_id": member.id, "citizen_id": circle.citizen.id, "reason": "changed"},
            run_at=now,
            key=view.job_key,
        )


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    written: int = 0
    skipped: int = 0  # writes that met a changed object (412): the next run plans again
    intents: tuple[Intent, ...] = ()


@dataclass(frozen=True, slots=True)
class _Gathered:
    circle: Circle
    member: Member
    tasks: tuple[Task, ...]
    occurrences: Mapping[str, tuple[OccurrenceRecord, ...]]  # by task id
    records: Mapping[str, SyncRecord]


async def sync_view(
    store: Store, access: CalendarAccess, settings: Settings, view: View, *, now: datetime
) -> SyncOutcome:
    """One run for one view. A member no longer in the circle, or not `hosted`, is left alone
    (their collection goes with the `member.withdraw` job)."""
    gathered = await _gather(store, view)
    if gathered is None:
        return SyncOutcome()
    client = access.client
    path = view.collection(access.home_root)
    try:
        listing = await client.list_etags(path)
    except NotFound:
        # First run, or the whole calendar was deleted: (re)create it, and forget what the
        # records say was in it (else the planner would read every copy as deleted).
        path = await client.ensure_collection(path, collection_name(gathered.circle))
        listing = {}
        if gathered.records:
            async with store.transaction() as tx:
                await tx.delete_view(view.tenant_id, view.member_id, view.citizen_id)
            gathered = replace(gathered, records={})
    remote = {href: RemoteItem(href, etag) for href, etag in listing.items()}
    desired = _desired(gathered, settings, view, now=now)
    plan = plan_view_sync(desired, remote, gathered.records)
    actions: list[Action] = list(plan.actions)
    intents: tuple[Intent, ...] = plan.intents
    readings = Readings((), ())
    if plan.fetch.hrefs:
        bodies = await client.fetch(path, plan.fetch.hrefs)
        fetched = [Fetched(href, etag, body) for href, (etag, body) in bodies.items()]
        readings = read_member_copies(
            fetched,
            gathered.records,
            member_address=attendee_address(gathered.member, _domain(view)),
            max_bytes=MAX_MEMBER_BYTES,
        )
        intents += readings.intents
    if intents and await _apply_intents(store, gathered, view, intents, now=now):
        # The domain's answer goes into the copies: a won claim reads [Dig] at once, a lost
        # one is reset to [Anna]/NEEDS-ACTION in this same run.
        regathered = await _gather(store, view)
        if regathered is None:
            return SyncOutcome(intents=intents)
        desired = _desired(regathered, settings, view, now=now)
    if plan.fetch.hrefs:
        actions += plan_after_fetch(desired, readings).actions
    written, skipped = await _apply(store, client, path, view, actions)
    log.info(
        "view synced",
        extra={
            "tenant": view.tenant_id,
            "member_id": view.member_id,
            "citizen_id": view.citizen_id,
            "written": written,
            "skipped": skipped,
        },
    )
    return SyncOutcome(written, skipped, intents)


async def withdraw_view(store: Store, access: CalendarAccess, view: View) -> None:
    """The member left the circle: delete their collection and forget its records."""
    await access.client.delete_collection(view.collection(access.home_root))
    async with store.transaction() as tx:
        await tx.delete_view(view.tenant_id, view.member_id, view.citizen_id)


async def _gather(store: Store, view: View) -> _Gathered | None:
    async with store.transaction() as tx:
        circle = await tx.get_circle(view.tenant_id, view.citizen_id)
        member = None if circle is None else circle.member(view.member_id)
        if circle is None or member is None or member.calendar != "hosted":
            return None
        tasks = tuple(await tx.list_tasks(view.tenant_id, view.citizen_id))
        occurrences = {
            task.id: tuple(await tx.get_occurrences(view.tenant_id, task.id)) for task in tasks
        }
        records = await tx.list_view_records(view.tenant_id, view.member_id, view.citizen_id)
    return _Gathered(circle, member, tasks, occurrences, records)


def _desired(
    gathered: _Gathered, settings: Settings, view: View, *, now: datetime
) -> dict[str, DesiredItem]:
    window_start = now - LOOKBACK
    window_end = now + timedelta(weeks=settings.horizon_weeks)
    names = {m.id: m.name for m in gathered.circle.members}
    public_url = settings.server.public_url
    organizer = f"noreply@{urlsplit(public_url).hostname or 'localhost'}"
    desired: dict[str, DesiredItem] = {}
    for task in gathered.tasks:
        for record in gathered.occurrences.get(task.id, ()):
            occurrence = record.occurrence
            if occurrence.cancelled and task.status is TaskStatus.ACTIVE:
                continue
            if occurrence.end.astimezone(UTC) <= window_start or occurrence.start > window_end:
                continue
            calendar = render_event(
                RenderInput(
                    record=record,
                    task=task,
                    member=gathered.member,
                    holder_names=names,
                    claim_link=f"{public_url}{PENDING_CLAIM_PATH}",
                    organizer=organizer,
                    domain=_domain(view),
                    sequence=task.version,
                    stamp=now,
                )
            )
            item = desired_item(calendar)
            desired[item.uid] = item
    return desired


_ASKS = {Gesture.CLAIM: Ask.CLAIM, Gesture.PASS: Ask.PASS, Gesture.RELEASE: Ask.RELEASE}


async def _apply_intents(
    store: Store, gathered: _Gathered, view: View, intents: Sequence[Intent], *, now: datetime
) -> bool:
    """Apply the owner's gestures as that member through channel `caldav`, in one
    transaction; when a claim came or went, the circle's other views are queued for a sync.
    Returns whether anything changed."""
    suffix = f"@{_domain(view)}"
    tasks = {task.id: task for task in gathered.tasks}
    task_of = {
        record.occurrence.id: tasks[task_id]
        for task_id, records in gathered.occurrences.items()
        for record in records
    }
    changed = claims_changed = False
    async with store.transaction() as tx:
        for intent in intents:
            match intent:
                case MemberDeleted():
                    ask: Ask | None = Ask.PASS
                case MemberGesture(gesture=gesture):
                    ask = _ASKS.get(gesture)
            occurrence_id = intent.uid.removesuffix(suffix)
            task = task_of.get(occurrence_id)
            if ask is None or not intent.uid.endswith(suffix) or task is None:
                continue
            if ask is Ask.CLAIM and not eligible_for(gathered.member, task):
                continue  # e.g. a visit: the next write resets the copy
            decision = await decide(
                tx, view.tenant_id, occurrence_id, view.member_id, ask, channel="caldav", now=now
            )
            if decision is None or not decision.changed:
                continue
            changed = True
            if decision.add_claim is not None or decision.remove_claim_of is not None:
                claims_changed = True
        if claims_changed:
            await enqueue_view_syncs(
                tx, view.tenant_id, gathered.circle, now=now, exclude=view.member_id
            )
    return changed


def _domain(view: View) -> str:
    # The UID's right-hand side: stable per tenant, whatever URL the plugin is served on.
    return view.tenant_id


def _object_name(uid: str) -> str:
    """The href of a created copy derives from its UID, so a retry after a crash meets its own
    object (AlreadyExists) instead of writing a second one."""
    return uid.replace("/", "_") + ".ics"


async def _apply(
    store: Store, client: CalendarClient, path: str, view: View, actions: Sequence[Action]
) -> tuple[int, int]:
    saved: list[SyncRecord] = []
    dropped: list[str] = []
    written = skipped = 0
    for action in actions:
        match action:
            case Create(uid=uid, body=body, record=record):
                href = object_href(path, _object_name(uid))
                try:
                    etag = await client.create(path, _object_name(uid), body)
                except AlreadyExists:
                    # Ours from a run that crashed before storing its record: an unknown
                    # fingerprint makes the next run fetch and overwrite it.
                    saved.append(replace(record, href=href, etag="", fingerprint=""))
                    skipped += 1
                    continue
                saved.append(replace(record, href=href, etag=etag))
                written += 1
            case Update(href=href, if_match=if_match, body=body, record=record):
                try:
                    etag = await client.update(href, body, if_match)
                except (EtagMismatch, NotFound):
                    skipped += 1
                    continue
                saved.append(replace(record, href=href, etag=etag))
                written += 1
            case Delete(uid=uid, href=href, if_match=if_match):
                try:
                    await client.delete(href, if_match)
                except EtagMismatch:
                    skipped += 1
                    continue
                except NotFound:
                    pass
                dropped.append(uid)
                written += 1
            case Forget(uid=uid):
                dropped.append(uid)
            case Remember(record=record):
                saved.append(record)
    if saved or dropped:
        async with store.transaction() as tx:
            for record in saved:
                await tx.save_view_record(view.tenant_id, view.member_id, view.citizen_id, record)
            for uid in dropped:
                await tx.delete_view_record(view.tenant_id, view.member_id, view.citizen_id, uid)
    return written, skipped
