"""`[destinations.<name>]` of the peer kinds: each kind's own schema, defaults from the vendors'
documented figures, and errors that name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config.demo import DEMO_CONFIG
from relay.config.loader import ConfigError, load_settings
from relay.config.settings import Settings

SOURCE = """
[sources.signup]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
source = "registration_form"
"""
PEERS = """
[destinations.acoustic]
kind = "acoustic-connect"
base_url = "https://connect-gql-eu-1.goacoustic.com"
api_key = "${ACOUSTIC_API_KEY}"
data_set_id = "4fe4136f-c007-44a3-b38f-92220xxxxxxxx"

[destinations.dotdigital]
kind = "dotdigital"
base_url = "https://r1-api.dotdigital.com"
username = "apiuser-xxx@apiconnector.com"
password = "${DOTDIGITAL_PASSWORD}"
mode = "channel_consent"

[destinations.moengage]
kind = "moengage"
base_url = "https://api-01.moengage.com"
app_id = "WORKSPACE01"
api_key = "${MOENGAGE_API_KEY}"
consent_field = "email_tracking_consent"
"""
ENV = {"ACOUSTIC_API_KEY": "k1", "DOTDIGITAL_PASSWORD": "p2", "MOENGAGE_API_KEY": "k3"}


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "consent-relay.toml"
    path.write_text(text + SOURCE)
    return load_settings(path, environ=ENV)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_peer_kinds_load_with_their_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, PEERS)
    acoustic, dotdigital, moengage = (
        settings.destinations[n] for n in ("acoustic", "dotdigital", "moengage")
    )
    assert (acoustic.kind, acoustic.rate_limit_per_second) == ("acoustic-connect", 5.0)
    assert acoustic.options["api_key"] == "k1" and acoustic.options["batch_size"] == 50
    assert acoustic.options["mode"] == "attribute"
    assert acoustic.options["consent_field"] == "tracking_consent"
    assert (dotdigital.username, dotdigital.password) == ("apiuser-xxx@apiconnector.com", "p2")
    # docs/reference/dotdigital.md#rate-limits: Basic's Low tier, 35/min
    assert dotdigital.rate_limit_per_second == 0.5
    assert dotdigital.options["mode"] == "channel_consent"
    assert dotdigital.options["consent_field"] == "TRACKING_CONSENT"
    # docs/reference/moengage.md#rate-limits: 360K/day is 4.17/s
    assert moengage.rate_limit_per_second == 4.0
    assert moengage.options["consent_field"] == "email_tracking_consent"
    assert "k3" not in repr(moengage) and "k1" not in repr(acoustic)


def test_each_kind_has_its_own_keys(tmp_path: Path) -> None:
    text = PEERS.replace('app_id = "WORKSPACE01"\n', 'username = "x"\n')
    message = error(tmp_path, text)
    assert "destinations.moengage.app_id: Missing data for required field." in message
    assert "destinations.moengage.username: Unknown field." in message


def test_mode_and_batch_size_are_checked(tmp_path: Path) -> None:
    text = PEERS.replace('mode = "channel_consent"', 'mode = "unsubscribe"')
    text = text.replace('data_set_id = "4fe4136f-c007-44a3-b38f-92220xxxxxxxx"', "batch_size = 0")
    message = error(tmp_path, text)
    assert "destinations.dotdigital.mode: Must be one of: attribute, channel_consent." in message
    assert "destinations.acoustic.batch_size" in message


def test_unknown_kind_names_the_key_and_the_other_bad_keys(tmp_path: Path) -> None:
    message = error(tmp_path, '[destinations.x]\nkind = "braze"\nbase_url = "nope"\n')
    assert (
        "destinations.x.kind: Must be one of: mapp-engage, acoustic-connect, dotdigital, moengage."
        in message
    )
    assert "destinations.x.base_url: Not a valid URL." in message


def test_lease_check_counts_the_calls_of_each_kind(tmp_path: Path) -> None:
    slow = PEERS.replace('mode = "channel_consent"', "read_timeout_seconds = 100")
    message = error(tmp_path, slow + "\n[delivery]\nlease_seconds = 200\n")
    # Dotdigital: 2 calls x (5 s wait + 5 s connect + 100 s read) + 30 s = 250 s.
    assert "delivery.lease_seconds: Must be at least 250 s: 2 calls" in message


def test_demo_config_fans_out_to_all_four(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.demo
    assert {d.kind for d in settings.destinations.values()} == {
        "mapp-engage",
        "acoustic-connect",
        "dotdigital",
        "moengage",
    }
    assert set(DEMO_CONFIG["destinations"]) == set(settings.destinations)


def test_a_dotdigital_consent_record_needs_its_text_and_url(tmp_path: Path) -> None:
    half = PEERS.replace('mode = "channel_consent"', 'consent_text = "I agree"')
    assert "consent_url" in error(tmp_path, half)
    whole = half.replace(
        'consent_text = "I agree"', 'consent_text = "I agree"\nconsent_url = "https://ex.com/f"'
    )
    assert (
        load(tmp_path, whole).destinations["dotdigital"].options["consent_url"]
        == "https://ex.com/f"
    )


@pytest.mark.parametrize("template", ["{email.lower}", "{phone}", "{0}", "  ", "{"])
def test_a_moengage_customer_id_template_names_decision_fields_only(
    tmp_path: Path, template: str
) -> None:
    text = PEERS.replace('consent_field = "email_tracking_consent"', f'customer_id = "{template}"')
    assert "customer_id" in error(tmp_path, text)


def test_acoustic_data_set_id_stays_optional(tmp_path: Path) -> None:
    """Acoustic's current updateContacts reference has no dataSetId; see
    docs/delivery/peers.md#acoustic-connect-datasetid."""
    text = PEERS.replace('data_set_id = "4fe4136f-c007-44a3-b38f-92220xxxxxxxx"\n', "")
    assert load(tmp_path, text).destinations["acoustic"].options["data_set_id"] is None


ENGAGE = """
[destinations.engage]
kind = "mapp-engage"
base_url = "https://api.example.com"
username = "u"
password = "p"
"""
ERASURE_KEY = '\n[privacy]\ndestination_erasure_key = "' + "A" * 43 + '="\n'


def test_erase_at_destination_is_off_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, ENGAGE + PEERS)
    assert not any(d.erase_at_destination for d in settings.destinations.values())


def test_erase_at_destination_on_engage_needs_the_key(tmp_path: Path) -> None:
    message = error(tmp_path, ENGAGE + "erase_at_destination = true\n")
    assert "privacy" in message and "destination_erasure_key" in message and "engage" in message
    settings = load(tmp_path, ENGAGE + "erase_at_destination = true\n" + ERASURE_KEY)
    assert settings.destinations["engage"].erase_at_destination is True


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("acoustic", "no delete call"),
        ("dotdigital", "not confirmed"),
    ],
)
def test_erase_at_destination_is_refused_where_no_delete_call_is_implemented(
    tmp_path: Path, kind: str, why: str
) -> None:
    table = f"[destinations.{kind}]"
    text = PEERS.replace(table, f"{table}\nerase_at_destination = true") + ERASURE_KEY
    message = error(tmp_path, text)
    assert f"destinations.{kind}.erase_at_destination" in message and why in message


def test_erase_at_destination_on_moengage_is_allowed(tmp_path: Path) -> None:
    table = "[destinations.moengage]"
    text = PEERS.replace(table, f"{table}\nerase_at_destination = true") + ERASURE_KEY
    assert load(tmp_path, text).destinations["moengage"].erase_at_destination is True


def test_moengage_channel_consent_without_customer_id_cannot_erase(tmp_path: Path) -> None:
    # Delete User names users by customer_id only; in this mode the relay knows the address.
    table = "[destinations.moengage]"
    on = f'{table}\nerase_at_destination = true\nmode = "channel_consent"'
    message = error(tmp_path, PEERS.replace(table, on) + ERASURE_KEY)
    assert "destinations.moengage.erase_at_destination" in message and "customer_id" in message
    with_id = on + '\ncustomer_id = "crm-{source_id}"'
    assert (
        load(tmp_path, PEERS.replace(table, with_id) + ERASURE_KEY)
        .destinations["moengage"]
        .erase_at_destination
    )
