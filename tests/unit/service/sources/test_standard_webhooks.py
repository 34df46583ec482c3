"""Standard Webhooks v1 signing and verification (docs/reference/senders.md#test-vectors,
docs/reference/standard-webhooks.md)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
import standardwebhooks

from schemas.config import decode_whsec
from service.sources.standard_webhooks import (
    MAX_ID_LENGTH,
    MAX_SIGNATURE_HEADER,
    SignatureError,
    StandardWebhooksVerifier,
    VerifiedDelivery,
    sign,
    verify,
)

# The docs test vector (docs/reference/senders.md#test-vectors).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(b"a-second-secret-for-rotation!!").decode()
KEY = decode_whsec(VECTOR_SECRET)
OTHER_KEY = decode_whsec(OTHER_SECRET)
TOLERANCE = 300


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    headers.update(overrides)
    return headers


def signed_headers(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, delivery_id, timestamp, body),
    }


def package_sign(secret: str, delivery_id: str, timestamp: int, body: str) -> str:
    """The independent signer: the `standardwebhooks` reference package."""
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return standardwebhooks.Webhook(secret).sign(delivery_id, when, body)


# --- the docs vector --------------------------------------------------------------------------


def test_docs_vector_through_sign() -> None:
    assert sign(KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_docs_vector_through_the_reference_package() -> None:
    # Guards the vector itself: the independent signer agrees with the published value.
    assert package_sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY.decode()) == (
        VECTOR_SIGNATURE
    )


def test_docs_vector_through_verify() -> None:
    result = verify(vector_headers(), VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)
    assert result == VerifiedDelivery(delivery_id=VECTOR_ID, timestamp=VECTOR_TS)


def test_whsec_secret_decodes_to_the_base64_payload() -> None:
    assert decode_whsec(VECTOR_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    # Unpadded secrets are accepted, as the reference package does.
    unpadded = "whsec_" + base64.b64encode(b"0123456789abcdefX").decode().rstrip("=")
    assert decode_whsec(unpadded) == b"0123456789abcdefX"


# --- rotation and interoperability ---------------------------------------------------------


@pytest.mark.parametrize("signing_key", [KEY, OTHER_KEY], ids=["first", "second"])
def test_either_active_secret_verifies(signing_key: bytes) -> None:
    headers = signed_headers(signing_key, "msg_rotation", VECTOR_TS, VECTOR_BODY)
    result = verify(headers, VECTOR_BODY, [KEY, OTHER_KEY], TOLERANCE, now=VECTOR_TS)
    assert result.delivery_id == "msg_rotation"


def test_secret_not_in_the_active_list_fails() -> None:
    headers = signed_headers(OTHER_KEY, "msg_rotation", VECTOR_TS, VECTOR_BODY)
    with pytest.raises(SignatureError, match="No signature matches"):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


def test_several_signatures_where_only_the_last_matches() -> None:
    wrong_key = sign(OTHER_KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    wrong_body = sign(KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY + b" ")
    header = f"v1a,c29tZWVkMjU1MTlzaWc= {wrong_key} {wrong_body} {VECTOR_SIGNATURE}"
    headers = vector_headers(**{"webhook-signature": header})
    assert verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS).delivery_id == VECTOR_ID


def test_several_signatures_none_matching_fails() -> None:
    wrong_key = sign(OTHER_KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    wrong_body = sign(KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY + b" ")
    headers = vector_headers(**{"webhook-signature": f"{wrong_key} {wrong_body}"})
    with pytest.raises(SignatureError):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


@pytest.mark.parametrize("secret", [VECTOR_SECRET, OTHER_SECRET])
def test_signatures_made_by_the_reference_package_verify(secret: str) -> None:
    body = '{"email":"jane@example.com","tracking_consent":"granted"}'
    timestamp = 1_700_000_000
    headers = {
        "webhook-id": "msg_pkg",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": package_sign(secret, "msg_pkg", timestamp, body),
    }
    result = verify(headers, body.encode(), [KEY, OTHER_KEY], TOLERANCE, now=timestamp)
    assert result == VerifiedDelivery("msg_pkg", timestamp)


def test_our_signature_is_accepted_by_the_reference_package() -> None:
    body = '{"email":"jane@example.com","tracking_consent":"denied"}'
    now = int(dt.datetime.now(dt.UTC).timestamp())
    headers = signed_headers(KEY, "msg_ours", now, body.encode())
    parsed = standardwebhooks.Webhook(VECTOR_SECRET).verify(body, headers)
    assert parsed == {"email": "jane@example.com", "tracking_consent": "denied"}


def test_verifier_object_uses_configured_secrets_and_real_clock() -> None:
    verifier = StandardWebhooksVerifier([VECTOR_SECRET, OTHER_SECRET], tolerance_seconds=60)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    headers = signed_headers(OTHER_KEY, "msg_obj", now, b"{}")
    assert verifier(headers, b"{}") == VerifiedDelivery("msg_obj", now)
    # The docs vector is years old: the real clock rejects it.
    with pytest.raises(SignatureError, match="too old"):
        verifier(vector_headers(), VECTOR_BODY)


# --- wrong secret, changed body -------------------------------------------------------------


def test_wrong_secret_fails() -> None:
    with pytest.raises(SignatureError, match="No signature matches"):
        verify(vector_headers(), VECTOR_BODY, [OTHER_KEY], TOLERANCE, now=VECTOR_TS)


def test_no_active_secret_fails() -> None:
    with pytest.raises(SignatureError):
        verify(vector_headers(), VECTOR_BODY, [], TOLERANCE, now=VECTOR_TS)


@pytest.mark.parametrize(
    "body",
    [
        b'{"test": 2432232315}',  # one digit changed
        b'{"test":  2432232314}',  # one byte added (re-serialised JSON)
        b'{"test": 2432232314',  # one byte removed
        b'{"test": 2432232314}\n',
    ],
)
def test_body_changed_by_one_byte_fails(body: bytes) -> None:
    with pytest.raises(SignatureError, match="No signature matches"):
        verify(vector_headers(), body, [KEY], TOLERANCE, now=VECTOR_TS)


def test_changed_id_or_timestamp_fails() -> None:
    with pytest.raises(SignatureError):
        verify(
            vector_headers(**{"webhook-id": VECTOR_ID + "x"}),
            VECTOR_BODY,
            [KEY],
            TOLERANCE,
            now=VECTOR_TS,
        )
    with pytest.raises(SignatureError):
        verify(
            vector_headers(**{"webhook-timestamp": str(VECTOR_TS + 1)}),
            VECTOR_BODY,
            [KEY],
            TOLERANCE,
            now=VECTOR_TS,
        )


def test_non_utf8_body_with_a_valid_signature_verifies() -> None:
    body = b'{"email": "\xff\xfe\x80"}'
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    headers = signed_headers(KEY, "msg_bytes", VECTOR_TS, body)
    assert verify(headers, body, [KEY], TOLERANCE, now=VECTOR_TS).delivery_id == "msg_bytes"
    with pytest.raises(SignatureError):
        verify(headers, body.replace(b"\xff", b"\xfe"), [KEY], TOLERANCE, now=VECTOR_TS)


# --- timestamps and tolerance ---------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [1, 60, 300, 3600])
def test_timestamp_tolerance_edges(tolerance: int) -> None:
    now = 1_700_000_000

    def check(timestamp: int) -> VerifiedDelivery:
        headers = signed_headers(KEY, "msg_ts", timestamp, b"{}")
        return verify(headers, b"{}", [KEY], tolerance, now=now)

    # Inside the window, including both edges.
    for timestamp in (now, now - 1, now + 1, now - tolerance, now + tolerance):
        assert check(timestamp).timestamp == timestamp
    # Just outside.
    with pytest.raises(SignatureError, match="too old"):
        check(now - tolerance - 1)
    with pytest.raises(SignatureError, match="too new"):
        check(now + tolerance + 1)


def test_fractional_now_is_compared_exactly() -> None:
    headers = signed_headers(KEY, "msg_ts", 1_000, b"{}")
    assert verify(headers, b"{}", [KEY], 10, now=1_010.0).timestamp == 1_000
    with pytest.raises(SignatureError, match="too old"):
        verify(headers, b"{}", [KEY], 10, now=1_010.5)


def test_stale_timestamp_rejected_even_with_a_valid_signature() -> None:
    headers = signed_headers(KEY, "msg_old", VECTOR_TS, VECTOR_BODY)
    with pytest.raises(SignatureError, match="too old"):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS + TOLERANCE + 1)
    with pytest.raises(SignatureError, match="too new"):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS - TOLERANCE - 1)


def test_verifier_tolerance_is_configurable() -> None:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    headers = signed_headers(KEY, "msg_tol", now - 120, b"{}")
    strict = StandardWebhooksVerifier([VECTOR_SECRET], tolerance_seconds=60)
    lenient = StandardWebhooksVerifier([VECTOR_SECRET], tolerance_seconds=600)
    with pytest.raises(SignatureError, match="too old"):
        strict(headers, b"{}")
    assert lenient(headers, b"{}").timestamp == now - 120


# --- malformed headers: always SignatureError, never another exception ------------------------


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(missing: str) -> None:
    headers = vector_headers()
    del headers[missing]
    with pytest.raises(SignatureError, match=f"Missing {missing}"):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_empty_header_counts_as_missing(missing: str) -> None:
    with pytest.raises(SignatureError, match=f"Missing {missing}"):
        verify(vector_headers(**{missing: ""}), VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "123.5",
        "-5",
        "",
        "9" * 13,  # huge
        "9" * 400,  # very huge
        "1e9",
        "0x10",
        "+1614265330",
        " 1614265330",
        "1614265330 ",
        "1614265330\n",
        "١٦١٤٢٦٥٣٣٠",  # non-ASCII digits
        "\x00",
    ],
)
def test_malformed_timestamp_raises_signature_error(value: str) -> None:
    headers = vector_headers(**{"webhook-timestamp": value})
    with pytest.raises(SignatureError):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


def test_huge_but_well_formed_timestamp_is_too_new() -> None:
    headers = vector_headers(**{"webhook-timestamp": "9" * 12})
    with pytest.raises(SignatureError, match="too new"):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


@pytest.mark.parametrize(
    "value",
    [
        "v1",
        "garbage",
        "v1,",
        "v1,!!!notbase64",
        "v1a,xxx",
        "v1a," + VECTOR_SIGNATURE[3:],  # right bytes, wrong scheme
        "V1," + VECTOR_SIGNATURE[3:],  # scheme is case-sensitive
        VECTOR_SIGNATURE[3:],  # no scheme at all
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",  # bad padding
        "v1,,",
        ",",
        " ",
        "v1,é",
        "x" * 5000,
        VECTOR_SIGNATURE + " " + "x" * (MAX_SIGNATURE_HEADER + 1),  # valid entry, header too long
    ],
)
def test_malformed_signature_raises_signature_error(value: str) -> None:
    headers = vector_headers(**{"webhook-signature": value})
    with pytest.raises(SignatureError):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


@pytest.mark.parametrize(
    "value",
    ["x" * (MAX_ID_LENGTH + 1), "x" * 10_000, "msg\n1", "msg\x00"],
)
def test_malformed_webhook_id_raises_signature_error(value: str) -> None:
    # Signed correctly, so only the id check can reject it.
    headers = signed_headers(KEY, value, VECTOR_TS, VECTOR_BODY)
    with pytest.raises(SignatureError, match="Malformed webhook-id"):
        verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS)


def test_webhook_id_at_the_length_limit_is_accepted() -> None:
    delivery_id = "m" * MAX_ID_LENGTH
    headers = signed_headers(KEY, delivery_id, VECTOR_TS, VECTOR_BODY)
    assert verify(headers, VECTOR_BODY, [KEY], TOLERANCE, now=VECTOR_TS).delivery_id == delivery_id


def test_signature_error_message_is_safe_to_return() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(vector_headers(), VECTOR_BODY, [OTHER_KEY], TOLERANCE, now=VECTOR_TS)
    message = str(caught.value)
    assert VECTOR_SIGNATURE[3:] not in message
    assert sign(OTHER_KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY)[3:] not in message


def test_timestamp_is_signed_exactly_as_sent() -> None:
    """A sender that zero-pads the timestamp signs the padded text; verify that text."""
    key = decode_whsec(VECTOR_SECRET)
    body = b'{"a": 1}'
    signature = sign(key, "msg_pad", "01614265330", body)
    headers = {
        "webhook-id": "msg_pad",
        "webhook-timestamp": "01614265330",
        "webhook-signature": signature,
    }
    assert verify(headers, body, [key], 300, now=1614265330).timestamp == 1614265330
