"""What a read-back of one contact's consent found (workers/verification/readback.py).

A destination client that can read a contact's consent back offers `read(write)`: the value
it holds now next to the value the decision `write` has there. None means the decision has
no value to compare at this destination (say `unknown` in a channel mode that writes
nothing for it): nothing can be verified then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from relay.domain import ConsentWrite

# What a read-back shows when the destination does not hold the contact at all.
NO_CONTACT = "(no contact)"
# What a read-back shows when the contact exists but holds no consent value.
NO_VALUE = "(no value)"


@dataclass(frozen=True)
class Reading:
    seen: str  # the value held now, or NO_CONTACT / NO_VALUE
    expected: str  # the decision as this destination holds it

    @property
    def matches(self) -> bool:
        return self.seen == self.expected


class ConsentReader(Protocol):
    def read(self, write: ConsentWrite) -> Reading | None: ...


def shown(value: object) -> str:
    """A value read back, as recorded (bounded: the ledger column holds 64 characters)."""
    if value is None or value == "":
        return NO_VALUE
    return str(value)[:64]
