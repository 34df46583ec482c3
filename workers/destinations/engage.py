"""Mapp Engage client: writes the tracking-consent attributes to a contact.

Vendor facts (docs/reference/engage.md, docs/reference/engage.md#tracking-consent-attributes): `POST
/api/rest/contact/update` with identifierType=EMAIL, HTTP Basic auth; a missing contact is a 400
`NO_SUCH_OBJECT`, so the contact is created with `POST /api/rest/contact/create`; create answers 400
"Such contact already exists" when another writer won the race; any 2xx is success; rate limiting is
a 500 "Database Access Limit Exceeded".
"""

from __future__ import annotations

import json
from typing import Any

import requests

from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite, Verdict
from relay.telemetry import tracing
from workers.destinations.errors import (
    AuthError,
    DeliveryError,
    NotVisibleError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from workers.destinations.reading import NO_CONTACT, Reading, shown
from workers.ratelimit.pace import NoLimit, Throttle


def classify(status: int, body: str) -> Verdict:
    """The one place where an Engage HTTP answer is given a meaning."""
    if 200 <= status < 300:
        return Verdict.OK
    error = _error_fields(body)
    if status == 400:
        if error.get("errorCode") == "NO_SUCH_OBJECT":
            return Verdict.CONTACT_MISSING
        if "already exist" in str(error.get("message", "")).lower():
            return Verdict.CONTACT_EXISTS
        return Verdict.REJECTED
    if status in (401, 403, 417):
        return Verdict.AUTH
    if status == 500 and "database access limit exceeded" in body.lower():
        return Verdict.RATE_LIMITED
    if status >= 500 or status in (408, 429):
        return Verdict.TRANSIENT
    # 404 (bad URL), 406, 415 and other 4xx mean our request or base_url is wrong.
    return Verdict.REJECTED


_ERRORS: dict[Verdict, type[DeliveryError]] = {
    Verdict.RATE_LIMITED: RateLimitedError,
    Verdict.AUTH: AuthError,
    Verdict.REJECTED: RejectedError,
    Verdict.TRANSIENT: TransientError,
    Verdict.CONTACT_MISSING: NotVisibleError,  # right after a create: visibility lag
    Verdict.CONTACT_EXISTS: TransientError,  # after an update said missing: still racing
}


def _error_fields(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class EngageClient:
    def __init__(
        self,
        settings: DestinationSettings,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ):
        self._name = settings.name
        self._base = settings.base_url.rstrip("/") + "/api/rest"
        self._throttle = throttle or NoLimit()
        self._timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)
        self._http = session or requests.Session()
        self._http.auth = (settings.username, settings.password)
        self._http.headers.update({"Accept": "application/json"})

    def write(self, write: ConsentWrite) -> int:
        """Write the three attributes; return the final HTTP status or raise a DeliveryError."""
        verdict, status, body = self._update(write)
        if verdict is Verdict.CONTACT_MISSING:
            verdict, status, body = self._create(write)
            if verdict is Verdict.CONTACT_EXISTS:
                verdict, status, body = self._update(write)
        return _result(verdict, status, body)

    def probe(self) -> int:
        """An authenticated call that writes nothing, to learn whether a paused destination
        takes our credentials again (`GET /system/getApiVersion`,
        docs/reference/engage.md#base-url-auth-headers)."""
        return _result(*self._call("GET", "/system/getApiVersion", None, None))

    def read(self, write: ConsentWrite) -> Reading:
        """Read the contact's `tracking_consent` back (`POST /contact/get`, a missing contact
        is a 400 NO_SUCH_OBJECT: docs/reference/engage.md#endpoints)."""
        body = {"type": "EMAIL", "value": write.email}
        verdict, status, text = self._post("/contact/get", None, body)
        if verdict is Verdict.CONTACT_MISSING:
            return Reading(NO_CONTACT, write.tracking_consent)
        _result(verdict, status, text)  # raises unless 2xx
        attributes = _error_fields(text).get("attributes") or []
        values = {
            item.get("name"): item.get("value") for item in attributes if isinstance(item, dict)
        }
        return Reading(shown(values.get("tracking_consent")), write.tracking_consent)

    def delete(self, address: str) -> str:
        """Pass an erasure on: `POST /contact/delete` with the identifier `{"type": "EMAIL",
        "value": ...}` (https://docs.mapp.com/apidocs/contactdelete, answers 200 or 400).
        Returns `deleted`, or `absent` when Engage holds no such contact (400 NO_SUCH_OBJECT,
        as contact/get answers: docs/reference/engage.md#endpoints); other answers raise."""
        body = {"type": "EMAIL", "value": address}
        verdict, status, text = self._post("/contact/delete", None, body)
        if verdict is Verdict.CONTACT_MISSING:
            return "absent"
        _result(verdict, status, text)  # raises unless 2xx
        return "deleted"

    def _update(self, write: ConsentWrite) -> tuple[Verdict, int, str]:
        # requests encodes "+" as %2B and "@" as %40, as the docs require
        # (docs/reference/engage.md#base-url-auth-headers).
        params = {"identifierType": "EMAIL", "unifiedIdentifierName": write.email}
        return self._post("/contact/update", params, _body(write))

    def _create(self, write: ConsentWrite) -> tuple[Verdict, int, str]:
        return self._post("/contact/create", None, _body(write))

    def _post(
        self, path: str, params: dict[str, str] | None, body: dict[str, Any]
    ) -> tuple[Verdict, int, str]:
        return self._call("POST", path, params, body)

    def _call(
        self, method: str, path: str, params: dict[str, str] | None, body: dict[str, Any] | None
    ) -> tuple[Verdict, int, str]:
        # every call counts toward Engage's ~10/s (docs/reference/engage.md#rate-limits)
        self._throttle.acquire()
        # The span names the path only: the address rides in the query string (update).
        with tracing.destination_call(self._name, method, "/api/rest" + path) as span:
            response = self._send(method, path, params, body)
            tracing.annotate(span, {"http.response.status_code": response.status_code})
        verdict = classify(response.status_code, response.text)
        if verdict is Verdict.RATE_LIMITED:
            self._throttle.slow_down()  # shared by every worker: all of them back off
        return verdict, response.status_code, response.text

    def _send(
        self, method: str, path: str, params: dict[str, str] | None, body: dict[str, Any] | None
    ) -> requests.Response:
        try:
            return self._http.request(
                method, self._base + path, params=params, json=body, timeout=self._timeout
            )
        except requests.Timeout as exc:
            raise TransientError(f"Engage timed out on {path}") from exc
        except requests.RequestException as exc:
            raise TransientError(f"Engage unreachable on {path}: {type(exc).__name__}") from exc


def _result(verdict: Verdict, status: int, body: str) -> int:
    if verdict is Verdict.OK:
        return status
    raise _ERRORS[verdict](f"Engage answered {verdict.value}", status=status, body=body)


def _body(write: ConsentWrite) -> dict[str, Any]:
    # All three attributes every time: contact/update may clear attributes left empty
    # (docs/reference/engage.md#update-may-clear-attributes), and a stale source_id from an older
    # decision would be false evidence.
    return {
        "emailAddress": write.email,
        "attributes": [
            {"name": "tracking_consent", "value": write.tracking_consent},
            {"name": "tracking_consent_source", "value": write.source},
            {"name": "tracking_consent_source_id", "value": write.source_id or ""},
        ],
    }
