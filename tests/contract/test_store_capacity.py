"""The Store/Tx contract for capacity and fairness (issue #6), on MemoryStore, SQLite and
PostgreSQL: what members hold, their own settings, and the once-only overload notice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from plugin.domain.capacity import CareValues, MemberSettings
from plugin.domain.fairness import Held
from plugin.domain.model import (
    AvailabilityWindow,
    Capacity,
    Claim,
    Occurrence,
    Task,
    TaskStatus,
)
from plugin.services.ports import Store
from tests.contract.support import Backend

T = "demo"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CPH = ZoneInfo("Europe/Copenhagen")


def task(task_id: str, citizen_id: str = "c-1", **changes: object) -> Task:
    base = Task(
        tenant_id=T,
        id=task_id,
        citizen_id=citizen_id,
        version=1,
        kind="task",
        category="shopping",
        start=datetime(2027, 3, 23, 10),
        end=datetime(2027, 3, 23, 11),
        timezone="Europe/Copenhagen",
        people_needed=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def occ(task_id: str, day: int, hours: float = 1.0) -> Occurrence:
    start = datetime(2027, 3, day, 10, tzinfo=CPH)
    return Occurrence(f"{task_id}@{day}", task_id, start, start + timedelta(hours=hours))


async def seed(store: Store) -> None:
    """c-1: t-1 (two occurrences, one cancelled later), t-2 (cancelled task); c-2: t-3."""
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_task(task("t-1"))
        await tx.sync_occurrences(T, "t-1", [occ("t-1", 2, 1.5), occ("t-1", 9), occ("t-1", 16)])
        await tx.save_task(task("t-2"))
        await tx.sync_occurrences(T, "t-2", [occ("t-2", 3)])
        await tx.save_task(task("t-3", citizen_id="c-2"))
        await tx.sync_occurrences(T, "t-3", [occ("t-3", 4)])
        for occurrence_id, member_id in (
            ("t-1@2", "m-anna"),
            ("t-1@2", "m-bo"),
            ("t-1@9", "m-anna"),
            ("t-1@16", "m-anna"),
            ("t-2@3", "m-anna"),
            ("t-3@4", "m-anna"),
        ):
            await tx.add_claim(T, Claim(occurrence_id, member_id, "link", NOW))
    async with store.transaction() as tx:
        await tx.save_task(task("t-2", status=TaskStatus.CANCELLED, version=2))
        await tx.sync_occurrences(T, "t-1", [occ("t-1", 2, 1.5), occ("t-1", 9)])  # 16: cancelled


async def test_list_held_is_the_circles_live_claims_in_the_range(store: Store) -> None:
    await seed(store)
    start = datetime(2027, 3, 1, tzinfo=CPH)
    async with store.transaction() as tx:
        held = await tx.list_held(T, "c-1", start, start + timedelta(weeks=4))
        later = await tx.list_held(
            T, "c-1", datetime(2027, 3, 5, tzinfo=CPH), start + timedelta(weeks=4)
        )
        other = await tx.list_held(T, "c-2", start, start + timedelta(weeks=4))
        none = await tx.list_held("south", "c-1", start, start + timedelta(weeks=4))
    first = datetime(2027, 3, 2, 10, tzinfo=CPH)
    second = datetime(2027, 3, 9, 10, tzinfo=CPH)
    assert held == [
        Held("m-anna", "t-1@2", first, first + timedelta(hours=1.5)),
        Held("m-bo", "t-1@2", first, first + timedelta(hours=1.5)),
        Held("m-anna", "t-1@9", second, second + timedelta(hours=1)),
    ]
    assert [h.hours for h in held] == [1.5, 1.5, 1.0]
    assert all(h.start.utcoffset() == first.utcoffset() for h in held)
    assert later == held[2:]
    assert [h.occurrence_id for h in other] == ["t-3@4"]
    assert none == []


SETTINGS = MemberSettings(
    tenant_id=T,
    citizen_id="c-1",
    member_id="m-anna",
    values=CareValues(
        Capacity(2.5, None),
        (AvailabilityWindow(2, time(9, 0), time(12, 30)),),
        date(2027, 3, 20),
    ),
    host=CareValues(Capacity(4.0, 3), (), None),
    fields=frozenset({"capacity", "paused_until"}),
    circle_version=3,
    set_at=NOW,
)


async def test_member_settings_round_trip_replace_and_delete(store: Store) -> None:
    bo = replace(SETTINGS, member_id="m-bo", fields=frozenset({"availability"}))
    elsewhere = replace(SETTINGS, citizen_id="c-2")
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        assert await tx.get_member_settings(T, "c-1") == {}
        await tx.save_member_settings(SETTINGS)
        await tx.save_member_settings(bo)
        await tx.save_member_settings(elsewhere)
    async with store.transaction() as tx:
        assert await tx.get_member_settings(T, "c-1") == {"m-anna": SETTINGS, "m-bo": bo}
        changed = replace(SETTINGS, fields=frozenset({"capacity"}), circle_version=4)
        await tx.save_member_settings(changed)
        await tx.delete_member_settings(T, "c-1", "m-bo")
        await tx.delete_member_settings(T, "c-1", "m-nobody")
    async with store.transaction() as tx:
        assert await tx.get_member_settings(T, "c-1") == {"m-anna": changed}
        assert await tx.get_member_settings(T, "c-2") == {"m-anna": elsewhere}
        assert await tx.get_member_settings("south", "c-1") == {}


async def test_an_overload_is_noticed_once_per_member_and_period(store: Store) -> None:
    period = date(2027, 3, 1)
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        assert await tx.note_overload(T, "c-1", "m-anna", period, now=NOW)
        assert not await tx.note_overload(T, "c-1", "m-anna", period, now=NOW)
        assert await tx.note_overload(T, "c-1", "m-anna", date(2027, 3, 8), now=NOW)
        assert await tx.note_overload(T, "c-1", "m-bo", period, now=NOW)
        assert await tx.note_overload(T, "c-2", "m-anna", period, now=NOW)
    async with store.transaction() as tx:
        assert not await tx.note_overload(T, "c-1", "m-anna", period, now=NOW)


async def test_a_rolled_back_notice_is_not_kept(store: Store) -> None:
    period = date(2027, 3, 1)
    try:
        async with store.transaction() as tx:
            await tx.ensure_tenant(T)
            assert await tx.note_overload(T, "c-1", "m-anna", period, now=NOW)
            raise RuntimeError("the claim failed")
    except RuntimeError:
        pass
    async with store.transaction() as tx:
        assert await tx.note_overload(T, "c-1", "m-anna", period, now=NOW)


async def test_concurrent_notices_of_one_period_let_one_through(backend: Backend) -> None:
    async with backend.store.transaction() as tx:
        await tx.ensure_tenant(T)
    stores = [backend.store, await backend.another()]

    async def notice(n: int) -> bool:
        async with stores[n % 2].transaction() as tx:
            return await tx.note_overload(T, "c-1", "m-anna", date(2027, 3, 1), now=NOW)

    results = await asyncio.gather(*(notice(n) for n in range(6)))
    assert results.count(True) == 1
