"""Members' own calendar accounts as carecal's decisions see them: deleting carecal's
collection in an account a member left (`view_sync.withdraw_retired`) and in a removed
member's (`view_sync.withdraw_view`), and what a run does when the account refuses it or is
down while the store is read (`view_sync.sync_view`).

The store is the memory store and the member's server a recording stand-in: what is asserted
here is what carecal decides (delete, keep, forget, retry). Real servers do the same end to end
in `tests/integration/caldav/test_polled_servers.py`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.memory import MemoryStore
from plugin.domain.model import Circle, Citizen, ExternalCalendar, Member
from plugin.services.calendar_port import CalendarUnavailable, Forbidden
from plugin.services.calendars import Account, Calendars, View, account_server
from plugin.services.ports import ViewState
from plugin.services.view_sync import withdraw_retired, withdraw_view
from tests.integration.support import make_settings

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
VIEW = View("north", "m-anna", "c-123")
LEFT = ExternalCalendar("https://dav.example.org/anna/", "anna", "old-pw")
NEW = ExternalCalendar("https://cloud.example.net/dav/anna/", "anna", "new-pw")
LEFT_COLLECTION = "/anna/carecal-c-123/"


class _Server:
    """Members' servers as carecal's client sees them: records deletions, or fails."""

    def __init__(self, fails: Exception | None = None) -> None:
        self.fails = fails
        self.deleted: list[tuple[str, str]] = []  # (account URL, collection)
        self.opened: list[Account] = []

    @asynccontextmanager
    async def __call__(self, account: Account) -> AsyncIterator[object]:
        self.opened.append(account)
        server = self

        class Client:
            async def delete_collection(self, path: str) -> None:
                if server.fails is not None:
                    raise server.fails
                server.deleted.append((account.url, path))

        yield Client()


def _calendars(tmp_path: Path, server: object, *, allow_private: bool = False) -> Calendars:
    """carecal's calendars, reaching members' accounts through `server` (`OpenAccount`)."""
    settings = make_settings(tmp_path)
    tenants = [
        t.model_copy(update={"allow_private_calendar_urls": allow_private})
        for t in settings.tenants
    ]

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    return Calendars(
        settings.model_copy(update={"tenants": tenants}),
        service=None,
        open_account=server,  # type: ignore[arg-type]
        resolve=public,
    )


async def _store(anna: Member, *, state_at: str | None = LEFT_COLLECTION) -> MemoryStore:
    """Anna now `anna`, her left account retired, and her view's state where `state_at` says."""
    store = MemoryStore()
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        circle = Circle(Citizen("north", "c-123", "Fru Jensen"), 1, (anna,))
        await tx.save_circle("north", circle, NOW)
        await tx.retire_calendar("north", "c-123", "m-anna", LEFT, now=NOW)
        if state_at is not None:
            state = ViewState(state_at, "token", None, NOW)
            await tx.save_view_state("north", "m-anna", "c-123", state)
    return store


def _anna(calendar: str = "feed", external: ExternalCalendar | None = None) -> Member:
    return Member("m-anna", "Anna", "relative", "full", calendar=calendar, external=external)  # type: ignore[arg-type]


async def _retired(store: MemoryStore) -> list[ExternalCalendar]:
    async with store.reading() as tx:
        return await tx.retired_calendars("north", "c-123", "m-anna")


async def _state(store: MemoryStore) -> ViewState | None:
    async with store.reading() as tx:
        return await tx.get_view_state("north", "m-anna", "c-123")


async def test_the_collection_in_the_account_left_is_deleted_and_the_account_forgotten(
    tmp_path: Path,
) -> None:
    server = _Server()
    store = await _store(_anna("feed"))
    await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert server.deleted == [(LEFT.url, LEFT_COLLECTION)]
    assert server.opened == [Account(LEFT.url, LEFT.username, LEFT.password)]
    assert await _retired(store) == []
    assert await _state(store) is None  # the records described that collection


async def test_the_new_accounts_records_stay(tmp_path: Path) -> None:
    """Her new account's collection was synced already (its state names it): it stays."""
    server = _Server()
    store = await _store(_anna("external", NEW), state_at="/dav/anna/carecal-c-123/")
    await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert server.deleted == [(LEFT.url, LEFT_COLLECTION)]
    state = await _state(store)
    assert state is not None and state.collection == "/dav/anna/carecal-c-123/"


async def test_an_account_she_is_back_on_is_only_forgotten(tmp_path: Path) -> None:
    server = _Server()
    back = ExternalCalendar(LEFT.url, LEFT.username, "yet-another-pw")
    store = await _store(_anna("external", back))
    await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert server.opened == [] and server.deleted == []
    assert await _retired(store) == []
    assert await _state(store) is not None


async def test_an_account_that_refuses_carecal_is_forgotten_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = _Server(fails=Forbidden("401", status=401))
    store = await _store(_anna("feed"))
    with caplog.at_level(logging.WARNING, logger="plugin.services.view_sync"):
        await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert await _retired(store) == []
    assert any("refused carecal" in r.getMessage() for r in caplog.records)
    assert "old-pw" not in caplog.text


async def test_a_private_address_is_not_contacted_and_the_account_forgotten(
    tmp_path: Path,
) -> None:
    server = _Server()
    private = ExternalCalendar("http://127.0.0.1:5232/anna/", "anna", "pw")
    store = await _store(_anna("feed"))
    async with store.transaction() as tx:
        await tx.forget_retired_calendar("north", "c-123", "m-anna", LEFT)
        await tx.retire_calendar("north", "c-123", "m-anna", private, now=NOW)
    await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert server.opened == []
    assert await _retired(store) == []


async def test_a_server_that_is_down_is_retried_then_given_up(tmp_path: Path) -> None:
    server = _Server(fails=CalendarUnavailable("503", status=503))
    store = await _store(_anna("feed"))
    with pytest.raises(CalendarUnavailable):
        await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert await _retired(store) == [LEFT]  # kept for the retry
    await withdraw_retired(store, _calendars(tmp_path, server), VIEW, last_try=True)
    assert await _retired(store) == []
    assert await _state(store) is not None  # nothing was deleted: the records stay


async def test_a_new_account_with_the_same_path_keeps_its_records(tmp_path: Path) -> None:
    """Her new account is on another server, where the collection has the same path as in
    the one she left: the view's state may be the new one's, and is kept."""
    server = _Server()
    elsewhere = ExternalCalendar("https://other.example.org/anna/", "anna", "pw")
    store = await _store(_anna("external", elsewhere))
    await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
    assert server.deleted == [(LEFT.url, LEFT_COLLECTION)]
    assert await _state(store) is not None


# --- a member removed from the circle (`withdraw_view`) --------------------------------------


async def _removed(store: MemoryStore) -> Member | None:
    async with store.reading() as tx:
        return await tx.get_membership("north", "c-123", "m-anna")


async def _remove_anna(store: MemoryStore) -> None:
    async with store.transaction() as tx:
        circle = Circle(Citizen("north", "c-123", "Fru Jensen"), 2, ())
        await tx.save_circle("north", circle, NOW)


async def test_a_removed_members_collection_goes_and_then_their_account(tmp_path: Path) -> None:
    server = _Server()
    store = await _store(_anna("external", LEFT))
    await _remove_anna(store)
    await withdraw_view(store, _calendars(tmp_path, server), VIEW)
    assert server.deleted == [(LEFT.url, LEFT_COLLECTION)]
    assert await _state(store) is None
    removed = await _removed(store)
    assert removed is not None and removed.external is None


async def test_a_removed_members_account_that_refuses_carecal_is_erased_all_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = _Server(fails=Forbidden("401", status=401))
    store = await _store(_anna("external", LEFT))
    await _remove_anna(store)
    with caplog.at_level(logging.WARNING, logger="plugin.services.view_sync"):
        await withdraw_view(store, _calendars(tmp_path, server), VIEW)
    assert any("refused carecal" in r.getMessage() for r in caplog.records)
    removed = await _removed(store)
    assert removed is not None and removed.external is None


async def test_a_removed_members_server_that_is_down_is_retried_then_given_up(
    tmp_path: Path,
) -> None:
    server = _Server(fails=CalendarUnavailable("503", status=503))
    store = await _store(_anna("external", LEFT))
    await _remove_anna(store)
    with pytest.raises(CalendarUnavailable):
        await withdraw_view(store, _calendars(tmp_path, server), VIEW)
    removed = await _removed(store)
    assert removed is not None and removed.external == LEFT  # kept for the retry
    await withdraw_view(store, _calendars(tmp_path, server), VIEW, last_try=True)
    removed = await _removed(store)
    assert removed is not None and removed.external is None
    assert await _state(store) is None


async def test_the_state_names_its_server_and_only_its_own_is_forgotten(tmp_path: Path) -> None:
    """A state that names its server: the records go only when they are the left account's,
    whatever the paths."""
    elsewhere = ExternalCalendar("https://other.example.org/anna/", "anna", "pw")
    for holder, forgotten in ((LEFT, True), (elsewhere, False)):
        server = _Server()
        store = await _store(_anna("external", elsewhere))
        async with store.transaction() as tx:
            state = ViewState(
                LEFT_COLLECTION, "t", None, NOW, server=account_server(holder.url, holder.username)
            )
            await tx.save_view_state("north", "m-anna", "c-123", state)
        await withdraw_retired(store, _calendars(tmp_path, server), VIEW)
        assert server.deleted == [(LEFT.url, LEFT_COLLECTION)]
        assert (await _state(store) is None) is forgotten, holder


# --- a run's delta, read while the store is -----------------------------------------------


async def test_a_refusal_during_the_delta_is_the_same_as_without_the_overlap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`sync_view` asks for the delta while it reads the store. The member's own server
    refusing it is still logged and the run skipped (not raised, nor wrapped); a server that
    is down still raises CalendarUnavailable, for the job to retry."""
    from plugin.services.calendar_port import Probe
    from plugin.services.view_sync import sync_view

    class Refusing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def probe(self, path: str) -> Probe:
            return Probe("token-2", None, None)

        async def changes_since(self, path: str, token: str | None) -> Any:
            raise self.error

    for error in (Forbidden("401", status=401), CalendarUnavailable("503", status=503)):

        @asynccontextmanager
        async def opened(account: Account, error: Exception = error) -> AsyncIterator[object]:
            yield Refusing(error)

        store = await _store(_anna("external", NEW), state_at=None)
        async with store.transaction() as tx:
            collection = "/dav/anna/carecal-c-123/"
            state = ViewState(collection, "token-1", None, NOW, "f" * 64)
            await tx.save_view_state("north", "m-anna", "c-123", state)
        calendars = _calendars(tmp_path, opened)
        settings = make_settings(tmp_path)
        if isinstance(error, Forbidden):
            with caplog.at_level(logging.WARNING, logger="plugin.services.view_sync"):
                outcome = await sync_view(store, calendars, settings, VIEW, now=NOW)
            assert outcome.written == 0 and outcome.intents == ()
            assert any("refused the login" in r.getMessage() for r in caplog.records)
        else:
            with pytest.raises(CalendarUnavailable):
                await sync_view(store, calendars, settings, VIEW, now=NOW)


class _Deletes:
    """A calendar client that records collection deletions, or fails them."""

    def __init__(self, fails: Exception | None = None) -> None:
        self.fails = fails
        self.deleted: list[str] = []

    async def delete_collection(self, path: str) -> None:
        if self.fails is not None:
            raise self.fails
        self.deleted.append(path)


async def test_a_moved_views_old_collection_stays_while_another_view_is_there() -> None:
    """`_delete_left`: another view (here another member's, after a template change that
    swapped paths) synced to the old path already: its collection is not deleted."""
    from plugin.services.calendars import HOSTED, Target
    from plugin.services.view_sync import _delete_left

    store = MemoryStore()
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        state = ViewState("/dav/old/", "t", None, NOW, server=HOSTED)
        await tx.save_view_state("north", "m-bo", "c-123", state)
    client = _Deletes()
    target = Target(client, "/dav/new/", True, HOSTED)  # type: ignore[arg-type]
    await _delete_left(store, target, VIEW, "/dav/old/")
    assert client.deleted == []
    await _delete_left(store, target, VIEW, "/dav/elsewhere/")
    assert client.deleted == ["/dav/elsewhere/"]


async def test_a_moved_views_old_collection_on_a_server_that_refuses_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The new place is written all the same: the old one is logged and left. A server that
    is down raises (the job is retried, and the view still knows where it was)."""
    from plugin.services.calendars import HOSTED, Target
    from plugin.services.view_sync import _delete_left

    client = _Deletes(Forbidden("403", status=403))
    target = Target(client, "/dav/new/", True, HOSTED)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        await _delete_left(MemoryStore(), target, VIEW, "/dav/old/")
    assert "moved view's old collection left" in caplog.text
    down = _Deletes(CalendarUnavailable("down"))
    target = Target(down, "/dav/new/", True, HOSTED)  # type: ignore[arg-type]
    with pytest.raises(CalendarUnavailable):
        await _delete_left(MemoryStore(), target, VIEW, "/dav/old/")
