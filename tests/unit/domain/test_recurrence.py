import doctest
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.domain import recurrence
from plugin.domain.model import Task
from plugin.domain.recurrence import (
    MAX_OCCURRENCES,
    ExpansionTooLarge,
    InvalidRecurrence,
    InvalidTaskTimes,
    UnknownTimezone,
    expand,
    occurrence_id,
    validate_rrule,
)

CPH = ZoneInfo("Europe/Copenhagen")
EVER = {
    "window_start": datetime(1990, 1, 1, tzinfo=UTC),
    "window_end": datetime(2100, 1, 1, tzinfo=UTC),
}


def task(
    start: datetime,
    end: datetime | None = None,
    recurrence: str | None = None,
    exdates: tuple[datetime, ...] = (),
    rdates: tuple[datetime, ...] = (),
) -> Task:
    return Task(
        tenant_id="demo",
        id="t-1",
        citizen_id="c-123",
        version=1,
        kind="task",
        category="shopping",
        start=start,
        end=end or start + timedelta(hours=1),
        timezone="Europe/Copenhagen",
        recurrence=recurrence,
        exdates=exdates,
        rdates=rdates,
    )


def starts(t: Task, **window: datetime) -> list[str]:
    return [o.start.isoformat() for o in expand(t, **(window or EVER))]


def last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


def test_doctests() -> None:
    assert doctest.testmod(recurrence, optionflags=doctest.ELLIPSIS).failed == 0


def test_occurrence_id_uses_the_original_wall_clock_start() -> None:
    assert occurrence_id("t-1", datetime(2027, 3, 28, 2, 30, 59)) == "t-1_20270328T0230"


def test_weekly_task_stays_at_ten_local_across_spring_forward() -> None:
    # The task.upserted example of DESIGN.md.
    t = task(datetime(2027, 3, 23, 10), recurrence="FREQ=WEEKLY;COUNT=4")
    occurrences = expand(t, **EVER)
    assert [o.id for o in occurrences] == [
        "t-1_20270323T1000",
        "t-1_20270330T1000",
        "t-1_20270406T1000",
        "t-1_20270413T1000",
    ]
    assert [o.start.isoformat() for o in occurrences[:2]] == [
        "2027-03-23T10:00:00+01:00",
        "2027-03-30T10:00:00+02:00",
    ]
    assert all(o.end - o.start == timedelta(hours=1) for o in occurrences)
    assert all(o.start.tzinfo == CPH and o.task_id == "t-1" for o in occurrences)


def test_nonexistent_time_moves_forward_by_the_gap_and_keeps_its_id() -> None:
    t = task(datetime(2027, 3, 21, 2, 30), recurrence="FREQ=WEEKLY;COUNT=3")
    occurrences = expand(t, **EVER)
    assert [(o.id, o.start.isoformat(), o.end.isoformat()) for o in occurrences] == [
        ("t-1_20270321T0230", "2027-03-21T02:30:00+01:00", "2027-03-21T03:30:00+01:00"),
        ("t-1_20270328T0230", "2027-03-28T03:30:00+02:00", "2027-03-28T04:30:00+02:00"),
        ("t-1_20270404T0230", "2027-04-04T02:30:00+02:00", "2027-04-04T03:30:00+02:00"),
    ]


def test_ambiguous_time_takes_the_first_occurrence() -> None:
    (occurrence,) = expand(task(datetime(2027, 10, 31, 2, 30)), **EVER)
    assert occurrence.start.isoformat() == "2027-10-31T02:30:00+02:00"
    assert occurrence.start.fold == 0


def test_end_is_start_plus_wall_clock_duration() -> None:
    # 02:30-03:15 on spring-forward day: the start moves to 03:30, the end follows it.
    t = task(datetime(2027, 3, 28, 2, 30), datetime(2027, 3, 28, 3, 15))
    (occurrence,) = expand(t, **EVER)
    assert occurrence.end.isoformat() == "2027-03-28T04:15:00+02:00"


def test_non_recurring_task_is_one_occurrence_only_inside_the_window() -> None:
    t = task(datetime(2027, 3, 23, 10))
    assert starts(t) == ["2027-03-23T10:00:00+01:00"]
    assert (
        starts(t, window_start=datetime(2027, 3, 24, tzinfo=UTC), window_end=EVER["window_end"])
        == []
    )


@pytest.mark.parametrize(
    ("window_start", "window_end", "expected"),
    [
        # [09:00Z, 10:00Z) is the occurrence itself (10:00-11:00 CET).
        (datetime(2027, 3, 23, 10, tzinfo=UTC), datetime(2027, 3, 24, tzinfo=UTC), 0),
        (datetime(2027, 3, 23, 9, 59, tzinfo=UTC), datetime(2027, 3, 24, tzinfo=UTC), 1),
        (datetime(2027, 3, 23, tzinfo=UTC), datetime(2027, 3, 23, 9, tzinfo=UTC), 0),
        (datetime(2027, 3, 23, tzinfo=UTC), datetime(2027, 3, 23, 9, 1, tzinfo=UTC), 1),
        (datetime(2027, 3, 23, 9, 30, tzinfo=UTC), datetime(2027, 3, 23, 9, 31, tzinfo=UTC), 1),
    ],
)
def test_window_is_half_open_overlap(
    window_start: datetime, window_end: datetime, expected: int
) -> None:
    t = task(datetime(2027, 3, 23, 10))
    assert len(expand(t, window_start=window_start, window_end=window_end)) == expected


def test_zero_length_task_belongs_to_the_window_it_falls_in() -> None:
    t = task(datetime(2027, 3, 23, 10), datetime(2027, 3, 23, 10))
    at = datetime(2027, 3, 23, 9, tzinfo=UTC)
    assert len(expand(t, window_start=at, window_end=at + timedelta(minutes=1))) == 1
    assert expand(t, window_start=at - timedelta(minutes=1), window_end=at) == []


def test_rdates_are_added_and_exdates_removed_but_still_counted() -> None:
    t = task(
        datetime(2027, 3, 23, 10),
        recurrence="FREQ=WEEKLY;COUNT=3",
        exdates=(datetime(2027, 3, 30, 10),),
        rdates=(datetime(2027, 3, 25, 15), datetime(2027, 3, 23, 10)),
    )
    assert starts(t) == [
        "2027-03-23T10:00:00+01:00",
        "2027-03-25T15:00:00+01:00",
        "2027-04-06T10:00:00+02:00",
    ]


def test_dtstart_is_the_first_instance_even_off_rule() -> None:
    # 2027-03-23 is a Tuesday; RFC 5545: DTSTART always counts as the first occurrence.
    t = task(datetime(2027, 3, 23, 10), recurrence="FREQ=WEEKLY;BYDAY=MO;COUNT=3")
    assert [s[:10] for s in starts(t)] == ["2027-03-23", "2027-03-29", "2027-04-05"]


@pytest.mark.parametrize(
    ("until", "count"),
    [
        ("20270413T080000Z", 4),  # 10:00 CEST, inclusive
        ("20270413T075959Z", 3),
        ("20270413T100000", 4),  # floating: local wall clock
        ("20270413", 4),  # a bare date bounds the whole day
        ("20270412", 3),
        ("20270101T000000Z", 1),  # before DTSTART: DTSTART alone
    ],
)
def test_until(until: str, count: int) -> None:
    t = task(datetime(2027, 3, 23, 10), recurrence=f"FREQ=WEEKLY;UNTIL={until}")
    assert len(expand(t, **EVER)) == count


def test_unbounded_rule_is_bounded_by_the_window() -> None:
    t = task(datetime(2027, 3, 23, 10), recurrence="FREQ=DAILY")
    window = {
        "window_start": datetime(2030, 1, 1, tzinfo=UTC),
        "window_end": datetime(2030, 2, 26, tzinfo=UTC),
    }
    assert len(expand(t, **window)) == 56


def test_monthly_last_weekday_and_first_monday() -> None:
    last_weekday = task(
        datetime(2027, 1, 29, 9), recurrence="FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=3"
    )
    assert [s[:10] for s in starts(last_weekday)] == ["2027-01-29", "2027-02-26", "2027-03-31"]
    first_monday = task(datetime(2027, 1, 4, 9), recurrence="FREQ=MONTHLY;BYDAY=1MO;COUNT=3")
    assert [s[:10] for s in starts(first_monday)] == ["2027-01-04", "2027-02-01", "2027-03-01"]


@pytest.mark.parametrize(
    ("start", "rule"),
    [
        (datetime(2027, 1, 1, 10), "FREQ=DAILY;INTERVAL=7;BYDAY=MO"),  # a Friday, for ever
        (datetime(2027, 1, 1, 10), "FREQ=MONTHLY;INTERVAL=2;BYMONTH=2"),  # odd months only
        (datetime(2027, 1, 31, 10), "FREQ=MONTHLY;BYMONTH=4,6"),  # the 31st, in 30-day months
        (datetime(2027, 1, 31, 10), "FREQ=YEARLY;BYMONTH=4"),
    ],
)
def test_a_rule_that_can_never_match_again_leaves_dtstart_alone(start: datetime, rule: str) -> None:
    # dateutil would search until year 9999 (seconds of CPU) to find nothing.
    assert starts(task(start, recurrence=rule)) == [start.replace(tzinfo=CPH).isoformat()]


def test_expansion_is_capped() -> None:
    minutes = ",".join(str(m) for m in range(0, 60, 15))
    t = task(
        datetime(2027, 3, 1),
        recurrence=f"FREQ=DAILY;BYHOUR={','.join(map(str, range(24)))};BYMINUTE={minutes}",
    )
    window = {
        "window_start": datetime(2027, 3, 1, tzinfo=UTC),
        "window_end": datetime(2027, 4, 1, tzinfo=UTC),
    }
    occurrences = expand(t, **window)
    assert len(occurrences) == MAX_OCCURRENCES
    assert occurrences == sorted(occurrences, key=lambda o: o.start)


def test_reaching_a_far_window_through_a_dense_rule_is_refused() -> None:
    t = task(datetime(1990, 1, 1), recurrence=f"FREQ=DAILY;BYHOUR={','.join(map(str, range(24)))}")
    with pytest.raises(ExpansionTooLarge):
        expand(
            t,
            window_start=datetime(2027, 1, 1, tzinfo=UTC),
            window_end=datetime(2027, 2, 1, tzinfo=UTC),
        )


@pytest.mark.parametrize("name", ["Mars/Olympus", "Europe", "", "../etc/passwd", "CET/"])
def test_unknown_zones_are_one_error(name: str) -> None:
    with pytest.raises(UnknownTimezone):
        recurrence.zone(name)


def test_bad_task_times_and_windows() -> None:
    with pytest.raises(InvalidTaskTimes):
        expand(task(datetime(2027, 3, 23, 10), datetime(2027, 3, 23, 9)), **EVER)
    with pytest.raises(UnknownTimezone):
        expand(replace(task(datetime(2027, 3, 23, 10)), timezone="Mars/Olympus"), **EVER)
    with pytest.raises(ValueError, match="timezone-aware"):
        expand(
            task(datetime(2027, 3, 23, 10)),
            window_start=datetime(2027, 1, 1),
            window_end=EVER["window_end"],
        )


@pytest.mark.parametrize(
    "value",
    [
        "FREQ=WEEKLY",
        "FREQ=WEEKLY;COUNT=4",
        "freq=weekly;byday=mo,th",
        "FREQ=DAILY;INTERVAL=2;UNTIL=20271231T230000Z",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
        "FREQ=MONTHLY;BYDAY=-1FR",
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
        "FREQ=YEARLY;BYMONTH=3;BYDAY=SU;BYSETPOS=-1",
        "FREQ=YEARLY;BYDAY=20MO",
        "FREQ=WEEKLY;BYDAY=MO;BYHOUR=8,20;BYMINUTE=30;WKST=SU",
    ],
)
def test_valid_rules_expand(value: str) -> None:
    validate_rrule(value)
    t = task(datetime(2027, 1, 1, 10), recurrence=value)
    assert expand(t, window_start=EVER["window_start"], window_end=datetime(2037, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("RRULE:FREQ=WEEKLY", "prefix"),
        ("FREQ=WEEKLY\nRRULE:FREQ=DAILY", "one line"),
        ("FREQ=WEEKLY;" + "BYDAY=MO" * 100, "longer"),
        ("WEEKLY", "NAME=VALUE"),
        ("FREQ=WEEKLY;;COUNT=2", "NAME=VALUE"),
        ("FREQ=WEEKLY;FREQ=DAILY", "twice"),
        ("COUNT=3", "FREQ is required"),
        ("FREQ=SECONDLY", "not allowed"),
        ("FREQ=MINUTELY", "not allowed"),
        ("FREQ=HOURLY;COUNT=2", "not allowed"),
        ("FREQ=FORTNIGHTLY", "unknown FREQ"),
        ("FREQ=WEEKLY;FOO=1", "unsupported"),
        ("FREQ=DAILY;BYSECOND=5", "unsupported"),
        ("FREQ=YEARLY;BYYEARDAY=366", "unsupported"),
        ("FREQ=WEEKLY;COUNT=2;UNTIL=20270413T000000Z", "COUNT and UNTIL"),
        ("FREQ=WEEKLY;COUNT=0", "outside"),
        ("FREQ=WEEKLY;COUNT=-1", "outside"),
        ("FREQ=WEEKLY;COUNT=two", "whole number"),
        ("FREQ=WEEKLY;INTERVAL=0", "outside"),
        ("FREQ=WEEKLY;INTERVAL=1,2", "one number"),
        ("FREQ=WEEKLY;BYDAY=XX", "weekday"),
        ("FREQ=WEEKLY;BYDAY=MO,", "empty item"),
        ("FREQ=MONTHLY;BYDAY=0MO", "zero"),
        ("FREQ=WEEKLY;BYDAY=1MO", "MONTHLY or YEARLY"),
        ("FREQ=MONTHLY;BYDAY=6MO", "within ±5"),
        ("FREQ=YEARLY;BYDAY=54MO", "within ±53"),
        ("FREQ=MONTHLY;BYDAY=1MO;BYMONTHDAY=15", "BYMONTHDAY"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "does not exist"),
        ("FREQ=DAILY;BYMONTH=4,6;BYMONTHDAY=31,-31", "does not exist"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "outside"),
        ("FREQ=YEARLY;BYMONTH=13", "outside"),
        ("FREQ=DAILY;BYHOUR=24", "outside"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6", "within ±4"),
        ("FREQ=WEEKLY;BYDAY=MO;BYSETPOS=1", "BYSETPOS needs"),
        ("FREQ=MONTHLY;BYDAY=MO;BYMONTHDAY=1;BYSETPOS=1", "BYMONTHDAY"),
        ("FREQ=WEEKLY;UNTIL=2027-04-13", "UNTIL"),
        ("FREQ=WEEKLY;UNTIL=20270230", "real date"),
        ("FREQ=WEEKLY;WKST=XX", "weekday"),
    ],
)
def test_invalid_rules_are_refused(value: str, reason: str) -> None:
    with pytest.raises(InvalidRecurrence, match=reason):
        validate_rrule(value)
    with pytest.raises(InvalidRecurrence):
        expand(task(datetime(2027, 1, 1, 10), recurrence=value), **EVER)


# --- properties -------------------------------------------------------------------------------

local_starts = st.builds(
    datetime.combine,
    st.dates(date(2026, 1, 1), date(2029, 12, 31)),
    st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
)
durations = st.integers(0, 8 * 60).map(lambda m: timedelta(minutes=m))
rules = st.builds(
    lambda freq, interval, count: f"FREQ={freq};INTERVAL={interval};COUNT={count}",
    st.sampled_from(["DAILY", "WEEKLY"]),
    st.integers(1, 3),
    st.integers(1, 80),
)


def nonexistent_in_copenhagen(local: datetime) -> bool:
    """The independent oracle: the EU rule, 02:00-03:00 on the last Sunday of March."""
    return local.date() == last_sunday(local.year, 3) and local.hour == 2


@given(local_starts, durations, rules)
def test_daily_and_weekly_keep_wall_clock_time_and_step(
    start: datetime, duration: timedelta, rule: str
) -> None:
    t = task(start, start + duration, rule)
    occurrences = expand(t, **EVER)
    parts = dict(p.split("=") for p in rule.split(";"))
    assert len(occurrences) == int(parts["COUNT"])
    step = timedelta(days=int(parts["INTERVAL"]) * (7 if parts["FREQ"] == "WEEKLY" else 1))
    for n, occurrence in enumerate(occurrences):
        local = start + n * step  # wall-clock arithmetic: the same time of day
        assert occurrence.id == occurrence_id("t-1", local)
        shift = timedelta(hours=1) if nonexistent_in_copenhagen(local) else timedelta(0)
        assert occurrence.start.replace(tzinfo=None) == local + shift
        assert occurrence.start.tzinfo == CPH
        assert occurrence.end >= occurrence.start
        change_days = {last_sunday(local.year, 3), last_sunday(local.year, 10)}
        if not {local.date(), (local + duration).date()} & change_days:
            assert occurrence.end - occurrence.start == duration
            assert occurrence.end.astimezone(UTC) - occurrence.start.astimezone(UTC) == duration


@given(
    local_starts,
    durations,
    rules,
    st.datetimes(datetime(2025, 12, 1), datetime(2030, 6, 1), timezones=st.just(UTC)),
    st.integers(0, 60 * 24 * 120).map(lambda m: timedelta(minutes=m)),
)
def test_window_filtering_and_stable_ids(
    start: datetime, duration: timedelta, rule: str, window_start: datetime, length: timedelta
) -> None:
    t = task(start, start + duration, rule)
    everything = expand(t, **EVER)
    ids = [o.id for o in everything]
    assert len(ids) == len(set(ids))
    assert expand(t, **EVER) == everything
    window_end = window_start + length
    inside = expand(t, window_start=window_start, window_end=window_end)
    expected = [
        o
        for o in everything
        if (o.start < window_end and o.end > window_start)
        or (o.start == o.end and window_start <= o.start < window_end)
    ]
    assert inside == expected


@settings(deadline=2000)
@given(
    st.lists(
        st.sampled_from(
            [
                "FREQ=DAILY",
                "FREQ=WEEKLY",
                "FREQ=MONTHLY",
                "FREQ=YEARLY",
                "BYDAY=MO,FR",
                "BYDAY=-1SU",
                "BYDAY=2TU",
                "BYMONTHDAY=31",
                "BYMONTHDAY=-3",
                "BYMONTH=2",
                "BYMONTH=4,9",
                "BYSETPOS=-1",
                "BYSETPOS=3",
                "INTERVAL=2",
                "INTERVAL=7",
                "INTERVAL=12",
                "BYHOUR=7,19",
                "BYMINUTE=45",
                "INTERVAL=5",
                "COUNT=7",
                "UNTIL=20281231",
                "WKST=SU",
                "BYDAY=53MO",
                "BYMONTHDAY=29",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    st.one_of(local_starts, st.sampled_from([datetime(2027, 1, 31, 9), datetime(2028, 2, 29, 9)])),
)
def test_any_rule_is_refused_clearly_or_expands_within_the_cap(
    parts: list[str], start: datetime
) -> None:
    value = ";".join(parts)
    try:
        validate_rrule(value)
    except InvalidRecurrence:
        return
    window = {
        "window_start": datetime(2026, 1, 1, tzinfo=UTC),
        "window_end": datetime(2031, 1, 1, tzinfo=UTC),
    }
    occurrences = expand(task(start, recurrence=value), **window)
    assert len(occurrences) <= MAX_OCCURRENCES


@given(st.text(max_size=80))
def test_garbage_raises_only_invalid_recurrence(value: str) -> None:
    try:
        validate_rrule(value)
    except InvalidRecurrence:
        pass
