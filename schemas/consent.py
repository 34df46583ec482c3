"""The canonical consent payload accepted by `POST /webhooks/<source>`.

`occurred_at` is when the person decided. It is never the webhook timestamp, which
Standard Webhooks defines as the time of the delivery *attempt*
(docs/reference/standard-webhooks.md#the-specification).
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from typing import Any

import idna
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from schemas.text import PlainText

CONSENT_STATES = ("granted", "denied", "withdrawn", "unknown")

# Engage stores custom attribute values of up to 2000 characters
# (docs/reference/engage.md#endpoints); source labels are short identifiers, so a tighter bound
# keeps the ledger tidy.
MAX_LABEL_LENGTH = 255
# RFC 5321: a forward path is at most 256 octets including the angle brackets.
MAX_EMAIL_LENGTH = 254
# Consent records predate nothing before the Unix epoch; earlier values are data errors (and
# year-1 times with a positive offset cannot even be converted to UTC).
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The ledger's columns (relay/ledger/models.py): events.delivery_id, ignored_events.event_type
# and .reason.
MAX_EVENT_ID_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 128
MAX_IGNORED_REASON_LENGTH = 500

# Evidence of how consent was given (docs/reference/consent-records.md#the-fields): the
# Kantara receipt's `collectionMethod` is free text; ours is one of a few words so that a
# report can count them.
COLLECTION_METHODS = ("form", "crm", "import", "api", "operator")
# GDPR Art. 6(1)(a)-(f), the ISO/IEC TS 27560 record's lawful basis
# (docs/reference/consent-records.md#lawful-basis).
LAWFUL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
)
MAX_URL_LENGTH = 2000
MAX_PURPOSES = 20
MAX_JURISDICTION_LENGTH = 64
# A BCP 47 language tag (RFC 5646), as the Kantara receipt's `language`; 35 characters is the
# longest tag RFC 5646 section 4.4.1 asks implementations to support.
MAX_LANGUAGE_LENGTH = 35
LANGUAGE_TAG = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"
EVIDENCE_KEYS = (
    "notice_version",
    "notice_url",
    "purposes",
    "collection_method",
    "lawful_basis",
    "jurisdiction",
    "language",
)


def _printable(value: str) -> None:
    # PostgreSQL rejects NUL in text, and control characters have no place in a label; refusing
    # them here keeps a bad payload a 422 instead of a ledger error.
    if not value.isprintable():
        raise ValidationError("Must not contain control characters.")


_label = validate.Length(min=1, max=MAX_LABEL_LENGTH)


class ConsentDecisionSchema(Schema):
    """One consent decision. Unknown fields are rejected, not silently dropped."""

    class Meta:
        unknown = RAISE

    email = fields.Email(
        required=True, validate=[validate.Length(max=MAX_EMAIL_LENGTH), _printable]
    )
    tracking_consent = fields.String(required=True, validate=validate.OneOf(CONSENT_STATES))
    source = fields.String(validate=[validate.Length(min=1, max=MAX_LABEL_LENGTH), _printable])
    source_id = fields.String(validate=[validate.Length(min=1, max=MAX_LABEL_LENGTH), _printable])
    occurred_at = fields.AwareDateTime(format="iso")
    # Evidence fields: optional, a payload without them is as valid as before.
    notice_version = fields.String(validate=[_label, _printable])
    notice_url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=[validate.Length(max=MAX_URL_LENGTH), _printable],
    )
    purposes = fields.List(
        fields.String(validate=[_label, _printable]),
        validate=validate.Length(min=1, max=MAX_PURPOSES),
    )
    collection_method = fields.String(validate=validate.OneOf(COLLECTION_METHODS))
    lawful_basis = fields.String(validate=validate.OneOf(LAWFUL_BASES))
    jurisdiction = fields.String(
        validate=[validate.Length(min=1, max=MAX_JURISDICTION_LENGTH), _printable]
    )
    language = fields.String(
        validate=[validate.Length(max=MAX_LANGUAGE_LENGTH), validate.Regexp(LANGUAGE_TAG)]
    )

    def __init__(self, *, max_future_skew: dt.timedelta = dt.timedelta(minutes=5), **kwargs: Any):
        super().__init__(**kwargs)
        self.max_future_skew = max_future_skew

    @validates("occurred_at")
    def _plausible_time(self, value: dt.datetime, **_: Any) -> None:
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError as exc:
            raise ValidationError("Must be a time after 1970-01-01T00:00:00Z.") from exc
        if value < EARLIEST:
            raise ValidationError("Must be a time after 1970-01-01T00:00:00Z.")
        # A decision dated in the future would outrank every later real decision under
        # last-decision-wins, so a withdrawal could never take effect. Allow clock skew only.
        if value > dt.datetime.now(dt.UTC) + self.max_future_skew:
            raise ValidationError("Must not be in the future.")


class SourceEventSchema(Schema):
    """The sender's own id and type of one event, as the ledger stores them (every kind)."""

    event_id = PlainText(required=True, max_length=MAX_EVENT_ID_LENGTH)
    event_type = PlainText(required=True, max_length=MAX_EVENT_TYPE_LENGTH)


SOURCE_EVENT_SCHEMA = SourceEventSchema()


@functools.lru_cache(maxsize=8)
def decision_schema(max_future_skew: dt.timedelta) -> ConsentDecisionSchema:
    """Built once per setting: building a marshmallow schema deep-copies its fields, which
    cost as much as a load (bench/results/intake-profile.txt). A schema keeps no state
    between loads, so one instance serves every request."""
    return ConsentDecisionSchema(max_future_skew=max_future_skew)


def contact_key(email: str) -> str:
    """The identity of a contact (docs/sources/standard-webhooks.md#contact-identity): the address
    in NFC with its local part lower-cased and its domain in IDNA's canonical Unicode form (so
    `BÜCHER.de`,
    `bücher.de` and `xn--bcher-kva.de` are one domain). Canonically equivalent spellings are
    one contact (U+212A KELVIN SIGN is canonically `K`); compatibility variants (fullwidth
    letters, ligatures) and case foldings beyond lower-casing (`ß`/`ss`) stay distinct.
    ASCII addresses keep the plain lower-case key they always had (the fast path)."""
    email = email.strip()
    lowered = email.lower()
    if email.isascii() and "xn--" not in lowered:
        return lowered
    local, at, domain = unicodedata.normalize("NFC", email).rpartition("@")
    if not at:
        return _lower_nfc(email)
    return f"{_lower_nfc(local)}@{_domain_key(domain)}"


def _lower_nfc(text: str) -> str:
    # Lower-casing can leave a string that is not in NFC: normalise again.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())


@functools.lru_cache(maxsize=1024)
def _domain_key(domain: str) -> str:
    """IDNA 2008 with UTS #46 mapping, back to U-labels; a domain IDNA refuses (the intake
    accepts some, such as IP literals) is only lower-cased."""
    try:
        return str(idna.decode(idna.encode(domain, uts46=True)))
    except ValueError:  # idna.IDNAError and UnicodeError are ValueErrors
        return _lower_nfc(domain)
