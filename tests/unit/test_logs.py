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
    radicale = logging.getLogger("radicale").level
    yield
    root.handlers[:], root.level = handlers, level
    logging.getLogger("radicale").setLevel(radicale)


def test_the_embedded_radicale_says_only_its_warnings_below_debug(restored: None) -> None:
    """It says every request and login at INFO; carecal's access log has each request."""
    radicale = logging.getLogger("radicale")
    configure("INFO", "json")
    assert not radicale.isEnabledFor(logging.INFO) and radicale.isEnabledFor(logging.WARNING)
    configure("DEBUG", "text")
    assert radicale.isEnabledFor(logging.DEBUG)
