"""`consent-relay ledger verify`: check the tamper-evident chain of every contact, or of one
(docs/data-protection.md#chain). Exit codes: 0 intact, 1 a broken link or a ledger error, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from relay.config.settings import Settings
from relay.errors import ProblemError
from relay.ledger import audit, chain_store, destination_erasures, erasure, export, people
from relay.messaging.client import create_celery_client
from relay.messaging.names import ERASE_AT_DESTINATION_TASK
from schemas.admin import ContactLookupSchema, ErasureBodySchema
from service.cli.admin import Subcommands, _checked, _err, _guarded, _ledger, _positive
from service.http.actors import cli_actor

AUDIT_EXPORT_LIMIT = 10_000_000  # everything, in practice: an audit log grows by hand


def add_commands(commands: Subcommands[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("ledger", help="the ledger's tamper-evident chain")
    sub = group.add_subparsers(required=True, metavar="action")
    verify = sub.add_parser("verify", help="verify every contact's chain, or one contact's")
    who = verify.add_mutually_exclusive_group()
    who.add_argument("--contact-id", type=_positive, metavar="ID")
    email = _checked(ContactLookupSchema(), "email")
    who.add_argument("--email", type=email, metavar="ADDRESS", help="as the intake compares it")
    verify.add_argument("--json", action="store_true", help="the admin API's answer")
    verify.set_defaults(handler=_guarded(_verify))
    offline = sub.add_parser(
        "verify-export", help="verify an exported record (JSON) without the database"
    )
    offline.add_argument("file", type=Path)
    offline.set_defaults(handler=_verify_export)
    people_group = commands.add_parser("contacts", help="one person's record")
    actions = people_group.add_subparsers(required=True, metavar="action")
    out = actions.add_parser("export", help="every decision, delivery and erasure of a person")
    target = out.add_mutually_exclusive_group(required=True)
    target.add_argument("--contact-id", type=_positive, metavar="ID")
    target.add_argument("--email", type=email, metavar="ADDRESS", help="as the intake compares it")
    out.add_argument("--format", choices=("json", "csv"), default="json")
    out.add_argument("--output", type=Path, help="a file (default: standard output)")
    out.set_defaults(handler=_guarded(_export))
    _add_erase(actions, email)
    log = commands.add_parser("audit", help="the operator audit log")
    log_actions = log.add_subparsers(required=True, metavar="action")
    dump = log_actions.add_parser("export", help="every entry, oldest first (JSON or CSV)")
    dump.add_argument("--format", choices=("json", "csv"), default="json")
    dump.add_argument("--output", type=Path, help="a file (default: standard output)")
    dump.set_defaults(handler=_guarded(_audit_export))


def _add_erase(actions: Subcommands[argparse.ArgumentParser], email: Any) -> None:
    erase = actions.add_parser(
        "erase", help="erase a person's address from the ledger, keeping the proof"
    )
    target = erase.add_mutually_exclusive_group(required=True)
    target.add_argument("--contact-id", type=_positive, metavar="ID")
    target.add_argument("--email", type=email, metavar="ADDRESS", help="as the intake compares it")
    body = ErasureBodySchema(partial=True)
    erase.add_argument(
        "--by", required=True, type=_checked(body, "requested_by"), help="who asked (kept)"
    )
    erase.add_argument("--reason", required=True, type=_checked(body, "reason"), help="why (kept)")
    erase.add_argument("--yes", action="store_true", help="confirm: an erasure cannot be undone")
    erase.add_argument("--json", action="store_true", help="the admin API's answer")
    erase.set_defaults(handler=_guarded(_erase))


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    with _ledger(settings) as session:
        contact_id = None
        if args.contact_id is not None or args.email is not None:
            contact_id = people.chosen_contact(session, args.contact_id, args.email)
            if contact_id is None:
                _err("no such contact in the ledger")
                return 1
        result = chain_store.verify(session, contact_id)
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(f"verified {result.contacts} contact(s), {result.links} link(s): ", end="")
        print("intact" if result.ok else f"{len(result.breaks)} broken")
        for contact_id, found in sorted(result.breaks.items()):
            where = f"link {found.seq}" if found.seq is not None else "unplaced"
            print(f"contact {contact_id}: first broken {where} ({found.ref}): {found.reason}")
        if contact_id is None:
            print(_audit_line(result))
    return 0 if result.ok else 1


def _export(settings: Settings, args: argparse.Namespace) -> int:
    with _ledger(settings) as session:
        contact_id = people.chosen_contact(session, args.contact_id, args.email)
        record = export.export_record(session, contact_id) if contact_id else None
        if record is not None:
            target = [f"contact {contact_id}"]
            audit.record(session, cli_actor(), "export", target, f"as {args.format}")
            session.commit()
    if record is None:
        _err("no such contact in the ledger")
        return 1
    text = export.as_csv(record) if args.format == "csv" else json.dumps(record, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    if not args.yes:
        _err("an erasure cannot be undone: add --yes to confirm")
        return 2
    with _ledger(settings) as session:
        contact_id = people.chosen_contact(session, args.contact_id, args.email)
        try:
            result = None
            if contact_id is not None:
                request = erasure.ErasureRequest(contact_id, args.by, args.reason)
                result = erasure.erase_contact(
                    session,
                    request,
                    pseudonym_key=settings.privacy.pseudonym_key,
                    lease_seconds=settings.delivery.lease_seconds,
                    actor=cli_actor(),
                    forward=destination_erasures.forwarding(settings),
                )
        except ProblemError as exc:
            _err(str(exc))
            return 1
    if result is None:
        _err("no such contact in the ledger")
        return 1
    _publish_erasures(settings, result.forwarded)  # after the commit
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(
            f"erased contact {result.contact_id}: {result.decisions} decision(s) kept without "
            f"the address, {result.settled_deliveries} pending delivery(ies) settled, "
            f"erasure {result.erasure_id} is link {result.chain_seq}"
        )
    return 0


def _publish_erasures(settings: Settings, forwarded: tuple[tuple[int, str], ...]) -> None:
    """Enqueue the destinations' delete calls (ids only); on a broker error the sweeper does."""
    if not forwarded:
        return
    celery = create_celery_client(settings)
    try:
        for row_id, _ in forwarded:
            celery.send_task(ERASE_AT_DESTINATION_TASK, args=[row_id], retry=False)
    except Exception:  # noqa: BLE001 - any broker error; the rows are committed as pending
        _err("note: the destinations' delete calls are left to the sweeper (broker unreachable)")


def _verify_export(_settings: Settings, args: argparse.Namespace) -> int:
    """Needs only the file: the same check as `ledger verify`, from the exported values."""
    try:
        record = json.loads(args.file.read_text(encoding="utf-8"))
        found = export.verify_export(record)
    except OSError as exc:
        _err(f"cannot read {args.file}: {exc.strerror}")
        return 1
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        _err(f"{args.file} is not a consent-relay export: {type(exc).__name__}")
        return 1
    if found is not None:
        where = f"link {found.seq}" if found.seq is not None else "unplaced"
        print(f"broken: first broken {where} ({found.ref}): {found.reason}")
        return 1
    links = len(record["decisions"]) + len(record["erasures"])
    print(f"intact: {links} link(s) up to head {record['chain']['head_hash']}")
    return 0


def _audit_line(result: chain_store.Verification) -> str:
    found = result.audit_break
    if found is None:
        return f"audit log: {result.audit_entries} entry(ies), intact"
    return f"audit log: first broken entry {found.seq} ({found.ref}): {found.reason}"


def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    """The whole log, oldest first (what `ledger verify` checks, in its order)."""
    with _ledger(settings) as session:
        entries = list(reversed(audit.recent(session, limit=AUDIT_EXPORT_LIMIT)))
        if args.format == "csv":
            text = audit.as_csv(entries)
        else:
            text = json.dumps([audit.as_json(entry) for entry in entries], indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0
