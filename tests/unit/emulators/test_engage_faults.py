"""Runtime faults of the Engage emulator, over real HTTP
(docs/reference/engage.md#responses-and-errors, docs/reference/engage.md#rate-limits)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from emulators.engage import EmulatorServer, EngageState, Faults, create_emulator_app, parse_cli
from emulators.engage_faults import FaultConfigError

USERNAME = "api-user@example.com"
PASSWORD = "engage-demo-password"
AUTH = (USERNAME, PASSWORD)
EMAIL = "jane.doe@example.com"
CONSENT = [{"name": "tracking_consent", "value": "denied"}]
OFF = {
    "rate_limit_per_second": None,
    "error_rate": 0.0,
    "error_status": 503,
    "hang_rate": 0.0,
    "hang_seconds": 30.0,
    "latency_ms": 0.0,
    "visibility_delay_seconds": 0.0,
    "auth_failure": None,
    "seed": None,
}
State = Callable[[], dict[str, Any]]


def set_faults(server: EmulatorServer, **changes: Any) -> dict[str, Any]:
    response = requests.put(f"{server.url}/_emulator/faults", json=changes, timeout=5)
    assert response.status_code == 200, response.text
    faults: dict[str, Any] = response.json()
    return faults


def faults_of(server: EmulatorServer) -> dict[str, Any]:
    faults: dict[str, Any] = requests.get(f"{server.url}/_emulator/faults", timeout=5).json()
    return faults


def probe(
    server: EmulatorServer, auth: Any = AUTH, prefix: str = "/api/rest", timeout: float = 5
) -> requests.Response:
    url = f"{server.url}{prefix}/system/getApiVersion"
    return requests.get(url, auth=auth, timeout=timeout)


def create(server: EmulatorServer) -> requests.Response:
    body = {"emailAddress": EMAIL, "attributes": CONSENT}
    return requests.post(f"{server.url}/api/rest/contact/create", json=body, auth=AUTH, timeout=5)


def update(server: EmulatorServer) -> requests.Response:
    params = {"identifierType": "EMAIL", "unifiedIdentifierName": EMAIL}
    body = {"emailAddress": EMAIL, "attributes": [{"name": "tracking_consent", "value": "granted"}]}
    url = f"{server.url}/api/rest/contact/update"
    return requests.post(url, params=params, json=body, auth=AUTH, timeout=5)


def get(server: EmulatorServer) -> requests.Response:
    body = {"type": "EMAIL", "value": EMAIL}
    return requests.post(f"{server.url}/api/rest/contact/get", json=body, auth=AUTH, timeout=5)


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
    return value


@pytest.fixture
def hanging() -> Iterator[tuple[EmulatorServer, EngageState]]:
    state = EngageState(USERNAME, PASSWORD)
    app = create_emulator_app(state, faults=Faults(hang_rate=1.0, hang_seconds=30))
    server = EmulatorServer(app).start()
    yield server, state
    server.stop()


# --- rate limit (docs/reference/engage.md#rate-limits)
# -------------------------------------------------------------------------


def test_rate_limit_answers_500_database_access_limit_exceeded(
    emulator: EmulatorServer, emulator_state: State
) -> None:
    set_faults(emulator, rate_limit_per_second=5)
    barrier = threading.Barrier(8)

    def fire(_: int) -> requests.Response:
        barrier.wait()
        return probe(emulator)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(fire, range(8)))
    rejected = [r for r in responses if r.status_code == 500]
    assert sorted(r.status_code for r in responses) == [200] * 5 + [500] * 3
    for response in rejected:
        body = response.json()
        assert body["message"] == "Database Access Limit Exceeded"
        assert (body["errorActor"], body["errorCode"]) == ("SERVER", "INVALID_REQUEST")
        assert "Retry-After" not in response.headers
    assert faults_of(emulator)["counters"]["rate_limit_violations"] == 3
    assert [r["status"] for r in emulator_state()["requests"]].count(500) == 3
    time.sleep(1.1)  # the 1-second window has moved past the burst
    assert probe(emulator).status_code == 200


def test_rate_window_counts_rejected_arrivals() -> None:
    faults = Faults(rate_limit_per_second=2)
    assert [faults.arrive(t) for t in (0.0, 0.1, 0.2)] == [True, True, False]
    # At 1.05 the window holds 0.1, 0.2 (rejected, still counted) and 1.05: over the limit.
    assert faults.arrive(1.05) is False
    assert faults.arrive(1.25) is True  # 0.1 and 0.2 have left the window
    assert (faults.rate_limit_violations, faults.api_requests) == (2, 5)


# --- random server errors ----------------------------------------------------------------------


def test_error_rate_one_and_zero(emulator: EmulatorServer, emulator_state: State) -> None:
    set_faults(emulator, error_rate=1.0)
    unavailable = create(emulator)
    assert unavailable.status_code == 503
    assert unavailable.json()["errorActor"] == "SERVER"
    assert probe(emulator, auth=(USERNAME, "wrong")).status_code == 403  # auth checked first
    set_faults(emulator, error_status=500)
    failed = probe(emulator)
    assert failed.status_code == 500
    assert failed.json()["message"] != "Database Access Limit Exceeded"
    set_faults(emulator, error_rate=0.0)
    assert probe(emulator).status_code == 200
    assert emulator_state()["contacts"] == {}
    assert faults_of(emulator)["counters"]["injected_errors"] == 2


def test_seeded_error_rate_is_reproducible(emulator: EmulatorServer) -> None:
    set_faults(emulator, error_rate=0.3, seed=1234)
    statuses = [probe(emulator).status_code for _ in range(40)]
    draws = random.Random(1234)
    expected = [503 if draws.random() < 0.3 else 200 for _ in range(40)]
    assert statuses == expected
    assert 0 < statuses.count(503) < 40
    assert faults_of(emulator)["counters"]["injected_errors"] == statuses.count(503)


# --- hangs and latency -------------------------------------------------------------------------


def test_hang_times_out_the_client_and_is_never_applied(
    emulator: EmulatorServer, emulator_state: State
) -> None:
    set_faults(emulator, hang_rate=1.0, hang_seconds=2)
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{emulator.url}/api/rest/contact/create",
            json={"emailAddress": EMAIL},
            auth=AUTH,
            timeout=0.3,
        )
    assert emulator_state()["contacts"] == {}
    assert faults_of(emulator)["counters"]["hangs"] == 1
    set_faults(emulator, hang_rate=0.0)  # releases the hung request: it answers 504
    wait_until(lambda: [r["status"] for r in emulator_state()["requests"]] == [504])
    assert emulator_state()["contacts"] == {}
    assert create(emulator).status_code == 200


def test_server_stop_releases_hung_requests(
    hanging: tuple[EmulatorServer, EngageState],
) -> None:
    server, state = hanging
    with pytest.raises(requests.Timeout):
        probe(server, timeout=0.3)
    server.stop()
    wait_until(lambda: [r["status"] for r in state.snapshot()["requests"]] == [504])


def test_latency_delays_every_request(emulator: EmulatorServer) -> None:
    set_faults(emulator, latency_ms=150)
    started = time.monotonic()
    assert probe(emulator).status_code == 200
    assert time.monotonic() - started >= 0.15


# --- delayed visibility (docs/reference/engage.md#endpoints checkUpdateVersion)
# ----------------------------------------------


def test_created_contact_is_visible_only_after_the_delay(
    emulator: EmulatorServer, emulator_state: State
) -> None:
    set_faults(emulator, visibility_delay_seconds=0.6)
    assert create(emulator).status_code == 200
    missing = update(emulator)
    assert (missing.status_code, missing.json()["errorCode"]) == (400, "NO_SUCH_OBJECT")
    assert get(emulator).json()["errorCode"] == "NO_SUCH_OBJECT"
    again = create(emulator)
    assert (again.status_code, again.json()["message"]) == (400, "Such contact already exists")
    contact = emulator_state()["contacts"][EMAIL]
    assert (contact["visible"], contact["attributes"]) == (False, {"tracking_consent": "denied"})
    assert contact["visible_at"]
    wait_until(lambda: emulator_state()["contacts"][EMAIL]["visible"])
    assert update(emulator).status_code == 200
    assert {"name": "tracking_consent", "value": "granted"} in get(emulator).json()["attributes"]


# --- auth failures and the getApiVersion probe (docs/reference/engage.md#base-url-auth-headers,
# docs/reference/engage.md#responses-and-errors) ------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "Authorization header is missing"),
        (403, "check that the corresponding system user account is Type 'API' or 'Hybrid'"),
        (417, "Account expired"),
    ],
)
def test_forced_auth_failure(
    emulator: EmulatorServer, emulator_state: State, status: int, message: str
) -> None:
    set_faults(emulator, auth_failure=status)
    response = probe(emulator)
    body = response.json()
    assert response.status_code == status
    assert (body["errorActor"], body["errorCode"]) == ("CLIENT", "PERMISSION_DENIED")
    assert message in body["message"]
    assert ("WWW-Authenticate" in response.headers) is (status == 401)
    assert create(emulator).status_code == status
    assert emulator_state()["contacts"] == {}
    assert faults_of(emulator)["counters"]["auth_failures"] == 2


def test_get_api_version_goes_through_auth(emulator: EmulatorServer) -> None:
    for prefix in ("/api/rest", "/api/rest/v19"):
        response = probe(emulator, prefix=prefix)
        assert (response.status_code, response.json()) == (200, {"version": "19"})
    denied = probe(emulator, auth=(USERNAME, "wrong"))
    assert (denied.status_code, denied.json()["errorCode"]) == (403, "PERMISSION_DENIED")
    assert probe(emulator, auth=None).status_code == 401
    url = f"{emulator.url}/api/rest/system/getApiVersion"
    assert requests.post(url, json={}, auth=AUTH, timeout=5).status_code == 405


def test_app_can_start_with_faults() -> None:
    app = create_emulator_app(faults=Faults(auth_failure=417))
    with EmulatorServer(app) as server:
        assert probe(server).status_code == 417


# --- control endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"hang_rate": -0.1}, "hang_rate"),
        ({"error_status": 404}, "error_status"),
        ({"auth_failure": 500}, "auth_failure"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"hang_seconds": "long"}, "hang_seconds"),
        ({"rate_limit_per_second": True}, "rate_limit_per_second"),
        ({"visibility_delay_seconds": -2}, "visibility_delay_seconds"),
        ({"seed": 1.5}, "seed"),
        ({"latency_ms": 10, "no_such_fault": 1}, "no_such_fault"),
        ({"latency_ms": 10, "error_rate": 2}, "error_rate"),
    ],
)
def test_invalid_fault_settings_are_rejected(
    emulator: EmulatorServer, changes: dict[str, Any], field: str
) -> None:
    response = requests.put(f"{emulator.url}/_emulator/faults", json=changes, timeout=5)
    body = response.json()
    assert response.status_code == 400
    assert body["parameterName"] == field
    assert field in body["message"]
    assert faults_of(emulator)["config"] == OFF  # nothing of a bad update is applied


def test_faults_body_must_be_a_json_object(emulator: EmulatorServer) -> None:
    response = requests.put(f"{emulator.url}/_emulator/faults", json=[1], timeout=5)
    assert response.status_code == 400


def test_partial_updates_null_and_delete(emulator: EmulatorServer) -> None:
    assert set_faults(emulator, rate_limit_per_second=3)["config"] == {
        **OFF,
        "rate_limit_per_second": 3.0,
    }
    posted = requests.post(f"{emulator.url}/_emulator/faults", json={"latency_ms": 5}, timeout=5)
    assert posted.json()["config"]["rate_limit_per_second"] == 3.0
    turned_off = set_faults(emulator, rate_limit_per_second=None)
    assert turned_off["config"]["rate_limit_per_second"] is None
    probe(emulator)
    deleted = requests.delete(f"{emulator.url}/_emulator/faults", timeout=5).json()
    assert deleted["config"] == OFF
    assert deleted["counters"]["api_requests"] == 1  # DELETE keeps the counters


def test_reset_turns_faults_off_and_zeroes_counters(
    emulator: EmulatorServer, emulator_state: State
) -> None:
    set_faults(emulator, auth_failure=417, latency_ms=1, rate_limit_per_second=100)
    probe(emulator)
    assert emulator_state()["faults"]["counters"]["auth_failures"] == 1
    assert requests.post(f"{emulator.url}/_emulator/reset", timeout=5).status_code == 204
    faults = emulator_state()["faults"]
    assert faults["config"] == OFF
    assert set(faults["counters"].values()) == {0}
    assert probe(emulator).status_code == 200


def test_request_log_keeps_the_newest_entries_and_exact_totals() -> None:
    state = EngageState(USERNAME, PASSWORD, request_log_limit=3)
    with EmulatorServer(create_emulator_app(state)) as server:
        for _ in range(4):
            probe(server)
        probe(server, auth=None)
        counters = faults_of(server)["counters"]
    snapshot = state.snapshot()
    assert [r["status"] for r in snapshot["requests"]] == [200, 200, 401]
    assert snapshot["requests_total"] == 5
    assert counters["api_requests"] == 5


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_flags_set_the_initial_faults() -> None:
    argv = ["--rate-limit", "10", "--error-rate", "0.1", "--error-status", "502"]
    argv += ["--hang-rate", "0.05", "--hang-seconds", "2", "--latency-ms", "50"]
    argv += ["--visibility-delay", "1.5", "--auth-failure", "417", "--seed", "7"]
    args, faults = parse_cli(argv)
    assert args.port == 8025
    assert faults.snapshot()["config"] == {
        "rate_limit_per_second": 10.0,
        "error_rate": 0.1,
        "error_status": 502,
        "hang_rate": 0.05,
        "hang_seconds": 2.0,
        "latency_ms": 50.0,
        "visibility_delay_seconds": 1.5,
        "auth_failure": 417,
        "seed": 7,
    }
    assert parse_cli([])[1].snapshot()["config"] == OFF


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--error-rate", "2"], "--error-rate"),
        (["--error-status", "404"], "--error-status"),
        (["--auth-failure", "500"], "--auth-failure"),
        (["--latency-ms", "-5"], "--latency-ms"),
    ],
)
def test_cli_rejects_bad_fault_values(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_cli(argv)
    assert flag in capsys.readouterr().err


def test_faults_validate_their_constructor_arguments() -> None:
    with pytest.raises(FaultConfigError) as caught:
        Faults(hang_rate=2)
    assert caught.value.field == "hang_rate"
