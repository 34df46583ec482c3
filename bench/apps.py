"""The intake baselines, served by gunicorn with the service's own settings:

- `bare_app()`: a Flask endpoint that reads the body and answers 202 with a JSON body, like the
  real intake does, and nothing else: the framework's ceiling on this machine;
- `ledger_app()`: the durable ledger write alone: the relay's own one-statement insert on
  PostgreSQL (event, contact, outbox row) and its commit, with no signature check, no
  validation, no queue and no log line: what a webhook costs at the least when it must be
  on disk before the answer;
- `naive_app()`: a relay without a ledger or a queue. It checks the signature (the service's
  own verifier), parses the JSON and writes the decision to Engage inside the request (the
  workers' own EngageClient, without rate limiting), answering 202 once Engage answered 2xx.
"""

from __future__ import annotations

import json
import uuid

from flask import Flask, Response, jsonify, request

from relay.config.loader import load_settings
from relay.domain import ConsentWrite, Decision
from relay.ledger.db import make_engine
from relay.ledger.record_pg import record_new_decisions
from service.sources import VERIFIERS, SignatureError
from workers.destinations.engage import EngageClient
from workers.destinations.errors import DeliveryError


def _with_health(app: Flask) -> Flask:
    app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    return app


def _accepted() -> Response:
    response = jsonify({"event_id": str(uuid.uuid4())})
    response.status_code = 202
    return response


def bare_app() -> Flask:
    app = Flask("bench_bare")

    @app.post("/webhooks/<source_name>")
    def receive(source_name: str) -> Response:
        request.get_data()
        return _accepted()

    return _with_health(app)


def ledger_app() -> Flask:
    settings = load_settings()
    engine = make_engine(settings.database_url, pre_ping=False)
    destinations = tuple(settings.destinations)
    app = Flask("bench_ledger")

    @app.post("/webhooks/<source_name>")
    def receive(source_name: str) -> Response:
        payload = json.loads(request.get_data())
        decision = Decision(
            payload["email"], payload["tracking_consent"], "bench", payload.get("source_id"), None
        )
        record_new_decisions(
            engine,
            source_name=source_name,
            webhook_timestamp=0,
            body_sha256="0" * 64,
            decisions=[(request.headers["webhook-id"], decision)],
            destinations=destinations,
        )
        return _accepted()

    return _with_health(app)


def naive_app() -> Flask:
    settings = load_settings()
    source = settings.sources["signup"]
    verify = VERIFIERS[source.kind](source.secrets, source.timestamp_tolerance_seconds)
    engage = EngageClient(settings.destinations["engage"])
    app = Flask("bench_naive")

    @app.post("/webhooks/<source_name>")
    def receive(source_name: str) -> Response | tuple[str, int]:
        body = request.get_data()
        try:
            verify({k.lower(): v for k, v in request.headers.items()}, body)
        except SignatureError:
            return "invalid signature", 401
        payload = json.loads(body)
        write = ConsentWrite(
            email=payload["email"],
            tracking_consent=payload["tracking_consent"],
            source=payload.get("source") or source.source,
            source_id=payload.get("source_id"),
        )
        try:
            engage.write(write)
        except DeliveryError:
            return "Engage refused the write", 502
        return _accepted()

    return _with_health(app)
