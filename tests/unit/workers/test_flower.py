"""Flower: the Procfile `consent-relay run` derives, the banner, and how `consent-relay flower`
builds Flower's command line and environment from the config layers (no process is started:
os.execv and os.execve are replaced)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.config.loader import ConfigError, load_settings
from relay.config.settings import Settings
from service.cli import commands as cli
from service.cli.procfile import derive, process_names, procfile_for_run
from workers import flower

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "flower-test-password"
PROCFILE = """web: gunicorn app
# the dashboard
worker: celery -A workers.main worker -E
flower: consent-relay flower
"""


def settings(
    tmp_path: Path, flower_section: str = "", environ: dict[str, str] | None = None
) -> Settings:
    path = tmp_path / "consent-relay.toml"
    path.write_text(
        f"""
[service]
data_dir = "{tmp_path / "data"}"

{flower_section}

[destinations.engage]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8025"
username = "api-user@example.com"
password = "engage-demo-password"

[sources.signup]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
source = "registration_form"
"""
    )
    return load_settings(path, environ=environ or {})


def with_password(tmp_path: Path, extra: str = "") -> Settings:
    return settings(tmp_path, f'[flower]\npassword = "{PASSWORD}"\n{extra}')


def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    return load_settings(None, environ={})


# --- the Procfile that `run` hands to honcho ---------------------------------------------------


def test_the_flower_line_is_left_out_without_a_password() -> None:
    derived = derive(PROCFILE, flower=False, emulator_port=None)
    assert process_names(derived) == ["web", "worker"]
    assert "# the dashboard" in derived  # everything else is kept as written


def test_the_flower_line_stays_with_a_password_and_the_demo_adds_the_emulator() -> None:
    assert derive(PROCFILE, flower=True, emulator_port=None) == PROCFILE
    derived = derive(PROCFILE, flower=True, emulator_port=8025)
    assert process_names(derived) == ["web", "worker", "flower", "engage-emulator"]
    assert derived.endswith("engage-emulator: engage-emulator --port 8025\n")


def test_the_repository_procfile_has_flower_and_sends_task_events() -> None:
    text = (REPO / "Procfile").read_text()
    assert process_names(text) == ["web", "worker", "beat", "flower"]
    worker = next(line for line in text.splitlines() if line.startswith("worker:"))
    assert " -E" in worker  # Flower sees tasks through the worker's task events
    assert "flower: consent-relay flower" in text.splitlines()  # no credentials in the Procfile


def test_an_unchanged_procfile_is_run_as_it_is(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE)
    assert procfile_for_run(with_password(tmp_path), procfile, flower=True) == procfile
    derived = procfile_for_run(with_password(tmp_path), procfile, flower=False)
    assert derived == tmp_path / "data" / "Procfile.run"
    assert process_names(derived.read_text()) == ["web", "worker"]


# --- `consent-relay run`: banner and environment -------------------------------------------------


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Stands in for os.execv (honcho) and restores what `run` changes in os.environ."""
    calls: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append(argv)

    monkeypatch.setattr(os, "execv", fake_execv)
    for name in ("PATH", "CONSENT_RELAY_CONFIG", flower.DEMO_PASSWORD_ENV):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    yield calls


def run_cli(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 0


def honcho_procfile(call: list[str]) -> str:
    return Path(call[call.index("-f") + 1]).read_text()


def test_run_without_a_password_leaves_flower_out_and_says_so(
    tmp_path: Path, exec_calls: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config = settings(tmp_path).config_path
    run_cli(["--config", str(config), "run", "--procfile", str(REPO / "Procfile")])
    [call] = exec_calls
    assert process_names(honcho_procfile(call)) == ["web", "worker", "beat"]
    assert "Flower is off: set [flower] password" in capsys.readouterr().out
    assert os.environ["CONSENT_RELAY_CONFIG"] == str(config.resolve())  # for every process


def test_run_with_a_password_starts_flower_and_prints_where_not_the_password(
    tmp_path: Path, exec_calls: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config = with_password(tmp_path, "port = 5601").config_path
    run_cli(["--config", str(config), "run", "--procfile", str(REPO / "Procfile")])
    [call] = exec_calls
    assert call[call.index("-f") + 1] == str(REPO / "Procfile")  # nothing to derive
    out = capsys.readouterr().out
    assert "Flower (tasks): http://127.0.0.1:5601 on all interfaces; user admin" in out
    assert PASSWORD not in out


def test_demo_run_prints_a_fresh_flower_password_each_time(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exec_calls: list[list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONSENT_RELAY_CONFIG", "")
    passwords = []
    for _ in range(2):
        run_cli(["run", "--procfile", str(REPO / "Procfile")])
        password = os.environ[flower.DEMO_PASSWORD_ENV]
        assert f"http://127.0.0.1:5555  user admin, password {password}" in capsys.readouterr().out
        passwords.append(password)
    assert len(set(passwords)) == 2 and all(len(p) >= 12 for p in passwords)
    names = process_names(honcho_procfile(exec_calls[-1]))
    assert names == [
        "web",
        "worker",
        "beat",
        "flower",
        "engage-emulator",
        "acoustic-emulator",
        "dotdigital-emulator",
        "moengage-emulator",
    ]


# --- `consent-relay flower` ---------------------------------------------------------------------


def test_flower_command_line_and_environment(tmp_path: Path) -> None:
    configured = with_password(tmp_path, 'port = 5601\nusername = "ops"')
    argv = flower.flower_argv(configured)
    assert argv == [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.main",
        "flower",
        "--port=5601",
        "--address=0.0.0.0",
    ]
    assert not any(PASSWORD in arg for arg in argv)  # a command line is visible to `ps`
    env = flower.flower_env(
        configured,
        {
            "FLOWER_BASIC_AUTH": "x:y",
            "FLOWER_URL_PREFIX": "flower",
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",
        },
        PASSWORD,
    )
    assert env["FLOWER_BASIC_AUTH"] == f"ops:{PASSWORD}"  # the config wins
    assert env["FLOWER_URL_PREFIX"] == "flower"  # other Flower options pass through
    assert "PROMETHEUS_MULTIPROC_DIR" not in env  # Flower's metrics stay its own
    assert configured.config_path is not None
    assert env["CONSENT_RELAY_CONFIG"] == str(configured.config_path.resolve())


def test_demo_flower_listens_on_loopback_with_the_password_run_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_ = demo(tmp_path, monkeypatch)
    assert flower.flower_address(settings_) == "127.0.0.1"
    assert flower.flower_argv(settings_)[-1] == "--address=127.0.0.1"
    assert flower.flower_password(settings_, {flower.DEMO_PASSWORD_ENV: "generated"}) == "generated"
    assert flower.flower_password(settings_, {}) is None
    assert "CONSENT_RELAY_CONFIG" not in flower.flower_env(settings_, {}, "generated")


def test_the_demo_variable_is_ignored_with_a_config_file(tmp_path: Path) -> None:
    assert flower.flower_password(settings(tmp_path), {flower.DEMO_PASSWORD_ENV: "x" * 20}) is None


def test_flower_execs_celery_flower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    with socket.socket() as spare:  # a port that is free (Flower checks before it starts)
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    configured = with_password(tmp_path, f"port = {port}")
    with pytest.raises(SystemExit):
        flower.run(configured, {"HOME": "/home/relay"})
    [(path, argv, env)] = calls
    assert path == sys.executable and argv == flower.flower_argv(configured)
    assert env["FLOWER_BASIC_AUTH"] == f"admin:{PASSWORD}" and env["HOME"] == "/home/relay"


class _Stop(Exception):
    pass


def test_flower_without_a_password_idles_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    waits: list[int] = []

    def idle() -> Any:
        waits.append(1)
        if len(waits) == 3:
            raise _Stop  # it would wait for a signal forever; it never exits by itself

    with pytest.raises(_Stop):
        flower.run(settings(tmp_path), {}, idle=idle)
    assert "Flower is off: no [flower] password is configured" in capsys.readouterr().err


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('username = "ops:team"\npassword = "flower-test-password"', "flower.username"),
        ('password = "with,comma-password"', "flower.password: Must not contain"),
        ('password = "short"', "flower.password: Shorter than minimum length 12."),
    ],
)
def test_flower_credentials_that_would_break_basic_auth_are_refused(
    tmp_path: Path, section: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, f"[flower]\n{section}")


def test_flower_idles_when_its_port_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Flower that cannot bind would exit, and honcho would stop every other process."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        configured = with_password(tmp_path, f"port = {port}")

        def idle() -> Any:
            raise _Stop

        with pytest.raises(_Stop):
            flower.run(configured, {}, idle=idle)
    assert f"Flower is off: port {port} on 0.0.0.0 is in use" in capsys.readouterr().err
    assert flower.can_listen("127.0.0.1", port)  # free again once released
