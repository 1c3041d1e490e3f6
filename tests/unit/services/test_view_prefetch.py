"""While the store reads a view, a run asks the server for the delta and fetches the objects
it names when they are few (`view_sync._prefetch`); the run then fetches only what it needs
and was not fetched then (`view_sync._fetch`). A fetch that fails while the store reads costs
nothing but the retry the run makes anyway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from plugin.services.calendar_port import (
    CalendarUnavailable,
    Delta,
    Forbidden,
    InvalidSyncToken,
    NotFound,
    Probe,
)
from plugin.services.calendars import HOSTED, Target
from plugin.services.ports import ViewState
from plugin.services.view_sync import (
    PREFETCH_BODIES,
    _delta_probe,
    _fetch,
    _prefetch,
    _Prefetched,
)

PATH = "/dav/north~m-anna/c-123/"
STATE = ViewState(PATH, "tok-1", None, datetime(2027, 3, 1, tzinfo=UTC), "i" * 64, 1, HOSTED)


def href(n: int) -> str:
    return f"{PATH}{n}.ics"


class Server:
    """The two requests a prefetch makes, answered from a dict; every multiget noted."""

    def __init__(self, changed: int, *, fetch_fails: bool = False, token_valid: bool = True):
        self.changed = changed
        self.fetch_fails = fetch_fails
        self.token_valid = token_valid
        self.fetched: list[list[str]] = []

    async def changes_since(self, path: str, sync_token: str | None) -> Delta:
        assert (path, sync_token) == (PATH, "tok-1")
        if not self.token_valid:
            raise InvalidSyncToken(path)
        return Delta("tok-2", tuple((href(n), f'"e{n}"') for n in range(self.changed)), ())

    async def fetch(self, path: str, hrefs: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        assert path == PATH
        self.fetched.append(list(hrefs))
        if self.fetch_fails:
            raise CalendarUnavailable("down")
        return {h: (f'"e{h}"', b"BEGIN:VCALENDAR " + h.encode()) for h in hrefs}


def target(server: Server) -> Target:
    return Target(server, PATH, polled=False, server=HOSTED)  # type: ignore[arg-type]


async def test_a_members_answer_is_fetched_with_the_delta() -> None:
    server = Server(changed=2)
    got = await _prefetch(target(server), STATE, Probe("tok-2", None))
    assert got is not None and got.delta is not None
    assert server.fetched == [[href(0), href(1)]]
    assert set(got.bodies) == {href(0), href(1)}
    # The run needs one of them and one more: only that one is fetched again.
    bodies = await _fetch(server, PATH, [href(1), href(7)], got)  # type: ignore[arg-type]
    assert server.fetched == [[href(0), href(1)], [href(7)]]
    assert set(bodies) == {href(1), href(7)}
    assert bodies[href(1)] == got.bodies[href(1)]


async def test_a_large_delta_is_fetched_once_the_run_knows_what_it_needs() -> None:
    server = Server(changed=PREFETCH_BODIES + 1)
    got = await _prefetch(target(server), STATE, Probe("tok-2", None))
    assert got is not None and got.delta is not None and len(got.delta.changed) == 17
    assert got.bodies == {} and server.fetched == []
    await _fetch(server, PATH, [href(3)], got)  # type: ignore[arg-type]
    assert server.fetched == [[href(3)]]


async def test_a_fetch_that_fails_with_the_delta_is_made_again_by_the_run() -> None:
    server = Server(changed=1, fetch_fails=True)
    got = await _prefetch(target(server), STATE, Probe("tok-2", None))
    assert got is not None and got.delta is not None and got.bodies == {}
    with pytest.raises(CalendarUnavailable):  # still down: the job is retried
        await _fetch(server, PATH, [href(0)], got)  # type: ignore[arg-type]
    server.fetch_fails = False
    assert set(await _fetch(server, PATH, [href(0)], got)) == {href(0)}  # type: ignore[arg-type]
    assert server.fetched == [[href(0)]] * 3


@pytest.mark.parametrize(
    ("probe", "state"),
    [
        (None, STATE),  # no probe: the run cannot tell yet
        (Probe("tok-1", None), STATE),  # nothing changed
        (Probe(None, '"c"'), STATE),  # a server without sync tokens
        (Probe("tok-2", None), ViewState(PATH, None, None, STATE.synced_at)),  # no token kept
        (Probe("tok-2", None), ViewState("/elsewhere/", "tok-1", None, STATE.synced_at)),
    ],
)
async def test_no_delta_is_asked_for_when_the_run_will_not_ask_for_one(
    probe: Probe | None, state: ViewState
) -> None:
    server = Server(changed=1)
    assert await _prefetch(target(server), state, probe) is None
    assert server.fetched == []


async def test_an_invalid_token_fetches_nothing() -> None:
    server = Server(changed=1, token_valid=False)
    assert await _prefetch(target(server), STATE, Probe("tok-2", None)) == _Prefetched(
        "tok-1", None
    )
    assert server.fetched == []


async def test_a_read_that_fails_before_it_peeks_fails_the_run_with_its_own_error() -> None:
    from adapters.memory import MemoryStore
    from plugin.services.calendars import View
    from plugin.services.ports import StoreUnavailable
    from plugin.services.view_sync import _peek_reading

    store = MemoryStore()
    store.unavailable = True
    with pytest.raises(StoreUnavailable):
        await _peek_reading(store, View("north", "m-anna", "c-123"), STATE.synced_at)


async def test_a_view_never_synced_peeks_nothing_and_is_read_whole() -> None:
    from adapters.memory import MemoryStore
    from plugin.domain.model import Circle, Citizen, Member
    from plugin.services.calendars import View
    from plugin.services.view_sync import _peek_reading

    store = MemoryStore()
    anna = Member("m-anna", "Anna", "relative", "full", calendar="hosted")
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", Circle(Citizen("north", "c-123", "Fru Jensen"), 1, (anna,)),
                             STATE.synced_at)  # fmt: skip
    peek, reading, _ = await _peek_reading(store, View("north", "m-anna", "c-123"), STATE.synced_at)
    assert peek is None  # no state yet: the run reads it all at once
    gathered = await reading
    assert gathered is not None and gathered.member.id == "m-anna" and gathered.state is None


class Answering:
    """A delta as a server answers it (or the error it raises), every request noted."""

    def __init__(self, answer: Delta | Exception) -> None:
        self.answer = answer
        self.asked: list[str | None] = []

    async def changes_since(self, path: str, sync_token: str | None) -> Delta:
        self.asked.append(sync_token)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def answering(answer: Delta | Exception) -> tuple[Answering, Target]:
    server = Answering(answer)
    return server, Target(server, PATH, polled=False, server=HOSTED)  # type: ignore[arg-type]


async def test_the_delta_stands_for_the_probe() -> None:
    kept = replace(STATE, ctag='"c-1"')
    # Nothing changed: the markers as kept (the ctag too), and an empty delta to go on from.
    server, at = answering(Delta("tok-1", (), ()))
    probe, prefetched = await _delta_probe(at, kept)
    assert probe == Probe("tok-1", '"c-1"') and server.asked == ["tok-1"]
    assert prefetched == _Prefetched("tok-1", Delta("tok-1", (), ()))
    # A change: the new token, and the delta the run reads it from.
    changed = Delta("tok-2", ((href(1), '"e1"'),), ())
    _, at = answering(changed)
    assert await _delta_probe(at, kept) == (Probe("tok-2", None), _Prefetched("tok-1", changed))


async def test_changes_under_an_unchanged_token_leave_no_marker_to_trust() -> None:
    """A server answering changes with the token the run sent: neither the token nor the
    ctag may make the run idle; it lists every ETag (`_read_remote` with no markers)."""
    odd = Delta("tok-1", ((href(1), '"e1"'),), ())
    _, at = answering(odd)
    assert await _delta_probe(at, replace(STATE, ctag='"c-1"')) == (
        Probe(None, None),
        _Prefetched("tok-1", odd),
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Refused token: the run probes, then lists, and asks for no delta again.
        (InvalidSyncToken(PATH), (None, _Prefetched("tok-1", None))),
        # Gone, or refused: the run's probe reads it as it always has.
        (NotFound(PATH), (None, None)),
        (Forbidden(PATH), (None, None)),
    ],
)
async def test_an_answer_the_probe_reads_better_leaves_the_run_to_probe(
    answer: Exception, expected: tuple[Probe | None, _Prefetched | None]
) -> None:
    _, at = answering(answer)
    assert await _delta_probe(at, STATE) == expected


async def test_a_server_that_is_down_fails_the_run() -> None:
    _, at = answering(CalendarUnavailable("down"))
    with pytest.raises(CalendarUnavailable):
        await _delta_probe(at, STATE)


@pytest.mark.parametrize(
    "state",
    [
        ViewState(PATH, None, '"c-1"', STATE.synced_at),  # no token kept: a ctag server
        replace(STATE, collection="/elsewhere/"),  # the view moved
    ],
)
async def test_no_delta_stands_for_a_probe_without_a_token_here(state: ViewState) -> None:
    server, at = answering(Delta("tok-2", (), ()))
    assert await _delta_probe(at, state) == (None, None)
    assert server.asked == []
