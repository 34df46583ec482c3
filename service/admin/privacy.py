"""`/admin/ledger/...` and `/admin/contacts/...`: the chain's verification, one person's export
and erasure (docs/data-protection.md). Same bearer tokens and problem answers as the rest of
the admin API (service/admin/api.py); no address is ever logged, only contact ids.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, make_response
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from relay.errors import ProblemError
from relay.ledger import (
    audit,
    chain_store,
    destination_erasures,
    erasure,
    erasure_failures,
    export,
    people,
)
from schemas.admin import (
    AcknowledgeBodySchema,
    AuditQuerySchema,
    ContactChoiceSchema,
    ErasureBodySchema,
    ExportQuerySchema,
    ReprocessBodySchema,
)
from service.admin import api as admin_api
from service.http.actors import admin_actor
from service.http.downloads import record_download
from service.intake import reprocess

log = logging.getLogger(__name__)
bp = Blueprint("admin_privacy", __name__, url_prefix="/admin")
bp.before_request(admin_api._authenticate)
bp.register_error_handler(ValidationError, admin_api._invalid)
bp.register_error_handler(SQLAlchemyError, admin_api._ledger_unavailable)


@bp.post("/ledger/verify")
def verify_chain() -> Response:
    """Every contact's chain, or one contact's (`contact_id` or `email` in the body)."""
    choice = ContactChoiceSchema().load(admin_api._json_body())
    with _sessions() as session:
        contact_id = _contact(session, choice) if choice else None
        result = chain_store.verify(session, contact_id)
    log.info(
        "admin: chain verified scope=%s contacts=%d broken=%d audit_intact=%s",
        result.scope,
        result.contacts,
        len(result.breaks),
        result.audit_break is None,
    )
    return jsonify(result.as_json())


@bp.get("/contacts/<ledger_id:contact_id>/export")
def export_contact(contact_id: int) -> Response:
    """One person's record: JSON (verifiable offline) or CSV (`?format=csv`)."""
    wanted = ExportQuerySchema().load(admin_api._query_args())["format"]
    with _sessions() as session:
        record = export.export_record(session, contact_id)
        if record is not None:
            audit.record(
                session, admin_actor(), "export", [f"contact {contact_id}"], f"as {wanted}"
            )
            session.commit()
    if record is None:
        raise UnknownContactError("No such contact in the ledger.")
    log.info("admin: record exported contact_id=%d format=%s", contact_id, wanted)
    return record_download(record, wanted, contact_id)


@bp.post("/contacts/<ledger_id:contact_id>/erase")
def erase_contact(contact_id: int) -> Response:
    """Erase one person, keeping the proof (docs/data-protection.md#erasure)."""
    body = ErasureBodySchema().load(admin_api._json_body())
    runtime = current_app.extensions["consent_relay"]
    request = erasure.ErasureRequest(contact_id, body["requested_by"], body["reason"])
    with _sessions() as session:
        result = erasure.erase_contact(
            session,
            request,
            pseudonym_key=runtime.settings.privacy.pseudonym_key,
            lease_seconds=runtime.settings.delivery.lease_seconds,
            actor=admin_actor(),
            forward=destination_erasures.forwarding(runtime.settings),
        )
    if result is None:
        raise UnknownContactError("No such contact in the ledger.")
    current_app.extensions["publisher"].publish_erasures(result.forwarded)  # after the commit
    log.info(
        "admin: contact erased contact_id=%d erasure=%s settled=%d",
        contact_id,
        result.erasure_id,
        result.settled_deliveries,
    )
    return jsonify(result.as_json())


@bp.post("/erasures/<uuid:erasure_id>/destinations/<destination>/retry")
def retry_destination_erasure(erasure_id: Any, destination: str) -> Response:
    """A failed erasure at a destination back to pending (docs/data-protection.md)."""
    with _sessions() as session:
        row_id = erasure_failures.retry(session, str(erasure_id), destination, admin_actor())
    current_app.extensions["publisher"].publish_erasures([(row_id, destination)])  # after commit
    log.info(
        "admin: destination erasure retried erasure=%s destination=%s", erasure_id, destination
    )
    return jsonify({"erasure_id": str(erasure_id), "destination": destination, "status": "pending"})


@bp.post("/erasures/<uuid:erasure_id>/destinations/<destination>/acknowledge")
def acknowledge_destination_erasure(erasure_id: Any, destination: str) -> Response:
    """The operator takes a failed erasure at a destination over: its sealed identifier goes."""
    body = AcknowledgeBodySchema().load(admin_api._json_body())
    with _sessions() as session:
        erasure_failures.acknowledge(
            session, str(erasure_id), destination, admin_actor(), body["note"]
        )
    log.info(
        "admin: destination erasure acknowledged erasure=%s destination=%s", erasure_id, destination
    )
    status = destination_erasures.ACKNOWLEDGED
    return jsonify({"erasure_id": str(erasure_id), "destination": destination, "status": status})


@bp.get("/audit")
def audit_log() -> Response:
    """The operator audit log, newest first: JSON (`entries`) or CSV (`?format=csv`)."""
    query = AuditQuerySchema().load(admin_api._query_args())
    with _sessions() as session:
        entries = audit.recent(session, query["limit"], query["offset"])
        if query["format"] == "csv":
            answer = make_response(audit.as_csv(entries))
            answer.mimetype = "text/csv"
            answer.headers["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
            return answer
        body = [audit.as_json(entry) for entry in entries]
    return jsonify({"entries": body, "limit": query["limit"], "offset": query["offset"]})


@bp.post("/ignored/reprocess")
def reprocess_ignored() -> Response:
    """Run the kept bodies of ignored events through the current mapping (idempotent)."""
    body = ReprocessBodySchema().load(admin_api._json_body())
    runtime = current_app.extensions["consent_relay"]
    if body["source"] is not None and body["source"] not in runtime.settings.sources:
        raise UnknownSourceError(f"No source {body['source']!r} is configured.")
    result = reprocess.reprocess(runtime, admin_actor(), body["source"])
    log.info("admin: ignored events reprocessed %s", result.summary())
    return jsonify(result.as_json())


class UnknownSourceError(ProblemError):
    http_status = 404
    slug = "unknown-source"
    title = "Unknown source"


class UnknownContactError(ProblemError):
    http_status = 404
    slug = "unknown-contact"
    title = "Unknown contact"


def _contact(session: Any, choice: dict[str, Any]) -> int:
    found = people.chosen_contact(session, choice.get("contact_id"), choice.get("email"))
    if found is None:
        raise UnknownContactError("No such contact in the ledger.")
    return found


def _sessions() -> Any:
    return current_app.extensions["consent_relay"].sessions()
