"""Source integrations: one module per kind (verifier, payload reading, handled events).

`KINDS` is the explicit table of supported kinds; `build_kind` binds one to its settings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.sources.base import (
    FieldsError,
    MediaTypeError,
    PayloadError,
    SignatureError,
    SourceKind,
)
from service.sources.dynamics import DynamicsKind
from service.sources.hmac_kind import HmacKind
from service.sources.hubspot import HubspotKind
from service.sources.jotform import JotformKind
from service.sources.pipedrive import PipedriveKind
from service.sources.salesforce import SalesforceKind
from service.sources.standard_webhooks import StandardWebhooksKind, StandardWebhooksVerifier
from service.sources.tally import TallyKind
from service.sources.token import TokenKind
from service.sources.typeform import TypeformKind
from service.sources.webflow import WebflowKind

# The explicit table of supported kinds (schemas/sources.py holds their config rules).
KINDS: dict[str, type[Any]] = {
    kind.name: kind
    for kind in (
        StandardWebhooksKind,
        TokenKind,
        TypeformKind,
        TallyKind,
        WebflowKind,
        JotformKind,
        HubspotKind,
        SalesforceKind,
        PipedriveKind,
        DynamicsKind,
        HmacKind,
    )
}
# Kept for the benchmark's bare verifier.
VERIFIERS = {"standard-webhooks": StandardWebhooksVerifier}


def build_kind(source: Any, max_future_skew: dt.timedelta) -> SourceKind:
    kind: SourceKind = KINDS[source.kind](source, max_future_skew)
    return kind


__all__ = [
    "KINDS",
    "VERIFIERS",
    "FieldsError",
    "MediaTypeError",
    "PayloadError",
    "SignatureError",
    "SourceKind",
    "build_kind",
]
