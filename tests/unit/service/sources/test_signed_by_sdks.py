"""Requests signed by the vendors' own SDKs, sent to the real app behind a real HTTP server
(Werkzeug's), so that the request line is exactly what a sender's would be.

- HubSpot: `hubspot-api-client`'s `hubspot.utils.signature.Signature` over the URL as sent,
  percent-escapes included (the source has no `url` set).
- Svix: the `svix` package signs, and the request carries Svix's default `svix-*` headers.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubspot.utils.signature import Signature
from svix.webhooks import Webhook as SvixWebhook
from werkzeug.serving import BaseWSGIServer, make_server

from service.sources.raw_url import received_url
from tests.helpers.source_world import SourceWorld, fixture_json

HUBSPOT_SECRET = "hubspot-client-secret-0000"
HUBSPOT_CONFIG = f"""
kind = "hubspot"
secrets = ["{HUBSPOT_SECRET}"]
source = "hubspot:{{portal_id}}"

[sources.src.mapping]
consent = "tracking_consent"
"""
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SVIX_CONFIG = f"""
kind = "standard-webhooks"
secrets = ["{SVIX_SECRET}"]
source = "svix_form"
"""
ESCAPED_QUERIES = ["list=a%2Cb", "utm%5Bsource%5D=x", "next=%2Fthanks%3Fa%3Db&q=%C3%BC%20x"]


class Served:
    """The world's app behind Werkzeug's threaded HTTP server on a free loopback port."""

    def __init__(self, source_world: SourceWorld):
        self.source_world = source_world
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, source_world.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def post(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """`target` goes on the request line byte for byte (http.client does not requote)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.server_port, timeout=10)
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def hubspot(tmp_path: Path) -> Iterator[Served]:
    served = Served(SourceWorld(tmp_path, HUBSPOT_CONFIG))
    yield served
    served.close()


@pytest.fixture
def svix(tmp_path: Path) -> Iterator[Served]:
    served = Served(SourceWorld(tmp_path, SVIX_CONFIG))
    yield served
    served.close()


@pytest.mark.parametrize("query", ESCAPED_QUERIES)
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_hubspot_sdk_signature_over_an_escaped_url_is_accepted(
    hubspot: Served, version: str, query: str
) -> None:
    target = f"/webhooks/src?{query}"
    body = json.dumps(fixture_json("hubspot", "workflow_contact")).encode()
    timestamp = str(int(time.time() * 1000))
    signature = Signature.get_signature(
        HUBSPOT_SECRET, body.decode(), version, hubspot.base + target, "POST", timestamp
    )
    headers = {"Content-Type": "application/json"}
    if version == "v3":
        headers |= {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp}
    else:
        headers |= {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": "v2"}

    status, answer = hubspot.post(target, body, headers)

    assert status == 202, answer
    assert len(hubspot.source_world.events()) == 1


def test_hubspot_signature_over_another_query_is_still_refused(hubspot: Served) -> None:
    body = json.dumps(fixture_json("hubspot", "workflow_contact")).encode()
    signed_url = hubspot.base + "/webhooks/src?list=a%2Cb"
    signature = Signature.get_signature(HUBSPOT_SECRET, body.decode(), "v2", signed_url, "POST")
    headers = {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": "v2"}

    status, _ = hubspot.post("/webhooks/src?list=a%2Cc", body, headers)

    assert status == 401
    assert hubspot.source_world.events() == []


def svix_headers(body: bytes, msg_id: str) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    signature = SvixWebhook(SVIX_SECRET).sign(msg_id, now, body.decode())
    return {
        "Content-Type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
    }


def test_svix_signed_request_with_svix_headers_is_accepted(svix: Served) -> None:
    body = json.dumps({"email": "svix.user@example.com", "tracking_consent": "granted"}).encode()

    status, answer = svix.post("/webhooks/src", body, svix_headers(body, "msg_svix_1"))

    assert status == 202, answer
    [event] = svix.source_world.events()
    assert event["delivery_id"] == "msg_svix_1"


def test_svix_headers_with_a_wrong_signature_are_refused(svix: Served) -> None:
    body = json.dumps({"email": "svix.user@example.com", "tracking_consent": "granted"}).encode()
    headers = svix_headers(body, "msg_svix_2")
    tampered = body.replace(b"granted", b"denied ")

    status, _ = svix.post("/webhooks/src", tampered, headers)

    assert status == 401
    assert svix.source_world.events() == []


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RAW_URI": "/w/s?list=a%2Cb", "QUERY_STRING": "list=a%2Cb"}, "/w/s?list=a%2Cb"),
        ({"REQUEST_URI": "/w/a%2Fb?x=1", "PATH_INFO": "/w/a/b"}, "/w/a%2Fb?x=1"),
        ({"RAW_URI": "/w/s", "QUERY_STRING": "q=%5B"}, "/w/s?q=%5B"),  # test client style
        ({"RAW_URI": "http://other.example/w/s?q=1"}, "/w/s?q=1"),  # absolute-form
        ({"PATH_INFO": "/w/ü", "QUERY_STRING": "q=%2C"}, "/w/%C3%BC?q=%2C"),  # no raw line
        ({"RAW_URI": "/w/s?", "QUERY_STRING": ""}, "/w/s"),
    ],
)
def test_received_url_keeps_the_request_line(environ: dict[str, str], expected: str) -> None:
    if "PATH_INFO" in environ:  # WSGI strings are latin-1 views of the received bytes
        environ["PATH_INFO"] = environ["PATH_INFO"].encode().decode("latin-1")
    assert (
        received_url(environ, "https", "relay.example.com")
        == "https://relay.example.com" + expected
    )
