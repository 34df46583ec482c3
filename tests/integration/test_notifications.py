"""Operational notifications through a real worker and beat, the embedded broker and a SQLite
ledger, the Engage emulator in its own process and real HTTP receivers that check each
signature with the `standardwebhooks` package (docs/operations/notifications.md).

One world is paused once through the admin API; four targets hear of it: a plain receiver,
one that answers 503 twice first, one that verifies with another secret (so it refuses: we
sign), and a Slack-shaped one. A second world pauses Engage itself, on an auth failure.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import NotificationSend
from service import create_app
from tests.helpers.support import (
    FAST_DELIVERY,
    OTHER_SECRET,
    SECRET,
    Emulator,
    Process,
    celery_beat,
    celery_worker,
    decision,
    signed_headers,
    wait_for,
    write_config,
)
from tests.helpers.webhook_receiver import Receiver

pytestmark = pytest.mark.integration
TOKEN = "t" * 40
PAUSED, RESUMED = "destination.paused", "destination.resumed"


@dataclass
class World:
    app: Any
    engage: Emulator
    receivers: dict[str, Receiver]

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = self.app.test_client().post(path, json=body or {}, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    def sends(self, target: str) -> list[NotificationSend]:
        with self.app.extensions["consent_relay"].sessions() as session:
            query = select(NotificationSend).where(NotificationSend.target == target)
            return list(session.scalars(query.order_by(NotificationSend.id)))

    def settled(self, target: str, count: int) -> bool:
        sends = self.sends(target)
        return len(sends) >= count and all(send.status != "pending" for send in sends)


def _target(name: str, url: str, fmt: str = "standard") -> str:
    events = f'["{PAUSED}", "{RESUMED}"]'
    return (
        f'[notifications.targets.{name}]\nurl = "{url}"\nsecret = "{SECRET}"\n'
        f'events = {events}\nformat = "{fmt}"\n'
    )


def _start(tmp_path: Path, receivers: dict[str, Receiver], started: list[Any]) -> World:
    engage = Emulator(tmp_path)
    started.append(engage.process)
    formats = {"slack": "slack"}
    targets = "".join(
        _target(name, receiver.url, formats.get(name, "standard"))
        for name, receiver in receivers.items()
    )
    extra = (
        f'[admin]\ntokens = ["{TOKEN}"]\n\n[notifications]\nenabled = true\n'
        "max_attempts = 4\nretry_schedule_seconds = [0.5]\n\n" + targets
    )
    config = write_config(
        tmp_path / "consent-relay.toml",
        data_dir=tmp_path / "var",
        engage_url=engage.url,
        queue=f"cr-notify-{uuid.uuid4().hex[:8]}",
        delivery=FAST_DELIVERY,
        extra=extra,
    )
    settings = load_settings(config, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    started.append(celery_worker(config, tmp_path))
    started.append(celery_beat(config, tmp_path))
    return World(app, engage, receivers)


def _stop(started: list[Process], receivers: dict[str, Receiver]) -> None:
    for process in reversed(started):
        process.stop()
    for receiver in receivers.values():
        receiver.close()


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Engage paused and resumed by an operator through the admin API, every target settled."""
    receivers = {
        "ops": Receiver(SECRET),
        "flaky": Receiver(SECRET, answers=[503, 503]),
        "wrong": Receiver(OTHER_SECRET),
        "slack": Receiver(SECRET),
    }
    started: list[Any] = []
    try:
        world = _start(tmp_path_factory.mktemp("notify"), receivers, started)
        world.admin("/admin/destinations/engage/pause", {"reason": "vendor maintenance window"})
        for name in receivers:
            wait_for(lambda n=name: world.settled(n, 1), 30, f"{name} settled")
        world.admin("/admin/destinations/engage/resume")
        for name in receivers:
            wait_for(lambda n=name: world.settled(n, 2), 30, f"{name} settled the resume")
        yield world
    finally:
        _stop(started, receivers)


def test_an_operator_pause_reaches_the_receiver_signed(paused: World) -> None:
    [pause, resume] = paused.receivers["ops"].accepted()
    assert pause.json["type"] == PAUSED
    assert pause.json["data"] == {"destination": "engage", "by": "operator", "status": None}
    assert resume.json["type"] == RESUMED and resume.json["data"]["by"] == "operator"
    assert pause.headers["webhook-id"].startswith("msg_")
    assert pause.headers["webhook-signature"].startswith("v1,")
    # The operator's free-text reason stays in the ledger.
    assert b"maintenance" not in pause.body
    assert [send.status for send in paused.sends("ops")] == ["sent", "sent"]


def test_a_receiver_answering_503_twice_gets_it_once_after_retries(paused: World) -> None:
    flaky = paused.receivers["flaky"]
    pauses = [item for item in flaky.received if item.json["type"] == PAUSED]
    assert [item.answered for item in pauses] == [503, 503, 200]
    assert len({item.headers["webhook-id"] for item in pauses}) == 1  # one message, retried
    send = paused.sends("flaky")[0]
    assert (send.status, send.attempts, send.last_status) == ("sent", 3, 200)


def test_a_receiver_with_another_secret_refuses_and_the_send_fails(paused: World) -> None:
    wrong = paused.receivers["wrong"]
    assert wrong.received and not any(item.verified for item in wrong.received)
    send = paused.sends("wrong")[0]
    # A 401 is final: retrying cannot fix a secret.
    assert (send.status, send.attempts, send.last_status) == ("failed", 1, 401)


def test_the_slack_format_is_a_signed_text_message(paused: World) -> None:
    [pause, resume] = paused.receivers["slack"].accepted()
    assert set(pause.json) == {"text"}
    assert "destination engage paused (by operator)" in pause.json["text"]
    assert "destination engage resumed (by operator)" in resume.json["text"]


def test_an_auth_failure_at_engage_pauses_it_and_is_announced(tmp_path: Path) -> None:
    receivers = {"ops": Receiver(SECRET)}
    started: list[Any] = []
    try:
        world = _start(tmp_path, receivers, started)
        world.engage.faults(auth_failure=401)
        body = decision("auth.notify@example.com", "granted", occurred_at=dt.datetime.now(dt.UTC))
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        response = world.app.test_client().post("/webhooks/signup", data=body, headers=headers)
        assert response.status_code == 202
        wait_for(lambda: receivers["ops"].accepted(), 30, "the pause announced")
        [pause] = receivers["ops"].accepted()
        assert pause.json["type"] == PAUSED
        assert pause.json["data"] == {"destination": "engage", "by": "auth", "status": 401}
        assert b"@" not in pause.body
    finally:
        _stop(started, receivers)
