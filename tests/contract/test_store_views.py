"""The Store/Tx contract for view sync records, on MemoryStore, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select

from adapters.store.sql import SqlStore
from adapters.store.tables import retired_calendars
from plugin.domain.model import Circle, Citizen, Delivery, ExternalCalendar, Member
from plugin.services.ports import Store, ViewPeek, ViewState
from plugin.sync.planner import SyncRecord
from tests.contract.support import Backend

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)

LIVE = SyncRecord("t-1_20270316T1000@north", "/dav/north~m-anna/c-123/a.ics", '"1"', "fp", "mat")
TOMBSTONE = SyncRecord("t-1_20270323T1000@north", None, None, "fp2", "mat2")


async def test_records_are_kept_per_view(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_view_record("north", "m-anna", "c-123", LIVE)
        await tx.save_view_record("north", "m-anna", "c-123", TOMBSTONE)
        await tx.save_view_record("north", "m-bo", "c-123", LIVE)
    async with store.transaction() as tx:
        found = await tx.list_view_records("north", "m-anna", "c-123")
        assert found == {LIVE.uid: LIVE, TOMBSTONE.uid: TOMBSTONE}
        assert await tx.list_view_records("north", "m-anna", "c-999") == {}
        assert await tx.list_view_records("south", "m-anna", "c-123") == {}


async def test_a_saved_record_replaces_the_last_one(store: Store) -> None:
    changed = SyncRecord(
        LIVE.uid,
        LIVE.href,
        '"2"',
        "fp3",
        "mat",
        "ACCEPTED",
        True,
        inputs="k" * 64,
        marks=3,
        sequence=12,
    )
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_view_record("north", "m-anna", "c-123", LIVE)
        await tx.save_view_record("north", "m-anna", "c-123", changed)
    async with store.transaction() as tx:
        assert await tx.list_view_records("north", "m-anna", "c-123") == {LIVE.uid: changed}


async def test_records_and_views_are_deleted(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_view_record("north", "m-anna", "c-123", LIVE)
        await tx.save_view_record("north", "m-anna", "c-123", TOMBSTONE)
        await tx.save_view_record("north", "m-bo", "c-123", LIVE)
    async with store.transaction() as tx:
        await tx.delete_view_record("north", "m-anna", "c-123", LIVE.uid)
        await tx.delete_view_record("north", "m-anna", "c-123", "unknown")
    async with store.transaction() as tx:
        assert await tx.list_view_records("north", "m-anna", "c-123") == {TOMBSTONE.uid: TOMBSTONE}
        await tx.delete_view("north", "m-anna", "c-123")
    async with store.transaction() as tx:
        assert await tx.list_view_records("north", "m-anna", "c-123") == {}
        assert await tx.list_view_records("north", "m-bo", "c-123") == {LIVE.uid: LIVE}


STATE = ViewState("/dav/north~m-anna/c-123/", "http://radicale.org/ns/sync/1", None, NOW)


async def test_view_state_is_kept_replaced_and_deleted_with_the_view(store: Store) -> None:
    later = ViewState(
        STATE.collection,
        "http://radicale.org/ns/sync/2",
        '"ctag"',
        NOW,
        "f" * 64,
        3,
        "a1" * 16,
        "Fru Jensen \N{EN DASH} omsorg",
        "/dav/north~m-anna/c-123/" + "hers-%C3%A6" * 30 + ".ics",
    )
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        assert await tx.get_view_state("north", "m-anna", "c-123") is None
        await tx.save_view_state("north", "m-anna", "c-123", STATE)
        await tx.save_view_state("north", "m-bo", "c-123", STATE)
    async with store.transaction() as tx:
        assert await tx.get_view_state("north", "m-anna", "c-123") == STATE
        await tx.save_view_state("north", "m-anna", "c-123", later)
    async with store.transaction() as tx:
        assert await tx.get_view_state("north", "m-anna", "c-123") == later
        await tx.delete_view("north", "m-anna", "c-123")
    async with store.transaction() as tx:
        assert await tx.get_view_state("north", "m-anna", "c-123") is None
        assert await tx.get_view_state("north", "m-bo", "c-123") == STATE


ANNA = Member(id="m-anna", name="Anna", role="relative", visibility="full")
BO = Member(
    id="m-bo",
    name="Bo",
    role="relative",
    visibility="full",
    calendar="external",
    external=ExternalCalendar("https://dav.example.org/bo/", "bo", "s3cret"),
)
SARA = Member(id="m-sara", name="Sara", role="staff", visibility="full", calendar="feed")


async def test_member_views_are_listed_by_delivery(store: Store) -> None:
    """Removed members are not polled; the order is stable (citizen, member)."""
    anna, bo, sara = ANNA, BO, SARA

    def circle(citizen_id: str, *members: Member, version: int = 1) -> Circle:
        citizen = Citizen(tenant_id="demo", id=citizen_id, display_name="Fru Jensen")
        return Circle(citizen=citizen, version=version, members=members)

    async with store.transaction() as tx:
        await tx.ensure_tenant("demo")
        await tx.save_circle("demo", circle("c-2", anna, bo, sara), NOW)
        await tx.save_circle("demo", circle("c-1", bo, anna), NOW)
    async with store.transaction() as tx:
        await tx.save_circle("demo", circle("c-2", anna, sara, version=2), NOW)
    async with store.transaction() as tx:
        assert await tx.list_member_views("demo", ["external"]) == [("m-bo", "c-1")]
        assert await tx.list_member_views("demo", ["hosted", "external"]) == [
            ("m-anna", "c-1"),
            ("m-bo", "c-1"),
            ("m-anna", "c-2"),
        ]
        assert await tx.list_member_views("south", ["hosted"]) == []
        # A removed member is still known, with their (decrypted) calendar account: what
        # withdrawing their copy needs.
        assert await tx.get_membership("demo", "c-2", "m-bo") == bo
        assert await tx.get_membership("demo", "c-2", "m-anna") == anna
        assert await tx.get_membership("demo", "c-3", "m-anna") is None


async def test_a_poll_peeks_every_view_of_a_tenant_in_one_read(store: Store) -> None:
    """`peek_views`: the memberships `list_member_views` lists, each with its member (the
    external account decrypted), its view's state (None before a first sync) and its current
    generation, which is not the one the state was saved with. `peek_view`: one of them."""
    anna, bo, sara = ANNA, BO, SARA
    gone = Member(id="m-gone", name="Gone", role="network", visibility="full")
    citizen = Citizen(tenant_id="demo", id="c-1", display_name="Fru Jensen")
    synced = replace(
        STATE,
        generation=1,
        inputs="f" * 64,
        server="b2" * 16,
        name="Fru Jensen",
        foreign_after="/dav/demo~m-anna/c-1/hers.ics",
    )
    async with store.transaction() as tx:
        await tx.ensure_tenant("demo")
        await tx.save_circle("demo", Circle(citizen, 1, (anna, bo, sara, gone)), NOW)
        await tx.save_view_state("demo", "m-anna", "c-1", synced)
        for member_id in ("m-anna", "m-anna", "m-bo", "m-gone"):
            await tx.bump_view_generation("demo", member_id, "c-1")
    async with store.transaction() as tx:
        await tx.save_circle("demo", Circle(citizen, 2, (anna, bo, sara)), NOW)
    async with store.reading() as tx:
        found = await tx.peek_views("demo", ["hosted", "external"])
        assert found == [
            ViewPeek(anna, "c-1", synced, 2),
            ViewPeek(bo, "c-1", None, 1),
        ]
        assert [(p.member.id, p.citizen_id) for p in found] == await tx.list_member_views(
            "demo", ["hosted", "external"]
        )
        assert await tx.peek_views("demo", ["feed"]) == [ViewPeek(sara, "c-1", None, 0)]
        assert await tx.peek_views("south", ["hosted"]) == []
        # One view, as a sync reads it first: the same, or None where peek_views lists none.
        synced_deliveries: list[Delivery] = ["hosted", "external"]
        for peek in found:
            assert await tx.peek_view("demo", peek.member.id, "c-1", synced_deliveries) == peek
        assert await tx.peek_view("demo", "m-sara", "c-1", ["feed"]) == ViewPeek(
            sara, "c-1", None, 0
        )
        for member_id in ("m-sara", "m-gone", "m-nobody"):  # a feed, removed, unknown
            assert await tx.peek_view("demo", member_id, "c-1", synced_deliveries) is None
        assert await tx.peek_view("demo", "m-anna", "c-2", synced_deliveries) is None
        assert await tx.peek_view("south", "m-anna", "c-1", synced_deliveries) is None


async def test_view_generations_count_bumps_per_view(store: Store) -> None:
    """A view never bumped is at 0; each bump adds one, per view, and answers the new count;
    saving the view's state (with the generation a sync rendered from) never moves it."""
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        assert await tx.get_view_generation("north", "m-anna", "c-123") == 0
        assert await tx.bump_view_generation("north", "m-anna", "c-123") == 1
        assert await tx.bump_view_generation("north", "m-anna", "c-123") == 2
        assert await tx.bump_view_generation("north", "m-bo", "c-123") == 1
    async with store.transaction() as tx:
        assert await tx.get_view_generation("north", "m-anna", "c-123") == 2
        assert await tx.get_view_generation("north", "m-bo", "c-123") == 1
        assert await tx.get_view_generation("north", "m-anna", "c-999") == 0
        assert await tx.get_view_generation("south", "m-anna", "c-123") == 0
        await tx.save_view_state("north", "m-anna", "c-123", replace(STATE, generation=2))
    async with store.transaction() as tx:
        assert await tx.bump_view_generation("north", "m-anna", "c-123") == 3
    async with store.transaction() as tx:
        assert await tx.get_view_generation("north", "m-anna", "c-123") == 3
        saved = await tx.get_view_state("north", "m-anna", "c-123")
        assert saved is not None and saved.generation == 2


async def test_a_rolled_back_bump_is_not_counted(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.bump_view_generation("north", "m-anna", "c-123")
    with contextlib.suppress(RuntimeError):
        async with store.transaction() as tx:
            await tx.bump_view_generation("north", "m-anna", "c-123")
            raise RuntimeError("the change failed")
    async with store.transaction() as tx:
        assert await tx.get_view_generation("north", "m-anna", "c-123") == 1


async def test_a_reader_sees_what_is_committed_and_does_not_wait_for_a_writer(
    store: Store,
) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.bump_view_generation("north", "m-anna", "c-123")
    async with store.transaction() as tx:
        await tx.bump_view_generation("north", "m-anna", "c-123")  # not committed yet
        async with asyncio.timeout(5):  # on SQLite: not queued behind this writer
            async with store.reading() as reader:
                assert await reader.get_view_generation("north", "m-anna", "c-123") == 1
    async with store.reading() as reader:
        assert await reader.get_view_generation("north", "m-anna", "c-123") == 2


async def test_a_readers_reads_are_one_snapshot(store: Store) -> None:
    """What a view's run reads (`view_sync._gather`: its records, then its state) describes
    one moment: a `delete_view` committed between two of its reads is seen by neither. (On
    PostgreSQL at READ COMMITTED the second read saw it: records of a view with no state.)"""
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_view_record("north", "m-anna", "c-123", LIVE)
        await tx.save_view_state("north", "m-anna", "c-123", STATE)
    async with store.reading() as reader:
        assert list(await reader.list_view_records("north", "m-anna", "c-123")) == [LIVE.uid]
        async with store.transaction() as tx:
            await tx.delete_view("north", "m-anna", "c-123")
        assert await reader.get_view_state("north", "m-anna", "c-123") == STATE
        assert list(await reader.list_view_records("north", "m-anna", "c-123")) == [LIVE.uid]
    async with store.reading() as reader:
        assert await reader.get_view_state("north", "m-anna", "c-123") is None
        assert await reader.list_view_records("north", "m-anna", "c-123") == {}


OLD = ExternalCalendar("https://dav.example.org/cal/anna/", "anna", "old-s3cret")
OTHER = ExternalCalendar("https://cloud.example.net/dav/anna/", "anna@example.net", "pw-2")


async def test_retired_calendars_are_kept_per_view_until_forgotten(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("demo")
        await tx.retire_calendar("demo", "c-123", "m-anna", OLD, now=NOW)
        await tx.retire_calendar("demo", "c-123", "m-anna", OTHER, now=NOW.replace(hour=13))
        # The same account again (a new password): kept once, with the newer password.
        await tx.retire_calendar(
            "demo", "c-123", "m-anna", replace(OLD, password="newer"), now=NOW.replace(hour=14)
        )
        await tx.retire_calendar("demo", "c-999", "m-anna", OLD, now=NOW)
    async with store.reading() as tx:
        assert await tx.retired_calendars("demo", "c-123", "m-anna") == [
            replace(OLD, password="newer"),
            OTHER,
        ]
        assert await tx.retired_calendars("demo", "c-123", "m-bo") == []
        assert await tx.retired_calendars("other", "c-123", "m-anna") == []
    async with store.transaction() as tx:
        await tx.forget_retired_calendar("demo", "c-123", "m-anna", OLD)
        await tx.forget_retired_calendar("demo", "c-123", "m-anna", OLD)  # gone: no error
    async with store.reading() as tx:
        assert await tx.retired_calendars("demo", "c-123", "m-anna") == [OTHER]
        assert await tx.retired_calendars("demo", "c-999", "m-anna") == [OLD]


async def test_a_retired_password_is_not_stored_in_clear(backend: Backend) -> None:
    async with backend.store.transaction() as tx:
        await tx.ensure_tenant("demo")
        await tx.retire_calendar("demo", "c-123", "m-anna", OLD, now=NOW)
    if not isinstance(backend.store, SqlStore):
        return
    async with backend.store.engine.connect() as connection:
        raw = (await connection.execute(select(retired_calendars.c.password_enc))).scalar_one()
    assert b"old-s3cret" not in raw


async def test_a_collection_is_in_use_while_another_views_state_is_there(store: Store) -> None:
    """`collection_in_use`: before a moved view deletes its old collection, no other view of
    any tenant may have synced there, on the same server (or one not known: a state from
    before servers were kept)."""
    anna = ("north", "m-anna", "c-1")
    async with store.transaction() as tx:
        for tenant in ("north", "south"):
            await tx.ensure_tenant(tenant)
        await tx.save_view_state(*anna, ViewState("/dav/a/", "t", None, NOW, server="hosted"))
        await tx.save_view_state("south", "m-bo", "c-2", ViewState("/dav/b/", "t", None, NOW))
    async with store.reading() as tx:
        assert not await tx.collection_in_use("/dav/a/", "hosted", other_than=anna)  # hers
        assert await tx.collection_in_use("/dav/a/", "hosted", other_than=("north", "m-x", "c-1"))
        assert not await tx.collection_in_use("/dav/a/", "acct-1", other_than=("north", "x", "y"))
        assert await tx.collection_in_use("/dav/b/", "acct-1", other_than=anna)  # server ""
        assert not await tx.collection_in_use("/dav/c/", "hosted", other_than=anna)
