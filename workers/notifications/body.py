"""The body of a notification: a Standard Webhooks event, or a Slack-compatible message.

Standard: `{"type", "timestamp", "data"}`, the payload structure the specification recommends
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md).
Slack: `{"text": ...}`, what an incoming webhook accepts
(https://api.slack.com/messaging/webhooks); both are signed the same way. Neither carries an
address: the data is ids and labels (relay/ledger/notifications.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from schemas.notifications import (
    DEAD_LETTER_CREATED,
    DESTINATION_PAUSED,
    DESTINATION_RESUMED,
    DRIFT_FOUND,
)

PREFIX = "Consent Relay"


def build_body(format_: str, type_: str, created_at: dt.datetime, data: Mapping[str, Any]) -> str:
    if format_ == "slack":
        return json.dumps({"text": f"{PREFIX}: {summary(type_, data)}"})
    timestamp = created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": type_, "timestamp": timestamp, "data": dict(data)}, sort_keys=True)


def summary(type_: str, data: Mapping[str, Any]) -> str:
    """One line for people (Slack's `text`)."""
    describe = _SUMMARIES.get(type_)
    return describe(data) if describe else f"{type_} at destination {data.get('destination')}"


def _paused(data: Mapping[str, Any]) -> str:
    status = f", HTTP {data['status']}" if data.get("status") else ""
    return (
        f"destination {data['destination']} paused (by {data.get('by')}{status}); "
        "nothing is sent to it until it is resumed"
    )


def _resumed(data: Mapping[str, Any]) -> str:
    return f"destination {data['destination']} resumed (by {data.get('by')})"


def _dead_letter(data: Mapping[str, Any]) -> str:
    return (
        f"a decision for contact {data.get('contact_id')} was dead-lettered at "
        f"{data['destination']} ({data.get('reason')}); an operator can replay it"
    )


def _drift(data: Mapping[str, Any]) -> str:
    return (
        f"drift at {data['destination']} for contact {data.get('contact_id')}: saw "
        f"{data.get('seen')}, expected {data.get('expected')} ({data.get('action')})"
    )


_SUMMARIES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    DESTINATION_PAUSED: _paused,
    DESTINATION_RESUMED: _resumed,
    DEAD_LETTER_CREATED: _dead_letter,
    DRIFT_FOUND: _drift,
}
