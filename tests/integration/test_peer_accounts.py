"""Peer destinations as vendors count and answer: intake -> ledger -> a real Celery worker (and
beat's sweeper) -> the peer emulators over HTTP. Nothing of ours is mocked.

- Two Dotdigital entries on one account share its rate limit (one pace, one ledger row).
- MoEngage Track User answers 200 for a user it then drops: recorded as `unverified`.
- MoEngage opt-in sends the configured customer_id (a PII-tokenized workspace that answers
  "customer_id is mandatory"); without it, every write is dead-lettered as misconfigured.
- Dotdigital stores a consent record from the decision's evidence.
- Acoustic Connect is written without a dataSetId when none is configured.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import select

from emulators import acoustic, dotdigital, moengage
from emulators.server import EmulatorServer
from relay.config.loader import load_settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from relay.ledger.models import DeadLetter, DeliveryAttempt, Event, Outbox, RateLimitSlot
from service import create_app
from tests.helpers.peer_support import contact, state
from tests.helpers.support import (
    FAST_DELIVERY,
    celery_beat,
    celery_worker,
    decision,
    signed_headers,
    wait_for,
    write_config,
)
from workers.ratelimit.keys import limiter_keys

pytestmark = pytest.mark.integration
DECIDED = dt.datetime(2026, 6, 1, 12, 0, 7, tzinfo=dt.UTC)
CONSENT_TEXT = "You may track whether I open your e-mails."
CONSENT_URL = "https://shop.example/newsletter"
# The account allows 5 calls/s; each entry states 3/s. Paced apart they would send 6/s.
ACCOUNT_PER_SECOND, ENTRY_PER_SECOND = 5, 3
DOTDIGITAL_NAMES = ("dotdigital_news", "dotdigital_shop")


@dataclass
class AccountsWorld:
    app: Any
    client: Any
    urls: dict[str, str]

    def send(self, body: bytes) -> Any:
        headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
        response = self.client.post("/webhooks/signup", data=body, headers=headers)
        assert response.status_code == 202, response.get_data(as_text=True)
        return response

    def sessions(self) -> Any:
        return self.app.extensions["consent_relay"].sessions()

    def outbox(self, email: str) -> dict[str, str]:
        with self.sessions() as session:
            rows = session.execute(
                select(Outbox.destination, Outbox.status)
                .join(Event, Event.id == Outbox.event_id)
                .where(Event.email == email)
            )
            return dict(rows.all())

    def settled(self, email: str, *names: str) -> bool:
        outbox = self.outbox(email)
        return all(outbox.get(name, "pending") != "pending" for name in names)


def _tables(urls: dict[str, str]) -> str:
    dd = {
        "kind": "dotdigital",
        "base_url": urls["dotdigital"],
        "username": dotdigital.USERNAME,
        "password": dotdigital.PASSWORD,
        "rate_limit_per_second": ENTRY_PER_SECOND,
        "rate_limit_headroom": 0.0,
    }
    mo = {"kind": "moengage", "app_id": moengage.APP_ID, "api_key": moengage.API_KEY}
    tokenized = {**mo, "base_url": urls["moengage_tokenized"], "mode": "channel_consent"}
    tables: dict[str, dict[str, Any]] = {
        "dotdigital_news": {**dd, "consent_text": CONSENT_TEXT, "consent_url": CONSENT_URL},
        "dotdigital_shop": dd,
        "moengage_attrs": {**mo, "base_url": urls["moengage"]},
        "moengage_optin": {**tokenized, "customer_id": "{source_id}"},
        "moengage_email": tokenized,
        "acoustic": {
            "kind": "acoustic-connect",
            "base_url": urls["acoustic"],
            "api_key": acoustic.API_KEY,
        },
    }
    lines = []
    for name, table in tables.items():
        lines.append(f"[destinations.{name}]")
        lines += [
            f"{k} = {v}" if isinstance(v, int | float) else f'{k} = "{v}"' for k, v in table.items()
        ]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def accounts_world(
    engage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccountsWorld]:
    workdir = tmp_path_factory.mktemp("peer-accounts")
    with ExitStack() as stack:
        apps = {
            "dotdigital": dotdigital.create_emulator_app(any_contact=True),
            "moengage": moengage.create_emulator_app(),  # only seeded users exist
            "moengage_tokenized": moengage.create_emulator_app(
                customer_id_mandatory=True, pii_tokenized=True
            ),
            "acoustic": acoustic.create_emulator_app(any_contact=True),
        }
        urls = {name: stack.enter_context(EmulatorServer(app)).url for name, app in apps.items()}
        faults = {"rate_limit_per_second": ACCOUNT_PER_SECOND}
        requests.put(f"{urls['dotdigital']}/_emulator/faults", json=faults, timeout=5)
        config = write_config(
            workdir / "consent-relay.toml",
            data_dir=workdir / "var",
            engage_url=engage,
            queue=f"cr-accounts-{uuid.uuid4().hex[:8]}",
            delivery=FAST_DELIVERY,
            extra=_tables(urls),
        )
        settings = load_settings(config, environ={})
        upgrade(make_engine(settings.database_url))
        app = create_app({"SETTINGS": settings, "TESTING": True})
        stack.enter_context(_stopping(celery_worker(config, workdir)))
        stack.enter_context(_stopping(celery_beat(config, workdir)))  # throttled writes
        yield AccountsWorld(app, app.test_client(), urls)


class _stopping:
    def __init__(self, process: Any) -> None:
        self.process = process

    def __enter__(self) -> Any:
        return self.process

    def __exit__(self, *_exc: object) -> None:
        self.process.stop()


def _email() -> str:
    return f"Acct.{uuid.uuid4().hex[:8]}@Example.com"


def test_two_entries_on_one_dotdigital_account_share_its_limit(
    accounts_world: AccountsWorld,
) -> None:
    emails = [_email() for _ in range(8)]
    for email in emails:
        accounts_world.send(decision(email, "denied", source_id="s"))
    wait_for(
        lambda: all(accounts_world.settled(e, *DOTDIGITAL_NAMES) for e in emails),
        120,
        "both entries",
    )
    assert all(accounts_world.outbox(e)[n] == "delivered" for e in emails for n in DOTDIGITAL_NAMES)
    faults = state(accounts_world.urls["dotdigital"])["faults"]["counters"]
    # 8 contacts x 2 entries x 2 calls (look up, PATCH), never over the account's 5/s.
    assert faults["api_requests"] >= 32
    assert faults["rate_limit_violations"] == 0
    # What makes it so whatever the timing: both entries reserve slots from one pace state.
    settings = accounts_world.app.extensions["consent_relay"].settings
    keys = limiter_keys(settings.destinations)
    assert keys["dotdigital_news"] == keys["dotdigital_shop"]
    with accounts_world.sessions() as session:
        stored = set(session.scalars(select(RateLimitSlot.destination)))
    assert keys["dotdigital_news"] in stored  # one pace state for the account...
    assert not stored & set(DOTDIGITAL_NAMES)  # ...none per entry
    assert all("secret" not in key and dotdigital.PASSWORD not in key for key in stored)


def test_track_user_is_recorded_as_accepted_unverified(accounts_world: AccountsWorld) -> None:
    known, unknown = _email(), _email()
    requests.post(
        f"{accounts_world.urls['moengage']}/_emulator/contacts", json={"email": known}, timeout=5
    )
    for email in (known, unknown):
        accounts_world.send(decision(email, "withdrawn", source_id="s"))
    wait_for(
        lambda: all(accounts_world.settled(e, "moengage_attrs") for e in (known, unknown)),
        60,
        "MoE",
    )
    # MoEngage applied one and dropped the other, answering 200 to both: neither is delivered.
    assert (
        contact(accounts_world.urls["moengage"], known)["fields"]["tracking_consent"] == "withdrawn"
    )
    assert contact(accounts_world.urls["moengage"], unknown) is None
    assert (
        accounts_world.outbox(known)["moengage_attrs"]
        == accounts_world.outbox(unknown)["moengage_attrs"]
    )
    assert accounts_world.outbox(unknown)["moengage_attrs"] == "unverified"
    with accounts_world.sessions() as session:
        outcomes = session.scalars(
            select(DeliveryAttempt.outcome)
            .join(Event, Event.id == DeliveryAttempt.event_id)
            .where(Event.email == unknown, DeliveryAttempt.destination == "moengage_attrs")
        ).all()
    assert outcomes == ["unverified"]


def test_opt_in_sends_the_configured_customer_id(accounts_world: AccountsWorld) -> None:
    email, user = _email(), f"crm-{uuid.uuid4().hex[:6]}"
    seeded = {"email": email, "customer_id": user}
    requests.post(
        f"{accounts_world.urls['moengage_tokenized']}/_emulator/contacts", json=seeded, timeout=5
    )
    accounts_world.send(decision(email, "granted", source_id=user))
    wait_for(
        lambda: accounts_world.settled(email, "moengage_optin", "moengage_email"), 60, "MoEngage"
    )
    assert accounts_world.outbox(email)["moengage_optin"] == "delivered"
    found = contact(accounts_world.urls["moengage_tokenized"], email)
    assert found["channel"] == "DOUBLE_OPTED_IN"
    assert [entry["customer_id"] for entry in found["history"]] == [user]
    # The entry without customer_id: the workspace refuses email_id; no retry can help.
    assert accounts_world.outbox(email)["moengage_email"] == "dead_lettered"
    with accounts_world.sessions() as session:
        dead = session.scalars(
            select(DeadLetter)
            .join(Event, Event.id == DeadLetter.event_id)
            .where(Event.email == email, DeadLetter.destination == "moengage_email")
        ).one()
    assert (dead.reason, dead.attempts, dead.last_status) == ("misconfigured", 1, 400)
    assert "customer_id is mandatory" in (dead.last_body or "")


def test_a_dotdigital_grant_carries_a_consent_record(accounts_world: AccountsWorld) -> None:
    email = _email()
    accounts_world.send(decision(email, "granted", DECIDED, source_id="s"))
    wait_for(lambda: accounts_world.settled(email, *DOTDIGITAL_NAMES), 60, "Dotdigital")
    news = contact(accounts_world.urls["dotdigital"], email)
    record = {"text": CONSENT_TEXT, "dateTimeConsented": "2026-06-01T12:00:07Z", "url": CONSENT_URL}
    assert news["consent_records"] == [record]  # from dotdigital_news only
    with accounts_world.sessions() as session:
        details = session.scalars(
            select(DeliveryAttempt.detail)
            .join(Event, Event.id == DeliveryAttempt.event_id)
            .where(Event.email == email, DeliveryAttempt.destination == "dotdigital_news")
        ).all()
    assert details == ["consent record written (no IP address or user agent: not captured)"]


def test_acoustic_is_written_without_a_data_set_id_unless_configured(
    accounts_world: AccountsWorld,
) -> None:
    email = _email()
    accounts_world.send(decision(email, "denied", source_id="s"))
    wait_for(lambda: accounts_world.settled(email, "acoustic"), 60, "Acoustic")
    assert accounts_world.outbox(email)["acoustic"] == "delivered"
    [entry] = contact(accounts_world.urls["acoustic"], email)["history"]
    assert entry["data_set_id"] is None and entry["fields"]["tracking_consent"] == "denied"
