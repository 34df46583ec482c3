"""The canonical decision payload (`schemas/consent.py`), for kinds whose senders we control:
`standard-webhooks` and `token`. It is validated strictly (422 with every field's message):
these senders can fix their payload, unlike a form tool."""

from __future__ import annotations

import datetime as dt

from marshmallow import ValidationError

from relay.domain import Decision, evidence_of
from schemas.consent import decision_schema
from service.sources.base import FieldsError, InboundRequest
from service.sources.payloads import read_json


def canonical_decision(
    request: InboundRequest, default_source: str, max_future_skew: dt.timedelta
) -> Decision:
    payload = read_json(request)
    try:
        fields = decision_schema(max_future_skew).load(payload)
    except ValidationError as exc:
        raise FieldsError(exc.messages) from None
    return Decision(
        email=fields["email"],
        tracking_consent=fields["tracking_consent"],
        source=fields.get("source") or default_source,
        source_id=fields.get("source_id"),
        occurred_at=fields.get("occurred_at"),
        evidence=evidence_of(fields),
    )
