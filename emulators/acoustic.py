"""Acoustic Connect GraphQL emulator (docs/reference/acoustic.md,
docs/reference/acoustic.md#operations).

Every call is `POST /` with `x-api-key` (docs/reference/acoustic.md#base-url-auth-headers) and
`{"query": ..., "variables": ...}`; the query is parsed with graphql-core, so a syntax error answers
like a GraphQL server.

- `mutation { updateContacts(dataSetId, updateContactInputs: [{key | addressable, to:
  {attributes, consent}}]) { modifiedCount } }` (docs/reference/acoustic.md#operations). Contacts
  are found by the addressable e-mail attribute (`addressable: [{field: "Email", eq: ...}]`) or by
  `key` (the stored address, here). Attribute names are case-sensitive and must be defined in the
  audience; an unknown one fails the whole mutation with code `ATTRIBUTE_NOT_FOUND`
  (UNVERIFIED: no documented code). A contact not in the audience is the documented
  `CONTACT_NOT_FOUND_BY_KEY` (docs/reference/acoustic.md#errors); the others of the batch are
  applied and counted in
  `modifiedCount`. Consent channels: EMAIL or SMS (else INVALID_CHANNEL_TYPE), status
  OPT_IN, OPT_OUT, OPT_IN_UNVERIFIED or null (docs/reference/acoustic.md#operations).
  `dataSetId` is optional, as in Acoustic's current reference
  (https://developer.goacoustic.com/acoustic-connect/reference/update-contacts-, no
  dataSetId in any example); a wrong one answers `DATA_SET_NOT_FOUND` (code UNVERIFIED).
  Each write's history entry records the dataSetId it came with (None: left out). Whether
  `modifiedCount` counts a contact the write left unchanged is UNVERIFIED
  (docs/reference/acoustic.md#errors): it does here unless `count_unchanged=False`.
- `query { dataSets { nodes { dataSetId } } }` lists the audience
  (docs/reference/acoustic.md#operations).
- Errors come as HTTP 200 with `{"errors": [{"message", "extensions": {"code"}}]}`; auth
  failures as 401 and rate limiting as 429 with a code: all UNVERIFIED
  (docs/reference/acoustic.md#errors, docs/reference/acoustic.md#rate-limits).

Run it with ``acoustic-emulator --port 8026 [--any-contact] [--rate-limit 10 ...]``.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from graphql import GraphQLError, OperationDefinitionNode, parse
from graphql.language import FieldNode
from graphql.utilities import value_from_ast_untyped

from emulators import engage_faults
from emulators.engage_faults import Faults
from emulators.peer import (
    DEFAULT_FIELDS,
    PeerError,
    PeerState,
    Vendor,
    create_peer_app,
    field_list,
    parser,
    serve,
)
from emulators.peer import peer_state as state

API_KEY = "acoustic-demo-api-key"
DATA_SET_ID = "4fe4136f-c007-44a3-b38f-922200000000"
FIELDS = ("Email", *DEFAULT_FIELDS)
CHANNELS = ("EMAIL", "SMS")
STATUSES = ("OPT_IN", "OPT_OUT", "OPT_IN_UNVERIFIED", None)
NOT_FOUND_MESSAGE = "A contact with the specified key is not available in the audience."


def gql_error(code: str, message: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code}}


def failure(status: int, code: str, message: str) -> PeerError:
    return PeerError(status, {"errors": [gql_error(code, message)], "data": None})


def _check_auth() -> None:
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), state().credentials[1].encode()):
        raise failure(401, "UNAUTHENTICATED", "Missing or invalid x-api-key")


def graphql_endpoint() -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise failure(400, "BAD_REQUEST", "Body must be JSON with a query string")
    try:
        document = parse(body["query"])
    except GraphQLError as exc:
        raise failure(400, "GRAPHQL_PARSE_FAILED", exc.message) from exc
    operation = next(
        (d for d in document.definitions if isinstance(d, OperationDefinitionNode)), None
    )
    fields = (
        [s for s in operation.selection_set.selections if isinstance(s, FieldNode)]
        if operation
        else []
    )
    if not fields or fields[0].name.value not in ("updateContacts", "dataSets"):
        raise failure(400, "GRAPHQL_VALIDATION_FAILED", "Unknown or missing operation")
    if fields[0].name.value == "dataSets":
        nodes = [{"dataSetId": state().credentials[0], "name": "Emulated audience"}]
        return jsonify({"data": {"dataSets": {"nodes": nodes}}})
    variables = body.get("variables") or {}
    arguments = {
        a.name.value: value_from_ast_untyped(a.value, variables) for a in fields[0].arguments or ()
    }
    return jsonify(update_contacts(arguments))


def update_contacts(arguments: dict[str, Any]) -> dict[str, Any]:
    data_set = arguments.get("dataSetId")
    if data_set is not None and data_set != state().credentials[0]:
        return {"errors": [gql_error("DATA_SET_NOT_FOUND", "No such audience")], "data": None}
    inputs = arguments.get("updateContactInputs") or []
    problems = [problem for entry in inputs for problem in _problems(entry)]
    if problems:  # invalid input fails the whole mutation; nothing is applied
        return {"errors": problems, "data": None}
    errors, modified = [], 0
    with state().lock:
        for entry in inputs:
            contact = state().find(str(_address(entry)))
            if contact is None:
                errors.append(gql_error("CONTACT_NOT_FOUND_BY_KEY", NOT_FOUND_MESSAGE))
                continue
            changed = _apply(contact, entry["to"], data_set)
            if changed or current_app.extensions["acoustic_count_unchanged"]:
                modified += 1
    result: dict[str, Any] = {"data": {"updateContacts": {"modifiedCount": modified}}}
    return {**result, "errors": errors} if errors else result


def _problems(entry: Any) -> list[dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("to"), dict) or not _address(entry):
        return [gql_error("BAD_USER_INPUT", "Each input needs key or addressable, and to")]
    to = entry["to"]
    names = [item.get("name") for item in to.get("attributes") or []]
    wanted = [field["field"] for field in entry.get("addressable") or []]
    problems = [
        gql_error("ATTRIBUTE_NOT_FOUND", f"Attribute {name!r} is not defined in the audience")
        for name in [*names, *wanted]
        if name not in state().fields
    ]
    for channel in _channels(to):
        if channel.get("channel") not in CHANNELS:
            problems.append(gql_error("INVALID_CHANNEL_TYPE", "Channel must be EMAIL or SMS"))
        elif channel.get("status", "") not in STATUSES:
            problems.append(gql_error("BAD_USER_INPUT", "Invalid consent status"))
    return problems


def _channels(to: dict[str, Any]) -> list[dict[str, Any]]:
    channels = (to.get("consent") or {}).get("channels") or []
    return [channels] if isinstance(channels, dict) else list(channels)


def _address(entry: dict[str, Any]) -> str | None:
    if isinstance(entry.get("key"), str):
        return str(entry["key"])
    for item in entry.get("addressable") or []:
        if isinstance(item, dict) and isinstance(item.get("eq"), str):
            return str(item["eq"])
    return None


def _apply(contact: dict[str, Any], to: dict[str, Any], data_set: Any) -> bool:
    """Apply one input; whether it changed anything."""
    fields = {item["name"]: item.get("value") for item in to.get("attributes") or []}
    email = [c for c in _channels(to) if c.get("channel") == "EMAIL"]
    extra = {"channel": email[-1].get("status")} if email else {}
    changed = any(contact["fields"].get(k) != v for k, v in fields.items())
    changed = changed or ("channel" in extra and extra["channel"] != contact["channel"])
    state().apply(contact, "updateContacts", fields, data_set_id=data_set, **extra)
    return changed


VENDOR = Vendor(
    name="Acoustic Connect",
    is_api=lambda path: path == "/",
    check_auth=_check_auth,
    auth_error=lambda status: failure(status, "UNAUTHENTICATED", "Missing or invalid x-api-key"),
    rate_limited=lambda: failure(429, "TOO_MANY_REQUESTS", "Too many requests"),
    server_error=lambda status: failure(status, "INTERNAL_SERVER_ERROR", "Server error"),
)


def create_emulator_app(
    *,
    api_key: str = API_KEY,
    data_set_id: str = DATA_SET_ID,
    fields: tuple[str, ...] = FIELDS,
    any_contact: bool = False,
    count_unchanged: bool = True,
    faults: Faults | None = None,
) -> Flask:
    peer = PeerState(fields, any_contact=any_contact, credentials=(data_set_id, api_key))
    app = create_peer_app(__name__, VENDOR, peer, faults, (("/", "POST", graphql_endpoint),))
    app.extensions["acoustic_count_unchanged"] = count_unchanged
    return app


def main(argv: list[str] | None = None) -> None:
    cli = parser("acoustic-emulator", "Acoustic Connect GraphQL emulator.", 8026, FIELDS)
    cli.add_argument("--api-key", default=API_KEY)
    cli.add_argument("--data-set-id", default=DATA_SET_ID)
    args = cli.parse_args(argv)
    faults = engage_faults.from_arguments(cli, args)
    app = create_emulator_app(
        api_key=args.api_key,
        data_set_id=args.data_set_id,
        fields=tuple(field_list(args.fields)),
        any_contact=args.any_contact,
        faults=faults,
    )
    serve(app, args, "Acoustic Connect")


if __name__ == "__main__":
    main()
