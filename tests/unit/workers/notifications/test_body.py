"""The bodies of notifications (workers/notifications/body.py): the Standard Webhooks event and
the Slack-compatible message, for each event type."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from schemas.notifications import EVENTS
from workers.notifications.body import build_body, summary

CREATED = dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
DATA = {
    "destination.paused": {"destination": "engage", "by": "auth", "status": 401},
    "destination.resumed": {"destination": "engage", "by": "probe"},
    "dead_letter.created": {
        "destination": "dotdigital",
        "contact_id": 7,
        "event_id": 9,
        "reason": "rejected",
        "status": 400,
    },
    "drift.found": {
        "destination": "engage",
        "contact_id": 7,
        "event_id": 9,
        "seen": "granted",
        "expected": "withdrawn",
        "action": "repaired",
    },
}


def test_the_standard_body_is_type_timestamp_and_data() -> None:
    data = DATA["destination.paused"]
    body = json.loads(build_body("standard", "destination.paused", CREATED, data))
    assert body == {"type": "destination.paused", "timestamp": "2027-01-02T03:04:05Z", "data": data}


@pytest.mark.parametrize("event", EVENTS)
def test_the_slack_body_is_only_text(event: str) -> None:
    body = json.loads(build_body("slack", event, CREATED, DATA[event]))
    assert list(body) == ["text"]
    assert body["text"].startswith("Consent Relay: ")
    assert DATA[event]["destination"] in body["text"]


def test_the_summaries_say_what_happened() -> None:
    assert summary("destination.paused", DATA["destination.paused"]) == (
        "destination engage paused (by auth, HTTP 401); nothing is sent to it until it is resumed"
    )
    assert summary("destination.resumed", DATA["destination.resumed"]) == (
        "destination engage resumed (by probe)"
    )
    assert "contact 7" in summary("dead_letter.created", DATA["dead_letter.created"])
    drift = summary("drift.found", DATA["drift.found"])
    assert "saw granted, expected withdrawn (repaired)" in drift


def test_an_event_without_a_summary_still_names_itself() -> None:
    assert summary("other.event", {"destination": "x"}) == "other.event at destination x"
