"""The operator page: sign-in, dead letters, destinations (templates/ and static/ here)."""
