"""Read-back verification and drift repair (docs/delivery/verification.md)."""
