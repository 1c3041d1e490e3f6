"""The Store/Tx contract for view sync records, on MemoryStore, SQLite and PostgreSQL."""

from __future__ import annotations

from plugin.services.ports import Store
from plugin.sync.planner import SyncRecord

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
    changed = SyncRecord(LIVE.uid, LIVE.href, '"2"', "fp3", "mat", "ACCEPTED", member_alarms=True)
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
