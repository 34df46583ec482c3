"""`POST /webhooks/<source>`: verify, validate, record in the ledger, then enqueue.

Order of checks: unknown source (404), size (413, enforced by Flask's MAX_CONTENT_LENGTH),
signature (401), content type (415), JSON (400), fields (422). The event and its outbox rows
are committed before the 2xx; the Celery message is only an accelerator (the sweeper re-sends).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from schemas.consent import ConsentDecisionSchema
from service.ledger import Decision, Recorded, record_decision
from service.problems import problem
from service.runtime import Runtime
from service.sources import SignatureError

log = logging.getLogger(__name__)
bp = Blueprint("intake", __name__)
LEDGER_RETRY_AFTER_SECONDS = "30"


class _BadJson(ValueError):
    pass


@bp.post("/webhooks/<source_name>")
def receive(source_name: str) -> Response:
    runtime: Runtime = current_app.extensions["consent_relay"]
    source = runtime.settings.sources.get(source_name)
    if source is None:
        return problem(404, "unknown-source", "Unknown source", f"No source named {source_name!r}.")
    body = request.get_data(cache=True)  # the raw bytes the signature covers
    try:
        headers = {name.lower(): value for name, value in request.headers.items()}
        delivery = runtime.verifiers[source_name](headers, body)
    except SignatureError as exc:
        log.info("signature rejected source=%s reason=%s", source_name, exc)
        return problem(401, "invalid-signature", "Signature verification failed", str(exc))
    if not _is_json(request.mimetype):
        return problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "The body must be application/json.",
        )
    try:
        payload = _parse_json(body)
    except _BadJson as exc:
        return problem(400, "malformed-json", "Malformed JSON", str(exc))
    schema = ConsentDecisionSchema(max_future_skew=_skew(runtime))
    try:
        fields = schema.load(payload)
    except ValidationError as exc:
        return problem(
            422,
            "validation-failed",
            "The payload failed validation",
            "See errors for the message of each field.",
            errors=exc.messages,
        )
    decision = Decision(
        email=fields["email"],
        tracking_consent=fields["tracking_consent"],
        source=fields.get("source") or source.source,
        source_id=fields.get("source_id"),
        occurred_at=fields.get("occurred_at"),
    )
    return _record_and_enqueue(
        runtime,
        source_name,
        delivery.delivery_id,
        delivery.timestamp,
        hashlib.sha256(body).hexdigest(),
        decision,
    )


def _record_and_enqueue(
    runtime: Runtime,
    source_name: str,
    delivery_id: str,
    timestamp: int,
    body_hash: str,
    decision: Decision,
) -> Response:
    session = runtime.sessions()
    try:
        recorded = record_decision(
            session,
            source_name=source_name,
            delivery_id=delivery_id,
            webhook_timestamp=timestamp,
            body_sha256=body_hash,
            decision=decision,
            destinations=runtime.settings.destinations.keys(),
        )
    except SQLAlchemyError:
        log.exception("ledger write failed source=%s", source_name)
        return problem(
            503,
            "ledger-unavailable",
            "The ledger cannot be written",
            "Nothing was recorded; retry later.",
            headers={"Retry-After": LEDGER_RETRY_AFTER_SECONDS},
        )
    finally:
        session.close()
    if recorded.duplicate:
        log.info("duplicate source=%s event_id=%s", source_name, recorded.event_id)
        return _json(200, {"event_id": recorded.event_id, "duplicate": True})
    _enqueue(recorded)
    log.info("accepted source=%s event_id=%s", source_name, recorded.event_id)
    return _json(202, {"event_id": recorded.event_id})


def _enqueue(recorded: Recorded) -> None:
    """After the commit; best effort (see service.publisher)."""
    publisher = current_app.extensions["publisher"]
    for destination in recorded.destinations:
        publisher.publish(destination, recorded.contact_id)


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadJson("The body is not UTF-8.") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _BadJson(f"The body is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _skew(runtime: Runtime) -> dt.timedelta:
    return dt.timedelta(seconds=runtime.settings.max_future_skew_seconds)


def _json(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
