"""Mapp Engage REST API emulator: a small Flask app served over real HTTP.

Behaves like the Engage REST 2.0 contact calls described in docs/reference/engage.md and in Mapp's
tracking-consent how-to. Tests and the demo use it in
place of the real vendor. Every /api/rest call runs the callables of
``app.extensions["engage_checks"]`` (any may raise ApiError), then its handler. Runtime faults
(rate limit, 5xx, hangs, latency, delayed visibility, auth failures) live in engage_faults.py,
which documents the order of the checks; ``/_emulator/faults`` changes them at run time. The
inspection endpoints (state, one contact, an out-of-band edit, reset) are in engage_inspect.py.

Run it with ``python -m emulators.engage --port 8025 [--rate-limit 10 ...]``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from emulators import engage_faults, engage_inspect
from emulators.engage_faults import Faults, current_faults
from emulators.engage_state import (
    ApiError,
    EngageState,
    email_address,
    invalid_parameter,
    missing_authorization,
    missing_parameter,
    parse_attributes,
    parse_json_object,
    permission_denied,
    utc_now_iso,
)
from emulators.server import EmulatorServer

__all__ = ["EmulatorServer", "EngageState", "Faults", "create_emulator_app", "main", "parse_cli"]

logger = logging.getLogger("emulators.engage")

DEFAULT_USERNAME = "api-user@example.com"
DEFAULT_PASSWORD = "engage-demo-password"  # noqa: S105 - emulator demo credential, not a secret
# docs/reference/engage.md#base-url-auth-headers: the base path, optionally pinned to the
# incremental version v19.
API_PREFIXES = ("/api/rest", "/api/rest/v19")

DESCRIPTION = (
    "Mapp Engage REST API emulator (contact/update, contact/create, contact/get, contact/delete)."
)

Check = Callable[[], None]


# --- request pre-checks (run in order for every /api/rest call) ------------------------------


def _is_api_path(path: str) -> bool:
    return path == API_PREFIXES[0] or path.startswith(API_PREFIXES[0] + "/")


def _state() -> EngageState:
    state: EngageState = current_app.extensions["engage_state"]
    return state


def _check_auth() -> None:
    # docs/reference/engage.md#base-url-auth-headers /
    # docs/reference/engage.md#responses-and-errors: Basic auth on every call; 401 missing header,
    # 403 bad creds.
    if "Authorization" not in request.headers:
        raise missing_authorization()
    auth = request.authorization
    valid = (
        auth is not None
        and auth.type == "basic"
        and _state().check_credentials(auth.username or "", auth.password or "")
    )
    if not valid:
        raise permission_denied()


def _check_route() -> None:
    # Unknown path (404) or wrong method (405) wins over header checks once auth passed.
    if request.routing_exception is not None:
        raise request.routing_exception


def _check_accept() -> None:
    # docs/reference/engage.md#base-url-auth-headers: an Accept header that rules out JSON gives
    # 406.
    accept = request.headers.get("Accept", "").strip()
    if accept and request.accept_mimetypes.quality("application/json") <= 0:
        raise ApiError(406, "INVALID_REQUEST", "Accept header must allow application/json")


def _check_content_type() -> None:
    # docs/reference/engage.md#base-url-auth-headers: a bad Content-Type gives 415.
    if request.method == "POST" and request.mimetype != "application/json":
        raise ApiError(415, "INVALID_REQUEST", "Content-Type must be application/json")


# The order is documented in engage_faults.py: rate limit first (before auth), random 5xx last.
DEFAULT_CHECKS: tuple[Check, ...] = (
    *engage_faults.CHECKS_BEFORE_AUTH,
    _check_auth,
    _check_route,
    _check_accept,
    _check_content_type,
    *engage_faults.CHECKS_AFTER_VALIDATION,
)


def _preflight() -> None:
    if _is_api_path(request.path):
        for check in current_app.extensions["engage_checks"]:
            check()


def _record_request(response: Response) -> Response:
    if _is_api_path(request.path):
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.args.to_dict(),
            "status": response.status_code,
            "at": utc_now_iso(),
        }
        _state().record_request(entry)
    return response


# --- API handlers (docs/reference/engage.md#endpoints)
# -----------------------------------------------------


def contact_update() -> dict[str, Any]:
    """POST contact/update?identifierType=EMAIL&unifiedIdentifierName=<email>."""
    identifier_type = request.args.get("identifierType", "")
    identifier = request.args.get("unifiedIdentifierName", "")
    if not identifier_type or not identifier:
        raise missing_parameter(
            "unifiedIdentifierName",
            "Parameter unifiedIdentifierName and identifierType are mandatory",
        )
    if identifier_type != "EMAIL":
        raise invalid_parameter("identifierType", "Only identifierType EMAIL is emulated")
    body = parse_json_object(request.get_data())
    email_address(body)  # validated only; the contact is found by unifiedIdentifierName
    return _state().update_contact(identifier, parse_attributes(body))


def contact_create() -> dict[str, Any]:
    """POST contact/create with {"emailAddress": ..., "attributes": [...]}."""
    body = parse_json_object(request.get_data())
    email = email_address(body)
    if email is None:
        raise missing_parameter("emailAddress", "Parameter emailAddress is mandatory")
    delay = current_faults().visibility_delay()
    return _state().create_contact(email, parse_attributes(body), delay)


def contact_get() -> dict[str, Any]:
    """POST contact/get with {"type": "EMAIL", "value": "x@y"} (type must be uppercase)."""
    return _state().get_contact(_identifier())


def _identifier() -> str:
    """The e-mail of an identifier body `{"type": "EMAIL", "value": ...}` (get, delete)."""
    body = parse_json_object(request.get_data())
    kind, value = body.get("type"), body.get("value")
    if not kind or not value:
        raise missing_parameter("type", "Parameters type and value are mandatory")
    if kind != "EMAIL":
        raise invalid_parameter("type", "Only type EMAIL (uppercase) is supported by the emulator")
    if not isinstance(value, str):
        raise invalid_parameter("value", "value must be a string")
    return value


def contact_delete() -> dict[str, Any]:
    """POST contact/delete with {"type": "EMAIL", "value": "x@y"}
    (https://docs.mapp.com/apidocs/contactdelete: the same identifier body as contact/get;
    responses 200 and 400). The 200 body is not documented: the emulator answers `{}`."""
    _state().delete_contact(_identifier())
    return {}


def get_api_version() -> dict[str, Any]:
    """GET system/getApiVersion (docs/reference/engage.md#base-url-auth-headers); the relay's auth
    probe while paused.

    Our reference does not document the exact body; this minimal one names the version.
    """
    return {"version": "19"}


API_OPERATIONS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "contact/update": ("POST", contact_update),
    "contact/create": ("POST", contact_create),
    "contact/get": ("POST", contact_get),
    "contact/delete": ("POST", contact_delete),
    "system/getApiVersion": ("GET", get_api_version),
}


# --- error rendering and app factory ---------------------------------------------------------


def _api_error_response(error: ApiError) -> tuple[Response, int]:
    response = jsonify(error.body())
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Engage"'
    return response, error.status


def _http_error_response(error: HTTPException) -> tuple[Response, int]:
    # docs/reference/engage.md#responses-and-errors: bad URL gives 404
    # {"errorCode":"INVALID_REQUEST","message":"Not Found"}.
    status = error.code or 500
    actor = "SERVER" if status >= 500 else "CLIENT"
    return _api_error_response(ApiError(status, "INVALID_REQUEST", error.name, error_actor=actor))


def _register_routes(app: Flask) -> None:
    for prefix in API_PREFIXES:
        for name, (method, view) in API_OPERATIONS.items():
            app.add_url_rule(f"{prefix}/{name}", f"{prefix}:{name}", view, methods=[method])
    engage_inspect.register_routes(app)
    engage_faults.register_routes(app)


def create_emulator_app(
    state: EngageState | None = None,
    *,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    faults: Faults | None = None,
) -> Flask:
    """Build the emulator app; ``app.extensions`` holds ``engage_state`` and ``engage_faults``."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["engage_state"] = state if state is not None else EngageState(username, password)
    app.extensions["engage_faults"] = faults if faults is not None else Faults()
    # Hung requests would otherwise keep their (daemon) threads for hang_seconds after a stop.
    app.extensions["emulator_on_stop"] = app.extensions["engage_faults"].release_hangs
    app.extensions["engage_checks"] = list(DEFAULT_CHECKS)
    _register_routes(app)
    app.before_request(_preflight)
    app.after_request(_record_request)
    app.register_error_handler(ApiError, _api_error_response)
    app.register_error_handler(HTTPException, _http_error_response)
    return app


# --- command line ---------------------------------------------------------------------------


def parse_cli(argv: list[str] | None = None) -> tuple[argparse.Namespace, Faults]:
    """Parse the CLI flags into the arguments and the initial Faults (exits on bad values)."""
    parser = argparse.ArgumentParser(prog="engage-emulator", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument(
        "--username", default=os.environ.get("ENGAGE_EMULATOR_USERNAME", DEFAULT_USERNAME)
    )
    parser.add_argument(
        "--password", default=os.environ.get("ENGAGE_EMULATOR_PASSWORD", DEFAULT_PASSWORD)
    )
    engage_faults.add_arguments(parser)
    args = parser.parse_args(argv)
    return args, engage_faults.from_arguments(parser, args)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m emulators.engage [--host H] [--port P] [fault flags]``."""
    args, faults = parse_cli(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_emulator_app(username=args.username, password=args.password, faults=faults)
    server = EmulatorServer(app, args.host, args.port)
    logger.info("Mapp Engage emulator listening on %s", server.url)
    server.serve_forever()


if __name__ == "__main__":
    main()
