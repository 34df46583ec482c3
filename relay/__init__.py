"""The shared core of Consent Relay: config, domain types, ledger, telemetry and messaging.

The web service (service/) and the Celery workers (workers/) both depend on it and never on
each other (import-linter contracts in pyproject.toml); it depends only on schemas/.
"""
