"""The store contract of the staff tools (targeted offers, the tenant's circles, a circle's
relief requests), run against MemoryStore, SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from plugin.domain.model import Citizen, Claim, Pass, ReliefRequest, TargetedOffer
from plugin.services.ports import Store, StoreError
from tests.contract.test_store import ANNA, BO, NOW, T, circle, occ, seed_task


async def test_a_targeted_offer_is_recorded_once_and_read_with_its_occurrence(
    store: Store,
) -> None:
    await seed_task(store, occ(0), occ(1))
    async with store.transaction() as tx:
        assert await tx.add_targeted_offer(T, TargetedOffer("t-1@0", "m-anna", NOW))
        # Asked again later: the first ask stands.
        later = NOW + timedelta(hours=1)
        assert not await tx.add_targeted_offer(T, TargetedOffer("t-1@0", "m-anna", later))
        assert await tx.add_targeted_offer(T, TargetedOffer("t-1@0", "m-bo", later))
        await tx.add_claim(T, Claim("t-1@0", "m-cy", "link", NOW))
        await tx.add_pass(T, Pass("t-1@0", "m-bo", later))
    async with store.transaction() as tx:
        locked = await tx.lock_occurrence(T, "t-1@0")
        read = await tx.get_occurrence(T, "t-1@0")
        listed = await tx.get_occurrences(T, "t-1")
        other_tenant = await tx.get_occurrence("other", "t-1@0")
    assert locked is not None and read == locked and listed[0] == locked
    assert locked.offers == (
        TargetedOffer("t-1@0", "m-anna", NOW),
        TargetedOffer("t-1@0", "m-bo", NOW + timedelta(hours=1)),
    )
    # Offers are their own kind: claims and passes are what they were.
    assert [c.member_id for c in locked.claims] == ["m-cy"]
    assert [p.member_id for p in locked.passes] == ["m-bo"]
    assert listed[1].offers == ()
    assert other_tenant is None


async def test_a_targeted_offer_needs_its_occurrence(store: Store) -> None:
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.ensure_tenant(T)
            await tx.add_targeted_offer(T, TargetedOffer("nope", "m-anna", NOW))


async def test_offers_survive_the_task_being_replanned(store: Store) -> None:
    await seed_task(store, occ(0))
    async with store.transaction() as tx:
        await tx.add_targeted_offer(T, TargetedOffer("t-1@0", "m-anna", NOW))
        await tx.sync_occurrences(T, "t-1", [replace(occ(0), end=occ(0).end + timedelta(hours=1))])
        record = await tx.get_occurrence(T, "t-1@0")
    assert record is not None and [o.member_id for o in record.offers] == ["m-anna"]


async def test_list_citizens_is_per_tenant_by_display_name(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant(T)
        await tx.ensure_tenant("other")
        await tx.save_circle(T, circle(ANNA), NOW)
        herr = Citizen(T, "c-0", "Hr. Andersen", timezone="Europe/Copenhagen", locale="en")
        await tx.save_circle(T, replace(circle(BO), citizen=herr), NOW)
        elsewhere = Citizen("other", "c-9", "Fru Berg")
        await tx.save_circle("other", replace(circle(ANNA), citizen=elsewhere), NOW)
    async with store.transaction() as tx:
        found = await tx.list_citizens(T)
        assert await tx.list_citizens("nobody") == []
    assert found == [Citizen(T, "c-1", "Fru Jensen"), herr]  # by name, not by id


async def test_list_relief_requests_of_one_circle_by_start(store: Store) -> None:
    week = timedelta(days=7)
    later = ReliefRequest(T, "r-2", "c-1", "m-anna", NOW + week, NOW + 2 * week)
    sooner = ReliefRequest(T, "r-1", "c-1", "m-bo", NOW, NOW + week, status="approved", version=2)
    other_circle = ReliefRequest(T, "r-3", "c-2", "m-anna", NOW, NOW + week)
    other_tenant = ReliefRequest("other", "r-4", "c-1", "m-anna", NOW, NOW + week)
    async with store.transaction() as tx:
        for request in (later, sooner, other_circle, other_tenant):
            await tx.save_relief_request(request)
    async with store.transaction() as tx:
        assert await tx.list_relief_requests(T, "c-1") == [sooner, later]
        assert await tx.list_relief_requests(T, "c-3") == []
