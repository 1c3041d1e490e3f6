"""What a view's last run rendered from is kept in the process for its next run
(`view_sync._Known`), for a bounded number of views and occurrences: the most recently synced
stay, the others go first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.memory import MemoryStore
from plugin.services import view_sync
from plugin.services.calendars import View
from plugin.services.ports import ViewState

STATE = ViewState("/dav/north~m/c/", "tok-1", None, datetime(2027, 3, 1, tzinfo=UTC), "i" * 64, 1)


def gathered(occurrences: int) -> Any:
    """A view's read holding `occurrences` occurrences (of one task); the rest stand-ins."""
    return view_sync._Gathered(
        circle=None,  # type: ignore[arg-type]
        member=None,  # type: ignore[arg-type]
        tasks=(),
        occurrences={"t-1": tuple(object() for _ in range(occurrences))},  # type: ignore[misc]
        records={},
        link=None,  # type: ignore[arg-type]
        state=STATE,
        generation=1,
    )


def kept(store: MemoryStore) -> list[str]:
    return [view.member_id for view in view_sync._KNOWN.get(store, {})]


def test_the_most_recently_synced_views_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_sync, "KNOWN_VIEWS", 3)
    store = MemoryStore()
    for member in ("a", "b", "c", "d"):
        view_sync._remember(store, View("north", member, "c"), gathered(1), STATE)
    assert kept(store) == ["b", "c", "d"]
    view_sync._remember(store, View("north", "b", "c"), gathered(1), STATE)  # synced again
    view_sync._remember(store, View("north", "e", "c"), gathered(1), STATE)
    assert kept(store) == ["d", "b", "e"]


def test_no_more_occurrences_are_kept_than_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_sync, "KNOWN_OCCURRENCES", 10)
    store = MemoryStore()
    for member in ("a", "b", "c"):
        view_sync._remember(store, View("north", member, "c"), gathered(4), STATE)
    assert kept(store) == ["b", "c"]  # 8 of 10
    # One view over the bound alone is kept (the one just synced), the others go.
    view_sync._remember(store, View("north", "big", "c"), gathered(25), STATE)
    assert kept(store) == ["big"]
