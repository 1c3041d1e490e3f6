"""Whose capacity counts (`plugin.domain.capacity`): the member's own setting against the host's
`circle.updated`, and availability and pause at a given time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from plugin.domain.capacity import (
    CareValues,
    MemberSettings,
    available_at,
    effective_member,
    paused_at,
    settle,
    values_of,
)
from plugin.domain.model import AvailabilityWindow, Capacity, Member

CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2027, 3, 1, 9, tzinfo=UTC)
HOST = Member(
    id="m-anna",
    name="Anna",
    role="relative",
    visibility="full",
    capacity=Capacity(4.0, 3),
    availability=(AvailabilityWindow(1, time(16), time(20)),),
)
OWN = CareValues(
    Capacity(2.0, None), (AvailabilityWindow(2, time(9), time(12)),), date(2027, 3, 20)
)


def settings(*fields: str) -> MemberSettings:
    return MemberSettings(
        "north",
        "c-1",
        "m-anna",
        OWN,
        values_of(HOST),
        frozenset(fields),
        3,
        NOW,  # type: ignore[arg-type]
    )


def test_the_members_own_setting_applies_to_the_fields_it_decides() -> None:
    assert effective_member(HOST, None) == HOST
    both = effective_member(HOST, settings("capacity", "paused_until"))
    assert both.capacity == Capacity(2.0, None)
    assert both.paused_until == date(2027, 3, 20)
    assert both.availability == HOST.availability  # not theirs: the host's
    assert effective_member(HOST, settings()) == HOST


def test_a_repeated_host_value_keeps_the_members_setting() -> None:
    own = settings("capacity", "availability", "paused_until")
    renamed = replace(HOST, name="Anna J.", email="anna@example.org")  # circle.updated for that
    assert settle(own, renamed) is own


def test_a_changed_host_value_takes_only_that_field_back() -> None:
    own = settings("capacity", "availability", "paused_until")
    paused_by_staff = replace(HOST, paused_until=date(2027, 4, 1))
    settled = settle(own, paused_by_staff)
    assert settled is not None and settled.fields == {"capacity", "availability"}
    assert effective_member(paused_by_staff, settled).paused_until == date(2027, 4, 1)
    assert effective_member(paused_by_staff, settled).capacity == Capacity(2.0, None)
    everything = replace(
        HOST, capacity=Capacity(6, 3), availability=(), paused_until=date(2027, 4, 1)
    )
    assert settle(own, everything) is None


def test_availability_is_a_weekly_window_in_the_citizens_zone() -> None:
    monday_evening = datetime(2027, 3, 29, 17, tzinfo=CPH)  # after the DST change
    assert available_at(HOST, monday_evening, monday_evening.replace(hour=19), CPH)
    assert not available_at(HOST, monday_evening, monday_evening.replace(hour=21), CPH)
    tuesday = datetime(2027, 3, 30, 17, tzinfo=CPH)
    assert not available_at(HOST, tuesday, tuesday.replace(hour=18), CPH)
    anytime = replace(HOST, availability=())
    assert available_at(anytime, tuesday, tuesday.replace(hour=18), CPH)
    # 15:30 UTC is 17:30 in Copenhagen (summer time): inside the window.
    utc = datetime(2027, 3, 29, 15, 30, tzinfo=UTC)
    assert available_at(HOST, utc, utc.replace(hour=16), CPH)


def test_a_pause_runs_through_its_last_day() -> None:
    paused = replace(HOST, paused_until=date(2027, 3, 20))
    assert paused_at(paused, datetime(2027, 3, 20, 23, 30, tzinfo=CPH), CPH)
    assert not paused_at(paused, datetime(2027, 3, 21, 0, 0, tzinfo=CPH), CPH)
    assert not paused_at(HOST, datetime(2027, 3, 1, tzinfo=CPH), CPH)
