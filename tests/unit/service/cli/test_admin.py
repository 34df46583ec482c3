"""`consent-relay dead-letters ...` and `consent-relay destinations ...` through
service.cli.commands.main, with a config file in tmp_path (SQLite ledger, embedded filesystem
broker)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.models import DeadLetter, DestinationStatus, Outbox
from service.cli.commands import main
from tests.helpers.ledger_rows import T0, dead_letter, record

JANE = "Jane.Doe@Example.com"


def config_text(data_dir: Path) -> str:
    return f"""
[service]
data_dir = "{data_dir}"

[destinations.engage]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8025"
username = "api-user@example.com"
password = "engage-demo-password"

[destinations.engage_eu]
kind = "mapp-engage"
base_url = "http://127.0.0.1:8026"
username = "api-user@example.com"
password = "engage-demo-password"

[sources.signup]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
source = "registration_form"

[sources.crm]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
source = "crm_import"
"""


@dataclass
class Cli:
    config: Path
    data_dir: Path
    sessions: sessionmaker[Session]
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str) -> tuple[int, str, str]:
        """Exit code, stdout, stderr of `consent-relay --config <file> argv...`."""
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else 1), out, err

    def broker_messages(self) -> list[Path]:
        return sorted((self.data_dir / "broker").glob("*.msg"))


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    config = tmp_path / "consent-relay.toml"
    config.write_text(config_text(tmp_path / "data"))
    db = f"sqlite:///{tmp_path / 'data' / 'consent-relay.db'}"
    cli = Cli(config, tmp_path / "data", make_session_factory(make_engine(db)), capsys)
    assert cli.run("db", "upgrade")[0] == 0
    return cli


# Three refused attempts, the last one logged.
refused = partial(
    dead_letter,
    body='{"message": "invalid"}',
    logged=1,
    attempt_detail="invalid attribute value",
)


@pytest.fixture
def ids(cli: Cli) -> dict[str, int]:
    """jane (signup, engage; an older one superseded), john (crm, engage), ann (engage_eu)."""
    with cli.sessions() as session:
        jane = record(session, JANE, "granted", "signup")
        jane_old = refused(session, "engage", jane, T0 + dt.timedelta(hours=1))
        record(session, JANE, "denied", "signup", T0 + dt.timedelta(minutes=90))
        john = record(session, "john@example.com", "denied", "crm")
        ann = record(session, "ann@example.com", "withdrawn", "signup")
        return {
            "jane_old": jane_old,
            "jane": refused(session, "engage", jane, T0 + dt.timedelta(hours=2)),
            "john": refused(session, "engage", john, T0 + dt.timedelta(hours=3)),
            "ann": refused(session, "engage_eu", ann, T0 + dt.timedelta(hours=4)),
            "jane_contact": jane,
            "john_contact": john,
        }


def outbox_statuses(cli: Cli, destination: str, contact_id: int) -> list[str]:
    with cli.sessions() as session:
        return list(
            session.scalars(
                select(Outbox.status)
                .filter_by(destination=destination, contact_id=contact_id)
                .order_by(Outbox.id)
            )
        )


def dead_letter_status(cli: Cli, dead_id: int) -> tuple[str, int]:
    with cli.sessions() as session:
        row = session.get(DeadLetter, dead_id)
        assert row is not None
        return row.status, row.replay_count


def table_ids(out: str) -> list[int]:
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "DESTINATION"]
    return [int(line.split()[0]) for line in lines[1:]]


# --- dead-letters list / show -------------------------------------------------------------------


def test_list_prints_a_table_of_open_dead_letters(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "list")

    assert code == 0
    assert table_ids(out) == [ids["ann"], ids["john"], ids["jane"]]
    jane_line = out.strip().splitlines()[-1].split()
    assert jane_line == [
        str(ids["jane"]),
        "2026-07-01",
        "11:00:00Z",
        "engage",
        "rejected",
        "400",
        "3",
        JANE,
        "denied",
        "open",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--status", "all"], ["ann", "john", "jane", "jane_old"]),
        (["--status", "superseded"], ["jane_old"]),
        (["--destination", "engage_eu"], ["ann"]),
        (["--source", "crm"], ["john"]),
        (["--email", "JANE.doe@example.com"], ["jane"]),
        (["--since", "2026-07-01T12:00:00Z"], ["ann", "john"]),
        (["--since", "2026-07-01T12:00", "--until", "2026-07-01T13:00"], ["john"]),  # UTC
        (["--status", "all", "--limit", "2", "--offset", "1"], ["john", "jane"]),
    ],
)
def test_list_filters(cli: Cli, ids: dict[str, int], argv: list[str], expected: list[str]) -> None:
    code, out, _ = cli.run("dead-letters", "list", *argv)
    assert code == 0
    assert table_ids(out) == [ids[name] for name in expected]


def test_list_json_prints_one_object_per_line(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "list", "--json", "--source", "signup")

    assert code == 0
    items = [json.loads(line) for line in out.splitlines()]
    assert [item["id"] for item in items] == [ids["ann"], ids["jane"]]
    assert items[1]["email"] == JANE
    assert items[1]["created_at"] == "2026-07-01T11:00:00+00:00"


def test_list_says_when_nothing_matches(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "list", "--email", "nobody@example.com")
    assert code == 0
    assert out.strip() == "no dead letters (status open) match"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--since", "yesterday"], "argument --since: not an ISO 8601 time: 'yesterday'"),
        (["list", "--until", "2026-13-01"], "argument --until: not an ISO 8601 time"),
        (["list", "--status", "closed"], "argument --status: invalid choice: 'closed'"),
        (["list", "--limit", "0"], "argument --limit: must be at least 1"),
        (["show", "seven"], "argument id: not a whole number: 'seven'"),
        (["replay", "--since", "07/01/2026"], "argument --since: not an ISO 8601 time"),
    ],
)
def test_bad_arguments_are_usage_errors(cli: Cli, argv: list[str], message: str) -> None:
    code, _, err = cli.run("dead-letters", *argv)
    assert code == 2
    assert message in err


def test_show_prints_every_field_and_the_history(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "show", str(ids["jane"]))

    assert code == 0
    fields = dict(line.split(":", 1) for line in out.split("\n\n")[0].splitlines() if ":" in line)
    assert fields["email"].strip() == JANE
    assert fields["status"].strip() == "open"
    assert fields["last_body"].strip() == '{"message": "invalid"}'
    assert fields["resolved_at"].strip() == "-"
    history = out.split("attempt history (2, oldest first):\n")[1].splitlines()
    assert history[0].split()[:3] == ["STARTED", "OUTCOME", "HTTP"]
    assert [line.split()[1] for line in history[1:]] == ["09:59:00Z", "10:59:00Z"]
    assert "invalid attribute value" in history[2]


def test_show_json(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "show", str(ids["john"]), "--json")
    assert code == 0
    detail = json.loads(out)
    assert (detail["id"], detail["source"], detail["decision"]) == (ids["john"], "crm", "denied")
    assert [entry["http_status"] for entry in detail["history"]] == [400]


def test_show_of_an_unknown_id_exits_1(cli: Cli, ids: dict[str, int]) -> None:
    code, out, err = cli.run("dead-letters", "show", "424242")
    assert code == 1
    assert out == ""
    assert "no dead letter 424242" in err


# --- dead-letters replay ------------------------------------------------------------------------


def test_replay_by_id_then_again_is_a_no_op(cli: Cli, ids: dict[str, int]) -> None:
    jane = ids["jane_contact"]
    assert outbox_statuses(cli, "engage", jane) == ["dead_lettered", "dead_lettered"]

    code, out, _ = cli.run("dead-letters", "replay", str(ids["jane"]))

    assert code == 0
    assert f"replayed 1: {ids['jane']}" in out
    assert out.splitlines()[-1] == "enqueued 1 delivery"
    assert outbox_statuses(cli, "engage", jane) == ["pending", "pending"]
    assert dead_letter_status(cli, ids["jane"]) == ("replayed", 1)
    assert len(cli.broker_messages()) == 1

    code, out, _ = cli.run("dead-letters", "replay", str(ids["jane"]))

    assert code == 0
    assert "replayed 0: -" in out
    assert f"skipped {ids['jane']}: already replayed" in out
    assert dead_letter_status(cli, ids["jane"]) == ("replayed", 1)
    assert len(cli.broker_messages()) == 1


def test_replay_reports_superseded_and_unknown_ids(cli: Cli, ids: dict[str, int]) -> None:
    code, out, err = cli.run("dead-letters", "replay", str(ids["jane_old"]), "424242")

    assert code == 1
    assert f"skipped {ids['jane_old']}: superseded by a newer decision" in out
    assert "no dead letter 424242" in err
    assert dead_letter_status(cli, ids["jane_old"]) == ("superseded", 0)


def test_replay_by_filters(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "replay", "--destination", "engage", "--source", "crm")

    assert code == 0
    assert out.splitlines()[0] == f"replayed 1: {ids['john']}"
    assert dead_letter_status(cli, ids["john"]) == ("replayed", 1)
    assert dead_letter_status(cli, ids["jane"]) == ("open", 0)


def test_replay_all(cli: Cli, ids: dict[str, int]) -> None:
    code, out, _ = cli.run("dead-letters", "replay", "--all")

    assert code == 0
    assert out.startswith("replayed 3: ")
    assert "enqueued 3 deliveries" in out
    assert len(cli.broker_messages()) == 3
    assert table_ids(cli.run("dead-letters", "list", "--status", "replayed")[1]) == [
        ids["ann"],
        ids["john"],
        ids["jane"],
    ]


@pytest.mark.parametrize(
    "argv",
    [[], ["--all", "7"], ["--all", "--destination", "engage"], ["7", "--source", "signup"]],
)
def test_replay_refuses_without_a_clear_selection(
    cli: Cli, ids: dict[str, int], argv: list[str]
) -> None:
    code, out, err = cli.run("dead-letters", "replay", *argv)

    assert code == 2
    assert "nothing was replayed" in err
    assert out == ""
    assert dead_letter_status(cli, ids["jane"]) == ("open", 0)


def test_a_broker_failure_is_only_a_note(
    cli: Cli, ids: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    class DownBroker:
        def send_task(self, *_: Any, **__: Any) -> None:
            raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("service.cli.admin.create_celery_app", lambda _settings: DownBroker())

    code, out, _ = cli.run("dead-letters", "replay", str(ids["john"]))

    assert code == 0
    assert "note: enqueued 0 of 1 deliveries" in out
    assert "sweeper" in out
    assert outbox_statuses(cli, "engage", ids["john_contact"]) == ["pending"]


def test_an_unmigrated_ledger_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "consent-relay.toml"
    config.write_text(config_text(tmp_path / "empty"))
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "dead-letters", "list"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "the ledger cannot be used (no such table: dead_letters)" in err
    assert "Traceback" not in err


# --- destinations -------------------------------------------------------------------------------


def destination_rows(cli: Cli) -> dict[str, list[str]]:
    code, out, _ = cli.run("destinations", "list")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATE"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_pause_and_resume(cli: Cli) -> None:
    assert {name: row[1] for name, row in destination_rows(cli).items()} == {
        "engage": "active",
        "engage_eu": "active",
    }

    code, out, _ = cli.run("destinations", "pause", "engage", "--reason", "Engage maintenance")

    assert code == 0
    assert out.startswith("paused engage")
    rows = destination_rows(cli)
    assert rows["engage"][1:3] == ["paused", "operator"]
    assert " ".join(rows["engage"]).endswith("Engage maintenance")
    assert rows["engage_eu"][1] == "active"
    code, out, _ = cli.run("destinations", "list", "--json")
    paused = json.loads(out.splitlines()[0])
    assert (paused["name"], paused["paused"], paused["paused_by"]) == ("engage", True, "operator")

    code, out, _ = cli.run("destinations", "resume", "engage")

    assert code == 0
    assert out.startswith("resumed engage")
    assert destination_rows(cli)["engage"][1] == "active"
    with cli.sessions() as session:
        row = session.get(DestinationStatus, "engage")
        assert row is not None
        assert (row.paused_at, row.resumed_by) == (None, "operator")
    assert cli.run("destinations", "resume", "engage")[1].strip() == "engage was not paused"


def test_a_stored_reason_with_control_characters_is_listed_escaped(cli: Cli) -> None:
    # A row written before such reasons were refused: the terminal must not interpret it.
    with cli.sessions() as session:
        session.add(
            DestinationStatus(
                name="engage",
                paused_at=T0,
                paused_by="operator",
                paused_reason="\x1b[2Jgone\x00\x9b",
            )
        )
        session.commit()
    code, out, _ = cli.run("destinations", "list")
    assert code == 0
    assert "\x1b" not in out and "\x00" not in out and "\x9b" not in out
    assert "\\x1b[2Jgone\\x00\\x9b" in out
    code, out, _ = cli.run("destinations", "list", "--json")
    assert "\x1b" not in out and "\x9b" not in out
    assert json.loads(out.splitlines()[0])["paused_reason"] == "\x1b[2Jgone\x00\x9b"


@pytest.mark.parametrize(
    "argv",
    [
        ("destinations", "pause", "engage", "--reason", "\x1b[31m"),
        ("dead-letters", "list", "--email", "a\x00b"),
        ("dead-letters", "list", "--since", "0001-01-01T00:00:00+14:00"),
    ],
)
def test_arguments_the_ledger_cannot_use_are_refused_as_usage_errors(
    cli: Cli, argv: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(cli.config), *argv])
    assert exited.value.code == 2
    assert "the ledger cannot be used" not in cli.capsys.readouterr().err


def test_a_pause_reason_with_control_characters_is_refused(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            ["--config", str(cli.config), "destinations", "pause", "engage", "--reason", "\x1b[31m"]
        )
    assert exited.value.code == 2
    assert "control characters" in cli.capsys.readouterr().err


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_unknown_destination_exits_1(cli: Cli, action: str) -> None:
    code, _, err = cli.run("destinations", action, "nowhere")
    assert code == 1
    assert "no destination named 'nowhere'" in err
