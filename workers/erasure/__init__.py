"""Workers: erasures passed on to destinations (relay/ledger/destination_erasures.py)."""
