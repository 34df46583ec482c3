"""Who performs an audited action (relay/ledger/audit.py): the admin token's fingerprint, the
signed-in operator, or the OS user of the CLI; the client address as the app sees it (behind
`[service] trusted_proxies` it is the forwarded one, service/__init__.py's ProxyFix)."""

from __future__ import annotations

import getpass

from flask import request

from relay.ledger.audit import Actor, token_fingerprint


def admin_actor() -> Actor:
    """Call only behind the admin API's bearer check: the token is one of the configured."""
    _, _, given = request.headers.get("Authorization", "").partition(" ")
    return Actor("admin-token", token_fingerprint(given.strip()), "admin-api", request.remote_addr)


def operator_actor(name: str | None) -> Actor:
    return Actor("operator", name or "unknown", "ops-page", request.remote_addr)


def cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return Actor("cli", user, "cli")
