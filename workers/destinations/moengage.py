"""MoEngage client (docs/reference/moengage.md). HTTP Basic with `<Workspace ID>:<Data API key>`
plus the header `MOE-APPKEY: <Workspace ID>` (docs/reference/moengage.md#base-url-auth-headers).

- channel_consent mode: `PUT /v1.0/opt-in-management/user-preferences` with
  `{"user_preferences": {"email_id" | "customer_id", "opt_in_status", "channel": "email"}}`
  (docs/reference/moengage.md#endpoints), one user per call (no bulk form,
  docs/reference/moengage.md#endpoints). `unknown` has no opt_in_status value
  (docs/reference/moengage.md#consent-values): nothing is sent, and the ledger records "not
  written". An `email_id` updates *every* user with that address, and with PII tokenization it finds
  nobody: the user's
  `customer_id` must be sent (https://www.moengage.com/docs/api/email-subscription/
  email-subscription-overview), and some workspaces answer 400 "customer_id is mandatory"
  (docs/reference/moengage.md#responses-and-errors). So when the `customer_id` template is
  configured it is sent *instead of* the address (the address would take priority,
  docs/reference/moengage.md#endpoints). The feature is Early Access: 403 when it is off
  (docs/reference/moengage.md#api-paths-and-early-access), which pauses the destination like any
  refused credentials.
- attribute mode: custom user attributes through Track User,
  `POST /v1/customer/{workspace_id}` with `update_existing_only: true` so that nobody is
  created (docs/reference/moengage.md#endpoints), keyed by the `customer_id` template (default: the
  address). It answers 200 "accepted and will be processed soon" before processing
  (docs/reference/moengage.md#endpoints, https://moengage.com/docs/api/user/track-user): an unknown
  customer_id is dropped without an error, so the write is recorded as `unverified`, never as
  delivered (docs/delivery/peers.md#moengage-customer_id-unverified-writes says how to check it).
  MoEngage creates custom attributes on first write, so attribute mode has no "missing field" error.

- erasure (erase_at_destination): Delete User, `POST /v1/customer/delete?app_id=<Workspace ID>`
  with `{"identity_type": "customer_id", "identity_value": ...}`, one user per call, same Basic
  auth; it answers 200 `{"status": "success", "message": "Your request has been accepted and
  will be processed soon."}` and deletes the user after a 24-hour buffer
  (https://www.moengage.com/docs/api/user/delete-users). No answer for an unknown user is
  documented (UNVERIFIED): a 200 says nothing about whether the user existed, so it is
  recorded as `accepted`, not `deleted`.

Errors (docs/reference/moengage.md#responses-and-errors): 400 `{"error": {"code", "message",
"details": {"target", "message"}}}`, where "No users found ..." (target "customer_id or email_id")
means the user does not exist; 401 bad key; 403 feature off; 429 rate limited (no body);
"customer_id is mandatory" means the config lacks `customer_id` (misconfigured); other Data APIs
answer
`{"status": "fail", "error": {"type": ...}}` with types like `RateLimitError`
(docs/reference/moengage.md#responses-and-errors).
"""

from __future__ import annotations

from typing import Any

import requests

from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from schemas.destinations import MOENGAGE, render_decision_template
from workers.delivery.outcomes import UNVERIFIED
from workers.destinations.errors import MisconfiguredError
from workers.destinations.toolkit import (
    CHANNEL_CONSENT,
    FieldNames,
    Http,
    Verdict,
    Written,
    error_for,
    json_body,
    plan_channel,
    probe_ok,
)
from workers.ratelimit.pace import Throttle

VENDOR = "MoEngage"
OPT_IN_PATH = "/v1.0/opt-in-management/user-preferences"
DELETE_PATH = "/v1/customer/delete"
NOT_FOUND_PHRASE = "no users found"
MANDATORY_PHRASE = "customer_id is mandatory"
UNVERIFIED_NOTE = (
    "Track User accepted the write for later processing; an unknown customer_id is dropped "
    "without an error"
)


def classify(status: int, body: str) -> Verdict:
    """The one place where a MoEngage HTTP answer is given a meaning."""
    if 200 <= status < 300:
        return Verdict.OK
    # bad key / header mismatch, or the feature is off
    # (docs/reference/moengage.md#responses-and-errors)
    if status in (401, 403):
        return Verdict.AUTH
    if status == 429 or _error_type(body) == "RateLimitError":
        return Verdict.RATE_LIMITED
    if status >= 500 or status == 408:
        return Verdict.TRANSIENT
    if status == 400 and NOT_FOUND_PHRASE in body.lower():
        return Verdict.NOT_FOUND
    if status == 400 and MANDATORY_PHRASE in body.lower():
        return Verdict.MISCONFIGURED  # no retry helps: configure `customer_id`
    return Verdict.REJECTED  # invalid input, extra key, inactive category, 413, 404, ...


def render_customer_id(template: str, write: ConsentWrite) -> str:
    """The `customer_id` template over the decision (schemas/destinations.py checks its
    names). A name without a value in this decision is a config problem, not a retry: it is
    dead-lettered as misconfigured, and a replay after the config is fixed writes it."""
    values = {"email": write.email, "source": write.source, "source_id": write.source_id}
    try:
        return render_decision_template(template, values)
    except KeyError as exc:
        needs = exc.args[0]
        message = f"{VENDOR} customer_id template needs {needs}, absent here"
        raise MisconfiguredError(message) from exc


def _error_type(body: str) -> str | None:
    parsed = json_body(body)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error.get("type") if isinstance(error, dict) else None


class MoEngageClient:
    def __init__(
        self,
        settings: DestinationSettings,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        options = settings.options
        self._base = settings.base_url.rstrip("/")
        self._app_id = options["app_id"]
        self._mode = options.get("mode", "attribute")
        self._fields = FieldNames.from_options(options)
        default_id = None if self._mode == CHANNEL_CONSENT else "{email}"
        self._customer_id: str | None = options.get("customer_id") or default_id
        self._http = Http(settings, VENDOR, session, throttle)
        self._http.session.auth = (self._app_id, options["api_key"])
        self._http.session.headers["MOE-APPKEY"] = self._app_id

    def write(self, write: ConsentWrite) -> int | Written:
        if self._mode != CHANNEL_CONSENT:
            status = self._send(*self._track_user(write))
            return Written(status, UNVERIFIED, UNVERIFIED_NOTE)
        plan = plan_channel(MOENGAGE, write.tracking_consent)
        if not plan.write:
            return Written(None, "not_written", plan.note)
        preferences = {**self._user(write), "opt_in_status": plan.status, "channel": "email"}
        status = self._send("PUT", OPT_IN_PATH, {"user_preferences": preferences})
        return Written(status, detail=plan.note)

    def _user(self, write: ConsentWrite) -> dict[str, str]:
        """Who the opt-in is for: the customer_id when configured, else the address."""
        if self._customer_id is None:
            return {"email_id": write.email}
        return {"customer_id": render_customer_id(self._customer_id, write)}

    def delete(self, customer_id: str) -> str:
        """Pass an erasure on through Delete User: `accepted` (MoEngage deletes later, and
        does not say whether the user existed), `absent` should it answer "No users found"
        (UNVERIFIED for this endpoint); other answers raise."""
        body = {"identity_type": "customer_id", "identity_value": customer_id}
        params = {"app_id": self._app_id}
        response = self._http.call(
            "POST", self._base + DELETE_PATH, DELETE_PATH, params=params, json=body
        )
        verdict = self._http.judge(classify(response.status_code, response.text), response)
        if verdict is Verdict.NOT_FOUND:
            return "absent"
        if verdict is not Verdict.OK:
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return "accepted"

    def probe(self) -> int:
        """An authenticated call that writes nothing: an empty (invalid) body. A 400 shows that
        the key works and the feature is on (the emulator checks in that order; UNVERIFIED
        for MoEngage itself)."""
        method, path, _body = self._track_user(None)
        body: dict[str, Any] = {"type": "customer"}
        if self._mode == CHANNEL_CONSENT:
            method, path, body = "PUT", OPT_IN_PATH, {"user_preferences": {}}
        response = self._http.call(method, self._base + path, path, json=body)
        verdict = self._http.judge(classify(response.status_code, response.text), response)
        if not probe_ok(verdict):
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code

    def _track_user(self, write: ConsentWrite | None) -> tuple[str, str, dict[str, Any]]:
        body: dict[str, Any] = {"type": "customer", "update_existing_only": True}
        if write is not None:
            body["customer_id"] = render_customer_id(self._customer_id or "{email}", write)
            body["attributes"] = self._fields.values(write)
        return "POST", f"/v1/customer/{self._app_id}", body

    def _send(self, method: str, path: str, body: dict[str, Any]) -> int:
        response = self._http.call(method, self._base + path, path, json=body)
        verdict = self._http.judge(classify(response.status_code, response.text), response)
        if verdict is not Verdict.OK:
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code
