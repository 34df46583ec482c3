"""The consent ledger: contacts, events, their outbox rows and per-destination delivery state."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from relay.domain import EVIDENCE_FIELDS, Evidence, evidence_of
from relay.ledger.chain import GENESIS

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database (same on SQLite and PostgreSQL),
    so that ORDER BY on SQLite's text representation is chronological."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored in the ledger")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def evidence_columns(evidence: Evidence) -> dict[str, Any]:
    """An Evidence as the events table's columns (purposes as a JSON list, NULL when none)."""
    values = evidence.as_json()
    values["purposes"] = json.dumps(values["purposes"]) if values["purposes"] else None
    return values


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Contact(Base):
    """A person, identified by the e-mail address compared case-insensitively."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The head of the contact's chain (relay/ledger/chain.py): its last position and hash.
    chain_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    chain_head: Mapped[str] = mapped_column(String(64), default=GENESIS, server_default=GENESIS)
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set on erasure when [privacy] pseudonym_key is configured: HMAC of the address, so that
    # only the key's holder can tell a later contact is the same person (relay/ledger/erasure.py).
    pseudonym: Mapped[str | None] = mapped_column(String(64), index=True)


class Event(Base):
    """One accepted consent decision, as received. Never updated after insert."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source_name", "delivery_id", name="uq_events_source_delivery"),
        Index("ix_events_contact_order", "contact_id", "occurred_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # arrival order
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    source_name: Mapped[str] = mapped_column(String(64))  # the configured [sources.<name>]
    delivery_id: Mapped[str] = mapped_column(String(255))  # webhook-id
    body_sha256: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    email: Mapped[str] = mapped_column(String(320))  # as sent: Engage receives it unchanged
    decision: Mapped[str] = mapped_column(String(16))
    consent_source: Mapped[str] = mapped_column(String(255))
    consent_source_id: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    occurred_at_given: Mapped[bool] = mapped_column(default=False)
    webhook_timestamp: Mapped[int] = mapped_column(BigInteger)  # attempt time, evidence only
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Evidence of how consent was given (relay.domain.Evidence); NULL when not given.
    notice_version: Mapped[str | None] = mapped_column(String(255))
    notice_url: Mapped[str | None] = mapped_column(String(2000))
    purposes: Mapped[str | None] = mapped_column(Text)  # a JSON list of labels
    collection_method: Mapped[str | None] = mapped_column(String(16))
    lawful_basis: Mapped[str | None] = mapped_column(String(32))
    jurisdiction: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(35))
    # The event's link in its contact's chain; the salt is deleted when the contact is erased.
    chain_seq: Mapped[int | None] = mapped_column(Integer)
    chain_hash: Mapped[str | None] = mapped_column(String(64))
    subject_digest: Mapped[str | None] = mapped_column(String(64))
    subject_salt: Mapped[str | None] = mapped_column(String(32))

    @property
    def evidence(self) -> Evidence:
        values = {name: getattr(self, name) for name in EVIDENCE_FIELDS if name != "purposes"}
        return evidence_of({**values, "purposes": json.loads(self.purposes or "[]")})


class Erasure(Base):
    """One person erased (GDPR Art. 17): who asked, when, why; a link of the contact's chain."""

    __tablename__ = "erasures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    erased_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    requested_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    decisions: Mapped[int] = mapped_column(Integer)  # decisions whose address was removed
    pseudonymised: Mapped[bool] = mapped_column(default=False)
    settled_deliveries: Mapped[int] = mapped_column(Integer, default=0)
    chain_seq: Mapped[int] = mapped_column(Integer)
    chain_hash: Mapped[str] = mapped_column(String(64))


class DestinationErasure(Base):
    """One erasure passed on to one destination (relay/ledger/destination_erasures.py): the
    address sealed until the vendor's delete call is settled, then wiped."""

    __tablename__ = "destination_erasures"
    __table_args__ = (UniqueConstraint("erasure_id", "destination"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    erasure_id: Mapped[int] = mapped_column(ForeignKey("erasures.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending|done|failed|acknowledged
    sealed_address: Mapped[str | None] = mapped_column(Text)  # Fernet token; None once settled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(500))  # why failed, or how it ended
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ChainVerification(Base):
    """The outcome of one `ledger verify` run (the metrics read the newest)."""

    __tablename__ = "chain_verifications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    scope: Mapped[str] = mapped_column(String(32))  # all | contact <id>
    contacts: Mapped[int] = mapped_column(Integer)
    links: Mapped[int] = mapped_column(Integer)
    broken: Mapped[int] = mapped_column(Integer)  # contacts with a broken chain
    first_break: Mapped[str | None] = mapped_column(Text)


class IgnoredEvent(Base):
    """An authenticated event that carried no usable decision, and why (an event type we do
    not handle, no address, an unmapped answer). Answered 2xx so that the sender neither
    retries forever nor disables the hook (docs/reference/senders.md#answers-have-side-effects);
    kept as evidence."""

    __tablename__ = "ignored_events"
    __table_args__ = (
        UniqueConstraint("source_name", "delivery_id", name="uq_ignored_events_source_delivery"),
        Index("ix_ignored_events_received", "received_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_name: Mapped[str] = mapped_column(String(64))
    delivery_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(500))
    body_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # With [retention] keep_ignored_bodies_days: the request as received, Fernet-encrypted
    # (relay/ledger/kept_bodies.py), until it expires; then NULL (the digest stays).
    kept_body: Mapped[str | None] = mapped_column(Text)
    kept_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)


class Outbox(Base):
    """Work owed to one destination for one event; written in the event's transaction."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_id", "destination", name="uq_outbox_event_destination"),
        Index("ix_outbox_pending", "status", "destination", "contact_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    destination: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    # pending | delivered | unverified | superseded | dead_lettered (workers/delivery/outcomes.py)
    # | erased (settled by the contact's erasure, never sent: relay/ledger/erasure.py)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    settled_by_event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class DeliveryState(Base):
    """What one destination holds for one contact, plus the lease that serialises writers."""

    __tablename__ = "delivery_state"
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), primary_key=True)
    delivered_event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failures of the current decision
    rejections: Mapped[int] = mapped_column(Integer, default=0)  # of which non-transient 400s
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_attempt_event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    """One call (or call sequence) to a destination: the audit trail of what was sent."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_attempts_contact", "destination", "contact_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)


class DeadLetter(Base):
    """A decision that could not be delivered to one destination, with the evidence why.

    `status`: open (waiting for an operator), replayed (sent back to the outbox), superseded
    (a newer decision for the contact reached the destination since)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_status", "status", "destination", "created_at"),
        Index("ix_dead_letters_contact", "destination", "contact_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))  # the decision not delivered
    reason: Mapped[str] = mapped_column(String(32))  # rejected | max_age
    detail: Mapped[str] = mapped_column(Text)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_body: Mapped[str | None] = mapped_column(Text)  # excerpt of the last response
    attempts: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="open")
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)


class DestinationStatus(Base):
    """Whether a destination is paused (auth failure or operator), and when to probe it."""

    __tablename__ = "destination_status"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paused_by: Mapped[str | None] = mapped_column(String(16))  # auth | operator
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_status: Mapped[int | None] = mapped_column(Integer)
    next_probe_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_probe_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_probe_error: Mapped[str | None] = mapped_column(Text)
    resumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resumed_by: Mapped[str | None] = mapped_column(String(16))  # probe | operator


class RateLimitSlot(Base):
    """The shared pacing state of one destination when the broker is not Redis.

    `next_slot` is the earliest time (epoch seconds) the next request may start; a penalty
    halves the rate until `penalty_until` after the destination said it was over its limit."""

    __tablename__ = "rate_limits"
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_slot: Mapped[float] = mapped_column(Float, default=0.0)
    penalty_until: Mapped[float] = mapped_column(Float, default=0.0)


class SignInFailures(Base):
    """Failed /ops sign-ins in the current window of one client address or one account
    (service/ops/throttle.py): shared by every web process through the ledger."""

    __tablename__ = "ops_sign_in_failures"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # client:<ip> | account:<n>
    window_started: Mapped[float] = mapped_column(Float, index=True)  # epoch seconds
    failures: Mapped[int] = mapped_column(Integer, default=0)


class OpsSessionEpoch(Base):
    """The operator's session generation: a session is valid only while the epoch it was
    signed in under is the account's current one; signing out moves it on."""

    __tablename__ = "ops_session_epochs"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)


class Verification(Base):
    """The last read-back of one contact's consent at one destination (workers/verification/):
    when it was read, which decision it was compared with, what was seen and what that meant.

    `status`: verified (the destination holds the decision), drift (it holds something else),
    error (the read failed), unverifiable (the decision has no value there to read)."""

    __tablename__ = "verifications"
    __table_args__ = (Index("ix_verifications_due", "destination", "checked_at"),)
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), primary_key=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))  # compared with
    status: Mapped[str | None] = mapped_column(String(16))
    seen: Mapped[str | None] = mapped_column(String(64))  # the consent value read back
    checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last read, any result
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last read that matched
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # read enqueued
    drifts: Mapped[int] = mapped_column(Integer, default=0)
    last_drift_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_drift_seen: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(Base):
    """One operator action (pause, resume, replay, export, erasure, reprocess): who, when, from
    where, what and with what outcome. Never updated; a link of the audit chain
    (relay/ledger/audit.py), so that a changed or removed entry is caught by `ledger verify`."""

    __tablename__ = "audit_entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))  # admin-token | operator | cli
    actor: Mapped[str] = mapped_column(String(255))
    client: Mapped[str | None] = mapped_column(String(64))  # the client address; none for cli
    channel: Mapped[str] = mapped_column(String(16))  # admin-api | ops-page | cli
    action: Mapped[str] = mapped_column(String(32))
    targets: Mapped[str] = mapped_column(Text)  # a JSON list of ids or names
    outcome: Mapped[str] = mapped_column(String(500))
    chain_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The audit chain's head (one row), so that removing the newest entry is detected too."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    head: Mapped[str] = mapped_column(String(64), default=GENESIS, server_default=GENESIS)


class RetentionRun(Base):
    """One pruning run of `[retention]` (relay/ledger/retention.py): when, and how many rows of
    each prunable table it removed (the operator page shows the newest)."""

    __tablename__ = "retention_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    pruned: Mapped[str] = mapped_column(Text)  # a JSON object: table -> rows removed


class Notification(Base):
    """An operational event to announce (relay/ledger/notifications.py): a destination paused
    or resumed, a dead letter, a drift. Recorded in the transaction that made it happen; the
    sweeper fans it out to the configured targets (`fanned_out_at`). `data` is JSON of ids and
    labels only, never an address."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_fanned_out_at", "fanned_out_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))  # schemas/notifications.py: EVENTS
    destination: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    fanned_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class NotificationSend(Base):
    """One notification to one target: the outbox of workers/notifications/send.py.

    `status`: pending (to send; `next_attempt_at` after a failure), sent, failed (refused, or
    still failing after `[notifications] max_attempts`)."""

    __tablename__ = "notification_sends"
    __table_args__ = (Index("ix_notification_sends_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"))
    target: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))  # webhook-id: the same on every retry
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
