"""`consent-relay`: set up the ledger, run the Procfile processes, send a signed test event,
and look after dead letters and destinations (service/cli/admin.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import uuid
from pathlib import Path

import requests
import standardwebhooks

from relay.config import flower
from relay.config.demo import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ENGAGE_PORT,
    DEMO_METRICS_TOKEN,
    DEMO_PEER_PORTS,
)
from relay.config.loader import ConfigError, load_settings
from relay.config.settings import Settings
from relay.ledger.db import make_engine
from relay.ledger.migrate import upgrade
from service.cli import admin as cli_admin
from service.cli import erasures as cli_erasures
from service.cli import ledger as cli_ledger
from service.cli import sources as cli_sources
from service.cli.procfile import FLOWER, process_names, procfile_for_run

DEMO_EMAIL = "jane.doe@example.com"


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        sys.exit(f"consent-relay: {exc}")
    sys.exit(args.handler(settings, args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consent-relay", description=__doc__)
    parser.add_argument(
        "--config",
        help="TOML file (default: $CONSENT_RELAY_CONFIG or "
        "./consent-relay.toml; none there means demo mode)",
    )
    commands = parser.add_subparsers(required=True, metavar="command")
    db = commands.add_parser("db", help="ledger schema").add_subparsers(required=True)
    db.add_parser("upgrade", help="apply the migrations").set_defaults(handler=_db_upgrade)
    check = commands.add_parser("check-config", help="validate the config and print a summary")
    check.set_defaults(handler=_check_config)
    run = commands.add_parser("run", help="migrate, then start the Procfile processes (honcho)")
    run.add_argument("--procfile", default="Procfile")
    run.set_defaults(handler=_run)
    dashboard = commands.add_parser("flower", help="start Flower with the [flower] basic auth")
    dashboard.set_defaults(handler=_flower)
    send = commands.add_parser(
        "send-test-event", help="sign and send one canonical decision (standard-webhooks)"
    )
    send.add_argument("--source", help="configured source name (default: the first)")
    send.add_argument("--url", help="service base URL (default: http://127.0.0.1:<port>)")
    send.add_argument("--email", default=DEMO_EMAIL)
    send.add_argument(
        "--consent", default="granted", choices=["granted", "denied", "withdrawn", "unknown"]
    )
    send.add_argument("--source-label", help="payload 'source'")
    send.add_argument("--source-id", help="payload 'source_id'")
    send.add_argument("--occurred-at", help="RFC 3339 decision time")
    send.add_argument("--webhook-id", help="delivery id (default: random)")
    send.set_defaults(handler=_send_test_event)
    cli_admin.add_commands(commands)
    cli_sources.add_commands(commands)
    cli_ledger.add_commands(commands)
    cli_erasures.add_commands(commands)
    return parser


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> None:
    upgrade(make_engine(settings.database_url))
    print("ledger schema is up to date")


def _check_config(settings: Settings, _args: argparse.Namespace) -> None:
    print(f"config: {settings.config_path or 'none (demo mode)'}")
    # Hosts only: URLs may carry credentials before the "@".
    print(f"ledger: {settings.database_url.split('@')[-1]}")
    print(f"broker: {settings.broker_url.split('@')[-1]}")
    for name, src in settings.sources.items():
        print(f"source {name}: {src.kind}, {len(src.secrets)} secret(s), POST /webhooks/{name}")
    for name, dest in settings.destinations.items():
        print(f"destination {name}: {dest.kind} at {dest.base_url}")


def _run(settings: Settings, args: argparse.Namespace) -> None:
    upgrade(make_engine(settings.database_url))
    if settings.config_path is not None:  # so that every process reads the file --config named
        os.environ["CONSENT_RELAY_CONFIG"] = str(settings.config_path.resolve())
    if settings.demo:  # a fresh Flower password for each demo run, for `consent-relay flower`
        os.environ[flower.DEMO_PASSWORD_ENV] = secrets.token_urlsafe(12)
    password = flower.flower_password(settings, os.environ)
    procfile = procfile_for_run(settings, Path(args.procfile), flower=password is not None)
    flower_on = FLOWER in process_names(procfile.read_text())
    _print_banner(settings, _flower_line(settings, password, flower_on))
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    honcho = shutil.which("honcho") or "honcho"
    sys.stdout.flush()
    os.execv(  # noqa: S606 - replaces this process with honcho; no shell involved
        honcho, [honcho, "start", "-f", str(procfile), "-d", os.getcwd(), "-p", str(settings.port)]
    )


def _flower(settings: Settings, _args: argparse.Namespace) -> None:
    """Replace this process with the launcher in workers/flower.py, by command line: the CLI
    imports no worker code. It reads the same config file (--config) from the environment."""
    if settings.config_path is not None:
        os.environ["CONSENT_RELAY_CONFIG"] = str(settings.config_path.resolve())
    sys.stdout.flush()
    argv = [sys.executable, "-m", "workers.flower"]
    os.execv(argv[0], argv)  # noqa: S606 - no shell involved


def _print_banner(settings: Settings, flower_line: str) -> None:
    send = f"{Path(sys.executable).parent / 'consent-relay'} send-test-event"
    if settings.demo:
        print("=" * 78)
        print("DEMO MODE: no consent-relay.toml found. Running with embedded defaults:")
        print("  source 'demo' (PUBLIC secret, loopback only), SQLite ledger in ./var,")
        print(f"  embedded broker, and the Engage emulator on http://127.0.0.1:{DEMO_ENGAGE_PORT}")
        print("  Copy consent-relay.example.toml to consent-relay.toml for a real set-up.")
        print("Send a signed test event:")
        print(f"  {send} --email {DEMO_EMAIL} --consent granted")
        print(f"See what Engage received: curl http://127.0.0.1:{DEMO_ENGAGE_PORT}/_emulator/state")
        peers = ", ".join(f"{name} :{port}" for name, port in DEMO_PEER_PORTS.items())
        print(f"  and the peers (same /_emulator/state): {peers}")
        web = f"http://127.0.0.1:{settings.port}"
        print(f"Operator page: {web}/ops  user admin, password {DEMO_ADMIN_PASSWORD}")
        print(f"Metrics: curl -H 'Authorization: Bearer {DEMO_METRICS_TOKEN}' {web}/metrics")
    else:
        print(f"consent-relay on port {settings.port}; test with: {send} --source <name>")
    print(flower_line)
    if settings.demo:
        print("=" * 78)
    sys.stdout.flush()


def _flower_line(settings: Settings, password: str | None, in_procfile: bool) -> str:
    if password is None:
        return "Flower is off: set [flower] password in the config to start it."
    if not in_procfile:
        return "Flower is off: the Procfile has no flower line."
    user = settings.ops.flower_username
    if settings.demo:  # loopback only, and a new password each run
        return (
            f"Flower (tasks): {flower.flower_url(settings)}  "
            f"user {user}, password {password} (new each run)"
        )
    return (
        f"Flower (tasks): {flower.flower_url(settings)} on all interfaces; "
        f"user {user}, password: [flower] password"
    )


def _send_test_event(settings: Settings, args: argparse.Namespace) -> int:
    name = args.source or next(iter(settings.sources))
    source = settings.sources.get(name)
    if source is None:
        print(f"no source named {name!r} in the config", file=sys.stderr)
        return 2
    if source.kind != "standard-webhooks":
        print(f"source {name!r} is {source.kind}: use `consent-relay sources send {name}`")
        return 2
    payload = {"email": args.email, "tracking_consent": args.consent}
    for key, value in (
        ("source", args.source_label),
        ("source_id", args.source_id),
        ("occurred_at", args.occurred_at),
    ):
        if value:
            payload[key] = value
    body = json.dumps(payload)
    msg_id = args.webhook_id or f"msg_{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(source.secrets[0]).sign(msg_id, now, body),
    }
    url = f"{args.url or f'http://127.0.0.1:{settings.port}'}/webhooks/{name}"
    response = requests.post(url, data=body.encode(), headers=headers, timeout=30)
    print(f"{response.status_code} {response.text.strip()}")
    return 0 if response.ok else 1
