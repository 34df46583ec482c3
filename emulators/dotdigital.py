"""Dotdigital v3 Contacts API emulator (docs/reference/dotdigital.md).

- HTTP Basic with the API user (docs/reference/dotdigital.md#base-url-auth-headers); a missing or
  wrong one answers 401 (body UNVERIFIED).
- `GET /contacts/v3/email/{email}`: 200 the contact, or the documented 404
  `contacts:contactNotFound` body (docs/reference/dotdigital.md#endpoints).
- `PATCH /contacts/v3/email/{email}?merge-option=overwrite|overwrite-if-not-empty|
  overwrite-if-empty`: upsert, 200 updated / 201 created (docs/reference/dotdigital.md#endpoints).
  `dataFields` must be defined (v2's ERROR_DATAFIELD_NOTFOUND, docs/reference/dotdigital.md#errors;
  the v3 code here is UNVERIFIED). A new contact without `channelProperties.email.status` is
  *subscribed* (docs/reference/dotdigital.md#consent-values).
- `consentRecords` on PATCH (https://developer.dotdigital.com/reference/importcontact): 1 to 5
  records, each with a non-empty `text`, an ISO 8601 `dateTimeConsented` and a `url`; the
  reference also marks `ipAddress` and `userAgent` required, the official SDK allows null
  (UNVERIFIED which holds): here they are optional, strings when given. Invalid records
  answer 400 `contacts:invalidConsentRecords` (code UNVERIFIED). Records are added to the
  contact's `consentRecords` (add or replace is UNVERIFIED) and shown by GET.
- Rate limit: 429 with `X-RateLimit-Limit`, `X-RateLimit-Reset` (seconds) and
  `X-RateLimit-Scope` (docs/reference/dotdigital.md#rate-limits); the body is UNVERIFIED.

Run it with ``dotdigital-emulator --port 8027 [--any-contact] [--rate-limit 10 ...]``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask, Response, jsonify, request

from emulators import engage_faults
from emulators.engage_faults import Faults
from emulators.peer import (
    PeerError,
    PeerState,
    Vendor,
    basic_auth_matches,
    create_peer_app,
    field_list,
    parser,
    serve,
)
from emulators.peer import peer_state as state

USERNAME = "apiuser-demo@apiconnector.com"
PASSWORD = "dotdigital-demo-password"  # noqa: S105 - emulator demo credential
FIELDS = ("TRACKING_CONSENT", "TRACKING_CONSENT_SOURCE", "TRACKING_CONSENT_SOURCE_ID")
# writable (docs/reference/dotdigital.md#consent-values)
STATUSES = ("subscribed", "unsubscribed", "suppressed")
MERGE_OPTIONS = ("overwrite", "overwrite-if-not-empty", "overwrite-if-empty")


def error(status: int, code: str, description: str, **headers: str) -> PeerError:
    """The v3 envelope (docs/reference/dotdigital.md#errors)."""
    return PeerError(
        status, {"errorCode": code, "description": description, "details": []}, headers
    )


def _auth_error(status: int) -> PeerError:
    return error(status, "unauthorized", "Invalid API user credentials (ERROR_APIUSER_INVALID)")


def _rate_limited() -> PeerError:
    limit = engage_faults.current_faults().snapshot()["config"]["rate_limit_per_second"]
    headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Reset": "1"}
    headers["X-RateLimit-Scope"] = "medium"
    return error(429, "tooManyRequests", "Too many requests", **headers)


def _server_error(status: int) -> PeerError:
    return error(status, "internalServerError", "An error has occurred")


def _check_auth() -> None:
    if not basic_auth_matches():
        raise _auth_error(401)


def _not_found(email: str) -> PeerError:
    details = [{"item": email, "description": "Not found using the identifier 'email'"}]
    body = {
        "errorCode": "contacts:contactNotFound",
        "description": "The following contacts could not be found",
        "details": details,
    }
    return PeerError(404, body)


def _contact_json(contact: dict[str, Any]) -> dict[str, Any]:
    return {
        "identifiers": {"email": contact["email"]},
        "dataFields": contact["fields"],
        "channelProperties": {"email": {"status": contact["channel"] or "noSubscription"}},
        "consentRecords": contact.get("consent_records", []),
    }


def get_contact(email: str) -> Response:
    contact = state().find(email)
    if contact is None:
        raise _not_found(email)
    return jsonify(_contact_json(contact))


def patch_contact(email: str) -> tuple[Response, int]:
    merge = request.args.get("merge-option", "overwrite")
    if merge not in MERGE_OPTIONS:
        raise error(400, "contacts:invalidMergeOption", f"Unknown merge-option {merge}")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise error(400, "contacts:badJson", "The request body is not valid JSON")
    fields, status = _validate(email, body)
    records = _consent_records(body.get("consentRecords"))
    with state().lock:
        contact = state().find(email)
        created = contact is None
        # a new contact without a status is subscribed (docs/reference/dotdigital.md#consent-values)
        if contact is None:
            contact = state().add_contact(email, status or "subscribed")
        fields = _merged(contact["fields"], fields, merge)
        extra: dict[str, Any] = {"channel": status} if status else {}
        if records:
            contact.setdefault("consent_records", []).extend(records)
            extra["consent_records"] = records
        state().apply(contact, "create" if created else "update", fields, **extra)
        return jsonify(_contact_json(contact)), 201 if created else 200


def _consent_records(records: Any) -> list[dict[str, Any]]:
    if records is None:
        return []
    if not isinstance(records, list) or not 1 <= len(records) <= 5:
        raise _invalid_records("consentRecords must hold 1 to 5 records")
    for record in records:
        if not isinstance(record, dict):
            raise _invalid_records("Each consent record must be an object")
        problem = _record_problem(record)
        if problem:
            raise _invalid_records(problem)
    return [dict(record) for record in records]


def _record_problem(record: dict[str, Any]) -> str | None:
    if not isinstance(record.get("text"), str) or not record["text"].strip():
        return "text is required"
    try:
        dt.datetime.fromisoformat(str(record.get("dateTimeConsented")).replace("Z", "+00:00"))
    except ValueError:
        return "dateTimeConsented must be an ISO 8601 date and time"
    if not str(record.get("url") or "").startswith(("http://", "https://")):
        return "url is required"
    for key in ("ipAddress", "userAgent"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key} must be a string"
    return None


def _invalid_records(description: str) -> PeerError:
    return error(400, "contacts:invalidConsentRecords", description)


def _validate(email: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    given = (body.get("identifiers") or {}).get("email")
    if given is not None and given.lower() != email.lower():
        raise error(400, "contacts:invalidId", "identifiers.email does not match the path")
    fields = body.get("dataFields") or {}
    known = {name.upper() for name in state().fields}
    unknown = sorted(name for name in fields if name.upper() not in known)
    # UNVERIFIED code; the meaning is v2's ERROR_DATAFIELD_NOTFOUND
    # (docs/reference/dotdigital.md#errors)
    if unknown:
        details = [{"item": name, "description": "Data field does not exist"} for name in unknown]
        description = "A data field must be created before you can set it"
        code = "contacts:dataFieldNotFound"
        raise PeerError(400, {"errorCode": code, "description": description, "details": details})
    status = ((body.get("channelProperties") or {}).get("email") or {}).get("status")
    if status is not None and status not in STATUSES:
        raise error(400, "contacts:invalidContacts", f"Invalid email channel status {status}")
    return fields, status


def _merged(current: dict[str, Any], fields: dict[str, Any], merge: str) -> dict[str, Any]:
    if merge == "overwrite-if-not-empty":
        return {name: value for name, value in fields.items() if value not in ("", None)}
    if merge == "overwrite-if-empty":
        return {name: value for name, value in fields.items() if current.get(name) in ("", None)}
    return dict(fields)


VENDOR = Vendor(
    name="Dotdigital",
    is_api=lambda path: path.startswith("/contacts/"),
    check_auth=_check_auth,
    auth_error=_auth_error,
    rate_limited=_rate_limited,
    server_error=_server_error,
)
ROUTES = (
    ("/contacts/v3/email/<path:email>", "GET", get_contact),
    ("/contacts/v3/email/<path:email>", "PATCH", patch_contact),
)


def create_emulator_app(
    *,
    username: str = USERNAME,
    password: str = PASSWORD,
    fields: tuple[str, ...] = FIELDS,
    any_contact: bool = False,
    faults: Faults | None = None,
) -> Flask:
    peer = PeerState(fields, any_contact=any_contact, credentials=(username, password))
    return create_peer_app(__name__, VENDOR, peer, faults, ROUTES)


def main(argv: list[str] | None = None) -> None:
    cli = parser("dotdigital-emulator", "Dotdigital v3 Contacts API emulator.", 8027, FIELDS)
    cli.add_argument("--username", default=USERNAME)
    cli.add_argument("--password", default=PASSWORD)
    args = cli.parse_args(argv)
    faults = engage_faults.from_arguments(cli, args)
    app = create_emulator_app(
        username=args.username,
        password=args.password,
        fields=tuple(field_list(args.fields)),
        any_contact=args.any_contact,
        faults=faults,
    )
    serve(app, args, "Dotdigital")


if __name__ == "__main__":
    main()
