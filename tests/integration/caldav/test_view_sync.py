"""View sync end to end: host events in, each hosted member's calendar collection on the
embedded Radicale out. carecal runs under uvicorn with its worker; a real CalDAV client plays
the member's calendar app."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from icalendar import Calendar

from adapters.caldav.port import CalendarUnavailable, Forbidden, NotFound
from plugin.services.ingest import apply_batch
from plugin.sync.fingerprint import prop_values
from plugin.web.app import decode_entry, open_store
from tests.integration.caldav.support import (
    CPH,
    Served,
    calendar_app,
    eventually,
    issue,
    one_off,
    serve_with_worker,
)
from tests.integration.support import auth, circle_event, post_event

ANNA = {"id": "m-anna", "name": "Anna", "email": "anna@example.org", "role": "relative",
        "visibility": "full", "locale": "da", "calendar": "hosted"}  # fmt: skip
BO = {"id": "m-bo", "name": "Bo", "role": "relative", "visibility": "limited", "locale": "da",
      "calendar": "hosted"}  # fmt: skip
ANNA_VIEW = "/dav/north~m-anna/c-123/"
BO_VIEW = "/dav/north~m-bo/c-123/"


async def anna_and_bo_with_one_task(
    http: httpx.AsyncClient,
) -> tuple[dict[str, str], dict[str, str], datetime]:
    """A circle of two hosted relatives, their credentials, and a one-off task next week."""
    assert (await post_event(http, circle_event(1, [ANNA, BO]))).status_code == 202
    anna, bo = await issue(http, "m-anna"), await issue(http, "m-bo")
    start = (datetime.now(CPH) + timedelta(days=7)).replace(
        hour=10, minute=0, second=0, microsecond=0, tzinfo=None
    )
    assert (await post_event(http, one_off(start))).status_code == 202
    return anna, bo, start


async def test_hosted_members_get_the_circle_in_their_calendar(
    served: Served, http: httpx.AsyncClient
) -> None:
    anna, bo, start = await anna_and_bo_with_one_task(http)

    async with calendar_app(served, anna) as calendars:

        async def events() -> list[Any] | None:
            try:
                listing = await calendars.list_etags(ANNA_VIEW)
            except NotFound:
                return None
            if len(listing) != 1:
                return None
            fetched = await calendars.fetch(ANNA_VIEW, list(listing))
            found = [
                e for _, body in fetched.values() for e in Calendar.from_ical(body).walk("VEVENT")
            ]
            return found

        async def copy_at(local_start: datetime) -> Any:
            found = await events()
            if not found or found[0].decoded("DTSTART").replace(tzinfo=None) != local_start:
                return None
            return found[0]

        event = await eventually(lambda: copy_at(start))
        assert str(event["SUMMARY"]) == "[Ledig] Indkøb"
        attendees = prop_values(event, "ATTENDEE")
        assert [str(a) for a in attendees] == ["mailto:anna@example.org"]
        assert attendees[0].params["PARTSTAT"] == "NEEDS-ACTION"
        assert str(event["STATUS"]) == "TENTATIVE"

        # The host moves the task: Anna's copy follows (one copy, at the new time).
        moved = start + timedelta(hours=2)
        assert (await post_event(http, one_off(moved, version=2))).status_code == 202
        event = await eventually(lambda: copy_at(moved))
        assert str(event["SUMMARY"]) == "[Ledig] Indkøb"

    async with calendar_app(served, bo) as calendars:
        assert len(await calendars.list_etags(BO_VIEW)) == 1

        # The citizen removes Bo from the circle, his only one: his collection goes, and so
        # does his login.
        assert (await post_event(http, circle_event(2, [ANNA]))).status_code == 202
        folder = served.settings.calendar.folder / "collection-root" / "north~m-bo" / "c-123"

        async def gone() -> bool | None:
            return None if folder.exists() else True

        assert await eventually(gone)
        with pytest.raises(Forbidden):
            await calendars.list_etags(BO_VIEW)


async def test_an_id_that_would_name_a_members_whole_home_is_refused_and_loses_nothing(
    served: Served, http: httpx.AsyncClient
) -> None:
    """A citizen id "." made Anna's view `/dav/north~m-anna/./`, which HTTP clients send as
    her whole home: when her delivery later changed, carecal deleted every calendar in it,
    every circle's. The webhook refuses such ids at the field (422), and nothing of hers
    goes."""
    anna, _, _ = await anna_and_bo_with_one_task(http)
    async with calendar_app(served, anna) as calendars:

        async def her_copy() -> bool | None:
            try:
                return len(await calendars.list_etags(ANNA_VIEW)) == 1 or None
            except NotFound:
                return None

        assert await eventually(her_copy)
        feed = dict(ANNA, calendar="feed")
        for citizen in (".", ".."):
            for version, anna_as in ((1, ANNA), (2, feed)):
                response = await post_event(http, circle_event(version, [anna_as], citizen))
                assert response.status_code == 422, response.text
                errors = response.json()["errors"]
                assert [e["loc"] for e in errors] == [["data", "citizen", "id"]]
        response = await post_event(http, one_off(datetime(2027, 3, 16, 10), citizen_id=".."))
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["errors"]] == [["data", "citizen_id"]]
        await asyncio.sleep(0.5)  # the worker looks every 50 ms: nothing for it to do
        assert await her_copy()


async def test_records_kept_before_their_marks_get_them_without_a_write(
    served: Served, http: httpx.AsyncClient
) -> None:
    """Sync records from before they kept their copies' advice marks (migration 0014: NULL)
    get them on the view's next sync, with no write to the member's calendar; a gesture then
    keys only the copies it changes (`view_sync._desired` with the copies as recorded)."""
    from dataclasses import replace

    from plugin.web.app import open_store

    anna, _, start = await anna_and_bo_with_one_task(http)
    store = await open_store(served.settings, migrate=False)
    try:
        async with calendar_app(served, anna) as anna_app:
            href, etag, _, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))

            async def annas_records() -> dict[str, Any]:
                async with store.reading() as tx:
                    return await tx.list_view_records("north", "m-anna", "c-123")

            async with store.transaction() as tx:
                for record in (await annas_records()).values():
                    assert record.marks is not None  # a sync now keeps them
                    unmarked = replace(record, marks=None)
                    await tx.save_view_record("north", "m-anna", "c-123", unmarked)
            assert [r.marks for r in (await annas_records()).values()] == [None]

            # Another task: Anna's view is synced; her first copy is as it was.
            later = one_off(start + timedelta(days=1), id="t-2")
            assert (await post_event(http, later)).status_code == 202

            async def all_marked() -> bool | None:
                records = await annas_records()
                marked = len(records) == 2 and all(r.marks is not None for r in records.values())
                return True if marked else None

            await eventually(all_marked)
            assert (await anna_app.list_etags(ANNA_VIEW))[href] == etag  # not written again
    finally:
        await store.close()


def with_partstat(body: bytes, partstat: str) -> bytes:
    """What a calendar app sends when the member answers the invitation."""
    calendar = Calendar.from_ical(body)
    for event in calendar.walk("VEVENT"):
        for attendee in prop_values(event, "ATTENDEE"):
            attendee.params["PARTSTAT"] = partstat
    return bytes(calendar.to_ical())


def copy_reading(calendars: Any, view: str, summary: str) -> Callable[[], Awaitable[Any]]:
    """Probe: (href, etag, body, event) of the copy in `view` whose SUMMARY is `summary`."""

    async def probe() -> tuple[str, str, bytes, Any] | None:
        try:
            listing = await calendars.list_etags(view)
        except NotFound:
            return None
        for href, (etag, body) in (await calendars.fetch(view, list(listing))).items():
            event = Calendar.from_ical(body).walk("VEVENT")[0]
            if str(event["SUMMARY"]) == summary:
                return href, etag, body, event
        return None

    return probe


class AnnasReads:
    """Stands in for `view_sync._gather`: once `armed`, notes whether each read of Anna's
    view found her copies as recorded (`_Gathered.recorded`)."""

    def __init__(self, real: Callable[..., Awaitable[Any]]) -> None:
        self.real = real
        self.armed = False
        self.recorded: list[bool] = []

    def arm(self) -> None:
        self.armed = True

    async def __call__(self, store: Any, view: Any, **kwargs: Any) -> Any:
        found = await self.real(store, view, **kwargs)
        if found is not None and view.member_id == "m-anna" and self.armed:
            self.recorded.append(found.recorded)
        return found


async def anna_accepts_and_bo_sees_it(
    served: Served, http: httpx.AsyncClient, *, arm: Callable[[], object]
) -> None:
    """Anna and Bo offered one task; `arm` is called, then Anna accepts in her calendar app,
    and both copies show her claim."""
    anna, bo, _ = await anna_and_bo_with_one_task(http)
    async with calendar_app(served, anna) as anna_app, calendar_app(served, bo) as bo_app:
        href, etag, body, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))
        await eventually(copy_reading(bo_app, BO_VIEW, "[Ledig] Indkøb"))
        arm()
        await anna_app.update(href, with_partstat(body, "ACCEPTED"), etag)
        await eventually(copy_reading(anna_app, ANNA_VIEW, "[Dig] Indkøb"))
        await eventually(copy_reading(bo_app, BO_VIEW, "[Anna] Indkøb"))


async def test_accepting_in_the_calendar_claims_first_come_first_served(
    served: Served, http: httpx.AsyncClient
) -> None:
    anna, bo, _ = await anna_and_bo_with_one_task(http)

    async with calendar_app(served, anna) as anna_app, calendar_app(served, bo) as bo_app:
        href, etag, body, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))
        await eventually(copy_reading(bo_app, BO_VIEW, "[Ledig] Indkøb"))

        # Anna accepts in her calendar app: she holds it, and Bo's copy says so.
        await anna_app.update(href, with_partstat(body, "ACCEPTED"), etag)
        _, _, _, bo_event = await eventually(copy_reading(bo_app, BO_VIEW, "[Anna] Indkøb"))
        assert str(bo_event["STATUS"]) == "CONFIRMED"
        task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
        claims = task["occurrences"][0]["claims"]
        assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "caldav")]
        _, _, _, anna_event = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Dig] Indkøb"))
        assert prop_values(anna_event, "ATTENDEE")[0].params["PARTSTAT"] == "ACCEPTED"

        # Bo accepts too, too late: refused, and his copy is put back as taken.
        bo_href, bo_etag, bo_body, _ = await eventually(
            copy_reading(bo_app, BO_VIEW, "[Anna] Indkøb")
        )
        # (once restored the copy may be byte for byte what it was, ETag included)
        await bo_app.update(bo_href, with_partstat(bo_body, "ACCEPTED"), bo_etag)

        async def restored() -> Any:
            found = await copy_reading(bo_app, BO_VIEW, "[Anna] Indkøb")()
            if found is None:
                return None
            attendee = prop_values(found[3], "ATTENDEE")[0]
            return found if attendee.params["PARTSTAT"] == "NEEDS-ACTION" else None

        _, _, _, bo_event = await eventually(restored)
        assert str(bo_event["STATUS"]) == "CONFIRMED"
        task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
        claims = task["occurrences"][0]["claims"]
        assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "caldav")]


async def test_a_claim_that_moves_her_other_suggestions_writes_them_in_the_same_run(
    served: Served, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """Anna has more room than Bo, so a week of daily offers is suggested to her
    (`[Forslag]`). She accepts one: the run writes her copy first and works out the whole
    window's advice while that write is in flight; the suggestions it moved to Bo are written
    right after, in the same run, and the view is left as a whole render would leave it."""
    from adapters.caldav.client import CalDAVClient
    from plugin.services import view_sync

    reads: list[bool] = []
    steps: list[str] = []  # Anna's view's writes and whole-window advice, in order
    real_gather, real_advice, real_update = (
        view_sync._gather,
        view_sync.member_advice,
        CalDAVClient.update,
    )

    async def gather(store: Any, view: Any, **kwargs: Any) -> Any:
        found = await real_gather(store, view, **kwargs)
        if view.member_id == "m-anna" and found is not None:
            reads.append(found.recorded)
        return found

    def advice(circle: Any, member: Any, *args: Any, **kwargs: Any) -> Any:
        if member.id == "m-anna" and kwargs.get("only") is None:
            steps.append("advice")
        return real_advice(circle, member, *args, **kwargs)

    tests = threading.get_ident()  # the calendar app's requests are made from this thread

    async def update(self: CalDAVClient, href: str, body: bytes, if_match: str) -> Any:
        if "m-anna" in href and threading.get_ident() != tests:
            steps.append("write")
        return await real_update(self, href, body, if_match)

    monkeypatch.setattr(view_sync, "_gather", gather)
    monkeypatch.setattr(view_sync, "member_advice", advice)
    monkeypatch.setattr(CalDAVClient, "update", update)
    anna_m = {**ANNA, "capacity": {"hours_per_week": 3, "tasks_per_week": 2}}
    bo_m = {**BO, "capacity": {"hours_per_week": 1, "tasks_per_week": 1}}
    assert (await post_event(http, circle_event(1, [anna_m, bo_m]))).status_code == 202
    anna = await issue(http, "m-anna")
    start = (datetime.now(CPH) + timedelta(days=1)).replace(
        hour=10, minute=0, second=0, microsecond=0, tzinfo=None
    )
    daily = one_off(start, recurrence="FREQ=DAILY;COUNT=6")
    assert (await post_event(http, daily)).status_code == 202

    async with calendar_app(served, anna) as app:

        async def titles() -> dict[str, tuple[str, str, str, bytes]] | None:
            listing = await app.list_etags(ANNA_VIEW)
            fetched = await app.fetch(ANNA_VIEW, list(listing))
            found = {}
            for href, (etag, body) in fetched.items():
                event = Calendar.from_ical(body).walk("VEVENT")[0]
                found[str(event["UID"])] = (str(event["SUMMARY"]), href, etag, body)
            return found if len(found) == 6 else None

        async def all_suggested() -> dict[str, tuple[str, str, str, bytes]] | None:
            found = await titles()
            if found and {t for t, *_ in found.values()} == {"[Forslag] Indkøb"}:
                return found
            return None

        offered = await eventually(all_suggested)
        first = min(offered)  # tomorrow's
        _, href, etag, body = offered[first]
        reads.clear()
        steps.clear()
        await app.update(href, with_partstat(body, "ACCEPTED"), etag)

        async def settled() -> dict[str, str] | None:
            found = await titles()
            if found is None:
                return None
            summaries = {uid: title for uid, (title, *_) in found.items()}
            return None if "[Forslag] Indkøb" in summaries.values() else summaries

        # Her share of the circle's hours is all of it now: the other offers are Bo's to be
        # suggested.
        summaries = await eventually(settled)
        assert summaries == {uid: "[Ledig] Indkøb" for uid in summaries} | {first: "[Dig] Indkøb"}
    # They were written in the run of her answer (her view read once since, as recorded), not
    # by a later one; her own copy went first, before the whole window's advice was worked out.
    assert reads == [True], reads
    assert steps == ["write", "advice"] + ["write"] * 5, steps


async def test_a_members_answer_is_fetched_while_the_store_reads_her_view(
    served: Served, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """Anna's answer, told by the embedded server's hook (so her view's run has no poll's
    probe): the run reads her view from the store while it probes the collection, asks for
    the delta and fetches her copy. Here that read is held, once it has peeked at her view,
    until her copy was fetched: a run that fetched only after the read would hold it for
    good (it gives up after 5 s, and the test fails). Her claim goes through as ever."""
    from adapters.caldav.client import CalDAVClient
    from adapters.store.sql_tx import SqlTx

    tests = threading.get_ident()  # the calendar apps' requests are made from this thread
    armed, fetched = threading.Event(), threading.Event()
    waited: list[bool] = []
    real_fetch, real_records = CalDAVClient.fetch, SqlTx.list_view_records

    async def fetch(self: CalDAVClient, path: str, hrefs: Any) -> Any:
        if armed.is_set() and threading.get_ident() != tests and "m-anna" in path:
            fetched.set()
        return await real_fetch(self, path, hrefs)

    async def records(self: SqlTx, tenant_id: str, member_id: str, citizen_id: str) -> Any:
        if armed.is_set() and member_id == "m-anna" and not waited:
            waited.append(False)
            waited[0] = await asyncio.to_thread(fetched.wait, 5)
        return await real_records(self, tenant_id, member_id, citizen_id)

    monkeypatch.setattr(CalDAVClient, "fetch", fetch)
    monkeypatch.setattr(SqlTx, "list_view_records", records)
    await anna_accepts_and_bo_sees_it(served, http, arm=armed.set)
    assert waited == [True]


async def test_a_sync_stopped_between_the_claim_and_its_write_is_finished_by_the_next(
    served: Served, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """A crash mid-sync: Anna's claim is committed, then the run dies before it writes. The
    claim stands; the job's next run reads her view whole (the claim changed what the view
    is rendered from, so the copies must not be taken as recorded) and writes her copy."""
    from plugin.services import view_sync

    reads = AnnasReads(view_sync._gather)
    died: list[str] = []
    real_apply = view_sync._apply

    async def dying_apply(
        store: Any, client: Any, path: str, view: Any, *rest: Any, **kwargs: Any
    ) -> Any:
        if reads.armed and view.member_id == "m-anna" and not died:
            died.append(view.member_id)
            raise RuntimeError("the process stopped here")
        return await real_apply(store, client, path, view, *rest, **kwargs)

    monkeypatch.setattr(view_sync, "_gather", reads)
    monkeypatch.setattr(view_sync, "_apply", dying_apply)
    await anna_accepts_and_bo_sees_it(served, http, arm=reads.arm)
    assert died == ["m-anna"]
    task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
    claims = task["occurrences"][0]["claims"]
    assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "caldav")]
    # The dead run: one read, its copies as recorded (it renders the claim from that read,
    # patched). The next run's read is not as recorded: the claim bumped the generation.
    assert reads.recorded[:2] == [True, False], reads.recorded


class DiesOnceAfterLink:
    """`view_sync._apply` for Anna's view, armed: once, it does `ask` through her claim link
    (what she did meanwhile, elsewhere) and fails as if her server went away, before her run
    writes anything back or records its copies; otherwise the real one."""

    def __init__(self, ask: Any) -> None:
        from plugin.services import view_sync

        self.ask, self.armed, self.died = ask, False, False
        self._real = view_sync._apply

    async def __call__(
        self, store: Any, client: Any, path: str, view: Any, *rest: Any, **kwargs: Any
    ) -> Any:
        from plugin.services.claiming import decide

        if view.member_id == "m-anna" and self.armed and not self.died:
            self.died = True
            async with store.transaction() as tx:
                occurrence = (await tx.get_occurrences("north", "t-1"))[0].occurrence.id
                await decide(
                    tx, "north", occurrence, "m-anna", self.ask, channel="link",
                    now=datetime.now(UTC),
                )  # fmt: skip
            raise CalendarUnavailable("her calendar server went away")
        return await self._real(store, client, path, view, *rest, **kwargs)


async def test_a_run_that_failed_after_her_answer_never_reads_it_again(
    served: Served, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """Anna accepts in her calendar; the run claims, then fails before it writes her copy (her
    server went away). Meanwhile she releases through her claim link. The job's next run must
    not read her old "yes" as new and claim again: the claim's transaction kept the answer it
    read (before, the retry claimed the task back from under the release)."""
    from plugin.services import view_sync
    from plugin.services.claiming import Ask

    dying = DiesOnceAfterLink(Ask.RELEASE)  # her release through the link, meanwhile
    monkeypatch.setattr(view_sync, "_apply", dying)
    anna, _, _ = await anna_and_bo_with_one_task(http)
    async with calendar_app(served, anna) as anna_app:
        href, etag, body, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))
        dying.armed = True
        await anna_app.update(href, with_partstat(body, "ACCEPTED"), etag)

        async def released_and_written() -> bool | None:
            task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
            if task["occurrences"][0]["claims"]:
                return None
            found = await anna_app.fetch(ANNA_VIEW, [href])
            return True if b"NEEDS-ACTION" in found[href][1] else None

        await eventually(released_and_written, within=10)  # the retry wrote it back
        await asyncio.sleep(0.5)  # and nothing after it claims again
    assert dying.died
    task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
    assert task["occurrences"][0]["claims"] == []
    assert task["occurrences"][0]["status"] == "open"


async def test_a_run_that_failed_after_her_deletion_never_reads_it_again(
    served: Served, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """The same for a deleted copy (a pass): Anna holds the task and deletes her copy; the
    run releases it, then fails before it records anything else; meanwhile she takes it again
    through her claim link. The retry must not read the old deletion again and release it."""
    from plugin.services import view_sync
    from plugin.services.claiming import Ask

    dying = DiesOnceAfterLink(Ask.CLAIM)  # her claim through the link, meanwhile
    monkeypatch.setattr(view_sync, "_apply", dying)
    anna, _, _ = await anna_and_bo_with_one_task(http)
    async with calendar_app(served, anna) as anna_app:
        href, etag, body, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))
        await anna_app.update(href, with_partstat(body, "ACCEPTED"), etag)
        href, etag, _, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Dig] Indkøb"))
        dying.armed = True
        await anna_app.delete(href, etag)

        store = await open_store(served.settings, migrate=False)
        try:

            async def retried() -> bool | None:  # the failed run's retry, after its backoff
                counts = await store.job_counts()
                idle = counts["queued"] == counts["running"] == 0
                return True if dying.died and idle else None

            await eventually(retried, within=10)
        finally:
            await store.close()
    assert dying.died
    task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
    claims = task["occurrences"][0]["claims"]
    assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "link")]


async def test_a_host_change_between_the_read_and_the_claim_is_in_the_same_run(
    served: Served, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """The run that reads Anna's gesture renders from its one read, with the claimed
    occurrence read again (`_patched`), only when nothing else changed her view meanwhile.
    Here the host gives the task a place after the run read the view and before it applies
    her claim: the run reads the view again and writes her copy with the place."""
    from plugin.services import view_sync

    reads = AnnasReads(view_sync._gather)
    moved_between: list[str] = []
    PLACE = "Netto, Nørregade 1"
    real_apply_intents = view_sync._apply_intents

    async def host_moves_first(store: Any, gathered: Any, view: Any, *rest: Any, **kw: Any) -> Any:
        if reads.armed and view.member_id == "m-anna" and not moved_between:
            moved_between.append(view.member_id)
            # The host's webhook, then its application (as the applier would, here and now:
            # this runs in the server's event loop, with a client of its own).
            async with httpx.AsyncClient(base_url=http.base_url) as host:
                event = one_off(start, version=2, location=PLACE)
                assert (await post_event(host, event)).status_code == 202
            horizon = timedelta(weeks=served.settings.horizon_weeks)
            while await apply_batch(store, decode_entry, now=datetime.now(UTC), horizon=horizon):
                pass
            async with store.reading() as tx:
                task = await tx.get_task("north", "t-1")
            assert task is not None and task.location == PLACE
        return await real_apply_intents(store, gathered, view, *rest, **kw)

    monkeypatch.setattr(view_sync, "_gather", reads)
    monkeypatch.setattr(view_sync, "_apply_intents", host_moves_first)
    anna, _, start = await anna_and_bo_with_one_task(http)
    async with calendar_app(served, anna) as anna_app:
        href, etag, body, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))
        reads.armed = True
        await anna_app.update(href, with_partstat(body, "ACCEPTED"), etag)
        _, _, _, event = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Dig] Indkøb"))
        assert moved_between == ["m-anna"]
        assert PLACE in str(event["DESCRIPTION"])
        # Her gesture's run: the read before the host's change, then a second read (the
        # view's generation moved by more than the claim's own bump).
        assert reads.recorded[:2] == [True, False], reads.recorded
    task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
    claims = task["occurrences"][0]["claims"]
    assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "caldav")]


async def test_an_answer_whose_hook_was_lost_is_taken_after_a_restart(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """carecal stopped (a crash, a kill) after the embedded server stored a member's answer
    and before its hook queued the view's sync: the answer sits in her collection, and no job
    knows of it. At the next start every embedded view gets a routine sync (`renew_views`),
    which finds it: the claim is made, and Bo sees it."""
    from adapters.caldav.embedded import EmbeddedCalDAV
    from plugin.services.view_sync import ROUTINE_SPREAD

    ahead = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + ahead[0]

    def lost(self: EmbeddedCalDAV, actor: str, collection: str, change: str) -> None:
        return None  # the process died between the write and its hook

    async def claims(http: httpx.AsyncClient) -> list[tuple[str, str]]:
        task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
        return [(c["member_id"], c["channel"]) for c in task["occurrences"][0]["claims"]]

    with serve_with_worker(tmp_path, database_url, clock=clock) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:
            anna, bo, _ = await anna_and_bo_with_one_task(http)
            async with calendar_app(served, anna) as app:
                href, etag, body, _ = await eventually(
                    copy_reading(app, ANNA_VIEW, "[Ledig] Indkøb")
                )
                with monkeypatch.context() as patched:
                    patched.setattr(EmbeddedCalDAV, "member_wrote", lost)
                    await app.update(href, with_partstat(body, "ACCEPTED"), etag)
                    await asyncio.sleep(1.0)  # the worker looks every 50 ms: nothing to find
            assert await claims(http) == []

    with serve_with_worker(tmp_path, database_url, clock=clock) as served:
        ahead[0] += ROUTINE_SPREAD  # the start's routine syncs are due
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:

            async def claimed() -> list[tuple[str, str]] | None:
                return await claims(http) or None

            assert await eventually(claimed) == [("m-anna", "caldav")]
            async with calendar_app(served, bo) as app:
                await eventually(copy_reading(app, BO_VIEW, "[Anna] Indkøb"))


async def test_an_unchanged_view_renewed_at_start_is_not_read_whole(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start every embedded view is synced (`renew_views`), and nearly all are as the last
    run left them: such a run probes first, finds the view idle, and never reads it whole."""
    from plugin.services import view_sync
    from plugin.services.view_sync import ROUTINE_SPREAD

    ahead = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + ahead[0]

    with serve_with_worker(tmp_path, database_url, clock=clock) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:
            anna, bo, _ = await anna_and_bo_with_one_task(http)
            for credentials, view in ((anna, ANNA_VIEW), (bo, BO_VIEW)):
                async with calendar_app(served, credentials) as app:
                    await eventually(copy_reading(app, view, "[Ledig] Indkøb"))
            await asyncio.sleep(0.5)  # the last runs store their state

    reads: list[str] = []
    real_gather = view_sync._gather

    async def gather(store: Any, view: Any, **kwargs: Any) -> Any:
        reads.append(view.member_id)
        return await real_gather(store, view, **kwargs)

    monkeypatch.setattr(view_sync, "_gather", gather)
    with serve_with_worker(tmp_path, database_url, clock=clock) as served:
        ahead[0] += ROUTINE_SPREAD  # the start's routine syncs are due
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:

            async def renewed() -> float | None:
                text = (await http.get("/metrics")).text
                done = 'carecal_jobs_processed_total{kind="view.sync",result="done"}'
                found = [line for line in text.splitlines() if line.startswith(done)]
                count = float(found[0].split()[-1]) if found else 0.0
                return count if count >= 2 else None

            assert await eventually(renewed) == 2
            async with calendar_app(served, anna) as app:
                await eventually(copy_reading(app, ANNA_VIEW, "[Ledig] Indkøb"))
    assert reads == []


async def test_an_answer_whose_sync_could_not_be_queued_is_queued_when_the_store_answers(
    served: Served, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded server stored Anna's answer, but the store did not answer its hook (a
    locked or unreachable database): the object is in her collection and no job knows of it.
    The server tries again every REQUEUE_SECONDS until the store answers; her claim is made
    and Bo sees it within seconds, not at the day's renewal."""
    from adapters.caldav.embedded import REQUEUE_SECONDS, EmbeddedCalDAV
    from plugin.services.ports import StoreUnavailable

    real = EmbeddedCalDAV._queue_sync
    failures = [1]  # the store fails the hook once

    async def flaky(self: EmbeddedCalDAV, store: Any, *args: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise StoreUnavailable("database is locked")
        await real(self, store, *args)

    anna, bo, _ = await anna_and_bo_with_one_task(http)
    async with calendar_app(served, anna) as anna_app, calendar_app(served, bo) as bo_app:
        href, etag, body, _ = await eventually(copy_reading(anna_app, ANNA_VIEW, "[Ledig] Indkøb"))
        monkeypatch.setattr(EmbeddedCalDAV, "_queue_sync", flaky)
        await anna_app.update(href, with_partstat(body, "ACCEPTED"), etag)
        await eventually(copy_reading(bo_app, BO_VIEW, "[Anna] Indkøb"), within=REQUEUE_SECONDS + 4)
        assert failures == [0]  # the hook did meet the failure
    task = (await http.get("/api/v1/tasks/t-1", headers=auth())).json()
    claims = task["occurrences"][0]["claims"]
    assert [(c["member_id"], c["channel"]) for c in claims] == [("m-anna", "caldav")]
