"""Personal link tokens: encoding, decoding, forgery, revocation and form tokens."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from adapters.memory import MemoryStore
from plugin.services.links import (
    FORM_TOKEN_TTL,
    LINK_ID_BYTES,
    TAG_BYTES,
    LinkKind,
    Refusal,
    check_form_token,
    claim_token,
    claim_url,
    ensure_link,
    feed_token,
    feed_url,
    form_token,
    new_member_link,
    parse_token,
    resolve,
    revoke,
    setup_token,
    verifies,
)
from plugin.services.ports import MemberLink

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
LINK = MemberLink("AAAAAAAAAAAAAAAA", "north", "m-anna", bytes(range(32)), NOW)
OCC = "t-1_20270316T1000"


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_claim_token_names_the_link_and_the_occurrence_and_is_stable() -> None:
    token = claim_token(LINK, OCC)
    assert token == claim_token(LINK, OCC)  # copies do not churn
    assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe as it is
    parsed = parse_token(token)
    assert parsed is not None
    assert (parsed.kind, parsed.link_id, parsed.subject) == (LinkKind.CLAIM, LINK.id, OCC)
    assert len(parsed.tag) == TAG_BYTES == 16  # 128 bits
    assert verifies(LINK, parsed)
    assert claim_url("https://x.example", LINK, OCC) == f"https://x.example/c/{token}"


def test_tokens_differ_by_occurrence_kind_and_member() -> None:
    bo = replace(LINK, id="BBBBBBBBBBBBBBBB", member_id="m-bo", secret=b"b" * 32)
    tokens = {
        claim_token(LINK, OCC),
        claim_token(LINK, "t-1_20270323T1000"),
        claim_token(bo, OCC),
        feed_token(LINK),
        setup_token(LINK),
        feed_token(bo),
    }
    assert len(tokens) == 6


def test_feed_and_setup_tokens_carry_no_subject() -> None:
    for token, kind in ((feed_token(LINK), LinkKind.FEED), (setup_token(LINK), LinkKind.SETUP)):
        parsed = parse_token(token)
        assert parsed is not None
        assert (parsed.kind, parsed.subject) == (kind, "")
        assert len(_raw(token)) == 1 + LINK_ID_BYTES + TAG_BYTES
    assert feed_url("https://x.example", LINK) == f"https://x.example/feeds/{feed_token(LINK)}.ics"


def test_new_links_are_random_and_long_enough() -> None:
    first, second = (new_member_link("north", "m-anna", now=NOW) for _ in range(2))
    assert first.id != second.id and first.secret != second.secret
    assert len(_raw(first.id)) == LINK_ID_BYTES == 12
    assert len(first.secret) == 32


def test_a_tampered_tag_or_subject_does_not_verify() -> None:
    raw = bytearray(_raw(claim_token(LINK, OCC)))
    for position in range(1 + LINK_ID_BYTES, 1 + LINK_ID_BYTES + TAG_BYTES):
        forged = bytearray(raw)
        forged[position] ^= 0x01
        parsed = parse_token(_encode(bytes(forged)))
        assert parsed is not None and not verifies(LINK, parsed)
    # Another occurrence with this occurrence's tag: the tag covers the subject.
    moved = bytes(raw[: 1 + LINK_ID_BYTES + TAG_BYTES]) + b"t-1_20270323T1000"
    parsed = parse_token(_encode(moved))
    assert parsed is not None and not verifies(LINK, parsed)
    # A claim tag reused as a feed token: the tag covers the kind.
    as_feed = bytes([LinkKind.FEED]) + bytes(raw[1 : 1 + LINK_ID_BYTES + TAG_BYTES])
    parsed = parse_token(_encode(as_feed))
    assert parsed is not None and not verifies(LINK, parsed)


def test_a_token_made_with_another_secret_does_not_verify() -> None:
    forged = parse_token(claim_token(replace(LINK, secret=b"\x00" * 32), OCC))
    assert forged is not None and not verifies(LINK, forged)


def test_malformed_tokens_are_not_parsed() -> None:
    good = claim_token(LINK, OCC)
    for bad in [
        "",
        "pending",
        good + "=",  # padding
        good[:-1] + "+",  # outside the URL-safe alphabet
        good[:20],  # too short to hold a tag
        _encode(bytes([9]) + _raw(good)[1:]),  # unknown kind
        _encode(bytes([LinkKind.CLAIM]) + _raw(feed_token(LINK))[1:]),  # claim without subject
        _encode(_raw(feed_token(LINK)) + b"x"),  # feed with a subject
        _encode(_raw(good)[:-1] + b"\xff"),  # subject not UTF-8
        "A" * 5000,
    ]:
        assert parse_token(bad) is None, bad


def test_non_canonical_base64_is_refused() -> None:
    token = feed_token(LINK)  # 29 bytes: the last character holds 2 stray bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    assert _raw(twin) == _raw(token)
    assert parse_token(twin) is None


@given(st.text(min_size=1, max_size=80).filter(lambda s: len(s.encode()) <= 255))
def test_any_occurrence_id_round_trips(occurrence_id: str) -> None:
    parsed = parse_token(claim_token(LINK, occurrence_id))
    assert parsed is not None
    assert parsed.subject == occurrence_id
    assert verifies(LINK, parsed)


@given(st.text(max_size=120))
def test_parsing_never_raises(token: str) -> None:
    parse_token(token)


async def test_resolve_tells_genuine_revoked_and_unknown_tokens_apart() -> None:
    store = MemoryStore()
    async with store.transaction() as tx:
        link = await ensure_link(tx, "north", "m-anna", now=NOW)
        same = await ensure_link(tx, "north", "m-anna", now=NOW)
    assert same == link
    token = claim_token(link, OCC)
    async with store.transaction() as tx:
        assert await resolve(tx, token, LinkKind.CLAIM) == (link, OCC)
        assert await resolve(tx, token, LinkKind.FEED) is Refusal.UNKNOWN
        assert await resolve(tx, feed_token(link), LinkKind.FEED) == (link, "")
        forged = claim_token(replace(link, secret=b"\x01" * 32), OCC)
        assert await resolve(tx, forged, LinkKind.CLAIM) is Refusal.UNKNOWN
        stranger = claim_token(new_member_link("north", "m-x", now=NOW), OCC)
        assert await resolve(tx, stranger, LinkKind.CLAIM) is Refusal.UNKNOWN
        assert await resolve(tx, "garbage", LinkKind.CLAIM) is Refusal.UNKNOWN


async def test_revoking_kills_every_old_token_and_the_next_link_is_new() -> None:
    store = MemoryStore()
    async with store.transaction() as tx:
        old = await ensure_link(tx, "north", "m-anna", now=NOW)
        assert await revoke(tx, "north", "m-anna", now=NOW, actor="api")
        assert not await revoke(tx, "north", "m-anna", now=NOW, actor="api")
    async with store.transaction() as tx:
        for token, kind in [
            (claim_token(old, OCC), LinkKind.CLAIM),
            (feed_token(old), LinkKind.FEED),
            (setup_token(old), LinkKind.SETUP),
        ]:
            assert await resolve(tx, token, kind) is Refusal.REVOKED
        # A forged token for the revoked link is still just unknown.
        forged = claim_token(replace(old, secret=b"\x02" * 32), OCC)
        assert await resolve(tx, forged, LinkKind.CLAIM) is Refusal.UNKNOWN
        new = await ensure_link(tx, "north", "m-anna", now=NOW)
        assert (new.id, new.secret) != (old.id, old.secret)
        assert await resolve(tx, claim_token(new, OCC), LinkKind.CLAIM) == (new, OCC)
        audit = await tx.list_audit("north", "m-anna")
    assert [entry.action for entry in audit] == ["member_links.revoked"]


def test_a_form_token_is_bound_to_its_link_token_and_expires() -> None:
    token = claim_token(LINK, OCC)
    value = form_token(LINK, token, issued=NOW)
    assert check_form_token(LINK, token, value, now=NOW)
    assert check_form_token(LINK, token, value, now=NOW + FORM_TOKEN_TTL)
    assert not check_form_token(LINK, token, value, now=NOW + FORM_TOKEN_TTL + timedelta(seconds=1))
    assert not check_form_token(LINK, token, value, now=NOW - timedelta(hours=1))  # from the future
    other = claim_token(LINK, "t-1_20270323T1000")
    assert not check_form_token(LINK, other, value, now=NOW)
    assert not check_form_token(replace(LINK, secret=b"\x03" * 32), token, value, now=NOW)
    stamp, _, tag = value.partition(".")
    assert not check_form_token(LINK, token, f"{int(stamp) + 1}.{tag}", now=NOW)
    for bad in ["", ".", stamp, f"{stamp}.", f"x.{tag}", f"{stamp}.{tag}!", f"-5.{tag}"]:
        assert not check_form_token(LINK, token, bad, now=NOW), bad
