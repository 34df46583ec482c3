"""`POST /webhooks/<source>`: verify, validate, record in the ledger, then enqueue.

Order of checks: unknown source (404), size (413, enforced by Flask's MAX_CONTENT_LENGTH),
signature (401), content type (415), JSON (400), fields (422). The event and its outbox rows
are committed before the 2xx; the Celery message is only an accelerator (the sweeper re-sends).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from structlog.contextvars import bind_contextvars
from werkzeug.exceptions import RequestEntityTooLarge

from schemas.consent import ConsentDecisionSchema
from service import metrics
from service.ledger import Decision, Recorded, record_decision
from service.logs import get_logger, mask_email
from service.problems import problem
from service.runtime import Runtime
from service.sources import SignatureError
from service.sources.standard_webhooks import VerifiedDelivery

log = get_logger(__name__)
bp = Blueprint("intake", __name__)
LEDGER_RETRY_AFTER_SECONDS = "30"


class _BadJson(ValueError):
    pass


@bp.post("/webhooks/<source_name>")
def receive(source_name: str) -> Response:
    runtime: Runtime = current_app.extensions["consent_relay"]
    source = runtime.settings.sources.get(source_name)
    if source is None:
        # The name comes from the URL: counted as "unknown", never as a label of its own.
        metrics.count_intake("unknown", "rejected", "unknown_source")
        return problem(404, "unknown-source", "Unknown source", f"No source named {source_name!r}.")
    bind_contextvars(source=source_name)
    try:
        body = _body(source_name)
        delivery = _verify(runtime, source_name, body)
        decision = _decision(_payload(body), runtime, source.source)
        recorded = _record(runtime, source_name, delivery, body, decision)
    except _Refused as refused:
        metrics.count_intake(source_name, "rejected", refused.reason)
        return refused.response
    bind_contextvars(event_id=recorded.event_id, contact_id=recorded.contact_id)
    if recorded.duplicate:
        metrics.count_intake(source_name, "duplicate")
        log.info("duplicate")
        return _json(200, {"event_id": recorded.event_id, "duplicate": True})
    _enqueue(recorded)
    metrics.count_intake(source_name, "accepted")
    log.info("accepted", email=mask_email(decision.email), decision=decision.tracking_consent)
    return _json(202, {"event_id": recorded.event_id})


class _Refused(Exception):
    """A problem answer, and the `reason` label it is counted under."""

    def __init__(self, reason: str, status: int, *problem_args: Any, **problem_kw: Any):
        super().__init__(reason)
        self.reason = reason
        self.response = problem(status, *problem_args, **problem_kw)


def _body(source_name: str) -> bytes:
    """The raw bytes the signature covers; over max_body_bytes Flask answers 413."""
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        metrics.count_intake(source_name, "rejected", "too_large")
        raise


def _verify(runtime: Runtime, source_name: str, body: bytes) -> VerifiedDelivery:
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        return runtime.verifiers[source_name](headers, body)
    except SignatureError as exc:
        log.info("signature rejected", reason=str(exc))
        raise _Refused(
            "signature", 401, "invalid-signature", "Signature verification failed", str(exc)
        ) from None


def _payload(body: bytes) -> Any:
    """Content type (415), then JSON (400)."""
    if not _is_json(request.mimetype):
        raise _Refused(
            "media_type",
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "The body must be application/json.",
        )
    try:
        return _parse_json(body)
    except _BadJson as exc:
        raise _Refused(
            "malformed_json", 400, "malformed-json", "Malformed JSON", str(exc)
        ) from None


def _decision(payload: Any, runtime: Runtime, default_source: str) -> Decision:
    """The fields (422)."""
    schema = ConsentDecisionSchema(max_future_skew=_skew(runtime))
    try:
        fields = schema.load(payload)
    except ValidationError as exc:
        raise _Refused(
            "validation",
            422,
            "validation-failed",
            "The payload failed validation",
            "See errors for the message of each field.",
            errors=exc.messages,
        ) from None
    return Decision(
        email=fields["email"],
        tracking_consent=fields["tracking_consent"],
        source=fields.get("source") or default_source,
        source_id=fields.get("source_id"),
        occurred_at=fields.get("occurred_at"),
    )


def _record(
    runtime: Runtime,
    source_name: str,
    delivery: VerifiedDelivery,
    body: bytes,
    decision: Decision,
) -> Recorded:
    """The event and its outbox rows, committed (503 when the ledger cannot be written)."""
    session = runtime.sessions()
    try:
        return record_decision(
            session,
            source_name=source_name,
            delivery_id=delivery.delivery_id,
            webhook_timestamp=delivery.timestamp,
            body_sha256=hashlib.sha256(body).hexdigest(),
            decision=decision,
            destinations=runtime.settings.destinations.keys(),
        )
    except SQLAlchemyError:
        log.exception("ledger write failed")
        raise _Refused(
            "ledger_unavailable",
            503,
            "ledger-unavailable",
            "The ledger cannot be written",
            "Nothing was recorded; retry later.",
            headers={"Retry-After": LEDGER_RETRY_AFTER_SECONDS},
        ) from None
    finally:
        session.close()


def _enqueue(recorded: Recorded) -> None:
    """After the commit; best effort (see service.publisher)."""
    publisher = current_app.extensions["publisher"]
    for destination in recorded.destinations:
        publisher.publish(destination, recorded.contact_id, event_id=recorded.event_id)


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
