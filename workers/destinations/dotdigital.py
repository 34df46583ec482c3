"""Dotdigital client: the v3 Contacts API (docs/reference/dotdigital.md#endpoints; v2
"with-consent-and- preferences" is deprecated, docs/reference/dotdigital.md#api-versions).

- Write: `PATCH /contacts/v3/email/{email}?merge-option=overwrite` (200 updated, 201 created),
  HTTP Basic with the API user (docs/reference/dotdigital.md#base-url-auth-headers), with
  `dataFields` (attribute mode) and, in channel_consent mode, `channelProperties.email.status`
  (docs/reference/dotdigital.md#consent-values).
- PATCH creates missing contacts, and a new contact without a status is *subscribed*
  (docs/reference/dotdigital.md#consent-values). Attribute mode must not opt anybody in, so it first
  looks the contact up (`GET /contacts/v3/email/{email}`: 404 `contacts:contactNotFound`,
  docs/reference/dotdigital.md#endpoints) and never creates one. channel_consent mode always sends a
  status, so its PATCH may create the contact.
- Errors: the v3 envelope `{"errorCode": "contacts:...", "description", "details"}`
  (docs/reference/dotdigital.md#errors); a data field that does not exist is v2's
  `ERROR_DATAFIELD_NOTFOUND` (docs/reference/dotdigital.md#errors); its v3 code is UNVERIFIED, so
  any error naming a data field counts. Rate limit: 429 with
  `X-RateLimit-Limit/Reset/Scope` (docs/reference/dotdigital.md#rate-limits); the flat scheme's
  `ERROR_APIUSAGE_EXCEEDED` comes as a 400 per [D8] (UNVERIFIED).
- Consent records: v3 takes `consentRecords` (1 to 5 per request, each with the consent
  text, the ISO 8601 UTC time, the URL, the IP address and the user agent) on PATCH
  (https://developer.dotdigital.com/reference/importcontact), the v3 form of v2's
  ConsentInsight. With `consent_text` and `consent_url` configured, each `granted` decision
  carries one: the configured text and URL, the decision's `occurred_at`. The relay does not
  capture the IP address or user agent, so they are left out: the reference marks them
  required, the official SDK's ConsentRecord model allows null (dotmailer/dotdigital-php
  src/V3/Models/Contact/ConsentRecord.php); whether Dotdigital accepts a record without them
  is UNVERIFIED. Whether a PATCH adds to the contact's records or replaces them is UNVERIFIED.
- Bulk import (`PUT /contacts/v3/import`, docs/reference/dotdigital.md#endpoints) is not used: see
  docs/delivery/batching.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import requests

from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from schemas.destinations import DOTDIGITAL
from workers.destinations.reading import NO_CONTACT, Reading, shown
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

VENDOR = "Dotdigital"
# A reserved address (RFC 2606 .invalid): the probe looks it up and expects 404 or 200.
PROBE_EMAIL = "consent-relay-probe@example.invalid"
RECORD_NOTE = "consent record written (no IP address or user agent: not captured)"


def classify(status: int, body: str) -> Verdict:
    """The one place where a Dotdigital HTTP answer is given a meaning."""
    if 200 <= status < 300:
        return Verdict.OK
    text = body.lower()
    if status == 404:
        return Verdict.NOT_FOUND if "contactnotfound" in text else Verdict.REJECTED
    if status in (401, 403):  # v2: ERROR_APIUSER_INVALID (docs/reference/dotdigital.md#errors)
        return Verdict.AUTH
    # docs/reference/dotdigital.md#rate-limits
    if status == 429 or "error_apiusage_exceeded" in text:
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
        self._consent_text = settings.options.get("consent_text")
        self._consent_url = settings.options.get("consent_url")
        self._http = Http(settings, VENDOR, session, throttle)
        self._http.session.auth = (settings.username, settings.password)

    @property
    def calls_per_write(self) -> int:
        """A look-up then the update in attribute mode; one PATCH in channel_consent mode
        (workers/ratelimit.py reserves them together)."""
        return 1 if self._mode == CHANNEL_CONSENT else 2

    def write(self, write: ConsentWrite) -> int | Written:
        """Write the fields (the channel status, a consent record); return the status or
        raise."""
        body: dict[str, Any] = {
            "identifiers": {"email": write.email},
            "dataFields": self._fields.values(write),
        }
        record = self._consent_record(write)
        if record is not None:
            body["consentRecords"] = [record]
        notes = [RECORD_NOTE] if record is not None else []
        if self._mode != CHANNEL_CONSENT:
            self._ensure_exists(write.email)
            status = self._patch(write.email, body)
            return Written(status, detail=RECORD_NOTE) if notes else status
        plan = plan_channel(DOTDIGITAL, write.tracking_consent)
        if not plan.write:
            return Written(None, "not_written", plan.note)
        body["channelProperties"] = {"email": {"status": plan.status}}
        return Written(self._patch(write.email, body), detail="; ".join([plan.note, *notes]))

    def _consent_record(self, write: ConsentWrite) -> dict[str, str] | None:
        """A record of the consent given, from the decision's evidence; only a grant is
        consent, and only when the operator configured the wording and the page."""
        if write.tracking_consent != "granted" or not self._consent_text:
            return None
        if write.occurred_at is None or not self._consent_url:
            return None
        when = write.occurred_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"text": self._consent_text, "dateTimeConsented": when, "url": self._consent_url}

    def probe(self) -> int:
        """Look up a reserved address: 404 or 200 means the credentials work."""
        response = self._call("GET", PROBE_EMAIL, None)
        verdict = self._judge(response)
        if not probe_ok(verdict):
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code

    def read(self, write: ConsentWrite) -> Reading | None:
        """Read the contact back (`GET /contacts/v3/email/{email}`, 404 when missing:
        docs/reference/dotdigital.md#endpoints): the consent data field in attribute mode,
        the e-mail channel status in channel_consent mode (None when the decision has no
        status there, docs/reference/dotdigital.md#consent-values)."""
        expected = write.tracking_consent
        if self._mode == CHANNEL_CONSENT:
            plan = plan_channel(DOTDIGITAL, write.tracking_consent)
            if not plan.write or plan.status is None:
                return None
            expected = plan.status
        response = self._call("GET", write.email, None)
        verdict = self._judge(response)
        if verdict is Verdict.NOT_FOUND:
            return Reading(NO_CONTACT, expected)
        if verdict is not Verdict.OK:
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        contact = json_body(response.text) or {}
        if self._mode == CHANNEL_CONSENT:
            channel = ((contact.get("channelProperties") or {}).get("email") or {}).get("status")
            return Reading(shown(channel), expected)
        data = {str(k).upper(): v for k, v in (contact.get("dataFields") or {}).items()}
        return Reading(shown(data.get(self._fields.consent.upper())), expected)

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
