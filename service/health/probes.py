"""Liveness (`GET /healthz`) and readiness (`GET /readyz`).

Readiness answers 503 when the ledger is unreachable or not migrated, when the broker cannot
be reached, or when a destination is paused (its credentials were refused: nothing is sent
until a probe succeeds or an operator resumes it). The body says which, without secrets.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from relay.ledger import pauses as destinations
from relay.ledger.migrate import is_current
from service.runtime import Runtime

bp = Blueprint("health", __name__)
BROKER_TIMEOUT_SECONDS = 2.0


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    runtime: Runtime = current_app.extensions["consent_relay"]
    checks: dict[str, Any] = {"database": _database(runtime), "broker": _broker()}
    checks["destinations"] = _destinations(runtime) if checks["database"] == "ok" else {}
    ready = (
        checks["database"] == "ok"
        and checks["broker"] == "ok"
        and all(state == "active" for state in checks["destinations"].values())
    )
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return jsonify(body), 200 if ready else 503


def _database(runtime: Runtime) -> str:
    try:
        return "ok" if is_current(runtime.engine) else "schema_outdated"
    except SQLAlchemyError:
        return "unreachable"


def _broker() -> str:
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 - any transport error means "not reachable"
        return "unreachable"
    return "ok"


def _destinations(runtime: Runtime) -> dict[str, str]:
    try:
        with runtime.sessions() as session:
            views = destinations.describe(session, runtime.settings.destinations)
    except SQLAlchemyError:
        return {}
    return {view.name: "paused" if view.paused else "active" for view in views}
