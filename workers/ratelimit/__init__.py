"""Rate limiting: one shared pace per destination (pace.py), kept in Redis or the ledger."""
