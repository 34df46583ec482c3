"""The embedded broker (relay/messaging/embedded_broker.py): atomic files, one consumer per message,
and a transport Celery runs on its event loop (so the prefork pool survives a killed child)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from queue import Empty

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue

from relay.messaging.embedded_broker import TMP_SUFFIX, Transport, write_atomically
from tests.helpers.support import minimal_celery


def _app(tmp_path: Path) -> Celery:
    app: Celery = minimal_celery(tmp_path)
    return app


def _folder(app: Celery) -> Path:
    return Path(app.conf.broker_transport_options["data_folder_in"])


def test_the_default_broker_is_the_embedded_transport_on_the_event_loop(tmp_path: Path) -> None:
    # Celery runs its AsynPool (one pipe per child) only for asynchronous transports; the
    # blocking pool's shared pipe deadlocks for good when a child dies holding its lock.
    app = _app(tmp_path)
    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, Transport)
        assert conn.transport.implements.asynchronous


def test_a_published_message_is_whole_and_taken_once(tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.send_task("consent_relay.deliver_contact", args=["engage", 7])
    folder = _folder(app)
    names = [n for n in os.listdir(folder) if n.endswith(".msg")]
    assert len(names) == 1 and not [n for n in os.listdir(folder) if n.endswith(TMP_SUFFIX)]
    json.loads((folder / names[0]).read_text())  # complete JSON, never a partial write

    queue = app.conf.task_default_queue
    with app.connection_for_read() as first, app.connection_for_read() as second:
        taken = first.default_channel._get(queue)
        with pytest.raises(Empty):  # the first consumer claimed it
            second.default_channel._get(queue)
    assert taken["headers"]["task"] == "consent_relay.deliver_contact"
    assert set(os.listdir(folder)) == {"processed", "control"}  # nothing left behind


def test_a_file_still_being_written_is_never_read(tmp_path: Path) -> None:
    app = _app(tmp_path)
    queue = app.conf.task_default_queue
    folder = _folder(app)
    (folder / f"1_x.{queue}.msg.abc{TMP_SUFFIX}").write_bytes(b'{"body": ')  # mid-write
    with app.connection_for_read() as conn, pytest.raises(Empty):
        conn.default_channel._get(queue)
    assert (folder / f"1_x.{queue}.msg.abc{TMP_SUFFIX}").exists()


def test_write_atomically_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "table.exchange"
    write_atomically(target, b"[1]")
    write_atomically(target, b"[1, 2]")
    assert target.read_bytes() == b"[1, 2]"
    assert os.listdir(tmp_path) == ["table.exchange"]


def test_concurrent_bindings_all_land_in_the_exchange_table(tmp_path: Path) -> None:
    """Read-modify-write of an exchange table under its lock: no binding is lost, and no
    reader ever sees a truncated table."""
    options = _app(tmp_path).conf.broker_transport_options
    exchange = Exchange("fan", type="fanout")

    def bind(index: int) -> None:
        with Connection("filesystem://", transport=Transport, transport_options=options) as conn:
            Queue(f"q{index}", exchange, channel=conn.default_channel).declare()

    threads = [threading.Thread(target=bind, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with Connection("filesystem://", transport=Transport, transport_options=options) as conn:
        table = conn.default_channel.get_table("fan")
    assert sorted(q.queue for q in table) == sorted(f"q{i}" for i in range(12))
