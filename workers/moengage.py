"""MoEngage client (destinations.md §4). HTTP Basic with `<Workspace ID>:<Data API key>` plus
the header `MOE-APPKEY: <Workspace ID>` (§4.1).

- channel_consent mode: `PUT /v1.0/opt-in-management/user-preferences` with
  `{"user_preferences": {"email_id", "opt_in_status", "channel": "email"}}` (§4.2), one user
  per call (no bulk form, §4.2). `unknown` has no opt_in_status value (§4.5): nothing is
  sent, and the ledger records "not written". An `email_id` updates *every* user with that
  address (§4.2). The feature is Early Access: 403 when it is off (§0.6), which pauses the
  destination like any refused credentials.
- attribute mode: custom user attributes through Track User,
  `POST /v1/customer/{workspace_id}` with `update_existing_only: true` so that nobody is
  created (§4.2). Track User keys users by `customer_id`, so this mode assumes the workspace
  uses the e-mail address as its customer_id (an operator's choice; UNVERIFIED for any given
  workspace). It answers 200 and processes asynchronously (§4.2): an unknown user or a
  missing attribute cannot be seen in the answer. MoEngage creates custom attributes on
  first write, so attribute mode has no "missing field" error.

Errors (§4.3): 400 `{"error": {"code", "message", "details": {"target", "message"}}}`, where
"No users found ..." (target "customer_id or email_id") means the user does not exist; 401
bad key; 403 feature off; 429 rate limited (no body); other Data APIs answer
`{"status": "fail", "error": {"type": ...}}` with types like `RateLimitError` (§4.3).
"""

from __future__ import annotations

from typing import Any

import requests

from schemas.destinations import MOENGAGE
from service.config import DestinationSettings
from workers.destinations import (
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
from workers.engage import ConsentWrite, Throttle

VENDOR = "MoEngage"
OPT_IN_PATH = "/v1.0/opt-in-management/user-preferences"
NOT_FOUND_PHRASE = "no users found"


def classify(status: int, body: str) -> Verdict:
    """The one place where a MoEngage HTTP answer is given a meaning."""
    if 200 <= status < 300:
        return Verdict.OK
    if status in (401, 403):  # bad key / header mismatch, or the feature is off (§4.3)
        return Verdict.AUTH
    if status == 429 or _error_type(body) == "RateLimitError":
        return Verdict.RATE_LIMITED
    if status >= 500 or status == 408:
        return Verdict.TRANSIENT
    if status == 400 and NOT_FOUND_PHRASE in body.lower():
        return Verdict.NOT_FOUND
    return Verdict.REJECTED  # invalid input, extra key, inactive category, 413, 404, ...


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
        self._http = Http(settings, VENDOR, session, throttle)
        self._http.session.auth = (self._app_id, options["api_key"])
        self._http.session.headers["MOE-APPKEY"] = self._app_id

    def write(self, write: ConsentWrite) -> int | Written:
        if self._mode != CHANNEL_CONSENT:
            return self._send(*self._track_user(write))
        plan = plan_channel(MOENGAGE, write.tracking_consent)
        if not plan.write:
            return Written(None, "not_written", plan.note)
        preferences = {"email_id": write.email, "opt_in_status": plan.status, "channel": "email"}
        status = self._send("PUT", OPT_IN_PATH, {"user_preferences": preferences})
        return Written(status, detail=plan.note)

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
            body["customer_id"] = write.email
            body["attributes"] = self._fields.values(write)
        return "POST", f"/v1/customer/{self._app_id}", body

    def _send(self, method: str, path: str, body: dict[str, Any]) -> int:
        response = self._http.call(method, self._base + path, path, json=body)
        verdict = self._http.judge(classify(response.status_code, response.text), response)
        if verdict is not Verdict.OK:
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code
