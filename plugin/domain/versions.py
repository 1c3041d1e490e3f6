"""Which host version of an entity wins.

Every host event carries a `version` per entity (task, circle, relief request). Webhooks can
arrive out of order and more than once, so only a strictly newer version changes anything; an
equal one is a duplicate and an older one is stale, and both are acknowledged and ignored.
"""

from __future__ import annotations

__all__ = ["accept_version"]


def accept_version(stored: int | None, incoming: int) -> bool:
    """True if `incoming` should replace what is stored (None: nothing stored yet).

    >>> accept_version(None, 1), accept_version(2, 3), accept_version(3, 3), accept_version(3, 2)
    (True, True, False, False)
    """
    return stored is None or incoming > stored
