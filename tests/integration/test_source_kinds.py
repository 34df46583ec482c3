"""Every source kind, configured exactly as its docs example says, end to end: the kind's
golden fixture signed as the sender would -> the real app -> ledger -> a real Celery worker
-> the Engage emulator, which must hold the decision with the configured source and
source_id. The examples of docs/sources/ are the test's config, so they cannot drift from the code.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import Event
from service import create_app
from service.sources import KINDS
from service.sources.fixtures import load_fixture
from tests.helpers.support import celery_worker, emulator_contact, wait_for, write_config

pytestmark = pytest.mark.integration
SOURCE_DOCS = Path(__file__).parents[2] / "docs" / "sources"
# The fixture each kind's docs example is written for (its first decision-carrying event).
FIXTURES = {
    "typeform": "form_response",
    "tally": "form_response",
    "webflow": "form_submission",
    "jotform": "submission",
    "hubspot": "workflow_contact",
    "salesforce": "contact_notifications",
    "pipedrive": "create_person",
    "dynamics": "contact_update",
    "hmac": "example-form-submission",  # docs/sources/hmac.md's worked example
}
BASE_URL = "http://relay.example.com"
FAST = {"sweep_interval_seconds": 0.5, "redispatch_after_seconds": 2}


def readme_examples() -> dict[str, str]:
    """kind -> the complete TOML example of its page in docs/sources/ (the first one per kind)."""
    examples: dict[str, str] = {}
    text = "".join(page.read_text() for page in sorted(SOURCE_DOCS.glob("*.md")))
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        found = re.search(r'^kind = "([a-z-]+)"', block, re.M)
        if found and found.group(1) in FIXTURES and "[sources." in block:
            examples.setdefault(found.group(1), block)
    return examples


def secrets_for(text: str) -> dict[str, str]:
    """A value for each ${VAR} of the examples: long enough for every kind's secret rule."""
    names = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    return {name: f"{name.lower()}-{uuid.uuid4().hex}{uuid.uuid4().hex}" for name in names}


@dataclass
class KindsRelay:
    client: Any
    app: Any
    engage: str


@pytest.fixture(scope="module")
def kinds_relay(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KindsRelay]:
    workdir = tmp_path_factory.mktemp("kinds")
    config = write_config(
        workdir / "consent-relay.toml",
        data_dir=workdir / "var",
        engage_url=engage,
        database_url=request.getfixturevalue("postgres_url"),
        broker_url=request.getfixturevalue("redis_url"),
        queue=f"cr-kinds-{uuid.uuid4().hex[:8]}",
        delivery=FAST,
    )
    examples = "\n".join(readme_examples().values())
    config.write_text(config.read_text() + "\n" + examples)
    environ = secrets_for(examples)
    settings = load_settings(config, environ=environ)
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    worker = celery_worker(config, workdir, extra_env=environ)
    try:
        yield KindsRelay(app.test_client(), app, engage)
    finally:
        worker.stop()


def test_every_kind_has_a_readme_example() -> None:
    assert sorted(readme_examples()) == sorted(FIXTURES)
    assert set(FIXTURES) | {"standard-webhooks", "token"} == set(KINDS)


@pytest.mark.parametrize("kind_name", sorted(FIXTURES))
def test_fixture_reaches_engage_with_the_configured_labels(
    kinds_relay: KindsRelay, kind_name: str
) -> None:
    runtime = kinds_relay.app.extensions["consent_relay"]
    [name] = [n for n, s in runtime.settings.sources.items() if s.kind == kind_name]
    body, content_type = load_fixture(kind_name, FIXTURES[kind_name])
    signed = runtime.kinds[name].sign(
        body, content_type, f"{BASE_URL}/webhooks/{name}", time.time()
    )
    path = signed.url.removeprefix(BASE_URL)
    response = kinds_relay.client.post(
        path, data=signed.body, headers=dict(signed.headers), base_url=BASE_URL
    )
    # Salesforce gets its SOAP acknowledgement (200); everyone else 202 for a new decision.
    expected_status = 200 if kind_name == "salesforce" else 202
    assert response.status_code == expected_status, response.get_data(as_text=True)
    if kind_name == "salesforce":
        assert b"<Ack>true</Ack>" in response.data

    with runtime.sessions() as session:
        events = session.scalars(select(Event).where(Event.source_name == name)).all()
    assert events, "the fixture recorded no decision"
    latest: dict[str, Event] = {}
    for event in sorted(events, key=lambda e: (e.occurred_at, e.id)):
        assert "{" not in event.consent_source
        latest[event.email.lower()] = event
    for event in latest.values():
        expected = {
            "tracking_consent": event.decision,
            "tracking_consent_source": event.consent_source,
            "tracking_consent_source_id": event.consent_source_id or "",
        }
        wait_for(
            lambda email=event.email, want=expected: _attributes(kinds_relay, email) == want,
            what=f"{kind_name} decision for {event.email} at Engage",
        )


def _attributes(kinds_relay: KindsRelay, email: str) -> dict[str, Any] | None:
    contact = emulator_contact(kinds_relay.engage, email)
    return contact["attributes"] if contact else None
