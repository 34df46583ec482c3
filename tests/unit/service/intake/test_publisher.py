"""The web process's publisher: best effort, it stops hammering an unreachable broker, and
the intake's background publisher batches what queues under load."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from structlog.contextvars import bound_contextvars

from relay.messaging.names import DELIVER_TASK, DISPATCH_TASK, REQUEST_ID_TASK_HEADER
from service.intake.publisher import BackgroundPublisher, Publisher, Queued
from tests.helpers.support import minimal_celery
from workers.delivery.fanout import fan_out


def _celery(tmp_path: Path, broker_url: str | None):
    return minimal_celery(tmp_path, broker_url)


def test_publish_on_a_working_broker_writes_one_message(tmp_path: Path) -> None:
    publisher = Publisher(_celery(tmp_path, None))
    assert publisher.publish("engage", 42) is True
    messages = list((tmp_path / "var" / "broker").glob("*.msg"))
    assert len(messages) == 1
    body = base64.b64decode(json.loads(messages[0].read_bytes())["body"])
    assert json.loads(body)[0] == ["engage", 42]


def test_unreachable_broker_pauses_publishing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    publisher = Publisher(
        _celery(tmp_path, "redis://127.0.0.1:1/0"), pause_seconds=15, clock=lambda: now[0]
    )
    caplog.set_level(logging.INFO, logger="service.intake.publisher")
    assert publisher.publish("engage", 1) is False
    assert "enqueue failed" in caplog.text
    caplog.clear()
    now[0] += 5  # inside the pause: not even tried
    assert publisher.publish("engage", 2) is False
    assert "broker paused" in caplog.text and "enqueue failed" not in caplog.text
    caplog.clear()
    now[0] += 11  # pause over: tried again (and fails again against the closed port)
    assert publisher.publish("engage", 3) is False
    assert "enqueue failed" in caplog.text


def _messages(tmp_path: Path) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(task name, args, headers) of every message on the embedded broker."""
    found = []
    for path in sorted((tmp_path / "var" / "broker").glob("*.msg")):
        message = json.loads(path.read_bytes())
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["task"], args, message["headers"]))
    return found


def test_a_single_queued_delivery_goes_as_its_delivery_task(tmp_path: Path) -> None:
    publisher = Publisher(_celery(tmp_path, None))
    assert publisher.publish_queued([Queued("engage", 1, "req-1")]) == 1
    [(name, args, headers)] = _messages(tmp_path)
    assert (name, args, headers[REQUEST_ID_TASK_HEADER]) == (DELIVER_TASK, ["engage", 1], "req-1")


def test_several_queued_deliveries_go_as_one_dispatch_message(tmp_path: Path) -> None:
    publisher = Publisher(_celery(tmp_path, None))
    items = [
        Queued("engage", 1, "req-1"),
        Queued("engage_eu", 1, "req-1"),
        Queued("engage", 2, None),
    ]
    assert publisher.publish_queued(items) == 1
    [(name, args, headers)] = _messages(tmp_path)
    assert name == DISPATCH_TASK and REQUEST_ID_TASK_HEADER not in headers
    assert args == [[["engage", 1, "req-1"], ["engage_eu", 1, "req-1"], ["engage", 2, None]]]


def test_background_publisher_coalesces_what_queued_meanwhile(tmp_path: Path) -> None:
    """The first delivery goes at once; while the publisher waits out its interval, the
    next ones queue up and leave together, one entry per (destination, contact)."""
    background = BackgroundPublisher(Publisher(_celery(tmp_path, None)), interval=0.5)
    try:
        assert background.submit("engage", 1)
        assert background.flush()
        for contact_id in (2, 3, 2, 4, 5, 6, 3, 7):
            assert background.submit("engage", contact_id)
        assert background.flush()
    finally:
        background.close()
    messages = _messages(tmp_path)
    assert sorted(name for name, _, _ in messages) == [DELIVER_TASK, DISPATCH_TASK]
    [dispatched] = [args[0] for name, args, _ in messages if name == DISPATCH_TASK]
    assert [entry[1] for entry in dispatched] == [2, 3, 4, 5, 6, 7]


def test_background_publisher_carries_the_request_id(tmp_path: Path) -> None:
    background = BackgroundPublisher(Publisher(_celery(tmp_path, None)))
    try:
        with bound_contextvars(request_id="req-42"):
            assert background.submit("engage", 9)
        assert background.flush()
    finally:
        background.close()
    [(name, args, headers)] = _messages(tmp_path)
    assert (name, args, headers[REQUEST_ID_TASK_HEADER]) == (DELIVER_TASK, ["engage", 9], "req-42")


def test_background_publisher_refuses_beyond_its_capacity(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its capacity a delivery is not queued (the sweeper will deliver it): memory
    stays bounded while the broker is slow."""
    background = BackgroundPublisher(Publisher(_celery(tmp_path, None)), capacity=2, interval=5)
    caplog.set_level(logging.WARNING, logger="service.intake.publisher")
    try:
        assert background.submit("engage", 1)  # taken at once; the thread then waits 5 s
        assert background.flush()
        assert background.submit("engage", 2) and background.submit("engage", 3)
        assert background.submit("engage", 4) is False
        assert "publish queue full" in caplog.text
    finally:
        background.close(timeout=0)
    assert [args for _, args, _ in _messages(tmp_path)] == [["engage", 1]]


def test_closing_publishes_what_is_still_queued(tmp_path: Path) -> None:
    background = BackgroundPublisher(Publisher(_celery(tmp_path, None)), interval=0.2)
    assert background.submit("engage", 1)
    assert background.flush()
    for contact_id in (2, 3):
        assert background.submit("engage", contact_id)
    background.close(timeout=5)
    first, second = sorted(_messages(tmp_path), key=lambda message: message[0])
    assert (first[0], first[1]) == (DELIVER_TASK, ["engage", 1])
    assert (second[0], [entry[1] for entry in second[1][0]]) == (DISPATCH_TASK, [2, 3])


def test_fan_out_publishes_each_well_formed_entry_and_skips_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published: list[tuple[str, int, str | None, str | None]] = []
    entries: Any = [
        ["engage", 1, "req-1"],
        ["engage", 2, None],
        ["engage", "3", None],  # contact id not an integer
        ["engage", True, None],  # a bool is no contact id
        ["engage", 4],  # too short
        "engage:5",
        ["acoustic", 6, 7],  # a request id that is not text is dropped, the delivery kept
        ["engage", 8, None, "tp", "extra"],  # too long
    ]
    caplog.set_level(logging.ERROR, logger="workers.delivery.fanout")
    count = fan_out(entries, lambda *args: published.append(args))
    assert count == 3
    # Untraced (no traceparent in the entry, tracing off): the fourth value stays None.
    assert published == [
        ("engage", 1, "req-1", None),
        ("engage", 2, None, None),
        ("acoustic", 6, None, None),
    ]
    assert caplog.text.count("malformed dispatch entry") == 5
    assert fan_out({"not": "a list"}, lambda *args: published.append(args)) == 0
