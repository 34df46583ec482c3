"""Source integrations: one module per kind, each a pure verifier over the raw body bytes."""

from __future__ import annotations

from service.sources.standard_webhooks import SignatureError, StandardWebhooksVerifier

VERIFIERS = {"standard-webhooks": StandardWebhooksVerifier}

__all__ = ["VERIFIERS", "SignatureError", "StandardWebhooksVerifier"]
