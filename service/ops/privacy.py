"""`/ops/contacts/<id>/erase`: the operator page's erasure button (docs/data-protection.md#erasure),
and the Retry and Acknowledge buttons of a failed erasure at a destination
(docs/data-protection.md#failed-at-destination).

Behind the same sign-in and CSRF check as every other form of the page (service/ops/page.py's
guard); the erasure form asks who requested it and why, and a confirmation box, because an
erasure cannot be undone; an acknowledgement asks for a note, as the admin API does. Each runs
the function the admin API and the CLI run (relay/ledger/erasure.py, erasure_failures.py),
audited the same way, with the operator as the actor.
"""

from __future__ import annotations

import logging
import uuid

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from relay.errors import ProblemError
from relay.ledger import audit, destination_erasures, erasure, erasure_failures
from relay.ledger.models import Erasure
from schemas.admin import AcknowledgeBodySchema, ErasureBodySchema
from service.http.actors import operator_actor
from service.ops import auth as ops_auth

log = logging.getLogger(__name__)
CONFIRMATION = "erase"
AUDIT_PAGE = 200


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule(
        "/contacts/<ledger_id:contact_id>/erase",
        "erase_contact",
        erase_contact,
        methods=["POST"],
    )
    bp.add_url_rule("/audit", "audit_log", audit_log, methods=["GET"])
    failed = "/erasures/<uuid:erasure_id>/destinations/<destination>"
    bp.add_url_rule(f"{failed}/retry", "retry_erasure", retry_erasure, methods=["POST"])
    bp.add_url_rule(
        f"{failed}/acknowledge", "acknowledge_erasure", acknowledge_erasure, methods=["POST"]
    )


def audit_log() -> ResponseReturnValue:
    """The newest operator actions (the whole log: GET /admin/audit, `consent-relay audit
    export`)."""
    with current_app.extensions["consent_relay"].sessions() as session:
        entries = [audit.as_json(entry) for entry in audit.recent(session, AUDIT_PAGE)]
    return render_template("ops/audit.html", entries=entries, limit=AUDIT_PAGE)


def erase_contact(contact_id: int) -> ResponseReturnValue:
    back = redirect(url_for("ops.contact", contact_id=contact_id), 303)
    if request.form.get("confirm") != CONFIRMATION:
        flash("Not erased: tick the box to confirm that the erasure cannot be undone.", "warn")
        return back
    try:
        body = ErasureBodySchema().load(
            {key: request.form.get(key, "").strip() for key in ("requested_by", "reason")}
        )
    except ValidationError as exc:
        fields = ", ".join(sorted(exc.messages_dict))
        flash(f"Not erased: fill in who asked and why ({fields}).", "warn")
        return back
    runtime = current_app.extensions["consent_relay"]
    try:
        with runtime.sessions() as session:
            result = erasure.erase_contact(
                session,
                erasure.ErasureRequest(contact_id, body["requested_by"], body["reason"]),
                pseudonym_key=runtime.settings.privacy.pseudonym_key,
                lease_seconds=runtime.settings.delivery.lease_seconds,
                actor=operator_actor(ops_auth.operator()),
                forward=destination_erasures.forwarding(runtime.settings),
            )
    except ProblemError as exc:
        flash(f"Not erased: {exc}", "warn")
        return back
    if result is None:
        abort(404, f"No contact {contact_id}.")
    current_app.extensions["publisher"].publish_erasures(result.forwarded)  # after the commit
    log.info("ops: contact erased contact_id=%d erasure=%s", contact_id, result.erasure_id)
    flash(
        f"Contact {contact_id} erased: {result.decisions} decision(s) kept without the address, "
        f"{result.settled_deliveries} pending delivery(ies) settled and never sent.",
        "ok",
    )
    return back


def retry_erasure(erasure_id: uuid.UUID, destination: str) -> ResponseReturnValue:
    """A failed erasure at a destination back to pending; enqueued after the commit."""
    runtime = current_app.extensions["consent_relay"]
    with runtime.sessions() as session:
        back = _back_to_contact(session, erasure_id)
        try:
            row_id = erasure_failures.retry(
                session, str(erasure_id), destination, operator_actor(ops_auth.operator())
            )
        except ProblemError as exc:
            flash(f"Not retried: {exc}", "warn")
            return back
    current_app.extensions["publisher"].publish_erasures([(row_id, destination)])
    log.info("ops: destination erasure retried erasure=%s destination=%s", erasure_id, destination)
    flash(f"The erasure at {destination} is pending again: the worker calls it now.", "ok")
    return back


def acknowledge_erasure(erasure_id: uuid.UUID, destination: str) -> ResponseReturnValue:
    """The operator takes a failed erasure at a destination over: its sealed identifier goes."""
    runtime = current_app.extensions["consent_relay"]
    with runtime.sessions() as session:
        back = _back_to_contact(session, erasure_id)
        try:
            body = AcknowledgeBodySchema().load({"note": request.form.get("note", "").strip()})
        except ValidationError:
            flash("Not acknowledged: write a note on what is done instead (a ticket).", "warn")
            return back
        try:
            erasure_failures.acknowledge(
                session,
                str(erasure_id),
                destination,
                operator_actor(ops_auth.operator()),
                body["note"],
            )
        except ProblemError as exc:
            flash(f"Not acknowledged: {exc}", "warn")
            return back
    log.info(
        "ops: destination erasure acknowledged erasure=%s destination=%s", erasure_id, destination
    )
    flash(
        f"The failed erasure at {destination} is acknowledged: its sealed identifier is wiped.",
        "ok",
    )
    return back


def _back_to_contact(session: Session, erasure_id: uuid.UUID) -> Response:
    """To the erased contact's view; a 404 for an unknown erasure."""
    found = session.scalar(select(Erasure.contact_id).where(Erasure.public_id == str(erasure_id)))
    if found is None:
        abort(404, f"No erasure {erasure_id}.")
    return redirect(url_for("ops.contact", contact_id=found), 303)
