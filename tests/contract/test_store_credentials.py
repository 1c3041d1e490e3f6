"""The Store/Tx contract for calendar credentials and current membership, on MemoryStore,
SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from plugin.domain.model import Circle, Citizen, Member
from plugin.services.ports import CalendarCredential, Conflict, Store
from tests.contract.support import Backend

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ANNA = Member(id="m-anna", name="Anna", role="relative", visibility="full")
BO = Member(id="m-bo", name="Bo", role="network", visibility="limited")


def credential(member_id: str = "m-anna", **changes: object) -> CalendarCredential:
    base = CalendarCredential(
        tenant_id="demo",
        member_id=member_id,
        username=f"demo~{member_id}",
        password_hash="scrypt$15$8$1$c2FsdA==$aGFzaA==",
        created_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_a_saved_credential_is_found_by_username(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.ensure_tenant("demo")
        await tx.save_calendar_credential(credential())
    async with store.transaction() as tx:
        assert await tx.get_calendar_credential("demo~m-anna") == credential()
        assert await tx.get_calendar_credential("demo~m-bo") is None
        assert await tx.get_calendar_credential("other~m-anna") is None


async def test_issuing_again_replaces_the_credential(backend: Backend) -> None:
    later = NOW + timedelta(hours=1)
    async with backend.store.transaction() as tx:
        await tx.save_calendar_credential(credential(revoked_at=NOW))
    async with backend.store.transaction() as tx:
        await tx.save_calendar_credential(
            credential(password_hash="scrypt$15$8$1$bmV3$bmV3", created_at=later)
        )
    # Seen the same from another store on the same database.
    other = await backend.another()
    async with other.transaction() as tx:
        found = await tx.get_calendar_credential("demo~m-anna")
    assert found == credential(password_hash="scrypt$15$8$1$bmV3$bmV3", created_at=later)


async def test_a_username_belongs_to_one_member(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_calendar_credential(credential("m-anna"))
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await tx.save_calendar_credential(credential("m-bo", username="demo~m-anna"))
    async with store.transaction() as tx:
        assert await tx.get_calendar_credential("demo~m-anna") == credential("m-anna")


async def test_credentials_roll_back_with_the_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.save_calendar_credential(credential())
            raise RuntimeError("boom")
    async with store.transaction() as tx:
        assert await tx.get_calendar_credential("demo~m-anna") is None


async def test_current_members_are_those_in_a_circle_not_removed(store: Store) -> None:
    citizen = Citizen(tenant_id="demo", id="c-1", display_name="Fru Jensen")
    async with store.transaction() as tx:
        await tx.ensure_tenant("demo")
        await tx.save_circle("demo", Circle(citizen, 1, (ANNA, BO)), NOW)
    async with store.transaction() as tx:
        assert await tx.is_current_member("demo", "m-anna")
        assert await tx.is_current_member("demo", "m-bo")
        assert not await tx.is_current_member("demo", "m-nobody")
        assert not await tx.is_current_member("other", "m-anna")
        await tx.save_circle("demo", Circle(citizen, 2, (ANNA,)), NOW)
    async with store.transaction() as tx:
        assert await tx.is_current_member("demo", "m-anna")
        assert not await tx.is_current_member("demo", "m-bo")
