"""Standard Webhooks signatures (https://www.standardwebhooks.com), both directions.

A signed message carries three headers::

    webhook-id:        msg_2KWPBgLlAfxdpx2AI54pPJ85f4W
    webhook-timestamp: 1674087231                     (seconds since the epoch)
    webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,<another>

where each `v1,` signature is base64(HMAC-SHA256(key, f"{id}.{timestamp}.".encode() + body)).
Several signatures appear while a sender rotates keys, and a tenant may hold several secrets
while we rotate ours: a message is genuine if any v1 signature matches any secret.

Secrets are written `whsec_<base64 key>`. A secret without the prefix is read the same way:
the rest is base64-decoded into the key. That is what the Standard Webhooks libraries do, so
one configured string means the same key here and in the host's library; a secret that is not
base64 is a configuration error (`InvalidSecret`), never silently used as raw bytes.

Errors (messages never contain secrets or signatures; they are safe to show to the sender):

    InvalidWebhook            the request is not a genuine, fresh webhook  (HTTP 401)
     ├── MissingHeaders       a webhook-id / -timestamp / -signature header is absent or empty
     ├── MalformedHeaders     a header is present but unreadable (timestamp not an integer …)
     ├── StaleTimestamp       the timestamp is outside the tolerance (replay or clock skew)
     └── BadSignature         no signature matches any of the tenant's secrets

    InvalidSecret (ValueError) a configured secret is empty or not base64 (a startup error)
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "BadSignature",
    "InvalidSecret",
    "InvalidWebhook",
    "MalformedHeaders",
    "MissingHeaders",
    "StaleTimestamp",
    "decode_secret",
    "sign",
    "signed_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300

# Integer seconds only: the signed content embeds the header text verbatim, and senders that
# follow the spec never send fractions. Twelve digits reach the year 33658.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# The id is echoed into logs and the dedup table (`inbox.webhook_id`, VARCHAR(255)).
_MAX_ID_LENGTH = 255


class InvalidWebhook(Exception):
    """The request is not a genuine, fresh webhook."""


class MissingHeaders(InvalidWebhook):
    """A required webhook-* header is absent or empty."""


class MalformedHeaders(InvalidWebhook):
    """A webhook-* header is present but cannot be read."""


class StaleTimestamp(InvalidWebhook):
    """The webhook-timestamp is too far from our clock."""


class BadSignature(InvalidWebhook):
    """No signature matches any configured secret."""


class InvalidSecret(ValueError):
    """A configured secret is unusable. Raised at configuration time, not per request."""


@functools.lru_cache(maxsize=256)  # the few configured secrets, decoded once each
def decode_secret(secret: str) -> bytes:
    """The HMAC key of `secret`: `whsec_` stripped (optional), the rest base64-decoded.

    >>> decode_secret("whsec_c2VjcmV0")
    b'secret'
    """
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    # Secrets are often stored without padding; put back exactly what base64 needs.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # `from None`: the binascii message can quote the offending characters of the secret.
        raise InvalidSecret("webhook secret is not base64 after the optional 'whsec_'") from None
    if not key:
        raise InvalidSecret("webhook secret is empty")
    return key


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    # hmac.digest is the one-shot C path: several times cheaper than hmac.new(...).digest().
    return hmac.digest(key, signed_content, hashlib.sha256)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message.

    >>> sign("whsec_c2VjcmV0", "msg_1", 1700000000, b'{"type":"x"}')[:3]
    'v1,'
    """
    digest = _signature(decode_secret(secret), msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, msg_id: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers for an outgoing message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def _v1_signatures(header: str) -> list[bytes]:
    """Decoded v1 signatures; other versions and unreadable entries can never match."""
    found = []
    for entry in header.split():
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def _header(headers: Mapping[str, str], name: str) -> str:
    """`name` (lower case) from any mapping: a direct look-up first, which is all Starlette's
    case-insensitive `Headers` needs; a scan only for a plain dict spelled otherwise."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Accept a webhook or raise a subclass of `InvalidWebhook`.

    `headers` may be any mapping (Starlette's `Headers`, a dict with any capitalisation).
    `now` is passed in so that the clock is the caller's, and tests need no patching.
    """
    if not secrets:
        # A tenant without a secret must not silently accept or reject everything.
        raise InvalidSecret("no webhook secret configured")
    keys = [decode_secret(secret) for secret in secrets]

    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signature_header = _header(headers, "webhook-signature")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature_header),
        )
        if not value
    ]
    if missing:
        raise MissingHeaders(f"missing header(s): {', '.join(missing)}")
    if len(msg_id) > _MAX_ID_LENGTH:
        raise MalformedHeaders(f"webhook-id longer than {_MAX_ID_LENGTH} characters")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise MalformedHeaders("webhook-timestamp is not an integer number of seconds")

    # Freshness before the HMAC work: a replayed message is refused without touching keys.
    if abs(now - int(timestamp)) > tolerance_seconds:
        raise StaleTimestamp(
            f"webhook-timestamp is more than {tolerance_seconds} seconds from the receiver's clock"
        )

    candidates = _v1_signatures(signature_header)
    for key in keys:
        expected = _signature(key, msg_id, timestamp, body)
        # compare_digest: the time taken must not reveal how many leading bytes matched.
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return
    raise BadSignature("no matching v1 signature")
