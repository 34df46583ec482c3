"""Read-back verification on the operator page: "verified at" per destination on the contact
view, the share of contacts verified on the status view. Deliveries and read-backs are made
by the real worker code against the Engage emulator; the drift by its out-of-band edit."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests

from relay.config.settings import DeliverySettings, DestinationSettings, VerificationSettings
from tests.helpers.delivery_world import Published
from tests.helpers.ledger_rows import record
from tests.helpers.ops_world import Ops
from workers.delivery.contact import DeliveryContext, deliver_contact
from workers.destinations.engage import EngageClient
from workers.verification.context import VerificationContext
from workers.verification.readback import verify_contacts

JANE = "jane.verify@example.com"
ANN = "ann.verify@example.com"


@pytest.fixture
def signed_in(ops: Ops) -> Ops:
    assert ops.login().status_code == 303
    return ops


@pytest.fixture
def world(
    signed_in: Ops, engage_settings: Callable[..., DestinationSettings]
) -> tuple[DeliveryContext, VerificationContext]:
    client = EngageClient(engage_settings())
    delivery = DeliveryContext(signed_in.sessions, {"engage_eu": client}, DeliverySettings())
    reads = VerificationContext(
        signed_in.sessions,
        {"engage_eu": client},
        {"engage_eu": "report"},
        VerificationSettings(),
    )
    return delivery, reads


def row_of(page: str, destination: str) -> list[str]:
    found = re.search(
        rf'id="verification".*?<th scope="row">{destination}</th>(.*?)</tr>', page, re.S
    )
    assert found, destination
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    ]


def test_status_shows_the_share_verified_and_the_contact_its_verified_at(
    signed_in: Ops,
    world: tuple[DeliveryContext, VerificationContext],
    emulator: object,
) -> None:
    delivery, reads = world
    with signed_in.sessions() as session:
        jane = record(session, JANE, "denied")
        ann = record(session, ANN, "granted")
    for contact in (jane, ann):
        assert deliver_contact(delivery, "engage_eu", contact, "w") == "delivered"
    assert verify_contacts(reads, "engage_eu", [jane], Published()) == {"verified": 1}

    page = signed_in.page("/ops")
    assert row_of(page, "engage_eu")[:4] == ["2", "1", "50%", "0"]
    assert row_of(page, "engage")[:1] == ["0"]

    contact_page = signed_in.page(f"/ops/contacts/{jane}")
    held = re.search(r'<th scope="row">engage_eu</th>(.*?)</tr>', contact_page, re.S)
    assert held is not None
    assert "verified: " in held.group(1) and "denied" in held.group(1)
    assert "not yet" not in held.group(1)

    url = f"{emulator.url}/_emulator/contacts/{ANN}/edit"  # type: ignore[attr-defined]
    edited = requests.post(url, json={"attributes": {"tracking_consent": "denied"}}, timeout=5)
    assert edited.status_code == 200
    assert verify_contacts(reads, "engage_eu", [ann], Published()) == {"drift": 1}
    assert row_of(signed_in.page("/ops"), "engage_eu")[:4] == ["2", "1", "50%", "1"]
    ann_page = signed_in.page(f"/ops/contacts/{ann}")
    assert "drift found 1" in ann_page and "not yet" in ann_page  # never verified, drift seen
