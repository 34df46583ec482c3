"""`consent-relay sources ...`: test a source's set-up end to end, and see what was ignored.

`send` signs a golden fixture (or any body) exactly as the sender would, with the source's
first active secret, using the kind's own `sign` (the code the intake verifies against), and
posts it to the running service. An operator can therefore check the URL, the secret and the
mapping before pointing the real form or CRM at it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from sqlalchemy import select

from relay.config.settings import Settings
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.models import IgnoredEvent
from schemas.hmac import load_preset, preset_names
from service.sources import build_kind
from service.sources.fixtures import fixture_names, load_fixture

TOKEN_BYTES = 32  # 43 url-safe characters, above the 32-character floor of token secrets


def add_commands(commands: Any) -> None:
    group = commands.add_parser("sources", help="configured sources: list, send a test, ignored")
    sub = group.add_subparsers(required=True)
    sub.add_parser("list", help="every source, its URL and fixtures").set_defaults(
        handler=_list_sources
    )
    send = sub.add_parser("send", help="sign a fixture or a body as the sender would, and post")
    send.add_argument("source", help="configured source name")
    what = send.add_mutually_exclusive_group()
    what.add_argument("--fixture", help="fixture event name (default: the kind's first)")
    what.add_argument("--body", type=Path, help="file with the raw body ('-' for stdin)")
    send.add_argument("--content-type", default="application/json", help="with --body")
    send.add_argument("--url", help="service base URL (default: http://127.0.0.1:<port>)")
    send.add_argument("--dry-run", action="store_true", help="print the request, send nothing")
    send.set_defaults(handler=_send)
    new = sub.add_parser("new", help="print a config skeleton for a sender preset (kind hmac)")
    new.add_argument("preset", choices=preset_names())
    new.add_argument("--name", help="the source's name (default: the preset's)")
    new.set_defaults(handler=_new_source)
    token = sub.add_parser("new-token", help="print a new random token for a token secret")
    token.set_defaults(handler=_new_token)
    ignored = sub.add_parser("ignored", help="recent events answered 2xx but not recorded")
    ignored.add_argument("--source", help="only this source")
    ignored.add_argument("--limit", type=int, default=20)
    ignored.set_defaults(handler=_list_ignored)
    again = sub.add_parser(
        "reprocess", help="run the kept bodies of ignored events through the current mapping"
    )
    again.add_argument("--source", help="only this source")
    again.add_argument("--json", action="store_true", help="the admin API's answer")
    again.set_defaults(handler=_reprocess)


def _list_sources(settings: Settings, _args: argparse.Namespace) -> int:
    for name, source in settings.sources.items():
        fixtures = ", ".join(fixture_names(source.kind)) or "-"
        print(f"{name}: kind {source.kind}, POST /webhooks/{name}, fixtures: {fixtures}")
    return 0


def _send(settings: Settings, args: argparse.Namespace) -> int:
    source = settings.sources.get(args.source)
    if source is None:
        print(f"no source named {args.source!r} in the config", file=sys.stderr)
        return 2
    try:
        body, content_type = _body(source, args)
    except (LookupError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    kind = build_kind(source, dt.timedelta(seconds=settings.max_future_skew_seconds))
    base = args.url or f"http://127.0.0.1:{settings.port}"
    signed = kind.sign(
        body, content_type, f"{base.rstrip('/')}/webhooks/{args.source}", time.time()
    )
    if args.dry_run:
        print(f"POST {_without_query(signed.url)} ({len(signed.body)} bytes, {content_type})")
        for header in signed.headers:
            print(f"  {header}: (set)")
        return 0
    response = requests.post(signed.url, data=signed.body, headers=dict(signed.headers), timeout=30)
    print(f"{response.status_code} {response.text.strip()}")
    return 0 if response.ok else 1


def _body(source: Any, args: argparse.Namespace) -> tuple[bytes, str]:
    if args.body is not None:
        data = sys.stdin.buffer.read() if str(args.body) == "-" else args.body.read_bytes()
        return data, args.content_type
    kind = source.kind
    names = fixture_names(kind)
    preset = source.options.get("hmac", {}).get("preset")
    default = load_preset(preset)["example"]["fixture"] if preset else None
    name = args.fixture or default or (names[0] if names else None)
    if name is None:
        raise LookupError(f"Kind {kind!r} has no fixtures; pass --body.")
    return load_fixture(kind, name)


def _without_query(url: str) -> str:
    """The URL without its query: a token kind's token is there, and is a secret."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="(token hidden)" if parts.query else ""))


def _new_source(_settings: Settings, args: argparse.Namespace) -> int:
    print(skeleton(args.preset, args.name or args.preset))
    return 0


def skeleton(preset: str, name: str) -> str:
    """A `[sources.<name>]` table for the preset: the preset's settings shown commented out
    (a line uncommented overrides it), and the example's labels and mapping to adapt."""
    data = load_preset(preset)
    example, settings = data["example"], data["hmac"]
    lines = [
        f"# {example['title']} (docs/sources/presets/{preset}.md)",
        f"[sources.{_key(name)}]",
        'kind = "hmac"',
        f'secrets = ["${{{example["secret"]}}}"]',
        f"source = {_toml(example['source'])}",
    ]
    if "source_id" in example:
        lines.append(f"source_id = {_toml(example['source_id'])}")
    lines += ["", f"[sources.{_key(name)}.hmac]", f'preset = "{preset}"', "# from the preset:"]
    lines += [f"# {key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["", f"[sources.{_key(name)}.mapping]"]
    lines += [f"{key} = {_toml(value)}" for key, value in example["mapping"].items()]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    """A TOML value (JSON strings are TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_key(key)} = {_toml(item)}" for key, item in value.items())
        return "{ " + pairs + " }"
    return json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _new_token(_settings: Settings, _args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(TOKEN_BYTES))
    return 0


def _list_ignored(settings: Settings, args: argparse.Namespace) -> int:
    sessions = make_session_factory(make_engine(settings.database_url))
    query = select(IgnoredEvent).order_by(IgnoredEvent.id.desc()).limit(max(args.limit, 1))
    if args.source:
        query = query.where(IgnoredEvent.source_name == args.source)
    with sessions() as session:
        rows = session.scalars(query).all()
        for row in rows:
            when = row.received_at.strftime("%Y-%m-%d %H:%M:%SZ")
            print(f"{when}  {row.source_name}  {row.event_type}  {row.delivery_id}  {row.reason}")
    if not rows:
        print("no ignored events")
    return 0


def _reprocess(settings: Settings, args: argparse.Namespace) -> int:
    """Idempotent: an event recorded already is a duplicate (docs/data-protection.md#reprocess)."""
    from service.http.actors import cli_actor
    from service.intake import reprocess
    from service.runtime import Runtime

    if args.source is not None and args.source not in settings.sources:
        print(f"consent-relay: no source named {args.source!r} in the config", file=sys.stderr)
        return 1
    if not settings.privacy.ignored_bodies_key:
        print("consent-relay: no [privacy] ignored_bodies_key: no body is kept", file=sys.stderr)
        return 1
    runtime = Runtime.build(settings)
    try:
        result = reprocess.reprocess(runtime, cli_actor(), args.source)
    finally:
        runtime.engine.dispose()
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(f"reprocessed: {result.summary()}")
        if result.recorded:
            print("the sweeper delivers the recorded decisions within a few seconds")
    return 0
