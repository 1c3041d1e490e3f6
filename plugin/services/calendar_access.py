"""Members' app passwords for the embedded CalDAV server.

A member's calendar app logs in as `caldav_username(tenant, member)` with a random password
that carecal shows once and keeps only as a slow, salted scrypt hash:

    >>> caldav_username("north", "m-anna")
    'north~m-anna'
    >>> caldav_username("north", "host:42")
    'north~host!42'

Tenant ids are `[A-Za-z0-9._-]` and member ids `[A-Za-z0-9._:-]`, so `~` (never in either)
separates them unambiguously, and `:` — which a Basic-auth username cannot contain — becomes `!`
(never in a member id either). Every character left is safe in a URL path and a file name; the
username is also the member's calendar home, `/dav/<username>/`.

Hashes are `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`, so the cost can be raised later
without invalidating stored hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from plugin.services.ports import AuditEntry, CalendarCredential, Store, Tx

# scrypt at n = 2**15, r = 8, p = 1: 32 MiB and some tens of milliseconds per hash. The
# passwords are 256-bit random tokens, so the cost guards a leaked table, not weak passwords.
SCRYPT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16
PASSWORD_BYTES = 32  # token_urlsafe: 43 URL-safe characters, 256 bits


def caldav_username(tenant_id: str, member_id: str) -> str:
    return f"{tenant_id}~{member_id.replace(':', '!')}"


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL refuses more than 32 MiB by default; scrypt needs 128 * n * r bytes plus a little.
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    b64 = base64.b64encode
    return (
        f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (a `hash_password` result); False for anything
    malformed."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        found = _scrypt(
            password, base64.b64decode(salt, validate=True), int(log2_n), int(r), int(p),
            len(expected),
        )  # fmt: skip
    except ValueError:
        return False
    return hmac.compare_digest(found, expected)


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What the member is shown once: where to connect, as whom, with which password."""

    username: str
    password: str


async def issue_calendar_credential(
    store: Store,
    tenant_id: str,
    member_id: str,
    *,
    now: datetime,
    channel: Literal["api", "link"] = "api",
) -> IssuedCredential | None:
    """Issue (or replace) the member's app password; None when the member is in no current
    circle of the tenant. The old password stops working when this commits. `channel`: the
    host's API (actor "api"), or the member's setup page (actor the member, channel "link")."""
    username = caldav_username(tenant_id, member_id)
    password = new_password()
    # Off the event loop, and before the transaction: hashing takes tens of milliseconds.
    password_hash = await asyncio.to_thread(hash_password, password)
    async with store.transaction() as tx:
        if not await tx.is_current_member(tenant_id, member_id):
            return None
        await tx.save_calendar_credential(
            CalendarCredential(tenant_id, member_id, username, password_hash, created_at=now)
        )
        await tx.audit(
            AuditEntry(
                tenant_id=tenant_id,
                at=now,
                actor="api" if channel == "api" else member_id,
                action="calendar_credential.issued",
                channel=channel,
                subject=member_id,
                detail={"username": username},
            )
        )
    return IssuedCredential(username, password)


async def revoke_calendar_credential(
    tx: Tx, tenant_id: str, member_id: str, *, now: datetime, actor: str
) -> bool:
    """Stop the member's app password (they left the tenant's last circle: their links and
    feed stop in the same transaction); audited. True when there was one to stop. Issuing a
    new one, should they come back, replaces it."""
    credential = await tx.get_calendar_credential(caldav_username(tenant_id, member_id))
    if credential is None or credential.revoked_at is not None:
        return False
    await tx.save_calendar_credential(replace(credential, revoked_at=now))
    await tx.audit(
        AuditEntry(
            tenant_id=tenant_id,
            at=now,
            actor=actor,
            action="calendar_credential.revoked",
            channel="host" if actor == "host" else "api",
            subject=member_id,
            detail={"username": credential.username},
        )
    )
    return True
