import base64
import time
import warnings
from datetime import UTC, datetime

import pytest

from adapters.host.signing import (
    BadSignature,
    InvalidSecret,
    InvalidWebhook,
    MalformedHeaders,
    MissingHeaders,
    StaleTimestamp,
    decode_secret,
    sign,
    signed_headers,
    verify,
)

with warnings.catch_warnings():
    # The reference implementation is a test dependency only; whatever it warns about on
    # import is not ours to fix, and filterwarnings=error would turn it into a collection error.
    warnings.simplefilter("ignore")
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"carecal test key 0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, rotated in").decode()
BODY = b'{"type":"task.cancelled","data":{"id":"t-1","citizen_id":"c-123","version":2}}'
NOW = 1_790_000_000


def headers_for(
    secret: str = SECRET, *, timestamp: int = NOW, body: bytes = BODY
) -> dict[str, str]:
    return signed_headers(secret, "msg_1", body, timestamp=timestamp)


def test_decode_secret_strips_prefix_and_tolerates_missing_padding() -> None:
    assert decode_secret("whsec_c2VjcmV0") == b"secret"
    assert decode_secret("c2VjcmV0") == b"secret"
    assert decode_secret("whsec_c2VjcmV0YQ") == b"secreta"  # unpadded "c2VjcmV0YQ=="


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!", "whsec_abcde"])
def test_unusable_secrets_are_configuration_errors_that_do_not_quote_the_secret(
    secret: str,
) -> None:
    with pytest.raises(InvalidSecret) as info:
        decode_secret(secret)
    assert not isinstance(info.value, InvalidWebhook)
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(info.value)
    # No chained binascii error either: its message can quote the offending characters.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_sign_matches_the_standard_webhooks_spec_example() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_signed_headers_verify() -> None:
    verify([SECRET], headers_for(), BODY, now=NOW)


def test_header_names_are_case_insensitive() -> None:
    headers = {name.title(): value for name, value in headers_for().items()}
    verify([SECRET], headers, BODY, now=NOW)


def test_any_signature_against_any_secret_is_accepted() -> None:
    ours = headers_for(SECRET)
    theirs = headers_for(OTHER_SECRET)
    combined = dict(
        ours, **{"webhook-signature": f"{theirs['webhook-signature']} {ours['webhook-signature']}"}
    )
    verify([SECRET], combined, BODY, now=NOW)
    verify([OTHER_SECRET], combined, BODY, now=NOW)
    # Key rotation on our side: the old secret still listed next to the new one.
    verify([OTHER_SECRET, SECRET], ours, BODY, now=NOW)


def test_other_versions_and_garbage_entries_are_skipped() -> None:
    good = headers_for()["webhook-signature"]
    digest = good.removeprefix("v1,")
    headers = dict(headers_for(), **{"webhook-signature": f"v2,{digest} v1 v1,@@@ ,, {good}"})
    verify([SECRET], headers, BODY, now=NOW)
    # The same digest under another version never counts.
    with pytest.raises(BadSignature):
        verify([SECRET], dict(headers, **{"webhook-signature": f"v1a,{digest}"}), BODY, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (dict(h, **{"webhook-id": "msg_2"}), b),
        lambda h, b: (dict(h, **{"webhook-timestamp": str(NOW + 1)}), b),
        lambda h, b: (h, b + b" "),
        lambda h, b: (h, b.replace(b"t-1", b"t-2")),
        lambda h, b: (dict(h, **{"webhook-signature": "v1," + "A" * 44}), b),
    ],
    ids=["id", "timestamp", "body-appended", "body-changed", "forged"],
)
def test_any_change_breaks_the_signature(tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(headers_for(), BODY)
    with pytest.raises(BadSignature):
        verify([SECRET], headers, body, now=NOW)


def test_wrong_secret_is_a_bad_signature() -> None:
    with pytest.raises(BadSignature):
        verify([OTHER_SECRET], headers_for(), BODY, now=NOW)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_headers(header: str, how: str) -> None:
    headers = headers_for()
    if how == "absent":
        del headers[header]
    else:
        headers[header] = ""
    with pytest.raises(MissingHeaders, match=header):
        verify([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize(
    "timestamp", ["soon", "1790000000.5", "-1790000000", "1e9", "\uff11\uff12"]
)
def test_unreadable_timestamps_are_malformed(timestamp: str) -> None:
    headers = dict(headers_for(), **{"webhook-timestamp": timestamp})
    with pytest.raises(MalformedHeaders):
        verify([SECRET], headers, BODY, now=NOW)


def test_overlong_id_is_malformed() -> None:
    headers = signed_headers(SECRET, "m" * 256, BODY, timestamp=NOW)
    with pytest.raises(MalformedHeaders):
        verify([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -10_000_000])
def test_timestamps_outside_the_tolerance_are_stale(skew: int) -> None:
    with pytest.raises(StaleTimestamp):
        verify([SECRET], headers_for(timestamp=NOW + skew), BODY, now=NOW)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_at_the_edge_of_the_tolerance_are_fresh(skew: int) -> None:
    verify([SECRET], headers_for(timestamp=NOW + skew), BODY, now=NOW)


def test_tolerance_is_configurable() -> None:
    with pytest.raises(StaleTimestamp):
        verify([SECRET], headers_for(timestamp=NOW - 61), BODY, now=NOW, tolerance_seconds=60)


def test_no_secrets_is_a_configuration_error() -> None:
    with pytest.raises(InvalidSecret):
        verify([], headers_for(), BODY, now=NOW)


def test_messages_never_reveal_secrets_or_signatures() -> None:
    good = headers_for()
    forged = dict(good, **{"webhook-signature": "v1,c2lnbmF0dXJl"})
    cases = [
        (forged, NOW),
        (good, NOW + 10_000),
        ({k: v for k, v in good.items() if k != "webhook-id"}, NOW),
    ]
    for headers, now in cases:
        with pytest.raises(InvalidWebhook) as info:
            verify([OTHER_SECRET], headers, BODY, now=now)
        text = str(info.value)
        for secret in (SECRET, OTHER_SECRET):
            assert secret.removeprefix("whsec_") not in text
        assert "c2lnbmF0dXJl" not in text
        assert good["webhook-signature"].removeprefix("v1,") not in text


# Interoperability with the reference implementation, both ways. It reads the real clock, so
# these tests do too.


def test_reference_library_signatures_verify_here() -> None:
    now = int(time.time())
    signature = Webhook(SECRET).sign("msg_ref", datetime.fromtimestamp(now, UTC), BODY.decode())
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }
    verify([SECRET], headers, BODY, now=time.time())


def test_our_signatures_verify_in_the_reference_library() -> None:
    body = '{"type":"task.claimed","data":{"member_id":"m-anna","note":"Søren"}}'.encode()
    headers = signed_headers(SECRET, "msg_out", body, timestamp=int(time.time()))
    assert Webhook(SECRET).verify(body, headers)["data"]["note"] == "Søren"
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, headers)


def test_unprefixed_secrets_mean_the_same_key_as_in_the_reference_library() -> None:
    raw = SECRET.removeprefix("whsec_")
    headers = signed_headers(raw, "msg_raw", BODY, timestamp=int(time.time()))
    Webhook(SECRET).verify(BODY, headers)
    verify([SECRET], headers, BODY, now=time.time())
