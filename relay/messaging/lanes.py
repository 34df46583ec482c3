"""Where a delivery message goes: one lane per destination and urgency.

A single queue made every destination wait in one line: a backlog for a slow destination (or
one whose rate limit is far below the others') stood between a fast destination and its
work, and a withdrawal waited behind every grant queued before it. So each destination has
two queues of its own, `<queue>.<destination>.urgent` and `<queue>.<destination>.bulk`, and a
worker consumes all of them. Every broker we ship hands a consumer its queues in turn (kombu's
FairCycle for the embedded broker, the rotating BRPOP of its Redis transport, RabbitMQ's
round robin between a channel's consumers), so a non-empty lane gets its share of every
fetch whatever the length of the others: a withdrawal overtakes a backlog of grants, and no
lane starves. Sweeps, probes and dispatch messages stay on the base queue.

The work of a run whose pool process died is re-sent to one more queue, `<queue>.recover`
(workers/lost.py). It is empty nearly always, so the broker's turn-taking serves it within one
round: at the back of a busy urgent lane the lost contact would wait behind that lane's whole
backlog (measured: 7-10 s behind 20 withdrawals at 400 ms a call), although it is the most
overdue work there is.

Read-back verification (workers/verification/) has a queue of its own, `<queue>.verify`: a
read-back never stands in a delivery lane in front of a decision, and its calls take at most
a configured share of each destination's rate limit (workers/ratelimit/pace.py ShareThrottle).

Withdrawals and denials are urgent: withdrawing must be as easy as giving consent (GDPR
Art. 7(3), https://gdpr-info.eu/art-7-gdpr/), and while a withdrawn person still reads
"granted" at the destination, their opens and clicks are tracked.
"""

from __future__ import annotations

from collections.abc import Iterable

URGENT_STATES = frozenset({"withdrawn", "denied"})


def is_urgent(state: str | None) -> bool:
    return state in URGENT_STATES


def delivery_queue(base: str, destination: str, urgent: bool) -> str:
    return f"{base}.{destination}.{'urgent' if urgent else 'bulk'}"


def recovery_queue(base: str) -> str:
    return f"{base}.recover"


def verify_queue(base: str) -> str:
    return f"{base}.verify"


def delivery_lanes(base: str, destinations: Iterable[str]) -> list[str]:
    """Every destination's two queues, urgent first."""
    return [
        delivery_queue(base, name, urgent)
        for name in sorted(destinations)
        for urgent in (True, False)
    ]
