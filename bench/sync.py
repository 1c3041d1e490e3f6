"""What polling members' calendars costs: carecal's view sync against the protocol floor and
vdirsyncer, on the same Xandikos, the same collections, in one run (`bench/README.md`).

    .venv/bin/python -m bench.sync [--views 200] [--events 50] [--big-events 5000]
                                   [--repeat 3] [--repeat-big 3] [--seed bulk|sync]
                                   [--no-vdirsyncer] [--profile] [--json out.json] [--keep]

Three rows, each measured for three clients through one counting proxy (`bench.dav_proxy`):

    idle round         one poll of every view: carecal's `view_sync.poll_round` over the
                       `--views` views (`--events` events each), 8 at a time
                       (worker.concurrency), as the worker polls (it would queue a sync of
                       any view found changed: none here); the
                       floor's PROPFIND of each view's sync token, 8 at a time; an idle
                       `vdirsyncer sync` of one pair per view
    one change (50)    a member accepts one event in their calendar app (PARTSTAT=ACCEPTED,
                       If-Match, straight to the server, not counted); then carecal's next sync
                       of that view (delta, multiget, the claim, the write-back, the delta
                       that settles its token), the floor's same four requests, and
                       `vdirsyncer sync` of that pair
    one change (5000)  the same in a view of `--big-events` events

The clients: carecal is `plugin.services.view_sync.sync_view` over a real SQLite store with its
municipal-server client (`calendar.type = "caldav"`, `server = "xandikos"`, the default
`collection_template`); the floor is `bench.dav_floor` on a bare httpx client; vdirsyncer is
the released program, run as a subprocess (its start-up is part of what it costs, and printed).

The data: circles and tasks go through carecal's webhook inbox and applier; carecal renders
and plans its own first sync of every view, and (`--seed bulk`, the default) the objects go
into Xandikos in one Git commit per collection while it is stopped, with carecal's sync
records stored as its `_apply` would have (`--seed sync` lets carecal's first sync PUT them
instead: the same state, but Xandikos commits once per PUT, ~40 ms each, and 20 000 PUTs do
not fit in a run).

A benchmark, not a test: missed targets are reported and the command exits 0; it exits
non-zero only when a measurement is worthless (carecal wrote during an idle round, a client
saw no change where one was made).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import logging
import math
import os
import platform
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import httpx
from icalendar import Calendar

from adapters.caldav.accounts import municipal_calendar, open_account
from adapters.caldav.client import CalDAVClient, CalDAVSettings
from adapters.caldav.port import object_href
from adapters.caldav.testing import xandikos_server
from bench.dav_floor import ChangeWriter, Floor
from bench.dav_proxy import CountingProxy, Counts
from bench.servers import machine_busy_seconds, tree_cpu_seconds
from plugin.cli import tune_gc
from plugin.config import CaldavCalendarSettings, Settings, validate_settings
from plugin.services import view_sync
from plugin.services.calendar_port import Probe
from plugin.services.calendars import Calendars, View
from plugin.services.ingest import Outcome, apply_batch
from plugin.services.ports import InboxItem, Store, ViewState
from plugin.sync.planner import Create, plan_view_sync
from plugin.web.app import decode_entry, open_store

T = TypeVar("T")
X = TypeVar("X")

TENANT = "bench"
HOME = "/user/calendars/"  # Xandikos --defaults: one user, calendars here
USER, PASSWORD = "carecal", "bench-password"  # Xandikos --defaults checks no password
CONCURRENCY = 8  # worker.concurrency's default: view syncs, and connections, at once
ROLES = ("relative", "relative", "network", "staff")
CATEGORIES = ("shopping", "walk", "meal", "practical", "transport", "doctor_escort", "other")
SMALL_COUNT = 5  # a small view's tasks are weekly, 5 occurrences each
BIG_COUNT = 50  # the big view's tasks are daily, 50 occurrences each
FIRST_DAY = 2  # occurrences start two days ahead: claims are open (24 h deadlines)
# The floor's write: what a sync engine's write-back changes in a copy the member accepted.
FLOOR_WRITE = ChangeWriter(b"STATUS:TENTATIVE", b"STATUS:CONFIRMED")

TARGET_FLOOR = 1.5  # carecal within 1.5x of the floor
TARGET_VDIRSYNCER = 10.0  # an idle round at least 10x cheaper than vdirsyncer's
TARGET_SIZE = 1.5  # one change costs the same (within 1.5x) in a big and a small view
OTHER_BUSY = 0.10  # more CPU than this (share of one core) used by others: say so


# -- what was measured -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of one client: its wire cost, its wall time, and the CPU the rest of
    the machine used meanwhile (seconds)."""

    counts: Counts
    seconds: float
    other_cpu: float


@dataclass
class Measured:
    samples: list[Sample] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return statistics.median(s.seconds for s in self.samples) * 1000

    @property
    def counts(self) -> Counts:
        """The wire cost of the median-time sample (the counts hardly vary between runs)."""
        ordered = sorted(self.samples, key=lambda s: s.seconds)
        return ordered[(len(ordered) - 1) // 2].counts

    @property
    def varies(self) -> bool:
        return len({(s.counts.requests, s.counts.bytes) for s in self.samples}) > 1

    @property
    def other_share(self) -> float:
        wall = sum(s.seconds for s in self.samples)
        return sum(s.other_cpu for s in self.samples) / wall if wall else 0.0


CLIENTS = ("carecal", "floor", "vdirsyncer")
ROWS = ("idle", "change", "change_big")


class Meter:
    """Brackets a client's run: counts on the proxy, wall time, the others' CPU."""

    def __init__(self, proxy: CountingProxy) -> None:
        self.proxy = proxy
        self.results: dict[str, dict[str, Measured]] = {row: {} for row in ROWS}

    @staticmethod
    def _own_cpu() -> float:
        """CPU of this process, its live descendants (Xandikos, the proxy) and its reaped
        children (each vdirsyncer run)."""
        times = os.times()
        return tree_cpu_seconds(os.getpid()) + times.children_user + times.children_system

    async def measure(
        self, row: str, client: str, run: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        busy, own = machine_busy_seconds(), self._own_cpu()
        before = self.proxy.counts()
        started = time.perf_counter()
        result = await run(*args)
        seconds = time.perf_counter() - started
        counts = self.proxy.counts() - before
        other = max(0.0, (machine_busy_seconds() - busy) - (self._own_cpu() - own))
        self.results[row].setdefault(client, Measured()).samples.append(
            Sample(counts, seconds, other)
        )
        return result


# -- the data ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    views: int
    members_per_circle: int
    events: int
    big_events: int

    @property
    def circles(self) -> int:
        return math.ceil(self.views / self.members_per_circle)


def _member(member_id: str, name: str, role: str) -> dict[str, Any]:
    return {"id": member_id, "name": name, "email": f"{member_id}@example.org", "role": role,
            "visibility": "full", "locale": "da", "calendar": "hosted"}  # fmt: skip


def _circle(citizen_id: str, name: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "circle.updated", "data": {
        "version": 1,
        "citizen": {"id": citizen_id, "display_name": name, "timezone": "Europe/Copenhagen",
                    "locale": "da"},
        "members": members}}  # fmt: skip


def _task(
    task_id: str, citizen_id: str, start: datetime, *, rule: str, category: str, needed: int
) -> dict[str, Any]:
    end = start + timedelta(hours=1)
    return {"type": "task.upserted", "data": {
        "id": task_id, "citizen_id": citizen_id, "version": 1, "kind": "task",
        "category": category, "details": "Nøglen hænger i skabet; listen ligger på køleskabet.",
        "location": None, "start": f"{start:%Y-%m-%dT%H:%M:%S}", "end": f"{end:%Y-%m-%dT%H:%M:%S}",
        "timezone": "Europe/Copenhagen", "people_needed": needed, "recurrence": rule,
        "claim_deadline_hours": 24}}  # fmt: skip


def _counts(total: int, per_task: int) -> list[int]:
    """Occurrence counts of the tasks that make `total` occurrences, `per_task` at most."""
    return [min(per_task, total - start) for start in range(0, total, per_task)]


def host_events(layout: Layout, today: date) -> list[dict[str, Any]]:
    """The host's webhooks that make the bench's circles and tasks.

    Small circles: `members_per_circle` hosted members each (relatives, network, staff), and
    weekly tasks of 5 occurrences making `events` occurrences inside the 8-week horizon. The
    big circle (`c-big`): two hosted relatives and daily tasks of 50 occurrences making
    `big_events` (100 tasks a day for 5 000: a size test, not a realistic circle)."""
    events: list[dict[str, Any]] = []
    first = datetime.combine(today + timedelta(days=FIRST_DAY), datetime.min.time())
    views_left = layout.views
    for c in range(layout.circles):
        citizen = f"c-{c:03}"
        size = min(layout.members_per_circle, views_left)
        views_left -= size
        members = [
            _member(f"m-{c:03}-{j}", f"Medlem {c}-{j}", ROLES[j % len(ROLES)]) for j in range(size)
        ]
        events.append(_circle(citizen, f"Borger {c}", members))
        for t, count in enumerate(_counts(layout.events, SMALL_COUNT)):
            start = first + timedelta(days=t % 7, hours=8 + (t // 7) % 10, minutes=15 * (t % 4))
            events.append(
                _task(
                    f"t-{c:03}-{t:03}", citizen, start,
                    rule=f"FREQ=WEEKLY;COUNT={count}",
                    category=CATEGORIES[t % len(CATEGORIES)], needed=1 + t % 2,
                )
            )  # fmt: skip
    if layout.big_events:
        members = [_member(f"m-big-{j}", f"Stor {j}", "relative") for j in range(2)]
        events.append(_circle("c-big", "Borger Stor", members))
        counts = _counts(layout.big_events, BIG_COUNT)
        step = timedelta(minutes=max(1, (16 * 60) // len(counts)))
        for t, count in enumerate(counts):
            start = first + timedelta(hours=6) + t * step
            events.append(
                _task(
                    f"t-big-{t:04}", "c-big", start,
                    rule=f"FREQ=DAILY;COUNT={count}",
                    category=CATEGORIES[t % len(CATEGORIES)], needed=1,
                )
            )  # fmt: skip
    return events


async def ingest(
    store: Store, settings: Settings, events: Sequence[dict[str, Any]], now: datetime
) -> None:
    """Through carecal's own webhook path: recorded in the inbox, decoded (schema-validated)
    and applied by `apply_batch`, which materialises the occurrences in the horizon."""
    items = [
        InboxItem(TENANT, f"msg_bench_{n:06}", event["type"], json.dumps(event).encode(), now)
        for n, event in enumerate(events)
    ]
    for page in range(0, len(items), 500):
        await store.accept_webhooks(items[page : page + 500])
    horizon = timedelta(weeks=settings.horizon_weeks)
    while results := await apply_batch(store, decode_entry, now=now, horizon=horizon, limit=100):
        failed = [r.entry.webhook_id for r in results if r.outcome is not Outcome.APPLIED]
        if failed:
            raise RuntimeError(f"webhooks not applied: {failed[:5]}")


def make_settings(folder: Path, dav_url: str) -> Settings:
    return validate_settings(
        {
            "server": {"public_url": "https://omsorg.bench.example"},
            "database": {"url": f"sqlite+aiosqlite:///{folder / 'carecal.db'}"},
            "calendar": {
                "type": "caldav",
                "url": dav_url + HOME,
                "username": USER,
                "password": PASSWORD,
                "server": "xandikos",
                "poll_interval_seconds": 60,
            },
            "worker": {"concurrency": CONCURRENCY},
            "logging": {"level": "WARNING"},
            "tenants": [
                {
                    "id": TENANT,
                    "webhook_secret": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
                    "api_token": secrets.token_urlsafe(24),
                }
            ],
        }
    )


def direct_settings(dav_url: str) -> CalDAVSettings:
    """The bench's own client, straight to Xandikos (set-up only, never measured): a
    listing of 5 000 ETags can take longer than carecal's 10 s request timeout here."""
    return CalDAVSettings(dav_url, USER, PASSWORD, server="xandikos", timeout_seconds=300)


def collection_of(settings: Settings, view: View) -> str:
    calendar = settings.calendar
    assert isinstance(calendar, CaldavCalendarSettings)
    return view.collection(urlsplit(calendar.url).path, calendar.collection_template)


# -- seeding the server ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    """One view's collection as carecal's first sync would write it."""

    view: View
    path: str
    name: str  # the collection's display name
    creates: tuple[Create, ...]
    inputs: str  # what the run would store in view_state: its copies' keys, its generation
    generation: int


async def plan_first_sync(store: Store, settings: Settings, view: View, now: datetime) -> Planned:
    """carecal's own first-sync plan for `view`: gather, render, plan against an empty
    collection (`view_sync`'s steps, without the writes)."""
    gathered = await view_sync._gather(store, view)
    if gathered is None:
        raise RuntimeError(f"{view} has nothing to sync")
    desired = view_sync._desired(gathered, settings, view, now=now)
    plan = plan_view_sync(desired, {}, {})
    creates = tuple(a for a in plan.actions if isinstance(a, Create))
    name = view_sync.collection_name(gathered.circle, gathered.member)
    inputs = view_sync._view_inputs(desired)
    path = collection_of(settings, view)
    return Planned(view, path, name, creates, inputs, gathered.generation)


def commit_objects(data_dir: Path, path: str, objects: Iterable[tuple[str, bytes]]) -> None:
    """Put `objects` (name, body) into one Xandikos collection in a single Git commit, the way
    Xandikos' own PUT does it (`TreeGitStore._import_one`: file, blob, index entry, commit)
    but once for all of them. Xandikos must be stopped. The bodies are stored as carecal
    rendered them; a PUT would have Xandikos re-serialise them (same content, about the same
    size), which costs ~10 ms an object here and is skipped."""
    from dulwich.index import index_entry_from_stat, locked_index
    from dulwich.objects import Blob
    from dulwich.repo import Repo

    folder = data_dir / unquote(path).strip("/")
    repo = Repo(str(folder))
    with locked_index(repo.index_path()) as index:
        blobs = []
        for name, body in objects:
            file = folder / name
            file.write_bytes(body)
            blob = Blob.from_string(body)
            blobs.append((blob, None))
            index[name.encode()] = index_entry_from_stat(os.lstat(file), blob.id)
        repo.object_store.add_objects(blobs)
        tree = index.commit(repo.object_store)
        repo.get_worktree().commit(message=b"bench: carecal's first sync, in one commit", tree=tree)


async def record_seeded(
    store: Store, direct: CalDAVClient, planned: Planned, now: datetime
) -> None:
    """What carecal's `_apply` would have stored after writing `planned`: each create's
    record with the href it wrote and the ETag the server now lists, and the view's state
    with the collection's sync token now (`_settled` keeps it when the delta since the
    token before the writes holds only carecal's own writes, as here)."""
    listing = await direct.list_etags(planned.path)
    probe = await direct.probe(planned.path)
    view = planned.view
    async with store.transaction() as tx:
        for create in planned.creates:
            href = object_href(planned.path, view_sync._object_name(create.uid))
            record = replace(create.record, href=href, etag=listing[href])
            await tx.save_view_record(view.tenant_id, view.member_id, view.citizen_id, record)
        await tx.save_view_state(
            view.tenant_id,
            view.member_id,
            view.citizen_id,
            ViewState(
                planned.path,
                probe.sync_token,
                None,
                now,
                planned.inputs,
                planned.generation,
                name=planned.name,
            ),
        )


async def seed_bulk(
    store: Store,
    settings: Settings,
    folder: Path,
    every: Sequence[View],
    copy: str | None,
    now: datetime,
) -> tuple[int, list[Planned]]:
    """`--seed bulk`: carecal plans its first sync of every view, its client makes the
    collections (MKCALENDAR), and the objects go in with one Git commit per collection while
    Xandikos is stopped. `copy`: a collection that gets the last view's objects too (the
    floor's copy of the big view). Answers the port to restart Xandikos on, and the plans."""
    planned: list[Planned] = []
    with _stopwatch(f"carecal renders and plans the first sync of {len(every)} views"):
        for view in every:
            planned.append(await plan_first_sync(store, settings, view, now))
    with xandikos_server(folder) as dav_url:
        direct = CalDAVClient(direct_settings(dav_url))
        async with direct:
            with _stopwatch("MKCALENDAR of each collection (carecal's client)"):
                for p in planned:
                    await direct.ensure_collection(p.path, p.name)
                if copy is not None:
                    await direct.ensure_collection(copy, "floor's copy")
        port = urlsplit(dav_url).port
        assert port is not None
    targets = [(p.path, p) for p in planned]
    if copy is not None:
        targets.append((copy, planned[-1]))
    objects = sum(len(p.creates) for _, p in targets)
    with _stopwatch(f"{objects} objects committed into the stopped Xandikos"):
        for path, p in targets:
            commit_objects(
                folder / "data",
                path,
                ((view_sync._object_name(c.uid), c.body) for c in p.creates),
            )
    return port, planned


async def copy_collection(direct: CalDAVClient, source: str, target: str) -> None:
    """`--seed sync`: the floor's copy of the big view, object by object (slow on Xandikos)."""
    await direct.ensure_collection(target, "floor's copy")
    hrefs = sorted(await direct.list_etags(source))
    for page in range(0, len(hrefs), 100):
        bodies = await direct.fetch(source, hrefs[page : page + 100])

        async def put(item: tuple[str, tuple[str, bytes]]) -> str | None:
            href, (_etag, body) = item
            return await direct.create(target, unquote(href.rsplit("/", 1)[-1]), body)

        await bounded(put, bodies.items())


# -- the clients -----------------------------------------------------------------------------


async def bounded(
    run: Callable[[X], Awaitable[T]], items: Iterable[X], limit: int = CONCURRENCY
) -> list[T]:
    """`run` for every item, at most `limit` at once (the worker's `worker.concurrency`)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: X) -> T:
        async with semaphore:
            return await run(item)

    return await asyncio.gather(*(one(item) for item in items))


class Carecal:
    def __init__(self, store: Store, calendars: Calendars, settings: Settings, now: datetime):
        self.store, self.calendars, self.settings, self.now = store, calendars, settings, now

    async def sync(self, view: View, probe: Probe | None = None) -> view_sync.SyncOutcome:
        return await view_sync.sync_view(
            self.store, self.calendars, self.settings, view, now=self.now, probe=probe
        )

    async def after_write(self, view: View) -> view_sync.SyncOutcome:
        """The sync of a view its member wrote to, as the job the embedded server's hook
        queues runs it (the delta first). On a polled server the job the poll queues makes
        the same requests: it has the poll's probe, which the idle round pays for."""
        return await view_sync.sync_view(
            self.store, self.calendars, self.settings, view, now=self.now, member_wrote=True
        )

    async def round(self, views: Sequence[View]) -> int:
        """One poll of every view as the worker's poll makes it (`view_sync.poll_round`,
        CONCURRENCY at a time), then the sync of every view it found something to do in (the
        worker queues those as jobs); answers how many objects the syncs wrote."""
        due = await view_sync.poll_round(
            self.store, self.calendars, views, now=self.now, concurrency=CONCURRENCY
        )
        outcomes = await bounded(lambda item: self.sync(*item), due)
        return sum(o.written + o.skipped for o in outcomes)


class MemberApp:
    """A member's calendar app, straight to the server (not through the proxy: not counted)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def accept(self, href: str) -> None:
        """PARTSTAT=ACCEPTED on the member's own ATTENDEE, written back with If-Match."""
        got = await self.client.get(href)
        got.raise_for_status()
        calendar = Calendar.from_ical(got.content)
        for event in calendar.walk("VEVENT"):
            attendee = event["ATTENDEE"]
            for one in attendee if isinstance(attendee, list) else [attendee]:
                one.params["PARTSTAT"] = "ACCEPTED"
        put = await self.client.put(
            href,
            content=calendar.to_ical(),
            headers={"If-Match": got.headers["ETag"], "Content-Type": "text/calendar"},
        )
        if put.status_code not in (200, 201, 204):
            raise RuntimeError(f"the member's write answered {put.status_code}: {put.text[:200]}")


# -- vdirsyncer ----------------------------------------------------------------------------


class Vdirsyncer:
    """vdirsyncer with one pair per collection (caldav through the proxy <-> a local vdir)."""

    def __init__(self, folder: Path, base_url: str, collections: dict[str, str]) -> None:
        self.folder = folder
        self.config = folder / "config"
        self.pairs = collections  # pair name -> collection path
        executable = Path(sys.executable).parent / "vdirsyncer"
        found = str(executable) if executable.exists() else shutil.which("vdirsyncer")
        if found is None:
            raise FileNotFoundError("vdirsyncer is not installed (pip install -e '.[bench]')")
        self.executable = found
        lines = [
            "[general]",
            f'status_path = "{folder / "status"}/"',
            "",
        ]
        for name, path in collections.items():
            local = folder / "vdir" / name
            local.mkdir(parents=True, exist_ok=True)
            lines += [
                f"[pair {name}]",
                f'a = "{name}_local"',
                f'b = "{name}_dav"',
                "collections = null",
                'conflict_resolution = "b wins"',
                "",
                f"[storage {name}_local]",
                'type = "filesystem"',
                f'path = "{local}/"',
                'fileext = ".ics"',
                "",
                f"[storage {name}_dav]",
                'type = "caldav"',
                f'url = "{base_url}{path}"',
                f'username = "{USER}"',
                f'password = "{PASSWORD}"',
                "",
            ]
        self.config.write_text("\n".join(lines), encoding="utf-8")

    def run(self, *args: str) -> None:
        env = {**os.environ, "VDIRSYNCER_CONFIG": str(self.config)}
        done = subprocess.run(
            [self.executable, "--verbosity", "WARNING", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"vdirsyncer {' '.join(args[:3])} failed ({done.returncode}):\n"
                + done.stderr.decode(errors="replace")[-2000:]
            )

    async def sync(self, *pairs: str) -> None:
        await asyncio.to_thread(self.run, "sync", *pairs)

    def version(self) -> str:
        done = subprocess.run([self.executable, "--version"], capture_output=True, check=True)
        return done.stdout.decode().strip().rsplit(" ", 1)[-1]

    def startup_ms(self, times: int = 3) -> float:
        """What starting the program costs, measured with `vdirsyncer --version`."""
        took = []
        for _ in range(times):
            started = time.perf_counter()
            subprocess.run([self.executable, "--version"], capture_output=True, check=True)
            took.append(time.perf_counter() - started)
        return statistics.median(took) * 1000


# -- the run -------------------------------------------------------------------------------

FLOOR_BIG = HOME + "bench-floor-big/"  # the floor's copy of the big view: it writes there


def _views(layout: Layout) -> list[View]:
    views = []
    left = layout.views
    for c in range(layout.circles):
        size = min(layout.members_per_circle, left)
        left -= size
        views += [View(TENANT, f"m-{c:03}-{j}", f"c-{c:03}") for j in range(size)]
    return views


@contextmanager
def _stopwatch(what: str) -> Iterator[None]:
    print(f"  {what} ...", end="", flush=True)
    started = time.perf_counter()
    yield
    print(f" {time.perf_counter() - started:.1f} s", flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.views, args.members_per_circle, args.events, args.big_events)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    scratch: AbstractContextManager[str] = (
        nullcontext(tempfile.mkdtemp(prefix="carecal-bench-sync-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="carecal-bench-sync-")
    )
    with scratch as tmp, ExitStack() as stack:
        folder = Path(tmp)
        if args.keep:
            print(f"keeping the database, Xandikos' data and vdirsyncer's files in {folder}")
        print("setting up")
        # The store and the domain first; the calendar URL (the proxy's) is known later.
        settings = make_settings(folder, "http://127.0.0.1:1")
        store = await open_store(settings, migrate=True)
        try:
            big = f" + one of {layout.big_events}" if layout.big_events else ""
            with _stopwatch(
                f"{layout.circles} circles, {layout.views} hosted members, tasks for "
                f"{layout.events} events each{big}, through the webhook inbox"
            ):
                await ingest(store, settings, host_events(layout, now.date()), now)
            return await _measure(args, layout, now, folder, store, stack)
        finally:
            await store.close()


async def _measure(
    args: argparse.Namespace,
    layout: Layout,
    now: datetime,
    folder: Path,
    store: Store,
    stack: ExitStack,
) -> dict[str, Any]:
    dav_folder = folder / "xandikos"
    views = _views(layout)
    big = View(TENANT, "m-big-0", "c-big") if layout.big_events else None
    every = views + ([big] if big is not None else [])
    # carecal and vdirsyncer measure a change in small_a; the floor, which writes, in another
    # circle's view of the same shape, and in its own copy of the big view.
    small_a, small_b = views[0], views[min(layout.members_per_circle, len(views) - 1)]

    seeded: list[Planned] = []
    port: int | None = None
    if args.seed == "bulk":
        settings = make_settings(folder, "http://127.0.0.1:1")
        copy = FLOOR_BIG if big is not None else None
        port, seeded = await seed_bulk(store, settings, dav_folder, every, copy, now)
    dav_url = stack.enter_context(xandikos_server(dav_folder, port=port))
    port = urlsplit(dav_url).port
    assert port is not None
    proxy = stack.enter_context(CountingProxy("127.0.0.1", port))
    proxied = f"http://127.0.0.1:{proxy.port}"
    settings = make_settings(folder, proxied)
    calendar = settings.calendar
    assert isinstance(calendar, CaldavCalendarSettings)
    paths = {view: collection_of(settings, view) for view in every}
    print(f"  Xandikos at {dav_url}, counted through the proxy at {proxied}")

    async with (
        CalDAVClient(direct_settings(dav_url)) as direct,
        municipal_calendar(calendar, max_connections=CONCURRENCY) as access,
        httpx.AsyncClient(
            base_url=proxied,
            auth=(USER, PASSWORD),
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
            timeout=120,
        ) as floor_http,
        httpx.AsyncClient(base_url=dav_url, timeout=120) as member_http,
    ):
        calendars = Calendars(settings, service=access, open_account=open_account)
        carecal = Carecal(store, calendars, settings, now)
        if args.seed == "bulk":
            with _stopwatch("carecal's sync records stored to match"):
                for planned in seeded:
                    await record_seeded(store, direct, planned, now)
            # A warm-up (connections, caches) on a few views. Every idle round below checks
            # on all of them that carecal finds its copies as it left them (writes nothing).
            warm = views[: 2 * CONCURRENCY]
            with _stopwatch(f"carecal syncs {len(warm)} views to warm up (must write nothing)"):
                wrote = await carecal.round(warm)
            if wrote:
                raise RuntimeError(f"carecal wrote {wrote} objects after seeding: seeding is wrong")
        else:
            with _stopwatch("carecal's first sync of every view writes the collections"):
                await carecal.round(every)
            with _stopwatch("carecal's second sync of every view (settles)"):
                await carecal.round(every)
            if big is not None:
                with _stopwatch("the floor's copy of the big view, object by object"):
                    await copy_collection(direct, paths[big], FLOOR_BIG)

        floor = Floor(floor_http)
        # The floor's stored tokens: what its own first sync would have kept.
        polled = [(paths[view], await floor.sync_token(paths[view])) for view in views]

        vdir: Vdirsyncer | None = None
        pairs: dict[View, str] = {}
        if not args.no_vdirsyncer:
            pairs = {view: f"v{n:04}" for n, view in enumerate(views)}
            if big is not None:
                pairs[big] = "big"
            vdir = Vdirsyncer(folder / "vdirsyncer", proxied, {pairs[v]: paths[v] for v in pairs})
            with _stopwatch(
                f"vdirsyncer {vdir.version()}: discover, and a first sync of {len(pairs)} pairs"
            ):
                await asyncio.to_thread(vdir.run, "discover")
                await vdir.sync()

        # carecal runs as `carecal serve` and `carecal worker` run it: with what is alive after
        # start-up out of the collector's reach and young collections rarer. Without this a
        # full collection over the seeded data lands inside a measured run now and then
        # (~45 ms in a change in 5 000 events). The floor runs in this process too.
        tune_gc()
        meter = Meter(proxy)
        print(f"measuring: {args.repeat} idle rounds per client, interleaved")
        idle_pairs = [pairs[v] for v in views if v in pairs]
        for _ in range(args.repeat):
            wrote = await meter.measure("idle", "carecal", carecal.round, views)
            if wrote:
                raise RuntimeError(f"carecal wrote {wrote} objects in an idle round")
            if any(await meter.measure("idle", "floor", floor.round, polled, CONCURRENCY)):
                raise RuntimeError("the floor saw a change in an idle round")
            if vdir is not None:
                await meter.measure("idle", "vdirsyncer", vdir.sync, *idle_pairs)
        if args.profile:
            await profiled("carecal's idle round", carecal.round(views))

        app = MemberApp(member_http)
        rows: list[tuple[str, View, str, int]] = [("change", small_a, paths[small_b], args.repeat)]
        if big is not None:
            rows.append(("change_big", big, FLOOR_BIG, args.repeat_big))
        for row, view, floor_path, repeat in rows:
            hrefs = sorted(await direct.list_etags(paths[view]))
            floor_hrefs = sorted(await direct.list_etags(floor_path))
            token = await floor.sync_token(floor_path)  # as its first sync would have kept it
            print(f"measuring: {repeat} changes in a view of {len(hrefs)} events")
            for k in range(repeat):
                # carecal, then vdirsyncer, after the member accepts event k of the view.
                await app.accept(hrefs[k])
                outcome = await meter.measure(row, "carecal", carecal.after_write, view)
                # More than one write is the domain's doing (a claim can change other copies
                # of the view); the PUT count in the table says how many.
                if not outcome.intents or not outcome.written:
                    raise RuntimeError(f"carecal's sync after one change: {outcome}")
                if vdir is not None:
                    await meter.measure(row, "vdirsyncer", vdir.sync, pairs[view])
                # The floor, in a collection of its own (carecal must not see its writes),
                # keeping the token its last change settled on, as carecal keeps its own.
                await app.accept(floor_hrefs[k])
                *_, token = await meter.measure(
                    row, "floor", floor.one_change, floor_path, token, FLOOR_WRITE
                )
            if args.profile:
                await app.accept(hrefs[repeat])
                what = f"carecal's sync after one change ({row})"
                await profiled(what, carecal.after_write(view))

        startup = vdir.startup_ms() if vdir is not None else None
        return report(layout, meter, vdir.version() if vdir else None, startup)


async def profiled(what: str, work: Awaitable[T]) -> T:
    """Run `work` under cProfile (not measured) and print where its time went."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        return await work
    finally:
        profile.disable()
        print(f"\nprofile of {what}, by cumulative time:")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)


# -- the report ------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def _verdict(value: float, target: float, *, at_most: bool) -> str:
    met = value <= target if at_most else value >= target
    return "PASS" if met else "MISS"


def _fmt_bytes(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def report(
    layout: Layout, meter: Meter, vdir_version: str | None, startup_ms: float | None
) -> dict[str, Any]:
    titles = {
        "idle": f"idle round, {layout.views} views x {layout.events} events",
        "change": f"one change, {layout.events}-event view",
        "change_big": f"one change, {layout.big_events}-event view",
    }
    names = {
        "carecal": "carecal",
        "floor": "floor (httpx)",
        "vdirsyncer": f"vdirsyncer {vdir_version}",
    }
    figures: dict[str, Any] = {"rows": {}, "targets": []}
    print()
    print(f"{'':<40} {'requests':>9} {'bytes':>12} {'ms':>9} {'other':>6}")
    for row, title in titles.items():
        found = meter.results[row]
        if not found:
            continue
        print(title)
        figures["rows"][row] = {}
        for client in CLIENTS:
            if client not in found:
                continue
            m = found[client]
            c = m.counts
            note = " (varied)" if m.varies else ""
            print(
                f"  {names[client]:<38} {c.requests:>9} {_fmt_bytes(c.bytes):>12} {m.ms:>9.1f} "
                f"{m.other_share:>6.0%}  {c.methods()}{note}"
            )
            figures["rows"][row][client] = {
                "requests": c.requests, "bytes": c.bytes, "sent": c.sent, "received": c.received,
                "by_method": c.by_method, "ms_median": m.ms,
                "ms_all": [s.seconds * 1000 for s in m.samples], "other_cpu_share": m.other_share,
            }  # fmt: skip
        if "carecal" in found and "floor" in found:
            _ratios(figures, "  carecal/floor", row, found["carecal"], found["floor"],
                    TARGET_FLOOR, at_most=True)  # fmt: skip
        if row == "idle" and "carecal" in found and "vdirsyncer" in found:
            _ratios(figures, "  vdirsyncer/carecal", row, found["vdirsyncer"], found["carecal"],
                    TARGET_VDIRSYNCER, at_most=False, requests=False)  # fmt: skip
        elif "carecal" in found and "vdirsyncer" in found:
            _ratios(figures, "  vdirsyncer/carecal", row, found["vdirsyncer"], found["carecal"],
                    None, at_most=False)  # fmt: skip
    small, big = meter.results["change"].get("carecal"), meter.results["change_big"].get("carecal")
    if small is not None and big is not None:
        print(f"size: one change in {layout.big_events} events vs in {layout.events}")
        _ratios(figures, f"  carecal {layout.big_events}/{layout.events}", "size", big, small,
                TARGET_SIZE, at_most=True)  # fmt: skip
        # Context, not a target: what the same change costs the floor at both sizes. Its
        # time grows with the collection too: the server's own work (a sync-collection
        # REPORT, a PUT) does.
        small_floor = meter.results["change"].get("floor")
        big_floor = meter.results["change_big"].get("floor")
        if small_floor is not None and big_floor is not None:
            _ratios(figures, f"  floor {layout.big_events}/{layout.events}", "size_floor",
                    big_floor, small_floor, None, at_most=True)  # fmt: skip
    print(
        "         ms = median wall time; other = CPU the rest of the machine used meanwhile, "
        "100% = one core"
    )
    busiest = max(
        (m.other_share for row in meter.results.values() for m in row.values()), default=0.0
    )
    if busiest > OTHER_BUSY:
        print(
            f"         note: other processes used up to {busiest:.0%} of a core during a "
            "measurement; wall times are depressed and noisy (the counts are not)"
        )
    if startup_ms is not None:
        print(f"         vdirsyncer's process start-up alone (`--version`): {startup_ms:.0f} ms")
        figures["vdirsyncer_startup_ms"] = startup_ms
    print()
    for target in figures["targets"]:
        if target["target"] is not None:
            print(
                f"{target['what']:<44} {target['value']:>8.2f}  target "
                f"{'<=' if target['at_most'] else '>='} {target['target']:g}: {target['verdict']}"
            )
    return figures


def _ratios(
    figures: dict[str, Any],
    label: str,
    row: str,
    a: Measured,
    b: Measured,
    target: float | None,
    *,
    at_most: bool,
    requests: bool = True,
) -> None:
    values = {
        "requests": _ratio(a.counts.requests, b.counts.requests),
        "bytes": _ratio(a.counts.bytes, b.counts.bytes),
        "time": _ratio(a.ms, b.ms),
    }
    cells = []
    for what, value in values.items():
        judged = target is not None and (requests or what != "requests")
        verdict = _verdict(value, target, at_most=at_most) if judged and target else ""
        cells.append(f"{value:.2f}{' ' + verdict if verdict else ''}")
        figures["targets"].append(
            {"what": f"{label.strip()} {what} ({row})", "value": value,
             "target": target if judged else None, "at_most": at_most, "verdict": verdict}
        )  # fmt: skip
    print(f"{label:<40} {cells[0]:>9} {cells[1]:>12} {cells[2]:>9}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync",
        description="CalDAV view sync: carecal vs the protocol floor vs vdirsyncer.",
    )
    parser.add_argument("--views", type=int, default=200, help="views in the idle round (200)")
    parser.add_argument("--members-per-circle", type=int, default=4, help="hosted members (4)")
    parser.add_argument("--events", type=int, default=50, help="events per view (50)")
    parser.add_argument(
        "--big-events", type=int, default=5000, help="the big view's (5000; 0: none)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per client and row (3)")
    parser.add_argument(
        "--repeat-big", type=int, default=3, help="runs per client in the big view (3)"
    )
    parser.add_argument(
        "--seed",
        choices=["bulk", "sync"],
        default="bulk",
        help="bulk: carecal plans its first sync, the objects go into Xandikos in one Git commit "
        "per collection (default); sync: carecal's first sync PUTs every object (slow: "
        "Xandikos commits once per PUT)",
    )
    parser.add_argument(
        "--no-vdirsyncer", action="store_true", help="measure carecal and the floor"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one more carecal change")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.events < args.repeat + 1 or args.views < 2:
        parser.error("need --repeat >= 1, --events > --repeat and --views >= 2")
    if args.big_events and args.big_events < args.repeat_big + 1:
        parser.error("--big-events must be 0 or more than --repeat-big")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}; load average {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    try:
        figures = asyncio.run(run(args))
    except RuntimeError as exc:
        print(f"\nnot measured, the figures would be meaningless: {exc}", file=sys.stderr)
        return 2
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")
    if args.json:
        figures["settings"] = {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
