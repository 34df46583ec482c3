"""What the peer emulators (Acoustic Connect, Dotdigital, MoEngage) share: an error that carries
a vendor's own body and headers, an in-memory contact store, the runtime faults of the Engage
emulator (emulators/engage_faults.py: rate limit, 5xx, hangs, latency, forced auth failure,
seed) rendered in each vendor's error shape, the inspection endpoints, the app factory and
the CLI. Tests and the demo use them in place of the vendors, over real HTTP.

Inspection (no auth): `GET /_emulator/state` (contacts with their write history, field
definitions, request log, faults), `POST /_emulator/reset`, `POST /_emulator/contacts`
(`{"email": ..., "channel": ..., "customer_id": ...}`: a contact that exists at the
vendor; `customer_id` for MoEngage, whose users otherwise have their address as id), `POST
/_emulator/fields` (`{"name": ...}`: define a custom field), `POST
/_emulator/contacts/<email>/edit` (an out-of-band edit: `{"fields": {...}, "channel": ...}`,
as an import or a UI edit makes it), `/_emulator/faults` (see
engage_faults.py). With `any_contact`, every address is treated as an existing contact.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from emulators import engage_faults
from emulators.engage_faults import Faults, current_faults
from emulators.engage_state import ApiError, utc_now_iso
from emulators.server import EmulatorServer

REQUEST_LOG_LIMIT = 10_000
DEFAULT_FIELDS = ("tracking_consent", "tracking_consent_source", "tracking_consent_source_id")

Check = Callable[[], None]


class PeerError(Exception):
    """An answer in the vendor's own shape: `body` None means an empty body."""

    def __init__(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> Response:
        response = Response(status=self.status) if self.body is None else jsonify(self.body)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


class PeerState:
    """Thread-safe contacts (keyed by lower-cased address), field definitions and request log.
    A contact is {"email", "fields": {...}, "channel": status or None, "history": [...]}."""

    def __init__(
        self,
        fields: Iterable[str],
        *,
        any_contact: bool = False,
        credentials: tuple[str, str] = ("", ""),
    ) -> None:
        self.lock = threading.RLock()
        self.credentials = credentials  # Basic user and password, or the API key
        self.initial_fields = tuple(fields)
        self.any_contact = any_contact
        self.minute_window: deque[float] = deque()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.fields = set(self.initial_fields)
            self.contacts: dict[str, dict[str, Any]] = {}
            self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
            self.requests_total = 0
            self.counters: dict[str, int] = {}
            self.minute_window.clear()

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def add_contact(self, email: str, channel: str | None = None) -> dict[str, Any]:
        with self.lock:
            key = email.lower()
            if key not in self.contacts:
                entry: dict[str, Any] = {
                    "email": email,
                    "fields": {},
                    "channel": channel,
                    "history": [],
                }
                self.contacts[key] = entry
            return self.contacts[key]

    def find(self, email: str) -> dict[str, Any] | None:
        """The stored contact; with `any_contact` an unknown one is added first."""
        with self.lock:
            contact = self.contacts.get(email.lower())
            if contact is None and self.any_contact:
                contact = self.add_contact(email)
            return contact

    def apply(
        self, contact: dict[str, Any], call: str, fields: dict[str, Any], **extra: Any
    ) -> None:
        with self.lock:
            contact["fields"].update(fields)
            if "channel" in extra:
                contact["channel"] = extra["channel"]
            entry = {"call": call, "fields": dict(fields), **extra, "at": utc_now_iso()}
            contact["history"].append(entry)

    def record_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)
            self.requests_total += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "contacts": copy.deepcopy(self.contacts),
                "fields": sorted(self.fields),
                "requests": copy.deepcopy(list(self.requests)),
                "requests_total": self.requests_total,
                "counters": dict(self.counters),
            }


@dataclass(frozen=True)
class Vendor:
    """How one vendor looks: its API paths, its auth check, and its error bodies."""

    name: str
    is_api: Callable[[str], bool]
    check_auth: Check
    auth_error: Callable[[int], PeerError]  # forced 401/403 (417 is Engage's: shown as 403)
    rate_limited: Callable[[], PeerError]
    server_error: Callable[[int], PeerError]
    extra_checks: tuple[Check, ...] = ()


def basic_auth_matches() -> bool:
    """The request's HTTP Basic credentials are the emulator's (constant-time)."""
    auth = request.authorization
    user, password = peer_state().credentials
    if auth is None or auth.type != "basic":
        return False
    user_ok = hmac.compare_digest((auth.username or "").encode(), user.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), password.encode())
    return user_ok and password_ok


def peer_state() -> PeerState:
    state: PeerState = current_app.extensions["peer_state"]
    return state


def _vendor() -> Vendor:
    vendor: Vendor = current_app.extensions["peer_vendor"]
    return vendor


def _check_faults_before_auth() -> None:
    faults, vendor = current_faults(), _vendor()
    if not faults.arrive(time.monotonic()):  # first, before auth: every call counts
        raise vendor.rate_limited()
    delay = faults.latency_seconds()
    if delay > 0:
        time.sleep(delay)
    if faults.hang():  # unprocessed, like Engage's: the client times out first
        raise vendor.server_error(504)
    forced = faults.forced_auth_status()
    if forced is not None:
        raise vendor.auth_error(401 if forced == 401 else 403)


def _preflight() -> None:
    vendor = _vendor()
    if not vendor.is_api(request.path):
        return
    _check_faults_before_auth()
    for check in vendor.extra_checks:
        check()
    vendor.check_auth()
    if request.routing_exception is not None:
        raise request.routing_exception
    status = current_faults().draw_error()
    if status is not None:
        raise vendor.server_error(status)


def _record(response: Response) -> Response:
    if _vendor().is_api(request.path):
        entry = {"method": request.method, "path": request.path, "status": response.status_code}
        peer_state().record_request({**entry, "at": utc_now_iso()})
    return response


def _inspect() -> Response:
    return jsonify({**peer_state().snapshot(), "faults": current_faults().snapshot()})


def _reset() -> tuple[str, int]:
    peer_state().reset()
    current_faults().reset()
    return "", 204


def _seed_contact() -> tuple[Response, int]:
    body = request.get_json(silent=True) or {}
    with peer_state().lock:
        contact = peer_state().add_contact(str(body["email"]), body.get("channel"))
        if body.get("customer_id"):  # MoEngage: the workspace's own user id
            contact["customer_id"] = str(body["customer_id"])
    return jsonify(contact), 201


def _edit_contact(email: str) -> Response:
    """An out-of-band edit, as an import or an edit in the vendor's UI would make it: no API
    call, no rate limit, recorded in the contact's history as `edit`. Body: `{"fields":
    {...}, "channel": ...}` (either)."""
    body = request.get_json(silent=True) or {}
    with peer_state().lock:
        contact = peer_state().contacts.get(email.lower())
        if contact is None:
            raise PeerError(404, {"error": "no such contact"})
        extra = {"channel": body["channel"]} if "channel" in body else {}
        peer_state().apply(contact, "edit", dict(body.get("fields") or {}), **extra)
        return jsonify(contact)


def _define_field() -> tuple[str, int]:
    body = request.get_json(silent=True) or {}
    with peer_state().lock:
        peer_state().fields.add(str(body["name"]))
    return "", 204


def create_peer_app(
    import_name: str,
    vendor: Vendor,
    state: PeerState,
    faults: Faults | None,
    routes: Iterable[tuple[str, str, Callable[..., Any]]],
) -> Flask:
    app = Flask(import_name)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions.update(peer_state=state, peer_vendor=vendor)
    app.extensions["engage_faults"] = faults if faults is not None else Faults()
    app.extensions["emulator_on_stop"] = app.extensions["engage_faults"].release_hangs
    for rule, method, view in routes:
        app.add_url_rule(rule, f"{method} {rule}", view, methods=[method])
    app.add_url_rule("/_emulator/state", view_func=_inspect, methods=["GET"])
    app.add_url_rule("/_emulator/reset", view_func=_reset, methods=["POST"])
    app.add_url_rule("/_emulator/contacts", view_func=_seed_contact, methods=["POST"])
    app.add_url_rule("/_emulator/fields", view_func=_define_field, methods=["POST"])
    app.add_url_rule(
        "/_emulator/contacts/<path:email>/edit", view_func=_edit_contact, methods=["POST"]
    )
    engage_faults.register_routes(app)
    app.before_request(_preflight)
    app.after_request(_record)
    app.register_error_handler(PeerError, lambda error: error.response())
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ApiError, lambda error: (jsonify(error.body()), error.status))
    return app


def _http_error(error: HTTPException) -> Response:
    """Unknown paths and methods; the /_emulator/faults control errors keep Engage's shape."""
    status = error.code or 500
    response = jsonify({"error": error.name, "status": status})
    response.status_code = status
    return response


def parser(
    prog: str, description: str, port: int, fields: Iterable[str]
) -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog=prog, description=description)
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=port)
    cli.add_argument(
        "--fields",
        default=",".join(fields),
        help="comma-separated custom field definitions (default: %(default)s)",
    )
    cli.add_argument(
        "--any-contact",
        action="store_true",
        help="treat every address as an existing contact (the demo)",
    )
    engage_faults.add_arguments(cli)
    return cli


def field_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def serve(app: Flask, args: argparse.Namespace, label: str) -> None:
    """Serve an emulator from its command line until interrupted (the three peers' `main`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = EmulatorServer(app, args.host, args.port)
    logging.getLogger(app.import_name).info("%s emulator listening on %s", label, server.url)
    server.serve_forever()
