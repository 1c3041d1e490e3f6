"""The Store/Tx contract for member links, a member's circles and reading one occurrence, on
MemoryStore, SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from plugin.domain.model import Circle, Citizen, Claim, Member, Occurrence, Pass, Task
from plugin.services.ports import MemberLink, Store
from tests.contract.support import Backend

T = "demo"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ANNA = Member(id="m-anna", name="Anna", role="relative", visibility="full")
BO = Member(id="m-bo", name="Bo", role="network", visibility="limited")


def link(
    link_id: str = "AAAAAAAAAAAAAAAA", member_id: str = "m-anna", **changes: object
) -> MemberLink:
    base = MemberLink(link_id, T, member_id, bytes(range(32)), NOW)
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_the_first_candidate_becomes_the_active_link(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        assert await tx.ensure_member_link(link()) == link()
    async with store.transaction() as tx:
        # Another candidate for the same member changes nothing: tokens stay stable.
        assert await tx.ensure_member_link(link("BBBBBBBBBBBBBBBB", secret=b"x" * 32)) == link()
        assert await tx.get_member_link("AAAAAAAAAAAAAAAA") == link()
        assert await tx.get_member_link("BBBBBBBBBBBBBBBB") is None


async def test_links_are_per_member_and_tenant(store: Store) -> None:
    async with store.transaction() as tx:
        anna = await tx.ensure_member_link(link())
        bo = await tx.ensure_member_link(link("BBBBBBBBBBBBBBBB", "m-bo"))
        other = await tx.ensure_member_link(link("CCCCCCCCCCCCCCCC", tenant_id="other"))
    assert (anna.id, bo.id, other.id) == (
        "AAAAAAAAAAAAAAAA",
        "BBBBBBBBBBBBBBBB",
        "CCCCCCCCCCCCCCCC",
    )
    async with store.transaction() as tx:
        assert await tx.get_member_link("CCCCCCCCCCCCCCCC") == link(
            "CCCCCCCCCCCCCCCC", tenant_id="other"
        )


async def test_revoking_keeps_the_old_link_and_makes_room_for_a_new_one(
    backend: Backend,
) -> None:
    later = NOW + timedelta(hours=1)
    async with backend.store.transaction() as tx:
        await tx.ensure_member_link(link())
    async with backend.store.transaction() as tx:
        assert await tx.revoke_member_link(T, "m-anna", now=later)
        assert not await tx.revoke_member_link(T, "m-anna", now=later)  # nothing active
        assert not await tx.revoke_member_link(T, "m-bo", now=later)
    other = await backend.another()
    async with other.transaction() as tx:
        assert await tx.get_member_link("AAAAAAAAAAAAAAAA") == link(revoked_at=later)
        fresh = await tx.ensure_member_link(link("DDDDDDDDDDDDDDDD", secret=b"n" * 32))
    assert fresh == link("DDDDDDDDDDDDDDDD", secret=b"n" * 32)


async def test_the_active_link_is_read_without_making_one(store: Store) -> None:
    async with store.reading() as tx:
        assert await tx.active_member_link(T, "m-anna") is None
    async with store.transaction() as tx:
        await tx.ensure_member_link(link())
    async with store.reading() as tx:
        assert await tx.active_member_link(T, "m-anna") == link()
        assert await tx.active_member_link(T, "m-bo") is None
        assert await tx.active_member_link("other", "m-anna") is None
    async with store.transaction() as tx:
        await tx.revoke_member_link(T, "m-anna", now=NOW + timedelta(hours=1))
    async with store.reading() as tx:
        assert await tx.active_member_link(T, "m-anna") is None


async def test_links_roll_back_with_the_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.ensure_member_link(link())
            raise RuntimeError("boom")
    async with store.transaction() as tx:
        assert await tx.get_member_link("AAAAAAAAAAAAAAAA") is None


async def test_concurrent_first_links_agree(backend: Backend) -> None:
    if backend.name == "memory":
        stores = [backend.store, backend.store]
    else:
        stores = [backend.store, await backend.another()]

    async def ensure(store: Store, link_id: str) -> MemberLink:
        async with store.transaction() as tx:
            return await tx.ensure_member_link(link(link_id))

    found = await asyncio.gather(
        ensure(stores[0], "EEEEEEEEEEEEEEEE"), ensure(stores[1], "FFFFFFFFFFFFFFFF")
    )
    assert found[0] == found[1]


async def test_a_members_current_circles(store: Store) -> None:
    one = Citizen(tenant_id=T, id="c-1", display_name="Fru Jensen")
    two = Citizen(tenant_id=T, id="c-2", display_name="Hr. Hansen")
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_circle(T, Circle(two, 1, (ANNA,)), NOW)
        await tx.save_circle(T, Circle(one, 1, (ANNA, BO)), NOW)
    async with store.transaction() as tx:
        assert await tx.list_member_circles(T, "m-anna") == ["c-1", "c-2"]
        assert await tx.list_member_circles(T, "m-bo") == ["c-1"]
        assert await tx.list_member_circles("other", "m-anna") == []
        await tx.save_circle(T, Circle(two, 2, ()), NOW)
    async with store.transaction() as tx:
        assert await tx.list_member_circles(T, "m-anna") == ["c-1"]


async def test_one_occurrence_is_read_with_its_claims_and_passes(store: Store) -> None:
    citizen = Citizen(tenant_id=T, id="c-1", display_name="Fru Jensen")
    task = Task(
        tenant_id=T,
        id="t-1",
        citizen_id="c-1",
        version=1,
        kind="task",
        category="shopping",
        start=datetime(2027, 3, 16, 10),
        end=datetime(2027, 3, 16, 11),
        timezone="Europe/Copenhagen",
        people_needed=2,
    )
    occurrence = Occurrence(
        "t-1_20270316T1000",
        "t-1",
        datetime(2027, 3, 16, 9, tzinfo=UTC),
        datetime(2027, 3, 16, 10, tzinfo=UTC),
    )
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.save_circle(T, Circle(citizen, 1, (ANNA, BO)), NOW)
        await tx.save_task(task)
        await tx.sync_occurrences(T, "t-1", [occurrence])
        await tx.add_claim(T, Claim(occurrence.id, "m-anna", "link", NOW))
        await tx.add_pass(T, Pass(occurrence.id, "m-bo", NOW))
    async with store.transaction() as tx:
        found = await tx.get_occurrence(T, occurrence.id)
        assert found == (await tx.get_occurrences(T, "t-1"))[0]
        assert found is not None
        assert found.occurrence.start == occurrence.start
        assert [c.member_id for c in found.claims] == ["m-anna"]
        assert [c.channel for c in found.claims] == ["link"]
        assert [p.member_id for p in found.passes] == ["m-bo"]
        assert found.people_needed == 2
        assert await tx.get_occurrence(T, "t-1_20270323T1000") is None
        assert await tx.get_occurrence("other", occurrence.id) is None
