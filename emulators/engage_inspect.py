"""The Engage emulator's inspection endpoints, without auth and outside the vendor's API: the
state (`GET /_emulator/state`), one contact, an out-of-band edit, and a reset. Tests read and
change the emulator through them (emulators/engage.py serves the API itself)."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request

from emulators.engage_faults import current_faults
from emulators.engage_state import ApiError, EngageState, invalid_parameter


def _state() -> EngageState:
    state: EngageState = current_app.extensions["engage_state"]
    return state


def inspect_state() -> Response:
    return jsonify({**_state().snapshot(), "faults": current_faults().snapshot()})


def inspect_contact(email: str) -> Response:
    contact = _state().find_contact(email)
    if contact is None:
        raise ApiError(404, "NO_SUCH_OBJECT", "No such contact", objectType="Contact")
    return jsonify(contact)


def edit_contact(email: str) -> Response:
    """POST /_emulator/contacts/<email>/edit `{"attributes": {"tracking_consent": ...}}`: an
    out-of-band edit, as a CSV import or an edit in Engage's UI would make it (no API call,
    no rate limit); the relay's read-back finds it (docs/delivery/verification.md)."""
    body = request.get_json(silent=True) or {}
    attributes = body.get("attributes")
    if not isinstance(attributes, dict):
        raise invalid_parameter("attributes", "attributes must be an object of names to values")
    edited = _state().edit_contact(email, {str(k): str(v) for k, v in attributes.items()})
    if edited is None:
        raise ApiError(404, "NO_SUCH_OBJECT", "No such contact", objectType="Contact")
    return jsonify(edited)


def reset_state() -> tuple[str, int]:
    _state().reset()
    current_faults().reset()
    return "", 204


def register_routes(app: Flask) -> None:
    app.add_url_rule("/_emulator/state", view_func=inspect_state, methods=["GET"])
    app.add_url_rule("/_emulator/contacts/<email>", view_func=inspect_contact, methods=["GET"])
    app.add_url_rule("/_emulator/contacts/<email>/edit", view_func=edit_contact, methods=["POST"])
    app.add_url_rule("/_emulator/reset", view_func=reset_state, methods=["POST"])
