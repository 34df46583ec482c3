"""Operator commands: `consent-relay dead-letters ...` and `consent-relay destinations ...`.

They work on the ledger directly (the same functions as the admin API), so they need the
database but not the web process. Exit codes: 0 done, 1 not found or ledger error, 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any

from marshmallow import Schema, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from relay.config.settings import Settings
from relay.ledger import audit, dead_letters
from relay.ledger import pauses as destinations
from relay.ledger.db import make_engine, make_session_factory
from relay.ledger.dead_letters import DeadLetterFilters, DeadLetterView, Pair
from relay.ledger.models import utcnow
from relay.messaging.client import create_celery_client as create_celery_app
from relay.messaging.names import DELIVER_TASK
from schemas.admin import STATUS_FILTERS, ContactLookupSchema, PauseBodySchema
from schemas.text import printable
from service.http.actors import cli_actor

Handler = Callable[[Settings, argparse.Namespace], int]
LIST_HEADERS = (
    *("ID", "CREATED", "DESTINATION", "REASON", "LAST", "ATTEMPTS"),
    *("EMAIL", "DECISION", "STATUS"),
)
Subcommands = argparse._SubParsersAction  # argparse exposes no public name for it


def add_commands(commands: Subcommands[argparse.ArgumentParser]) -> None:
    """Called by `service.cli.commands._parser()`."""
    _add_dead_letter_commands(commands)
    _add_destination_commands(commands)


def _add_dead_letter_commands(commands: Subcommands[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("dead-letters", help="decisions that could not be delivered")
    sub = group.add_subparsers(required=True, metavar="action")
    ls = sub.add_parser("list", help="newest first")
    ls.add_argument("--status", choices=STATUS_FILTERS, default="open")
    _add_filters(ls)
    ls.add_argument("--limit", type=_positive, default=100)
    ls.add_argument("--offset", type=_positive_or_zero, default=0)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=_guarded(_list_dead_letters))
    show = sub.add_parser("show", help="one dead letter with its attempt history")
    show.add_argument("id", type=_positive)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_guarded(_show_dead_letter))
    replay = sub.add_parser(
        "replay", help="send open dead letters back to delivery: by id, by filters, or --all"
    )
    replay.add_argument("ids", nargs="*", type=_positive, metavar="ID", help="dead letter ids")
    replay.add_argument("--all", action="store_true", help="every open dead letter")
    _add_filters(replay)
    replay.set_defaults(handler=_guarded(_replay))


def _add_destination_commands(commands: Subcommands[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("destinations", help="pause state of the destinations")
    sub = group.add_subparsers(required=True, metavar="action")
    ls = sub.add_parser("list", help="every configured destination")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=_guarded(_list_destinations))
    pause = sub.add_parser("pause", help="stop sending; pending work waits, nothing is dropped")
    pause.add_argument("name")
    reason = _checked(PauseBodySchema(), "reason")
    pause.add_argument("--reason", default="paused by an operator", type=reason)
    pause.set_defaults(handler=_guarded(_pause))
    resume = sub.add_parser("resume", help="send again; the sweeper picks pending work up")
    resume.add_argument("name")
    resume.set_defaults(handler=_guarded(_resume))


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", metavar="NAME")
    parser.add_argument(
        "--source", metavar="NAME", help="configured webhook source ([sources.<name>])"
    )
    email = _checked(ContactLookupSchema(), "email")
    parser.add_argument(
        "--email", metavar="ADDRESS", type=email, help="compared case-insensitively"
    )
    when = "ISO 8601 (UTC when no offset is given), on the dead letter's creation time"
    parser.add_argument("--since", metavar="ISO", type=_timestamp, help=f"inclusive; {when}")
    parser.add_argument("--until", metavar="ISO", type=_timestamp, help=f"exclusive; {when}")


# --- argument types and plumbing -----------------------------------------------------------------


def _timestamp(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {value!r} (e.g. 2026-07-01 or 2026-07-01T09:30:00Z)"
        ) from None
    aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    try:
        return aware.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00
        raise argparse.ArgumentTypeError(f"not a time in UTC's calendar: {value!r}") from None


def _checked(schema: Schema, key: str) -> Callable[[str], Any]:
    """An argument type with the same rule as the admin API and the operator page."""

    def check(value: str) -> Any:
        try:
            return schema.load({key: value})[key]
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {}
            raise argparse.ArgumentTypeError(" ".join(messages.get(key, ["invalid"]))) from None

    return check


def _positive(value: str) -> int:
    number = _positive_or_zero(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def _positive_or_zero(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}")
    return int(value)


def _guarded(handler: Handler) -> Handler:
    """A ledger that is down or not migrated is a one-line message, not a traceback."""

    @wraps(handler)
    def run(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return handler(settings, args)
        except SQLAlchemyError as exc:
            cause = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
            _err(f"the ledger cannot be used ({cause}); is it reachable and migrated?")
            return 1

    return run


@contextmanager
def _ledger(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _err(message: str) -> None:
    print(f"consent-relay: {message}", file=sys.stderr)


def _bad_range(args: argparse.Namespace) -> bool:
    if args.since and args.until and args.until <= args.since:
        _err("--until must be later than --since")
        return True
    return False


def _filters(args: argparse.Namespace, **extra: Any) -> DeadLetterFilters:
    keys = ("destination", "source", "email", "since", "until")
    return DeadLetterFilters(**{key: getattr(args, key) for key in keys}, **extra)


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


# --- dead letters -------------------------------------------------------------------------------


def _list_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    if _bad_range(args):
        return 2
    filters = _filters(args, status=args.status, limit=args.limit, offset=args.offset)
    with _ledger(settings) as session:
        views = dead_letters.list_dead_letters(session, filters)
    if args.json:
        for view in views:
            # ASCII: a control character stored before they were refused stays escaped.
            print(json.dumps(view.as_json()))
    elif not views:
        print(f"no dead letters (status {args.status}) match")
    else:
        print(_table(LIST_HEADERS, [_list_row(view) for view in views]))
    return 0


def _list_row(view: DeadLetterView) -> list[str]:
    last = "-" if view.last_status is None else str(view.last_status)
    return [
        str(view.id),
        _when(view.created_at),
        view.destination,
        view.reason,
        last,
        str(view.attempts),
        view.email,
        view.decision,
        view.status,
    ]


def _show_dead_letter(settings: Settings, args: argparse.Namespace) -> int:
    with _ledger(settings) as session:
        detail = dead_letters.get_dead_letter(session, args.id)
    if detail is None:
        _err(f"no dead letter {args.id}")
        return 1
    if args.json:
        print(json.dumps(detail.as_json(), ensure_ascii=False, indent=2))
        return 0
    for key, value in detail.dead_letter.as_json().items():
        print(f"{key + ':':<19} {'-' if value is None else value}")
    print(f"\nattempt history ({len(detail.history)}, oldest first):")
    rows = [
        [_when(a.started_at), a.outcome, str(a.http_status or "-"), a.event_id, a.detail or ""]
        for a in detail.history
    ]
    print(_table(("STARTED", "OUTCOME", "HTTP", "EVENT", "DETAIL"), rows) if rows else "  none")
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    if _bad_range(args):
        return 2
    filters = _filters(args)
    chosen = sum((bool(args.ids), filters.selects_something(), args.all))
    if chosen != 1:
        _err(
            "replay needs dead letter IDs, filters (--destination, --source, --email, --since, "
            "--until) or --all, and only one of them; nothing was replayed"
        )
        return 2
    with _ledger(settings) as session:
        result = dead_letters.replay(
            session, ids=args.ids, filters=filters, replay_all=args.all, now=utcnow()
        )
        outcome = f"replayed={len(result.replayed)} skipped={len(result.skipped)}"
        targets = [f"dead-letter {dead_id}" for dead_id in result.replayed]
        audit.record(
            session, cli_actor(), "replay", targets, f"{outcome} unknown={len(result.unknown)}"
        )
        session.commit()
    print(f"replayed {len(result.replayed)}: {' '.join(map(str, result.replayed)) or '-'}")
    for dead_id, reason in result.skipped.items():
        print(f"skipped {dead_id}: {reason}")
    for dead_id in result.unknown:
        _err(f"no dead letter {dead_id}")
    _enqueue(settings, result.pairs)  # after the commit: the rows are pending by now
    return 1 if result.unknown else 0


def _enqueue(settings: Settings, pairs: set[Pair]) -> None:
    if not pairs:
        return
    celery = create_celery_app(settings)

    def publish(destination: str, contact_id: int) -> bool:
        try:
            celery.send_task(DELIVER_TASK, args=[destination, contact_id], retry=False)
        except Exception:  # noqa: BLE001 - any broker error; the rows are committed as pending
            return False
        return True

    sent = dead_letters.enqueue(pairs, publish)
    if sent == len(pairs):
        print(f"enqueued {sent} deliver{'y' if sent == 1 else 'ies'}")
    else:
        print(
            f"note: enqueued {sent} of {len(pairs)} deliveries; the outbox sweeper "
            "(celery beat) delivers the rest, nothing is lost"
        )


# --- destinations -------------------------------------------------------------------------------


def _list_destinations(settings: Settings, args: argparse.Namespace) -> int:
    with _ledger(settings) as session:
        views = destinations.describe(session, settings.destinations)
    if args.json:
        for view in views:
            # ASCII: a control character stored before they were refused stays escaped.
            print(json.dumps(view.as_json()))
        return 0
    rows = [
        [
            view.name,
            "paused" if view.paused else "active",
            view.paused_by or "-",
            _when(view.paused_at),
            _when(view.next_probe_at),
            _when(view.resumed_at),
            printable(view.paused_reason or ""),
        ]
        for view in views
    ]
    print(_table(("NAME", "STATE", "BY", "SINCE", "NEXT PROBE", "RESUMED", "REASON"), rows))
    return 0


def _pause(settings: Settings, args: argparse.Namespace) -> int:
    if args.name not in settings.destinations:
        _err(f"no destination named {args.name!r} in the config")
        return 1
    with _ledger(settings) as session:
        destinations.pause(
            session,
            args.name,
            by="operator",
            reason=args.reason,
            status=None,
            now=utcnow(),
            probe_in=None,
        )
        audit.record(session, cli_actor(), "pause", [args.name], f"paused: {args.reason}")
        session.commit()
    print(f"paused {args.name}: nothing is sent to it until `destinations resume {args.name}`")
    return 0


def _resume(settings: Settings, args: argparse.Namespace) -> int:
    if args.name not in settings.destinations:
        _err(f"no destination named {args.name!r} in the config")
        return 1
    with _ledger(settings) as session:
        was_paused = destinations.resume(session, args.name, by="operator", now=utcnow())
        outcome = "resumed" if was_paused else "was not paused: nothing changed"
        audit.record(session, cli_actor(), "resume", [args.name], outcome)
        session.commit()
    if was_paused:
        print(f"resumed {args.name}: the sweeper delivers its pending work")
    else:
        print(f"{args.name} was not paused")
    return 0
