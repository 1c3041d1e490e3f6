"""What the staff dashboard reads of a circle, on the in-memory store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from adapters.memory import MemoryStore
from plugin.domain.model import (
    Capacity,
    Circle,
    Citizen,
    Claim,
    Member,
    Occurrence,
    Pass,
    ReliefRequest,
    TargetedOffer,
    Task,
)
from plugin.domain.staffing import Risk
from plugin.services.dashboard import list_circles, read_dashboard

CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2027, 3, 15, 9, 30, tzinfo=UTC)  # 10:30 in Copenhagen
AT_RISK = timedelta(hours=48)
HOUR = timedelta(hours=1)
ANNA = Member("m-anna", "Anna", "relative", "full", capacity=Capacity(hours_per_week=1.25))
BO = Member("m-bo", "Bo", "network", "limited", locale="en", capacity=Capacity(tasks_per_week=2))
SARA = Member("m-sara", "Sara", "staff", "full")
CITIZEN = Citizen("north", "c-123", "Fru Jensen")


def task(task_id: str, **changes: object) -> Task:
    base = Task("north", task_id, "c-123", 1, "task", "shopping", datetime(2027, 3, 1, 10),
                datetime(2027, 3, 1, 11), "Europe/Copenhagen", claim_deadline_hours=24)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def at(day: int, hour: int = 10) -> datetime:
    return datetime(2027, 3, day, hour, tzinfo=CPH)


async def seeded() -> MemoryStore:
    store = MemoryStore()
    weekly = [Occurrence(f"w-{d}", "weekly", at(d), at(d, 12)) for d in (1, 8, 15, 22, 29)]
    async with store.transaction() as tx:
        await tx.ensure_tenant("north")
        await tx.save_circle("north", Circle(CITIZEN, 1, (ANNA, BO, SARA)), NOW)
        await tx.save_circle("north", Circle(Citizen("north", "c-0", "Hr. Berg"), 1, ()), NOW)
        await tx.save_task(task("weekly"))
        await tx.sync_occurrences("north", "weekly", weekly)
        for occurrence in weekly[:4]:  # Anna: 1, 8, 15 (this morning), 22 March
            await tx.add_claim("north", Claim(occurrence.id, "m-anna", "link", NOW))
        # The day after tomorrow at 10, its deadline in 24.5 hours: at risk; staff asked Bo
        # and Anna, and Anna passed.
        await tx.save_task(task("soon"))
        await tx.sync_occurrences("north", "soon", [Occurrence("s", "soon", at(17), at(17, 11))])
        await tx.add_targeted_offer("north", TargetedOffer("s", "m-bo", NOW))
        await tx.add_targeted_offer("north", TargetedOffer("s", "m-anna", NOW))
        await tx.add_pass("north", Pass("s", "m-anna", NOW))
        # Today at 12, deadline passed: unfilled.
        await tx.save_task(task("late"))
        await tx.sync_occurrences(
            "north", "late", [Occurrence("l", "late", at(15, 12), at(15, 13))]
        )
        # A visit by Sara, not yet stored as a claim.
        await tx.save_task(task("visit", kind="visit", category="visit",
                                assigned_member_id="m-sara"))  # fmt: skip
        await tx.sync_occurrences("north", "visit", [Occurrence("v", "visit", at(18), at(18, 11))])
        # Far ahead, beyond four weeks: not listed.
        far = at(31) + timedelta(days=20)
        await tx.save_task(task("far"))
        await tx.sync_occurrences("north", "far", [Occurrence("f", "far", far, far + HOUR)])
        week = timedelta(days=7)
        for request in (
            ReliefRequest("north", "r-open", "c-123", "m-anna", NOW, NOW + week),
            ReliefRequest("north", "r-done", "c-123", "m-anna", NOW, NOW + week, status="approved"),
            ReliefRequest("north", "r-past", "c-123", "m-bo", NOW - 2 * week, NOW - week),
        ):
            await tx.save_relief_request(request)
    return store


async def test_the_coming_weeks_with_holders_and_risks() -> None:
    data = await read_dashboard(await seeded(), "north", "c-123", now=NOW, at_risk=AT_RISK)
    assert data is not None
    rows = [(s.record.occurrence.id, s.holders, s.asked, s.risk) for s in data.coming]
    assert rows == [
        ("l", (), (), Risk.UNFILLED),
        ("s", (), ("Bo",), Risk.AT_RISK),  # Anna passed: no longer "asked"
        ("v", ("Sara",), (), None),
        ("w-22", ("Anna",), (), None),
        ("w-29", (), (), None),
    ]
    assert [s.record.occurrence.id for s in data.attention] == ["l", "s"]  # soonest due first
    assert [r.id for r in data.relief] == ["r-open"]


async def test_load_against_capacity_in_the_rolling_window() -> None:
    store = await seeded()
    async with store.transaction() as tx:
        await tx.add_claim("north", Claim("w-29", "m-anna", "link", NOW))
        await tx.add_claim("north", Claim("v", "m-sara", "staff", NOW))  # as ingest does
    data = await read_dashboard(store, "north", "c-123", now=NOW, at_risk=AT_RISK)
    assert data is not None
    # Monday 15 March: the window is this week and the three after it.
    assert data.window.start == datetime(2027, 3, 15, tzinfo=CPH)
    assert data.window.end == datetime(2027, 4, 12, tzinfo=CPH)
    loads = {load.member.id: load for load in data.loads}
    anna = loads["m-anna"]
    assert (anna.previous.tasks, anna.previous.hours) == (2, 4.0)  # 1 and 8 March
    assert (anna.current.tasks, anna.current.hours) == (3, 6.0)  # 15, 22 and 29 March
    assert anna.capacity_hours == 5.0 and anna.capacity_tasks is None
    assert anna.over and not anna.previous_over
    assert loads["m-sara"].current.hours == 1.0 and loads["m-sara"].capacity_hours is None
    assert not loads["m-sara"].over
    assert loads["m-bo"].capacity_tasks == 8 and not loads["m-bo"].over
    assert [load.member.id for load in data.loads] == ["m-anna", "m-bo", "m-sara"]


async def test_unknown_circle_and_the_list_of_circles() -> None:
    store = await seeded()
    assert await read_dashboard(store, "north", "nope", now=NOW, at_risk=AT_RISK) is None
    assert await read_dashboard(store, "south", "c-123", now=NOW, at_risk=AT_RISK) is None
    assert [c.display_name for c in await list_circles(store, "north")] == [
        "Fru Jensen",
        "Hr. Berg",
    ]
    assert await list_circles(store, "south") == []
