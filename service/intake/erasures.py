"""A source's deletion event raises an erasure (docs/sources/hubspot.md#privacy-deletion).

HubSpot's `contact.privacyDeletion` names the object (`objectId`), never an address, and the
relay does not look contacts up. The ledger knows the object only through `source_id`: the
decisions this source recorded carry the id its `source_id` template rendered. So the object's
contacts are those with a decision from THIS source whose `source_id` the template would render
for that object, its other variables matching anything. That needs `{object_id}` in the
template, set apart from other variables by literal text (the default `{object_id}:{change_id}`
is); otherwise the event is ignored with that reason.

The event itself is kept in `ignored_events` with what became of it: a redelivery (same
`eventId`) is recognised there and answered as a duplicate, and the erasure is recorded once.
The erasure is audited with actor `source:<name>` (relay/ledger/audit.py).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.errors import ProblemError
from relay.ledger import audit, destination_erasures, erasure
from relay.ledger.models import Contact, Event, IgnoredEvent
from relay.ledger.record import Incoming, Outcome, record_ignored
from relay.telemetry import metrics
from relay.telemetry.logs import get_logger
from service.runtime import Runtime
from service.sources.base import SourceEvent

log = get_logger(__name__)
ERASED = "erased"  # the outcome status: answered 202 like an accepted decision
NO_OBJECT_IN_TEMPLATE = (
    "Erasure requested for {kind} object {object_id}, but this source's source_id template "
    "{template!r} does not contain {{object_id}}: its decisions cannot be matched to the object."
)
AMBIGUOUS_TEMPLATE = (
    "Erasure requested for {kind} object {object_id}, but in this source's source_id template "
    "{template!r} {{object_id}} touches another variable: its decisions cannot be matched."
)
UNKNOWN_OBJECT = (
    "Erasure requested for {kind} object {object_id}: no decision of this source has a "
    "source_id rendered for that object; nothing was erased."
)


class ErasureDeferredError(ProblemError):
    """A delivery for the person is being written: nothing was erased, the sender retries."""

    http_status = 503
    slug = "erasure-deferred"
    title = "The erasure waits for a delivery in flight"
    reason = "erasure_deferred"


def handle(
    runtime: Runtime, source_name: str, events: Sequence[SourceEvent], body_sha256: str
) -> dict[int, Outcome]:
    """The outcome of each erasure event, by its index in `events`."""
    outcomes: dict[int, Outcome] = {}
    for index, event in enumerate(events):
        if event.erase_object is not None:
            with runtime.sessions() as session:
                outcomes[index] = _one(runtime, session, source_name, event, body_sha256)
    return outcomes


def _one(
    runtime: Runtime, session: Session, source_name: str, event: SourceEvent, body_sha256: str
) -> Outcome:
    seen = session.scalar(
        select(IgnoredEvent.reason).where(
            IgnoredEvent.source_name == source_name, IgnoredEvent.delivery_id == event.event_id
        )
    )
    if seen is not None:
        metrics.count_intake(source_name, "duplicate")
        return Outcome(event.event_id, "duplicate", reason=seen)
    source = runtime.settings.sources[source_name]
    kind = runtime.kinds[source_name]
    template = source.effective_mapping.source_id or kind.DEFAULT_SOURCE_ID or ""
    names = {"kind": source.kind, "object_id": event.erase_object, "template": template}
    pattern = object_pattern(template, str(event.erase_object))
    if isinstance(pattern, str):
        return _ignored(session, source_name, event, body_sha256, pattern.format(**names))
    contacts = matching_contacts(session, source_name, pattern)
    if not contacts:
        return _ignored(session, source_name, event, body_sha256, UNKNOWN_OBJECT.format(**names))
    done = [_erase(runtime, session, source_name, event, cid) for cid in contacts]
    erased = [found for found in done if found is not None]
    what = f"Erasure requested for {source.kind} object {event.erase_object}: " + (
        "; ".join(erased) if erased else "every matching contact was erased already"
    )
    status = ERASED if erased else "ignored"
    record_ignored(session, source_name, body_sha256, _incoming(event), what[:500])
    session.commit()
    metrics.count_intake(source_name, "accepted" if erased else "ignored")
    log.info("source erasure", event_type=event.event_type, outcome=what)
    return Outcome(event.event_id, status, reason=what)


def object_pattern(template: str, object_id: str) -> re.Pattern[str] | str:
    """The source_ids the template renders for this object, or the reason there are none."""
    parts = list(string.Formatter().parse(template))
    fields = [name for _, name, _, _ in parts if name is not None]
    if "object_id" not in fields:
        return NO_OBJECT_IN_TEMPLATE
    regex, adjacent = "", None  # the variable right before, with no literal text between
    for literal, name, _, _ in parts:
        if literal:
            regex, adjacent = regex + re.escape(literal), None
        if name is None:
            continue
        if adjacent is not None and "object_id" in (adjacent, name):
            return AMBIGUOUS_TEMPLATE
        regex += re.escape(object_id) if name == "object_id" else ".*"
        adjacent = name
    return re.compile(f"^{regex}$", re.S)


def matching_contacts(session: Session, source_name: str, pattern: re.Pattern[str]) -> list[int]:
    """The contacts with a decision of this source whose source_id fits the pattern.

    Filtered in Python: SQLite and PostgreSQL differ on regular expressions, and one source's
    decisions with a source_id are read in one pass of (source_id, contact) pairs."""
    rows = session.execute(
        select(Event.consent_source_id, Event.contact_id)
        .where(Event.source_name == source_name, Event.consent_source_id.is_not(None))
        .distinct()
    )
    return sorted({cid for source_id, cid in rows if pattern.match(source_id or "")})


def _erase(
    runtime: Runtime, session: Session, source_name: str, event: SourceEvent, contact_id: int
) -> str | None:
    """`contact N erased (erasure X)`, or None when it was erased already."""
    if session.scalar(select(Contact.erased_at).where(Contact.id == contact_id)) is not None:
        return None
    actor = audit.Actor("source", f"source:{source_name}", "webhook")
    reason = f"{event.event_type} event {event.event_id} for object {event.erase_object}"
    request = erasure.ErasureRequest(contact_id, f"source:{source_name}", reason[:500])
    try:
        result = erasure.erase_contact(
            session,
            request,
            pseudonym_key=runtime.settings.privacy.pseudonym_key,
            lease_seconds=runtime.settings.delivery.lease_seconds,
            actor=actor,
            forward=destination_erasures.forwarding(runtime.settings),
        )
    except erasure.AlreadyErasedError:
        return None
    except erasure.ErasureBusyError as exc:
        raise ErasureDeferredError(str(exc), headers={"Retry-After": "30"}) from None
    if result is not None and result.forwarded and has_app_context():  # committed: enqueue
        current_app.extensions["publisher"].publish_erasures(result.forwarded)
    return None if result is None else f"contact {contact_id} erased ({result.erasure_id})"


def _ignored(
    session: Session, source_name: str, event: SourceEvent, body_sha256: str, reason: str
) -> Outcome:
    record_ignored(session, source_name, body_sha256, _incoming(event), reason[:500])
    session.commit()
    metrics.count_intake(source_name, "ignored")
    log.info("ignored", event_type=event.event_type, reason=reason)
    return Outcome(event.event_id, "ignored", reason=reason)


def _incoming(event: SourceEvent) -> Incoming:
    return Incoming(event.event_id, event.event_type)
