"""`/ops`: the operator page. Server-rendered HTML behind the admin sign-in (see ops_auth).

Status, one contact's consent history, dead letters with replay, pause and resume. Writes go
through the functions the admin API and the CLI use (`relay.ledger.dead_letters`,
`relay.ledger.pauses`). Log lines carry ids, destination names and counts, never an e-mail
address; the address is never put in a URL (access logs), the lookup form is a POST.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import (
    Blueprint,
    Flask,
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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from relay.ledger import audit, dead_letters, destination_erasures, export, retention, verifications
from relay.ledger import pauses as destinations
from relay.ledger.db import refused_values
from relay.ledger.dead_letters import DeadLetterFilters
from relay.ledger.models import utcnow
from schemas.admin import STATUS_FILTERS, ContactLookupSchema, PauseBodySchema
from service.admin.api import replay_audit, resume_outcome
from service.health import metrics_http
from service.http.actors import operator_actor
from service.http.downloads import record_download
from service.ops import auth as ops_auth
from service.ops import privacy as ops_privacy
from service.ops import queries as ops_queries
from service.runtime import Runtime

log = logging.getLogger(__name__)
bp = Blueprint(
    "ops", __name__, url_prefix="/ops", static_folder="static", template_folder="templates"
)
PAGE_SIZE = 50
PUBLIC_ENDPOINTS = {"ops.login"}
ops_privacy.add_routes(bp)


def register(app: Flask) -> None:
    """Register the blueprint; call after `app.extensions["consent_relay"]` is set."""
    runtime: Runtime = app.extensions["consent_relay"]
    ops_auth.configure_sessions(app, runtime.settings.ops)
    app.register_blueprint(bp)


# --- guard, headers, errors ---------------------------------------------------------------------


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    if request.endpoint == "ops.static":
        return None
    return ops_auth.guard(_runtime().settings.ops, public=request.endpoint in PUBLIC_ENDPOINTS)


@bp.after_request
def _headers(response: Response) -> Response:
    return ops_auth.with_security_headers(response)


@bp.context_processor
def _template_globals() -> dict[str, object]:
    signed_in = ops_auth.signed_in(_runtime().settings.ops)
    return {
        "csrf_token": ops_auth.csrf_token,
        "operator": ops_auth.operator() if signed_in else None,
    }


@bp.app_template_filter("ops_time")
def _ops_time(value: dt.datetime | None) -> str:
    """UTC, ISO 8601, to the second: 2026-07-01T09:30:00Z."""
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


@bp.app_template_filter("ops_age")
def _ops_age(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    seconds = max(0, int((utcnow() - value).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    page = render_template("ops/message.html", status=status, title=exc.name, text=exc.description)
    return page, status


@bp.errorhandler(SQLAlchemyError)
def _ledger_unavailable(exc: SQLAlchemyError) -> ResponseReturnValue:
    if refused_values(
        exc
    ):  # a value got past validation: a bug, never "try again" (relay.ledger.db)
        log.exception("ops: the ledger refused a value that passed validation")
        text = "A value of the request cannot be stored; nothing was changed."
        return render_template("ops/message.html", status=400, title="Bad request", text=text), 400
    log.exception("ops: ledger unavailable")  # the engine hides parameters: no addresses
    text = "The ledger cannot be used right now; nothing was changed. Try again in a minute."
    return render_template(
        "ops/message.html", status=503, title="Ledger unavailable", text=text
    ), 503


# --- sign-in ------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    ops = _runtime().settings.ops
    target = ops_auth.safe_next(request.values.get("next"), url_for("ops.status"))
    if request.method == "GET":
        if ops_auth.signed_in(ops):
            return redirect(target)
        return render_template("ops/login.html", next=target, username=ops.admin_username)
    username, client = request.form.get("username", ""), request.remote_addr or "unknown"
    result = ops_auth.try_sign_in(ops, username, request.form.get("password", ""), client)
    if result.signed_in:
        log.info("ops: operator signed in from %s", client)
        return redirect(target, 303)
    if result.refusal is not None:
        log.warning("ops: sign-in throttled (%s) from %s", result.refusal.scope, client)
        return ops_auth.throttled_page(target, username, result.refusal.retry_after)
    log.warning("ops: sign-in refused (wrong username or password) from %s", client)
    error = "Wrong username or password."
    return render_template("ops/login.html", next=target, username=username, error=error), 401


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    ops_auth.sign_out(_runtime().settings.ops)  # every session of the account, not only this
    flash("You are signed out.", "ok")
    return redirect(url_for("ops.login"), 303)


# --- status and destinations --------------------------------------------------------------------


@bp.get("/")
@bp.get("")  # registered first: url_for gives /ops
def status() -> ResponseReturnValue:
    names = _runtime().settings.destinations
    with _sessions() as session:
        counts = ops_queries.status_counts(session, names, utcnow())
        views = destinations.describe(session, names)
        coverage = verifications.coverage(session, names)
        pruning = retention.last_run(session)
    return render_template(
        "ops/status.html",
        counts=counts,
        destinations=views,
        coverage=coverage,
        pruning=pruning,
        window=ops_queries.ATTEMPT_WINDOW,
        rejects=metrics_http.intake_rejects(_runtime()),
    )


@bp.post("/destinations/<name>/pause")
def pause_destination(name: str) -> ResponseReturnValue:
    _require_destination(name)
    reason = request.form.get("reason", "").strip()
    try:
        body = PauseBodySchema().load({"reason": reason} if reason else {})
    except ValidationError as exc:
        flash(f"Not paused: the reason is invalid ({_first_message(exc)}).", "warn")
        return redirect(url_for("ops.status"), 303)
    with _sessions() as session:
        destinations.pause(
            session,
            name,
            by="operator",
            reason=body["reason"],
            status=None,
            now=utcnow(),
            probe_in=None,
        )
        actor = operator_actor(ops_auth.operator())
        audit.record(session, actor, "pause", [name], f"paused: {body['reason']}")
        session.commit()
    log.info("ops: operator paused destination=%s", name)
    flash(f"{name} is paused: nothing is sent to it until you resume it.", "ok")
    return redirect(url_for("ops.status"), 303)


@bp.post("/destinations/<name>/resume")
def resume_destination(name: str) -> ResponseReturnValue:
    _require_destination(name)
    with _sessions() as session:
        was_paused = destinations.resume(session, name, by="operator", now=utcnow())
        actor = operator_actor(ops_auth.operator())
        audit.record(session, actor, "resume", [name], resume_outcome(was_paused))
        session.commit()
    log.info("ops: operator resumed destination=%s was_paused=%s", name, was_paused)
    if was_paused:
        flash(f"{name} is resumed: the sweeper delivers its pending work now.", "ok")
    else:
        flash(f"{name} was not paused; nothing changed.", "warn")
    return redirect(url_for("ops.status"), 303)


# --- contacts -----------------------------------------------------------------------------------


@bp.route("/contacts", methods=["GET", "POST"])
def contacts() -> ResponseReturnValue:
    """The search form posts the address (never in a URL); a match redirects to the history."""
    email = request.values.get("email", "").strip()
    if not email:
        return render_template("ops/contact.html", history=None, searched=False)
    try:
        email = ContactLookupSchema().load({"email": email})["email"]
    except ValidationError as exc:
        abort(400, f"The e-mail address is invalid: {_first_message(exc)}")
    with _sessions() as session:
        contact_id = ops_queries.find_contact(session, email)
    if contact_id is None:
        return render_template("ops/contact.html", history=None, searched=True, email=email)
    return redirect(url_for("ops.contact", contact_id=contact_id), 303)


@bp.get("/contacts/<ledger_id:contact_id>")
def contact(contact_id: int) -> ResponseReturnValue:
    configured = _runtime().settings.destinations
    with _sessions() as session:
        history = ops_queries.contact_history(session, contact_id, configured)
        verified = verifications.for_contact(session, contact_id)
        erasures = ops_queries.erasures(session, contact_id)
        passed_on = destination_erasures.statuses(session, [x.id for x in erasures])
    if history is None:
        abort(404, f"No contact {contact_id}.")
    unverifiable = {n for n, d in configured.items() if not verifications.verifiable(d)}
    return render_template(
        "ops/contact.html",
        history=history,
        searched=True,
        verified=verified,
        unverifiable=unverifiable,
        erasures=erasures,
        passed_on=passed_on,
    )


@bp.get("/contacts/<ledger_id:contact_id>/export.<any(json, csv):wanted>")
def contact_export(contact_id: int, wanted: str) -> ResponseReturnValue:
    """The contact's record as a download (docs/data-protection.md#export)."""
    with _sessions() as session:
        record = export.export_record(session, contact_id)
        if record is not None:
            actor = operator_actor(ops_auth.operator())
            audit.record(session, actor, "export", [f"contact {contact_id}"], f"as {wanted}")
            session.commit()
    if record is None:
        abort(404, f"No contact {contact_id}.")
    return record_download(record, wanted, contact_id)


# --- dead letters -------------------------------------------------------------------------------


@bp.get("/dead-letters")
def dead_letter_list() -> ResponseReturnValue:
    status, destination, page = _list_args()
    filters = DeadLetterFilters(
        status=status,
        destination=destination,
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
    )
    with _sessions() as session:
        views = dead_letters.list_dead_letters(session, filters)
        contact_ids = ops_queries.dead_letter_contacts(session, [v.id for v in views])
    return render_template(
        "ops/dead_letters.html",
        dead_letters=views[:PAGE_SIZE],
        contact_ids=contact_ids,
        more=len(views) > PAGE_SIZE,
        page=page,
        status=status,
        destination=destination or "",
        statuses=STATUS_FILTERS,
        destinations=sorted(_runtime().settings.destinations),
    )


def _list_args() -> tuple[str, str | None, int]:
    status = request.args.get("status", "open")
    destination = request.args.get("destination") or None
    page = request.args.get("page", "1")
    if status not in STATUS_FILTERS:
        abort(400, f"status must be one of {', '.join(STATUS_FILTERS)}.")
    if destination is not None and destination not in _runtime().settings.destinations:
        abort(400, f"Unknown destination {destination!r}.")
    if not (page.isascii() and page.isdigit()) or not 1 <= int(page) <= 1_000_000:
        abort(400, "page must be a positive number.")
    return status, destination, int(page)


@bp.get("/dead-letters/<ledger_id:dead_letter_id>")
def dead_letter(dead_letter_id: int) -> ResponseReturnValue:
    with _sessions() as session:
        detail = dead_letters.get_dead_letter(session, dead_letter_id)
        contact_ids = ops_queries.dead_letter_contacts(session, [dead_letter_id])
    if detail is None:
        abort(404, f"No dead letter {dead_letter_id}.")
    return render_template(
        "ops/dead_letter.html", detail=detail, contact_id=contact_ids.get(dead_letter_id)
    )


@bp.post("/dead-letters/<ledger_id:dead_letter_id>/replay")
def replay_dead_letter(dead_letter_id: int) -> ResponseReturnValue:
    with _sessions() as session:
        result = dead_letters.replay(session, ids=[dead_letter_id], now=utcnow())
        if not result.unknown:
            replay_audit(session, operator_actor(ops_auth.operator()), result)
        session.commit()
    if result.unknown:
        abort(404, f"No dead letter {dead_letter_id}.")
    # After the commit, so that a worker never picks the task up before the rows are pending.
    enqueued = dead_letters.enqueue(result.pairs, current_app.extensions["publisher"].publish)
    log.info(
        "ops: replay dead_letter=%d replayed=%d enqueued=%d",
        dead_letter_id,
        len(result.replayed),
        enqueued,
    )
    if result.replayed:
        flash(_replayed_message(dead_letter_id, enqueued), "ok")
    else:
        why = result.skipped.get(dead_letter_id, "not open")
        flash(f"Dead letter {dead_letter_id} was skipped: {why}. Nothing changed.", "warn")
    return redirect(url_for("ops.dead_letter", dead_letter_id=dead_letter_id), 303)


def _replayed_message(dead_letter_id: int, enqueued: int) -> str:
    then = (
        "a delivery was enqueued"
        if enqueued
        else "the outbox sweeper enqueues the delivery within a few seconds"
    )
    return (
        f"Dead letter {dead_letter_id} replayed: the contact's latest decision is pending "
        f"again and {then}."
    )


# --- helpers ------------------------------------------------------------------------------------


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["consent_relay"]
    return runtime


def _sessions() -> Session:
    return _runtime().sessions()


def _require_destination(name: str) -> None:
    if name not in _runtime().settings.destinations:
        abort(404, f"No destination {name!r} is configured.")


def _first_message(exc: ValidationError) -> str:
    messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
    return " ".join(str(m) for value in messages.values() for m in value)
