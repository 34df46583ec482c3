"""`kind = "jotform"`: Jotform form webhooks (docs/reference/sources/jotform.md).

Jotform does not sign its webhooks (docs/reference/sources/jotform.md#authentication): the only
secret it can carry is in the webhook URL, so the operator pastes
`https://relay/webhooks/<name>?token=<long random token>` and the token is compared in constant time
against every active secret (`auth.check_token`, as Zulip does with `?api_key=`). Nothing is signed
and there is no timestamp, so a captured URL can replay a submission: duplicates are recognised by
the `submissionID` form part (docs/reference/sources/jotform.md#duplicates).

The body is `multipart/form-data` (docs/reference/sources/jotform.md#payload;
`application/x-www-form-urlencoded` is accepted too):
`formID`, `submissionID`, `formTitle`, `pretty`, ... and `rawRequest`, a JSON string whose
keys are `q<N>_<fieldName>`. Answers are offered under those keys and under the field name
without the `q<N>_` prefix, so operators can map `email` / `consent`. A checkbox is a list of
the selected labels (UNVERIFIED, docs/reference/sources/jotform.md#payload: the captured fixture has
none); the shared mapping tries each label. `pretty` ("Label:value, ...") is not parsed: a comma or
colon inside an answer makes it ambiguous. Jotform documents no submission time, so the time of
receipt stands in (the client-side `jsExecutionTracker` clock is not trusted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from schemas.sources import KIND_VARIABLES
from service.sources.auth import check_token
from service.sources.base import (
    Authenticated,
    BaseKind,
    InboundRequest,
    MediaTypeError,
    PayloadError,
    SignedRequest,
    SourceEvent,
)
from service.sources.payloads import json_object, parse_json
from service.sources.token import with_query

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# Jotform posts one kind of delivery: a form submission (docs/reference/sources/jotform.md)
EVENT_TYPE = "submission"
FIELD_PREFIX = re.compile(r"^q\d+_(?=.)")
MAX_EVENT_ID = 255  # the ledger's delivery_id column


class JotformKind(BaseKind):
    name: ClassVar[str] = "jotform"
    EVENTS: ClassVar[Mapping[str, str | None]] = {EVENT_TYPE: None}
    DEFAULT_SOURCE_ID: ClassVar[str | None] = "{form_id}:{submission_id}"
    VARIABLES: ClassVar[frozenset[str]] = KIND_VARIABLES["jotform"]

    def authenticate(self, request: InboundRequest) -> Authenticated:
        check_token(request, self.secrets, None)
        return Authenticated()

    def parse(self, request: InboundRequest, auth: Authenticated) -> Sequence[SourceEvent]:
        if request.mimetype not in FORM_TYPES:
            raise MediaTypeError("The body must be multipart/form-data, as Jotform posts it.")
        form = request.form
        submission_id = form.get("submissionID")
        if not submission_id or len(submission_id) > MAX_EVENT_ID:
            raise PayloadError("A Jotform delivery has a submissionID form part.")
        if "rawRequest" not in form:
            raise PayloadError("A Jotform delivery has a rawRequest form part.")
        raw = json_object(parse_json(form["rawRequest"]), "rawRequest")
        variables = {
            "form_id": form.get("formID"),
            "form_title": form.get("formTitle"),
            "submission_id": submission_id,
        }
        return [SourceEvent(submission_id, EVENT_TYPE, _email(raw), _answers(raw), variables)]

    def sign(self, body: bytes, content_type: str, url: str, now: float) -> SignedRequest:
        """Jotform only calls the URL it was given: the token rides in the query string."""
        headers = {"Content-Type": content_type}
        return SignedRequest(with_query(url, token=self.secrets[0]), headers, body)


def _answers(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`rawRequest` as sent, plus each `q<N>_name` under `name`.

    A bare name already in rawRequest keeps its own value, and a name shared by two
    prefixed keys is left out: mapping the consent answer from the wrong field would be
    worse than the recorded "No consent answer"."""
    aliases: dict[str, list[Any]] = {}
    for key, value in raw.items():
        bare = FIELD_PREFIX.sub("", key)
        if bare != key:
            aliases.setdefault(bare, []).append(value)
    answers = {bare: values[0] for bare, values in aliases.items() if len(values) == 1}
    answers.update(raw)
    return answers


def _email(raw: Mapping[str, Any]) -> str | None:
    """The first string with an `@` under a key naming an e-mail (`q4_email`, `q7_yourEmail`)."""
    for key, value in raw.items():
        if "email" in key.lower() and isinstance(value, str) and "@" in value:
            return value
    return None
