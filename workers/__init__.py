"""Celery app, tasks and destination clients."""
