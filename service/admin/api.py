"""`/admin/...`: dead letters and destinations for operators, behind bearer tokens.

Every answer is JSON; every error is `application/problem+json` like the intake's. Nothing
here logs a token or an e-mail address: log lines carry ids, destination names and counts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from relay.errors import ProblemError
from relay.ledger import audit, dead_letters
from relay.ledger import pauses as destinations
from relay.ledger.db import refused_values
from relay.ledger.dead_letters import DeadLetterFilters, ReplayRefused, ReplayResult
from relay.ledger.models import utcnow
from schemas.admin import DeadLetterQuerySchema, PauseBodySchema, ReplayBodySchema
from service.admin.bearer import BearerGate
from service.http.actors import admin_actor
from service.http.problems import problem, problem_for
from service.runtime import Runtime

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/admin")
LEDGER_RETRY_AFTER_SECONDS = "30"
GATE = BearerGate(
    realm="consent-relay-admin",
    disabled_slug="admin-api-disabled",
    disabled_title="The admin API is disabled",
    disabled_detail="No admin token is configured; set [admin] tokens in the config to enable it.",
    unauthorized_detail=(
        "Send Authorization: Bearer <token>, with one of the configured [admin] tokens."
    ),
)


class UnknownDeadLetterError(ProblemError):
    http_status = 404
    slug = "unknown-dead-letter"
    title = "Unknown dead letter"


class UnknownDestinationError(ProblemError):
    http_status = 404
    slug = "unknown-destination"
    title = "Unknown destination"


class BodyMediaTypeError(ProblemError):
    http_status = 415
    slug = "unsupported-media-type"
    title = "Unsupported Media Type"


class BodyJsonError(ProblemError):
    http_status = 400
    slug = "malformed-json"
    title = "Malformed JSON"


class AdminLedgerError(ProblemError):
    """The ledger cannot be used: nothing was changed (503, retry later)."""

    http_status = 503
    slug = "ledger-unavailable"
    title = "The ledger cannot be used"


# --- authentication and errors ------------------------------------------------------------------


@bp.before_request
def _authenticate() -> Response | None:
    refused = GATE.refuse(_runtime().settings.admin_tokens)
    if refused is None:
        return None
    answer, why = refused
    if why != "disabled":
        log.warning("admin request refused: %s", why)
    return answer


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError) -> Response:
    return _validation_problem(exc.messages)


@bp.errorhandler(ReplayRefused)
def _replay_refused(exc: ReplayRefused) -> Response:
    # relay/ knows no problem documents: the class carries its status, the detail is ours.
    return _validation_problem({"_schema": [str(exc)]}, status=exc.http_status)


@bp.errorhandler(SQLAlchemyError)
def _ledger_unavailable(exc: SQLAlchemyError) -> Response:
    # The engine hides statement parameters, so the traceback carries no e-mail address.
    if refused_values(exc):
        # A value got past schemas/admin.py: a bug there, but never "retry later" (relay.ledger.db).
        log.exception("admin: the ledger refused a value that passed validation")
        return _validation_problem({"_schema": ["A value of the request cannot be stored."]})
    log.exception("admin: ledger unavailable")
    return problem_for(
        AdminLedgerError(
            "Nothing was changed; retry later.", headers={"Retry-After": LEDGER_RETRY_AFTER_SECONDS}
        )
    )


def _validation_problem(messages: Any, status: int | None = 422) -> Response:
    return problem(
        status or 422,
        "validation-failed",
        "The request failed validation",
        "See errors for the message of each field.",
        errors=messages,
    )


# --- dead letters -------------------------------------------------------------------------------


@bp.get("/dead-letters")
def list_dead_letters() -> Response:
    filters = DeadLetterFilters(**DeadLetterQuerySchema().load(_query_args()))
    with _sessions() as session:
        views = dead_letters.list_dead_letters(session, filters)
    body = {
        "dead_letters": [view.as_json() for view in views],
        "limit": filters.limit,
        "offset": filters.offset,
    }
    return jsonify(body)


@bp.get("/dead-letters/<ledger_id:dead_letter_id>")
def show_dead_letter(dead_letter_id: int) -> Response:
    with _sessions() as session:
        detail = dead_letters.get_dead_letter(session, dead_letter_id)
    if detail is None:
        raise _unknown_dead_letter(dead_letter_id)
    return jsonify(detail.as_json())


@bp.post("/dead-letters/<ledger_id:dead_letter_id>/replay")
def replay_one(dead_letter_id: int) -> Response:
    result, enqueued = _replay(ids=[dead_letter_id], filters=None, replay_all=False)
    if result.unknown:
        raise _unknown_dead_letter(dead_letter_id)
    return _replay_answer(result, enqueued)


@bp.post("/dead-letters/replay")
def replay_many() -> Response:
    body = ReplayBodySchema().load(_json_body())
    ids = body.pop("ids", None)
    replay_all = body.pop("replay_all")
    filters = DeadLetterFilters(**body) if body else None
    result, enqueued = _replay(ids=ids, filters=filters, replay_all=replay_all)
    return _replay_answer(result, enqueued)


def _replay(
    *, ids: list[int] | None, filters: DeadLetterFilters | None, replay_all: bool
) -> tuple[ReplayResult, int]:
    with _sessions() as session:
        result = dead_letters.replay(
            session, ids=ids, filters=filters, replay_all=replay_all, now=utcnow()
        )
        replay_audit(session, admin_actor(), result)
        session.commit()
    # After the commit, so that a worker never picks the task up before the rows are pending.
    enqueued = dead_letters.enqueue(result.pairs, current_app.extensions["publisher"].publish)
    log.info(
        "admin replay: replayed=%d skipped=%d unknown=%d enqueued=%d",
        len(result.replayed),
        len(result.skipped),
        len(result.unknown),
        enqueued,
    )
    return result, enqueued


def replay_audit(session: Session, actor: audit.Actor, result: ReplayResult) -> None:
    """The replay's audit entry, in its transaction: the dead letters replayed, and counts."""
    outcome = (
        f"replayed={len(result.replayed)} skipped={len(result.skipped)} "
        f"unknown={len(result.unknown)}"
    )
    targets = [f"dead-letter {dead_id}" for dead_id in result.replayed]
    audit.record(session, actor, "replay", targets, outcome)


def resume_outcome(was_paused: bool) -> str:
    return "resumed" if was_paused else "was not paused: nothing changed"


def _replay_answer(result: ReplayResult, enqueued: int) -> Response:
    return jsonify(
        {
            "replayed": result.replayed,
            "skipped": {str(dead_id): reason for dead_id, reason in result.skipped.items()},
            "unknown": result.unknown,
            "enqueued": enqueued,
        }
    )


def _unknown_dead_letter(dead_letter_id: int) -> UnknownDeadLetterError:
    return UnknownDeadLetterError(f"No dead letter {dead_letter_id}.")


# --- destinations -------------------------------------------------------------------------------


@bp.get("/destinations")
def list_destinations() -> Response:
    with _sessions() as session:
        views = destinations.describe(session, _runtime().settings.destinations)
    return jsonify({"destinations": [view.as_json() for view in views]})


@bp.post("/destinations/<name>/pause")
def pause_destination(name: str) -> Response:
    _require_destination(name)
    body = PauseBodySchema().load(_json_body())
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
        audit.record(session, admin_actor(), "pause", [name], f"paused: {body['reason']}")
        session.commit()
        [view] = destinations.describe(session, [name])
    log.info("admin paused destination=%s", name)
    return jsonify(view.as_json())


@bp.post("/destinations/<name>/resume")
def resume_destination(name: str) -> Response:
    _require_destination(name)
    with _sessions() as session:
        was_paused = destinations.resume(session, name, by="operator", now=utcnow())
        audit.record(session, admin_actor(), "resume", [name], resume_outcome(was_paused))
        session.commit()
        [view] = destinations.describe(session, [name])
    # Nothing is enqueued here: the sweeper picks the destination's pending work up.
    log.info("admin resumed destination=%s was_paused=%s", name, was_paused)
    return jsonify({**view.as_json(), "was_paused": was_paused})


def _require_destination(name: str) -> None:
    if name not in _runtime().settings.destinations:
        raise UnknownDestinationError(f"No destination {name!r}.")


# --- request helpers ----------------------------------------------------------------------------


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["consent_relay"]
    return runtime


def _sessions() -> Session:
    return _runtime().sessions()


def _query_args() -> dict[str, str]:
    repeated = {key: ["Give this parameter once."] for key, v in request.args.lists() if len(v) > 1}
    if repeated:
        raise ValidationError(repeated)
    return request.args.to_dict()


def _json_body() -> Any:
    """The JSON body. An empty one is `{}`: the pause reason is optional (so `curl -X POST`
    without `-d` works), and replay then answers 422 saying what to give."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    if not request.is_json:
        raise BodyMediaTypeError("The body must be application/json.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # also an integer past 4300 digits
        raise BodyJsonError(f"The body is not valid JSON: {exc}") from exc
