"""What carecal's log configuration lets through from the libraries it runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from plugin.logs import configure


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = ("radicale", "plugin", "adapters", "bench")
    levels = [logging.getLogger(name).level for name in named]
    yield
    root.handlers[:], root.level = handlers, level
    for name, was in zip(named, levels, strict=True):
        logging.getLogger(name).setLevel(was)


def test_the_embedded_radicale_says_only_its_warnings(restored: None) -> None:
    """It says every request and login at INFO (carecal's access log has each request), and
    every body at DEBUG."""
    radicale = logging.getLogger("radicale")
    for level in ("INFO", "DEBUG"):
        configure(level, "json")
        assert not radicale.isEnabledFor(logging.INFO) and radicale.isEnabledFor(logging.WARNING)


def test_debug_is_carecals_own_never_the_libraries_with_their_data(restored: None) -> None:
    """At DEBUG, aiosqlite logs every statement with its values (a citizen's name, a task's
    details): DEBUG opens carecal's own loggers only."""
    configure("DEBUG", "json")
    for library in ("aiosqlite", "sqlalchemy.engine", "asyncpg", "caldav", "niquests"):
        assert not logging.getLogger(library).isEnabledFor(logging.DEBUG), library
    for own in ("plugin.services.view_sync", "adapters.caldav.client", "plugin.worker"):
        assert logging.getLogger(own).isEnabledFor(logging.DEBUG), own
    configure("INFO", "json")
    assert not logging.getLogger("plugin.worker").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("plugin.worker").isEnabledFor(logging.INFO)
