"""Acoustic Connect client: the GraphQL `updateContacts` mutation (docs/reference/acoustic.md,
docs/reference/acoustic.md#operations). Every call is a POST to the region's host with the header
`x-api-key` (docs/reference/acoustic.md#base-url-auth-headers).

- `dataSetId` (config `data_set_id`) is sent only when configured. The consent page lists it
  as Required (https://developer.goacoustic.com/acoustic-connect/reference/update-consent-
  preferences), but Acoustic's current "Update contacts" reference
  (https://developer.goacoustic.com/acoustic-connect/reference/update-contacts-) shows
  updateContacts without it in every example, so config validation does not require it;
  which one holds for a given subscription is UNVERIFIED
  (docs/delivery/peers.md#acoustic-connect-datasetid).
- Contacts are addressed by e-mail, `addressable: [{field: "Email", eq: ...}]`, in place of
  a contact key (docs/reference/acoustic.md#operations). The relay never creates a contact: a
  contact added to an audience is opted in to e-mail implicitly
  (docs/reference/acoustic.md#implicit-opt-in). A missing one is `CONTACT_NOT_FOUND_BY_KEY`
  (docs/reference/acoustic.md#errors).
- attribute mode writes `to.attributes` (the attributes must exist in the audience,
  docs/reference/mapping.md#canonical-states-on-each-platform design note); channel_consent mode
  adds `to.consent.channels` with the EMAIL status (docs/reference/acoustic.md#consent-values).
- `updateContactInputs` is an array (docs/reference/acoustic.md#operations): `write_many` sends many
  contacts in one mutation. The maximum per call is UNVERIFIED (config `batch_size`, default 50).
- Errors: the GraphQL envelope `{"errors": [{"message", "extensions": {"code"}}]}`; where the
  code sits and which HTTP status comes with it are UNVERIFIED (docs/reference/acoustic.md#errors),
  so both the message and `extensions.code` are read, on any status. No rate limit is published
  (docs/reference/acoustic.md#rate-limits): 429 or a rate-limit code is taken as rate limited.
- The query is sent with inline literals, exactly in the documented shape (the input type
  names that GraphQL variables would need are not documented).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import requests

from relay.config.settings import DestinationSettings
from relay.domain import ConsentWrite
from schemas.destinations import ACOUSTIC
from workers.delivery.outcomes import UNVERIFIED
from workers.destinations.errors import BatchPartialError, DeliveryError
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

VENDOR = "Acoustic Connect"
NOT_FOUND_CODE = "CONTACT_NOT_FOUND_BY_KEY"  # docs/reference/acoustic.md#errors, documented
# The audience lacks what we name: a channel or consent group (codes from
# docs/reference/acoustic.md#operations), or an attribute, or there is no such audience
# (`data_set_id`). The unknown-attribute and unknown-audience codes are not documented (UNVERIFIED):
# ATTRIBUTE_NOT_FOUND and DATA_SET_NOT_FOUND are what the emulator answers.
MISCONFIGURED_CODES = (
    "ATTRIBUTE_NOT_FOUND",
    "CHANNEL_NOT_DEFINED",
    "CONSENT_GROUP_NOT_FOUND",
    "DATA_SET_NOT_FOUND",
)
AUTH_CODES = ("UNAUTHENTICATED", "UNAUTHORIZED", "FORBIDDEN")
RATE_CODES = ("TOO_MANY_REQUESTS", "RATE_LIMITED", "THROTTLED")
# docs/reference/acoustic.md#operations: lists the audiences
PROBE_QUERY = "query { dataSets { nodes { dataSetId } } }"

WriteOutcome = int | Written | DeliveryError


class Enum(str):
    """A GraphQL enum value: printed bare, not quoted."""


def literal(value: Any) -> str:
    """A GraphQL input literal. JSON's string escapes are valid GraphQL string escapes."""
    if isinstance(value, Enum):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    return json.dumps(value)


def _codes(parsed: Any) -> list[str]:
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    codes = []
    for error in errors if isinstance(errors, list) else []:
        error = error if isinstance(error, dict) else {}
        extensions = error.get("extensions")
        code = extensions.get("code") if isinstance(extensions, dict) else None
        codes.append(f"{code or ''} {error.get('message') or ''}".upper())
    return codes


def classify(status: int, body: str) -> Verdict:
    """The one place where an Acoustic Connect answer is given a meaning."""
    parsed = json_body(body)
    codes = _codes(parsed)
    if status in (401, 403) or any(c in t for t in codes for c in AUTH_CODES):
        return Verdict.AUTH
    if status == 429 or any(c in t for t in codes for c in RATE_CODES):
        return Verdict.RATE_LIMITED
    if status >= 500 or status == 408:
        return Verdict.TRANSIENT
    if any(c in t for t in codes for c in MISCONFIGURED_CODES):
        return Verdict.MISCONFIGURED
    if codes and all(NOT_FOUND_CODE in t for t in codes):
        return Verdict.NOT_FOUND
    if codes or not 200 <= status < 300:
        return Verdict.REJECTED
    has_data = isinstance(parsed, dict) and parsed.get("data") is not None
    return Verdict.OK if has_data else Verdict.TRANSIENT  # e.g. a proxy's HTML page


def modified_count(body: str) -> int | None:
    parsed = json_body(body)
    data = parsed.get("data") if isinstance(parsed, dict) else None
    result = data.get("updateContacts") if isinstance(data, dict) else None
    count = result.get("modifiedCount") if isinstance(result, dict) else None
    return count if isinstance(count, int) else None


class AcousticClient:
    def __init__(
        self,
        settings: DestinationSettings,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        options = settings.options
        self._url = settings.base_url
        self._mode = options.get("mode", "attribute")
        self._fields = FieldNames.from_options(options)
        self._email_attribute = options.get("email_attribute", "Email")
        self._data_set_id = options.get("data_set_id")
        self.batch_size: int = options.get("batch_size", 1)
        self._http = Http(settings, VENDOR, session, throttle)
        self._http.session.headers["x-api-key"] = options["api_key"]

    def write(self, write: ConsentWrite) -> int | Written:
        [outcome] = self.write_many([write])
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    def write_many(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        """One mutation for every write that has a value; one outcome per write, in order.
        Raises only what applies to the whole call (throttled, timeouts)."""
        inputs: list[tuple[int, dict[str, Any]]] = []
        notes: list[str | None] = []
        outcomes: list[WriteOutcome | None] = [None] * len(writes)
        for index, write in enumerate(writes):
            entry, note = self._input(write)
            if entry is None:
                outcomes[index] = Written(None, "not_written", note)
            else:
                inputs.append((index, entry))
                notes.append(note)
        if inputs:
            results = self._mutate([entry for _, entry in inputs], notes)
            for (index, _), result in zip(inputs, results, strict=True):
                outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    def probe(self) -> int:
        response = self._post(PROBE_QUERY)
        verdict = self._http.judge(classify(response.status_code, response.text), response)
        if not probe_ok(verdict):
            raise error_for(VENDOR, verdict, response.status_code, response.text)
        return response.status_code

    def _input(self, write: ConsentWrite) -> tuple[dict[str, Any] | None, str | None]:
        values = self._fields.values(write)
        to: dict[str, Any] = {
            "attributes": [{"name": name, "value": value} for name, value in values.items()]
        }
        note = None
        if self._mode == CHANNEL_CONSENT:
            plan = plan_channel(ACOUSTIC, write.tracking_consent)
            if not plan.write:
                return None, plan.note
            status = None if plan.status is None else Enum(plan.status)
            to["consent"] = {"channels": [{"channel": Enum("EMAIL"), "status": status}]}
            note = plan.note
        addressable = [{"field": self._email_attribute, "eq": write.email}]
        return {"addressable": addressable, "to": to}, note

    def _mutate(self, inputs: list[dict[str, Any]], notes: list[str | None]) -> list[WriteOutcome]:
        arguments = {"updateContactInputs": inputs}
        if self._data_set_id:
            arguments = {"dataSetId": self._data_set_id, **arguments}
        args = ", ".join(f"{key}: {literal(value)}" for key, value in arguments.items())
        response = self._post(f"mutation {{ updateContacts({args}) {{ modifiedCount }} }}")
        verdict = self._http.judge(classify(response.status_code, response.text), response)
        status, body = response.status_code, response.text
        if verdict is Verdict.OK:
            detail = _count_note(modified_count(body), len(inputs))
            return [_written(status, note, detail) for note in notes]
        if verdict is Verdict.NOT_FOUND and len(inputs) > 1:
            # Which contacts were missing is not reliably in the answer (UNVERIFIED,
            # docs/reference/acoustic.md#errors): each one is written again on its own.
            error: DeliveryError = BatchPartialError(
                f"{VENDOR} batch of {len(inputs)} partly applied", status=status, body=body
            )
            return [error] * len(inputs)
        return [error_for(VENDOR, verdict, status, body)] * len(inputs)

    def _post(self, query: str) -> requests.Response:
        return self._http.call("POST", self._url, "/ (GraphQL)", json={"query": query})


def _count_note(count: int | None, sent: int) -> str | None:
    if count is None or count >= sent:
        return None
    # docs/reference/acoustic.md#errors: a smaller modifiedCount "may" mean a missing contact
    # (UNVERIFIED); with no error it may also be a write that changed nothing. Not retried, but the
    # answer cannot show that this contact was written (nor which of a batch was not): recorded as
    # unverified.
    return f"modifiedCount {count} of {sent}"


def _written(status: int, note: str | None, detail: str | None) -> int | Written:
    text = "; ".join(part for part in (note, detail) if part)
    if detail is not None:  # a short modifiedCount
        return Written(status, UNVERIFIED, text)
    return Written(status, detail=text) if text else status
