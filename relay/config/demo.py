"""Demo mode: the config used only when no config file exists at the default path.

Every value here is public on purpose (the secret is printed with the ready-made test
command; the peers' credentials are the emulators' defaults); demo mode says so loudly.
"""

from __future__ import annotations

from typing import Any

# Demo mode: used only when no config file exists at the default path. The secret is public
# on purpose (it is printed with the ready-made test command); demo mode says so loudly.
DEMO_SOURCE_SECRET = "whsec_ZGVtby1vbmx5LXNlY3JldC1ub3QtZm9yLXByb2R1Y3Rpb24="  # noqa: S105 - public demo value
DEMO_ENGAGE_PORT = 8025
DEMO_ENGAGE_USERNAME = "api-user@example.com"
DEMO_ENGAGE_PASSWORD = "engage-demo-password"  # noqa: S105 - emulator only
# The operator page and /metrics in demo mode: public values too, printed by `run` (loopback only).
DEMO_ADMIN_PASSWORD = "demo-operator-password"  # noqa: S105 - public demo value
DEMO_METRICS_TOKEN = "demo-metrics-token-public-loopback-only"  # noqa: S105 - public demo value
# The peer emulators of demo mode (issue 7): one decision fans out to all four destinations.
# Their credentials are the emulators' defaults (emulators/acoustic.py, dotdigital.py,
# moengage.py).
DEMO_PEER_PORTS = {
    "acoustic-emulator": 8026,
    "dotdigital-emulator": 8027,
    "moengage-emulator": 8028,
}
DEMO_PEERS: dict[str, Any] = {
    "acoustic": {
        "kind": "acoustic-connect",
        "base_url": "http://127.0.0.1:8026",
        "api_key": "acoustic-demo-api-key",
        "data_set_id": "4fe4136f-c007-44a3-b38f-922200000000",
    },
    "dotdigital": {
        "kind": "dotdigital",
        "base_url": "http://127.0.0.1:8027",
        "username": "apiuser-demo@apiconnector.com",
        "password": "dotdigital-demo-password",
        # the emulator's; a real account: see docs/delivery/rate-limits.md
        "rate_limit_per_second": 5,
    },
    "moengage": {
        "kind": "moengage",
        "base_url": "http://127.0.0.1:8028",
        "app_id": "DEMOWORKSPACE01",
        "api_key": "moengage-demo-data-api-key",
        "mode": "channel_consent",  # shows the lossy mapping (docs/delivery/peers.md)
    },
}
DEMO_CONFIG: dict[str, Any] = {
    "admin": {"password": DEMO_ADMIN_PASSWORD},
    "metrics": {"token": DEMO_METRICS_TOKEN},
    "sources": {
        "demo": {
            "kind": "standard-webhooks",
            "secrets": [DEMO_SOURCE_SECRET],
            "source": "demo_form",
        }
    },
    "destinations": {
        "engage": {
            "kind": "mapp-engage",
            "base_url": f"http://127.0.0.1:{DEMO_ENGAGE_PORT}",
            "username": DEMO_ENGAGE_USERNAME,
            "password": DEMO_ENGAGE_PASSWORD,
        },
        **DEMO_PEERS,
    },
}
