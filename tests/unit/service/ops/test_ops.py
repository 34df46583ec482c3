"""`/ops`, the operator page, through the Flask test client: create_app with a real config, a
SQLite ledger in tmp_path, decisions recorded as the intake records them, dead letters written
by the worker's own code (ledger_rows) and deliveries made by the real worker to the Engage
emulator."""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from relay.config.settings import DeliverySettings, DestinationSettings
from relay.ledger.models import DeadLetter, DestinationStatus, Outbox, utcnow
from service import create_app
from service.ops import queries as ops_queries
from service.ops.auth import derive_session_key
from tests.helpers.ledger_rows import T0, dead_letter, record
from tests.helpers.ops_world import PASSWORD, Ops, build_ops
from workers.delivery.contact import DeliveryContext, deliver_contact, latest_event
from workers.delivery.outcomes import settle_outbox, settled_status
from workers.destinations.engage import EngageClient

JANE = "Jane.Doe@Example.com"
JOHN = "john@example.com"
ANN = "ann@example.com"


@pytest.fixture
def signed_in(ops: Ops) -> Ops:
    assert ops.login().status_code == 303
    return ops


@pytest.fixture
def deliver(
    ops: Ops, engage_settings: Callable[..., DestinationSettings]
) -> Callable[[str, int], str]:
    """Deliver a contact's latest decision with the real worker code, to the Engage emulator."""

    def run(destination: str, contact_id: int) -> str:
        writer = EngageClient(engage_settings())
        ctx = DeliveryContext(ops.sessions, {destination: writer}, DeliverySettings())
        return deliver_contact(ctx, destination, contact_id, "test-worker")

    return run


def seed(ops: Ops, deliver: Callable[[str, int], str]) -> dict[str, int]:
    """jane: granted, then withdrawn (pc-7); engage refused the withdrawal 3 times (dead letter),
    engage_eu took it. john: denied, dead-lettered for engage_eu an hour ago. ann: pending."""
    with ops.sessions() as session:
        jane = record(session, JANE, "granted", consent_source_id="form-1")
        record(session, "jane.doe@example.com", "withdrawn", occurred_at=T0 + dt.timedelta(hours=1))
        body = '{"errorCode": "INVALID_PARAMETER", "message": "<script>alert(1)</script>"}'
        jane_dead = dead_letter(session, "engage", jane, T0 + dt.timedelta(hours=2), body=body)
        john = record(session, JOHN, "denied")
        john_dead = dead_letter(session, "engage_eu", john, utcnow() - dt.timedelta(hours=1))
        ann = record(session, ANN, "granted", occurred_at=T0 + dt.timedelta(days=1))
    assert deliver("engage_eu", jane) == "delivered"
    return {"jane": jane, "jane_dead": jane_dead, "john": john, "john_dead": john_dead, "ann": ann}


def outbox_statuses(ops: Ops, destination: str, contact_id: int) -> list[str]:
    with ops.sessions() as session:
        query = select(Outbox.status).filter_by(destination=destination, contact_id=contact_id)
        return list(session.scalars(query.order_by(Outbox.id)))


def dead_status(ops: Ops, dead_id: int) -> str:
    with ops.sessions() as session:
        row = session.get(DeadLetter, dead_id)
        assert row is not None
        return row.status


def tile(page: str, name: str) -> str:
    found = re.search(rf'id="{name}">(?:<a [^>]*>)?([^<]+)<', page)
    assert found, name
    return found.group(1).strip()


# --- sign-in, session, CSRF ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/ops", "/ops/contacts", "/ops/contacts/1", "/ops/dead-letters", "/ops/dead-letters/1"]
)
def test_every_page_needs_a_sign_in(ops: Ops, path: str) -> None:
    response = ops.client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/ops/login?next={path}"


@pytest.mark.parametrize(
    "path", ["/ops/dead-letters/1/replay", "/ops/destinations/engage/pause", "/ops/contacts"]
)
def test_posts_without_a_sign_in_change_nothing(ops: Ops, path: str) -> None:
    ops.client.get("/ops/login")
    response = ops.client.post(path, data={"csrf_token": ops.csrf()})
    assert response.status_code == 302
    assert response.headers["Location"] == "/ops/login"
    with ops.sessions() as session:
        assert session.get(DestinationStatus, "engage") is None


def test_sign_in_sets_a_locked_down_cookie_and_returns_to_next(ops: Ops) -> None:
    login = ops.page("/ops/login?next=/ops/dead-letters")
    assert 'for="username"' in login and 'for="password"' in login
    data = {"username": "operator", "password": PASSWORD, "csrf_token": ops.csrf()}
    response = ops.client.post("/ops/login", data={**data, "next": "/ops/dead-letters"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/ops/dead-letters"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("consent_relay_ops=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ops" in cookie
    assert "Signed in as operator" in ops.page("/ops")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ops", "/admin/x"])
def test_sign_in_never_redirects_off_the_page(ops: Ops, target: str) -> None:
    ops.client.get("/ops/login")
    data = {"username": "operator", "password": PASSWORD, "csrf_token": ops.csrf()}
    response = ops.client.post("/ops/login", data={**data, "next": target})
    assert response.headers["Location"] == "/ops"


@pytest.mark.parametrize(
    ("username", "password"), [("operator", "wrong-password-1"), ("admin", PASSWORD), ("", "")]
)
def test_bad_credentials_are_refused_and_logged_without_the_password(
    ops: Ops, caplog: pytest.LogCaptureFixture, username: str, password: str
) -> None:
    caplog.set_level(logging.INFO)
    response = ops.login(password=password, username=username)
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    assert ops.client.get("/ops").status_code == 302
    assert "sign-in refused" in caplog.text
    assert PASSWORD not in caplog.text
    assert password == "" or password not in caplog.text


def test_a_post_without_the_csrf_token_is_refused(
    signed_in: Ops, deliver: Callable[[str, int], str]
) -> None:
    ids = seed(signed_in, deliver)
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": signed_in.csrf() + "x"}):
        for path in (
            f"/ops/dead-letters/{ids['jane_dead']}/replay",
            "/ops/destinations/engage/pause",
        ):
            response = signed_in.client.post(path, data=data)
            assert response.status_code == 400
            assert "security token" in response.get_data(as_text=True)
    assert dead_status(signed_in, ids["jane_dead"]) == "open"
    with signed_in.sessions() as session:
        assert session.get(DestinationStatus, "engage") is None


def test_the_login_form_needs_its_csrf_token_too(ops: Ops) -> None:
    response = ops.client.post("/ops/login", data={"username": "operator", "password": PASSWORD})
    assert response.status_code == 400
    assert ops.client.get("/ops").status_code == 302


def test_sign_out_ends_the_session(signed_in: Ops) -> None:
    page = signed_in.follow(signed_in.post("/ops/logout"))
    assert "You are signed out." in page
    assert signed_in.client.get("/ops").status_code == 302


def test_a_session_expires_after_twelve_hours(signed_in: Ops) -> None:
    with signed_in.client.session_transaction("/ops") as session:
        session["ops_at"] -= 12 * 3600 + 1
    assert signed_in.client.get("/ops").status_code == 302
    assert "Signed in as" not in signed_in.page("/ops/login")


def test_the_session_key_is_the_same_in_every_worker_and_changes_with_the_password(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = build_ops(tmp_path / "a"), build_ops(tmp_path / "b")
    assert first.app.secret_key == second.app.secret_key == derive_session_key("operator", PASSWORD)
    first.login()
    cookie = first.client.get_cookie("consent_relay_ops", path="/ops")
    assert cookie is not None
    second.client.set_cookie("consent_relay_ops", cookie.value, path="/ops")
    assert second.client.get("/ops").status_code == 200  # another gunicorn worker
    assert derive_session_key("operator", PASSWORD + "2") != first.app.secret_key
    configured = create_app({"SETTINGS": first.settings, "SECRET_KEY": "from-the-config"})
    assert configured.secret_key == "from-the-config"


def test_without_a_password_the_page_is_off_and_says_how_to_enable_it(tmp_path: Path) -> None:
    ops = build_ops(tmp_path, password=None)
    for response in (
        ops.client.get("/ops"),
        ops.client.get("/ops/login"),
        ops.client.post("/ops/login", data={"username": "admin", "password": "x" * 12}),
    ):
        assert response.status_code == 404
        text = html.unescape(response.get_data(as_text=True))
        assert 'password = "${CONSENT_RELAY_ADMIN_PASSWORD}"' in text
        assert "at least 12 characters" in text
        assert "Set-Cookie" not in response.headers
    assert not ops.app.secret_key


def test_pages_are_not_cached_nor_framed(signed_in: Ops) -> None:
    response = signed_in.client.get("/ops")
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    css = signed_in.client.get("/ops/static/ops.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


# --- status, pause and resume -------------------------------------------------------------------


def test_status_counts_the_ledger(signed_in: Ops, deliver: Callable[[str, int], str]) -> None:
    seed(signed_in, deliver)
    page = signed_in.page("/ops")
    assert tile(page, "count-accepted") == "4"
    assert tile(page, "count-delivered") == "1"  # jane's withdrawal to engage_eu
    assert tile(page, "count-superseded") == "2"  # jane's grant (after the withdrawal)
    assert tile(page, "count-pending") == "3"  # ann for both destinations, john for engage
    assert tile(page, "count-open-dead-letters") == "2"
    assert re.search(r'id="oldest-pending">\d+ (d|h|min|s)', page)
    assert "received 20" in page  # the oldest pending decision's time, ISO
    assert "active" in page and "Pause engage" in page and "Pause engage_eu" in page
    # Attempts of the last 24 h: john's three refusals, jane's create-and-update to engage_eu.
    attempts = dict(
        re.findall(r'<span class="badge (\w+)">\1</span></th><td class="num">(\d+)', page)
    )
    assert attempts["rejected"] == "3"
    assert attempts["delivered"] == "1"


def refused(page: str, source: str, reason: str) -> int:
    found = re.search(
        rf'<td>{source}</td><td><span class="badge rejected">{reason}</span></td>'
        rf'<td class="num">(\d+)</td>',
        page,
    )
    return int(found.group(1)) if found else 0


def test_status_lists_webhooks_refused_at_intake_by_source_and_reason(signed_in: Ops) -> None:
    before = signed_in.page("/ops")
    forged = {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
    for _ in range(2):
        answer = signed_in.client.post(
            "/webhooks/signup", data=b"{}", headers={**forged, "content-type": "application/json"}
        )
        assert answer.status_code == 401

    after = signed_in.page("/ops")
    # The counters are this process's since it started: compare before and after.
    assert refused(after, "signup", "signature") == refused(before, "signup", "signature") + 2
    assert "refused webhooks are not stored in the ledger" in after


def test_pause_and_resume_from_the_status_page(signed_in: Ops) -> None:
    page = signed_in.follow(
        signed_in.post("/ops/destinations/engage/pause", reason="Engage maintenance <window>")
    )
    assert "engage is paused" in page
    assert "Engage maintenance <window>" in page
    assert "Resume engage" in page and "none: an operator resumes it" in page
    with signed_in.sessions() as session:
        row = session.get(DestinationStatus, "engage")
        assert row is not None and row.paused_by == "operator"
        assert row.paused_reason == "Engage maintenance <window>"
    page = signed_in.follow(signed_in.post("/ops/destinations/engage/resume"))
    assert "engage is resumed" in page and "Pause engage" in page
    page = signed_in.follow(signed_in.post("/ops/destinations/engage/resume"))
    assert "engage was not paused; nothing changed." in page


def test_pause_needs_a_known_destination_and_a_sane_reason(signed_in: Ops) -> None:
    response = signed_in.post("/ops/destinations/nowhere/pause")
    assert response.status_code == 404
    assert "No destination 'nowhere' is configured." in html.unescape(
        response.get_data(as_text=True)
    )
    page = signed_in.follow(signed_in.post("/ops/destinations/engage/pause", reason="x" * 501))
    assert "Not paused: the reason is invalid" in page
    page = signed_in.follow(signed_in.post("/ops/destinations/engage/pause"))
    assert "paused by an operator" in page


def test_a_ledger_failure_is_a_503_page(signed_in: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(ops_queries, "status_counts", broken)
    response = signed_in.client.get("/ops")
    assert response.status_code == 503
    assert "Ledger unavailable" in response.get_data(as_text=True)


# --- contacts -----------------------------------------------------------------------------------


def test_a_contact_history_is_the_audit_evidence(
    signed_in: Ops, deliver: Callable[[str, int], str]
) -> None:
    ids = seed(signed_in, deliver)
    response = signed_in.post("/ops/contacts", email="  JANE.DOE@example.COM ")
    assert response.headers["Location"] == f"/ops/contacts/{ids['jane']}"  # no address in it
    page = signed_in.follow(response)
    decisions = page.split("Decisions, newest first")[1].split('<article class="card decision"')[1:]
    assert len(decisions) == 2
    withdrawn, granted = decisions
    assert "withdrawn</span> occurred 2026-07-01T10:00:00Z" in withdrawn
    assert "granted</span> occurred 2026-07-01T09:00:00Z" in granted
    assert "form-1" in granted and "registration_form" in granted and "signup" in granted
    assert re.search(r"Received</dt><dd class=\"mono\">20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", granted)
    # engage: the withdrawal dead-lettered after three refusals (HTTP 400), the grant with it.
    engage_row = withdrawn.split('<th scope="row">engage</th>')[1].split("</tr>")[0]
    assert "dead_lettered" in engage_row
    assert engage_row.count("rejected</span> 400") == 3
    # engage_eu: the withdrawal delivered, the grant superseded by it.
    eu_row = withdrawn.split('<th scope="row">engage_eu</th>')[1].split("</tr>")[0]
    assert "delivered" in eu_row and "this decision" in eu_row
    assert re.search(r"delivered</span> 20[01]", eu_row)  # the worker's attempt, with HTTP status
    eu_grant = granted.split('<th scope="row">engage_eu</th>')[1].split("</tr>")[0]
    assert "superseded" in eu_grant
    assert "What each destination holds" in page
    assert f"/ops/dead-letters/{ids['jane_dead']}" in page


def test_an_unknown_address_has_no_decisions(signed_in: Ops) -> None:
    page = signed_in.page("/ops/contacts")
    assert 'for="email"' in page and "No decisions recorded" not in page
    response = signed_in.post("/ops/contacts", email="nobody@example.com")
    assert response.status_code == 200
    text = html.unescape(response.get_data(as_text=True))
    assert "No decisions recorded for <strong>nobody@example.com</strong>" in text
    blank = signed_in.post("/ops/contacts", email="   ")  # just the form again
    assert blank.status_code == 200 and "No decisions recorded" not in blank.get_data(as_text=True)
    assert signed_in.client.get("/ops/contacts/999").status_code == 404


def test_an_address_in_the_query_string_still_finds_the_contact(
    signed_in: Ops, deliver: Callable[[str, int], str]
) -> None:
    ids = seed(signed_in, deliver)
    response = signed_in.client.get("/ops/contacts?email=ann@EXAMPLE.com")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/ops/contacts/{ids['ann']}"


# --- dead letters -------------------------------------------------------------------------------


def test_dead_letter_list_and_filters(signed_in: Ops, deliver: Callable[[str, int], str]) -> None:
    ids = seed(signed_in, deliver)
    page = signed_in.page("/ops/dead-letters")
    assert [int(i) for i in re.findall(r'aria-label="Dead letter (\d+)"', page)] == [
        ids["john_dead"],
        ids["jane_dead"],
    ]
    assert "INVALID_PARAMETER" in page and "jane.doe@example.com" in page and "rejected" in page
    assert f'href="/ops/contacts/{ids["jane"]}"' in page
    eu = signed_in.page("/ops/dead-letters?destination=engage_eu")
    assert re.findall(r'aria-label="Dead letter (\d+)"', eu) == [str(ids["john_dead"])]
    none = signed_in.page("/ops/dead-letters?status=replayed")
    assert "No replayed dead letters." in none
    assert signed_in.client.get("/ops/dead-letters?status=bogus").status_code == 400
    assert signed_in.client.get("/ops/dead-letters?destination=nowhere").status_code == 400
    assert signed_in.client.get("/ops/dead-letters?page=0").status_code == 400


def test_dead_letter_detail_escapes_the_response(
    signed_in: Ops, deliver: Callable[[str, int], str]
) -> None:
    ids = seed(signed_in, deliver)
    raw = signed_in.client.get(f"/ops/dead-letters/{ids['jane_dead']}").get_data(as_text=True)
    assert "<script>" not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    page = html.unescape(raw)
    assert "Replay dead letter" in page
    assert page.count("attempt ") >= 3  # the attempt history, with its details
    assert f"/ops/contacts/{ids['jane']}" in page
    assert signed_in.client.get("/ops/dead-letters/999").status_code == 404


def test_replay_reopens_the_rows_and_enqueues(
    signed_in: Ops, deliver: Callable[[str, int], str]
) -> None:
    ids = seed(signed_in, deliver)
    assert outbox_statuses(signed_in, "engage", ids["jane"]) == ["superseded", "dead_lettered"]
    page = signed_in.follow(signed_in.post(f"/ops/dead-letters/{ids['jane_dead']}/replay"))
    assert f"Dead letter {ids['jane_dead']} replayed" in page and "a delivery was enqueued" in page
    assert dead_status(signed_in, ids["jane_dead"]) == "replayed"
    assert outbox_statuses(signed_in, "engage", ids["jane"]) == ["superseded", "pending"]
    assert signed_in.publisher.published == [("engage", ids["jane"])]
    assert "there is nothing to replay" in page
    again = signed_in.follow(signed_in.post(f"/ops/dead-letters/{ids['jane_dead']}/replay"))
    assert f"Dead letter {ids['jane_dead']} was skipped: already replayed." in again
    assert signed_in.publisher.published == [("engage", ids["jane"])]
    assert signed_in.post("/ops/dead-letters/999/replay").status_code == 404


def test_no_address_reaches_the_logs(
    signed_in: Ops, deliver: Callable[[str, int], str], caplog: pytest.LogCaptureFixture
) -> None:
    ids = seed(signed_in, deliver)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    signed_in.follow(signed_in.post("/ops/contacts", email=JANE))
    signed_in.post("/ops/contacts", email="unknown.person@example.com")
    signed_in.page("/ops/dead-letters?status=all")
    signed_in.page(f"/ops/dead-letters/{ids['john_dead']}")
    signed_in.follow(signed_in.post(f"/ops/dead-letters/{ids['john_dead']}/replay"))
    signed_in.follow(signed_in.post("/ops/destinations/engage/pause"))
    signed_in.page("/ops")
    assert "ops: replay" in caplog.text
    text = caplog.text.lower()
    for address in (JANE, JOHN, ANN, "unknown.person@example.com"):
        assert address.lower() not in text


def test_an_unverified_write_is_counted_apart_from_deliveries(signed_in: Ops) -> None:
    """A write the destination accepted without showing it applied (MoEngage Track User) is
    settled as `unverified`, as the worker settles it (workers.delivery.outcomes)."""
    with signed_in.sessions() as session:
        contact_id = record(session, JANE, "granted")
        latest = latest_event(session, "engage", contact_id)
        assert latest is not None
        status = settled_status("unverified")
        settle_outbox(session, "engage", latest, utcnow(), status)
        session.commit()
    page = signed_in.page("/ops")
    assert tile(page, "count-unverified") == "1"
    assert tile(page, "count-delivered") == "0"
    assert "check it there" in page
