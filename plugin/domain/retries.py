"""When to try an event for the host again, and when to give up on it.

Exponential backoff with full jitter: after the n-th failed attempt (n = 1, 2, …) the next one
comes after a delay drawn uniformly from [0, min(cap, base * 2**(n-1))], so senders that all
failed while the host was down do not come back in lockstep. No retry is planned beyond the
dead-letter age: the last one is made at that age, and a failure then makes the event dead.

    policy = RetryPolicy(base=timedelta(seconds=1), cap=timedelta(minutes=15),
                         dead_after=timedelta(hours=24))
    next_attempt(policy, failures=4, pending_since=t0, now=t0 + timedelta(minutes=1), draw=0.5)
    # -> t0 + 1 min + 4 s   (ceiling 1 s * 2**3 = 8 s; half of it)
    next_attempt(policy, failures=90, pending_since=t0, now=t0 + timedelta(hours=24), draw=0.5)
    # -> None: dead

`draw` is a number in [0, 1) from the caller's random source, which keeps these rules pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Beyond this the cap has long been reached; it only keeps the float finite.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: timedelta
    cap: timedelta
    dead_after: timedelta

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base or self.dead_after <= timedelta(0):
            raise ValueError("need 0 < base <= cap and a positive dead_after")


def delivered(status: int) -> bool:
    """A 2xx answer is a delivery; anything else is a failure to retry."""
    return 200 <= status < 300


def backoff_ceiling(policy: RetryPolicy, failures: int) -> timedelta:
    """The longest delay after the `failures`-th failed attempt (1 = the first)."""
    exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
    # In float seconds: base * 2**exponent overflows timedelta long before the exponent cap.
    seconds = policy.base.total_seconds() * 2.0**exponent
    return min(policy.cap, timedelta(seconds=min(seconds, policy.cap.total_seconds())))


def retry_delay(policy: RetryPolicy, failures: int, draw: float) -> timedelta:
    """Full jitter: uniform in [0, ceiling) as `draw` goes through [0, 1)."""
    if not 0.0 <= draw < 1.0:
        raise ValueError("draw must be in [0, 1)")
    return backoff_ceiling(policy, failures) * draw


def next_attempt(
    policy: RetryPolicy,
    *,
    failures: int,
    pending_since: datetime,
    now: datetime,
    draw: float,
) -> datetime | None:
    """When to try again after the `failures`-th failed attempt, or None: dead letter.

    Dead once the event has been pending `dead_after` or longer; otherwise the jittered retry,
    but never later than the moment it reaches that age (its last chance)."""
    expires = pending_since + policy.dead_after
    if now >= expires:
        return None
    return min(now + retry_delay(policy, failures, draw), expires)


def lease_seconds(batch_size: int, concurrency: int, timeout_seconds: float) -> float:
    """How long a delivery round may hold its events: every request of the batch timing out,
    `concurrency` at a time, plus a margin. Another worker takes an event over only after
    this, so a slow but living sender is never doubled."""
    rounds = -(-batch_size // concurrency)  # ceiling division
    return rounds * timeout_seconds + 30.0
