"""`[notifications]` in the config file (schemas/notifications.py, relay/config/notifications.py):
off by default, targets loaded, secrets, events and formats checked with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config.loader import ConfigError, load_settings
from relay.config.notifications import NotificationSettings
from schemas.notifications import EVENTS

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BASE = f"""
[destinations.engage]
kind = "mapp-engage"
base_url = "https://engage.example.com"
username = "u"
password = "p"

[sources.signup]
kind = "standard-webhooks"
secrets = ["{SECRET}"]
source = "registration_form"
"""


def load(tmp_path: Path, extra: str) -> NotificationSettings:
    path = tmp_path / "consent-relay.toml"
    path.write_text(BASE + extra)
    return load_settings(path, environ={"HOOK_SECRET": SECRET}).notifications


def test_off_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings == NotificationSettings()
    assert not settings.enabled and settings.targets == ()


def test_targets_load_with_their_defaults(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[notifications]\nenabled = true\n[notifications.targets.ops]\nurl = "https://a.example/h"\n'
        'secret = "${HOOK_SECRET}"\n[notifications.targets.chat]\nurl = "https://b.example/h"\n'
        f'secret = "{SECRET}"\nevents = ["drift.found"]\nformat = "slack"\n',
    )
    chat, ops = settings.targets
    assert (ops.name, ops.secret, ops.events, ops.format) == ("ops", SECRET, EVENTS, "standard")
    assert (chat.events, chat.format) == (("drift.found",), "slack")
    assert [t.name for t in settings.wanting("drift.found")] == ["chat", "ops"]
    assert [t.name for t in settings.wanting("destination.paused")] == ["ops"]
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("target", "key", "message"),
    [
        ('url = "https://a.example"\nsecret = "not-a-whsec"', "secret", "whsec_"),
        ('url = "https://a.example"\nsecret = "whsec_c2hvcnQ="', "secret", "at least 16 bytes"),
        ('url = "https://a.example"\nsecret = "whsec_!!"', "secret", "base64"),
        (f'url = "ftp://a.example"\nsecret = "{SECRET}"', "url", "URL"),
        (f'url = "https://a.example"\nsecret = "{SECRET}"\nevents = ["x"]', "events.0", "one of"),
        (f'url = "https://a.example"\nsecret = "{SECRET}"\nformat = "teams"', "format", "one of"),
        (f'secret = "{SECRET}"', "url", "required"),
    ],
)
def test_bad_targets_name_the_key(tmp_path: Path, target: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[notifications.targets.ops]\n{target}\n")
    text = str(caught.value)
    assert f"notifications.targets.ops.{key}:" in text and message.lower() in text.lower()
