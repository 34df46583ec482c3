"""The sender presets of `kind = "hmac"` (docs/reference/hmac-senders.md): each verifies its
vendor's published test vector, or one computed from the vendor's documented algorithm
(marked so); each preset's `sources new` skeleton is a working config that turns its golden
fixture into a decision; tampered bodies, wrong secrets, stale timestamps and replays are
refused or recognised."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from schemas.hmac import load_preset, preset_names
from service.cli.sources import skeleton
from service.sources.base import SignatureError
from service.sources.fixtures import load_fixture
from service.sources.hmac_signature import Scheme, verify
from tests.helpers.source_world import SourceWorld

SECRET = "preset-test-secret-0123"
T = "1700000000"
# preset -> (secret, body, headers, timestamp of the vector or None, source of the vector)
VECTORS = {
    # Published: GitHub, "Validating webhook deliveries", "Testing the webhook payload
    # validation" (docs/reference/hmac-senders.md#github).
    "github": (
        "It's a Secret to Everybody",
        b"Hello, World!",
        {
            "x-hub-signature-256": "sha256="
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        },
        None,
    ),
    # Computed, no published vector: base64 HMAC-SHA256 of the body
    # (docs/reference/hmac-senders.md#shopify).
    "shopify": (
        "shopify-client-secret",
        b'{"id":706405506930370084,"email":"bob@biller.com",'
        b'"email_marketing_consent":{"state":"subscribed"}}',
        {"x-shopify-hmac-sha256": "IqWJDMdYFT8J2cdTPKdQamgwxwK12BsiTZ3djkyYTkk="},
        None,
    ),
    # Computed, no published vector: hex HMAC-SHA256 of "<t>.<body>"
    # (docs/reference/hmac-senders.md#stripe).
    "stripe": (
        "whsec_test_secret",
        b'{"id":"evt_1","type":"checkout.session.completed"}',
        {
            "stripe-signature": f"t={T},v1="
            "a13d4b1f9003bc2fb6c06224e878b6056185eaa50d40e1e7dc05517f8af41d7b,v0=00"
        },
        T,
    ),
    # Computed, no published vector (docs/reference/hmac-senders.md#calendly).
    "calendly": (
        "calendly-signing-key",
        b'{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/x"}}',
        {
            "calendly-webhook-signature": f"t={T},v1="
            "cfec8a62c98699e1c51b8063325bdf5f2b01432935cfcb768f05034375206d9a"
        },
        T,
    ),
    # Computed, no published vector; the scheme itself is UNVERIFIED
    # (docs/reference/hmac-senders.md#formstack).
    "formstack": (
        "formstack-hmac-key",
        b'{"FormID":"5012345","UniqueID":"1187654321"}',
        {
            "x-fs-signature": "sha256="
            "f0fdaa5fc7393acb57ff7f2f928305a208b6acedc9ff32a7abf0a2c6437830ef"
        },
        None,
    ),
}
FIXTURES = {name: load_preset(name)["example"]["fixture"] for name in preset_names()}


def scheme(preset: str) -> Scheme:
    return Scheme.from_settings(load_preset(preset)["hmac"])


def check(preset: str, body: bytes, secrets: list[str], now_offset: float = 1) -> int | None:
    _secret, _body, headers, timestamp = VECTORS[preset]
    now = int(timestamp or time.time()) + now_offset
    return verify(scheme(preset), headers, body, "https://relay/x", secrets, 300, now)


def world(tmp_path: Path, preset: str) -> SourceWorld:
    """A relay whose one source is the preset's `sources new` skeleton, secrets filled in."""
    table = "\n".join(skeleton(preset, "src").splitlines()[2:])  # without the title and header
    return SourceWorld(tmp_path, re.sub(r"\$\{[A-Z_]+\}", SECRET, table))


def test_every_preset_has_a_vector_and_a_fixture() -> None:
    assert set(VECTORS) == set(preset_names()) == set(FIXTURES)


@pytest.mark.parametrize("preset", sorted(VECTORS))
def test_vendor_vector_verifies_with_any_active_secret(preset: str) -> None:
    secret, body, _headers, timestamp = VECTORS[preset]
    checked = check(preset, body, ["an-older-secret", secret])
    assert checked == (int(timestamp) if timestamp else None)


@pytest.mark.parametrize("preset", sorted(VECTORS))
def test_tampered_body_and_wrong_secret_are_refused(preset: str) -> None:
    secret, body, _headers, _timestamp = VECTORS[preset]
    with pytest.raises(SignatureError, match="No signature matches"):
        check(preset, body + b" ", [secret])
    with pytest.raises(SignatureError, match="No signature matches"):
        check(preset, body, [secret + "x"])


@pytest.mark.parametrize("preset", ["stripe", "calendly"])
def test_stale_and_future_timestamps_are_refused(preset: str) -> None:
    secret, body, _headers, _timestamp = VECTORS[preset]
    with pytest.raises(SignatureError, match="too old"):
        check(preset, body, [secret], now_offset=301)
    with pytest.raises(SignatureError, match="too new"):
        check(preset, body, [secret], now_offset=-301)


def test_github_vector_through_the_preset_kind(tmp_path: Path) -> None:
    source_world = world(tmp_path, "github")
    _secret, body, headers, _ = VECTORS["github"]
    refused = source_world.post(source_world.url, body, {**headers, "X-GitHub-Delivery": "d-1"})
    assert refused.status_code == 401  # the secret here is not the vector's
    assert refused.get_json()["type"].endswith("invalid-signature")


EXPECTED = {
    "shopify": ("bob@biller.com", "granted", "shopify:sent-by-consent-relay"),
    "stripe": ("jenny.rosen@example.com", "granted", "stripe-checkout"),
    "calendly": ("test@example.com", "granted", "calendly"),
    "github": ("jane@example.com", "granted", "signup-app"),
    "formstack": ("jane@example.com", "granted", "formstack:5012345"),
}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_skeleton_config_turns_the_fixture_into_a_decision_once(
    tmp_path: Path, preset: str
) -> None:
    source_world = world(tmp_path, preset)
    body, content_type = load_fixture("hmac", FIXTURES[preset])
    signed = source_world.kind.sign(body, content_type, source_world.url, time.time())
    first = source_world.post(signed.url, signed.body, dict(signed.headers))
    assert first.status_code == 202, first.get_data(as_text=True)
    [event] = source_world.events()
    assert (event["email"], event["decision"], event["consent_source"]) == EXPECTED[preset]
    # The same signed delivery again (a retry, or a replay within the tolerance): recognised
    # by its event id, nothing new recorded.
    replay = source_world.post(signed.url, signed.body, dict(signed.headers))
    assert replay.status_code == 200
    assert replay.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


@pytest.mark.parametrize("preset", ["stripe", "calendly"])
def test_a_delivery_signed_too_long_ago_is_refused(tmp_path: Path, preset: str) -> None:
    source_world = world(tmp_path, preset)
    response = source_world.send_fixture("hmac", FIXTURES[preset], now=time.time() - 3600)
    assert response.status_code == 401
    assert "too old" in response.get_json()["detail"]
    assert source_world.events() == []


def test_shopify_topic_outside_the_preset_events_is_recorded_as_ignored(tmp_path: Path) -> None:
    source_world = world(tmp_path, "shopify")
    body = b'{"id": 1, "email": "bob@biller.com"}'
    signed = source_world.kind.sign(body, "application/json", source_world.url, time.time())
    headers = {**signed.headers, "X-Shopify-Topic": "orders/create"}
    response = source_world.post(signed.url, signed.body, headers)
    assert response.status_code == 200
    assert "'orders/create' is not in this source's events" in response.get_json()["reason"]
    assert [row["event_type"] for row in source_world.ignored()] == ["orders/create"]


@pytest.mark.parametrize("preset", sorted(VECTORS))
def test_each_preset_page_shows_what_sources_new_prints(preset: str) -> None:
    page = Path(__file__).parents[4] / "docs" / "sources" / "presets" / f"{preset}.md"
    assert f"```toml\n{skeleton(preset, preset)}\n```" in page.read_text()
