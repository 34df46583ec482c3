"""Contact identity (docs/sources/standard-webhooks.md#contact-identity) and address masking in
logs, for every address form the intake accepts, in any script."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from relay.ledger.models import Contact
from relay.telemetry.logs import json_formatter, mask_email, scrub
from schemas.consent import contact_key
from tests.helpers.email_strategies import accepted_emails
from tests.helpers.source_world import SourceWorld

# Bounded for a 2-core CI machine: a few seconds per test in all.
BOUNDED = settings(
    max_examples=300,
    deadline=dt.timedelta(seconds=2),
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONFIG = f"""
kind = "standard-webhooks"
secrets = ["{SECRET}"]
source = "form"
"""

# --- identity ---------------------------------------------------------------------------


@BOUNDED
@given(accepted_emails)
def test_the_key_is_idempotent(email: str) -> None:
    assert contact_key(contact_key(email)) == contact_key(email)


@BOUNDED
@given(accepted_emails)
def test_canonically_equivalent_spellings_and_ascii_case_are_one_contact(email: str) -> None:
    key = contact_key(email)
    assert contact_key(unicodedata.normalize("NFD", email)) == key
    assert contact_key(email.swapcase() if email.isascii() else email) == key
    assert contact_key(f"  {email} ") == key


@BOUNDED
@given(accepted_emails, accepted_emails)
def test_addresses_stay_distinct_unless_the_rule_merges_them(a: str, b: str) -> None:
    def by_rule(email: str) -> tuple[str, str]:
        local, _, domain = unicodedata.normalize("NFC", email.strip()).rpartition("@")
        return unicodedata.normalize("NFC", local.lower()), contact_key("x@" + domain)[2:]

    assert (contact_key(a) == contact_key(b)) == (by_rule(a) == by_rule(b))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("\u212aelvin@example.com", "kelvin@example.com"),  # KELVIN SIGN is canonically K
        ("Kelvin@Example.COM", "kelvin@example.com"),
        ("jo\u0308rg@bücher.de", "JÖRG@BÜCHER.DE"),  # NFD and NFC, any case
        ("jörg@xn--bcher-kva.de", "jörg@bücher.de"),  # A-label and U-label: one domain
        ("\u2126mega@example.com", "ωmega@example.com"),  # OHM SIGN is canonically Ω
    ],
)
def test_one_contact(one: str, other: str) -> None:
    assert contact_key(one) == contact_key(other)
    assert mask_email(one) == mask_email(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("\uff4belvin@example.com", "kelvin@example.com"),  # fullwidth k: compatibility only
        ("straße@example.com", "strasse@example.com"),  # no case folding beyond lower()
        ("\ufb01le@example.com", "file@example.com"),  # the fi ligature
        ("jörg@example.com", "jorg@example.com"),
        ("j.doe@example.com", "jdoe@example.com"),  # dots and tags are the provider's business
        ("jdoe+news@example.com", "jdoe@example.com"),
    ],
)
def test_distinct_contacts(one: str, other: str) -> None:
    assert contact_key(one) != contact_key(other)


def test_the_ledger_keeps_one_contact_per_identity(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG)
    for email in ("\u212aelvin@example.com", "kelvin@example.com", "\uff4belvin@example.com"):
        response = source_world.send_json({"email": email, "tracking_consent": "granted"})
        assert response.status_code == 202, response.get_json()

    with source_world.app.extensions["consent_relay"].sessions() as session:
        keys = session.scalars(select(Contact.email_key).order_by(Contact.id)).all()
        assert session.scalar(select(func.count()).select_from(Contact)) == 2
    assert keys == ["kelvin@example.com", "\uff4belvin@example.com"]


# --- masking ----------------------------------------------------------------------------


def rendered(message: str) -> str:
    """One line as the JSON formatter writes it, the text both in the message and a field."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("test_email_identity.masking")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.info("ignored: %s", message, extra={"reason": message})
    return stream.getvalue()


@BOUNDED
@given(accepted_emails, st.text(max_size=20), st.text(max_size=20))
def test_no_accepted_address_appears_in_a_log_line(email: str, before: str, after: str) -> None:
    line = rendered(f"{before}{email}{after}")
    decoded = json.dumps(json.loads(line), ensure_ascii=False)
    assert email not in line and email not in decoded


@pytest.mark.parametrize(
    "text",
    [
        "ignored: scrub.jörg@bücher.de has no consent",
        "用户@例子.广告",
        "пользователь@пример.рф",
        '"john\\ doe"@example.com',
        "j%C3%B6rg%40b%C3%BCcher.de",
        "jörg＠bücher.de",
        "SRS0=HH=TT=orig.example=local@srs.example.net",
    ],
)
def test_addresses_in_free_text_are_masked(text: str) -> None:
    masked = scrub(text)
    assert "em_" in masked
    for fragment in ("jörg", "用户", "пользователь", "john", "local", "b%C3%BCcher"):
        assert fragment not in masked


def test_a_url_encoded_address_gets_the_handle_of_the_address() -> None:
    assert scrub("?email=j%C3%B6rg%40b%C3%BCcher.de") == mask_email("jörg@bücher.de")


def test_text_without_an_at_sign_is_returned_as_is() -> None:
    text = "celery@host ready; no address here: x.y.z"
    assert scrub(text) == text
    assert scrub("plain words") == "plain words"
