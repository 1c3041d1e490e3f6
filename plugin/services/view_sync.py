"""Sync one view: one member's calendar collection for one citizen's circle.

A view is (tenant, member, citizen); where its collection lives is `calendars.Calendars`'
business, its name is `collection_name` ("Fru Jensen \N{EN DASH} omsorg"). One run (a
`view.sync` job):

0. peek: the view's state, its generation and the member (`_peek`, one read), and a probe of
   the collection's markers. The generation is bumped by every change that queues the view's
   sync (`enqueue_view_syncs`); when it is the one the last run rendered from, on the same
   day, and the markers are the ones that run kept, nothing changed on either side: the run
   ends here (`_idle`), after one small read and one PROPFIND (the delta, when the member
   wrote: `_delta_probe`). That is every idle poll;
1. gather: the circle, its tasks and their occurrences, the view's sync records and state (one
   read, `_gather`, while the server answers the delta since the stored token: `_prefetch`;
   only the records when the view's last run in this process left the generation and the
   state the peek finds: `_Known`); then the collection (created when missing, renamed when
   the citizen was): that delta on top of the records, or the full ETag listing when the
   token is invalid (`_read_remote`). A run for a member's write that no poll probed asks
   for the delta first, and takes it for the probe (`_delta_probe`);
2. decide: the copies the member should have (`member_view.member_view_inputs` says which;
   each links to the member's claim page, `links.claim_url`). A copy is rendered only when
   its key, a digest of what it is drawn from, differs from the one in its sync record
   (`_desired`); the rest stand in with their records' fingerprints. Then
   `plan_view_sync(desired, remote, records)` (from the records alone when nothing the view
   is rendered from changed since the last run: `_as_recorded`); fetch what the plan asks
   for, read the member's gestures (`read_member_copies`), apply them, plan again with what
   changed rendered (from the same read, with the occurrences the gestures decided read
   again: `_patched`), and `plan_after_fetch` for the fetched copies;
3. apply: conditional writes (`If-None-Match: *`, `If-Match`), then store the sync records.

A write that meets a changed object (412) is skipped: the member wrote meanwhile, their write
queued a sync of its own, and that run plans from the newer state.

SEQUENCE is the task's version as rendered, and every write of a copy goes past the one it
had (its record's, or the member's app's when higher: `planner._sequenced`).

Not yet here: a run with something to do still reads the view's records whole (and its
occurrences of the last five weeks and ahead, when another process synced it last or
something changed), and after a gesture works out the fairness advice over its window
(cheap, but it grows with the view's size; see bench/README.md); it keys again only the
copies the gesture changed (`_desired` with the copies as recorded).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from plugin.config import Settings
from plugin.domain.circle import eligible_for
from plugin.domain.model import (
    Circle,
    Delivery,
    Member,
    OccurrenceRecord,
    Task,
    TaskStatus,
    same_account,
)
from plugin.services.calendar_port import (
    AlreadyExists,
    Body,
    CalendarClient,
    CalendarError,
    CalendarUnavailable,
    Delta,
    EtagMismatch,
    Forbidden,
    InvalidSyncToken,
    NotFound,
    Probe,
    object_href,
)
from plugin.services.calendars import (
    Calendars,
    MissingCalendar,
    NoCollection,
    Target,
    UnsafeCalendarUrl,
    View,
    external_collection,
)
from plugin.services.capacity import CircleCare, ViewAdvice, read_circle_care
from plugin.services.claiming import Ask, decide_recorded
from plugin.services.links import claim_url, ensure_link
from plugin.services.member_view import (
    HISTORY,
    member_advice,
    member_view_inputs,
    organizer_address,
)
from plugin.services.ports import KeyedJob, MemberLink, Store, Tx, ViewPeek, ViewState
from plugin.services.relief_calendar import relief_from_collection
from plugin.sync.fingerprint import VERSION as FINGERPRINT_VERSION
from plugin.sync.gestures import Gesture, MemberCopy
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
    StorageEmpty,
    SyncRecord,
    Update,
    desired_item,
    plan_after_fetch,
    plan_view_sync,
    read_member_copies,
    tombstone,
)
from plugin.sync.render import RenderInput, attendee_address, event_uid, render_event

log = logging.getLogger(__name__)

JOB_VIEW_SYNC = "view.sync"
MAX_MEMBER_BYTES = 256 * 1024  # a member's copy larger than this is not read, just replaced
COLLECTION_SUFFIXES = {"da": "omsorg", "en": "care"}
SYNCED_DELIVERIES: tuple[Delivery, ...] = ("hosted", "external")
POLL_RESULTS = ("due", "idle", "down", "unanswered")  # what `poll_round` finds of a view
# A view's routine sync (a new day, nothing else changed) waits up to this long, each view
# its own share of it (`routine_delay`): the day's many syncs spread out, and members'
# changes, due at once, go before them.
ROUTINE_SPREAD = timedelta(minutes=10)
# At most this many objects a delta names are fetched with it, while the store is read
# (`_prefetch`); a larger delta's are fetched once the run knows which it needs.
PREFETCH_BODIES = 16
# What the last run of a view rendered from is kept in the process for the next run of this
# many views, the most recently synced, holding this many occurrences in all (~0.3-1 KB
# each, measured in bench/sync: a few tens of MB at most): `_Known`.
KNOWN_VIEWS = 256
KNOWN_OCCURRENCES = 50_000


def collection_name(circle: Circle, member: Member) -> str:
    """DESIGN.md's "Fru Jensen \N{EN DASH} omsorg", in the member's language ("Fru Jensen
    \N{EN DASH} care" in English, as their feed, claim pages and setup page name it)."""
    language = (member.locale or "da").split("-")[0].split("_")[0].lower()
    suffix = COLLECTION_SUFFIXES.get(language, COLLECTION_SUFFIXES["da"])
    return f"{circle.citizen.display_name} \N{EN DASH} {suffix}"


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
    """Queue a sync of every view of `circle` (members with a hosted or external calendar)
    but `exclude`'s, deduplicated per view while queued; called in the transaction of the
    change that makes it necessary. Each view's generation is bumped with it, so the run does
    not take the view for idle (`_idle`). Two or three statements, whatever the circle's size.
    """
    members = [
        member
        for member in circle.members
        if member.calendar in SYNCED_DELIVERIES and member.id != exclude
    ]
    if not members:
        return
    citizen_id = circle.citizen.id
    await tx.bump_view_generations(tenant_id, citizen_id, [member.id for member in members])
    # A member's own server whose last sync failed keeps its retry's backoff: the poll pulls
    # it forward once the server answers (`poll_round`), and a busy circle's changes do not
    # each cost a try (on a server that never answers, a worker's slot for the client's
    # whole timeout).
    jobs = [
        view_sync_job(
            View(tenant_id, member.id, citizen_id),
            now=now,
            reason="changed",
            keep_retry=member.calendar == "external",
        )
        for member in members
    ]
    await tx.enqueue_keyed_jobs(tenant_id, JOB_VIEW_SYNC, jobs)


def routine_delay(view: View) -> timedelta:
    """How long after the day turns `view`'s routine sync waits: its own share of
    ROUTINE_SPREAD, the same every day."""
    spread = int(ROUTINE_SPREAD.total_seconds())
    return timedelta(seconds=zlib.crc32(view.job_key.encode()) % spread)


def view_sync_job(
    view: View,
    *,
    now: datetime,
    reason: str,
    probe: Probe | None = None,
    keep_retry: bool = False,
    routine: bool = False,
) -> KeyedJob:
    """A sync of `view`, due now (`routine`: after `routine_delay`); a sync of it already
    queued takes this one's place (the earlier of the two; with `keep_retry` not when that
    sync failed and waits for its retry). `probe`: the poll's, which saves the run a
    PROPFIND."""
    payload: dict[str, Any] = {
        "member_id": view.member_id,
        "citizen_id": view.citizen_id,
        "reason": reason,
    }
    if probe is not None:
        payload["probe"] = probe_payload(probe)
    run_at = now + routine_delay(view) if routine else now
    return KeyedJob(view.job_key, payload, run_at, keep_retry=keep_retry)


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
    link: MemberLink  # signs the member's claim links
    state: ViewState | None  # where the last sync found the collection, and its markers
    care: CircleCare | None = None  # members' own settings and relief: suggestions
    generation: int = 0  # the view's generation this was read at (read before the rest)
    # True: the records are exactly the copies the view's inputs render (`_gather` with
    # `now`): the run plans from them (`_as_recorded`) and renders only after a gesture.
    recorded: bool = False
    # Read as recorded, then patched with what a gesture changed (`_patched`): the ids of the
    # occurrences whose records it changed. Nothing else the view renders from changed.
    changed: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class _Known:
    """What a view's last run in this process rendered from, for its next run: everything
    `_gather` reads but the records (the circle, its tasks, their occurrences, the member's
    link, the circle's care), with the generation it was read at and the state the run
    saved. A run whose peek finds that same generation, state and member on the same day
    reads only the records (`_gather`): every change to what a view renders from bumps its
    generation in the same transaction (`enqueue_view_syncs`), which `_idle` relies on too;
    a run anywhere else saves another state (its time, its markers); and a claim is always
    decided on the occurrence read again under its lock, never on what is kept here.
    `contested`: a run here found another state than the one kept (another process synced
    the view): no delta is guessed for the view (`_Guess`) until a run here finds its own
    state again, so that two processes taking turns on a view waste no requests."""

    generation: int
    state: ViewState
    gathered: _Gathered
    contested: bool = False


_KNOWN: weakref.WeakKeyDictionary[Store, OrderedDict[View, _Known]] = weakref.WeakKeyDictionary()


def _remember(store: Store, view: View, gathered: _Gathered, state: ViewState) -> None:
    known = _KNOWN.setdefault(store, OrderedDict())
    last = known.get(view)
    contested = last is not None and last.contested
    known[view] = _Known(gathered.generation, state, replace(gathered, records={}), contested)
    known.move_to_end(view)
    held = sum(_size(entry) for entry in known.values())
    while len(known) > KNOWN_VIEWS or (held > KNOWN_OCCURRENCES and len(known) > 1):
        _, dropped = known.popitem(last=False)
        held -= _size(dropped)


def _size(known: _Known) -> int:
    return sum(len(records) for records in known.gathered.occurrences.values())


def _known(store: Store, view: View, seen: ViewPeek, now: datetime | None) -> _Gathered | None:
    """What the view's last run rendered from, if nothing changed since (`_Known`)."""
    kept = _KNOWN.get(store)
    found = None if kept is None else kept.get(view)
    if kept is None or found is None:
        return None
    if seen.state != found.state:
        _contest(store, view)
        return None
    if found.contested:
        found = kept[view] = replace(found, contested=False)
    if (
        now is None
        or seen.generation != found.generation
        or seen.member != found.gathered.member
        or _day(found.state.synced_at) != _day(now)
    ):
        return None
    return found.gathered


def _contest(store: Store, view: View) -> None:
    kept = _KNOWN.get(store)
    found = None if kept is None else kept.get(view)
    if kept is not None and found is not None:
        kept[view] = replace(found, contested=True)


def _forget_known(store: Store, view: View) -> None:
    kept = _KNOWN.get(store)
    if kept is not None:
        kept.pop(view, None)


def _since(
    occurrences: Mapping[str, tuple[OccurrenceRecord, ...]], since: datetime | None
) -> dict[str, tuple[OccurrenceRecord, ...]]:
    """The occurrences that end at or after `since` (as `Tx.occurrences_of_citizen` reads)."""
    return {
        task_id: tuple(r for r in records if since is None or r.occurrence.end >= since)
        for task_id, records in occurrences.items()
    }


async def sync_view(
    store: Store,
    calendars: Calendars,
    settings: Settings,
    view: View,
    *,
    now: datetime,
    probe: Probe | None = None,
    likely_idle: bool = False,
    member_wrote: bool = False,
) -> SyncOutcome:
    """One run for one view. A member no longer in the circle, or with a feed, is left alone
    (their collection goes with the `member.withdraw` job; one in a calendar they left, with
    `member.left_hosted` or `member.left_account`). A member's own server that refuses
    carecal (a non-public address, a wrong password) is logged and skipped until the next
    poll; a server that is down raises CalendarUnavailable, and the job is retried later.
    `probe`: the collection's markers as a poll just read them (`poll_round`), instead of
    reading them again. `likely_idle`: a run that will most likely find nothing to do (the
    renewal of every view at start) reads the view only once its probe found something.
    `member_wrote`: the member wrote to the collection (the embedded server's hook said so):
    the run asks for the delta first, which then stands for the probe (`_delta_probe`), and
    starts it before the store answers when it can (`_Guess`). Not otherwise: when nothing
    changed in the collection, an empty delta may cost a server far more than a probe
    (Xandikos, 5 000 events: ~35 ms against ~3)."""
    # Without a poll's probe the run is seldom idle (a change in carecal, a member's write to
    # the embedded server, a new day): the view is read whole in the transaction that peeks
    # at it, and the read goes on while the server answers the probe and the delta.
    reading: asyncio.Task[_Gathered | None] | None = None
    guess = None
    if probe is None and not likely_idle:
        peek, reading, guess = await _peek_reading(
            store, view, now, lambda: _guess(store, calendars, view) if member_wrote else None
        )
    else:
        peek = await _peek(store, view)
    try:
        return await _run(
            store,
            calendars,
            settings,
            view,
            peek,
            reading,
            now=now,
            probe=probe,
            guess=guess,
            delta_first=member_wrote,
        )
    finally:
        if reading is not None:
            # A read is let finish, never cancelled mid-statement; its answer or error is not
            # wanted when the probe failed or found the view idle.
            await asyncio.gather(reading, return_exceptions=True)
        await _let_go(guess)  # (taken and done, or not taken: let go)


@dataclass(frozen=True, slots=True)
class _Guess:
    """The delta-first probe (`_delta_probe`) started before the peek, on the state and the
    member the view's last run in this process left (`_Known`): taken when the peek finds
    those, as it almost always does (the delta then starts a read earlier), let go when not."""

    state: ViewState
    member: Member
    delta: asyncio.Task[tuple[Probe | None, _Prefetched | None]]

    def holds(self, peek: _Peek) -> bool:
        return self.state == peek.state and self.member == peek.member


def _guess(store: Store, calendars: Calendars, view: View) -> _Guess | None:
    """`_Guess` for a hosted view whose last run here kept a sync token (a member's own
    server is left to the run: opening its client may take longer than the peek)."""
    kept = _KNOWN.get(store)
    found = None if kept is None else kept.get(view)
    if found is None or found.contested or found.state.sync_token is None:
        return None
    member, state = found.gathered.member, found.state
    if member.calendar != "hosted":
        return None

    async def delta() -> tuple[Probe | None, _Prefetched | None]:
        async with calendars.target(view, member) as target:
            probe, early = await _delta_probe(target, state)
            # A change's objects are fetched at once too: the peek has most likely found
            # this state by now, and a delta with changes makes the run go on.
            if early is not None and early.delta is not None and early.delta.changed:
                early = await _with_bodies(target, early)
            return probe, early

    return _Guess(state, member, asyncio.create_task(delta()))


async def _run(
    store: Store,
    calendars: Calendars,
    settings: Settings,
    view: View,
    peek: _Peek | None,
    reading: asyncio.Task[_Gathered | None] | None,
    *,
    now: datetime,
    probe: Probe | None,
    guess: _Guess | None = None,
    delta_first: bool = False,
) -> SyncOutcome:
    """`sync_view` after its first read: `peek`, and the whole view's read when one was
    started with it (`reading`); `guess`, the delta started before the peek."""
    gathered = None
    prefetched: _Prefetched | None = None
    if peek is not None:
        member = peek.member
    else:
        gathered = await (reading or _gathering(store, view, now))
        if gathered is None:
            return SyncOutcome()
        member = gathered.member
    where = {"tenant": view.tenant_id, "member_id": view.member_id, "citizen_id": view.citizen_id}
    try:
        async with calendars.target(view, member) as target:
            if gathered is None and peek is not None:
                early: _Prefetched | None = None
                if probe is None and reading is not None and delta_first:
                    if guess is not None and guess.holds(peek):
                        probe, early = await guess.delta
                    else:
                        if guess is not None:  # guessed from a state gone by
                            _contest(store, view)
                            await _let_go(guess)
                        probe, early = await _delta_probe(target, peek.state)
                idle, probe = await _idle(target, peek, now=now, probe=probe)
                if idle:
                    return SyncOutcome()  # one small read, and one PROPFIND or delta
                delta = asyncio.create_task(
                    _prefetch(target, peek.state, probe)
                    if early is None
                    else _with_bodies(target, early)
                )
                try:
                    gathered = await (reading or _gathering(store, view, now))
                except BaseException:
                    delta.cancel()
                    await asyncio.gather(delta, return_exceptions=True)
                    raise
                prefetched = await delta
                if gathered is None:
                    return SyncOutcome()
                if _reached_by(gathered.member) != _reached_by(member):
                    # Their calendar moved between the two reads: the next run goes there.
                    raise _Moved()
            else:
                probe = None  # no state to compare it with: the run reads the collection anew
            assert gathered is not None
            return await _sync(
                store, target, settings, view, gathered, now=now, probe=probe, prefetched=prefetched
            )
    except _Moved:
        return await sync_view(store, calendars, settings, view, now=now)
    except NoCollection:
        return SyncOutcome()
    except UnsafeCalendarUrl as exc:
        log.warning("member calendar refused", extra={**where, "reason": str(exc)})
        return SyncOutcome()
    except Forbidden as exc:
        if member.calendar != "external":
            raise  # carecal's own service account: a configuration error, fail loudly
        log.warning("member calendar refused the login", extra={**where, "status": exc.status})
        return SyncOutcome()


def _gathering(
    store: Store,
    view: View,
    now: datetime,
    peeked: asyncio.Future[_Peek | None] | None = None,
) -> asyncio.Task[_Gathered | None]:
    """A run's read of the view (`_gather` as of `now`), started."""
    return asyncio.create_task(_gather(store, view, now=now, since=now - HISTORY, peeked=peeked))


async def _peek_reading(
    store: Store,
    view: View,
    now: datetime,
    meanwhile: Callable[[], _Guess | None] = lambda: None,
) -> tuple[_Peek | None, asyncio.Task[_Gathered | None], _Guess | None]:
    """What `_peek` answers, as soon as the whole view's read, started with it in the same
    transaction, has read it; and that read, still going. `meanwhile`: started once the read
    is on its way (the store's thread begins it while this one prepares a request), and
    answered with the rest."""
    peeked: asyncio.Future[_Peek | None] = asyncio.get_running_loop().create_future()
    reading = _gathering(store, view, now, peeked)
    guess = None
    either: list[asyncio.Future[Any]] = [peeked, reading]
    try:
        await asyncio.sleep(0)  # the read's first statement is with the store before the guess
        guess = meanwhile()
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled (a worker stopping): the read is let finish all the same
        await asyncio.gather(reading, _let_go(guess), return_exceptions=True)
        raise
    if not peeked.done():
        peeked.cancel()
        await _let_go(guess)
        await reading  # it ended before it peeked: its error
        raise RuntimeError("the view's read ended before it peeked")
    return peeked.result(), reading, guess


async def _let_go(guess: _Guess | None) -> None:
    """A guess no longer wanted, cancelled (it only reads) and waited for: a server that
    does not answer holds up nothing, and its error, if any, is not the run's."""
    if guess is not None and not guess.delta.done():
        guess.delta.cancel()
    if guess is not None:
        await asyncio.gather(guess.delta, return_exceptions=True)


class _Moved(Exception):
    """The member's calendar delivery changed while a run was reading the view."""


def _reached_by(member: Member) -> tuple[object, ...]:
    return (member.calendar, member.external)


@dataclass(frozen=True, slots=True)
class _Peek:
    state: ViewState
    generation: int
    member: Member


async def _peek(store: Store, view: View) -> _Peek | None:
    """The least a run reads first (one read): the view's state, its generation, the member.
    None for a view never synced, or a member carecal does not sync (the run then reads all
    at once)."""
    async with store.reading() as tx:
        seen = await tx.peek_view(
            view.tenant_id, view.member_id, view.citizen_id, SYNCED_DELIVERIES
        )
    if seen is None or seen.state is None:
        return None
    return _Peek(seen.state, seen.generation, seen.member)


async def _idle(
    target: Target, peek: _Peek, *, now: datetime, probe: Probe | None = None
) -> tuple[bool, Probe | None]:
    """Whether this run has nothing to do: nothing the view is rendered from changed since the
    last run (its generation is the one that run rendered from, on the same day: the window
    and the fairness figures move with the days), and nobody wrote to the collection since
    (the probe finds the markers that run kept; it keeps them only when its own writes were
    all it saw). With the probe, for the run to go on from (None: the run probes itself);
    `probe` when one was just made."""
    state = peek.state
    if not _same_place(state, target):
        return False, None  # the view moved (another server or account)
    if probe is None:
        try:
            probe = await target.client.probe(target.collection)
        except NotFound:
            return False, None  # gone: the run (re)creates it
    same_day = _day(state.synced_at) == _day(now)
    idle = (
        peek.generation == state.generation
        and same_day
        and state.inputs is not None
        and state.foreign_after is None  # a walk of the member's own objects goes on
        and _markers_kept(probe, state)
    )
    return idle, probe


async def poll_round(
    store: Store,
    calendars: Calendars,
    views: Sequence[View],
    *,
    now: datetime,
    concurrency: int,
    on_due: Callable[[View, Probe | None, bool], Awaitable[None]] | None = None,
    budget: float | None = None,
    tally: MutableMapping[str, int] | None = None,
) -> list[tuple[View, Probe | None]]:
    """One poll of `views` (members' calendars that no change hook announces): the views
    whose sync has something to do, each with the probe that found it (None: the sync reads
    the collection itself). All views of a tenant are peeked in one read (`Tx.peek_views`);
    hosted views sharing a home on the service's server are probed in one PROPFIND per home
    (`probe_children`), the others one PROPFIND each; an idle view costs no job. A view the
    poll cannot judge (never synced, a member no longer synced, a server that fails or
    refuses) is returned too: its sync handles, logs and retries it. `on_due` is told of each
    such view as soon as the poll finds it: a server that is slow to answer, or never does,
    delays only its own views. Only the views that need a request of their own take one of
    the `concurrency` slots (the views a home's PROPFIND answered for never wait for one).
    `budget`: the seconds the round waits for its probes (the poll's interval, so that a
    server slower than that does not stretch every round); a view whose probe has not
    answered by then is left for the next round, with no sync queued (it would wait too).
    `on_due` is also told whether the view's sync is routine: nothing changed but the day
    (`routine_delay`).

    A view whose sync failed and waits for its retry (`Tx.retrying_jobs`) is probed last, and
    is due only when its server answers: then the sync is pulled forward (the server is back,
    the member catches up now), and while it does not the retry's backoff stands (a poll does
    not turn a dead server's backoff into one try per round, each holding a worker's slot for
    the client's whole timeout on a server that never answers).

    `tally`, when given, counts the round's views by what it found (`POLL_RESULTS`): "due"
    (returned), "idle", "down" (its sync waits for a retry and its server still does not
    answer) and "unanswered" (no answer within the budget)."""
    peeks: dict[View, _Peek] = {}
    members: dict[View, Member] = {}  # every view's member, synced or not
    retrying: set[View] = set()
    down: set[View] = set()  # retrying views whose server still does not answer
    async with store.reading() as tx:
        for tenant_id in sorted({view.tenant_id for view in views}):
            for seen in await tx.peek_views(tenant_id, SYNCED_DELIVERIES):
                view = View(tenant_id, seen.member.id, seen.citizen_id)
                members[view] = seen.member
                if seen.state is not None:
                    peeks[view] = _Peek(seen.state, seen.generation, seen.member)
            failed = await tx.retrying_jobs(tenant_id, JOB_VIEW_SYNC)
            retrying.update(v for v in views if v.tenant_id == tenant_id and v.job_key in failed)
    limit = asyncio.Semaphore(concurrency)
    probes = await _probe_homes(calendars, [(v, peeks[v]) for v in views if v in peeks], limit)

    async def probed(view: View, member: Member, peek: _Peek | None) -> tuple[bool, Probe | None]:
        """(idle, probe) of a view; one never synced is only asked for an answer (not idle).
        Raises what the server does (NotFound for a view never synced)."""
        hosted = member.calendar == "hosted"
        # A hosted view's target costs nothing to make; a member's own server's may ask the
        # DNS (its address is checked): that waits for a slot too.
        async with nullcontext() if hosted else limit, calendars.target(view, member) as target:
            probe = probes.get(target.collection)
            async with limit if hosted and probe is None else nullcontext():
                if peek is None:
                    await target.client.probe(target.collection)
                    return False, None
                return await _idle(target, peek, now=now, probe=probe)

    async def judged(view: View) -> tuple[View, Probe | None] | None:
        peek = peeks.get(view)
        member = members.get(view)
        if view in retrying:
            # Due only when its server answers.
            if member is None or member.calendar not in SYNCED_DELIVERIES:
                return view, None  # its sync finds that out without a server
            try:
                _, probe = await probed(view, member, peek)
            except NotFound:
                return view, None  # the server answered: the collection is to be made
            except Exception as exc:  # down still: the retry's backoff stands
                down.add(view)
                log.debug(
                    "poll left a failing view to its retry", extra={"error": type(exc).__name__}
                )
                return None
            return view, probe
        if peek is None:
            return view, None
        try:
            idle, probe = await probed(view, peek.member, peek)
        except Exception as exc:  # whatever it is, the sync reports and retries it properly
            log.debug("poll could not probe the view", extra={"error": type(exc).__name__})
            return view, None
        return None if idle else (view, probe)

    def routine(view: View, probe: Probe | None) -> bool:
        """Due only because the day turned since its last sync."""
        peek = peeks.get(view)
        return (
            peek is not None
            and probe is not None
            and view not in retrying
            and peek.generation == peek.state.generation
            and peek.state.inputs is not None
            and _markers_kept(probe, peek.state)
            and _day(peek.state.synced_at) != _day(now)
        )

    async def one(view: View) -> tuple[View, Probe | None] | None:
        found = await judged(view)
        if found is not None and on_due is not None:
            # Once judged due, it is queued even if the round stops waiting meanwhile.
            await asyncio.shield(on_due(*found, routine(*found)))
        return found

    # The views whose last sync failed last: a dead server's probes, which may wait out the
    # client's timeout, do not hold up the others' in the semaphore's queue.
    ordered = sorted(views, key=lambda view: view in retrying)
    tasks = [asyncio.ensure_future(one(view)) for view in ordered]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        log.info(
            "poll left views whose server did not answer in time", extra={"views": len(pending)}
        )
    found = {
        item[0]: item for task in tasks if task in done and (item := task.result()) is not None
    }
    if tally is not None:
        counts = {"due": len(found), "down": len(down), "unanswered": len(pending)}
        counts["idle"] = len(tasks) - sum(counts.values())
        for result, views_found in counts.items():
            tally[result] = tally.get(result, 0) + views_found
    return [found[view] for view in views if view in found]


async def _probe_homes(
    calendars: Calendars, peeked: Sequence[tuple[View, _Peek]], limit: asyncio.Semaphore
) -> dict[str, Probe]:
    """Probes of hosted views' collections, one PROPFIND (depth 1) per home that holds two or
    more of them, by collection path. A home whose probe fails is left out: its views are
    probed one by one."""
    service = calendars.service
    if service is None:
        return {}
    homes: dict[str, list[str]] = {}
    for view, peek in peeked:
        if peek.member.calendar == "hosted" and peek.state.collection == service.collection(view):
            collection = peek.state.collection
            homes.setdefault(collection.rstrip("/").rsplit("/", 1)[0] + "/", []).append(collection)

    async def one(home: str) -> dict[str, Probe]:
        async with limit:
            try:
                return await service.client.probe_children(home)
            except Exception as exc:  # the views' own probes say what is wrong
                log.debug("poll could not probe a home", extra={"error": type(exc).__name__})
                return {}

    found: dict[str, Probe] = {}
    for probes in await asyncio.gather(*(one(h) for h, c in homes.items() if len(c) > 1)):
        found.update(probes)
    return found


def probe_payload(probe: Probe | None) -> dict[str, str | None]:
    """A probe as a `view.sync` job carries it (`probe_of_job` reads it back)."""
    if probe is None:
        return {}
    return {
        "sync_token": probe.sync_token,
        "ctag": probe.ctag,
        "display_name": probe.display_name,
    }


def probe_of_job(payload: Mapping[str, Any]) -> Probe | None:
    found = payload.get("probe")
    if not isinstance(found, Mapping) or not found:
        return None
    values = [found.get(k) for k in ("sync_token", "ctag", "display_name")]
    if not all(v is None or isinstance(v, str) for v in values):
        return None
    return Probe(values[0], values[1], values[2])


def _same_place(state: ViewState, target: Target) -> bool:
    """Whether the last sync wrote the view's collection where `target` is: the same path,
    on the same server and account (a state from before servers were kept: the path)."""
    if state.collection != target.collection:
        return False
    return not state.server or state.server == target.server


def _markers_kept(probe: Probe, state: ViewState) -> bool:
    if probe.sync_token is not None:
        return probe.sync_token == state.sync_token
    return probe.ctag is not None and probe.ctag == state.ctag


@dataclass(frozen=True, slots=True)
class _Remote:
    """The collection as this run sees it: href -> ETag of every object (ours by the records,
    plus what changed), and the markers to store for the next run."""

    listing: Mapping[str, str]
    sync_token: str | None
    ctag: str | None
    created: bool = False  # the collection was (re)created just now: the records are void
    full: bool = False  # `listing` is the server's full listing, not the records and a delta


@dataclass(frozen=True, slots=True)
class _Prefetched:
    """The delta since `token`, read while the store was (None: the token is invalid), and
    the objects it names, fetched then too when they are few (href -> ETag, body)."""

    token: str
    delta: Delta | None
    bodies: Mapping[str, tuple[str, Body]] = field(default_factory=dict)


async def _delta_probe(target: Target, state: ViewState) -> tuple[Probe | None, _Prefetched | None]:
    """A run for a member's write that no poll probed, of a view with a stored sync token,
    asks for the delta since it straight away: its answer carries the collection's token, so
    it stands for DESIGN's probe, and the run makes one request fewer (the probe's only other
    news, the collection's name, is read when carecal's changed: `_read_remote`). The probe
    it stands for and the delta; (None, None) for a run to probe as before: no token,
    another place, or an answer the probe reads better (a missing collection); (None, delta
    None) for a token the server no longer takes (the run probes, then lists every ETag)."""
    token = state.sync_token
    if token is None or not _same_place(state, target):
        return None, None
    try:
        delta = await target.client.changes_since(target.collection, token)
    except InvalidSyncToken:
        return None, _Prefetched(token, None)
    except CalendarUnavailable:
        raise
    except CalendarError:
        return None, None
    if not delta.changed and not delta.deleted and delta.new_token == token:
        return Probe(token, state.ctag), _Prefetched(token, delta)
    if delta.new_token == token:
        # Changes under an unchanged token: no marker of this server is to be trusted now.
        return Probe(None, None), _Prefetched(token, delta)
    return Probe(delta.new_token, None), _Prefetched(token, delta)


async def _prefetch(target: Target, state: ViewState, probe: Probe | None) -> _Prefetched | None:
    """The delta `_read_remote` will ask for, when the probe shows the collection changed
    since the stored token (None when it will not ask for one, or cannot yet tell)."""
    token = state.sync_token
    if (
        probe is None
        or probe.sync_token is None
        or token is None
        or probe.sync_token == token
        or not _same_place(state, target)
    ):
        return None
    try:
        delta = await target.client.changes_since(target.collection, token)
    except InvalidSyncToken:
        return _Prefetched(token, None)
    return await _with_bodies(target, _Prefetched(token, delta))


async def _with_bodies(target: Target, prefetched: _Prefetched) -> _Prefetched:
    """`prefetched` with the objects its delta names, when they are few."""
    token, delta = prefetched.token, prefetched.delta
    if delta is None or prefetched.bodies:
        return prefetched
    hrefs = [href for href, _ in delta.changed]
    if not hrefs or len(hrefs) > PREFETCH_BODIES:
        return prefetched
    # What a member changed is what the run fetches: usually these, all of them (after a
    # run's own writes it keeps the token that holds them). One it does not need costs
    # only its bytes; one it needs and is not here is fetched as before.
    try:
        bodies = await target.client.fetch(target.collection, hrefs)
    except CalendarError:
        bodies = {}  # the run's own fetch tries again, and fails as it fails
    return _Prefetched(token, delta, bodies)


async def _read_remote(
    client: CalendarClient,
    path: str,
    name: str,
    gathered: _Gathered,
    probe: Probe | None,
    prefetched: _Prefetched | None = None,
) -> _Remote:
    """DESIGN's loop: probe the collection's markers (one small PROPFIND; `probe` when this run
    made it already); unchanged -> the records are the listing; a sync token ->
    `sync-collection` delta on top of the records; an invalid token, no earlier state, or a
    record without a known ETag -> the full ETag listing. A missing collection is created."""
    state = gathered.state
    given = state.name if state is not None else None
    try:
        if probe is None:
            probe = await client.probe(path)
        elif given != name and probe.display_name is None:
            # A run whose delta stood for the probe has not read the name (`_delta_probe`).
            probe = replace(probe, display_name=(await client.probe(path)).display_name)
    except NotFound:
        # First run, or the member deleted the whole calendar: (re)create it.
        await client.ensure_collection(path, name)
        probe = await client.probe(path)
        return _Remote({}, probe.sync_token, probe.ctag, created=True)
    if probe.display_name is not None and probe.display_name != name and given != name:
        # The name carecal gives changed (the citizen's display name, or the member's
        # language: `collection_name`): so does the collection's, and calendar apps pick it
        # up at their next refresh. A name of the member's own, while carecal's is still the
        # one it gave (`ViewState.name`), is theirs: they renamed the calendar in their app.
        await client.ensure_collection(path, name)
    known = {r.href: r.etag for r in gathered.records.values() if r.href is not None}
    # A record whose ETag is unknown (a write whose answer named none, or a create that met
    # its own object after a crash) can only be matched against a real listing.
    if state is not None and all(known.values()):
        listing = {href: etag for href, etag in known.items() if etag}
        if probe.sync_token is not None and probe.sync_token == state.sync_token:
            return _Remote(listing, probe.sync_token, probe.ctag)
        if probe.sync_token is None and probe.ctag is not None and probe.ctag == state.ctag:
            return _Remote(listing, None, probe.ctag)
        if probe.sync_token is not None and state.sync_token is not None:
            try:
                if prefetched is not None and prefetched.token == state.sync_token:
                    delta = prefetched.delta
                    if delta is None:
                        raise InvalidSyncToken(path)
                else:
                    delta = await client.changes_since(path, state.sync_token)
            except InvalidSyncToken:
                log.info("sync token no longer valid; listing every ETag", extra={"path": path})
            else:
                for href in delta.deleted:
                    listing.pop(href, None)
                listing.update(delta.changed)
                return _Remote(listing, delta.new_token, probe.ctag)
    # Markers first, listing second: a change in between is in the listing AND after the
    # stored token, so the next delta reports it again (harmless), never neither.
    return _Remote(await client.list_etags(path), probe.sync_token, probe.ctag, full=True)


async def _sync(
    store: Store,
    target: Target,
    settings: Settings,
    view: View,
    gathered: _Gathered,
    *,
    now: datetime,
    probe: Probe | None = None,
    prefetched: _Prefetched | None = None,
) -> SyncOutcome:
    client, path = target.client, target.collection

    async def fetch(hrefs: Sequence[str]) -> Mapping[str, tuple[str, Body]]:
        return await _fetch(client, path, hrefs, prefetched)

    if gathered.state is not None and not _same_place(gathered.state, target):
        # The view moved (another server or account): the records describe the old place,
        # and every copy is written anew (none is as recorded there).
        left = gathered.state
        if left.server == target.server:
            await _delete_left(store, target, view, left.collection)
        await _forget_view(store, view)
        gathered = replace(gathered, records={}, state=None, recorded=False)
        probe = None
    name = collection_name(gathered.circle, gathered.member)
    remote_state = await _read_remote(client, path, name, gathered, probe, prefetched)
    # The member's own events in the collection: "Aflastning"/"Relief" asks for relief
    # (plugin.services.relief_calendar); released claims are rendered in this same run.
    # More of them than a run reads: the runs after this one read on in the full listing.
    after = gathered.state.foreign_after if gathered.state is not None else None
    walk = None
    if after is not None and not remote_state.full:
        walk = await client.list_etags(path)
    foreign = await relief_from_collection(
        store,
        fetch,
        view,
        gathered.circle,
        gathered.records,
        remote_state.listing,
        now=now,
        full=remote_state.full,
        after=after,
        walk=walk,
    )
    if foreign.released:
        gathered = await _gather(store, view, since=now - HISTORY) or gathered
    if foreign.moved:
        gathered = _followed(gathered, foreign.moved)
    # While objects the member's app changed are still to be read (`foreign.after`), a copy
    # gone from its href may be among them, moved (an app re-uploading every copy under
    # names of its own): none is read as deleted, a pass, before the walk has read them all.
    unread: dict[str, str] = {}  # href -> ETag, as recorded
    if foreign.after is not None:
        listed = remote_state.listing
        unread = {
            r.href: r.etag or ""
            for r in gathered.records.values()
            if r.href is not None and r.href not in listed
        }
    if remote_state.created and gathered.records:
        await _forget_view(store, view)  # else the planner would read every copy as deleted
        gathered = replace(gathered, records={}, recorded=False)
    records = gathered.records
    remote = {href: RemoteItem(href, etag) for href, etag in remote_state.listing.items()}
    remote.update((href, RemoteItem(href, etag)) for href, etag in unread.items())
    if gathered.recorded:
        desired = _as_recorded(records)
    else:
        desired = _desired(gathered, settings, view, now=now, reuse=records)
    try:
        plan = plan_view_sync(desired, remote, records)
    except StorageEmpty as empty:
        # DESIGN: a collection that suddenly lists nothing never causes mass deletion. Read
        # as the member passing on everything it would be; more likely the server lost or
        # reset the collection. Pass on nothing, and write the copies again.
        log.warning(
            "collection lists none of carecal's copies; writing them again",
            extra={"path": path, "records": empty.records},
        )
        await _forget_view(store, view)
        gathered = replace(gathered, records={}, recorded=False)
        records = {}
        desired = _desired(gathered, settings, view, now=now)
        plan = plan_view_sync(desired, remote, records)
    actions: list[Action] = list(plan.actions)
    strays = _strays_deleted(foreign.strays, desired, records)
    intents: tuple[Intent, ...] = plan.intents
    readings = Readings((), ())
    fetched_uids: set[str] = set()
    complete = True  # every copy this run leaves is what its inputs render
    if plan.fetch.hrefs:
        bodies = await fetch(plan.fetch.hrefs)
        fetched = [Fetched(href, etag, body) for href, (etag, body) in bodies.items()]
        readings = read_member_copies(
            fetched,
            records,
            member_address=attendee_address(gathered.member, _domain(view)),
            max_bytes=MAX_MEMBER_BYTES,
        )
        intents += readings.intents
        fetched_uids = {record.uid for record, _, _ in readings.copies}
    applied = None
    if intents:
        seen = _answers_seen(records, intents, readings)
        applied = await _apply_intents(store, gathered, view, intents, now=now, seen=seen)
    if applied is not None:
        # The domain's answer goes into the copies: a won claim reads [Dig] at once, a lost
        # one is reset to [Anna]/NEEDS-ACTION in this same run, and so does every other copy
        # the gestures changed (a suggestion, an overload mark): planned again, rendering
        # only what changed.
        regathered = _patched(gathered, applied) or await _gather(store, view, since=now - HISTORY)
        if regathered is None:
            return SyncOutcome(intents=intents)
        gathered = regathered
    later: Callable[[], tuple[list[Action], str | None]] | None = None
    if applied is not None or fetched_uids:
        # The first plan's copies stand as recorded where nothing but the gestures changed
        # what they are rendered from (the read was as recorded, and patched, or untouched).
        as_recorded = gathered.recorded if applied is None else gathered.changed is not None
        standing = desired if as_recorded else None
        changed = gathered.changed or frozenset()
        # After a gesture the advice is worked out over the whole window, which the copies
        # the run writes first do not wait for: their own marks need only their own offers
        # scored. The rest is worked out while those writes are in flight (`_apply`).
        first = None
        if applied is not None and standing is not None and changed:
            first = _advice_for(gathered, settings, view, now, changed, fetched_uids)
        desired = _desired(
            gathered,
            settings,
            view,
            now=now,
            reuse=records,
            force=fetched_uids,
            recorded=standing,
            changed=changed,
            advice_now=first,
        )
        if first is not None:
            first_desired = desired

            def later() -> tuple[list[Action], str | None]:
                """The copies whose marks the whole advice moves, to write after the first
                ones, and the view's inputs with them (None: not all rendered)."""
                nonlocal complete
                final = _desired(
                    gathered,
                    settings,
                    view,
                    now=now,
                    reuse=records,
                    recorded=first_desired,
                    advice_was=first,
                )
                moved = {u for u, item in final.items() if item is not first_desired.get(u)}
                moved -= {_uid_of(action) for action in actions}  # written first
                replan = plan_view_sync(final, remote, records)
                complete = complete and set(replan.fetch.hrefs) <= set(plan.fetch.hrefs)
                more = [a for a in replan.actions if _uid_of(a) in moved]
                return more, _view_inputs(final) if complete else None

    if applied is not None:
        replan = plan_view_sync(desired, remote, records)
        actions = list(replan.actions)
        # A copy with the member's alarms that the gestures changed is merged only after a
        # fetch this run did not make: the next run makes it.
        complete = set(replan.fetch.hrefs) <= set(plan.fetch.hrefs)
    if plan.fetch.hrefs:
        actions += plan_after_fetch(desired, readings).actions
    actions += strays  # (after the replan a gesture makes, which plans the actions anew)
    # Records kept before they held their advice marks get them, once and first (a record
    # this run writes anyway is saved after): a later gesture then keys only what it changes.
    actions[:0] = _marks_added(desired, records)
    inputs = _view_inputs(desired) if complete else None
    state = ViewState(
        path,
        remote_state.sync_token,
        remote_state.ctag,
        now,
        inputs,
        gathered.generation,
        target.server,
        name,
        foreign.after,
    )
    last = gathered.state
    if not actions and last is not None and state == replace(last, synced_at=now):
        if _day(last.synced_at) == _day(now):
            # Nobody wrote since the last run, and every copy is what it would write.
            return SyncOutcome()
    written, skipped, state = await _apply(store, client, path, view, actions, state, then=later)
    _remember(store, view, gathered, state)
    if not complete or foreign.after is not None:
        own = replace(gathered.circle, members=(gathered.member,))
        async with store.transaction() as tx:
            await enqueue_view_syncs(tx, view.tenant_id, own, now=now)
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


async def _fetch(
    client: CalendarClient,
    path: str,
    hrefs: Sequence[str],
    prefetched: _Prefetched | None,
) -> Mapping[str, tuple[str, Body]]:
    """The objects at `hrefs`: those fetched with the delta, the rest fetched now."""
    have = prefetched.bodies if prefetched is not None else {}
    missing = [href for href in hrefs if href not in have]
    bodies = {href: have[href] for href in hrefs if href in have}
    if missing:
        bodies.update(await client.fetch(path, missing))
    return bodies


def _followed(gathered: _Gathered, moved: Mapping[str, str]) -> _Gathered:
    """The records of copies the member's app moved to another href (`moved`: UID -> href)
    point there: the copy is read as any changed copy (its ETag is not the record's), for a
    gesture made with the move, and written back or remembered at its new href. Not a pass:
    the member kept the event."""
    records = dict(gathered.records)
    for uid, href in moved.items():
        log.info("member copy moved; followed", extra={"uid": uid, "object": _name_of(href)})
        record = records[uid]
        # A copy made again after its pass was read (a tombstone: no href) is written over,
        # no gesture read from it: it may be an app's cached copy from when she held it.
        fingerprint = record.fingerprint if record.href is not None else ""
        records[uid] = replace(record, href=href, etag=None, fingerprint=fingerprint)
    return replace(gathered, records=records)


def _name_of(href: str) -> str:
    """An object's own name, for the log: the rest of an href on a member's own server may
    name her account (some servers put the e-mail address in the path)."""
    return href.rstrip("/").rsplit("/", 1)[-1]


def _strays_deleted(
    strays: Mapping[str, tuple[str, str]],
    desired: Mapping[str, DesiredItem],
    records: Mapping[str, SyncRecord],
) -> list[Action]:
    """Copies of carecal's that are not this view's (UID -> href, ETag): the member's app
    moved them here from another of her care calendars (where the move read as a pass).
    Left, they would say forever what they said then ("[Dig]", a time since changed)."""
    deleted: list[Action] = []
    for uid, (href, etag) in sorted(strays.items()):
        if uid not in desired and uid not in records:
            log.info(
                "a copy of another care calendar's deleted",
                extra={"uid": uid, "object": _name_of(href)},
            )
            deleted.append(Delete(uid, href, etag))
    return deleted


def _marks_added(
    desired: Mapping[str, DesiredItem], records: Mapping[str, SyncRecord]
) -> list[Action]:
    """A record without marks, of a copy rendered from the same inputs (so with the marks
    its item has), kept again with them."""
    added: list[Action] = []
    for uid, record in records.items():
        item = desired.get(uid)
        if (
            record.marks is None
            and item is not None
            and item.marks is not None
            and item.inputs == record.inputs
        ):
            added.append(Remember(replace(record, marks=item.marks)))
    return added


async def _delete_left(store: Store, target: Target, view: View, left: str) -> None:
    """The view moved to another path on the same server and account (the municipality
    changed `collection_template`, or the member their account's URL): its copies at `left`,
    which name the circle's members, go, unless another view's state is there now. Left as
    they are (logged) when the server refuses: the new place is written all the same. A
    server that is down raises CalendarUnavailable before the view forgets where it was, so
    the job's next try deletes them. (The path is another view's only after that view
    synced there; a view that moves there later writes it anew.)"""
    where = {"tenant": view.tenant_id, "member_id": view.member_id, "citizen_id": view.citizen_id}
    async with store.reading() as tx:
        key = (view.tenant_id, view.member_id, view.citizen_id)
        if await tx.collection_in_use(left, target.server, other_than=key):
            return
    try:
        await target.client.delete_collection(left)
    except (NotFound, Forbidden) as exc:
        log.warning(
            "moved view's old collection left", extra={**where, "reason": type(exc).__name__}
        )
    else:
        log.info("moved view's old collection deleted", extra=where)


def _patched(gathered: _Gathered, applied: _Applied) -> _Gathered | None:
    """`gathered` with the occurrences the gestures changed read again, when nothing but
    the gestures changed the view since it was read: its generation then moved by exactly
    the gestures' own bump. None: read the view again."""
    if applied.generation != gathered.generation + 1:
        return None
    fresh = {k: r for k, r in applied.records.items() if r is not None}
    if len(fresh) != len(applied.records):
        return None
    occurrences: dict[str, tuple[OccurrenceRecord, ...]] = {}
    for task_id, records in gathered.occurrences.items():
        if any(r.occurrence.id in fresh for r in records):
            records = tuple(fresh.pop(r.occurrence.id, r) for r in records)
        occurrences[task_id] = records
    if fresh:
        return None  # an occurrence this read did not hold
    return replace(
        gathered,
        occurrences=occurrences,
        generation=applied.generation,
        recorded=False,
        changed=frozenset(applied.records) if gathered.recorded else None,
    )


async def _forget_view(store: Store, view: View) -> None:
    async with store.transaction() as tx:
        await tx.delete_view(view.tenant_id, view.member_id, view.citizen_id)


async def withdraw_view(
    store: Store,
    calendars: Calendars,
    view: View,
    *,
    was_hosted: bool = False,
    last_try: bool = False,
) -> None:
    """The member left the circle: delete their collection and forget its records. Where the
    last sync wrote it counts; a member carecal never synced has nothing to delete. Their own
    account (`external`), if they had one, is then erased from their membership. An account
    that refuses carecal is logged and left; one that is down raises CalendarUnavailable (the
    job is retried) until the job's `last_try`.
    `was_hosted`: they are still in the circle but no longer `hosted`: delete their collection
    on the hosted server, and forget the view only if that is where it was."""
    if was_hosted:
        if calendars.service is None:
            raise MissingCalendar("this worker has no client for hosted calendars")
        path = calendars.service.collection(view)
        await calendars.service.client.delete_collection(path)
        async with store.transaction() as tx:
            state = await tx.get_view_state(view.tenant_id, view.member_id, view.citizen_id)
        if state is None or state.collection == path:
            await _forget_view(store, view)
        return
    async with store.transaction() as tx:
        member = await tx.get_membership(view.tenant_id, view.citizen_id, view.member_id)
        state = await tx.get_view_state(view.tenant_id, view.member_id, view.citizen_id)
        records = await tx.list_view_records(view.tenant_id, view.member_id, view.citizen_id)
    if member is not None and (state is not None or records):
        where = {"tenant": view.tenant_id, "member_id": view.member_id}
        try:
            async with calendars.target(view, member) as target:
                path = state.collection if state is not None else target.collection
                await target.client.delete_collection(path)
        except (NoCollection, UnsafeCalendarUrl):
            pass  # nothing carecal may reach: nothing it can delete
        except Forbidden:
            if member.calendar != "external":
                raise  # carecal's own service account: a configuration error
            log.warning(
                "removed member's calendar refused carecal; its collection stays", extra=where
            )
        except CalendarUnavailable:
            if member.calendar != "external" or not last_try:
                raise
            log.warning("removed member's calendar unreachable; giving up", extra=where)
    async with store.transaction() as tx:
        await tx.delete_view(view.tenant_id, view.member_id, view.citizen_id)
        await tx.erase_removed_account(view.tenant_id, view.citizen_id, view.member_id)


async def withdraw_retired(
    store: Store, calendars: Calendars, view: View, *, last_try: bool = False
) -> None:
    """The member left their own account for this circle's view (`Tx.retire_calendar`, by
    `circle.updated`): delete carecal's collection there, then forget the account. An
    account they are back on is only forgotten. A server that refuses carecal (a wrong
    password, an address the tenant does not allow) is logged, and the account forgotten:
    nothing carecal may do there. A server that is down raises CalendarUnavailable, and the
    job is retried; on its `last_try` the account is forgotten all the same (logged)."""
    where = {"tenant": view.tenant_id, "member_id": view.member_id, "citizen_id": view.citizen_id}
    async with store.reading() as tx:
        retired = await tx.retired_calendars(view.tenant_id, view.citizen_id, view.member_id)
        member = await tx.get_membership(view.tenant_id, view.citizen_id, view.member_id)
    current = member.external if member is not None and member.calendar == "external" else None
    for account in retired:
        if current is None or not same_account(current, account):
            try:
                async with calendars.external(view, account) as target:
                    await target.client.delete_collection(target.collection)
                    path = target.collection
            except (UnsafeCalendarUrl, Forbidden) as exc:
                log.warning(
                    "left calendar account refused carecal; its collection stays",
                    extra={**where, "reason": type(exc).__name__},
                )
            except CalendarUnavailable:
                if not last_try:
                    raise
                log.warning("left calendar account unreachable; giving up", extra=where)
            else:
                # The records go with the collection, unless they are the new account's (its
                # collection can have the same path on another server). A state from before
                # servers were kept: unless the new account's collection has that path.
                in_use = current is not None and (
                    external_collection(current.url, view.citizen_id) == path
                )
                async with store.transaction() as tx:
                    state = await tx.get_view_state(view.tenant_id, view.member_id, view.citizen_id)
                    if state is not None and state.collection == path:
                        if _same_place(state, target) if state.server else not in_use:
                            await tx.delete_view(view.tenant_id, view.member_id, view.citizen_id)
                log.info("left calendar account's collection deleted", extra=where)
        async with store.transaction() as tx:
            await tx.forget_retired_calendar(
                view.tenant_id, view.citizen_id, view.member_id, account
            )


async def _gather(
    store: Store,
    view: View,
    *,
    now: datetime | None = None,
    since: datetime | None = None,
    peeked: asyncio.Future[_Peek | None] | None = None,
) -> _Gathered | None:
    """The view as the store has it, in one snapshot. `now`: the time of a run that may take
    the copies as the last run recorded them (`recorded`): when the view's generation is
    still the one that run rendered from, on the same day, and the records hold exactly the
    keys it rendered. The run then plans without rendering; after a member's gesture it
    renders from this read, patched (`_patched`), not from a second one. `since`: leave out
    the occurrences that ended before it (a run's `now - HISTORY`). `peeked`: given what
    `_peek` answers as soon as it is read (first), for the run to go on with."""
    async with store.reading() as tx:
        seen = await tx.peek_view(
            view.tenant_id, view.member_id, view.citizen_id, SYNCED_DELIVERIES
        )
        if peeked is not None and not peeked.done():
            peeked.set_result(
                _Peek(seen.state, seen.generation, seen.member)
                if seen is not None and seen.state is not None
                else None
            )
        if seen is None:
            _forget_known(store, view)  # not a view carecal syncs now
            return None
        generation, state = seen.generation, seen.state
        known = _known(store, view, seen, now)
        if known is not None and state is not None:
            records = await tx.list_view_records(view.tenant_id, view.member_id, view.citizen_id)
            return replace(
                known,
                occurrences=_since(known.occurrences, since),
                records=records,
                state=state,
                recorded=_view_inputs(records) == state.inputs,
                changed=None,
            )
        circle = await tx.get_circle(view.tenant_id, view.citizen_id)
        member = None if circle is None else circle.member(view.member_id)
        if circle is None or member is None or member.calendar not in SYNCED_DELIVERIES:
            return None
        records = await tx.list_view_records(view.tenant_id, view.member_id, view.citizen_id)
        link = await tx.active_member_link(view.tenant_id, view.member_id)
        recorded = (
            now is not None
            and link is not None
            and state is not None
            and state.generation == generation
            and _day(state.synced_at) == _day(now)
            and state.inputs is not None
            and _view_inputs(records) == state.inputs
        )
        tasks = tuple(await tx.list_tasks(view.tenant_id, view.citizen_id))
        by_task = await tx.occurrences_of_citizen(
            view.tenant_id, view.citizen_id, ended_after=since
        )
        occurrences = {task.id: tuple(by_task.get(task.id, ())) for task in tasks}
        care = await read_circle_care(tx, view.tenant_id, view.citizen_id)
    if link is None:
        # Made on the member's first sync; `created_at` is informational: the wall clock.
        async with store.transaction() as tx:
            link = await ensure_link(tx, view.tenant_id, view.member_id, now=datetime.now(UTC))
    return _Gathered(
        circle, member, tasks, occurrences, records, link, state, care, generation, recorded
    )


def _as_recorded(records: Mapping[str, SyncRecord]) -> dict[str, DesiredItem]:
    """The copies as the records say the last run rendered them: stand-ins with no body (the
    planner writes none of them; a copy to write is rendered from a whole gather)."""
    return {
        uid: DesiredItem(
            uid=uid,
            body=b"",
            fingerprint=record.fingerprint,
            material=record.material,
            partstat=record.partstat,
            inputs=record.inputs,
            marks=record.marks,
        )
        for uid, record in records.items()
    }


def _canonical(value: object) -> object:
    """`value` as nested tuples whose repr is the same for equal values: dataclasses by
    field, mappings and sets in sorted order (their iteration order may differ by store)."""
    if is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            tuple((f.name, _canonical(getattr(value, f.name))) for f in fields(value)),
        )
    if isinstance(value, Mapping):
        return tuple(sorted((repr(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, set | frozenset):
        return tuple(sorted(repr(_canonical(v)) for v in value))
    return value


# Bump when render.py draws a different copy from the same inputs: every copy is then
# rendered again once (fingerprint.VERSION, part of every key, counts the same way).
RENDER_VERSION = 1


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


class _ItemKeys:
    """The key of a copy: a digest of everything `render_event` draws it from (its
    `RenderInput` but the DTSTAMP). The parts one view's copies share are canonicalised once."""

    def __init__(self) -> None:
        self._shared: dict[tuple[object, ...], str] = {}
        self._tasks: dict[str, str] = {}

    def __call__(self, inp: RenderInput) -> str:
        shared_key = (inp.member, inp.organizer, inp.domain, id(inp.holder_names))
        shared = self._shared.get(shared_key)
        if shared is None:
            shared = repr(
                _canonical(
                    (
                        RENDER_VERSION,
                        FINGERPRINT_VERSION,
                        inp.member,
                        inp.holder_names,
                        inp.organizer,
                        inp.domain,
                    )
                )
            )
            self._shared[shared_key] = shared
        task = self._tasks.get(inp.task.id)
        if task is None:
            task = self._tasks[inp.task.id] = repr(_canonical(inp.task))
        # An OccurrenceRecord holds only tuples of plain values: its repr is canonical as is
        # (and ten times cheaper than `_canonical`, which matters in a view of thousands).
        own = (inp.record, inp.claim_link, inp.sequence, inp.suggested, inp.overloaded)
        data = "\x1f".join((shared, task, repr(own)))
        return hashlib.sha256(data.encode()).hexdigest()


def _view_inputs(desired: Mapping[str, DesiredItem | SyncRecord]) -> str:
    """What the whole view was rendered from: its copies' keys (of the desired items, or of
    the records a run wrote from them: the same digest when they hold the same keys)."""
    keys = "\n".join(f"{uid} {desired[uid].inputs}" for uid in sorted(desired))
    return hashlib.sha256(keys.encode()).hexdigest()


# A copy's advice marks (`capacity.ViewAdvice`), as its record keeps them.
SUGGESTED, OVERLOADED = 1, 2


def marks_of(inp: RenderInput) -> int:
    return (SUGGESTED if inp.suggested else 0) | (OVERLOADED if inp.overloaded else 0)


def _recorded_advice(records: Mapping[str, SyncRecord], suffix: str) -> ViewAdvice | None:
    """The advice the recorded copies were rendered with (None: a record without marks)."""
    suggested: set[str] = set()
    overloaded: set[str] = set()
    for uid, record in records.items():
        if record.marks is None:
            return None
        if record.marks & SUGGESTED:
            suggested.add(uid.removesuffix(suffix))
        if record.marks & OVERLOADED:
            overloaded.add(uid.removesuffix(suffix))
    return ViewAdvice(frozenset(suggested), frozenset(overloaded))


def _advice_for(
    gathered: _Gathered,
    settings: Settings,
    view: View,
    now: datetime,
    changed: Collection[str],
    force: Collection[str],
) -> ViewAdvice | None:
    """The recorded copies' advice with the true marks of the occurrences in `changed` and
    of the copies in `force` (UIDs), those offers alone scored (against the whole view's
    loads). None: the records do not say what they were rendered with."""
    suffix = f"@{_domain(view)}"
    was = _recorded_advice(gathered.records, suffix)
    if was is None:
        return None
    ids = {uid.removesuffix(suffix) for uid in force} | set(changed)
    found = member_advice(
        gathered.circle,
        gathered.member,
        gathered.tasks,
        gathered.occurrences,
        horizon=timedelta(weeks=settings.horizon_weeks),
        now=now,
        care=gathered.care,
        only=ids,
    )
    return ViewAdvice(
        (was.suggested - ids) | found.suggested, (was.overloaded - ids) | found.overloaded
    )


def _uid_of(action: Action) -> str:
    return action.record.uid if isinstance(action, Remember) else action.uid


def _desired(
    gathered: _Gathered,
    settings: Settings,
    view: View,
    *,
    now: datetime,
    reuse: Mapping[str, SyncRecord] | None = None,
    force: Collection[str] = (),
    recorded: Mapping[str, DesiredItem] | None = None,
    changed: Collection[str] = (),
    advice_now: ViewAdvice | None = None,
    advice_was: ViewAdvice | None = None,
) -> dict[str, DesiredItem]:
    """Every copy the member should have, by UID. A copy whose record in `reuse` holds its
    key is not rendered: it stands in with the record's fingerprints and no body (unless its
    UID is in `force`: a copy fetched to be written back). So a run renders what changed.

    `recorded`: the copies as recorded (`_as_recorded`), when `gathered` is what they were
    rendered from but for the records of the occurrences in `changed` (`_Gathered.changed`).
    Then only those copies, the forced ones and the ones whose advice marks moved are keyed
    again, and the rest stand as recorded: a member's gesture costs what it changed, not
    the size of the view (but for the advice, worked out anew over its window, unless the
    caller gives it: `advice_now`). `advice_was`: the advice `recorded` was rendered with,
    when not the records' (`_recorded_advice`): the run's first copies, rendered before the
    whole window's advice was known (`_advice_for`)."""
    public_url = settings.server.public_url
    link = gathered.link
    domain = _domain(view)
    suffix = f"@{domain}"
    horizon = timedelta(weeks=settings.horizon_weeks)
    advice: ViewAdvice | None = None
    only: set[str] | None = None
    desired: dict[str, DesiredItem] = {}
    was = advice_was
    if was is None and recorded is not None:
        was = _recorded_advice(gathered.records, suffix)
    if recorded is not None and was is not None:
        advice = was
        if advice_now is not None:
            advice = advice_now
        elif changed or advice_was is not None:
            advice = member_advice(
                gathered.circle,
                gathered.member,
                gathered.tasks,
                gathered.occurrences,
                horizon=horizon,
                now=now,
                care=gathered.care,
            )
        only = {uid.removesuffix(suffix) for uid in force}
        only.update(changed)
        only.update(advice.suggested ^ was.suggested, advice.overloaded ^ was.overloaded)
        desired.update(recorded)
        for occurrence_id in only:
            desired.pop(event_uid(occurrence_id, domain), None)
    keys = _ItemKeys()
    for inp in member_view_inputs(
        gathered.circle,
        gathered.member,
        gathered.tasks,
        gathered.occurrences,
        claim_link=lambda occurrence_id: claim_url(public_url, link, occurrence_id),
        organizer=organizer_address(public_url),
        domain=domain,
        horizon=horizon,
        now=now,
        care=gathered.care,
        advice=advice,
        only=only,
    ):
        uid = event_uid(inp.record.occurrence.id, inp.domain)
        key = keys(inp)
        marks = marks_of(inp)
        record = reuse.get(uid) if reuse is not None else None
        if record is not None and record.inputs == key and uid not in force:
            desired[uid] = DesiredItem(
                uid=uid,
                body=b"",
                fingerprint=record.fingerprint,
                material=record.material,
                partstat=record.partstat,
                cancelled=inp.record.occurrence.cancelled
                or inp.task.status is TaskStatus.CANCELLED,
                task=inp.task.id,
                inputs=key,
                marks=marks,
            )
        else:
            desired[uid] = replace(desired_item(render_event(inp), key), marks=marks)
    return desired


_ASKS = {Gesture.CLAIM: Ask.CLAIM, Gesture.PASS: Ask.PASS, Gesture.RELEASE: Ask.RELEASE}


@dataclass(frozen=True, slots=True)
class _Applied:
    """What a run's gestures changed: the occurrences they decided, as stored after, and the
    view's generation after their bump."""

    records: Mapping[str, OccurrenceRecord | None]
    generation: int


def _answers_seen(
    records: Mapping[str, SyncRecord], intents: Sequence[Intent], readings: Readings
) -> list[SyncRecord]:
    """The records of the copies whose answers this run read, as it read them: a changed
    PARTSTAT (and the copy's ETag), a deleted copy as a tombstone. Saved with the answers'
    effects, so that a run that fails after them (the server went down before the copies
    were written back) never reads the same answers again: replayed later, an old "yes" would
    undo what the member did meanwhile through another channel (a release by link)."""
    answered = {i.uid for i in intents if isinstance(i, MemberGesture)}
    seen = [
        replace(
            record,
            etag=fetched.etag,
            partstat=copy.partstat or record.partstat,
            member_alarms=copy.has_alarms,
            inputs="",  # what the copy holds now is not a render of any inputs: never reused
        )
        for record, fetched, copy in readings.copies
        if record.uid in answered and isinstance(copy, MemberCopy)
    ]
    deleted = {i.uid for i in intents if isinstance(i, MemberDeleted)}
    return seen + [tombstone(records[uid]) for uid in sorted(deleted) if uid in records]


async def _apply_intents(
    store: Store,
    gathered: _Gathered,
    view: View,
    intents: Sequence[Intent],
    *,
    now: datetime,
    seen: Sequence[SyncRecord] = (),
) -> _Applied | None:
    """Apply the owner's gestures as that member through channel `caldav`, in one
    transaction, and keep the records of the answers `seen` in it; when anything was decided,
    the circle's other views are queued for a sync: a claim that came or went, and a pass
    too (the member leaves the offer's pool, and the others' suggestions, `[Forslag]`, may
    move to someone else). Returns what changed (None: nothing)."""
    suffix = f"@{_domain(view)}"
    decided: dict[str, OccurrenceRecord] = {}  # each occurrence as its last decision left it
    tasks = {task.id: task for task in gathered.tasks}
    tasks_of = {
        record.occurrence.id: tasks[task_id]
        for task_id, records in gathered.occurrences.items()
        if task_id in tasks
        for record in records
    }
    async with store.transaction() as tx:
        for intent in intents:
            match intent:
                case MemberDeleted():
                    ask: Ask | None = Ask.PASS
                case MemberGesture(gesture=gesture):
                    ask = _ASKS.get(gesture)
            occurrence_id = intent.uid.removesuffix(suffix)
            if ask is None or not intent.uid.endswith(suffix):
                continue
            task = await _task_of(tx, view, occurrence_id, tasks_of)
            if task is None:
                continue
            if task.kind == "visit" or (
                ask is Ask.CLAIM and not eligible_for(gathered.member, task)
            ):
                # A visit is the host's to assign and move, not a member's to take or drop
                # (the staff member changes it in the host system); the write back below
                # resets the copy.
                continue
            result = await decide_recorded(
                tx,
                view.tenant_id,
                occurrence_id,
                view.member_id,
                ask,
                channel="caldav",
                now=now,
                task=task,
                circle=gathered.circle,
                settings=None if gathered.care is None else gathered.care.settings,
            )
            if result is None or not result.decision.changed:
                continue
            decided[occurrence_id] = result.record
        for record in seen:
            await tx.save_view_record(view.tenant_id, view.member_id, view.citizen_id, record)
        if not decided:
            return None
        # This run renders the answer, and records the generation it read after this;
        # should it stop before that, the next run must not take the copies as recorded.
        generation = await tx.bump_view_generation(view.tenant_id, view.member_id, view.citizen_id)
        records: dict[str, OccurrenceRecord | None] = dict(sorted(decided.items()))
        await enqueue_view_syncs(
            tx, view.tenant_id, gathered.circle, now=now, exclude=view.member_id
        )
    return _Applied(records, generation)


async def _task_of(
    tx: Tx, view: View, occurrence_id: str, tasks_of: Mapping[str, Task]
) -> Task | None:
    """The task of one of the view's occurrences (None: not this citizen's). `tasks_of`: the
    occurrences' tasks as the run read them, moments before (an occurrence never changes
    task; the occurrence itself, cancelled or not, is read again under its lock)."""
    task = tasks_of.get(occurrence_id)
    if task is None:
        record = await tx.get_occurrence(view.tenant_id, occurrence_id)
        if record is None:
            return None
        task = await tx.get_task(view.tenant_id, record.occurrence.task_id)
    return task if task is not None and task.citizen_id == view.citizen_id else None


async def _settled(
    client: CalendarClient,
    path: str,
    state: ViewState,
    written: Mapping[str, str | None],
    deleted: set[str],
) -> ViewState:
    """The markers to keep after this run wrote. Not the ones read before the writes: Radicale's
    and Xandikos' sync tokens are hashes of the collection's content, so deleting exactly what
    a run created brings the old token back, and a delta from it reports nothing. Instead, one
    more delta from the old token: when it holds only our own writes (each href with the ETag
    the write answered, each deletion ours), its new token is safe to keep; when it holds
    anything else (a member wrote meanwhile, a server that named no ETag), keep no token, and
    the next run lists every ETag once."""
    forget = replace(state, sync_token=None, ctag=None)
    if state.sync_token is None:
        return forget
    try:
        delta = await client.changes_since(path, state.sync_token)
    except CalendarError:
        return forget
    echoes = all(etag and written.get(href) == etag for href, etag in delta.changed)
    if echoes and set(delta.deleted) <= deleted:
        return replace(state, sync_token=delta.new_token, ctag=None)
    return forget


def _domain(view: View) -> str:
    # The UID's right-hand side: stable per tenant, whatever URL the plugin is served on.
    return view.tenant_id


def _object_name(uid: str) -> str:
    """The href of a created copy derives from its UID, so a retry after a crash meets its own
    object (AlreadyExists) instead of writing a second one."""
    return uid.replace("/", "_") + ".ics"


async def _apply(
    store: Store,
    client: CalendarClient,
    path: str,
    view: View,
    actions: Sequence[Action],
    state: ViewState,
    *,
    then: Callable[[], tuple[list[Action], str | None]] | None = None,
) -> tuple[int, int, ViewState]:
    """Carry out `actions`, then keep the records and the view's state. `then`: CPU-bound
    work done while the first writes are in flight, answering more actions to carry out
    after them and the view's inputs for its state. Answers the writes made and skipped,
    and the state kept."""
    saved: list[SyncRecord] = []
    dropped: list[str] = []
    deleted: set[str] = set()  # hrefs this run deleted
    written = skipped = 0
    lost = False  # a copy met where one was to be created: the next run must come

    async def write(batch: Sequence[Action]) -> None:
        nonlocal written, skipped, lost
        for action in batch:
            if isinstance(action, Create | Update) and not action.body:
                # A copy `_desired` let stand in for its record (no body) is never planned for a
                # write; if one were, writing it would empty the member's copy.
                raise RuntimeError(f"a write of {action.uid} was planned without rendering it")
            match action:
                case Create(uid=uid, body=body, record=record):
                    href = object_href(path, _object_name(uid))
                    try:
                        etag = await client.create(path, _object_name(uid), body)
                    except AlreadyExists as exc:
                        # Ours from a run that crashed before storing its record, or left from an
                        # earlier account: an unknown fingerprint makes the next run fetch and
                        # overwrite it (and read no gesture from it), and no inputs in the state
                        # make sure that run comes, though nothing else changes. Or the UID is
                        # at another href (the member's app moved the copy): that run lists
                        # every object, finds it, and follows it there (`_followed`).
                        log.info(
                            "copy met where it was to be created",
                            extra={"uid": record.uid, "preconditions": list(exc.preconditions)},
                        )
                        saved.append(replace(record, href=href, etag="", fingerprint=""))
                        lost = True
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
                    except AlreadyExists as exc:
                        # The server refuses the write for this object alone (Radicale: its
                        # UID is another's now): the run goes on, the next one reads it again.
                        log.warning(
                            "copy not written", extra={"uid": record.uid, "status": exc.status}
                        )
                        lost = True
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
                    deleted.add(href)
                    written += 1
                case Forget(uid=uid):
                    dropped.append(uid)
                case Remember(record=record):
                    saved.append(record)

    if then is None:
        await write(actions)
    else:
        first = asyncio.create_task(write(actions))
        await asyncio.sleep(0)  # the first request is on its way before the work begins
        try:
            more, inputs = then()
        except BaseException:
            await asyncio.gather(first, return_exceptions=True)
            raise
        await first
        state = replace(state, inputs=inputs)
        await write(more)
    if lost:
        state = replace(state, inputs=None)
    where = (view.tenant_id, view.member_id, view.citizen_id)

    async def keep(state: ViewState | None) -> None:
        async with store.transaction() as tx:
            for record in saved:
                await tx.save_view_record(*where, record)
            for uid in dropped:
                await tx.delete_view_record(*where, uid)
            if state is not None:
                await tx.save_view_state(*where, state)

    if not (written or skipped):
        await keep(state)
        return written, skipped, state
    # The records are kept while the server answers the delta that settles the token, and
    # the state after them: a token newer than the records would hide changes, an older
    # one (a run stopped in between) only makes the next run see its own writes again.
    ours = {r.href: r.etag for r in saved if r.href is not None}
    settling = asyncio.create_task(_settled(client, path, state, ours, deleted))
    try:
        await keep(None)
    except BaseException:
        settling.cancel()
        await asyncio.gather(settling, return_exceptions=True)
        raise
    state = await settling
    async with store.transaction() as tx:
        await tx.save_view_state(*where, state)
    return written, skipped, state
