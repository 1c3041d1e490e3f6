"""A member's personal links: claim pages, the ICS feed and the setup page, all by token.

Each member of a tenant has one active `MemberLink`: a random public id and a 256-bit secret,
stored in the database. A token is the URL-safe base64 (no padding) of

    kind (1 byte) | link id (12 bytes) | tag (16 bytes) | subject (UTF-8; claim links only)

where kind is 1 for a claim link (the subject is the occurrence id), 2 for the feed and 3 for
the setup page, and the tag is HMAC-SHA256 under the link's secret of
`b"carecal-link\\x00" + kind + b"\\x00" + subject`, cut to 128 bits:

    >>> link = MemberLink("AAAAAAAAAAAAAAAA", "north", "m-anna", bytes(32), now)
    >>> claim_token(link, "t-1_20270316T1000")  # the same every time
    'AQAAAAAAAAAAAAAAAP2HlZgfqM9J2eGktT_J9X10LTFfMjAyNzAzMTZUMTAwMA'
    >>> feed_token(link)
    'AgAAAAAAAAAAAAAAAEF-n2KGjttgCcE6RQglPRE'

Why this shape:

- **Stable per (member, occurrence)**: the same link and occurrence always give the same
  token, so re-rendering a member's copies does not churn them.
- **Unguessable**: forging a token for someone needs their secret; the 128-bit tag is what an
  attacker must guess for a known link id (and the 96-bit link id on top for an unknown one).
- **Names nobody**: the link id is random, so a token carries no member id, tenant or name; the
  occurrence id is the host's opaque task id plus a date.
- **Revocable as a whole**: `revoke` marks the link revoked; every token it signed (claim
  links, feed, setup page) is then answered "gone" (410), and the member's next link is a new
  row with a new id and secret. Revoked rows are kept, so an old token is told apart from an
  unknown one only when its tag verifies under the old secret.
- **One lookup**: the link id is the primary key; nothing is stored per token.

Forms on the claim page carry `form_token(link, token, issued)`: the issue time and a tag
over (claim token, issue time) under the same secret, valid for `FORM_TOKEN_TTL`
(see `plugin.web.links` for why this, plus an Origin check, is the CSRF defence).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from functools import lru_cache

from plugin.services.ports import AuditEntry, MemberLink, Store, Tx

__all__ = [
    "FORM_TOKEN_TTL",
    "LinkKind",
    "ParsedToken",
    "PersonalUrls",
    "Refusal",
    "check_form_token",
    "claim_token",
    "claim_url",
    "ensure_link",
    "feed_token",
    "feed_url",
    "form_token",
    "new_member_link",
    "parse_token",
    "personal_urls",
    "renew_links",
    "resolve",
    "revoke",
    "setup_token",
    "setup_url",
    "verifies",
]

LINK_ID_BYTES = 12
SECRET_BYTES = 32
TAG_BYTES = 16
MAX_SUBJECT_BYTES = 255  # an occurrence id (`occurrences.id` is String(255))
FORM_TOKEN_TTL = timedelta(hours=2)
FORM_TOKEN_SKEW = timedelta(minutes=5)
_DOMAIN = b"carecal-link\x00"
_HEADER = 1 + LINK_ID_BYTES + TAG_BYTES


class LinkKind(IntEnum):
    CLAIM = 1
    FEED = 2
    SETUP = 3


class Refusal(StrEnum):
    """Why a token opens nothing: `unknown` is a 404, the others are 410 (gone)."""

    UNKNOWN = "unknown"
    REVOKED = "revoked"  # the member's links were revoked
    REMOVED = "removed"  # the member is no longer in the occurrence's circle
    OVER = "over"  # the occurrence has ended


@dataclass(frozen=True, slots=True)
class ParsedToken:
    kind: LinkKind
    link_id: str
    tag: bytes
    subject: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    # Strict alphabet: urlsafe_b64decode would silently drop characters outside it.
    if text.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def new_member_link(tenant_id: str, member_id: str, *, now: datetime) -> MemberLink:
    return MemberLink(
        id=_b64encode(secrets.token_bytes(LINK_ID_BYTES)),
        tenant_id=tenant_id,
        member_id=member_id,
        secret=secrets.token_bytes(SECRET_BYTES),
        created_at=now,
    )


def _tag(secret: bytes, kind: LinkKind, subject: bytes) -> bytes:
    message = _DOMAIN + bytes([kind]) + b"\x00" + subject
    return hmac.new(secret, message, hashlib.sha256).digest()[:TAG_BYTES]


def _token(link: MemberLink, kind: LinkKind, subject: str = "") -> str:
    raw_subject = subject.encode()
    if len(raw_subject) > MAX_SUBJECT_BYTES:
        raise ValueError("subject too long for a token")
    link_id = _b64decode(link.id)
    if len(link_id) != LINK_ID_BYTES:
        raise ValueError("malformed link id")
    return _b64encode(bytes([kind]) + link_id + _tag(link.secret, kind, raw_subject) + raw_subject)


# Every sync of a view puts a claim link in each copy it renders: the same few thousand
# tokens, run after run. A token depends only on the link (its id and secret) and the
# occurrence, so it is worked out once.
@lru_cache(maxsize=1 << 16)
def claim_token(link: MemberLink, occurrence_id: str) -> str:
    return _token(link, LinkKind.CLAIM, occurrence_id)


def feed_token(link: MemberLink) -> str:
    return _token(link, LinkKind.FEED)


def setup_token(link: MemberLink) -> str:
    return _token(link, LinkKind.SETUP)


def claim_url(public_url: str, link: MemberLink, occurrence_id: str) -> str:
    return f"{public_url}/c/{claim_token(link, occurrence_id)}"


def feed_url(public_url: str, link: MemberLink) -> str:
    return f"{public_url}/feeds/{feed_token(link)}.ics"


def setup_url(public_url: str, link: MemberLink) -> str:
    return f"{public_url}/setup/{setup_token(link)}"


def parse_token(token: str) -> ParsedToken | None:
    """The token's parts, or None when it cannot be one of ours (no database lookup needed)."""
    if len(token) > 4 * (_HEADER + MAX_SUBJECT_BYTES) // 3 + 4:
        return None
    try:
        raw = _b64decode(token)
        kind = LinkKind(raw[0]) if raw else None
        subject = raw[_HEADER:].decode("utf-8", errors="strict")
    except ValueError:  # also UnicodeDecodeError and an unknown kind
        return None
    if kind is None or len(raw) < _HEADER or _b64encode(raw) != token:
        return None  # non-canonical encodings (stray bits) would make two tokens of one
    if (kind is LinkKind.CLAIM) != bool(subject):
        return None
    return ParsedToken(
        kind, _b64encode(raw[1 : 1 + LINK_ID_BYTES]), raw[1 + LINK_ID_BYTES : _HEADER], subject
    )


def verifies(link: MemberLink, parsed: ParsedToken) -> bool:
    expected = _tag(link.secret, parsed.kind, parsed.subject.encode())
    return link.id == parsed.link_id and hmac.compare_digest(expected, parsed.tag)


async def resolve(tx: Tx, token: str, kind: LinkKind) -> tuple[MemberLink, str] | Refusal:
    """The link that signed `token` (of `kind`) and the token's subject, or why not:
    UNKNOWN when it is malformed, of another kind or forged, REVOKED when it is genuine but
    its link was revoked."""
    parsed = parse_token(token)
    if parsed is None or parsed.kind is not kind:
        return Refusal.UNKNOWN
    link = await tx.get_member_link(parsed.link_id)
    if link is None or not verifies(link, parsed):
        return Refusal.UNKNOWN
    if link.revoked_at is not None:
        return Refusal.REVOKED
    return link, parsed.subject


async def ensure_link(tx: Tx, tenant_id: str, member_id: str, *, now: datetime) -> MemberLink:
    """The member's active link, made on first use."""
    return await tx.ensure_member_link(new_member_link(tenant_id, member_id, now=now))


@dataclass(frozen=True, slots=True)
class PersonalUrls:
    feed_url: str
    setup_url: str


async def personal_urls(
    store: Store, public_url: str, tenant_id: str, member_id: str, *, now: datetime
) -> PersonalUrls:
    """The member's feed and setup page addresses (their link is made on first use)."""
    async with store.transaction() as tx:
        link = await ensure_link(tx, tenant_id, member_id, now=now)
    return PersonalUrls(feed_url(public_url, link), setup_url(public_url, link))


async def renew_links(
    store: Store, public_url: str, tenant_id: str, member_id: str, *, now: datetime
) -> PersonalUrls | None:
    """Revoke the member's links (every claim link, the feed, the setup page) and make new
    ones; None when the member is in no current circle of the tenant. Their hosted calendar
    views are queued for a sync in the same transaction, so the copies carry the new links.
    The calendar app password is revoked too: whoever held the setup link could have made
    one with it (the member sets up their devices again from the new setup link)."""
    from plugin.services.calendar_access import revoke_calendar_credential
    from plugin.services.view_sync import enqueue_view_syncs  # view_sync imports this module

    async with store.transaction() as tx:
        if not await tx.is_current_member(tenant_id, member_id):
            return None
        await revoke(tx, tenant_id, member_id, now=now, actor="api")
        await revoke_calendar_credential(tx, tenant_id, member_id, now=now, actor="api")
        link = await ensure_link(tx, tenant_id, member_id, now=now)
        for citizen_id in await tx.list_member_circles(tenant_id, member_id):
            circle = await tx.get_circle(tenant_id, citizen_id)
            member = None if circle is None else circle.member(member_id)
            if circle is not None and member is not None:
                own = replace(circle, members=(member,))
                await enqueue_view_syncs(tx, tenant_id, own, now=now)
    return PersonalUrls(feed_url(public_url, link), setup_url(public_url, link))


async def revoke(tx: Tx, tenant_id: str, member_id: str, *, now: datetime, actor: str) -> bool:
    """Kill every token of the member (claim links, feed, setup page), audited. Their next
    link comes from a new secret; copies rendered afterwards carry it."""
    revoked = await tx.revoke_member_link(tenant_id, member_id, now=now)
    if revoked:
        await tx.audit(
            AuditEntry(
                tenant_id=tenant_id,
                at=now,
                actor=actor,
                action="member_links.revoked",
                channel="host" if actor == "host" else "api",
                subject=member_id,
            )
        )
    return revoked


def form_token(link: MemberLink, token: str, *, issued: datetime) -> str:
    """`<unix seconds>.<tag>`: proves the form came from a page this server rendered for
    this very claim link, recently."""
    stamp = str(int(issued.timestamp()))
    return f"{stamp}.{_b64encode(_form_tag(link, token, stamp))}"


def check_form_token(link: MemberLink, token: str, value: str, *, now: datetime) -> bool:
    stamp, dot, tag = value.partition(".")
    if not dot or not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    try:
        given = _b64decode(tag)
    except ValueError:
        return False
    age = now.timestamp() - int(stamp)
    if age > FORM_TOKEN_TTL.total_seconds() or age < -FORM_TOKEN_SKEW.total_seconds():
        return False
    return hmac.compare_digest(given, _form_tag(link, token, stamp))


def _form_tag(link: MemberLink, token: str, stamp: str) -> bytes:
    message = _DOMAIN + b"form\x00" + token.encode() + b"\x00" + stamp.encode()
    return hmac.new(link.secret, message, hashlib.sha256).digest()[:TAG_BYTES]
