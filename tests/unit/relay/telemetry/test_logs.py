"""Structured logs: JSON lines on stderr, a request id from intake to the worker, the ledger's
event id on the delivery lines, and never an e-mail address or a secret."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from relay.messaging.names import DELIVER_TASK, REQUEST_ID_TASK_HEADER
from relay.telemetry.logs import get_logger, mask_email, request_id_from, scrub, task_context
from tests.helpers.observability_world import (
    EMAIL,
    ENGAGE_PASSWORD,
    METRICS_TOKEN,
    SECRET,
    JsonCapture,
    Relay,
    payload,
)
from workers.celery_app import create_celery_app

SECRETS = (SECRET, METRICS_TOKEN, ENGAGE_PASSWORD)


@pytest.fixture
def logged() -> Iterator[JsonCapture]:
    with JsonCapture() as capture:
        yield capture


def assert_clean(lines: list[dict[str, Any]]) -> None:
    text = json.dumps(lines).lower()
    for needle in (EMAIL.lower(), "jane.doe", "example.com", *(s.lower() for s in SECRETS)):
        assert needle not in text


def by_event(lines: list[dict[str, Any]], event: str) -> dict[str, Any]:
    [line] = [line for line in lines if line["event"] == event]
    return line


# --- the web request ----------------------------------------------------------------------------


def test_an_accepted_request_logs_its_request_and_event_ids(
    relay: Relay, logged: JsonCapture
) -> None:
    response = relay.post(payload(), headers={"X-Request-ID": "req-7f3a.intake:1"})

    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "req-7f3a.intake:1"
    lines = logged.lines()
    accepted = by_event(lines, "accepted")
    assert accepted["request_id"] == "req-7f3a.intake:1"
    assert accepted["event_id"] == response.get_json()["event_id"]
    assert accepted["source"] == "signup" and accepted["level"] == "info"
    assert accepted["email"] == mask_email(EMAIL)  # the handle, never the address
    assert {"timestamp", "logger", "pid"} <= set(accepted)
    # Third-party lines (kombu here) logged during the request, or while its deliveries are
    # published in the background, carry the same context.
    assert all(line.get("request_id") == "req-7f3a.intake:1" for line in lines)
    assert_clean(lines)


def test_a_missing_or_odd_request_id_is_replaced(relay: Relay) -> None:
    plain = relay.post(payload())
    odd = relay.post(payload(), headers={"X-Request-ID": "x" * 200})
    injected = relay.client.get("/healthz", headers={"X-Request-ID": 'a"b\\c {json}'})
    for response in (plain, odd, injected):
        assert len(response.headers["X-Request-ID"]) == 32  # a fresh uuid4 hex
    assert plain.headers["X-Request-ID"] != odd.headers["X-Request-ID"]


def test_rejected_requests_log_no_address_or_secret(relay: Relay, logged: JsonCapture) -> None:
    relay.post(payload(), secret="whsec_" + "b3RoZXItc2VjcmV0LW5vdC1jb25maWd1cmVkLWF0LWFsbA==")
    relay.post(payload(tracking_consent="maybe"))
    relay.post(b"{not json", content_type="application/json")
    lines = logged.lines()
    rejected = by_event(lines, "signature rejected")
    assert rejected["source"] == "signup" and rejected["request_id"]
    assert_clean(lines)


# --- the worker ---------------------------------------------------------------------------------


def test_a_delivery_runs_lines_carry_task_request_and_event_ids(
    relay: Relay, logged: JsonCapture
) -> None:
    accepted = relay.post(payload(consent="denied"), headers={"X-Request-ID": "req-from-form"})
    event_id = accepted.get_json()["event_id"]
    logged.clear()
    celery = create_celery_app(relay.settings)
    task = celery.tasks[DELIVER_TASK]
    contact_id = 1

    result = task.apply(
        args=["engage", contact_id],
        task_id="task-0001",
        headers={REQUEST_ID_TASK_HEADER: "req-from-form"},
    )

    assert result.get() == "delivered"
    lines = [line for line in logged.lines() if line["logger"].startswith("workers")]
    delivered = by_event(lines, "delivered")
    assert delivered["event_id"] == event_id
    assert delivered["task_id"] == "task-0001"
    assert delivered["request_id"] == "req-from-form"
    assert (delivered["destination"], delivered["contact_id"]) == ("engage", contact_id)
    done = by_event(lines, "delivery task done")
    assert (done["task_id"], done["outcome"]) == ("task-0001", "delivered")
    assert_clean(logged.lines())


def test_task_context_is_cleared_after_the_task(logged: JsonCapture) -> None:
    log = get_logger("workers.test")
    with task_context(task_id="t-1", destination="engage", request_id=None):
        log.info("inside")
    log.info("outside")
    inside, outside = logged.lines()
    assert inside["task_id"] == "t-1" and "request_id" not in inside
    assert "task_id" not in outside


# --- the formatter ------------------------------------------------------------------------------


def test_scrub_masks_addresses_and_secrets() -> None:
    text = scrub(
        "update?identifierType=EMAIL&unifiedIdentifierName=Jane.Doe%2BObs%40Example.com "
        f"mail {EMAIL} secret {SECRET} Authorization: Bearer abc.def-123 "
        "db postgresql://relay:hunter2@db:5432/x"
    )
    assert text.count(mask_email(EMAIL)) == 2  # URL-encoded or not, the same handle
    for needle in ("jane", "example.com", SECRET, "abc.def-123", "hunter2"):
        assert needle.lower() not in text.lower()
    assert "Bearer ***" in text and "whsec_***" in text


def test_mask_email_is_stable_and_case_insensitive() -> None:
    assert mask_email(EMAIL) == mask_email(EMAIL.lower()) == mask_email(f" {EMAIL.upper()} ")
    assert mask_email(EMAIL).startswith("em_") and len(mask_email(EMAIL)) == 15


def test_request_id_from() -> None:
    assert request_id_from("3f2c0e5a-8b1d-4b7e-9a55-0c1d2e3f4a5b").startswith("3f2c0e5a")
    assert request_id_from(None) != request_id_from(None)
    assert request_id_from("has space") != "has space"


def test_stderr_gets_one_json_object_per_line_from_every_logger() -> None:
    """In a fresh process, as web, worker and beat log: structlog, stdlib and tracebacks."""
    script = textwrap.dedent(
        f"""
        import logging
        from relay.telemetry.logs import configure_logging, get_logger
        configure_logging("INFO")
        get_logger("service.intake.routes").info("accepted", event_id="e-1")
        logging.getLogger("celery.worker").info("Task %s received", "consent_relay.x")
        logging.getLogger("gunicorn.error").warning("multi\\nline message")
        try:
            raise ValueError("write failed for {EMAIL} with {SECRET}")
        except ValueError:
            logging.getLogger("alembic").exception("boom")
        logging.getLogger("x").debug("not shown")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["logger"] for line in lines] == [
        "service.intake.routes",
        "celery.worker",
        "gunicorn.error",
        "alembic",
    ]
    assert lines[0]["event_id"] == "e-1"
    assert lines[1]["event"] == "Task consent_relay.x received"
    assert lines[2]["event"] == "multi\nline message" and lines[2]["level"] == "warning"
    assert "ValueError" in lines[3]["exception"] and mask_email(EMAIL) in lines[3]["exception"]
    assert_clean(lines)
