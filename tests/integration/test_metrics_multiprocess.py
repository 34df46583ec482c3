"""/metrics under real processes: gunicorn with 2 workers and a Celery worker with 2 prefork
children, sharing the default multiprocess directory (`<data_dir>/metrics`). Whichever web
worker answers a scrape, it reports every process's counters; a killed web worker's counts
stay; and the JSON log lines follow one request from intake to the Engage write."""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from tests.helpers.support import (
    Process,
    decision,
    emulator_contact,
    free_port,
    is_up,
    signed_headers,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
TOKEN = "integration-metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class MetricsStack:
    url: str
    engage: str
    workdir: Path
    web: Process
    worker: Process

    def post(self, body: bytes, **headers: str) -> requests.Response:
        signed = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        return requests.post(
            f"{self.url}/webhooks/signup", data=body, headers={**signed, **headers}, timeout=10
        )

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = requests.get(f"{self.url}/metrics", headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }

    def web_pids(self) -> set[int]:
        """Pids of the web workers that answered a webhook, from their JSON access lines."""
        return {
            line["pid"]
            for line in json_lines(self.web.output())
            if line.get("logger") == "gunicorn.access" and line.get("path") == "/webhooks/signup"
        }


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))


def _env(config: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return {**env, "CONSENT_RELAY_CONFIG": str(config), "PORT": str(port), "WEB_CONCURRENCY": "2"}


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory, engage: str) -> Iterator[MetricsStack]:
    workdir = tmp_path_factory.mktemp("metrics")
    config = write_config(workdir / "relay.toml", data_dir=workdir / "var", engage_url=engage)
    config.write_text(config.read_text() + f'\n[metrics]\ntoken = "{TOKEN}"\n')
    upgrade(make_engine(load_settings(config, environ={}).database_url))
    port = free_port()
    env = _env(config, port)
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", "python:service.http.gunicorn_conf"]
    web = Process([*gunicorn, "service:create_app()"], env, workdir, workdir / "web.log")
    celery = [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "--concurrency=2"]
    worker = Process(
        [*celery, "--without-gossip", "--without-mingle"], env, workdir, workdir / "worker.log"
    )
    try:
        wait_for(lambda: is_up(f"http://127.0.0.1:{port}/healthz"), 60, "web /healthz")
        wait_for(lambda: web.output().count("Booting worker") >= 2, 60, "2 web workers")
        worker.wait_output("ready.", 60)
        yield MetricsStack(f"http://127.0.0.1:{port}", engage, workdir, web, worker)
    finally:
        web.stop()
        worker.stop()


def _send_until_both_web_workers_answered(metrics_stack: MetricsStack) -> list[str]:
    """New contacts, 4 at a time, until both web workers have handled some (each connection
    is new, so gunicorn's workers take turns accepting them)."""
    emails: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        while len(metrics_stack.web_pids()) < 2 or len(emails) < 8:
            assert len(emails) < 80, "one web worker answered every request"
            batch = [f"metrics.{uuid.uuid4().hex[:10]}@example.org" for _ in range(4)]
            answers = list(pool.map(lambda e: metrics_stack.post(decision(e, "granted")), batch))
            assert [a.status_code for a in answers] == [202] * 4
            emails += batch
    return emails


def test_counters_are_merged_across_web_workers_and_celery_children(
    metrics_stack: MetricsStack,
) -> None:
    emails = _send_until_both_web_workers_answered(metrics_stack)
    duplicate_body = decision(emails[0], "granted")
    headers = signed_headers(duplicate_body, msg_id="msg_dup_metrics")
    for _ in range(2):
        requests.post(
            f"{metrics_stack.url}/webhooks/signup", data=duplicate_body, headers=headers, timeout=10
        )
    forged = {**headers, "webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3IgdGhlIHRlc3Q="}
    assert (
        requests.post(
            f"{metrics_stack.url}/webhooks/signup", data=duplicate_body, headers=forged, timeout=10
        ).status_code
        == 401
    )
    for email in emails:
        wait_for(
            lambda e=email: emulator_contact(metrics_stack.engage, e), 60, f"delivery of {email}"
        )
    accepted = len(emails) + 1  # the duplicate's first post was a new decision

    def settled() -> dict[Any, float] | None:
        samples = metrics_stack.scrape()
        pending = total(samples, "consent_relay_pending_decisions", destination="engage")
        written = total(samples, "consent_relay_deliveries_total", outcome="delivered")
        observed = total(samples, "consent_relay_delivery_latency_seconds_count")
        return samples if pending == 0 and written == observed else None

    samples = wait_for(settled, 30, "nothing pending")
    # The second decision for emails[0] is written, or coalesced with the first if it came
    # while that one was still waiting.
    delivered = total(samples, "consent_relay_deliveries_total", outcome="delivered")
    assert delivered in (len(emails), len(emails) + 1)
    # Every scrape (whichever web worker answers it) shows the same merged totals.
    for _ in range(6):
        again = metrics_stack.scrape()
        for name, labels in [
            ("consent_relay_intake_total", {"outcome": "accepted"}),
            ("consent_relay_intake_total", {"outcome": "duplicate"}),
            ("consent_relay_intake_total", {"reason": "signature"}),
            ("consent_relay_deliveries_total", {"outcome": "delivered"}),
            ("consent_relay_delivery_latency_seconds_count", {"destination": "engage"}),
        ]:
            assert total(again, name, **labels) == total(samples, name, **labels), name
    assert total(samples, "consent_relay_intake_total", outcome="accepted") == accepted
    assert total(samples, "consent_relay_intake_total", outcome="duplicate") == 1
    assert total(samples, "consent_relay_intake_total", reason="signature") == 1
    assert total(samples, "consent_relay_delivery_latency_seconds_count") == delivered
    assert total(samples, "consent_relay_pending_decisions", destination="engage") == 0
    assert total(samples, "consent_relay_destination_paused", destination="engage") == 0
    assert total(samples, "consent_relay_ledger_up") == 1
    files = {p.name for p in (metrics_stack.workdir / "var" / "metrics").iterdir()}
    assert len({name.rsplit("_", 1)[1] for name in files}) >= 3  # 2 web workers + a child


def test_a_killed_web_worker_keeps_its_counts(metrics_stack: MetricsStack) -> None:
    before = total(metrics_stack.scrape(), "consent_relay_intake_total", outcome="accepted")
    victim = sorted(metrics_stack.web_pids())[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: metrics_stack.web.output().count("Booting worker") >= 3, 30, "a new web worker"
    )
    wait_for(lambda: is_up(f"{metrics_stack.url}/healthz"), 30, "web answers")
    assert total(metrics_stack.scrape(), "consent_relay_intake_total", outcome="accepted") == before
    assert metrics_stack.post(decision(f"after.{uuid.uuid4().hex[:8]}@example.org", "denied")).ok
    assert (
        total(metrics_stack.scrape(), "consent_relay_intake_total", outcome="accepted")
        == before + 1
    )


def test_one_request_can_be_followed_from_intake_to_engage(metrics_stack: MetricsStack) -> None:
    email = f"follow.{uuid.uuid4().hex[:8]}@example.org"
    answer = metrics_stack.post(decision(email, "withdrawn"), **{"X-Request-ID": "it-follow-1"})
    assert answer.status_code == 202 and answer.headers["X-Request-ID"] == "it-follow-1"
    event_id = answer.json()["event_id"]

    def delivered_line() -> dict[str, Any] | None:
        for line in json_lines(metrics_stack.worker.output()):
            if line.get("event") == "delivered" and line.get("event_id") == event_id:
                return line
        return None

    line = wait_for(delivered_line, 30, "the worker's delivered line")
    assert line["request_id"] == "it-follow-1" and line["task_id"]
    assert line["destination"] == "engage"
    web = [
        x for x in json_lines(metrics_stack.web.output()) if x.get("request_id") == "it-follow-1"
    ]
    assert {x["event"] for x in web} >= {"accepted", "request"}
    assert all(x.get("event_id") == event_id for x in web if x["event"] == "accepted")
    for output in (metrics_stack.web.output(), metrics_stack.worker.output()):
        assert email not in output.lower()
