"""`consent-relay erasures retry|acknowledge ERASURE_ID DESTINATION`: a failed erasure at a
destination, handled by an operator (relay/ledger/erasure_failures.py,
docs/data-protection.md#at-destinations). Exit codes: 0 done, 1 refused or a ledger error."""

from __future__ import annotations

import argparse

from relay.config.settings import Settings
from relay.errors import ProblemError
from relay.ledger import erasure_failures
from service.cli.admin import Subcommands, _err, _guarded, _ledger
from service.cli.ledger import _publish_erasures
from service.http.actors import cli_actor


def add_commands(commands: Subcommands[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("erasures", help="failed erasures at the destinations")
    sub = group.add_subparsers(required=True, metavar="action")
    retry = sub.add_parser("retry", help="put a failed one back to pending")
    acknowledge = sub.add_parser("acknowledge", help="take a failed one over (wipes the seal)")
    for parser in (retry, acknowledge):
        parser.add_argument("erasure_id", help="the erasure's id (a UUID)")
        parser.add_argument("destination", help="the destination's configured name")
    acknowledge.add_argument(
        "--note", required=True, help="what is done instead (no personal data: a ticket number)"
    )
    retry.set_defaults(handler=_guarded(_retry))
    acknowledge.set_defaults(handler=_guarded(_acknowledge))


def _retry(settings: Settings, args: argparse.Namespace) -> int:
    with _ledger(settings) as session:
        try:
            row_id = erasure_failures.retry(session, args.erasure_id, args.destination, cli_actor())
        except ProblemError as exc:
            _err(str(exc))
            return 1
    _publish_erasures(settings, ((row_id, args.destination),))  # after the commit
    print(f"erasure {args.erasure_id} at {args.destination}: pending again")
    return 0


def _acknowledge(settings: Settings, args: argparse.Namespace) -> int:
    with _ledger(settings) as session:
        try:
            erasure_failures.acknowledge(
                session, args.erasure_id, args.destination, cli_actor(), args.note
            )
        except ProblemError as exc:
            _err(str(exc))
            return 1
    print(f"erasure {args.erasure_id} at {args.destination}: acknowledged, identifier wiped")
    return 0
