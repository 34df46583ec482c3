"""`make bench`: intake and delivery measured side by side against baselines (see README)."""
