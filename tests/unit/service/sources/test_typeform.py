"""Typeform (docs/reference/sources/typeform.md): signature, fixtures -> decisions, and the
failures."""

from __future__ import annotations

import datetime as dt

import pytest

from service.sources.fixtures import load_fixture
from service.sources.typeform import signature
from tests.helpers.source_world import SourceWorld, fixture_json

SECRET = "typeform-webhook-secret"
CONFIG = f"""
kind = "typeform"
secrets = ["{SECRET}"]
source = "typeform:{{form_id}}"

[sources.src.mapping]
email = "readable_ref_email"
consent = "readable_ref_legal"
"""


def test_self_computed_vector() -> None:
    # docs/reference/senders.md#test-vectors (self-computed from the documented algorithm).
    body = b'{"event_id":"LtWXD3crgy","event_type":"form_response"}'
    assert signature("abc123", body) == "sha256=fQ0Tf/AAVUZy1Bdk1is5tXMLH2Il2Qj36lezGX2eN6s="


def test_documented_example_becomes_a_granted_decision(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("typeform", "form_response")

    assert response.status_code == 202, response.get_json()
    [event] = source_world.events()
    assert event["email"] == "laura@example.com"
    assert event["decision"] == "granted"
    assert event["consent_source"] == "typeform:lT4Z3j"
    assert event["consent_source_id"] == "lT4Z3j:a3a12ec67a1365927098a606107fac15"
    assert event["delivery_id"] == "LtWXD3crgy"
    assert event["occurred_at"] == dt.datetime(2018, 1, 18, 18, 17, 2, tzinfo=dt.UTC)


def test_redelivery_is_a_duplicate(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("typeform", "form_response").status_code == 202
    again = source_world.send_fixture("typeform", "form_response")
    assert again.status_code == 200
    assert again.get_json()["duplicate"] is True
    assert len(source_world.events()) == 1


def test_partial_response_is_ignored_and_recorded(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("typeform", "form_response_partial")

    assert response.status_code == 200
    assert response.get_json()["ignored"] is True
    assert source_world.events() == []
    [ignored] = source_world.ignored()
    assert ignored["event_type"] == "form_response_partial"
    assert "partial" in ignored["reason"]


def test_declined_legal_answer_is_denied(source_world: SourceWorld) -> None:
    payload = fixture_json("typeform", "form_response")
    payload["form_response"]["answers"][1]["boolean"] = False
    assert source_world.send_json(payload).status_code == 202
    assert source_world.events()[0]["decision"] == "denied"


def test_missing_consent_answer_is_ignored_with_its_reason(source_world: SourceWorld) -> None:
    payload = fixture_json("typeform", "form_response")
    del payload["form_response"]["answers"][1]
    response = source_world.send_json(payload)
    assert response.status_code == 200
    assert "No consent answer in 'readable_ref_legal'" in response.get_json()["reason"]


def test_wrong_secret_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("typeform", "form_response")
    headers = {"Content-Type": "application/json", "Typeform-Signature": signature("nope!!", body)}
    response = source_world.post("/webhooks/src", body, headers)
    assert response.status_code == 401
    assert source_world.events() == []


def test_missing_header_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("typeform", "form_response")
    response = source_world.post("/webhooks/src", body, {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert "Missing Typeform-Signature" in response.get_json()["detail"]


def test_tampered_body_is_refused(source_world: SourceWorld) -> None:
    body, _ = load_fixture("typeform", "form_response")
    headers = {"Content-Type": "application/json", "Typeform-Signature": signature(SECRET, body)}
    forged = body.replace(b"laura@example.com", b"mallory@example.com")
    assert source_world.post("/webhooks/src", forged, headers).status_code == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b"[]", 400), (b'{"event_id": 1, "event_type": "x"}', 400)],
    ids=["not-json", "not-an-object", "no-event-id"],
)
def test_malformed_body_is_a_400(source_world: SourceWorld, body: bytes, status: int) -> None:
    assert source_world.send(body).status_code == status


def test_unsupported_event_type_is_ignored(source_world: SourceWorld) -> None:
    body = b'{"event_id":"evt_other","event_type":"form_deleted"}'
    response = source_world.send(body)
    assert response.status_code == 200
    assert "not handled" in response.get_json()["reason"]
    assert source_world.ignored()[0]["delivery_id"] == "evt_other"
