"""The in-process token bucket."""

from __future__ import annotations

from plugin.web.ratelimit import Rate, RateLimiter


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_the_rate() -> None:
    clock = Ticks()
    limiter = RateLimiter(Rate(burst=3, per_minute=6), clock=clock)  # one per 10 s
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("a") == 10.0
    assert limiter.check("a") == 10.0  # a refused request takes nothing
    assert limiter.check("b") == 0.0  # keys are independent
    clock.now += 5
    assert limiter.check("a") == 5.0
    clock.now += 5
    assert limiter.check("a") == 0.0
    clock.now += 3600
    assert [limiter.check("a") for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]  # never above burst


def test_memory_is_bounded_least_recently_seen_first() -> None:
    clock = Ticks()
    limiter = RateLimiter(Rate(burst=1, per_minute=1), max_keys=2, clock=clock)
    assert limiter.check("a") == 0.0
    assert limiter.check("b") == 0.0
    assert limiter.check("a") > 0  # refreshes a
    assert limiter.check("c") == 0.0  # evicts b, the least recently seen
    assert limiter.check("a") > 0
    assert limiter.check("b") == 0.0  # b starts full again


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert RateLimiter.retry_after(0.2) == "1"
    assert RateLimiter.retry_after(9.01) == "10"
