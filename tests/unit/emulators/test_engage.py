"""The Mapp Engage emulator, exercised over real HTTP (docs/reference/engage.md)."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from emulators.engage import EmulatorServer, EngageState, create_emulator_app
from tests.helpers.support import free_port

USERNAME = "api-user@example.com"
PASSWORD = "engage-demo-password"
AUTH = (USERNAME, PASSWORD)
REPO_ROOT = Path(__file__).resolve().parents[3]
CONSENT = [
    {"name": "tracking_consent", "value": "denied"},
    {"name": "tracking_consent_source", "value": "preference_center"},
]


@pytest.fixture
def engage_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(create_emulator_app()) as server:
        yield server


def api(server: EmulatorServer, call: str, body: Any = None, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.post(f"{server.url}/api/rest/{call}", json=body, timeout=5, **kwargs)


def create(server: EmulatorServer, email: str, attributes: list | None = None) -> requests.Response:
    return api(server, "contact/create", {"emailAddress": email, "attributes": attributes or []})


def update(server: EmulatorServer, email: str, attributes: list) -> requests.Response:
    params = {"identifierType": "EMAIL", "unifiedIdentifierName": email}
    body = {"emailAddress": email, "attributes": attributes}
    return api(server, "contact/update", body, params=params)


def state_of(server: EmulatorServer) -> dict[str, Any]:
    response = requests.get(f"{server.url}/_emulator/state", timeout=5)
    assert response.status_code == 200
    return response.json()


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_missing_authorization_header_gives_401(engage_server: EmulatorServer) -> None:
    response = api(
        engage_server, "contact/get", {"type": "EMAIL", "value": "a@example.com"}, auth=None
    )
    assert response.status_code == 401
    assert response.json()["errorActor"] == "CLIENT"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": basic(USERNAME, "wrong")},
        {"Authorization": basic("other@example.com", PASSWORD)},
        {"Authorization": "Basic not-base64!!"},
        {"Authorization": "Bearer some-token"},
    ],
)
def test_bad_credentials_give_403_permission_denied(
    engage_server: EmulatorServer, headers: dict[str, str]
) -> None:
    response = api(
        engage_server,
        "contact/create",
        {"emailAddress": "a@example.com"},
        auth=None,
        headers=headers,
    )
    body = response.json()
    assert response.status_code == 403
    assert body["errorCode"] == "PERMISSION_DENIED"
    assert "Type 'API' or 'Hybrid'" in body["message"]
    assert state_of(engage_server)["contacts"] == {}


def test_non_json_content_type_gives_415_but_charset_is_allowed(
    engage_server: EmulatorServer,
) -> None:
    url = f"{engage_server.url}/api/rest/contact/create"
    data = b'{"emailAddress": "a@example.com"}'
    bad = requests.post(
        url, data=data, auth=AUTH, timeout=5, headers={"Content-Type": "text/plain"}
    )
    good = requests.post(
        url,
        data=data,
        auth=AUTH,
        timeout=5,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert bad.status_code == 415
    assert good.status_code == 200


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/xml", 406),
        ("text/html, application/json;q=0", 406),
        ("application/*", 200),
        ("*/*", 200),
        ("application/json", 200),
    ],
)
def test_accept_header_must_allow_json(
    engage_server: EmulatorServer, accept: str, status: int
) -> None:
    body = {"emailAddress": "a@example.com"}
    response = api(engage_server, "contact/create", body, headers={"Accept": accept})
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")


def test_unknown_path_gives_404_envelope(engage_server: EmulatorServer) -> None:
    response = api(engage_server, "contact/updateBatch", {})
    body = response.json()
    assert response.status_code == 404
    assert (body["errorActor"], body["errorCode"], body["message"]) == (
        "CLIENT",
        "INVALID_REQUEST",
        "Not Found",
    )


def test_update_of_missing_contact_gives_no_such_object(engage_server: EmulatorServer) -> None:
    response = update(engage_server, "nobody.here@example.com", CONSENT)
    body = response.json()
    assert response.status_code == 400
    assert body["errorCode"] == "NO_SUCH_OBJECT"
    assert body["message"] == "Contact with identifier=nobody.here@example.com does not exist."
    assert body["objectType"] == "Contact"
    assert body["propertyName"] == "identifier"
    assert body["propertyValue"] == "nobody.here@example.com"
    assert body["errorId"]


def test_create_then_update_merges_attributes(engage_server: EmulatorServer) -> None:
    created = create(engage_server, "J.McExample@Example.com", [{"name": "city", "value": "Oslo"}])
    updated = update(engage_server, "j.mcexample@example.com", CONSENT)
    assert created.status_code == 200
    assert updated.status_code == 200
    assert updated.json()["contactId"] == created.json()["contactId"]
    assert updated.json()["emailAddress"] == "J.McExample@Example.com"
    contact = state_of(engage_server)["contacts"]["j.mcexample@example.com"]
    assert contact["emailAddress"] == "J.McExample@Example.com"
    assert contact["attributes"] == {
        "city": "Oslo",
        "tracking_consent": "denied",
        "tracking_consent_source": "preference_center",
    }
    assert [entry["call"] for entry in contact["history"]] == ["create", "update"]
    assert contact["history"][1]["attributes"]["tracking_consent"] == "denied"


def test_create_twice_reports_existing_contact(engage_server: EmulatorServer) -> None:
    assert create(engage_server, "a@example.com").status_code == 200
    second = create(engage_server, "A@EXAMPLE.COM")
    body = second.json()
    assert second.status_code == 400
    assert (body["errorCode"], body["message"], body["objectType"]) == (
        "INVALID_PARAMETER",
        "Such contact already exists",
        "Contact",
    )
    assert len(state_of(engage_server)["contacts"]) == 1


def test_create_assigns_increasing_ids_and_requires_email(engage_server: EmulatorServer) -> None:
    first = create(engage_server, "a@example.com").json()["contactId"]
    second = create(engage_server, "b@example.com").json()["contactId"]
    missing = api(engage_server, "contact/create", {"attributes": []})
    assert second > first
    assert missing.status_code == 400
    assert missing.json()["errorCode"] == "MISSING_PARAMETER"


def test_get_returns_contact_or_no_such_object(engage_server: EmulatorServer) -> None:
    create(engage_server, "a@example.com", CONSENT)
    found = api(engage_server, "contact/get", {"type": "EMAIL", "value": "A@example.com"})
    missing = api(engage_server, "contact/get", {"type": "EMAIL", "value": "z@example.com"})
    lowercase = api(engage_server, "contact/get", {"type": "email", "value": "a@example.com"})
    assert found.status_code == 200
    assert found.json()["emailAddress"] == "a@example.com"
    assert {"name": "tracking_consent", "value": "denied"} in found.json()["attributes"]
    assert (missing.status_code, missing.json()["errorCode"]) == (400, "NO_SUCH_OBJECT")
    assert (lowercase.status_code, lowercase.json()["errorCode"]) == (400, "INVALID_PARAMETER")


@pytest.mark.parametrize(
    "params",
    [{}, {"identifierType": "EMAIL"}, {"unifiedIdentifierName": "a@example.com"}],
)
def test_update_requires_both_query_parameters(
    engage_server: EmulatorServer, params: dict[str, str]
) -> None:
    create(engage_server, "a@example.com")
    response = api(engage_server, "contact/update", {"attributes": CONSENT}, params=params)
    body = response.json()
    assert response.status_code == 400
    assert body["errorCode"] == "MISSING_PARAMETER"
    assert body["message"] == "Parameter unifiedIdentifierName and identifierType are mandatory"


def test_update_only_emulates_email_identifier(engage_server: EmulatorServer) -> None:
    create(engage_server, "a@example.com")
    params = {"identifierType": "MOBILE", "unifiedIdentifierName": "a@example.com"}
    response = api(engage_server, "contact/update", {"attributes": CONSENT}, params=params)
    assert response.status_code == 400
    assert response.json()["parameterName"] == "identifierType"


def test_attribute_value_limit_is_2000_characters(engage_server: EmulatorServer) -> None:
    create(engage_server, "a@example.com")
    at_limit = update(engage_server, "a@example.com", [{"name": "note", "value": "x" * 2000}])
    too_long = update(engage_server, "a@example.com", [{"name": "note", "value": "y" * 2001}])
    assert at_limit.status_code == 200
    assert too_long.status_code == 400
    assert too_long.json()["errorCode"] == "INVALID_PARAMETER"
    stored = state_of(engage_server)["contacts"]["a@example.com"]["attributes"]["note"]
    assert stored == "x" * 2000


@pytest.mark.parametrize(
    "attributes",
    ["denied", [{"name": "tracking_consent"}], [{"name": "n", "value": 1}], ["x"]],
)
def test_malformed_attributes_are_invalid_parameter(
    engage_server: EmulatorServer, attributes: Any
) -> None:
    create(engage_server, "a@example.com")
    response = update(engage_server, "a@example.com", attributes)
    body = response.json()
    assert response.status_code == 400
    assert (body["errorCode"], body["parameterName"]) == ("INVALID_PARAMETER", "attributes")


def test_malformed_json_cannot_be_deserialized(engage_server: EmulatorServer) -> None:
    response = requests.post(
        f"{engage_server.url}/api/rest/contact/create",
        data=b"{not json",
        auth=AUTH,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    body = response.json()
    assert response.status_code == 400
    assert (body["errorCode"], body["message"]) == ("INVALID_REQUEST", "cannot deserialize value")


def test_v19_prefix_serves_the_same_api(engage_server: EmulatorServer) -> None:
    url = f"{engage_server.url}/api/rest/v19/contact/create"
    response = requests.post(url, json={"emailAddress": "v@example.com"}, auth=AUTH, timeout=5)
    assert response.status_code == 200
    assert "v@example.com" in state_of(engage_server)["contacts"]
    assert state_of(engage_server)["requests"][-1]["path"] == "/api/rest/v19/contact/create"


def test_request_log_and_counts_include_failures(engage_server: EmulatorServer) -> None:
    update(engage_server, "a@example.com", CONSENT)
    create(engage_server, "a@example.com")
    update(engage_server, "a@example.com", CONSENT)
    api(engage_server, "contact/get", {}, auth=None)
    snapshot = state_of(engage_server)
    assert [r["status"] for r in snapshot["requests"]] == [400, 200, 200, 401]
    assert snapshot["requests"][0]["query"]["identifierType"] == "EMAIL"
    assert snapshot["counts"] == {"update": 1, "create": 1, "get": 0, "edit": 0, "delete": 0}


def test_inspection_contact_endpoint(engage_server: EmulatorServer) -> None:
    create(engage_server, "a@example.com", CONSENT)
    found = requests.get(f"{engage_server.url}/_emulator/contacts/A@example.com", timeout=5)
    missing = requests.get(f"{engage_server.url}/_emulator/contacts/z@example.com", timeout=5)
    assert found.status_code == 200
    assert found.json()["attributes"]["tracking_consent"] == "denied"
    assert missing.status_code == 404


def test_reset_clears_everything(engage_server: EmulatorServer) -> None:
    create(engage_server, "a@example.com")
    response = requests.post(f"{engage_server.url}/_emulator/reset", timeout=5)
    snapshot = state_of(engage_server)
    faults = snapshot.pop("faults")
    assert response.status_code == 204
    assert snapshot == {
        "contacts": {},
        "requests": [],
        "requests_total": 0,
        "counts": {"update": 0, "create": 0, "get": 0, "edit": 0, "delete": 0},
    }
    assert set(faults["counters"].values()) == {0}
    assert create(engage_server, "a@example.com").status_code == 200


def test_state_object_is_shared_and_thread_safe() -> None:
    state = EngageState(USERNAME, PASSWORD)
    with EmulatorServer(create_emulator_app(state)) as server:
        threads = [
            threading.Thread(target=create, args=(server, f"u{i}@example.com")) for i in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = [c["contactId"] for c in state.snapshot()["contacts"].values()]
    assert len(ids) == 20
    assert len(set(ids)) == 20


def test_access_log_has_no_email_addresses(
    engage_server: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="emulators.engage"):
        update(engage_server, "secret.person@example.com", CONSENT)
        requests.get(f"{engage_server.url}/_emulator/contacts/secret.person@example.com", timeout=5)
        time.sleep(0.1)  # the access log line is written after the response is sent
    assert "/api/rest/contact/update 400" in caplog.text
    assert "secret.person" not in caplog.text
    assert PASSWORD not in caplog.text


def test_cli_serves_on_the_given_port() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ENGAGE_EMULATOR_PASSWORD": "cli-secret"}
    command = [sys.executable, "-m", "emulators.engage", "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        response = _wait_for(f"{url}/api/rest/contact/create", (USERNAME, "cli-secret"))
        assert response.status_code == 200
        assert response.json()["emailAddress"] == "cli@example.com"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert f"listening on {url}" in stderr
    assert "cli-secret" not in stderr
    assert "cli@example.com" not in stderr


def _wait_for(url: str, auth: tuple[str, str]) -> requests.Response:
    deadline = time.monotonic() + 15
    while True:
        try:
            return requests.post(
                url, json={"emailAddress": "cli@example.com"}, auth=auth, timeout=2
            )
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
