"""A run that no poll probed (a change in carecal, a member's write the embedded server
announces) asks for the delta since its stored sync token straight away: the delta's answer
carries the collection's token, so it stands for DESIGN's probe, and the run makes one request
fewer (`view_sync._delta_probe`). What the probe also told a run still reaches it: a token
the server no longer takes, a collection that is gone, the citizen's new name.

On real Radicale and Xandikos; carecal's sync over SQLite, called as the worker's job calls it;
the requests are seen from carecal's own HTTP session, and a second client plays the member's
calendar app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar

from adapters.caldav.accounts import open_account
from adapters.caldav.client import CalDAVClient, CalDAVSettings, new_session
from adapters.caldav.port import NotFound
from plugin.config import Settings
from plugin.services.calendars import CalendarAccess, Calendars, View
from plugin.services.ingest import apply_batch
from plugin.services.ports import InboxItem, Store, ViewState
from plugin.services.view_sync import SyncOutcome, sync_view
from plugin.web.app import decode_entry, open_store
from tests.contract.caldav.support import PASSWORD, USER, Requests
from tests.integration.caldav.support import CPH, one_off
from tests.integration.support import circle_event, make_settings

ANNA = {"id": "m-anna", "name": "Anna", "email": "anna@example.org", "role": "relative",
        "visibility": "full", "locale": "da", "calendar": "hosted"}  # fmt: skip
VIEW = View("north", "m-anna", "c-123")


@dataclass
class Rig:
    store: Store
    settings: Settings
    calendars: Calendars
    requests: Requests
    app: CalDAVClient  # Anna's calendar app
    path: str  # her view's collection
    events: int = 0

    async def host(self, *events: dict[str, Any]) -> None:
        """The host's webhooks, recorded and applied as the worker applies them."""
        now = datetime.now(UTC)
        items = []
        for event in events:
            self.events += 1
            body = json.dumps(event).encode()
            items.append(InboxItem("north", f"msg_{self.events}", event["type"], body, now))
        await self.store.accept_webhooks(items)
        horizon = timedelta(weeks=self.settings.horizon_weeks)
        while await apply_batch(self.store, decode_entry, now=now, horizon=horizon):
            pass

    async def sync(
        self, store: Store | None = None, view: View = VIEW, *, member_wrote: bool = True
    ) -> tuple[SyncOutcome, list[tuple[str, int]]]:
        """One run of a view's sync (Anna's) as a job without a poll's probe runs it (the
        embedded server's hook's, by default: `member_wrote`), and the requests it made
        (method, status). `store`: another process's, on the same database."""
        self.requests.clear()
        outcome = await sync_view(
            store or self.store,
            self.calendars,
            self.settings,
            view,
            now=datetime.now(UTC),
            member_wrote=member_wrote,
        )
        return outcome, [(method, status) for method, _, status in self.requests.sent]

    async def restate(self, **changes: Any) -> ViewState:
        """Her view's state as another process leaves it: the stored one with `changes`,
        saved a second later; answers the one before."""
        async with self.store.transaction() as tx:
            state = await tx.get_view_state("north", "m-anna", "c-123")
            assert state is not None
            changes.setdefault("synced_at", state.synced_at + timedelta(seconds=1))
            await tx.save_view_state("north", "m-anna", "c-123", replace(state, **changes))
        return state

    async def her_copy(self) -> tuple[str, str, bytes]:
        listing = await self.app.list_etags(self.path)
        assert len(listing) == 1, listing
        [(href, (etag, body))] = (await self.app.fetch(self.path, list(listing))).items()
        assert body is not None
        return href, etag, body

    async def summary(self) -> str:
        _, _, body = await self.her_copy()
        [event] = Calendar.from_ical(body).walk("VEVENT")
        return str(event["SUMMARY"])


@pytest.fixture(params=["radicale", "xandikos"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    kind = request.param
    base = request.getfixturevalue(f"{kind}_url")
    home = f"/{USER}/" if kind == "radicale" else "/user/calendars/"
    # Each test its own collection: the servers live for the whole session.
    template = f"{tmp_path.name}~{{tenant}}~{{member}}~{{citizen}}/"
    settings = make_settings(
        tmp_path,
        calendar={
            "type": "caldav",
            "url": base + home,
            "username": USER,
            "password": PASSWORD,
            "server": kind,
            "collection_template": template,
        },
    )
    dav = CalDAVSettings(base + home, USER, PASSWORD, server=kind, timeout_seconds=10)
    requests = Requests()
    session = new_session(dav.max_connections, hooks=requests.hooks())
    store = await open_store(settings, migrate=True)
    try:
        async with (
            CalDAVClient(dav, session=session) as service,
            CalDAVClient(dav) as app,
        ):
            access = CalendarAccess(service, home, template=template, polled=True)
            calendars = Calendars(settings, service=access, open_account=open_account)
            rig = Rig(store, settings, calendars, requests, app, access.collection(VIEW))
            start = (datetime.now(CPH) + timedelta(days=7)).replace(
                hour=10, minute=0, second=0, microsecond=0, tzinfo=None
            )
            await rig.host(circle_event(1, [ANNA]), one_off(start))
            yield rig
    finally:
        await session.close()
        await store.close()


def with_partstat(body: bytes, partstat: str) -> bytes:
    calendar = Calendar.from_ical(body)
    for event in calendar.walk("VEVENT"):
        event["ATTENDEE"].params["PARTSTAT"] = partstat
    return calendar.to_ical()


async def settled(rig: Rig) -> None:
    """Her view written, and a run after it that finds nothing to do."""
    outcome, _ = await rig.sync()
    assert outcome.written == 1
    assert await rig.summary() == "[Ledig] Indkøb"
    outcome, _ = await rig.sync()
    assert outcome.written == 0


async def test_an_idle_run_and_a_members_answer_ask_for_the_delta_first(rig: Rig) -> None:
    await settled(rig)
    outcome, sent = await rig.sync()
    assert outcome == SyncOutcome()
    assert sent == [("REPORT", 207)]  # the delta, empty: no PROPFIND before it

    href, etag, body = await rig.her_copy()
    await rig.app.update(href, with_partstat(body, "ACCEPTED"), etag)
    outcome, sent = await rig.sync()
    assert outcome.written == 1 and len(outcome.intents) == 1
    # The delta, the multiget of her copy, its write back, and the delta that lets the next
    # run keep a token: the floor's four requests and the settling one, no probe.
    assert [method for method, _ in sent] == ["REPORT", "REPORT", "PUT", "REPORT"]
    assert await rig.summary() == "[Dig] Indkøb"
    async with rig.store.reading() as tx:
        [[record]] = (await tx.occurrences_of_citizen("north", "c-123")).values()
    assert [(c.member_id, c.channel) for c in record.claims] == [("m-anna", "caldav")]
    outcome, sent = await rig.sync()
    assert (outcome.written, sent) == (0, [("REPORT", 207)])


async def test_a_token_the_server_no_longer_takes_is_asked_for_once(rig: Rig) -> None:
    """The delta refused (Radicale: 403, Xandikos: 500, each with DAV:valid-sync-token): the
    run probes for the markers, then lists every ETag, and asks for no delta again. Her
    answer in between is taken."""
    await settled(rig)
    state = await rig.restate(sync_token="0" * 40)  # a token the server never issued
    assert state.sync_token
    href, etag, body = await rig.her_copy()
    await rig.app.update(href, with_partstat(body, "ACCEPTED"), etag)
    outcome, sent = await rig.sync()
    assert outcome.written == 1 and len(outcome.intents) == 1
    # One refusal, then the probe and the listing. (Beside them: the delta this process
    # guessed from the state its last run kept, `_Guess`, let go: the store holds another.)
    [at] = [n for n, (_, status) in enumerate(sent) if status not in (200, 201, 204, 207)]
    assert sent[at][0] == "REPORT", sent
    assert [method for method, _ in sent[at:] if method == "PROPFIND"] == ["PROPFIND"] * 2
    assert await rig.summary() == "[Dig] Indkøb"
    async with rig.store.reading() as tx:
        state = await tx.get_view_state("north", "m-anna", "c-123")
    assert state is not None and state.sync_token not in (None, "0" * 40)


async def test_a_collection_the_member_deleted_is_made_again(rig: Rig) -> None:
    await settled(rig)
    await rig.app.delete_collection(rig.path)
    with pytest.raises(NotFound):
        await rig.app.list_etags(rig.path)
    outcome, sent = await rig.sync()
    # The delta finds nothing there; the probe the run makes then (re)creates it.
    assert sent[0] == ("REPORT", 404) and ("MKCALENDAR", 201) in sent, sent
    assert outcome.written == 1
    assert await rig.summary() == "[Ledig] Indkøb"


async def test_the_citizens_new_name_reaches_the_collection(rig: Rig) -> None:
    """The name is the one thing the probe read that the delta does not answer: a run whose
    view's name changed reads the collection's once, and renames it."""
    await settled(rig)
    before = (await rig.app.probe(rig.path)).display_name
    assert before is not None and "Fru Jensen" in before
    renamed = circle_event(2, [ANNA])
    renamed["data"]["citizen"]["display_name"] = "Fru Hansen"
    await rig.host(renamed)
    outcome, sent = await rig.sync()
    assert [m for m, _ in sent[:2]] == ["REPORT", "PROPFIND"], sent
    after = (await rig.app.probe(rig.path)).display_name
    assert after == before.replace("Fru Jensen", "Fru Hansen")
    outcome, sent = await rig.sync()
    assert (outcome.written, sent) == (0, [("REPORT", 207)])


# --- what the last run rendered from ---------------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each read of a citizen's tasks, as the view's whole read makes it (`_gather`)."""
    from adapters.store.sql_tx import SqlTx

    seen: list[str] = []
    real = SqlTx.list_tasks

    async def counted(self: SqlTx, tenant_id: str, citizen_id: str) -> Any:
        seen.append(citizen_id)
        return await real(self, tenant_id, citizen_id)

    monkeypatch.setattr(SqlTx, "list_tasks", counted)
    return seen


async def test_the_next_run_reads_only_the_records_until_something_changes(
    rig: Rig, reads: list[str]
) -> None:
    """A run keeps what it rendered from (`view_sync._Known`); the view's next run, finding
    the generation and the state that run left, reads only its records. A change in carecal
    (the host moves the task: the view's generation moves) is read whole, and rendered."""
    await settled(rig)
    reads.clear()
    href, etag, body = await rig.her_copy()
    await rig.app.update(href, with_partstat(body, "ACCEPTED"), etag)
    outcome, _ = await rig.sync()
    assert outcome.written == 1 and len(outcome.intents) == 1
    assert reads == []  # her answer's run: the records, not the circle's tasks again
    assert await rig.summary() == "[Dig] Indkøb"

    later = (datetime.now(CPH) + timedelta(days=8)).replace(
        hour=12, minute=0, second=0, microsecond=0, tzinfo=None
    )
    await rig.host(one_off(later, version=2))
    outcome, _ = await rig.sync()
    assert reads == ["c-123"] and outcome.written
    _, _, body = await rig.her_copy()
    [event] = Calendar.from_ical(body).walk("VEVENT")
    assert event.decoded("DTSTART").replace(tzinfo=None) == later


async def test_a_state_saved_elsewhere_makes_the_run_read_the_view_whole(
    rig: Rig, reads: list[str]
) -> None:
    """Another process (a second worker, `carecal worker` beside `carecal serve`) that synced
    the view saved a state of its own: what this process kept is not taken."""
    await settled(rig)
    await rig.restate()  # another process synced the view
    reads.clear()
    href, etag, body = await rig.her_copy()
    await rig.app.update(href, with_partstat(body, "ACCEPTED"), etag)
    outcome, _ = await rig.sync()
    assert outcome.written == 1 and reads == ["c-123"]
    assert await rig.summary() == "[Dig] Indkøb"


async def test_a_delta_guessed_from_a_state_gone_by_is_let_go_once(rig: Rig) -> None:
    """A run starts the delta on the state its process's last run kept, before the store
    has answered (`view_sync._Guess`). When the store holds another state (another process
    synced the view), the guess is let go, the run asks from the stored token, and the
    process guesses no more from what it kept."""
    await settled(rig)
    await rig.restate()  # another process synced the view
    outcome, sent = await rig.sync()
    assert outcome == SyncOutcome()
    # The run's own delta, and the guess's, unless it was cancelled before its answer came.
    assert sent in ([("REPORT", 207)], [("REPORT", 207)] * 2), sent
    for _ in range(2):  # no more guesses from the state gone by
        outcome, sent = await rig.sync()
        assert (outcome, sent) == (SyncOutcome(), [("REPORT", 207)])


async def test_a_run_stopped_between_its_records_and_its_state_loses_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records are kept while the server answers the delta that settles the token, and
    the state after them (`view_sync._apply`). A run stopped in between leaves the new
    records beside the old token: the next run sees its own write again, and nothing else
    (no second claim, no write)."""
    from plugin.services import view_sync

    await settled(rig)
    real = view_sync._settled

    async def stopped(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise RuntimeError("stopped")

    monkeypatch.setattr(view_sync, "_settled", stopped)
    href, etag, body = await rig.her_copy()
    await rig.app.update(href, with_partstat(body, "ACCEPTED"), etag)
    with pytest.raises(RuntimeError, match="stopped"):
        await rig.sync()
    monkeypatch.setattr(view_sync, "_settled", real)
    async with rig.store.reading() as tx:
        records = await tx.list_view_records("north", "m-anna", "c-123")
        state = await tx.get_view_state("north", "m-anna", "c-123")
    _, written_etag, _ = await rig.her_copy()
    assert [r.etag for r in records.values()] == [written_etag]  # the write's record kept
    assert state is not None
    outcome, sent = await rig.sync()
    assert outcome.written == 0 and outcome.intents == ()
    # The delta holds only its own write, which the run takes for the echo it is (fetched
    # with the delta all the same, before the records were read: `_prefetch`); no write.
    assert sent == [("REPORT", 207)] * 2
    assert await rig.summary() == "[Dig] Indkøb"
    async with rig.store.reading() as tx:
        [[record]] = (await tx.occurrences_of_citizen("north", "c-123")).values()
        after = await tx.get_view_state("north", "m-anna", "c-123")
    assert [c.member_id for c in record.claims] == ["m-anna"]
    assert after is not None and after.sync_token != state.sync_token


def moved(version: int) -> dict[str, Any]:
    """The host moves the one-off task to another day (version `version`)."""
    start = (datetime.now(CPH) + timedelta(days=7 + version)).replace(
        hour=10, minute=0, second=0, microsecond=0, tzinfo=None
    )
    return one_off(start, version=version)


async def test_two_processes_taking_turns_on_a_view_guess_no_more_than_once_each(
    rig: Rig,
) -> None:
    """`carecal serve` and `carecal worker` (or two workers) syncing one view by turns: each
    lets one guess go, the first time it finds the other's state, and guesses no more."""
    await settled(rig)
    other = await open_store(rig.settings, migrate=False)
    try:
        await rig.host(moved(2))
        _, alone = await rig.sync(other)  # its first run: nothing kept, nothing guessed
        alone = sorted(alone)
        for version, store in [(3, rig.store), (4, other)]:
            await rig.host(moved(version))
            outcome, sent = await rig.sync(store)  # a guess let go, maybe answered first
            assert outcome.written and len(sent) - len(alone) in (0, 1, 2), sent
        for version, store in [(5, rig.store), (6, other), (7, rig.store), (8, other)]:
            await rig.host(moved(version))
            outcome, sent = await rig.sync(store)
            assert outcome.written and sorted(sent) == alone, (version, sent)
    finally:
        await other.close()


async def test_a_guess_let_go_holds_up_nothing_when_the_server_stops_answering(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guessed delta that will not be taken is cancelled, not waited for: the run goes on
    with its own though the guess's answer never comes."""
    await settled(rig)
    await rig.restate()  # another process synced the view
    service = rig.calendars.service
    assert service is not None
    real = service.client.changes_since
    calls: list[str | None] = []

    async def first_never_answered(path: str, sync_token: str | None) -> Any:
        calls.append(sync_token)
        if len(calls) == 1:  # the guess's
            await asyncio.Event().wait()
        return await real(path, sync_token)

    monkeypatch.setattr(service.client, "changes_since", first_never_answered)
    async with asyncio.timeout(5):
        outcome, _ = await rig.sync()
    assert outcome == SyncOutcome() and len(calls) == 2


async def test_a_run_stopped_at_its_first_step_lets_the_stores_read_finish(rig: Rig) -> None:
    await settled(rig)
    run = asyncio.create_task(rig.sync())
    await asyncio.sleep(0)  # the run starts the store's read, and yields once
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    left = [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "_gather" in repr(task.get_coro())
    ]
    assert left == []


async def test_a_pass_in_her_calendar_queues_the_circles_other_views(rig: Rig) -> None:
    """Anna declines: her copy reads DECLINED, and she leaves the offer's pool, so whom the
    others' copies suggest (`[Forslag]`) may change: their views are queued too."""
    bo = {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "full",
          "locale": "da", "calendar": "hosted"}  # fmt: skip
    await rig.host(circle_event(2, [ANNA, bo]))
    await settled(rig)
    await rig.sync(view=View("north", "m-bo", "c-123"))
    await queued_views(rig.store)  # what the circle's change queued: done
    href, etag, body = await rig.her_copy()
    await rig.app.update(href, with_partstat(body, "DECLINED"), etag)
    outcome, _ = await rig.sync()
    assert len(outcome.intents) == 1
    assert await queued_views(rig.store) == ["m-bo"]


async def queued_views(store: Store) -> list[str]:
    """The members whose view syncs are queued, each job taken and finished."""
    jobs = await store.lease_jobs(
        "t", now=datetime.now(UTC) + timedelta(days=1), limit=50, lease_seconds=9
    )
    for job in jobs:
        await store.finish_job(job.id, "t")
    return sorted(str(job.payload["member_id"]) for job in jobs if job.kind == "view.sync")


async def test_a_change_in_carecal_probes_first(rig: Rig) -> None:
    """A run for a change in carecal (the host moves the task): the member most likely wrote
    nothing, and an empty delta can cost a server far more than a probe (Xandikos, 5 000
    events: ~35 ms against ~3), so the run probes first, and asks for no delta when the
    markers are the kept ones."""
    await settled(rig)
    await rig.host(moved(2))
    outcome, sent = await rig.sync(member_wrote=False)
    assert outcome.written
    assert sent[0] == ("PROPFIND", 207), sent
    assert [m for m, _ in sent].count("REPORT") == 1, sent  # the settling delta alone
