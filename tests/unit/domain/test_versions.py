import doctest

import pytest

from plugin.domain import versions
from plugin.domain.versions import accept_version


def test_doctests() -> None:
    assert doctest.testmod(versions).failed == 0


@pytest.mark.parametrize(
    ("stored", "incoming", "accepted"),
    [(None, 0, True), (None, 1, True), (1, 2, True), (2, 2, False), (3, 2, False)],
)
def test_only_a_strictly_newer_version_wins(
    stored: int | None, incoming: int, accepted: bool
) -> None:
    assert accept_version(stored, incoming) is accepted
