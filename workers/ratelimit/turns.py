"""When a write the shared pace refused should come back: its turn.

A write whose slot is more than ENTRY_WAIT_SECONDS away is refused and reserves nothing
(workers/ratelimit/pace.py). It used to wait for the sweeper, which brings due contacts back
once every `sweep_interval_seconds`. Behind a long queue that cost nothing (other tasks kept
every slot busy), but when the refused writes were all the work there was (the end of a
backlog, a burst the sweeper had just sent), each sweep filled only about ENTRY_WAIT_SECONDS
of slots and the pace sat idle until the next sweep: the last 5% of a rate-limited drain ran at
about two thirds of the pace (docs/benchmark.md).

Now a refused write takes a turn: a place in a second GCRA queue of its pace key,
`<key>:turns`, one write's interval apart, counted from its refused slot. Its task comes back
by itself at its turn (a message with a countdown), so refused writes return one at a time at
the pace instead of all together at the next sweep. A turn is not a slot: nothing of the real
pace is reserved, so the limit is never at risk and a newer write is never queued behind the
turns. Withdrawals and denials take their turns in a queue of their own (`<key>:urgent`), never
behind the grants'. Turns reach at most MAX_TURN_AHEAD_SECONDS ahead, and never beyond half of
`delivery.redispatch_after_seconds` (the sweeper would send the contact a second time while its
own message is still on the way); a write refused beyond that waits for the sweeper as before,
so a large backlog does not become thousands of countdown messages held in the workers' memory.
"""

from __future__ import annotations

from workers.ratelimit.pace import Pace, RateLimiter, ThrottledError

# A countdown message is held in a worker's memory until it is due: keep them few and near.
MAX_TURN_AHEAD_SECONDS = 20.0
TURNS_KEY_SUFFIX = ":turns"
URGENT_TURNS_KEY_SUFFIX = ":urgent"


def turn_reach(redispatch_after_seconds: float) -> float:
    """How far ahead a turn may be: the sweeper leaves a requeued contact alone for
    `redispatch_after_seconds`; half of it leaves the message time to run first."""
    return min(MAX_TURN_AHEAD_SECONDS, redispatch_after_seconds / 2)


def take_turn(
    limiter: RateLimiter,
    destination: str,
    calls: int,
    refused: ThrottledError,
    urgent: bool,
    reach: float = MAX_TURN_AHEAD_SECONDS,
) -> float | None:
    """Seconds until the refused write (of `calls` calls) tries again, or None: no turn
    within `reach` seconds, or the limiter unreachable (the sweeper brings it back)."""
    pace = limiter.paces.get(destination)
    if pace is None:
        return None
    room = reach - refused.retry_in  # the countdown is the refused slot's wait plus the turn's
    if room < 0:
        return None
    suffix = URGENT_TURNS_KEY_SUFFIX if urgent else TURNS_KEY_SUFFIX
    key = limiter.key_for(destination) + suffix
    turns = Pace(pace.interval * max(calls, 1), max_wait=room)
    try:
        turn = limiter.backend.reserve(key, turns)
    except ThrottledError:  # the turns reach too far ahead, or Redis is down
        return None
    return refused.retry_in + turn.wait
