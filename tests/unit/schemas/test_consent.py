"""The canonical consent payload: ConsentDecisionSchema and contact_key."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from marshmallow import ValidationError

from schemas.consent import (
    CONSENT_STATES,
    MAX_EMAIL_LENGTH,
    ConsentDecisionSchema,
    contact_key,
)

MINIMAL = {"email": "jane@example.com", "tracking_consent": "granted"}


def load(payload: Any, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = ConsentDecisionSchema(**kwargs).load(payload)
    return result


def errors_of(payload: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        ConsentDecisionSchema(**kwargs).load(payload)
    messages = caught.value.messages
    assert isinstance(messages, dict)
    return messages


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def email_of_length(length: int) -> str:
    """A syntactically valid address of exactly `length` characters (domain labels <= 63)."""
    local = "a" * 64
    labels = []
    remaining = length - len(local) - 1 - len(".com")
    while remaining > 0:
        label = min(63, remaining)
        if remaining - label == 1:  # never leave a lone "." without a label
            label -= 1
        labels.append("b" * label)
        remaining -= label + 1
    email = f"{local}@{'.'.join(labels)}.com"
    assert len(email) == length
    return email


# --- valid payloads -----------------------------------------------------------------------


def test_minimal_payload() -> None:
    assert load(MINIMAL) == MINIMAL


@pytest.mark.parametrize("state", CONSENT_STATES)
def test_every_consent_state_is_accepted(state: str) -> None:
    assert load({**MINIMAL, "tracking_consent": state})["tracking_consent"] == state


def test_full_payload() -> None:
    occurred = dt.datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=dt.UTC)
    payload = {
        "email": "Jane.Doe+news@Example.com",
        "tracking_consent": "withdrawn",
        "source": "preference_center",
        "source_id": "form-42",
        "occurred_at": "2024-05-01T14:30:15.123+02:00",
    }
    loaded = load(payload)
    assert loaded["email"] == "Jane.Doe+news@Example.com"  # as sent, not normalised
    assert loaded["tracking_consent"] == "withdrawn"
    assert loaded["source"] == "preference_center"
    assert loaded["source_id"] == "form-42"
    assert loaded["occurred_at"] == occurred
    assert loaded["occurred_at"].utcoffset() is not None


def test_occurred_at_with_z_suffix() -> None:
    loaded = load({**MINIMAL, "occurred_at": "2024-05-01T12:00:00Z"})
    assert loaded["occurred_at"] == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


# --- field errors -------------------------------------------------------------------------


def test_missing_required_fields() -> None:
    assert errors_of({}) == {
        "email": ["Missing data for required field."],
        "tracking_consent": ["Missing data for required field."],
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email", "not-an-address", "Not a valid email address."),
        ("email", "jane@", "Not a valid email address."),
        ("email", " jane@example.com", "Not a valid email address."),
        ("email", 42, "Not a valid email address."),
        ("email", None, "Field may not be null."),
        ("tracking_consent", "maybe", "Must be one of: granted, denied, withdrawn, unknown."),
        ("tracking_consent", "GRANTED", "Must be one of: granted, denied, withdrawn, unknown."),
        ("tracking_consent", None, "Field may not be null."),
        ("tracking_consent", True, "Not a valid string."),
        ("source", "", "Length must be between 1 and 255."),
        ("source", "s" * 256, "Length must be between 1 and 255."),
        ("source", 7, "Not a valid string."),
        ("source_id", "", "Length must be between 1 and 255."),
        ("source_id", "i" * 256, "Length must be between 1 and 255."),
        ("source_id", ["x"], "Not a valid string."),
        ("occurred_at", "yesterday", "Not a valid datetime."),
        ("occurred_at", 1700000000, "Not a valid datetime."),
        ("occurred_at", "2024-05-01T12:00:00", "Not a valid aware datetime."),
    ],
)
def test_field_error_messages(field: str, value: Any, message: str) -> None:
    assert errors_of({**MINIMAL, field: value}) == {field: [message]}


def test_label_length_limits_are_inclusive() -> None:
    loaded = load({**MINIMAL, "source": "s" * 255, "source_id": "i" * 255})
    assert (len(loaded["source"]), len(loaded["source_id"])) == (255, 255)


def test_errors_for_several_fields_are_reported_together() -> None:
    errors = errors_of({"email": "x", "tracking_consent": "maybe", "occurred_at": "nope"})
    assert set(errors) == {"email", "tracking_consent", "occurred_at"}


@pytest.mark.parametrize("unknown", ["emial", "consent", "contact_id", "occurredAt"])
def test_unknown_field_is_rejected(unknown: str) -> None:
    assert errors_of({**MINIMAL, unknown: "x"}) == {unknown: ["Unknown field."]}


def test_naive_datetime_rejected() -> None:
    naive = dt.datetime(2024, 5, 1, 12, 0, 0).isoformat()
    assert errors_of({**MINIMAL, "occurred_at": naive}) == {
        "occurred_at": ["Not a valid aware datetime."]
    }


# --- future occurred_at and skew ------------------------------------------------------------


def test_future_beyond_default_skew_rejected() -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5, seconds=30)
    assert errors_of({**MINIMAL, "occurred_at": iso(future)}) == {
        "occurred_at": ["Must not be in the future."]
    }


def test_future_within_default_skew_accepted() -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4, seconds=30)
    assert load({**MINIMAL, "occurred_at": iso(future)})["occurred_at"] == future


def test_far_future_rejected() -> None:
    errors = errors_of({**MINIMAL, "occurred_at": "2999-01-01T00:00:00Z"})
    assert errors == {"occurred_at": ["Must not be in the future."]}


def test_future_in_another_timezone_is_compared_as_an_instant() -> None:
    # 10 minutes ahead, written with a -05:00 offset: still beyond a 5-minute skew.
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).astimezone(
        dt.timezone(dt.timedelta(hours=-5))
    )
    assert "occurred_at" in errors_of({**MINIMAL, "occurred_at": iso(ahead)})


@pytest.mark.parametrize(
    ("skew", "ahead", "accepted"),
    [
        (dt.timedelta(0), dt.timedelta(seconds=30), False),
        (dt.timedelta(minutes=1), dt.timedelta(seconds=30), True),
        (dt.timedelta(minutes=1), dt.timedelta(seconds=90), False),
        (dt.timedelta(hours=1), dt.timedelta(minutes=50), True),
        (dt.timedelta(hours=1), dt.timedelta(minutes=70), False),
    ],
)
def test_skew_is_configurable(skew: dt.timedelta, ahead: dt.timedelta, accepted: bool) -> None:
    payload = {**MINIMAL, "occurred_at": iso(dt.datetime.now(dt.UTC) + ahead)}
    if accepted:
        assert "occurred_at" in load(payload, max_future_skew=skew)
    else:
        assert errors_of(payload, max_future_skew=skew) == {
            "occurred_at": ["Must not be in the future."]
        }


def test_past_decision_accepted_with_zero_skew() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    assert load({**MINIMAL, "occurred_at": iso(past)}, max_future_skew=dt.timedelta(0))


# --- shape of the document -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [[], [MINIMAL], "jane@example.com", 42, None, True])
def test_non_object_json_rejected(payload: Any) -> None:
    assert errors_of(payload) == {"_schema": ["Invalid input type."]}


# --- e-mail length ---------------------------------------------------------------------------


def test_email_at_the_length_limit_accepted() -> None:
    email = email_of_length(MAX_EMAIL_LENGTH)
    assert load({**MINIMAL, "email": email})["email"] == email


def test_email_over_the_length_limit_rejected() -> None:
    email = email_of_length(MAX_EMAIL_LENGTH + 1)
    assert errors_of({**MINIMAL, "email": email}) == {
        "email": [f"Longer than maximum length {MAX_EMAIL_LENGTH}."]
    }


# --- contact_key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "key"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("jane.doe@example.com", "jane.doe@example.com"),
        ("  Jane.Doe+Tag@Example.com\t", "jane.doe+tag@example.com"),
        ("ÄNNE@Example.com", "änne@example.com"),
    ],
)
def test_contact_key_folds_case_and_strips(email: str, key: str) -> None:
    assert contact_key(email) == key


def test_contact_key_is_the_same_for_every_casing() -> None:
    variants = ["Jane@Example.com", "JANE@EXAMPLE.COM", "jane@example.com", "jAnE@eXaMpLe.CoM"]
    assert len({contact_key(v) for v in variants}) == 1


def test_contact_key_keeps_distinct_addresses_distinct() -> None:
    assert contact_key("jane+a@example.com") != contact_key("jane+b@example.com")
    assert contact_key("jane@example.com") != contact_key("jane@example.org")


# --- control characters and implausible times -------------------------------------------------


@pytest.mark.parametrize("field", ["source", "source_id"])
@pytest.mark.parametrize("value", ["a\x00b", "line\nbreak", "tab\there", "bell\x07"])
def test_control_characters_in_labels_rejected(field: str, value: str) -> None:
    assert errors_of({**MINIMAL, field: value}) == {field: ["Must not contain control characters."]}


def test_control_characters_in_email_rejected() -> None:
    errors = errors_of({**MINIMAL, "email": "ja\x00ne@example.com"})
    assert "Must not contain control characters." in errors["email"]


def test_non_ascii_printable_labels_accepted() -> None:
    assert load({**MINIMAL, "source": "préférences ✓"})["source"] == "préférences ✓"


@pytest.mark.parametrize(
    "value",
    ["1969-12-31T23:59:59Z", "1900-01-01T00:00:00+00:00", "0001-01-01T00:00:00+01:00"],
)
def test_times_before_the_epoch_rejected(value: str) -> None:
    # The last one cannot even be converted to UTC: still a 422-style error, not an exception.
    assert errors_of({**MINIMAL, "occurred_at": value}) == {
        "occurred_at": ["Must be a time after 1970-01-01T00:00:00Z."]
    }


def test_the_epoch_itself_is_accepted() -> None:
    loaded = load({**MINIMAL, "occurred_at": "1970-01-01T00:00:00Z"})
    assert loaded["occurred_at"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
