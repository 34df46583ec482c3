"""Salesforce Outbound Messages (docs/reference/sources/salesforce.md): token + OrganizationId, SOAP
notifications -> decisions, the `<Ack>true</Ack>` answer, and the failures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from service.sources.fixtures import load_fixture
from service.sources.salesforce import ACK
from tests.helpers.source_world import SourceWorld, config_error

TOKEN = "sf-outbound-token-0123456789abcdefghijklmnop"
CONFIG = f"""
kind = "salesforce"
secrets = ["{TOKEN}"]
organization_ids = ["00D7F00000107Xs"]
source = "salesforce:{{object_type}}"

[sources.src.mapping]
consent = "Tracking_Consent__c"
"""
URL = "http://relay.example.com/webhooks/src"
XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
EXPECTED_ACK = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
# docs/reference/sources/salesforce.md#payload's documented example: an Opportunity, not a person.
OPPORTUNITY = b"""<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>00D7F00000107XsUAI</OrganizationId><ActionId>04k7F0000008V3hQAE</ActionId>
<SessionId xsi:nil="true"/>
<Notification><Id>04l7F000008aeAyQAI</Id>
<sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
<sf:Id>0067F000003pmdWQAQ</sf:Id></sObject>
</Notification></notifications></soapenv:Body></soapenv:Envelope>"""


def with_token(token: str = TOKEN) -> str:
    return f"{URL}?token={token}"


def contacts() -> bytes:
    return load_fixture("salesforce", "contact_notifications")[0]


def test_ack_is_the_documented_soap_answer() -> None:
    assert ACK == EXPECTED_ACK


def test_contact_notifications_become_one_decision_each(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("salesforce", "contact_notifications")

    assert response.status_code == 200
    assert response.content_type == "text/xml; charset=utf-8"
    assert response.data == EXPECTED_ACK
    first, second = source_world.events()
    assert (first["email"], first["decision"]) == ("ada.lovelace@example.com", "granted")
    assert first["consent_source"] == "salesforce:Contact"
    assert first["consent_source_id"] == "0037F00000Kq1aAQAR"
    assert first["delivery_id"] == "04l7F000008aeB1QAI"
    assert first["occurred_at"] == dt.datetime(2019, 10, 30, 3, 30, 17, tzinfo=dt.UTC)
    assert (second["email"], second["decision"]) == ("charles.babbage@example.com", "withdrawn")
    assert second["consent_source_id"] == "0037F00000Kq1aBQAR"
    assert second["delivery_id"] == "04l7F000008aeB2QAI"
    assert second["occurred_at"] == dt.datetime(2019, 10, 30, 3, 31, 2, tzinfo=dt.UTC)


def test_lead_notification_becomes_a_denied_decision(source_world: SourceWorld) -> None:
    response = source_world.send_fixture("salesforce", "lead_notification")

    assert (response.status_code, response.data) == (200, EXPECTED_ACK)
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("grace.hopper@example.com", "denied")
    assert event["consent_source"] == "salesforce:Lead"
    assert event["consent_source_id"] == "00Q7F00000AbCdEUAV"
    assert event["delivery_id"] == "04l7F000008aeC1QAI"
    assert event["occurred_at"] == dt.datetime(2019, 11, 4, 9, 15, tzinfo=dt.UTC)


def test_opt_out_mapping_from_the_readme(tmp_path: Path) -> None:
    toml = CONFIG.replace(
        'consent = "Tracking_Consent__c"',
        'consent = "HasOptedOutOfEmail"\nvalues = { true = "withdrawn", false = "granted" }',
    )
    source_world = SourceWorld(tmp_path, toml)
    assert source_world.send_fixture("salesforce", "contact_notifications").status_code == 200
    assert [e["decision"] for e in source_world.events()] == ["granted", "withdrawn"]


def test_redelivery_is_a_duplicate_and_still_acknowledged(source_world: SourceWorld) -> None:
    assert source_world.send_fixture("salesforce", "contact_notifications").status_code == 200
    again = source_world.send_fixture("salesforce", "contact_notifications")
    assert (again.status_code, again.data) == (200, EXPECTED_ACK)
    assert len(source_world.events()) == 2


def test_opportunity_is_ignored_and_acknowledged(source_world: SourceWorld) -> None:
    response = source_world.post(with_token(), OPPORTUNITY, XML)

    assert (response.status_code, response.data) == (200, EXPECTED_ACK)
    assert source_world.events() == []
    [ignored] = source_world.ignored()
    assert (ignored["delivery_id"], ignored["event_type"]) == ("04l7F000008aeAyQAI", "Opportunity")
    assert "An Opportunity is not a person" in ignored["reason"]


def test_unsupported_object_type_is_ignored(source_world: SourceWorld) -> None:
    body = OPPORTUNITY.replace(b"sf:Opportunity", b"sf:Invoice__c")
    assert source_world.post(with_token(), body, XML).data == EXPECTED_ACK
    assert source_world.ignored()[0]["reason"] == (
        "Event type 'Invoice__c' is not handled by the salesforce source."
    )


def test_notification_without_email_is_ignored(source_world: SourceWorld) -> None:
    body = contacts().replace(b"<sf:Email>ada.lovelace@example.com</sf:Email>", b"")
    assert source_world.post(with_token(), body, XML).status_code == 200
    assert source_world.ignored()[0]["reason"] == "No e-mail address in the e-mail field."
    assert [e["delivery_id"] for e in source_world.events()] == ["04l7F000008aeB2QAI"]


def test_eighteen_character_org_id_in_config_matches(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG.replace("00D7F00000107Xs", "00D7F00000107XsUAI"))
    assert source_world.send_fixture("salesforce", "lead_notification").status_code == 200
    assert len(source_world.events()) == 1


# --- the failures -------------------------------------------------------------------------


def test_wrong_token_is_refused(source_world: SourceWorld) -> None:
    response = source_world.post(with_token("x" * 40), contacts(), XML)
    assert response.status_code == 401
    assert source_world.events() == []


def test_missing_token_is_refused(source_world: SourceWorld) -> None:
    response = source_world.post(URL, contacts(), XML)
    assert response.status_code == 401
    assert "Missing token" in response.get_json()["detail"]


def test_other_organization_is_refused(source_world: SourceWorld) -> None:
    body = contacts().replace(b"00D7F00000107XsUAI", b"00D7F00000999XsUAI")
    response = source_world.post(with_token(), body, XML)
    assert response.status_code == 401
    assert "not one of this source's organization_ids" in response.get_json()["detail"]


def test_organization_id_is_compared_case_sensitively(source_world: SourceWorld) -> None:
    body = contacts().replace(b"00D7F00000107XsUAI", b"00D7F00000107XSUAI")
    assert source_world.post(with_token(), body, XML).status_code == 401


def test_missing_organization_id_is_refused(source_world: SourceWorld) -> None:
    body = contacts().replace(b"<OrganizationId>00D7F00000107XsUAI</OrganizationId>", b"")
    response = source_world.post(with_token(), body, XML)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "Missing OrganizationId."


def test_tampered_org_id_format_is_refused(source_world: SourceWorld) -> None:
    body = contacts().replace(b"00D7F00000107XsUAI", b"00D7F00000107Xs-UAI")
    assert source_world.post(with_token(), body, XML).status_code == 401


def test_malformed_xml_after_a_valid_token_is_a_400(source_world: SourceWorld) -> None:
    response = source_world.post(with_token(), b"<soapenv:Envelope><unclosed>", XML)
    assert response.status_code == 400
    assert "not well-formed XML" in response.get_json()["detail"]


def test_malformed_xml_without_token_is_a_401(source_world: SourceWorld) -> None:
    assert source_world.post(URL, b"<soapenv:Envelope><unclosed>", XML).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
        b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://evil.example/x.dtd"><x/>',
    ],
    ids=["entity", "external-dtd"],
)
def test_dtds_and_entities_are_refused(source_world: SourceWorld, body: bytes) -> None:
    response = source_world.post(with_token(), body, XML)
    assert response.status_code == 400
    assert "DTD or entities" in response.get_json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"<x/>",
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body/></soapenv:Envelope>",
    ],
    ids=["not-soap", "no-notifications"],
)
def test_xml_that_is_not_an_outbound_message_is_a_400(
    source_world: SourceWorld, body: bytes
) -> None:
    assert source_world.post(with_token(), body, XML).status_code == 400


def test_message_without_notifications_is_a_400(source_world: SourceWorld) -> None:
    body = (
        OPPORTUNITY.split(b"<Notification>")[0]
        + b"</notifications></soapenv:Body></soapenv:Envelope>"
    )
    response = source_world.post(with_token(), body, XML)
    assert response.status_code == 400
    assert "at least one Notification" in response.get_json()["detail"]


def test_json_body_is_a_415(source_world: SourceWorld) -> None:
    headers = {"Content-Type": "application/json"}
    assert source_world.post(with_token(), contacts(), headers).status_code == 415


# --- config -------------------------------------------------------------------------------


def test_organization_ids_are_required(tmp_path: Path) -> None:
    toml = CONFIG.replace('organization_ids = ["00D7F00000107Xs"]\n', "")
    message = config_error(tmp_path, toml)
    assert "sources.src.organization_ids" in message
    assert "Required by kind 'salesforce'" in message


def test_malformed_organization_id_is_a_config_error(tmp_path: Path) -> None:
    toml = CONFIG.replace("00D7F00000107Xs", "001ABC")
    assert "sources.src.organization_ids" in config_error(tmp_path, toml)


def test_short_token_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, CONFIG.replace(TOKEN, "short-token"))
    assert "sources.src.secrets" in message
    assert "at least 32 characters" in message


def test_hubspot_options_are_not_salesforce_options(tmp_path: Path) -> None:
    toml = CONFIG.replace("organization_ids", 'url = "https://x.example/h"\norganization_ids')
    assert "sources.src.url" in config_error(tmp_path, toml)
