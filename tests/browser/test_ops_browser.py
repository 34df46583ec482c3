"""The operator page in headless Chromium: the real app under gunicorn (two workers, so the
session cookie must verify in both), decisions sent as signed webhooks, one delivered by the
worker's code to the Engage emulator, a dead letter written by the worker's own code; then
`ops.spec.mjs` (plain Node + playwright-core) signs in, looks a contact up, replays the dead
letter and takes its screenshots: into a temporary directory, so that a test run leaves the
work tree clean, or into $CONSENT_RELAY_SCREENSHOTS when set (`make screenshots` sets it to
docs/ to refresh the operator-page images of the documentation on purpose).

Needs /usr/bin/chromium, node and node_modules (`.ci/install-browser` installs them): skipped
with the reason locally, a failure when CI=true.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from emulators.engage import EmulatorServer, create_emulator_app
from relay.config.loader import load_settings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.migrate import upgrade
from relay.ledger.models import Contact, DeadLetter, Outbox, utcnow
from tests.helpers.ledger_rows import dead_letter
from tests.helpers.support import (
    Process,
    decision,
    free_port,
    signed_headers,
    wait_for,
    write_config,
)
from workers.delivery.contact import DeliveryContext, deliver_contact
from workers.destinations.engage import EngageClient

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "browser" / "ops.spec.mjs"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ("ops-login.png", "ops-status.png", "ops-contact.png", "ops-dead-letter.png")
USERNAME = "operator"
PASSWORD = "browser-test-password-" + uuid.uuid4().hex[:8]
T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)


def require_browser() -> str:
    """The node binary; skip (locally) or fail (CI=true) when a piece is missing."""
    node = shutil.which("node")
    missing = [
        what
        for what, present in (
            (f"{CHROMIUM} (apt-get install chromium)", CHROMIUM.exists()),
            ("node (Node.js 20 or newer)", node is not None),
            (
                "node_modules/playwright-core (npm ci)",
                (ROOT / "node_modules/playwright-core").is_dir(),
            ),
        )
        if not present
    ]
    if missing:
        message = f"browser tests need {', '.join(missing)}; run .ci/install-browser"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the test environment is broken)")
        pytest.skip(message)
    assert node is not None
    return node


@dataclass
class RelayWeb:
    url: str
    sessions: sessionmaker[Session]
    process: Process
    config: Path


@pytest.fixture
def node() -> str:
    """Checked before anything starts: a missing piece skips (or fails) at once."""
    return require_browser()


@pytest.fixture
def engage(node: str) -> Iterator[str]:
    with EmulatorServer(create_emulator_app()) as emulator:
        yield emulator.url


@pytest.fixture
def relay_web(tmp_path: Path, engage: str) -> Iterator[RelayWeb]:
    config = write_config(
        tmp_path / "consent-relay.toml", data_dir=tmp_path / "data", engage_url=engage
    )
    with config.open("a") as handle:
        handle.write(f'\n[admin]\nusername = "{USERNAME}"\npassword = "{PASSWORD}"\n')
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'consent-relay.db'}")
    upgrade(engine)
    port = free_port()
    env = {**os.environ, "CONSENT_RELAY_CONFIG": str(config), "PORT": str(port)}
    env["WEB_CONCURRENCY"] = "2"
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:service.http.gunicorn_conf"]
    process = Process([*argv, "service:create_app()"], env, tmp_path, tmp_path / "web.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url, process), 30, "gunicorn to answer /healthz")
        yield RelayWeb(url, make_session_factory(engine), process, config)
    finally:
        process.stop()
        engine.dispose()


def _healthy(url: str, process: Process) -> bool:
    if process.proc.poll() is not None:
        raise AssertionError(f"gunicorn exited:\n{process.output()[-4000:]}")
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def send(
    relay_web: RelayWeb, email: str, consent: str, occurred_at: dt.datetime, **extra: str
) -> None:
    body = decision(email, consent, occurred_at, **extra)
    headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
    response = requests.post(
        f"{relay_web.url}/webhooks/signup", data=body, headers=headers, timeout=10
    )
    assert response.status_code == 202, response.text


def contact_id(relay_web: RelayWeb, key: str) -> int:
    with relay_web.sessions() as session:
        return session.scalars(select(Contact.id).where(Contact.email_key == key)).one()


def prepare(relay_web: RelayWeb) -> tuple[int, int]:
    """Jane granted, then withdrew (refused three times by engage: a dead letter); John denied
    (delivered to the emulator); Ann granted (pending: no worker runs). Returns (jane's contact
    id, the dead letter's id)."""
    send(relay_web, "Jane.Doe@Example.com", "granted", T0, source_id="form-1")
    send(
        relay_web, "jane.doe@example.com", "withdrawn", T0 + dt.timedelta(hours=1), source_id="pc-7"
    )
    send(relay_web, "john@example.com", "denied", T0 + dt.timedelta(hours=2))
    send(relay_web, "ann@example.com", "granted", T0 + dt.timedelta(hours=3))
    settings = load_settings(relay_web.config, environ={})
    writers = {"engage": EngageClient(settings.destinations["engage"])}
    ctx = DeliveryContext(relay_web.sessions, writers, settings.delivery)
    john = contact_id(relay_web, "john@example.com")
    assert deliver_contact(ctx, "engage", john, "test-worker") == "delivered"
    jane = contact_id(relay_web, "jane.doe@example.com")
    body = '{"errorCode": "INVALID_PARAMETER", "message": "attribute value too long"}'
    with relay_web.sessions() as session:
        created = utcnow() - dt.timedelta(minutes=5)
        return jane, dead_letter(session, "engage", jane, created, body=body)


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/ only when asked for (`make screenshots`); a test run never rewrites tracked files."""
    chosen = os.environ.get("CONSENT_RELAY_SCREENSHOTS")
    shots = Path(chosen).resolve() if chosen else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_the_operator_page_in_chromium(node: str, relay_web: RelayWeb, tmp_path: Path) -> None:
    jane, dead_id = prepare(relay_web)
    shots = screenshot_dir(tmp_path)
    started = time.time()
    env = {
        **os.environ,
        "OPS_URL": relay_web.url,
        "OPS_USERNAME": USERNAME,
        "OPS_PASSWORD": PASSWORD,
        "OPS_EMAIL": "JANE.DOE@example.com",  # found case-insensitively
        "OPS_DECISIONS": "withdrawn,granted",
        "OPS_DEAD_LETTER_ID": str(dead_id),
        "OPS_ACCEPTED": "4",
        "OPS_SCREENSHOTS": str(shots),
        "OPS_ARTIFACTS": str(tmp_path),
    }
    run = subprocess.run(
        [node, str(SCRIPT)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, (
        f"{run.stdout}\n{run.stderr}\n--- web log:\n{relay_web.process.output()[-3000:]}"
    )
    for name in SCREENSHOTS:
        shot = shots / name
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert shot.stat().st_mtime >= started, f"{name} was not written by this run"
    with relay_web.sessions() as session:
        row = session.get(DeadLetter, dead_id)
        assert row is not None and row.status == "replayed" and row.replay_count == 1
        statuses = session.scalars(
            select(Outbox.status).filter_by(destination="engage", contact_id=jane)
        ).all()
        assert sorted(statuses) == ["pending", "superseded"]
    log = relay_web.process.output().lower()
    assert "ops: replay dead_letter=" in log
    for address in ("jane.doe@example.com", "john@example.com", "ann@example.com"):
        assert address not in log  # not in the access log, not in the app's lines
