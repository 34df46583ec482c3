"""Which shared pace a destination uses: vendors count their limits per *account*, not per
configured entry (Engage per account, docs/reference/engage.md#rate-limits; Dotdigital "tracked per
account and per tier", docs/reference/dotdigital.md#rate-limits; MoEngage per workspace,
docs/reference/moengage.md#rate-limits). Two entries on one Dotdigital account paced separately
would together send twice its limit.

A destination's limiter key is its `rate_limit_key` when set (several API users of one
account, which nothing else can tell apart), else one derived from its base URL and
credentials: entries that log in to the same place as the same user share a pace without
saying so. The derived key is a salted, slow hash: it names the account in Redis keys and in
the ledger's `rate_limits` table without revealing the credentials, even weak ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

from relay.config.settings import DestinationSettings
from workers.ratelimit.pace import Pace

# Part of every derived key: a config change that alters nothing here keeps the pace state.
_SALT = b"consent-relay/rate-limit-key/v1"
_ITERATIONS = 100_000  # computed once per destination when a worker starts
# Credentials by kind-specific option name (schemas/destinations.py).
_SECRET_OPTIONS = ("api_key", "app_id")


def limiter_key(settings: DestinationSettings) -> str:
    """The shared-pace key of one destination: `acct:<rate_limit_key>` or `acct:<hash>`."""
    if settings.rate_limit_key:
        return f"acct:{settings.rate_limit_key}"
    return f"acct:{_derived(settings)}"


def _derived(settings: DestinationSettings) -> str:
    url = urlsplit(settings.base_url)
    # Scheme and host are case-insensitive; a trailing slash is the same endpoint.
    endpoint = f"{url.scheme.lower()}://{url.netloc.lower()}{url.path.rstrip('/')}"
    options = {name: str(settings.options.get(name, "")) for name in _SECRET_OPTIONS}
    material = [settings.kind, endpoint, settings.username, settings.password, options]
    encoded = json.dumps(material, sort_keys=True).encode()
    return hashlib.pbkdf2_hmac("sha256", encoded, _SALT, _ITERATIONS)[:12].hex()


def limiter_keys(destinations: Mapping[str, DestinationSettings]) -> dict[str, str]:
    """Destination name -> limiter key, for every configured destination."""
    return {name: limiter_key(settings) for name, settings in destinations.items()}


def shared_paces(paces: Mapping[str, Pace], keys: Mapping[str, str]) -> dict[str, Pace]:
    """Destinations sharing a key share one pace state, so they must share one pace: the
    slowest of theirs (the account's limit is the one the most cautious entry states)."""
    slowest: dict[str, Pace] = {}
    for name, pace in paces.items():
        key = keys.get(name, name)
        if key not in slowest or pace.interval > slowest[key].interval:
            slowest[key] = pace
    return {name: slowest[keys.get(name, name)] for name in paces}
