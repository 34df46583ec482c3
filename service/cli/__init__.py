"""The consent-relay command line: run, db, check-config, admin and source commands."""
