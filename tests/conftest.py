"""Real CalDAV servers, started once per session for the tests that ask for them: the calendar
port's contract (tests/contract/caldav) and the view sync's requests
(tests/integration/caldav/test_delta_first.py). Radicale in a thread with htpasswd auth
(`USER`, `PASSWORD`), Xandikos as a subprocess; each test works in collections of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.caldav.testing import radicale_server, xandikos_server
from tests.contract.caldav.support import PASSWORD, USER


@pytest.fixture(scope="session")
def radicale_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # rights "authenticated": the service identity may write into every member's home.
    with radicale_server(
        tmp_path_factory.mktemp("radicale"),
        users={USER: PASSWORD},
        config={"rights": {"type": "authenticated"}},
    ) as url:
        yield url


@pytest.fixture(scope="session")
def xandikos_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with xandikos_server(tmp_path_factory.mktemp("xandikos")) as url:
        yield url
