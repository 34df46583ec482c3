"""Dotdigital client: the v3 Contacts API (destinations.md §3.2; v2 "with-consent-and-
preferences" is deprecated, §0.5).

- Write: `PATCH /contacts/v3/email/{email}?merge-option=overwrite` (200 updated, 201 created),
  HTTP Basic with the API user (§3.1), with `dataFields` (attribute mode) and, in
  channel_consent mode, `channelProperties.email.status` (§3.5).
- PATCH creates missing contacts, and a new contact without a status is *subscribed* (§3.5).
  Attribute mode must not opt anybody in, so it first looks the contact up
  (`GET /contacts/v3/email/{email}`: 404 `contacts:contactNotFound`, §3.2) and never creates
  one. channel_consent mode always sends a status, so its PATCH may create the contact.
- Errors: the v3 envelope `{"errorCode": "contacts:...", "description", "details"}` (§3.3);
  a data field that does not exist is v2's `ERROR_DATAFIELD_NOTFOUND` (§3.3); its v3 code is
  UNVERIFIED, so any error naming a data field counts. Rate limit: 429 with
  `X-RateLimit-Limit/Reset/Scope` (§3.4); the flat scheme's `ERROR_APIUSAGE_EXCEEDED` comes
  as a 400 per [D8] (UNVERIFIED).
- Bulk import (`PUT /contacts/v3/import`, §3.2) is not used: see README "Dotdigital".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from schemas.destinations import DOTDIGITAL
from service.config import DestinationSettings
from workers.destinations import (
    CHANNEL_CONSENT,
    FieldNames,
    Http,
    Verdict,
    Written,
    error_for,
    plan_channel,
    probe_ok,
)
from workers.engage import ConsentWrite, Throttle

VENDOR = "Dotdigital"
# A reserved address (RFC 2606 .invalid): the probe looks it up and expects 404 or 200.
PROBE_EMAIL = "consent-relay-probe@example.invalid"


def classify(status: int, body: str) -> Verdict:
    """The one place where a Dotdigital HTTP answer is given a meaning."""
    if 200 <= status < 300:
        return Verdict.OK
    text = body.lower()
    if status == 404:
        return Verdict.NOT_FOUND if "contactnotfound" in text else Verdict.REJECTED
    if status in (401, 403):  # v2: ERROR_APIUSER_INVALID (§3.3)
        return Verdict.AUTH
    if status == 429 or "error_apiusage_exceeded" in text:  # §3.4
        return Verdict.RATE_LIMITED
    if status >= 500 or status == 408:
        return Verdict.TRANSIENT
    if status == 400 and ("datafield" in text or "data field" in text):
        return Verdict.MISCONFIGURED
    return Verdict.REJECTED  # 400 contacts:invalidId/badJson/invalidContacts, 409, other 4xx


class DotdigitalClient:
    def __init__(
        self,
        settings: DestinationSettings,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._contacts = settings.base_url.rstrip("/") + "/contacts/v3/email/"
        self._mode = settings.options.get("mode", "attribute")
        self._fields = FieldNames.from_options(settings.options)
        self._http = Http(settings, VENDOR, session, throttle)
        self._http.session.auth = (settings.username, settings.password)

    def write(self, write: ConsentWrite) -> int | Written:
        """Write the fields (and the channel status); return the status or raise."""
        body: dict[str, Any] = {
            "identifiers": {"email": write.email},
            "dataFields": self._fields.values(write),
        }
        if self._mode != CHANNEL_CONSENT:
            self._ensure_exists(write.email)
            return self._patch(write.email, body)
        plan = plan_channel(DOTDIGITAL, write.tracking_consent)
        if not plan.write:
            return Written(None, "not_written", plan.note)
        body["channelProperties"] = {"email": {"status": plan.status}}
        return Written(self._patch(write.email, body), detail=plan.note)

    def probe(self) -> int:
        """Look up a reserved address: 404 or 200 means the credentials work."""
        response = self._call("GET", PROBE_EMAIL, None)
        verdict = self._judge(response)
        if not probe_ok(verdict):
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code

    def _ensure_exists(self, email: str) -> None:
        response = self._call("GET", email, None)
        verdict = self._judge(response)
        if verdict is not Verdict.OK:
            raise error_for(VENDOR, verdict, response.status_code, response.text)

    def _patch(self, email: str, body: dict[str, Any]) -> int:
        response = self._call("PATCH", email, body)
        verdict = self._judge(response)
        if verdict is not Verdict.OK:
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code

    def _call(self, method: str, email: str, body: dict[str, Any] | None) -> requests.Response:
        # The address is a path segment: "@" and "+" are percent-encoded.
        url = self._contacts + quote(email, safe="")
        params = {"merge-option": "overwrite"} if method == "PATCH" else None
        path = "/contacts/v3/email/{email}"
        return self._http.call(method, url, path, params=params, json=body)

    def _judge(self, response: requests.Response) -> Verdict:
        return self._http.judge(classify(response.status_code, response.text), response)
