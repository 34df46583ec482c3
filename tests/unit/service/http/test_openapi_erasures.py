"""The erasure's admin API answer lists every destination it is passed on to with its status,
a row that failed at capture included, and the answer matches the OpenAPI document
(service/http/openapi_erasures.py `ERASED`). `forget` (Engage) seals the address; `moe`
(MoEngage) names the user by `crm-{source_id}`, which the decision lacks: failed at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from emulators import moengage
from relay.config.loader import load_settings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from service import create_app
from tests.helpers.ledger_rows import record
from tests.helpers.ops_world import RecordingPublisher
from tests.unit.service.http.test_openapi import JANE, SPEC, TOKEN, Api, check_body, config_text

ERASE = "/admin/contacts/{contact_id}/erase"
FORWARDING = f"""
[privacy]
destination_erasure_key = "{Fernet.generate_key().decode()}"

[destinations.forget]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8027"
username = "api-user@example.com"
password = "engage-demo-password"
erase_at_destination = true

[destinations.moe]
kind = "moengage"
base_url = "http://127.0.0.1:8028"
app_id = "{moengage.APP_ID}"
api_key = "{moengage.API_KEY}"
customer_id = "crm-{{source_id}}"
erase_at_destination = true
"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "consent-relay.toml"
    path.write_text(config_text(tmp_path / "data", [TOKEN]) + FORWARDING)
    settings = load_settings(path, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    app.extensions["publisher"] = RecordingPublisher()
    sessions = make_session_factory(make_engine(settings.database_url))
    built = Api(tmp_path, app, app.test_client(), sessions)
    yield built
    app.extensions["consent_relay"].engine.dispose()


def test_the_answer_lists_every_destination_a_failure_at_capture_included(api: Api) -> None:
    with api.sessions() as session:
        contact_id = record(session, JANE, "granted")  # no source_id: moe cannot be rendered
    response = api.admin(
        "POST",
        ERASE.format(contact_id=contact_id),
        json={"requested_by": "ticket 1", "reason": "Art. 17"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    check_body(
        body,
        SPEC["paths"][ERASE]["post"]["responses"]["200"]["content"]["application/json"]["schema"],
    )
    statuses = {d["destination"]: (d["status"], d["attempts"]) for d in body["destinations"]}
    assert statuses == {"forget": ("pending", 0), "moe": ("failed", 0)}
    [failed] = [d for d in body["destinations"] if d["status"] == "failed"]
    assert failed["detail"].startswith("the identifier template needs source_id")
    assert failed["finished_at"].endswith("+00:00")
    published = api.app.extensions["publisher"].erasures
    assert [name for _, name in published] == ["forget"]  # only the pending row is enqueued
