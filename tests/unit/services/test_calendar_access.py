"""App passwords for the embedded CalDAV server: usernames and slow hashes."""

from __future__ import annotations

import itertools
import re

from plugin.services.calendar_access import (
    caldav_username,
    hash_password,
    new_password,
    verify_password,
)

URL_SAFE = re.compile(r"^[A-Za-z0-9._~!-]+$")


def test_usernames_are_url_safe_and_never_collide() -> None:
    tenants = ["north", "a.b", "a", "a-b"]
    members = ["m-anna", "b.c", "b:c", "host:42", "c", "b"]
    names = [caldav_username(t, m) for t, m in itertools.product(tenants, members)]
    assert len(set(names)) == len(names)
    assert all(URL_SAFE.match(n) and ":" not in n for n in names)
    assert caldav_username("north", "host:42") == "north~host!42"


def test_passwords_are_long_random_and_url_safe() -> None:
    first, second = new_password(), new_password()
    assert first != second
    assert len(first) >= 22 and re.fullmatch(r"[A-Za-z0-9_-]+", first)


def test_hash_verifies_only_its_password_and_is_salted() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert hash_password("s3cret") != stored
    for broken in ("", "plain$x", "scrypt$15$8$1$!!$??", "scrypt$x$8$1$c2FsdA==$aGFzaA=="):
        assert not verify_password("s3cret", broken)
