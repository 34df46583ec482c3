"""Delivery: one contact or a batch, outcomes and retry policy, sweeper, fan-out."""
