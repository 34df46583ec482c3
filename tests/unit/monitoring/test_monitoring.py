"""The alert rules and the Grafana dashboard in monitoring/ (docs/operations/alerts.md):

- `promtool check rules` and `promtool test rules` pass (promtool from Debian's `prometheus`
  package, installed by .ci/install-promtool). Under CI=true a missing promtool fails the
  test loudly; elsewhere it is skipped with the reason.
- every metric the rules and every panel's query name is one GET /metrics really exports: the
  names are read from a real scrape registry (the counters and the histogram of
  relay/telemetry/metrics.py, the ledger gauges of service/health/metrics_http.py over a real
  migrated ledger), not from a list kept by hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from relay.config.loader import load_settings
from relay.ledger import chain_store
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.telemetry import metrics
from service import create_app
from service.health.metrics_http import scrape_registry
from tests.helpers.support import write_config

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"
METRIC = re.compile(r"\bconsent_relay_[a-z_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("promtool is missing: .ci/install-promtool installs Debian's prometheus")
    pytest.skip("promtool not installed (Debian: apt-get install prometheus; CI installs it)")


def test_the_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == fired


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The sample names a scrape of GET /metrics can carry."""
    tmp = tmp_path_factory.mktemp("scrape")
    config = write_config(tmp / "relay.toml", data_dir=tmp / "var", engage_url="http://127.0.0.1:9")
    settings = load_settings(config, environ={})
    upgrade(make_engine(settings.database_url))
    app = create_app({"SETTINGS": settings, "TESTING": True})
    with app.extensions["consent_relay"].sessions() as session:
        chain_store.verify(session)  # the last verification's gauges exist after one has run
        session.commit()
    names: set[str] = set()
    # The process's own registry too: in multiprocess mode (another test may have switched
    # prometheus_client to it) a scrape carries only the counters some process has written.
    own = metrics.metrics().registry.collect()
    for family in [*own, *scrape_registry(app.extensions["consent_relay"]).collect()]:
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_scrape_exports_what_the_docs_list(exported: set[str]) -> None:
    documented = set(METRIC.findall((ROOT / "docs/operations/metrics.md").read_text()))
    assert documented <= exported | {"consent_relay_delivery_latency_seconds"}
    assert "consent_relay_drift_total" in exported and "consent_relay_ledger_up" in exported


def test_every_alert_names_an_exported_metric(exported: set[str]) -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            named = set(METRIC.findall(rule["expr"]))
            assert named, rule["alert"]
            assert named <= exported, (rule["alert"], named - exported)


def test_every_dashboard_panel_queries_an_exported_metric(exported: set[str]) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["panels"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(METRIC.findall(target["expr"]))
            assert named, (panel["title"], target["expr"])
            assert named <= exported, (panel["title"], named - exported)
            used |= named
    # The dashboard shows every metric there is (a histogram through its buckets).
    assert exported - used <= {
        "consent_relay_delivery_latency_seconds_sum",
        "consent_relay_delivery_latency_seconds_count",
    }
