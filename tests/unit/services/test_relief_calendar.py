"""Which of a member's own objects a view's run reads (`relief_from_collection`): at most
MAX_FOREIGN a run, in href order, and when more changed at once, the runs after it read on
after the href it stopped at (`ForeignRead.after`, kept in the view's state), so none is
lost. The objects here are no relief events, so only the reading is seen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from adapters.memory import MemoryStore
from plugin.domain.model import Circle, Citizen
from plugin.services.calendar_port import Body
from plugin.services.calendars import View
from plugin.services.relief_calendar import MAX_FOREIGN, ForeignRead, relief_from_collection
from plugin.sync.planner import SyncRecord

NOW = datetime(2027, 3, 1, 9, tzinfo=UTC)
VIEW = View("north", "m-anna", "c-1")
CIRCLE = Circle(Citizen(tenant_id="north", id="c-1", display_name="Fru Jensen"), 1, ())
PATH = "/dav/north~m-anna/c-1/"
OURS = {"occ-1": SyncRecord("occ-1", PATH + "occ-1.ics", '"1"', "f")}
HERS = {f"{PATH}hers-{n:03}.ics": f'"{n}"' for n in range(2 * MAX_FOREIGN + 5)}
NOT_RELIEF = (
    b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nSUMMARY:Hairdresser\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)


class Reader:
    def __init__(self, bodies: Mapping[str, bytes] | None = None) -> None:
        self.asked: list[list[str]] = []
        self.bodies = bodies or {}

    async def __call__(self, hrefs: Sequence[str]) -> Mapping[str, tuple[str, Body]]:
        self.asked.append(list(hrefs))
        return {href: ('"e"', self.bodies.get(href, NOT_RELIEF)) for href in hrefs}

    async def read(
        self,
        listing: Mapping[str, str],
        *,
        full: bool = False,
        after: str | None = None,
        walk: Mapping[str, str] | None = None,
        records: Mapping[str, SyncRecord] = OURS,
    ) -> ForeignRead:
        return await relief_from_collection(
            MemoryStore(), self, VIEW, CIRCLE, records, listing,
            now=NOW, full=full, after=after, walk=walk,
        )  # fmt: skip


def records_and(changed: Mapping[str, str]) -> dict[str, str]:
    """A run's listing after a delta: carecal's copies (by their records) and what changed."""
    return {PATH + "occ-1.ics": '"1"', **changed}


async def test_more_changed_at_once_than_a_run_reads_are_read_in_the_runs_after() -> None:
    hers = sorted(HERS)
    everything = records_and(HERS)
    reader = Reader()
    first = await reader.read(records_and(HERS))
    # The next deltas name nothing new: the runs read on in the full listing.
    second = await reader.read(records_and({}), after=first.after, walk=everything)
    third = await reader.read(records_and({}), after=second.after, walk=everything)

    assert reader.asked == [
        hers[:MAX_FOREIGN],
        hers[MAX_FOREIGN : 2 * MAX_FOREIGN],
        hers[2 * MAX_FOREIGN :],
    ]
    assert (first.after, second.after, third.after) == (
        hers[MAX_FOREIGN - 1],
        hers[2 * MAX_FOREIGN - 1],
        None,
    )
    assert not (first.released or second.released or third.released)


async def test_what_changes_behind_the_walk_is_read_again_first() -> None:
    hers = sorted(HERS)
    after = hers[MAX_FOREIGN - 1]
    reader = Reader()
    changed = {hers[3]: '"new"'}  # read already, and changed since
    read = await reader.read(records_and(changed), after=after, walk=records_and(HERS))
    assert reader.asked == [[hers[3], *hers[MAX_FOREIGN : 2 * MAX_FOREIGN - 1]]]
    assert read.after == hers[2 * MAX_FOREIGN - 2]


async def test_a_full_listing_reads_on_after_the_walk_not_from_the_start() -> None:
    """A server without sync tokens lists every object in every run: read from the start
    each time, a walk would never end."""
    hers = sorted(HERS)
    reader = Reader()
    read = await reader.read(records_and(HERS), full=True, after=hers[2 * MAX_FOREIGN - 1])
    assert reader.asked == [hers[2 * MAX_FOREIGN :]]
    assert read.after is None


async def test_carecals_own_copies_are_never_read_here_and_few_changes_leave_no_walk() -> None:
    reader = Reader()
    assert await reader.read(records_and({})) == ForeignRead()
    assert reader.asked == []
    few = dict(list(HERS.items())[:3])
    assert await reader.read(records_and(few)) == ForeignRead()
    assert reader.asked == [sorted(few)]


def copy_of(uid: str) -> bytes:
    return (
        f"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nSUMMARY:[Ledig] Indkøb\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


async def test_a_copy_of_carecals_at_a_new_href_is_found_where_its_own_href_is_gone() -> None:
    """The app moved the copy (a MOVE, or a delete and a create under its own name)."""
    new = PATH + "0b6f2e1c.ics"
    reader = Reader({new: copy_of("occ-1")})
    moved = await reader.read({new: '"9"'})  # occ-1.ics gone, the new href there
    assert moved == ForeignRead(moved={"occ-1": new})
    # A copy it made again after its pass (the record a tombstone) is followed too.
    tombstone = {"occ-1": SyncRecord("occ-1", None, None, "f")}
    assert (await reader.read({new: '"9"'}, records=tombstone)).moved == {"occ-1": new}
    # With the copy still at its own href, one more with its UID is a duplicate, not ours.
    assert (await reader.read(records_and({new: '"9"'}))).moved == {}


async def test_a_copy_of_another_care_calendars_is_a_stray_and_no_relief() -> None:
    stray = PATH + "t-9_20270316T1000@north.ics"
    body = copy_of("t-9_20270316T1000@north").replace(
        b"END:VEVENT", b"X-CARECAL-TASK:t-9\r\nEND:VEVENT"
    )
    reader = Reader({stray: body})
    read = await reader.read(records_and({stray: '"4"'}))
    assert read == ForeignRead(strays={"t-9_20270316T1000@north": (stray, '"e"')})
    # Her own event, whatever its UID, is not carecal's: no X-CARECAL-TASK.
    reader = Reader({stray: copy_of("t-9_20270316T1000@north")})
    assert (await reader.read(records_and({stray: '"4"'}))).strays == {}
