"""Operational notifications sent to webhook targets (docs/operations/notifications.md)."""
