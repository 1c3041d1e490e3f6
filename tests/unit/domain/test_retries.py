"""The retry rules of events to the host: backoff with full jitter, and the dead letter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.domain.retries import (
    RetryPolicy,
    backoff_ceiling,
    delivered,
    lease_seconds,
    next_attempt,
    retry_delay,
)

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(
    base=timedelta(seconds=1), cap=timedelta(minutes=15), dead_after=timedelta(hours=24)
)


def test_only_2xx_is_a_delivery() -> None:
    assert all(delivered(status) for status in (200, 201, 202, 204, 299))
    assert not any(delivered(s) for s in (100, 199, 300, 301, 304, 400, 404, 409, 410, 500, 503))


def test_the_ceiling_doubles_from_base_and_stops_at_the_cap() -> None:
    ceilings = [backoff_ceiling(POLICY, n).total_seconds() for n in range(1, 13)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
    assert backoff_ceiling(POLICY, 10_000) == timedelta(minutes=15)  # no overflow


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    assert retry_delay(POLICY, 4, 0.0) == timedelta(0)
    assert retry_delay(POLICY, 4, 0.5) == timedelta(seconds=4)
    assert retry_delay(POLICY, 4, 0.999) < timedelta(seconds=8)
    with pytest.raises(ValueError):
        retry_delay(POLICY, 4, 1.0)


def test_jittered_delays_are_spread_not_in_lockstep() -> None:
    rng = random.Random(5)
    delays = [retry_delay(POLICY, 6, rng.random()).total_seconds() for _ in range(1000)]
    assert min(delays) < 2 and max(delays) > 30  # ceiling 32 s
    assert 12 < sum(delays) / len(delays) < 20  # uniform: mean about 16 s
    assert len({round(d, 3) for d in delays}) > 900


@given(
    failures=st.integers(min_value=1, max_value=200),
    pending=st.floats(min_value=0, max_value=48 * 3600),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_retry_is_never_before_now_nor_after_the_dead_letter_age(
    failures: int, pending: float, draw: float
) -> None:
    now = T0 + timedelta(seconds=pending)
    retry_at = next_attempt(POLICY, failures=failures, pending_since=T0, now=now, draw=draw)
    expires = T0 + POLICY.dead_after
    if now >= expires:
        assert retry_at is None
    else:
        assert retry_at is not None
        assert now <= retry_at <= expires
        assert retry_at - now <= backoff_ceiling(POLICY, failures)


def test_dead_exactly_at_the_configured_age() -> None:
    just_before = T0 + timedelta(hours=24) - timedelta(seconds=1)
    last = next_attempt(POLICY, failures=90, pending_since=T0, now=just_before, draw=0.9)
    assert last == T0 + timedelta(hours=24)  # the last chance is taken at the age itself
    assert next_attempt(POLICY, failures=91, pending_since=T0, now=last, draw=0.9) is None


def test_a_replayed_event_gets_a_fresh_age() -> None:
    # pending_since is the replay time for a requeued dead letter (OutboxEvent.pending_since).
    replayed = T0 + timedelta(days=3)
    retry_at = next_attempt(
        POLICY, failures=1, pending_since=replayed, now=replayed + timedelta(seconds=1), draw=0.5
    )
    assert retry_at == replayed + timedelta(seconds=1.5)


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(timedelta(seconds=10), timedelta(seconds=1), timedelta(hours=1))
    with pytest.raises(ValueError):
        RetryPolicy(timedelta(0), timedelta(seconds=1), timedelta(hours=1))


def test_the_lease_outlasts_a_round_of_timeouts() -> None:
    # 100 events, 8 at a time, each timing out after 10 s: 13 waves of 10 s, plus a margin.
    assert lease_seconds(100, 8, 10.0) == 13 * 10.0 + 30.0
    assert lease_seconds(1, 8, 10.0) == 40.0
