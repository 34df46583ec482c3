"""Prometheus metrics: the counters move where things happen (intake, delivery), the ledger
gauges are read at scrape time, /metrics is behind its token, and the multiprocess directory
is only cleaned when no process of an earlier run is alive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from emulators.engage import EmulatorServer
from relay.domain import ConsentWrite
from relay.ledger import pauses as destinations
from relay.ledger.models import Outbox
from relay.telemetry import metrics
from service.health.metrics_http import LedgerCollector
from tests.helpers.delivery_world import DESTINATION, SETTINGS, DeliveryWorld
from tests.helpers.ledger_rows import dead_letter, record
from tests.helpers.observability_world import EMAIL, METRICS_TOKEN, Relay, build_relay, payload
from workers.delivery.contact import deliver_contact
from workers.destinations.errors import RejectedError

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)


def sample(name: str, **labels: str) -> float:
    value = metrics.metrics().registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Delta:
    """How far samples moved since the start (the registry lives as long as the process)."""

    def __init__(self, *keys: tuple[str, dict[str, str]]):
        self._start = {self._key(n, lab): sample(n, **lab) for n, lab in keys}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted(labels.items()))

    def __call__(self, name: str, **labels: str) -> float:
        return sample(name, **labels) - self._start[self._key(name, labels)]


def intake_key(outcome: str, reason: str = "", source: str = "signup") -> tuple[str, Any]:
    return "consent_relay_intake_total", {"source": source, "outcome": outcome, "reason": reason}


# --- intake -------------------------------------------------------------------------------------


def test_intake_counts_each_outcome_and_reason(relay: Relay) -> None:
    keys = [
        intake_key("accepted"),
        intake_key("duplicate"),
        *(
            intake_key("rejected", reason)
            for reason in ("signature", "validation", "media_type", "malformed_json", "too_large")
        ),
        intake_key("rejected", "unknown_source", source="unknown"),
    ]
    moved = Delta(*keys)

    assert relay.post(payload(), msg_id="msg_once").status_code == 202
    assert relay.post(payload(), msg_id="msg_once").status_code == 200
    assert relay.post(payload(), msg_id="msg_two").status_code == 202
    assert (
        relay.post(
            payload(), secret="whsec_" + "c2VjcmV0LW5vYm9keS1jb25maWd1cmVkLWhlcmU="
        ).status_code
        == 401
    )
    assert relay.post(payload(consent="maybe")).status_code == 422
    assert relay.post(payload(), content_type="text/plain").status_code == 415
    assert relay.post(b"{nope").status_code == 400
    assert relay.post(b"{" + b" " * 4096 + b"}").status_code == 413
    assert relay.post(payload(), source="no-such-source").status_code == 404

    assert [moved(name, **labels) for name, labels in keys] == [2, 1, 1, 1, 1, 1, 1, 1]


def test_a_ledger_outage_counts_as_ledger_unavailable(relay: Relay) -> None:
    name, labels = intake_key("rejected", "ledger_unavailable")
    moved = Delta((name, labels))
    database = relay.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TRIGGER fail_insert BEFORE INSERT ON events "
            "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END"
        )
    assert relay.post(payload()).status_code == 503
    assert moved(name, **labels) == 1


# --- delivery -----------------------------------------------------------------------------------


def test_a_delivery_counts_the_write_and_its_latency(delivery_world: DeliveryWorld) -> None:
    recorded = delivery_world.record("granted")
    moved = Delta(
        (
            "consent_relay_deliveries_total",
            {"destination": DESTINATION, "outcome": "delivered", "status": "200"},
        ),
        (
            "consent_relay_delivery_latency_seconds_count",
            {"destination": DESTINATION, "state": "granted"},
        ),
        (
            "consent_relay_delivery_latency_seconds_bucket",
            {"destination": DESTINATION, "state": "granted", "le": "60.0"},
        ),
    )

    assert (
        deliver_contact(delivery_world.context(), DESTINATION, recorded.contact_id, "w-1")
        == "delivered"
    )

    assert (
        moved(
            "consent_relay_deliveries_total",
            destination=DESTINATION,
            outcome="delivered",
            status="200",
        )
        == 1
    )
    where = {"destination": DESTINATION, "state": "granted"}
    assert moved("consent_relay_delivery_latency_seconds_count", **where) == 1
    assert moved("consent_relay_delivery_latency_seconds_bucket", **where, le="60.0") == 1


def test_a_backlog_is_coalesced_and_a_late_old_decision_superseded(
    delivery_world: DeliveryWorld,
) -> None:
    keys = [
        ("consent_relay_coalesced_total", {"destination": DESTINATION}),
        ("consent_relay_superseded_total", {"destination": DESTINATION}),
        (
            "consent_relay_deliveries_total",
            {"destination": DESTINATION, "outcome": "delivered", "status": "200"},
        ),
    ]
    moved = Delta(*keys)
    for minute, consent in enumerate(("granted", "denied", "withdrawn")):
        latest = delivery_world.record(consent, occurred_at=T0 + dt.timedelta(minutes=minute))
    ctx = delivery_world.context()
    assert deliver_contact(ctx, DESTINATION, latest.contact_id, "w-1") == "delivered"
    assert [moved(name, **labels) for name, labels in keys] == [2, 2, 1]

    delivery_world.record(
        "granted", occurred_at=T0 - dt.timedelta(days=1)
    )  # arrives late, is older
    assert deliver_contact(ctx, DESTINATION, latest.contact_id, "w-2") == "up_to_date"
    assert [moved(name, **labels) for name, labels in keys] == [2, 3, 1]  # skipped, no write


def test_a_transient_failure_counts_a_delivery_and_a_retry(delivery_world: DeliveryWorld) -> None:
    keys = [
        (
            "consent_relay_deliveries_total",
            {"destination": DESTINATION, "outcome": "transient", "status": "503"},
        ),
        ("consent_relay_retries_total", {"destination": DESTINATION, "outcome": "transient"}),
    ]
    moved = Delta(*keys)
    delivery_world.faults(error_rate=1.0, error_status=503)
    recorded = delivery_world.record("denied")
    assert (
        deliver_contact(delivery_world.context(), DESTINATION, recorded.contact_id, "w-1")
        == "failed"
    )
    assert [moved(name, **labels) for name, labels in keys] == [1, 1]


class Refusing:
    def write(self, _write: ConsentWrite) -> int:
        raise RejectedError("invalid attribute value", status=400, body="{}")

    def probe(self) -> int:
        return 200


def test_a_dead_letter_is_counted_with_its_reason(delivery_world: DeliveryWorld) -> None:
    keys = [
        ("consent_relay_dead_lettered_total", {"destination": DESTINATION, "reason": "rejected"}),
        (
            "consent_relay_deliveries_total",
            {"destination": DESTINATION, "outcome": "rejected", "status": "400"},
        ),
        ("consent_relay_retries_total", {"destination": DESTINATION, "outcome": "rejected"}),
    ]
    moved = Delta(*keys)
    settings = dataclasses.replace(SETTINGS, max_rejected_attempts=1)
    recorded = delivery_world.record("denied")
    ctx = delivery_world.context(settings=settings, writer=Refusing())
    assert deliver_contact(ctx, DESTINATION, recorded.contact_id, "w-1") == "dead_lettered"
    assert [moved(name, **labels) for name, labels in keys] == [1, 1, 0]


# --- the ledger gauges --------------------------------------------------------------------------


def collected(collector: LedgerCollector) -> dict[tuple[str, str], float]:
    values = {}
    for family in collector.collect():
        for s in family.samples:
            values[(s.name, s.labels.get("destination", ""))] = s.value
    return values


def test_the_ledger_collector_reads_pending_dead_letters_and_pauses(ledger: Any) -> None:
    with ledger.sessions() as session:
        jane = record(session, "jane@example.org", "granted")
        john = record(session, "john@example.org", "denied")
        session.execute(update(Outbox).where(Outbox.contact_id == jane).values(created_at=T0))
        session.execute(
            update(Outbox)
            .where(Outbox.contact_id == john)
            .values(created_at=T0 + dt.timedelta(hours=1))
        )
        session.commit()
        dead_letter(session, "engage_eu", john, T0 + dt.timedelta(hours=2))
        destinations.pause(
            session,
            "engage",
            by="operator",
            reason="maintenance",
            status=None,
            now=T0,
            probe_in=None,
        )
        session.commit()
    now = T0 + dt.timedelta(hours=3)
    collector = LedgerCollector(ledger.sessions, ["engage", "engage_eu", "idle"], clock=lambda: now)

    values = collected(collector)

    assert values[("consent_relay_ledger_up", "")] == 1
    assert values[("consent_relay_pending_decisions", "engage")] == 2
    assert values[("consent_relay_pending_decisions", "engage_eu")] == 1  # john's: dead-lettered
    assert values[("consent_relay_pending_decisions", "idle")] == 0
    assert values[("consent_relay_oldest_pending_age_seconds", "engage")] == 3 * 3600
    assert values[("consent_relay_oldest_pending_age_seconds", "engage_eu")] == 3 * 3600
    assert values[("consent_relay_oldest_pending_age_seconds", "idle")] == 0
    assert values[("consent_relay_dead_letters_open", "engage_eu")] == 1
    assert values[("consent_relay_dead_letters_open", "engage")] == 0
    assert values[("consent_relay_destination_paused", "engage")] == 1
    assert values[("consent_relay_destination_paused", "engage_eu")] == 0


def test_an_unreadable_ledger_is_ledger_up_0(tmp_path: Path) -> None:
    from relay.ledger.db import make_engine, make_session_factory

    sessions = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'never-migrated.db'}"))
    values = collected(LedgerCollector(sessions, ["engage"]))
    assert values == {("consent_relay_ledger_up", ""): 0}


# --- GET /metrics -------------------------------------------------------------------------------


def test_metrics_without_a_configured_token_is_403(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    relay = build_relay(tmp_path, emulator.url, metrics_token=None)
    try:
        response = relay.scrape(token="anything-at-all")
        assert response.status_code == 403
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"].endswith(":metrics-disabled")
    finally:
        relay.close()


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="consent-relay-metrics"'),
        ("Basic dXNlcjpwYXNz", 'Bearer realm="consent-relay-metrics"'),
        (f"Bearer {METRICS_TOKEN}x", 'Bearer realm="consent-relay-metrics", error="invalid_token"'),
    ],
)
def test_metrics_without_the_right_token_is_401(
    relay: Relay, authorization: str | None, challenge: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = relay.client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == challenge


def test_metrics_serves_the_counters_and_the_ledger_gauges(relay: Relay) -> None:
    assert relay.post(payload()).status_code == 202

    response = relay.scrape()

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    pending = {
        s.labels["destination"]: s.value
        for s in families["consent_relay_pending_decisions"].samples
    }
    assert pending == {"engage": 1}
    accepted = [
        s
        for s in families["consent_relay_intake"].samples
        if s.labels == {"source": "signup", "outcome": "accepted", "reason": ""}
    ]
    assert accepted and accepted[0].value >= 1
    for name in (
        "consent_relay_deliveries",
        "consent_relay_delivery_latency_seconds",
        "consent_relay_ledger_up",
    ):
        assert name in families
    assert EMAIL.lower() not in response.get_data(as_text=True).lower()


# --- the multiprocess directory -----------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_files_go_only_when_no_process_of_theirs_is_alive(tmp_path: Path) -> None:
    gone = dead_pid()
    stale = [tmp_path / f"counter_{gone}.db", tmp_path / f"histogram_{gone}.db"]
    for path in stale:
        path.write_bytes(b"")
    live = tmp_path / f"counter_{os.getpid()}.db"
    live.write_bytes(b"")

    assert metrics.clean_stale_files(tmp_path) == 0  # a live process still counts there
    assert all(path.exists() for path in [*stale, live])

    live.unlink()
    assert metrics.clean_stale_files(tmp_path) == 2
    assert list(tmp_path.iterdir()) == []


def test_preparing_the_directory_too_late_keeps_metrics_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.ENV, raising=False)
    metrics.metrics()  # metrics recorded in memory already (single-process mode)
    assert metrics.prepare_multiprocess_dir(tmp_path) is None
    assert metrics.ENV not in os.environ


@pytest.mark.parametrize("loaded_first", [False, True])
def test_a_fresh_process_writes_its_samples_to_the_default_directory(
    tmp_path: Path, loaded_first: bool
) -> None:
    """Also when prometheus_client was imported first (the `celery` command loads Flower's
    plugin, which imports it, before workers.main)."""
    script = (
        ("import prometheus_client\n" if loaded_first else "")
        + "from pathlib import Path; from relay.telemetry import metrics\n"
        + f"path = metrics.prepare_multiprocess_dir(Path({str(tmp_path)!r}))\n"
        + "metrics.count_intake('signup', 'accepted')\n"
        + "print(metrics.is_multiprocess(), path)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != metrics.ENV}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["True", str(tmp_path / "metrics")]
    assert [p.name.split("_")[0] for p in (tmp_path / "metrics").iterdir()] == ["counter"]
