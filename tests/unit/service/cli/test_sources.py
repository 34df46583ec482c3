"""`consent-relay sources ...`: the signing CLI posts over real HTTP to the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.server import EmulatorServer
from relay.config.loader import load_settings
from service.cli.commands import main
from tests.helpers.source_world import SourceWorld

SECRET = "typeform-webhook-secret"
CONFIG = f"""
kind = "typeform"
secrets = ["{SECRET}"]
source = "typeform:{{form_id}}"

[sources.src.mapping]
email = "readable_ref_email"
consent = "readable_ref_legal"
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SourceWorld, str]]:
    source_world = SourceWorld(tmp_path, CONFIG)
    with EmulatorServer(source_world.app) as server:
        yield source_world, server.url


def run(source_world: SourceWorld, *argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(source_world.config_path), *argv])
    return int(exited.value.code or 0)


def test_send_signs_the_default_fixture_and_the_relay_records_it(
    served: tuple[SourceWorld, str], capsys: pytest.CaptureFixture[str]
) -> None:
    source_world, url = served
    assert run(source_world, "sources", "send", "src", "--url", url) == 0
    assert capsys.readouterr().out.startswith("202 ")
    [event] = source_world.events()
    assert (event["email"], event["decision"]) == ("laura@example.com", "granted")


def test_send_a_named_fixture_that_is_ignored(
    served: tuple[SourceWorld, str], capsys: pytest.CaptureFixture[str]
) -> None:
    source_world, url = served
    argv = ("sources", "send", "src", "--fixture", "form_response_partial", "--url", url)
    assert run(source_world, *argv) == 0
    assert "partial" in capsys.readouterr().out
    assert run(source_world, "sources", "ignored") == 0
    assert "form_response_partial" in capsys.readouterr().out


def test_send_a_body_from_a_file(
    served: tuple[SourceWorld, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source_world, url = served
    body = tmp_path / "body.json"
    body.write_text('{"event_id":"evt_file","event_type":"form_deleted"}')
    assert run(source_world, "sources", "send", "src", "--body", str(body), "--url", url) == 0
    assert '"ignored":true' in capsys.readouterr().out.replace(" ", "")


def test_dry_run_shows_no_secret(
    served: tuple[SourceWorld, str], capsys: pytest.CaptureFixture[str]
) -> None:
    source_world, url = served
    assert run(source_world, "sources", "send", "src", "--dry-run", "--url", url) == 0
    out = capsys.readouterr().out
    assert "Typeform-Signature: (set)" in out
    assert SECRET not in out
    assert source_world.events() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("sources", "send", "nope"), "no source named 'nope'"),
        (("sources", "send", "src", "--fixture", "nothing"), "No fixture 'nothing'"),
    ],
)
def test_usage_errors_exit_2(
    served: tuple[SourceWorld, str],
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    source_world, _url = served
    assert run(source_world, *argv) == 2
    assert message in capsys.readouterr().err


def test_new_token_is_long_enough_for_a_token_secret(
    served: tuple[SourceWorld, str], capsys: pytest.CaptureFixture[str]
) -> None:
    source_world, _url = served
    assert run(source_world, "sources", "new-token") == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 32 and token.isprintable()


def test_new_prints_a_preset_skeleton_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "relay").mkdir()
    source_world = SourceWorld(tmp_path / "relay", CONFIG)
    capsys.readouterr()
    assert run(source_world, "sources", "new", "stripe", "--name", "shop") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# Stripe Checkout") and "[sources.shop.hmac]" in printed
    config = tmp_path / "stripe.toml"
    config.write_text(source_world.config_path.read_text() + "\n" + printed)
    settings = load_settings(config, environ={"STRIPE_WEBHOOK_SECRET": "whsec_0123456789"})
    assert settings.sources["shop"].options["hmac"]["header"] == "Stripe-Signature"
