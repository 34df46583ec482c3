"""Rate limits belong to vendor accounts: which destinations share a pace, and what the
shared key reveals (nothing of the credentials)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.config.loader import ConfigError, load_settings
from relay.config.settings import DestinationSettings
from tests.helpers.support import write_config
from workers.ratelimit.keys import limiter_key, limiter_keys, shared_paces
from workers.ratelimit.pace import Pace

SECRET = "s3cret-Passw0rd"


def _dotdigital(**values: Any) -> DestinationSettings:
    base = {
        "name": "dd",
        "kind": "dotdigital",
        "base_url": "https://r1-api.dotdigital.com",
        "username": "apiuser-1@apiconnector.com",
        "password": SECRET,
    }
    return DestinationSettings(**{**base, **values})


def test_entries_on_one_account_share_a_key_whatever_their_names() -> None:
    one = _dotdigital(name="newsletter")
    other = _dotdigital(name="shop", base_url="HTTPS://R1-API.dotdigital.com/")
    assert limiter_key(one) == limiter_key(other)


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "https://r2-api.dotdigital.com"},
        {"username": "apiuser-2@apiconnector.com"},
        {"password": "another"},
    ],
)
def test_another_account_or_user_gets_another_key(change: dict[str, str]) -> None:
    assert limiter_key(_dotdigital()) != limiter_key(_dotdigital(**change))


def test_api_key_vendors_are_told_apart_by_their_key() -> None:
    acoustic = {"name": "a", "kind": "acoustic-connect", "base_url": "https://connect.example"}
    one = DestinationSettings(**acoustic, options={"api_key": "k1"})
    other = DestinationSettings(**acoustic, options={"api_key": "k2"})
    assert limiter_key(one) != limiter_key(other)


def test_the_derived_key_shows_no_credential() -> None:
    key = limiter_key(_dotdigital())
    assert key.startswith("acct:")
    for secret in (SECRET, "apiuser-1", "dotdigital.com", SECRET.lower()):
        assert secret.lower() not in key.lower()


def test_a_named_key_joins_entries_the_credentials_cannot() -> None:
    one = _dotdigital(username="apiuser-1@apiconnector.com", rate_limit_key="dd-main")
    other = _dotdigital(username="apiuser-2@apiconnector.com", rate_limit_key="dd-main")
    assert limiter_key(one) == limiter_key(other) == "acct:dd-main"


def test_a_shared_key_takes_the_slowest_pace() -> None:
    paces = {"a": Pace.for_rate(2.0), "b": Pace.for_rate(0.5), "c": Pace.for_rate(10.0)}
    keys = {"a": "acct:x", "b": "acct:x", "c": "acct:y"}
    shared = shared_paces(paces, keys)
    assert shared["a"] == shared["b"] == paces["b"]
    assert shared["c"] == paces["c"]


def _config(tmp_path: Path, extra: str) -> Path:
    return write_config(
        tmp_path / "relay.toml", data_dir=tmp_path, engage_url="http://127.0.0.1:9", extra=extra
    )


def test_config_takes_a_rate_limit_key(tmp_path: Path) -> None:
    tables = "".join(
        f"""
[destinations.{name}]
kind = "dotdigital"
base_url = "https://r1-api.dotdigital.com"
username = "{user}"
password = "p"
rate_limit_key = "dotdigital-main"
"""
        for name, user in (("news", "apiuser-a@x.com"), ("shop", "apiuser-b@x.com"))
    )
    settings = load_settings(_config(tmp_path, tables), environ={})
    keys = limiter_keys(settings.destinations)
    assert keys["news"] == keys["shop"] == "acct:dotdigital-main"
    assert keys["engage"].startswith("acct:") and keys["engage"] != keys["news"]


@pytest.mark.parametrize("bad", ["", "has space", "x" * 49, "ключ", "a/b"])
def test_config_refuses_a_key_unfit_for_redis_and_the_ledger(tmp_path: Path, bad: str) -> None:
    table = f"""
[destinations.news]
kind = "dotdigital"
base_url = "https://r1-api.dotdigital.com"
username = "u"
password = "p"
rate_limit_key = "{bad}"
"""
    with pytest.raises(ConfigError, match="rate_limit_key"):
        load_settings(_config(tmp_path, table), environ={})
