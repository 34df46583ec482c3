"""Reprocessing after a mapping fix (issue 17, section 6) on SQLite and PostgreSQL, through the
real app and the CLI: with `[retention] keep_ignored_bodies_days`, an event ignored because of
a mapping typo keeps its request, encrypted at rest; after the mapping is fixed,
`consent-relay sources reprocess` and POST /admin/ignored/reprocess record it as the intake
would have, once (a second run and a redelivery are duplicates); each run is audited; retention
removes an expired body and keeps the event's row."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from werkzeug.test import TestResponse

from relay.ledger import retention
from service.sources.fixtures import load_fixture
from tests.helpers.evidence_world import BASE_URL, TYPEFORM_SECRET, EvidenceWorld

pytestmark = pytest.mark.integration
KEY = Fernet.generate_key().decode()


def _source(email_field: str) -> str:
    return f"""
[sources.typo]
kind = "typeform"
secrets = ["{TYPEFORM_SECRET}"]
source = "typeform:{{form_id}}"

[sources.typo.mapping]
email = "{email_field}"
consent = "readable_ref_legal"

[retention]
keep_ignored_bodies_days = 7

[privacy]
ignored_bodies_key = "{KEY}"
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def worlds(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EvidenceWorld, EvidenceWorld]]:
    """The relay with the typo, and the same ledger after the mapping was fixed."""
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    typo = EvidenceWorld(
        tmp_path_factory.mktemp(f"typo-{request.param}"),
        engage,
        database,
        _source("readable_ref_emial"),
    )
    fixed = EvidenceWorld(
        tmp_path_factory.mktemp(f"fixed-{request.param}"),
        engage,
        typo.settings.database_url,
        _source("readable_ref_email"),
    )
    yield typo, fixed


def _send(world: EvidenceWorld, event_id: str | None = None) -> TestResponse:
    body, content_type = load_fixture("typeform", "form_response")
    if event_id is not None:  # another event of the same form
        body = json.dumps({**json.loads(body), "event_id": event_id}).encode()
    signed = world.runtime.kinds["typo"].sign(
        body, content_type, f"{BASE_URL}/webhooks/typo", time.time()
    )
    return world.client.post(
        signed.url.removeprefix(BASE_URL),
        data=signed.body,
        headers=dict(signed.headers),
        base_url=BASE_URL,
    )


def _kept(world: EvidenceWorld) -> list[tuple[int, str | None]]:
    with world.engine.connect() as connection:
        query = text("SELECT id, kept_body FROM ignored_events WHERE source_name = 'typo'")
        return [(row[0], row[1]) for row in connection.execute(query)]


def test_an_event_ignored_by_a_typo_is_recorded_after_the_fix(
    worlds: tuple[EvidenceWorld, EvidenceWorld], tmp_path: Path
) -> None:
    typo, fixed = worlds
    answer = _send(typo)
    assert answer.status_code == 200 and answer.get_json()["ignored"] is True
    [(ignored_id, sealed)] = _kept(typo)
    assert sealed is not None and "@" not in sealed and "readable_ref" not in sealed  # encrypted
    assert typo.events(source_name="typo") == []

    code, out, err = typo.cli("sources", "reprocess", "--json")
    assert code == 0, err
    assert json.loads(out)["still_ignored"] == [ignored_id]  # the typo is still there
    assert typo.events(source_name="typo") == []

    code, out, err = fixed.cli("sources", "reprocess", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "recorded": [ignored_id],
        "duplicates": [],
        "still_ignored": [],
        "unreadable": [],
    }
    [event] = fixed.events(source_name="typo")
    assert event.decision == "granted" and "@" in event.email
    assert _kept(fixed) == []

    again = fixed.admin("POST", "/admin/ignored/reprocess", json={"source": "typo"})
    assert again.status_code == 200
    assert again.get_json() == {
        "recorded": [],
        "duplicates": [],
        "still_ignored": [],
        "unreadable": [],
    }
    redelivered = _send(fixed)
    assert redelivered.status_code == 200 and redelivered.get_json()["duplicate"] is True
    assert len(fixed.events(source_name="typo")) == 1  # one decision, however often

    entries = fixed.admin("GET", "/admin/audit").get_json()["entries"]
    runs = [(e["channel"], e["outcome"]) for e in entries if e["action"] == "reprocess"][:3]
    assert runs == [
        ("admin-api", "recorded=0 duplicates=0 still_ignored=0 unreadable=0"),
        ("cli", "recorded=1 duplicates=0 still_ignored=0 unreadable=0"),
        ("cli", "recorded=0 duplicates=0 still_ignored=1 unreadable=0"),
    ]
    assert fixed.admin("POST", "/admin/ledger/verify").get_json()["ok"] is True


def test_retention_removes_an_expired_body_and_keeps_the_event(
    worlds: tuple[EvidenceWorld, EvidenceWorld],
) -> None:
    typo, _ = worlds
    answer = _send(typo, event_id="01EXPIRED00000000000000000")
    assert answer.get_json()["ignored"] is True
    typo.execute("UPDATE ignored_events SET kept_until = :at", at=_past())
    pruned = retention.prune(typo.runtime.sessions, typo.settings.retention)
    assert pruned["ignored_bodies"] == 1
    assert [sealed for _, sealed in _kept(typo)] == [None]
    code, out, _ = typo.cli("sources", "reprocess", "--json")
    assert code == 0 and json.loads(out)["still_ignored"] == []  # nothing left to reprocess
    bad = typo.admin("POST", "/admin/ignored/reprocess", json={"source": "nowhere"})
    assert bad.status_code == 404 and bad.mimetype == "application/problem+json"


def _past() -> object:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(tzinfo=None)


def test_a_body_sealed_with_another_key_is_unreadable_and_left(
    worlds: tuple[EvidenceWorld, EvidenceWorld], tmp_path: Path
) -> None:
    typo, fixed = worlds
    assert _send(typo, event_id="01OTHERKEY0000000000000000").get_json()["ignored"] is True
    kept = [ignored_id for ignored_id, sealed in _kept(typo) if sealed is not None]
    other = _source("readable_ref_email").replace(KEY, Fernet.generate_key().decode())
    rotated = EvidenceWorld(tmp_path, fixed.engage, typo.settings.database_url, other)
    code, out, err = rotated.cli("sources", "reprocess", "--json")
    assert code == 0, err
    assert json.loads(out)["unreadable"] == kept and json.loads(out)["recorded"] == []
    assert [i for i, sealed in _kept(typo) if sealed is not None] == kept  # left as it was
