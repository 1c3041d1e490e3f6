"""Who may open the staff dashboard: a tenant's staff, by bearer token or by a session.

Two ways in, each naming exactly one tenant:

- `Authorization: Bearer <api_token>`: the tenant's API token (DESIGN.md: the dashboard
  "accepts the tenant's bearer token as well as a login"), for the host's staff tools;
- a session cookie from `/staff/login`, where staff give the tenant id and the tenant's
  `staff_password`. A separate password rather than the API token: the token is the host
  system's machine credential and can write (issue calendar passwords, renew links, assign);
  staff typing it into browsers would spread it. The dashboard session can only read.

The session is stateless, so it works across several `carecal serve` instances:

    <tenant id>.<issued, unix seconds>.<nonce>.<tag>

`tag` is a 128-bit HMAC-SHA256 over the first three parts, keyed by a key derived from the
tenant's staff password and its API token: changing either ends every session of that tenant
at once. The token, which staff never see, keeps a copied cookie from being a test of
password guesses (with the password alone in the key, one cookie let anyone try ~265 000
guesses a second offline, and the shared password outlived the cookie's two hours).
A session lasts `staff.session_minutes` (2 hours by default) from the login, then staff log
in again; logging out removes the cookie from the browser (a copied cookie stays valid until
it expires: the lifetime is kept short for that reason).

The cookie is HttpOnly, SameSite=Strict (a cross-site request never carries it, so no other
site can act or read with it), Path=/staff, and Secure with the `__Host-` prefix when
`server.public_url` is https. The logout form also carries a token bound to the session
(`logout_token`), for browsers that ignore SameSite.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from plugin.config import TenantSettings

__all__ = [
    "Session",
    "check_bearer",
    "check_login",
    "check_logout_token",
    "issue_session",
    "logout_token",
    "read_session",
]

_CONTEXT = b"carecal staff session v2"
_SKEW = timedelta(minutes=1)  # sessions issued by an instance whose clock is a little ahead


@dataclass(frozen=True, slots=True)
class Session:
    tenant_id: str
    issued: datetime
    nonce: str
    value: str  # the cookie value


def _key(tenant: TenantSettings) -> bytes | None:
    if tenant.staff_password is None:
        return None
    password = tenant.staff_password.get_secret_value().encode()
    token = tenant.api_token.get_secret_value().encode()
    material = _CONTEXT + b"\0" + hashlib.sha256(password).digest()
    return hmac.new(token, material, hashlib.sha256).digest()


def _tag(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_bearer(tenants: list[TenantSettings], authorization: str | None) -> TenantSettings | None:
    """The tenant whose API token the header carries, or None. Every tenant is compared, so
    the time taken says nothing about which one matched."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    found = None
    for tenant in tenants:
        if _equal(token, tenant.api_token.get_secret_value()):
            found = tenant
    return found


def check_login(
    tenants: list[TenantSettings], tenant_id: str, password: str
) -> TenantSettings | None:
    """The tenant if `password` is its staff password. A tenant without one, or unknown,
    answers None after the same comparison work as a wrong password."""
    found = None
    for tenant in tenants:
        expected = tenant.staff_password
        matches = _equal(password, expected.get_secret_value() if expected else secrets.token_hex())
        if matches and expected is not None and tenant.id == tenant_id:
            found = tenant
    return found


def issue_session(tenant: TenantSettings, *, now: datetime) -> Session:
    key = _key(tenant)
    if key is None:
        raise ValueError(f"tenant {tenant.id!r} has no staff_password")
    issued = int(now.timestamp())
    nonce = secrets.token_urlsafe(12)
    message = f"{tenant.id}.{issued}.{nonce}"
    return Session(
        tenant.id,
        datetime.fromtimestamp(issued, now.tzinfo),
        nonce,
        f"{message}.{_tag(key, message)}",
    )


def read_session(
    tenants: list[TenantSettings], value: str | None, *, now: datetime, lifetime: timedelta
) -> tuple[TenantSettings, Session] | None:
    """The tenant and session of a genuine, unexpired cookie value, else None."""
    if not value or len(value) > 512:
        return None
    parts = value.rsplit(".", 3)  # a tenant id may hold dots; the other parts never do
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    tenant_id, issued_text, nonce, tag = parts
    tenant = next((t for t in tenants if t.id == tenant_id), None)
    key = None if tenant is None else _key(tenant)
    if tenant is None or key is None:
        return None
    if not _equal(tag, _tag(key, f"{tenant_id}.{issued_text}.{nonce}")):
        return None
    issued = datetime.fromtimestamp(int(issued_text), now.tzinfo)
    if not now - lifetime < issued <= now + _SKEW:
        return None
    return tenant, Session(tenant_id, issued, nonce, value)


def logout_token(tenant: TenantSettings, session: Session) -> str:
    """The logout form's token: bound to this session, unforgeable without the key."""
    key = _key(tenant)
    assert key is not None  # a session exists only for a tenant with a staff password
    return _tag(key, f"logout.{session.nonce}")


def check_logout_token(tenant: TenantSettings, session: Session, given: str) -> bool:
    return _equal(given, logout_token(tenant, session))
