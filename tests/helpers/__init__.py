"""Helpers shared by the test folders (unit, integration, e2e, chaos, browser); never tests.

Each module is one test world or toolkit: `support` (processes, ports, signed requests, config
files), `peer_support` (the peer emulators in their own processes), `chaos_harness` (a whole
relay run to break), `delivery_world`, `source_world`, `input_world`, `observability_world`,
`ops_world`, `ledger_rows` and `email_strategies`. Fixtures stay in conftest.py files.
"""
