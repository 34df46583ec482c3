"""`load_settings`: embedded defaults, the TOML file, then the environment."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from relay.config.demo import DEMO_SOURCE_SECRET
from relay.config.loader import ConfigError, load_settings, normalise_database_url, web_concurrency
from relay.config.settings import Settings

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_" + base64.b64encode(b"second-secret-used-for-rotation").decode()
ENGAGE_PASSWORD = "s3cret-Engage-pa55"

# The README example.
README_EXAMPLE = f"""
[destinations.engage]
kind = "mapp-engage"
base_url = "https://your-engage-domain.com"
username = "api-user@example.com"
password = "${{ENGAGE_PASSWORD}}"

[sources.signup]
kind = "standard-webhooks"
secrets = ["{SECRET_A}", "{SECRET_B}"]
source = "registration_form"
"""
ENV = {"ENGAGE_PASSWORD": ENGAGE_PASSWORD}


def write(tmp_path: Path, text: str, name: str = "consent-relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), environ=ENV if environ is None else environ)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return str(caught.value)


# --- the README example ------------------------------------------------------------------------


def test_readme_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, README_EXAMPLE)
    settings = load_settings(path, environ=ENV)

    assert settings.demo is False
    assert settings.config_path == path
    engage = settings.destinations["engage"]
    assert (engage.name, engage.kind) == ("engage", "mapp-engage")
    assert engage.base_url == "https://your-engage-domain.com"
    assert engage.username == "api-user@example.com"
    assert engage.password == ENGAGE_PASSWORD
    assert (engage.connect_timeout_seconds, engage.read_timeout_seconds) == (5.0, 40.0)
    signup = settings.sources["signup"]
    assert (signup.name, signup.kind, signup.source) == (
        "signup",
        "standard-webhooks",
        "registration_form",
    )
    assert signup.secrets == (SECRET_A, SECRET_B)
    assert signup.timestamp_tolerance_seconds == 300
    # Embedded defaults.
    assert settings.port == 8000
    assert settings.broker_url == "filesystem://"
    assert settings.data_dir == Path("var")
    assert settings.database_url == "sqlite:///var/consent-relay.db"
    assert settings.is_sqlite
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.queue == "consent-relay"
    assert settings.log_level == "INFO"
    assert settings.delivery.lease_seconds == 180
    assert settings.delivery.retry_schedule_seconds == (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
    assert settings.delivery.max_retry_age_seconds == 72 * 3600.0
    assert settings.delivery.max_rejected_attempts == 3
    assert (engage.rate_limit_per_second, engage.rate_limit_headroom) == (10.0, 0.05)
    assert settings.admin_tokens == ()


def test_variables_expand_inside_strings_and_lists(tmp_path: Path) -> None:
    text = README_EXAMPLE.replace(
        "https://your-engage-domain.com", "https://${ENGAGE_HOST}/tenant"
    ).replace(f'"{SECRET_B}"', '"${SECOND_SECRET}"')
    settings = load(
        tmp_path, text, {**ENV, "ENGAGE_HOST": "eu.example.com", "SECOND_SECRET": SECRET_B}
    )
    assert settings.destinations["engage"].base_url == "https://eu.example.com/tenant"
    assert settings.sources["signup"].secrets == (SECRET_A, SECRET_B)


def test_per_source_tolerance_overrides_the_service_default(tmp_path: Path) -> None:
    text = (
        README_EXAMPLE
        + "timestamp_tolerance_seconds = 60\n\n[service]\ntimestamp_tolerance_seconds = 900\n"
    )
    settings = load(tmp_path, text)
    assert settings.timestamp_tolerance_seconds == 900
    assert settings.sources["signup"].timestamp_tolerance_seconds == 60


# --- errors name the key ---------------------------------------------------------------------


def test_undefined_variable_names_the_key_and_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, README_EXAMPLE, environ={})
    assert "destinations.engage.password" in message
    assert "ENGAGE_PASSWORD" in message


def test_undefined_variable_in_a_list_names_the_index(tmp_path: Path) -> None:
    text = README_EXAMPLE.replace(f'"{SECRET_B}"', '"${SECOND_SECRET}"')
    message = config_error(tmp_path, text)
    assert "sources.signup.secrets.1" in message
    assert "SECOND_SECRET" in message


def test_unknown_kinds_name_both_keys(tmp_path: Path) -> None:
    text = README_EXAMPLE.replace('"standard-webhooks"', '"stripe"').replace(
        '"mapp-engage"', '"acoustic"'
    )
    message = config_error(tmp_path, text)
    assert "sources.signup.kind" in message
    assert "destinations.engage.kind" in message


def test_unknown_source_kind_alone(tmp_path: Path) -> None:
    message = config_error(tmp_path, README_EXAMPLE.replace('"standard-webhooks"', '"formstack"'))
    assert "sources.signup.kind" in message
    assert "destinations.engage" not in message


@pytest.mark.parametrize(
    "secrets_line",
    ["", "secrets = []"],
    ids=["missing", "empty"],
)
def test_missing_secrets_names_the_key(tmp_path: Path, secrets_line: str) -> None:
    text = README_EXAMPLE.replace(f'secrets = ["{SECRET_A}", "{SECRET_B}"]', secrets_line)
    assert "sources.signup.secrets" in config_error(tmp_path, text)


@pytest.mark.parametrize(
    "bad_secret",
    ["whsec_!!!not-base64!!!", "whsec_abc$def", "whsec_c2hvcnQ="],
    ids=["not-base64", "bad-char", "too-short"],
)
def test_bad_secret_names_the_key(tmp_path: Path, bad_secret: str) -> None:
    message = config_error(tmp_path, README_EXAMPLE.replace(SECRET_B, bad_secret))
    assert "sources.signup.secrets" in message
    assert bad_secret not in message  # never echo a secret, even a broken one


@pytest.mark.parametrize("url", ["not a url", "ftp://engage.example.com", "engage.example.com", ""])
def test_bad_base_url_names_the_key(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, README_EXAMPLE.replace("https://your-engage-domain.com", url))
    assert "destinations.engage.base_url" in message


@pytest.mark.parametrize(
    ("addition", "key"),
    [
        ("bogus = 1\n", "sources.signup.bogus"),
        ("\n[service]\nprot = 8000\n", "service.prot"),
        ("\n[delivery]\nlease = 10\n", "delivery.lease"),
        ("\n[telemetry]\nenabled = true\n", "telemetry"),
    ],
)
def test_unknown_key_is_rejected(tmp_path: Path, addition: str, key: str) -> None:
    message = config_error(tmp_path, README_EXAMPLE + addition)
    assert key in message
    assert "Unknown field" in message


def test_typo_secret_for_secrets_is_reported_twice(tmp_path: Path) -> None:
    text = README_EXAMPLE.replace("secrets = [", "secret = [")
    message = config_error(tmp_path, text)
    assert "sources.signup.secret:" in message  # unknown
    assert "sources.signup.secrets:" in message  # missing


def test_unknown_destination_key_is_rejected(tmp_path: Path) -> None:
    text = README_EXAMPLE.replace('username = "api-user@example.com"', 'user = "x"')
    message = config_error(tmp_path, text)
    assert "destinations.engage.user" in message
    assert "destinations.engage.username" in message


@pytest.mark.parametrize(
    "text",
    ["[service\n", "port = \n", 'a = "unterminated\n', README_EXAMPLE + "\n[sources.signup]\n"],
)
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    assert "not valid TOML" in config_error(tmp_path, text)


def test_invalid_names_and_values_in_the_file(tmp_path: Path) -> None:
    text = (
        README_EXAMPLE.replace("[sources.signup]", '[sources."sign up!"]')
        + '\n[service]\nport = 70000\nmax_body_bytes = 10\nlog_level = "LOUD"\n'
    )
    message = config_error(tmp_path, text)
    for key in ("sources.sign up!", "service.port", "service.max_body_bytes", "service.log_level"):
        assert key in message


def test_retry_settings_load_and_are_checked(tmp_path: Path) -> None:
    good = README_EXAMPLE + "\n[delivery]\nretry_schedule_seconds = [1, 2.5]\n"
    assert load(tmp_path, good).delivery.retry_schedule_seconds == (1.0, 2.5)
    bad = (
        README_EXAMPLE
        + "\n[delivery]\nretry_schedule_seconds = []\nmax_rejected_attempts = 0\n"
        + "max_retry_age_seconds = -1\n"
    )
    message = config_error(tmp_path, bad)
    for key in (
        "delivery.retry_schedule_seconds",
        "delivery.max_rejected_attempts",
        "delivery.max_retry_age_seconds",
    ):
        assert key in message


def test_retention_defaults_are_conservative_and_values_are_checked(tmp_path: Path) -> None:
    kept = load(tmp_path, README_EXAMPLE).retention
    # Attempts and superseded deliveries are kept for good unless the operator says otherwise.
    assert (kept.delivery_attempts_days, kept.superseded_deliveries_days) == (0, 0)
    assert (kept.ignored_events_days, kept.resolved_dead_letters_days) == (90, 365)
    assert kept.failed_destination_erasures_days == 30  # a sealed identifier: not for good
    good = README_EXAMPLE + "\n[retention]\ndelivery_attempts_days = 730\nbatch_size = 50\n"
    loaded = load(tmp_path, good).retention
    assert (loaded.delivery_attempts_days, loaded.batch_size) == (730, 50)
    bad = README_EXAMPLE + (
        "\n[retention]\nignored_events_days = -1\nbatch_size = 0\n"
        "failed_destination_erasures_days = -1\n"
    )
    message = config_error(tmp_path, bad)
    assert "retention.ignored_events_days" in message and "retention.batch_size" in message
    assert "retention.failed_destination_erasures_days" in message


def test_kept_bodies_need_a_fernet_key(tmp_path: Path) -> None:
    keep = README_EXAMPLE + "\n[retention]\nkeep_ignored_bodies_days = 7\n"
    assert "ignored_bodies_key" in config_error(tmp_path, keep)
    key = "A" * 43 + "="
    settings = load(tmp_path, keep + f'\n[privacy]\nignored_bodies_key = "{key}"\n')
    assert settings.retention.keep_ignored_bodies_days == 7
    assert key not in repr(settings)
    bad = README_EXAMPLE + '\n[privacy]\nignored_bodies_key = "short"\n'
    assert "privacy.ignored_bodies_key" in config_error(tmp_path, bad)


def test_the_beat_prunes_on_the_retention_interval(tmp_path: Path) -> None:
    from relay.messaging.client import create_celery_client
    from relay.messaging.names import PRUNE_TASK

    settings = load(tmp_path, README_EXAMPLE + "\n[retention]\ninterval_seconds = 600\n")
    entry = create_celery_client(settings).conf.beat_schedule["prune"]
    assert (entry["task"], entry["schedule"]) == (PRUNE_TASK, 600.0)


def test_admin_tokens_load_and_short_tokens_are_refused(tmp_path: Path) -> None:
    token = "t" * 32
    settings = load(tmp_path, README_EXAMPLE + f'\n[admin]\ntokens = ["{token}"]\n')
    assert settings.admin_tokens == (token,)
    assert token not in repr(settings)
    message = config_error(tmp_path, README_EXAMPLE + '\n[admin]\ntokens = ["short"]\n')
    assert "admin.tokens.0" in message


def test_rate_limit_settings_are_checked(tmp_path: Path) -> None:
    text = README_EXAMPLE.replace(
        'password = "${ENGAGE_PASSWORD}"',
        'password = "${ENGAGE_PASSWORD}"\nrate_limit_per_second = 0\nrate_limit_headroom = 0.9',
    )
    message = config_error(tmp_path, text)
    assert "destinations.engage.rate_limit_per_second" in message
    assert "destinations.engage.rate_limit_headroom" in message


def test_lease_must_outlast_the_worst_case_write(tmp_path: Path) -> None:
    # 3 calls x (5 s rate-limit wait + 5 s connect + 40 s read) + 30 s margin = 180 s.
    message = config_error(tmp_path, README_EXAMPLE + "\n[delivery]\nlease_seconds = 120\n")
    assert "delivery.lease_seconds" in message
    assert "180" in message
    text = README_EXAMPLE.replace(
        'password = "${ENGAGE_PASSWORD}"',
        'password = "${ENGAGE_PASSWORD}"\nconnect_timeout_seconds = 2\nread_timeout_seconds = 20',
    )
    assert (
        load(tmp_path, text + "\n[delivery]\nlease_seconds = 120\n").delivery.lease_seconds == 120
    )


@pytest.mark.parametrize("missing", ["sources", "destinations"])
def test_sources_and_destinations_are_required(tmp_path: Path, missing: str) -> None:
    header = "[sources.signup]" if missing == "sources" else "[destinations.engage]"
    other = "[destinations.engage]" if missing == "sources" else "[sources.signup]"
    parts = README_EXAMPLE.split("\n\n")
    kept = "\n\n".join(p for p in parts if header not in p)
    assert other in kept
    assert f"{missing}: Missing data for required field." in config_error(tmp_path, kept)


# --- the environment overrides the file --------------------------------------------------------


FILE_SERVICE = """
[service]
port = 9000
database_url = "sqlite:////srv/file.db"
broker_url = "redis://file-broker:6379/0"
"""


def test_file_service_values_apply_without_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, README_EXAMPLE + FILE_SERVICE)
    assert settings.port == 9000
    assert settings.database_url == "sqlite:////srv/file.db"
    assert settings.broker_url == "redis://file-broker:6379/0"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        **ENV,
        "DATABASE_URL": "postgresql+psycopg://relay@db:5432/relay",
        "CELERY_BROKER_URL": "amqp://guest@rabbit:5672//",
        "PORT": "8123",
    }
    settings = load(tmp_path, README_EXAMPLE + FILE_SERVICE, env)
    assert settings.port == 8123
    assert settings.database_url == "postgresql+psycopg://relay@db:5432/relay"
    assert not settings.is_sqlite
    assert settings.broker_url == "amqp://guest@rabbit:5672//"


def test_empty_environment_values_do_not_override(tmp_path: Path) -> None:
    env = {**ENV, "DATABASE_URL": "", "CELERY_BROKER_URL": "", "PORT": ""}
    settings = load(tmp_path, README_EXAMPLE + FILE_SERVICE, env)
    assert (settings.port, settings.database_url, settings.broker_url) == (
        9000,
        "sqlite:////srv/file.db",
        "redis://file-broker:6379/0",
    )


def test_default_database_lives_in_data_dir(tmp_path: Path) -> None:
    text = README_EXAMPLE + f'\n[service]\ndata_dir = "{tmp_path / "state"}"\n'
    settings = load(tmp_path, text)
    assert settings.data_dir == tmp_path / "state"
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'consent-relay.db'}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///var/x.db", "sqlite:///var/x.db"),
    ],
)
def test_database_url_normalisation(tmp_path: Path, url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected
    from_env = load(tmp_path, README_EXAMPLE, {**ENV, "DATABASE_URL": url})
    assert from_env.database_url == expected
    from_file = load(tmp_path, README_EXAMPLE + f'\n[service]\ndatabase_url = "{url}"\n')
    assert from_file.database_url == expected


@pytest.mark.parametrize(
    "port", ["abc", "0", "65536", "-1", "80.5", " 80", "8080 ", "1e3", "²", "٣", "１２３"]
)
def test_bad_port_in_environment(tmp_path: Path, port: str) -> None:
    message = config_error(tmp_path, README_EXAMPLE, {**ENV, "PORT": port})
    assert message.startswith("PORT:")
    assert repr(port) in message


@pytest.mark.parametrize("port", ["1", "8000", "65535"])
def test_good_port_in_environment(tmp_path: Path, port: str) -> None:
    assert load(tmp_path, README_EXAMPLE, {**ENV, "PORT": port}).port == int(port)


# --- where the file comes from -----------------------------------------------------------------


def test_no_file_at_the_default_path_gives_demo_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.demo is True
    assert settings.config_path is None
    assert list(settings.sources) == ["demo"]
    assert settings.sources["demo"].secrets == (DEMO_SOURCE_SECRET,)
    assert settings.destinations["engage"].base_url == "http://127.0.0.1:8025"
    assert settings.database_url.startswith("sqlite:///")


def test_demo_settings_still_take_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"PORT": "8111", "DATABASE_URL": "postgres://u@h/db"})
    assert settings.demo is True
    assert settings.port == 8111
    assert settings.database_url == "postgresql+psycopg://u@h/db"


def test_file_at_the_default_path_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, README_EXAMPLE)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=ENV)
    assert settings.demo is False
    assert list(settings.sources) == ["signup"]


def test_consent_relay_config_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, README_EXAMPLE, name="elsewhere.toml")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={**ENV, "CONSENT_RELAY_CONFIG": str(path)})
    assert settings.config_path == path
    assert settings.demo is False


def test_explicit_config_pointing_at_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"CONSENT_RELAY_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(missing, environ={})


# --- secrets stay out of repr ------------------------------------------------------------------


def test_repr_contains_neither_password_nor_secrets(tmp_path: Path) -> None:
    settings = load(tmp_path, README_EXAMPLE)
    for text in (
        repr(settings),
        str(settings),
        repr(settings.sources),
        repr(settings.destinations),
    ):
        assert ENGAGE_PASSWORD not in text
        for secret in (SECRET_A, SECRET_B):
            assert secret not in text
            assert secret.removeprefix("whsec_") not in text
    # ...while the settings still carry them.
    assert settings.destinations["engage"].password == ENGAGE_PASSWORD
    assert "registration_form" in repr(settings)


def test_demo_repr_hides_the_demo_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEMO_SOURCE_SECRET not in repr(load_settings(environ={}))


def test_repr_hides_database_and_broker_credentials(tmp_path: Path) -> None:
    env = {
        **ENV,
        "DATABASE_URL": "postgresql://relay:db-pa55word@db/relay",
        "CELERY_BROKER_URL": "redis://:broker-pa55word@redis:6379/0",
    }
    text = repr(load(tmp_path, README_EXAMPLE, env))
    assert "db-pa55word" not in text
    assert "broker-pa55word" not in text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WEB_CONCURRENCY": "3"}, 3),
        ({}, 2 * (os.cpu_count() or 1)),
        ({"WEB_CONCURRENCY": "0"}, 2 * (os.cpu_count() or 1)),
        ({"WEB_CONCURRENCY": "many"}, 2 * (os.cpu_count() or 1)),
    ],
)
def test_web_concurrency_defaults_to_two_workers_per_core(
    environ: dict[str, str], expected: int
) -> None:
    assert web_concurrency(environ) == expected
