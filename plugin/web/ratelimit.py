"""An in-process token-bucket rate limiter, keyed by anything (a client address, a token).

    limiter = RateLimiter(Rate(burst=20, per_minute=30))
    limiter.check("203.0.113.7")  # 0.0 while allowed, else the seconds until the next one

Each key has a bucket of `burst` requests that refills at `per_minute`. Buckets live in an
LRU-ordered dict of at most `max_keys` entries: the least recently seen goes first, so a flood
of new keys costs bounded memory (an evicted bucket starts full again, which only lets an
attacker who controls that many distinct keys slightly past the limit).

In-process means per `carecal serve` instance; several instances each limit on their own,
which is the accepted cost of not needing a shared store for it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Rate", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Rate:
    burst: int
    per_minute: float


class RateLimiter:
    def __init__(
        self,
        rate: Rate,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def check(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0.0 if allowed, else the seconds to wait
        (nothing is taken then)."""
        now = self._clock()
        per_second = self.rate.per_minute / 60
        tokens, at = self._buckets.pop(key, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - at) * per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / per_second
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """A Retry-After value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))
