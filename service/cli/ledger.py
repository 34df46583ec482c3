"""`consent-relay ledger verify`: check the tamper-evident chain of every contact, or of one
(docs/data-protection.md#chain). Exit codes: 0 intact, 1 a broken link or a ledger error, 2 usage.
"""

from __future__ import annotations

import argparse
import json

from relay.config.settings import Settings
from relay.ledger import chain_store, people
from schemas.admin import ContactLookupSchema
from service.cli.admin import Subcommands, _checked, _err, _guarded, _ledger, _positive


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
    return 0 if result.ok else 1
