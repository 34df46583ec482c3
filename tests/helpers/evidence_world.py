"""One relay for the evidence, chain, export and erasure tests (issue 17): the real app on
SQLite or PostgreSQL with the embedded broker, the Engage emulator, a canonical source with
evidence constants and a Typeform source with evidence templates; a real worker on demand."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from werkzeug.test import TestResponse

from relay.config.loader import load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import Event
from service import create_app
from service.cli.commands import main
from service.sources.fixtures import load_fixture
from tests.helpers.input_world import ADMIN_TOKEN, OPS_PASSWORD, csrf
from tests.helpers.support import Process, celery_worker, decision, signed_headers, write_config

BASE_URL = "http://relay.example.com"
TYPEFORM_SECRET = "typeform-secret-" + "x" * 24
METRICS_TOKEN = "metrics-" + "m" * 32
PSEUDONYM_KEY = "pseudonym-key-" + "k" * 32
EXTRA = f"""
[sources.signup.evidence]
collection_method = "api"
jurisdiction = "EU"

[sources.forms]
kind = "typeform"
secrets = ["{TYPEFORM_SECRET}"]
source = "typeform:{{form_id}}"
source_id = "{{form_id}}:{{response_id}}"

[sources.forms.mapping]
email = "readable_ref_email"
consent = "readable_ref_legal"

[sources.forms.evidence]
notice_version = "form-{{form_id}}"
notice_url = "https://example.com/privacy/{{form_id}}"
purposes = ["newsletter"]
collection_method = "form"
lawful_basis = "consent"
language = "en"

[metrics]
token = "{METRICS_TOKEN}"

[admin]
tokens = ["{ADMIN_TOKEN}"]
username = "operator"
password = "{OPS_PASSWORD}"
"""


class EvidenceWorld:
    def __init__(
        self,
        workdir: Path,
        engage: str,
        database_url: str | None,
        extra: str = "",
        delivery: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = write_config(
            workdir / "consent-relay.toml",
            data_dir=workdir / "var",
            engage_url=engage,
            database_url=database_url,
            queue=f"cr-evidence-{uuid.uuid4().hex[:8]}",
            delivery={
                "sweep_interval_seconds": 0.5,
                "redispatch_after_seconds": 2,
                **(delivery or {}),
            },
            extra=EXTRA + extra,
        )
        self.settings: Settings = load_settings(self.config, environ={})
        self.engine = make_engine(self.settings.database_url)
        upgrade(self.engine)
        self.app: Flask = create_app({"SETTINGS": self.settings, "TESTING": True})
        self.client = self.app.test_client()
        self.engage = engage

    @property
    def runtime(self) -> Any:
        return self.app.extensions["consent_relay"]

    def send(self, email: str, consent: str, **extra: Any) -> TestResponse:
        body = decision(email, consent, dt.datetime.now(dt.UTC), **extra)
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        return self.client.post("/webhooks/signup", data=body, headers=headers)

    def send_typeform(self, fixture: str = "form_response") -> TestResponse:
        body, content_type = load_fixture("typeform", fixture)
        url = f"{BASE_URL}/webhooks/forms"
        signed = self.runtime.kinds["forms"].sign(body, content_type, url, time.time())
        return self.client.post(
            signed.url.removeprefix(BASE_URL),
            data=signed.body,
            headers=dict(signed.headers),
            base_url=BASE_URL,
        )

    def events(self, **where: Any) -> list[Event]:
        with self.runtime.sessions() as session:
            query = select(Event).filter_by(**where).order_by(Event.id)
            return list(session.scalars(query))

    def execute(self, statement: str, **params: Any) -> int:
        """Raw SQL, as someone with database access would tamper with the ledger."""
        with self.engine.begin() as connection:
            return connection.execute(text(statement), params).rowcount

    def admin(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def ops_client(self) -> FlaskClient:
        client = self.app.test_client()
        client.get("/ops/login")
        form = {"username": "operator", "password": OPS_PASSWORD, "csrf_token": csrf(client)}
        assert client.post("/ops/login", data=form).status_code == 303
        return client

    def cli(self, *argv: str) -> tuple[int, str, str]:
        """`consent-relay --config <ours> argv...`, in-process: (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["--config", str(self.config), *argv])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue(), err.getvalue()

    def metrics(self) -> str:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        return self.client.get("/metrics", headers=headers).get_data(as_text=True)

    def worker(self) -> Process:
        return celery_worker(self.config, self.workdir)
