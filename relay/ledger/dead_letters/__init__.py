"""Dead letters for operators: list, inspect and replay them (shared by the admin API and CLI).

The delivery worker writes a dead letter when a contact's latest decision could not be
delivered (refused, or failing for longer than the max age) and marks the pair's pending
outbox rows `dead_lettered`. Replay only makes those rows pending again and clears the retry
state: delivery is state-based, so the worker then writes the contact's *latest* decision,
which can never be older than what the destination holds.
"""

from relay.ledger.dead_letters.listing import (
    HISTORY_LIMIT,
    AttemptView,
    DeadLetterDetail,
    DeadLetterFilters,
    DeadLetterView,
    get_dead_letter,
    list_dead_letters,
)
from relay.ledger.dead_letters.replaying import (
    CHUNK_SIZE,
    ENQUEUE_LIMIT,
    SKIP_REASONS,
    Pair,
    ReplayRefused,
    ReplayResult,
    enqueue,
    replay,
)

__all__ = [
    "CHUNK_SIZE",
    "ENQUEUE_LIMIT",
    "HISTORY_LIMIT",
    "SKIP_REASONS",
    "AttemptView",
    "DeadLetterDetail",
    "DeadLetterFilters",
    "DeadLetterView",
    "Pair",
    "ReplayRefused",
    "ReplayResult",
    "enqueue",
    "get_dead_letter",
    "list_dead_letters",
    "replay",
]
