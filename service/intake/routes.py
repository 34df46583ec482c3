"""`POST /webhooks/<source>`: authenticate, read, map, record in the ledger, then enqueue.

Order of checks: unknown source (404), size (413, Flask's MAX_CONTENT_LENGTH), authentication
(401), content type (415), body (400), canonical fields (422). Each event of the delivery is
then recorded, found to be a duplicate (by the sender's own event id), or ignored with its
reason: a signed delivery we cannot use is still answered 2xx, because several senders disable
the hook or stop retrying on a 4xx (docs/reference/senders.md#answers-have-side-effects). Events and
their outbox rows are committed before the answer; the Celery message is only an accelerator (the
sweeper re-sends).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from structlog.contextvars import bind_contextvars, bound_contextvars
from werkzeug.exceptions import RequestEntityTooLarge

from relay.errors import ProblemError
from relay.ledger.db import refused_values
from relay.ledger.record import Incoming, Outcome, record_events, record_new_at_once
from relay.messaging.lanes import is_urgent
from relay.telemetry import metrics, tracing
from relay.telemetry.logs import get_logger, mask_email
from schemas.consent import MAX_IGNORED_REASON_LENGTH
from schemas.text import storable
from service.http.problems import problem, problem_for
from service.intake import erasures, reprocess
from service.runtime import Runtime
from service.sources import SignatureError, SourceKind
from service.sources.base import Authenticated, InboundRequest, SourceEvent, storable_events
from service.sources.mapping import resolve
from service.sources.raw_url import received_url

log = get_logger(__name__)
bp = Blueprint("intake", __name__)
LEDGER_RETRY_AFTER_SECONDS = "30"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@bp.post("/webhooks/<source_name>")
def receive(source_name: str) -> Response:
    """The request's span is the root of each decision's trace: the deliveries it enqueues
    carry it to the workers (relay/telemetry/tracing.py)."""
    attributes = {"http.request.method": "POST", "http.route": "/webhooks/<source_name>"}
    with tracing.span(
        "POST /webhooks/<source_name>", kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        response = _receive(source_name, span)
        tracing.annotate(span, {"http.response.status_code": response.status_code})
        return response


def _receive(source_name: str, span: Any) -> Response:
    runtime: Runtime = current_app.extensions["consent_relay"]
    kind = runtime.kinds.get(source_name)
    if kind is None:
        # The name comes from the URL: counted as "unknown", never as a label of its own.
        metrics.count_intake("unknown", "rejected", "unknown_source")
        return problem(404, "unknown-source", "Unknown source", f"No source named {source_name!r}.")
    bind_contextvars(source=source_name)
    tracing.annotate(span, {"consent_relay.source": source_name})
    inbound = _inbound(source_name)
    auth = _authenticate(kind, inbound)
    events = storable_events(kind.parse(inbound, auth))
    digest = hashlib.sha256(inbound.body).hexdigest()
    erased = erasures.handle(runtime, source_name, events, digest)
    rest = [event for index, event in enumerate(events) if index not in erased]
    incoming = [to_incoming(runtime, source_name, event) for event in rest]
    recorded = _record(runtime, source_name, auth, inbound, incoming) if incoming else []
    reprocess.keep_ignored(runtime, source_name, inbound, auth, recorded)
    for item, outcome in zip(incoming, recorded, strict=True):
        _after(source_name, item, outcome)
    contacts = sorted({o.recorded.contact_id for o in recorded if o.recorded is not None})
    tracing.annotate(span, {"consent_relay.contact_ids": contacts})
    others = iter(recorded)
    outcomes = [erased[i] if i in erased else next(others) for i in range(len(events))]
    return _answer(kind, outcomes)


@bp.errorhandler(ProblemError)
def _refused(exc: ProblemError) -> Response:
    """A refusal answers as its class describes it (relay/errors.py: SignatureError 401,
    MediaTypeError 415, MalformedJsonError and PayloadError 400, FieldsError 422, and the
    ledger's below), counted under the class's `reason`."""
    source_name = (request.view_args or {}).get("source_name", "unknown")
    metrics.count_intake(source_name, "rejected", exc.reason)
    return problem_for(exc)


class UnstorableValueError(ProblemError):
    """The ledger refused a value that passed validation (relay.ledger.db): a bug at the
    boundary (schemas/), answered 422 since a retry of the same payload fails the same way."""

    http_status = 422
    slug = "unstorable-value"
    title = "A value of the payload cannot be stored"
    reason = "unstorable"


class LedgerUnwritableError(ProblemError):
    """The ledger cannot be written: nothing was recorded, the sender retries later (503)."""

    http_status = 503
    slug = "ledger-unavailable"
    title = "The ledger cannot be written"
    reason = "ledger_unavailable"


def _inbound(source_name: str) -> InboundRequest:
    """The request as the kinds see it; the raw bytes first
    (docs/reference/senders.md#read-the-raw-body-first)."""
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        metrics.count_intake(source_name, "rejected", "too_large")
        raise
    form = request.form.to_dict() if request.mimetype in FORM_TYPES else {}
    return InboundRequest(
        method=request.method,
        url=received_url(request.environ, request.scheme, request.host),
        headers={name.lower(): value for name, value in request.headers.items()},
        query=request.args.to_dict(),
        body=body,
        mimetype=request.mimetype,
        form=form,
        received_at=time.time(),
    )


def _authenticate(kind: SourceKind, inbound: InboundRequest) -> Authenticated:
    try:
        return kind.authenticate(inbound)
    except SignatureError as exc:
        log.info("signature rejected", reason=str(exc))
        raise


def to_incoming(runtime: Runtime, source_name: str, event: SourceEvent) -> Incoming:
    source = runtime.settings.sources[source_name]
    skew = dt.timedelta(seconds=runtime.settings.max_future_skew_seconds)
    default_source_id = runtime.kinds[source_name].DEFAULT_SOURCE_ID
    resolved = resolve(event, source.effective_mapping, default_source_id, skew)
    if isinstance(resolved, str):
        # The reason may quote the sender's text: kept storable (schemas/text.py).
        reason = storable(resolved, MAX_IGNORED_REASON_LENGTH)
        return Incoming(event.event_id, event.event_type, ignored=reason)
    return Incoming(event.event_id, event.event_type, decision=resolved)


def _record(
    runtime: Runtime,
    source_name: str,
    auth: Authenticated,
    inbound: InboundRequest,
    incoming: list[Incoming],
) -> list[Outcome]:
    """Every event and its outbox rows, committed (503 when the ledger cannot be written).

    The web's pool does not ping a connection before each use (a round trip per webhook), so
    one that the server closed (a restart, a failover) fails here once: that is retried on a
    new connection, since nothing was committed."""
    arguments: dict[str, Any] = {
        "source_name": source_name,
        "webhook_timestamp": auth.timestamp or int(inbound.received_at),
        "body_sha256": hashlib.sha256(inbound.body).hexdigest(),
        "incoming": incoming,
        "destinations": tuple(runtime.settings.destinations),
    }
    for attempt in (1, 2):
        try:
            outcomes = record_new_at_once(runtime.engine, **arguments)
            return _record_in_session(runtime, arguments) if outcomes is None else outcomes
        except DBAPIError as exc:
            if refused_values(exc) or not (exc.connection_invalidated and attempt == 1):
                raise _ledger_error(exc) from None
            log.warning("ledger connection was closed; retrying on a new one")
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from None
    raise AssertionError("unreachable")


def _record_in_session(runtime: Runtime, arguments: dict[str, Any]) -> list[Outcome]:
    """Duplicates, ignored events, SQLite: the general path (relay/ledger/record.py)."""
    with runtime.sessions() as session:
        return record_events(session, **arguments, at_once=False)


def _ledger_error(exc: SQLAlchemyError) -> ProblemError:
    """503 only when the ledger is unreachable; a value it refused is a 422 (relay.ledger.db)."""
    if refused_values(exc):
        # Validation at the boundary (schemas/) should have refused it: logged as the bug it is.
        log.exception("ledger refused a value that passed validation")
        return UnstorableValueError(
            "Nothing was recorded; a retry of the same payload fails the same way.",
            errors={"body": ["A value cannot be stored in the ledger."]},
        )
    log.exception("ledger write failed")
    return LedgerUnwritableError(
        "Nothing was recorded; retry later.",
        headers={"Retry-After": LEDGER_RETRY_AFTER_SECONDS},
    )


def _after(source_name: str, item: Incoming, outcome: Outcome) -> None:
    """Enqueue after the commit (best effort, in the background: service.intake.publisher); count
    and log."""
    recorded = outcome.recorded
    if outcome.status == "ignored":
        metrics.count_intake(source_name, "ignored")
        log.info("ignored", event_type=item.event_type, reason=outcome.reason)
        return
    assert recorded is not None and item.decision is not None
    with bound_contextvars(event_id=recorded.event_id, contact_id=recorded.contact_id):
        if outcome.status == "duplicate":
            metrics.count_intake(source_name, "duplicate")
            log.info("duplicate")
            return
        publisher = current_app.extensions["background_publisher"]
        urgent = is_urgent(item.decision.tracking_consent)  # withdrawals first (GDPR 7(3))
        for destination in recorded.destinations:
            publisher.submit(destination, recorded.contact_id, urgent)
        metrics.count_intake(source_name, "accepted")
        decision = item.decision
        log.info("accepted", email=mask_email(decision.email), decision=decision.tracking_consent)


def _answer(kind: SourceKind, outcomes: list[Outcome]) -> Response:
    """202 when anything new was recorded, else 200; each event's fate in `events`, and for a
    single event the same fields at the top level."""
    special = kind.answer(outcomes)
    if special is not None:
        status, content_type, payload = special
        return Response(payload, status=status, content_type=content_type)
    events = [_describe(outcome) for outcome in outcomes]
    body: dict[str, Any] = dict(events[0]) if len(events) == 1 else {}
    body.pop("id", None)
    body["events"] = events
    response = jsonify(body)
    new = ("accepted", erasures.ERASED)
    response.status_code = 202 if any(o.status in new for o in outcomes) else 200
    return response


def _describe(outcome: Outcome) -> dict[str, Any]:
    described: dict[str, Any] = {"id": outcome.delivery_id, "status": outcome.status}
    if outcome.recorded is not None:
        described["event_id"] = outcome.recorded.event_id
    if outcome.status == "duplicate":
        described["duplicate"] = True
    if outcome.status in ("ignored", erasures.ERASED):
        described.update(ignored=outcome.status == "ignored", reason=outcome.reason)
    return described
