"""A poll probes the views whose last sync failed (and waits for its retry) after all the
others (`view_sync.poll_round`): a dead server's probes, which may wait out the client's whole
timeout, never hold up the others' in the queue for the poll's connection slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.memory import MemoryStore
from plugin.domain.model import Circle, Citizen, ExternalCalendar, Member
from plugin.services.calendar_port import Probe
from plugin.services.calendars import Account, Calendars, View, external_collection
from plugin.services.ports import ViewState
from plugin.services.view_sync import JOB_VIEW_SYNC, poll_round
from tests.integration.support import make_settings

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
NAMES = ("anna", "bo", "carl", "dora")


def member(name: str) -> Member:
    account = ExternalCalendar(f"https://dav.example.org/{name}/", name, "app-pw")
    return Member(
        f"m-{name}", name.title(), "relative", "full", calendar="external", external=account
    )


class Servers:
    """Every member's own server: notes the order of the probes; `dead` ones fail."""

    def __init__(self, dead: set[str]) -> None:
        self.dead = dead
        self.probed: list[str] = []

    @asynccontextmanager
    async def __call__(self, account: Account) -> AsyncIterator[object]:
        servers = self

        class Client:
            async def probe(self, path: str) -> Probe:
                servers.probed.append(account.username)
                await asyncio.sleep(0.01)  # the others queue for the one slot meanwhile
                if account.username in servers.dead:
                    raise ConnectionError("no answer")
                return Probe("tok-1", None)

        yield Client()


async def test_views_waiting_for_a_retry_are_probed_after_the_others(tmp_path: Path) -> None:
    store = MemoryStore()
    citizen = Citizen("north", "c-1", "Fru Jensen")
    members = tuple(member(name) for name in NAMES)
    views = [View("north", m.id, "c-1") for m in members]
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", Circle(citizen, 1, members), NOW)
        for m, view in zip(members, views, strict=True):
            assert m.external is not None
            path = external_collection(m.external.url, "c-1")
            state = ViewState(path, "tok-1", None, NOW, "i" * 64, 0)
            await tx.save_view_state("north", view.member_id, "c-1", state)
        # Anna's and Carl's last syncs failed: each waits for its retry.
        for view in (views[0], views[2]):
            await tx.enqueue_job("north", JOB_VIEW_SYNC, {}, run_at=NOW, key=view.job_key)
    for leased in await store.lease_jobs("w", now=NOW, limit=10, lease_seconds=60):
        await store.fail_job(leased.id, "w", error="down", retry_at=NOW + timedelta(minutes=5))

    settings = make_settings(tmp_path)
    tenants = [t.model_copy(update={"allow_private_calendar_urls": True}) for t in settings.tenants]
    servers = Servers(dead={"anna"})
    calendars = Calendars(
        settings.model_copy(update={"tenants": tenants}),
        service=None,
        open_account=servers,  # type: ignore[arg-type]
    )
    tally: dict[str, int] = {}
    due = await poll_round(store, calendars, views, now=NOW, concurrency=1, tally=tally)

    assert servers.probed[:2] == ["bo", "dora"]  # in the order given, but the retrying last
    assert sorted(servers.probed[2:]) == ["anna", "carl"]
    # Carl's server answers: his retry is pulled forward; Anna's still does not: hers stands.
    assert [view.member_id for view, _ in due] == ["m-carl"]
    assert tally == {"due": 1, "down": 1, "idle": 2, "unanswered": 0}
