"""`kind = "hmac"` configured by hand (docs/sources/hmac.md): config that authenticates
nothing is refused, every way to read a signature, form bodies, event ids, and generated
headers and bodies that are never anything but a refusal or a decision."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.sources.base import SignatureError
from service.sources.hmac_body import answers
from service.sources.hmac_signature import Scheme, read_header, signature_headers, verify
from tests.helpers.source_world import SourceWorld, config_error

SECRET = "hand-configured-secret"
CONFIG = f"""
kind = "hmac"
secrets = ["{SECRET}"]
source = "form:{{form}}"

[sources.src.hmac]
header = "X-Signature"
prefix = "sha256="
timestamp_header = "X-Timestamp"
signed = "timestamp-body"
event_id = "body:submission.id"
variables = {{ form = "body:form" }}

[sources.src.mapping]
email = "submission.email"
consent = "submission.newsletter"
"""
BODY = (
    b'{"form": "footer", '
    b'"submission": {"id": "s-1", "email": "a@example.com", "newsletter": "yes"}}'
)


def hmac_table(**keys: str) -> str:
    lines = "\n".join(f"{key} = {value}" for key, value in keys.items())
    return (
        f'kind = "hmac"\nsecrets = ["{SECRET}"]\nsource = "x"\n'
        'mapping = { email = "email", consent = "consent" }\n'
        f"[sources.src.hmac]\n{lines}\n"
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"header": '"X-Sig"'}, "accept_replays = true to accept replays"),
        ({"header": '"X-Sig"', "timestamp_header": '"X-T"'}, "The timestamp is not signed"),
        ({"header": '"X-Sig"', "signed": '"timestamp-body"'}, "needs timestamp_header"),
        ({"header": '"X-Sig"', "timestamp_key": '"t"', "signed": '"timestamp-body"'}, "Needs"),
        ({"header": '"X-Sig"', "algorithm": '"md5"', "event_id": '"body-sha256"'}, "sha1"),
        ({"header": '"X-Sig"', "encoding": '"base32"', "event_id": '"body-sha256"'}, "hex"),
        ({"preset": '"acme"'}, "Must be one of"),
        ({"header": '"X Sig"', "event_id": '"body-sha256"'}, "header"),
        ({"header": '"X-Sig"', "event_id": '"json-path"'}, "event_id"),
    ],
)
def test_config_that_authenticates_nothing_is_refused_with_the_reason(
    tmp_path: Path, keys: dict[str, str], message: str
) -> None:
    assert message in config_error(tmp_path, hmac_table(**keys))


def test_replays_accepted_only_when_said_so(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, hmac_table(header='"X-Sig"', accept_replays="true"))
    body = b'{"email": "d@example.com", "consent": "yes"}'
    signed = source_world.kind.sign(body, "application/json", source_world.url, time.time())
    assert source_world.post(signed.url, signed.body, dict(signed.headers)).status_code == 202
    # The very same signed request is still one event (its id: the signature's digest)...
    again = source_world.post(signed.url, signed.body, dict(signed.headers))
    assert again.get_json()["duplicate"] is True
    # ...but nothing stops a replay under another spelling of the header: the opt-in's cost.
    spaced = {**signed.headers, "X-Sig": signed.headers["X-Sig"] + " "}
    assert source_world.post(signed.url, signed.body, spaced).status_code == 202
    assert len(source_world.events()) == 2


def test_mapping_email_and_template_names_are_checked(tmp_path: Path) -> None:
    no_email = hmac_table(header='"X-Sig"', event_id='"body-sha256"').replace(
        'email = "email", ', ""
    )
    assert "mapping.email: Required by kind 'hmac'" in config_error(tmp_path, no_email)
    unknown = hmac_table(header='"X-Sig"', event_id='"body-sha256"').replace(
        'source = "x"', 'source = "x:{shop}"'
    )
    assert "Unknown template field(s) ['shop']" in config_error(tmp_path, unknown)


def test_preset_values_are_overridden_by_the_keys_written(tmp_path: Path) -> None:
    table = hmac_table(preset='"github"', encoding='"base64"')
    settings = SourceWorld(tmp_path, table).kind.scheme  # type: ignore[attr-defined]
    assert (settings.header, settings.prefix, settings.encoding) == (
        "X-Hub-Signature-256",
        "sha256=",
        "base64",
    )


def test_hand_configured_source_records_once_and_refuses_forgeries(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG)
    signed = source_world.kind.sign(BODY, "application/json", source_world.url, time.time())
    assert source_world.post(signed.url, signed.body, dict(signed.headers)).status_code == 202
    [event] = source_world.events()
    assert (event["email"], event["decision"], event["consent_source"]) == (
        "a@example.com",
        "granted",
        "form:footer",
    )
    again = source_world.post(signed.url, signed.body, dict(signed.headers))
    assert again.get_json()["duplicate"] is True
    tampered = source_world.post(signed.url, BODY.replace(b"yes", b"no!"), dict(signed.headers))
    assert tampered.status_code == 401
    assert tampered.get_json()["detail"] == "No signature matches an active secret."
    headers = {k: v for k, v in signed.headers.items() if k != "X-Signature"}
    missing = source_world.post(signed.url, signed.body, headers)
    assert missing.status_code == 401
    assert missing.get_json()["detail"] == "Missing X-Signature header."
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert len(source_world.events()) == 1


def test_body_without_the_event_id_is_a_400(tmp_path: Path) -> None:
    source_world = SourceWorld(tmp_path, CONFIG)
    response = source_world.send(b'{"form": "footer", "submission": {}}')
    assert response.status_code == 400
    assert "No event id at 'body:submission.id'" in response.get_json()["detail"]


def scheme(**keys: str) -> Scheme:
    return Scheme(**{"header": "X-Sig", **keys})  # type: ignore[arg-type]


def mac(secret: str, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret.encode(), message, algorithm).digest()


def test_header_problems_are_named() -> None:
    with pytest.raises(SignatureError, match="Missing X-Sig header"):
        read_header(scheme(), {})
    with pytest.raises(SignatureError, match="starts with 'sha256='"):
        read_header(scheme(prefix="sha256="), {"x-sig": "sha1=" + "ab" * 20})
    with pytest.raises(SignatureError, match="is hex of a sha256 MAC"):
        read_header(scheme(), {"x-sig": "not-hex"})
    with pytest.raises(SignatureError, match="is base64 of a sha512 MAC"):
        read_header(scheme(encoding="base64", algorithm="sha512"), {"x-sig": "ab" * 32})
    with pytest.raises(SignatureError, match="exactly one t= timestamp"):
        read_header(
            scheme(signature_key="v1", timestamp_key="t"), {"x-sig": f"t=1,t=2,v1={'a' * 64}"}
        )


def test_any_of_several_signatures_with_any_algorithm_and_encoding() -> None:
    for algorithm in ("sha1", "sha256", "sha512"):
        for encoding in ("hex", "base64"):
            raw = mac(SECRET, b"body", algorithm)
            text = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()
            chosen = scheme(algorithm=algorithm, encoding=encoding, separator=" ")
            header = {"x-sig": f"{'0' * len(text)} {text}"}
            assert verify(chosen, header, b"body", "", ["other", SECRET], 300, 0) is None


def test_url_as_received_and_millisecond_timestamps() -> None:
    url = "https://relay.example.com/webhooks/src?list=a%2Cb"
    by_url = scheme(signed="url-body")
    header = {"x-sig": mac(SECRET, url.encode() + b"{}").hex()}
    assert verify(by_url, header, b"{}", url, [SECRET], 300, 0) is None
    with pytest.raises(SignatureError):
        verify(by_url, header, b"{}", url.replace("%2C", ","), [SECRET], 300, 0)
    millis = scheme(
        signed="timestamp-body",
        timestamp_header="X-Ts",
        timestamp_unit="milliseconds",
        timestamp_separator=":",
    )
    now = 1_700_000_000.5
    headers = {k.lower(): v for k, v in signature_headers(millis, SECRET, b"{}", "", now).items()}
    assert headers["x-ts"] == "1700000000500"
    assert verify(millis, headers, b"{}", "", [SECRET], 300, now) == 1700000000500
    with pytest.raises(SignatureError, match="too old"):
        verify(millis, headers, b"{}", "", [SECRET], 300, now + 301)


def test_form_bodies_are_read_by_field_name(tmp_path: Path) -> None:
    table = CONFIG.replace('event_id = "body:submission.id"', 'event_id = "body:id"\nbody = "form"')
    table = table.replace("submission.email", "email").replace("submission.newsletter", "nl")
    source_world = SourceWorld(tmp_path, table)
    body = urlencode({"id": "f-1", "form": "contact", "email": "b@example.com", "nl": "on"})
    response = source_world.send(body.encode(), "application/x-www-form-urlencoded")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert source_world.events()[0]["consent_source"] == "form:contact"
    assert source_world.send(BODY).status_code == 415


def test_answers_reach_deep_lists_and_stop_at_the_depth_limit() -> None:
    found = answers({"a": [{"b": 1}, {"c": ["x", "y"]}], "d": {"e": None}})
    assert found == {"a.0.b": 1, "a.1.c": ["x", "y"], "d.e": None}
    deep: object = "leaf"
    for _ in range(1000):
        deep = [deep, {}]
    assert answers(deep) == {}  # deeper than MAX_DEPTH: not read, and no RecursionError


header_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="tv01=, abcdef", max_size=80),
    st.builds(lambda raw: "sha256=" + raw.hex(), st.binary(max_size=40)),
)
schemes = st.builds(
    Scheme,
    header=st.just("X-Sig"),
    algorithm=st.sampled_from(["sha1", "sha256", "sha512"]),
    encoding=st.sampled_from(["hex", "base64"]),
    prefix=st.sampled_from(["", "sha256="]),
    separator=st.sampled_from(["", " ", ","]),
    signature_key=st.sampled_from([None, "v1"]),
)


@given(chosen=schemes, value=header_text, body=st.binary(max_size=64))
def test_any_header_is_refused_cleanly_or_verified(chosen: Scheme, value: str, body: bytes) -> None:
    try:
        verify(chosen, {"x-sig": value}, body, "", [SECRET], 300, 0)
    except SignatureError as exc:
        assert str(exc)  # a named refusal, never another exception
    else:  # only a real MAC passes
        expected = mac(SECRET, body, chosen.algorithm)
        assert expected.hex() in value or base64.b64encode(expected).decode() in value


@given(
    body=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain"])
)
def test_any_signed_body_is_a_2xx_or_4xx(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, content_type: str
) -> None:
    source_world = _world(tmp_path_factory)
    response = source_world.send(body, content_type)
    assert response.status_code < 500, response.get_data(as_text=True)


_WORLDS: dict[str, SourceWorld] = {}


def _world(factory: pytest.TempPathFactory) -> SourceWorld:
    if "w" not in _WORLDS:
        _WORLDS["w"] = SourceWorld(factory.mktemp("hmac-any-body"), CONFIG)
    return _WORLDS["w"]


def test_body_sha256_event_ids_make_the_same_body_a_duplicate(tmp_path: Path) -> None:
    table = hmac_table(header='"X-Sig"', event_id='"body-sha256"')
    source_world = SourceWorld(tmp_path, table)
    body = b'{"email": "c@example.com", "consent": "granted"}'
    assert source_world.send(body).status_code == 202
    assert source_world.send(body).get_json()["duplicate"] is True
    assert source_world.events()[0]["delivery_id"] == hashlib.sha256(body).hexdigest()
