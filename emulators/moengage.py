"""MoEngage emulator: the e-mail opt-in endpoint and Track User (docs/reference/moengage.md).

- Auth: HTTP Basic `<Workspace ID>:<Data API key>` and `MOE-APPKEY: <Workspace ID>`
  (docs/reference/moengage.md#base-url-auth-headers); missing or wrong answers 401, a MOE-APPKEY
  unlike the user 401 `HeaderMismatch` (docs/reference/moengage.md#base-url-auth-headers).
- `PUT /v1.0/opt-in-management/user-preferences` (and the older `/v1/...`,
  docs/reference/moengage.md#api-paths-and-early-access):
  `{"user_preferences": {customer_id|email_id, opt_in_status, channel, categories?}}`. The
  documented 400s (docs/reference/moengage.md#responses-and-errors): invalid opt_in_status, extra
  key, invalid channel, missing ids, and "No users found ..." for an unknown user. 403 "Email Opt-in
  Management feature not enabled for the workspace" when the feature is off
  (`feature_enabled=False`). Users are found by `customer_id` (a seeded contact's `customer_id`,
  else its address) or by `email_id` (the address). With `customer_id_mandatory=True` (a workspace
  without "unsubscribe on email", docs/reference/moengage.md#endpoints) a body without customer_id
  answers 400 "customer_id is mandatory"; with `pii_tokenized=True` addresses are not stored, so
  `email_id` finds nobody
  (https://www.moengage.com/docs/api/email-subscription/email-subscription-overview).
- `POST /v1/customer/{workspace_id}` (Track User, docs/reference/moengage.md#endpoints): 200
  "accepted" whatever happens next; applied at once here (MoEngage processes it asynchronously);
  with
  `update_existing_only` an unknown customer_id is written nowhere (counted as
  `ignored_unknown_users`), as MoEngage drops it after answering 200.
- `POST /v1/customer/delete?app_id=<workspace_id>` (Delete User,
  https://www.moengage.com/docs/api/user/delete-users): `{"identity_type": "customer_id" |
  "moengage_id", "identity_value": ...}`, answered 200 `{"status": "success", "message":
  "Your request has been accepted and will be processed soon."}`. MoEngage deletes after a
  24-hour buffer; here at once. An unknown user gets the same 200 (no other answer is
  documented, UNVERIFIED) and is counted as `ignored_unknown_deletes`. A missing or unknown
  app_id and a body without the two keys answer the Data API envelope
  (docs/reference/moengage.md#responses-and-errors), with codes that are UNVERIFIED for this
  endpoint: 401 and 400.
- Rate limit: 1000 requests per minute (docs/reference/moengage.md#rate-limits) when
  `rate_limit_per_minute` is set, plus the per-second fault of engage_faults; both answer 429 with
  no body (docs/reference/moengage.md#responses-and-errors).

Run it with ``moengage-emulator --port 8028 [--any-contact] [--rate-limit-per-minute 1000]``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from emulators import engage_faults
from emulators.engage_faults import Faults
from emulators.peer import (
    DEFAULT_FIELDS,
    PeerError,
    PeerState,
    Vendor,
    basic_auth_matches,
    create_peer_app,
    parser,
    serve,
)
from emulators.peer import peer_state as state

APP_ID = "DEMOWORKSPACE01"
API_KEY = "moengage-demo-data-api-key"
OPT_IN_PATHS = (
    "/v1.0/opt-in-management/user-preferences",
    "/v1/opt-in-management/user-preferences",
)
# case-insensitive (docs/reference/moengage.md#consent-values)
STATUSES = ("DOUBLE_OPTED_IN", "OPTED_OUT", "OPT_IN_PENDING")
PREFERENCE_KEYS = {"customer_id", "email_id", "categories", "opt_in_status", "channel"}
NOT_FOUND = "No users found with the provided customer_id or email_id. Please check the same."
FEATURE_OFF = "Email Opt-in Management feature not enabled for the workspace"
ACCEPTED = "Your request has been accepted and will be processed soon."
MANDATORY = "customer_id is mandatory"
IDENTITY_TYPES = ("customer_id", "moengage_id")  # Delete User's identity_type


def invalid(target: str, message: str, status: int = 400) -> PeerError:
    """The opt-in endpoint's error envelope (docs/reference/moengage.md#responses-and-errors)."""
    code = {400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden"}.get(
        status, f"{status} Error"
    )
    details = {"target": target, "message": message}
    text = "Request Data is invalid" if status == 400 else message
    return PeerError(status, {"error": {"code": code, "message": text, "details": details}})


def _auth_error(status: int) -> PeerError:
    if status == 403:
        return invalid("feature", FEATURE_OFF, 403)
    return invalid("Authorization", "Authentication required", 401)


def _server_error(status: int) -> PeerError:
    return PeerError(status, {"error": {"code": f"{status} Internal Server Error"}})


def _check_auth() -> None:
    if not basic_auth_matches():
        raise _auth_error(401)
    if request.headers.get("MOE-APPKEY") != state().credentials[0]:
        raise PeerError(401, {"title": "HeaderMismatch", "detail": "MOE-APPKEY does not match"})


def _check_minute_limit() -> None:
    limit = current_app.extensions["moengage_per_minute"]
    if limit is None:
        return
    now, window = time.monotonic(), state().minute_window
    with state().lock:
        while window and window[0] <= now - 60:
            window.popleft()
        window.append(now)
        over = len(window) > limit
    if over:
        state().count("minute_rate_limit_violations")
        raise PeerError(429)  # no body (docs/reference/moengage.md#responses-and-errors)


def update_preferences() -> Response:
    if not current_app.extensions["moengage_feature"]:
        raise invalid("feature", FEATURE_OFF, 403)
    body = request.get_json(silent=True)
    prefs = body.get("user_preferences") if isinstance(body, dict) else None
    if not isinstance(prefs, dict) or set(body) - {"user_preferences"}:  # type: ignore[arg-type]
        raise invalid("user_preferences", "user_preferences is required")
    status = _validated_status(prefs)
    if current_app.extensions["moengage_customer_id_mandatory"] and not prefs.get("customer_id"):
        raise invalid("customer_id", MANDATORY)
    contact = _find_user(prefs)
    if contact is None:
        raise invalid("customer_id or email_id", NOT_FOUND)
    identity = {key: prefs[key] for key in ("customer_id", "email_id") if prefs.get(key)}
    state().apply(contact, "opt_in", {}, channel=status, **identity)
    return jsonify({"message": "Your request has been processed successfully"})


def _find_user(prefs: dict[str, Any]) -> dict[str, Any] | None:
    """The email_id takes priority when given (docs/reference/moengage.md#endpoints); with PII
    tokenization no address is stored, so it finds nobody."""
    if prefs.get("email_id"):
        if current_app.extensions["moengage_pii_tokenized"]:
            return None
        return state().find(str(prefs["email_id"]))
    return find_customer(str(prefs["customer_id"]))


def find_customer(customer_id: str) -> dict[str, Any] | None:
    """The user with this customer_id: a seeded one's own, else its address."""
    with state().lock:
        for contact in state().contacts.values():
            if contact.get("customer_id", contact["email"].lower()) in (
                customer_id,
                customer_id.lower(),
            ):
                return contact
        return state().find(customer_id) if state().any_contact else None


def _validated_status(prefs: dict[str, Any]) -> str:
    extra = sorted(set(prefs) - PREFERENCE_KEYS)
    if extra:
        raise invalid(extra[0], "Extra key passed in the request")
    if not prefs.get("customer_id") and not prefs.get("email_id"):
        raise invalid("customer_id or email_id", "customer_id or email_id is required")
    if prefs.get("channel") != "email":
        raise invalid("channel", "channel can only be 'email'")
    status = str(prefs.get("opt_in_status") or "").upper()
    if status not in STATUSES:
        message = (
            "Opt-In status can only be 'DOUBLE_OPTED_IN' or 'OPTED_OUT' or 'OPT_IN_PENDING' "
            "(case-insensitive)"
        )
        raise invalid("opt_in_status", message)
    return status


def track_user(workspace_id: str) -> Response:
    if workspace_id != state().credentials[0]:
        raise PeerError(401, {"status": "fail", "error": _fail("app_id", "Unknown workspace")})
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not body.get("customer_id"):
        error = _fail("customer_id", "customer_id is missing", "MissingAttributeError")
        raise PeerError(400, {"status": "fail", "error": error})
    customer_id = str(body["customer_id"])
    existing_only = bool(body.get("update_existing_only"))
    contact = find_customer(customer_id)
    if contact is None and not existing_only:
        contact = state().add_contact(customer_id)
    if contact is None:
        state().count("ignored_unknown_users")
    else:
        state().apply(contact, "track_user", dict(body.get("attributes") or {}))
    return jsonify({"status": "success", "message": ACCEPTED})


def delete_user() -> Response:
    if request.args.get("app_id") != state().credentials[0]:
        raise PeerError(401, {"status": "fail", "error": _fail("app_id", "Unknown workspace")})
    body = request.get_json(silent=True)
    kind = body.get("identity_type") if isinstance(body, dict) else None
    value = body.get("identity_value") if isinstance(body, dict) else None
    if kind not in IDENTITY_TYPES or not value:
        error = _fail(
            "identity_value",
            "identity_type and identity_value are required",
            "MissingAttributeError",
        )
        raise PeerError(400, {"status": "fail", "error": error})
    # the emulator gives nobody a moengage_id: only customer_id finds a user
    contact = find_customer(str(value)) if kind == "customer_id" else None
    if contact is None:
        state().count("ignored_unknown_deletes")
    else:
        with state().lock:
            state().contacts.pop(contact["email"].lower(), None)
    return jsonify({"status": "success", "message": ACCEPTED})


def _fail(attribute: str, message: str, kind: str = "AuthenticationError") -> dict[str, str]:
    return {
        "attribute": attribute,
        "message": message,
        "type": kind,
        "request_id": uuid.uuid4().hex,
    }


VENDOR = Vendor(
    name="MoEngage",
    is_api=lambda path: path in OPT_IN_PATHS or path.startswith("/v1/customer/"),
    check_auth=_check_auth,
    auth_error=_auth_error,
    rate_limited=lambda: PeerError(429),
    server_error=_server_error,
    extra_checks=(_check_minute_limit,),
)
ROUTES: tuple[tuple[str, str, Any], ...] = (
    *((path, "PUT", update_preferences) for path in OPT_IN_PATHS),
    ("/v1/customer/delete", "POST", delete_user),  # before the rule it would match
    ("/v1/customer/<workspace_id>", "POST", track_user),
)


def create_emulator_app(
    *,
    app_id: str = APP_ID,
    api_key: str = API_KEY,
    any_contact: bool = False,
    feature_enabled: bool = True,
    customer_id_mandatory: bool = False,
    pii_tokenized: bool = False,
    rate_limit_per_minute: int | None = None,
    faults: Faults | None = None,
) -> Flask:
    peer = PeerState(DEFAULT_FIELDS, any_contact=any_contact, credentials=(app_id, api_key))
    app = create_peer_app(__name__, VENDOR, peer, faults, ROUTES)
    app.extensions["moengage_feature"] = feature_enabled
    app.extensions["moengage_customer_id_mandatory"] = customer_id_mandatory
    app.extensions["moengage_pii_tokenized"] = pii_tokenized
    app.extensions["moengage_per_minute"] = rate_limit_per_minute
    return app


def main(argv: list[str] | None = None) -> None:
    cli = parser("moengage-emulator", "MoEngage opt-in and Track User emulator.", 8028, ())
    cli.add_argument("--app-id", default=APP_ID)
    cli.add_argument("--api-key", default=API_KEY)
    cli.add_argument("--rate-limit-per-minute", type=int, default=None, metavar="N")
    cli.add_argument("--feature-off", action="store_true", help="opt-in endpoint answers 403")
    cli.add_argument(
        "--customer-id-mandatory", action="store_true", help='400 "customer_id is mandatory"'
    )
    cli.add_argument("--pii-tokenized", action="store_true", help="email_id finds nobody")
    args = cli.parse_args(argv)
    faults = engage_faults.from_arguments(cli, args)
    app = create_emulator_app(
        app_id=args.app_id,
        api_key=args.api_key,
        any_contact=args.any_contact,
        feature_enabled=not args.feature_off,
        customer_id_mandatory=args.customer_id_mandatory,
        pii_tokenized=args.pii_tokenized,
        rate_limit_per_minute=args.rate_limit_per_minute,
        faults=faults,
    )
    serve(app, args, "MoEngage")


if __name__ == "__main__":
    main()
