"""/ops sign-in hardening: the throttle (per client and per account, shared through the
ledger by every web process, 429 with Retry-After, counted), the Secure cookie over HTTPS,
and sessions that end everywhere on sign-out and on a password change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from relay.telemetry import metrics
from service import create_app
from service.ops.throttle import ACCOUNT_LIMIT, CLIENT_LIMIT, WINDOW_SECONDS
from tests.helpers.ops_world import PASSWORD, Ops, build_ops

COOKIE = "consent_relay_ops"


def attempt(
    client: FlaskClient,
    password: str,
    *,
    address: str = "192.0.2.1",
    username: str = "operator",
    headers: dict[str, str] | None = None,
    base_url: str = "http://localhost",
) -> TestResponse:
    environ = {"REMOTE_ADDR": address}
    client.get("/ops/login", environ_base=environ, base_url=base_url)
    with client.session_transaction("/ops", base_url=base_url) as session:
        token = str(session["ops_csrf"])
    data = {"username": username, "password": password, "csrf_token": token}
    return client.post(
        "/ops/login", data=data, environ_base=environ, headers=headers or {}, base_url=base_url
    )


def counted(outcome: str) -> float:
    value = metrics.metrics().registry.get_sample_value(
        "consent_relay_ops_sign_ins_total", {"outcome": outcome}
    )
    return value or 0.0


def assert_throttled(response: TestResponse) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 0 < int(response.headers["Retry-After"]) <= WINDOW_SECONDS
    assert "Too many failed sign-ins" in response.get_data(as_text=True)


# --- the throttle -------------------------------------------------------------------------


def test_one_client_is_throttled_even_with_the_right_password(ops: Ops) -> None:
    before = counted("throttled_client"), counted("refused")
    for _ in range(CLIENT_LIMIT):
        assert attempt(ops.client, "wrong-password-1").status_code == 401

    assert_throttled(attempt(ops.client, "wrong-password-1"))
    assert_throttled(attempt(ops.client, PASSWORD))  # not even compared
    assert ops.client.get("/ops", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 302
    assert counted("throttled_client") - before[0] == 2
    assert counted("refused") - before[1] == CLIENT_LIMIT
    other = ops.app.test_client()
    assert attempt(other, PASSWORD, address="192.0.2.2").status_code == 303


def test_the_throttle_is_shared_by_every_web_process(ops: Ops) -> None:
    second: Flask = create_app({"SETTINGS": ops.settings, "TESTING": True})  # own engine
    for _ in range(CLIENT_LIMIT):
        assert attempt(ops.client, "wrong-password-1").status_code == 401

    assert_throttled(attempt(second.test_client(), PASSWORD))
    second.extensions["consent_relay"].engine.dispose()


def test_the_account_is_throttled_across_addresses(ops: Ops) -> None:
    before = counted("throttled_account")
    for number in range(ACCOUNT_LIMIT):
        response = attempt(ops.app.test_client(), "wrong-password-1", address=f"10.0.0.{number}")
        assert response.status_code == 401

    assert_throttled(attempt(ops.app.test_client(), PASSWORD, address="198.51.100.7"))
    assert counted("throttled_account") - before == 1


def test_wrong_user_names_do_not_lock_the_operator_out(ops: Ops) -> None:
    for number in range(ACCOUNT_LIMIT):
        attempt(ops.app.test_client(), "x", address=f"10.1.0.{number}", username=f"u{number}")

    assert attempt(ops.app.test_client(), PASSWORD, address="198.51.100.7").status_code == 303


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(ops: Ops) -> None:
    for number in range(CLIENT_LIMIT):
        forged = {"X-Forwarded-For": f"203.0.113.{number}"}
        assert attempt(ops.client, "wrong-password-1", headers=forged).status_code == 401

    assert_throttled(attempt(ops.client, PASSWORD, headers={"X-Forwarded-For": "203.0.113.99"}))


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(tmp_path: Path) -> None:
    app = proxied_app(tmp_path)
    proxy = "127.0.0.1"
    for _ in range(CLIENT_LIMIT):
        response = attempt(
            app.test_client(), "bad-pass-1", address=proxy, headers={"X-Forwarded-For": "1.2.3.4"}
        )
        assert response.status_code == 401

    blocked = attempt(
        app.test_client(), PASSWORD, address=proxy, headers={"X-Forwarded-For": "1.2.3.4"}
    )
    assert_throttled(blocked)
    other = attempt(
        app.test_client(), PASSWORD, address=proxy, headers={"X-Forwarded-For": "5.6.7.8"}
    )
    assert other.status_code == 303


def proxied_app(tmp_path: Path) -> Flask:
    tmp_path.mkdir(exist_ok=True)
    ops = build_ops(tmp_path)
    settings = dataclasses.replace(ops.settings, trusted_proxies=1)
    return create_app({"SETTINGS": settings, "TESTING": True})


# --- the cookie ---------------------------------------------------------------------------


def test_the_cookie_is_secure_over_https_only(ops: Ops, tmp_path: Path) -> None:
    https = attempt(ops.app.test_client(), PASSWORD, base_url="https://relay.example.com")
    assert https.status_code == 303
    assert "Secure" in https.headers["Set-Cookie"]
    http = attempt(ops.app.test_client(), PASSWORD, address="192.0.2.9")
    assert "Secure" not in http.headers["Set-Cookie"]
    # X-Forwarded-Proto counts only from a trusted proxy.
    forged = attempt(ops.app.test_client(), PASSWORD, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in forged.headers["Set-Cookie"]
    proxied = attempt(
        proxied_app(tmp_path / "p").test_client(),
        PASSWORD,
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "1.2.3.4"},
    )
    assert "Secure" in proxied.headers["Set-Cookie"]


# --- sessions end everywhere --------------------------------------------------------------


def copied_cookie(ops: Ops) -> FlaskClient:
    """Another browser holding a copy of the operator's current cookie."""
    cookie = ops.client.get_cookie(COOKIE, path="/ops")
    assert cookie is not None
    thief = ops.app.test_client()
    thief.set_cookie(COOKIE, cookie.value, path="/ops")
    assert thief.get("/ops").status_code == 200
    return thief


def test_sign_out_ends_every_session_copied_cookies_included(ops: Ops) -> None:
    assert attempt(ops.client, PASSWORD).status_code == 303
    thief = copied_cookie(ops)

    assert ops.post("/ops/logout").status_code == 303

    assert thief.get("/ops").status_code == 302
    assert attempt(ops.client, PASSWORD).status_code == 303  # a new sign-in works
    assert ops.client.get("/ops").status_code == 200
    assert thief.get("/ops").status_code == 302  # the old cookie stays void


def test_a_password_change_ends_every_session(ops: Ops) -> None:
    # A configured SECRET_KEY: the cookie's signature survives the change, the session not.
    first = create_app({"SETTINGS": ops.settings, "TESTING": True, "SECRET_KEY": "k" * 32})
    client = first.test_client()
    assert attempt(client, PASSWORD).status_code == 303
    cookie = client.get_cookie(COOKIE, path="/ops")
    assert cookie is not None
    changed = dataclasses.replace(
        ops.settings, ops=dataclasses.replace(ops.settings.ops, admin_password=PASSWORD + "-new")
    )
    second = create_app({"SETTINGS": changed, "TESTING": True, "SECRET_KEY": "k" * 32})
    after = second.test_client()
    after.set_cookie(COOKIE, cookie.value, path="/ops")

    assert after.get("/ops").status_code == 302
    assert attempt(after, PASSWORD + "-new").status_code == 303
