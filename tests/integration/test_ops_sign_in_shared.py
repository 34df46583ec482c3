"""The /ops sign-in throttle and sign-out under real processes: gunicorn with 2 workers on a
PostgreSQL ledger. Failures counted by either worker throttle the client at both, and a
sign-out answered by one worker ends the session at both."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from service.ops.throttle import CLIENT_LIMIT
from tests.helpers.support import Process, free_port, is_up, wait_for, write_config

pytestmark = pytest.mark.integration
PASSWORD = "integration-operator-password"
CLOSE = {"Connection": "close"}  # a new connection each time: gunicorn's workers take turns
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def shared_web(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[tuple[str, Process]]:
    workdir = tmp_path_factory.mktemp("ops-shared")
    config = write_config(
        workdir / "relay.toml",
        data_dir=workdir / "var",
        engage_url="http://127.0.0.1:9",
        database_url=postgres_url,
        extra=f'\n[admin]\nusername = "operator"\npassword = "{PASSWORD}"\n',
    )
    upgrade(make_engine(load_settings(config, environ={}).database_url))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"CONSENT_RELAY_CONFIG": str(config), "PORT": str(port), "WEB_CONCURRENCY": "2"}
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", "python:service.http.gunicorn_conf"]
    process = Process([*gunicorn, "service:create_app()"], env, workdir, workdir / "web.log")
    try:
        wait_for(lambda: process.output().count("Booting worker") >= 2, 60, "2 web workers")
        wait_for(lambda: is_up(f"http://127.0.0.1:{port}/healthz"), 60, "web /healthz")
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.stop()


def sign_in(browser: requests.Session, url: str, password: str) -> requests.Response:
    form = browser.get(f"{url}/ops/login", headers=CLOSE, timeout=10).text
    data = {"username": "operator", "password": password, "csrf_token": TOKEN.findall(form)[0]}
    return browser.post(
        f"{url}/ops/login", data=data, headers=CLOSE, allow_redirects=False, timeout=10
    )


def answered_by(process: Process, method: str, path: str, status: int) -> set[int]:
    """Pids of the web workers whose access lines show that answer."""
    lines = [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]
    return {
        line["pid"]
        for line in lines
        if line.get("logger") == "gunicorn.access"
        and (line.get("method"), line.get("path"), line.get("status")) == (method, path, status)
    }


def test_both_workers_throttle_a_client_and_end_a_signed_out_session(
    shared_web: tuple[str, Process],
) -> None:
    url, process = shared_web
    operator = requests.Session()
    assert sign_in(operator, url, PASSWORD).status_code == 303
    thief = requests.Session()
    thief.cookies.update(operator.cookies)
    copied = thief.get(f"{url}/ops", headers=CLOSE, allow_redirects=False, timeout=10)
    assert copied.status_code == 200  # a copy of the cookie works, until the sign-out

    for _ in range(CLIENT_LIMIT):
        assert sign_in(requests.Session(), url, "wrong-password-1").status_code == 401
    attempts: list[Any] = []
    while len(answered_by(process, "POST", "/ops/login", 429)) < 2:
        assert len(attempts) < 40, "one web worker answered every attempt"
        throttled = sign_in(requests.Session(), url, PASSWORD)
        assert throttled.status_code == 429
        assert 0 < int(throttled.headers["Retry-After"]) <= 900
        attempts.append(throttled)

    page = operator.get(f"{url}/ops", headers=CLOSE, allow_redirects=False, timeout=10)
    token = TOKEN.findall(page.text)[0]
    out = operator.post(
        f"{url}/ops/logout", data={"csrf_token": token}, headers=CLOSE, allow_redirects=False
    )
    assert out.status_code == 303
    tries = 0
    while len(answered_by(process, "GET", "/ops", 302)) < 2:  # both workers refuse the copy
        assert tries < 40, "one web worker answered every request"
        answer = thief.get(f"{url}/ops", headers=CLOSE, allow_redirects=False, timeout=10)
        assert answer.status_code == 302
        tries += 1
