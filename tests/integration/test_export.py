"""One person's record exported (issue 17, section 3) on SQLite and PostgreSQL: decisions sent
through the real app, delivered by a real Celery worker to the Engage emulator, then exported
through the admin API, the CLI and the operator page, as JSON and CSV; the exported JSON
verified without the database, and an edited copy caught."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.evidence_world import EvidenceWorld
from tests.helpers.support import emulator_contact, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvidenceWorld]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    built = EvidenceWorld(tmp_path_factory.mktemp(f"export-{request.param}"), engage, database)
    worker = built.worker()
    try:
        yield built
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def delivered(world: EvidenceWorld) -> tuple[str, int]:
    """An address with two decisions, the second delivered to Engage by the worker."""
    email = f"Export-{uuid.uuid4().hex[:8]}@Example.com"
    assert world.send(email, "granted", notice_version="v1", purposes=["news"]).status_code == 202
    assert world.send(email, "withdrawn", notice_version="v2").status_code == 202
    wait_for(
        lambda: (
            (emulator_contact(world.engage, email) or {})
            .get("attributes", {})
            .get("tracking_consent")
            == "withdrawn"
        ),
        what="the withdrawal at Engage",
    )
    wait_for(lambda: _delivered(world, email), what="the ledger's record of the delivery")
    return email, world.events(email=email)[0].contact_id


def _delivered(world: EvidenceWorld, email: str) -> bool:
    contact_id = world.events(email=email)[0].contact_id
    record = world.admin("GET", f"/admin/contacts/{contact_id}/export").get_json()
    statuses = [d["status"] for item in record["decisions"] for d in item["deliveries"]]
    return "delivered" in statuses and "pending" not in statuses


def test_the_json_export_holds_decisions_evidence_deliveries_and_chain(
    world: EvidenceWorld, delivered: tuple[str, int]
) -> None:
    email, contact_id = delivered
    response = world.admin("GET", f"/admin/contacts/{contact_id}/export")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    record = response.get_json()
    assert record["format"] == "consent-relay-record/1"
    assert record["contact"]["identifier"] == email.lower()
    first, second = record["decisions"]
    assert (first["tracking_consent"], second["tracking_consent"]) == ("granted", "withdrawn")
    assert first["evidence"]["purposes"] == ["news"]
    assert second["evidence"]["notice_version"] == "v2"
    assert first["email"] == email
    [sent] = second["deliveries"]
    assert sent["destination"] == "engage" and sent["status"] == "delivered"
    assert sent["attempts"][-1]["outcome"] == "delivered"
    assert 200 <= sent["attempts"][-1]["http_status"] < 300
    assert first["deliveries"][0]["status"] == "superseded"
    assert record["chain"]["head_seq"] == 2
    assert record["chain"]["head_hash"] == second["chain_hash"]


def test_the_csv_export_has_a_row_per_decision(
    world: EvidenceWorld, delivered: tuple[str, int]
) -> None:
    _, contact_id = delivered
    response = world.admin("GET", f"/admin/contacts/{contact_id}/export?format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["tracking_consent"] for row in rows] == ["granted", "withdrawn"]
    assert rows[0]["purposes"] == "news"
    assert rows[1]["deliveries"].startswith("engage: delivered")


def test_the_cli_export_verifies_offline_and_an_edit_is_caught(
    world: EvidenceWorld, delivered: tuple[str, int], tmp_path: Path
) -> None:
    email, _ = delivered
    path = tmp_path / "record.json"
    code, _, err = world.cli("contacts", "export", "--email", email, "--output", str(path))
    assert code == 0, err
    code, out, _ = world.cli("ledger", "verify-export", str(path))
    assert code == 0 and out.startswith("intact: 2 link(s)")
    for edit in (_granted_instead, _earlier, _other_address, _dropped_newest):
        record = json.loads(path.read_text())
        edit(record)
        edited = tmp_path / f"edited-{edit.__name__}.json"
        edited.write_text(json.dumps(record))
        code, out, _ = world.cli("ledger", "verify-export", str(edited))
        assert code == 1 and out.startswith("broken:"), (edit.__name__, out)


def _granted_instead(record: dict[str, Any]) -> None:
    record["decisions"][1]["tracking_consent"] = "granted"


def _earlier(record: dict[str, Any]) -> None:
    record["decisions"][0]["occurred_at"] = "2020-01-01T00:00:00.000000Z"


def _other_address(record: dict[str, Any]) -> None:
    record["decisions"][0]["email"] = "someone@example.com"


def _dropped_newest(record: dict[str, Any]) -> None:
    record["decisions"].pop()


def test_verify_export_refuses_what_is_not_an_export(world: EvidenceWorld, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"format": "consent-relay-record/1", "decisions": [1]}')
    code, _, err = world.cli("ledger", "verify-export", str(junk))
    assert code == 1 and "not a consent-relay export" in err
    code, _, err = world.cli("ledger", "verify-export", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in err


def test_the_operator_page_offers_the_download(
    world: EvidenceWorld, delivered: tuple[str, int]
) -> None:
    _, contact_id = delivered
    ops = world.ops_client()
    page = ops.get(f"/ops/contacts/{contact_id}").get_data(as_text=True)
    assert f'href="/ops/contacts/{contact_id}/export.json"' in page
    download = ops.get(f"/ops/contacts/{contact_id}/export.json")
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    assert json.loads(download.data)["chain"]["head_seq"] == 2
    assert ops.get(f"/ops/contacts/{contact_id}/export.csv").mimetype == "text/csv"
    signed_out = world.app.test_client().get(f"/ops/contacts/{contact_id}/export.json")
    assert signed_out.status_code == 302  # to the sign-in page, nothing exported
    assert b"decisions" not in signed_out.data


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/admin/contacts/99999999/export", 404),
        ("/admin/contacts/0/export", 404),
        ("/admin/contacts/1/export?format=xml", 422),
        ("/admin/contacts/1/export?format=csv&format=json", 422),
        ("/admin/contacts/1/export?colour=red", 422),
    ],
)
def test_bad_export_requests_are_precise_problems(
    world: EvidenceWorld, path: str, status: int
) -> None:
    response = world.admin("GET", path)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
