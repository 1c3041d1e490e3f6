"""Staff credentials: the bearer token, the login, and the signed stateless session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from plugin.config import TenantSettings
from plugin.web.staff_auth import (
    check_bearer,
    check_login,
    check_logout_token,
    issue_session,
    logout_token,
    read_session,
)

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
HOURS2 = timedelta(hours=2)
SECRET = "whsec_bm9ydGgtc2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVm"


def tenant(tenant_id: str, **extra: Any) -> TenantSettings:
    return TenantSettings.model_validate(
        {"id": tenant_id, "webhook_secret": SECRET, "api_token": f"{tenant_id}-api-token-0123"}
        | extra
    )


NORTH = tenant("north", staff_password="north staff password")
SOUTH = tenant("south", staff_password="south staff password")
WEST = tenant("west")  # no staff password: bearer only
TENANTS = [NORTH, SOUTH, WEST]


def test_the_bearer_token_names_its_tenant() -> None:
    assert check_bearer(TENANTS, "Bearer north-api-token-0123") is NORTH
    assert check_bearer(TENANTS, "bearer west-api-token-0123") is WEST
    for header in (None, "", "Bearer ", "Basic north-api-token-0123", "Bearer wrong"):
        assert check_bearer(TENANTS, header) is None
    # The staff password is not an API token.
    assert check_bearer(TENANTS, "Bearer north staff password") is None


def test_login_needs_the_tenants_own_staff_password() -> None:
    assert check_login(TENANTS, "north", "north staff password") is NORTH
    assert check_login(TENANTS, "north", "south staff password") is None
    assert check_login(TENANTS, "south", "north staff password") is None
    assert check_login(TENANTS, "nowhere", "north staff password") is None
    assert check_login(TENANTS, "north", "north-api-token-0123") is None  # not the API token
    assert check_login(TENANTS, "west", "") is None


def test_a_session_lasts_its_lifetime_and_names_one_tenant() -> None:
    session = issue_session(NORTH, now=NOW)
    assert session.value.startswith("north.")
    found = read_session(TENANTS, session.value, now=NOW + timedelta(minutes=119), lifetime=HOURS2)
    assert found is not None and found[0] is NORTH and found[1].nonce == session.nonce
    assert read_session(TENANTS, session.value, now=NOW + HOURS2, lifetime=HOURS2) is None
    # From the future (beyond a little clock skew between instances): refused.
    assert (
        read_session(TENANTS, session.value, now=NOW - timedelta(minutes=5), lifetime=HOURS2)
        is None
    )
    assert issue_session(NORTH, now=NOW).value != session.value  # a fresh nonce each time


def test_a_tampered_or_foreign_session_is_refused() -> None:
    value = issue_session(NORTH, now=NOW).value
    tenant_id, issued, nonce, tag = value.split(".")
    forged = [
        f"south.{issued}.{nonce}.{tag}",  # another tenant's name on north's signature
        f"{tenant_id}.{int(issued) + 3600}.{nonce}.{tag}",  # a later issue time
        f"{tenant_id}.{issued}.{nonce}x.{tag}",
        f"{tenant_id}.{issued}.{nonce}.{tag[:-2]}AA",
        f"west.{issued}.{nonce}.{tag}",  # a tenant without a staff password has no sessions
        "",
        "north.notanumber.x.y",
        "a.b.c",
        "x" * 600,
    ]
    for candidate in forged:
        assert read_session(TENANTS, candidate, now=NOW, lifetime=HOURS2) is None, candidate
    assert read_session(TENANTS, None, now=NOW, lifetime=HOURS2) is None


def test_changing_the_staff_password_ends_every_session() -> None:
    value = issue_session(NORTH, now=NOW).value
    changed = tenant("north", staff_password="a brand new password")
    assert read_session([changed], value, now=NOW, lifetime=HOURS2) is None


def test_the_logout_token_is_bound_to_the_session() -> None:
    one, two = issue_session(NORTH, now=NOW), issue_session(NORTH, now=NOW)
    token = logout_token(NORTH, one)
    assert check_logout_token(NORTH, one, token)
    assert not check_logout_token(NORTH, two, token)
    assert not check_logout_token(NORTH, one, "")


def test_staff_password_must_be_long_enough() -> None:
    with pytest.raises(ValidationError, match="at least 12"):
        tenant("north", staff_password="short")


def test_a_copied_cookie_is_no_test_of_password_guesses() -> None:
    """The session's key holds the API token, which staff never see: with the password alone
    in it, one cookie let anyone check password guesses offline (~265 000 a second). The
    same password with another token signs other sessions; changing the token ends them."""
    import base64
    import hashlib
    import hmac

    session = issue_session(NORTH, now=NOW)
    message, tag = session.value.rsplit(".", 1)
    for context in (b"carecal staff session v1", b"carecal staff session v2"):
        guessed = hmac.new(b"north staff password", context, hashlib.sha256).digest()
        digest = hmac.new(guessed, message.encode(), hashlib.sha256).digest()[:16]
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != tag
    rotated = tenant(
        "north", staff_password="north staff password", api_token="north-new-token-0123"
    )
    assert read_session([rotated], session.value, now=NOW, lifetime=HOURS2) is None


def test_a_tenant_id_with_dots_keeps_its_session() -> None:
    dotted = tenant("aarhus.kommune", staff_password="aarhus staff password")
    session = issue_session(dotted, now=NOW)
    found = read_session([dotted, NORTH], session.value, now=NOW, lifetime=HOURS2)
    assert found is not None and found[0] is dotted
