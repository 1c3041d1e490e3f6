"""Who may do what on the embedded CalDAV server (Radicale rights letters)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.caldav.embedded import SERVICE_USER, EmbeddedCalDAV
from plugin.config import EmbeddedCalendarSettings

ANNA = "north~m-anna"


@pytest.fixture
def dav(tmp_path: Path) -> EmbeddedCalDAV:
    return EmbeddedCalDAV(
        EmbeddedCalendarSettings(folder=tmp_path), clock=lambda: datetime.now(UTC)
    )


@pytest.mark.parametrize(
    ("user", "path", "rights"),
    [
        ("", "/", ""),
        (ANNA, "/", "R"),
        (ANNA, f"/{ANNA}/", "RW"),
        (ANNA, f"/{ANNA}/care/", "rw"),
        (ANNA, f"/{ANNA}/care/deeper/", ""),
        (ANNA, "/north~m-bo/", ""),
        (ANNA, "/north~m-bo/care/", ""),
        (ANNA, f"/{ANNA}x/care/", ""),
        (SERVICE_USER, "/", "RWrw"),
        (SERVICE_USER, "/north~m-bo/care/", "RWrw"),
    ],
)
def test_members_only_in_their_home_the_service_everywhere(
    dav: EmbeddedCalDAV, user: str, path: str, rights: str
) -> None:
    assert dav.authorization(user, path) == rights


def test_the_service_identity_is_random_and_never_printed(
    dav: EmbeddedCalDAV, tmp_path: Path
) -> None:
    other = EmbeddedCalDAV(
        EmbeddedCalendarSettings(folder=tmp_path), clock=lambda: datetime.now(UTC)
    )
    assert dav.service.password != other.service.password
    assert len(dav.service.password) >= 32
    assert dav.service.password not in repr(dav.service)


def test_logins_are_refused_while_the_server_is_not_running(dav: EmbeddedCalDAV) -> None:
    assert dav.login(ANNA, "anything") is None
    assert dav.login(SERVICE_USER, "wrong") is None
    assert dav.login(SERVICE_USER, dav.service.password) is not None
