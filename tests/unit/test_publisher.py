"""The web process's publisher: best effort, and it stops hammering an unreachable broker."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from service.config import load_settings
from service.publisher import Publisher
from workers.celery_app import create_celery_app


def _celery(tmp_path: Path, broker_url: str | None):
    config = tmp_path / "c.toml"
    broker = f'broker_url = "{broker_url}"\n' if broker_url else ""
    config.write_text(
        f'[service]\ndata_dir = "{tmp_path / "var"}"\n{broker}'
        '[destinations.engage]\nkind = "mapp-engage"\nbase_url = "http://127.0.0.1:9"\n'
        'username = "u"\npassword = "p"\n'
        '[sources.s]\nkind = "standard-webhooks"\n'
        'secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\nsource = "x"\n'
    )
    return create_celery_app(load_settings(config, environ={}))


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
    caplog.set_level(logging.INFO, logger="service.publisher")
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
