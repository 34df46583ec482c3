"""The configuration as the code reads it: frozen dataclasses, built by
relay/config/loader.py from its layers (defaults, the TOML file, the environment).

Defaults are written once, in the schemas (schemas/config.py, schemas/destinations.py: the
config file's format); the dataclasses take theirs from there, for code that builds them
directly (tests, tools). Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.config.mapping import MappingSettings
from relay.config.notifications import NotificationSettings
from schemas.config import (
    AdminSchema,
    DeliverySchema,
    FlowerSchema,
    MetricsSchema,
    PrivacySchema,
    RetentionSchema,
    TracingSchema,
    VerificationSchema,
)
from schemas.destinations import ENGAGE, kind_defaults

# The defaults of a destination built directly: Engage's (the loader passes every key).
_DESTINATION = kind_defaults(ENGAGE)


@dataclass(frozen=True)
class SourceSettings:
    name: str
    kind: str
    source: str
    timestamp_tolerance_seconds: int
    secrets: tuple[str, ...] = field(repr=False)
    mapping: MappingSettings | None = None  # None: the source's literal label, no mapping
    # Kind-specific keys (username, url, signature_versions, organization_ids).
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effective_mapping(self) -> MappingSettings:
        return self.mapping or MappingSettings(source=self.source)


@dataclass(frozen=True)
class DestinationSettings:
    name: str
    kind: str
    base_url: str
    username: str = ""  # Engage and Dotdigital (HTTP Basic); empty for the other kinds
    password: str = field(default="", repr=False)
    connect_timeout_seconds: float = _DESTINATION["connect_timeout_seconds"]
    read_timeout_seconds: float = _DESTINATION["read_timeout_seconds"]
    rate_limit_per_second: float = _DESTINATION["rate_limit_per_second"]
    rate_limit_headroom: float = _DESTINATION["rate_limit_headroom"]
    # None: derived (workers/ratelimit/keys.py)
    rate_limit_key: str | None = _DESTINATION["rate_limit_key"]
    verify_share: float = _DESTINATION["verify_share"]  # of the rate limit, for read-backs
    verify_policy: str = _DESTINATION["verify_policy"]  # on drift: repair | report
    # pass erasures on through the vendor's delete call (relay/ledger/destination_erasures.py)
    erase_at_destination: bool = _DESTINATION["erase_at_destination"]
    # Kind-specific keys (schemas/destinations.py): mode, field names, api_key, batch_size...
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)


# The defaults are written once, in the schemas (the config file's format); the dataclasses
# take theirs from an empty section loaded through them (no environment is read).
_DELIVERY: dict[str, Any] = DeliverySchema().load({})
_ADMIN: dict[str, Any] = AdminSchema().load({})
_METRICS: dict[str, Any] = MetricsSchema().load({})
_FLOWER: dict[str, Any] = FlowerSchema().load({})
_VERIFICATION: dict[str, Any] = VerificationSchema().load({})
_TRACING: dict[str, Any] = TracingSchema().load({})
_PRIVACY: dict[str, Any] = PrivacySchema().load({})
_RETENTION: dict[str, Any] = RetentionSchema().load({})


@dataclass(frozen=True)
class DeliverySettings:
    sweep_interval_seconds: float = _DELIVERY["sweep_interval_seconds"]
    redispatch_after_seconds: float = _DELIVERY["redispatch_after_seconds"]
    lease_seconds: int = _DELIVERY["lease_seconds"]
    retry_schedule_seconds: tuple[float, ...] = tuple(_DELIVERY["retry_schedule_seconds"])
    max_retry_age_seconds: float = _DELIVERY["max_retry_age_seconds"]
    max_rejected_attempts: int = _DELIVERY["max_rejected_attempts"]
    rejected_retry_seconds: float = _DELIVERY["rejected_retry_seconds"]
    not_visible_retry_seconds: float = _DELIVERY["not_visible_retry_seconds"]
    rate_limited_retry_seconds: float = _DELIVERY["rate_limited_retry_seconds"]
    probe_interval_seconds: float = _DELIVERY["probe_interval_seconds"]
    sweep_batch_size: int = _DELIVERY["sweep_batch_size"]


@dataclass(frozen=True)
class VerificationSettings:
    enabled: bool = _VERIFICATION["enabled"]
    after_write_seconds: float = _VERIFICATION["after_write_seconds"]
    interval_seconds: float = _VERIFICATION["interval_seconds"]


@dataclass(frozen=True)
class TracingSettings:
    enabled: bool = _TRACING["enabled"]
    endpoint: str = _TRACING["endpoint"]
    service_name: str = _TRACING["service_name"]
    export_delay_seconds: float = _TRACING["export_delay_seconds"]


@dataclass(frozen=True)
class OpsSettings:
    """The operator-facing surfaces: /ops login, /metrics token, Flower's basic auth."""

    admin_username: str = _ADMIN["username"]
    admin_password: str | None = field(default=_ADMIN["password"], repr=False)
    metrics_token: str | None = field(default=_METRICS["token"], repr=False)
    flower_port: int = _FLOWER["port"]
    flower_username: str = _FLOWER["username"]
    flower_password: str | None = field(default=_FLOWER["password"], repr=False)


@dataclass(frozen=True)
class PrivacySettings:
    """Erasure (relay/ledger/erasure.py): the key of the pseudonym an erased contact keeps."""

    pseudonym_key: str | None = field(default=_PRIVACY["pseudonym_key"], repr=False)
    ignored_bodies_key: str | None = field(default=_PRIVACY["ignored_bodies_key"], repr=False)
    destination_erasure_key: str | None = field(
        default=_PRIVACY["destination_erasure_key"], repr=False
    )


@dataclass(frozen=True)
class RetentionSettings:
    """`[retention]` (relay/ledger/retention.py): days to keep each prunable kind of row (0:
    for good), and the size of the pruning's batches."""

    delivery_attempts_days: int = _RETENTION["delivery_attempts_days"]
    ignored_events_days: int = _RETENTION["ignored_events_days"]
    resolved_dead_letters_days: int = _RETENTION["resolved_dead_letters_days"]
    superseded_deliveries_days: int = _RETENTION["superseded_deliveries_days"]
    batch_size: int = _RETENTION["batch_size"]
    max_batches: int = _RETENTION["max_batches"]
    interval_seconds: float = _RETENTION["interval_seconds"]
    keep_ignored_bodies_days: int = _RETENTION["keep_ignored_bodies_days"]
    failed_destination_erasures_days: int = _RETENTION["failed_destination_erasures_days"]


@dataclass(frozen=True)
class Settings:
    port: int
    database_url: str = field(repr=False)  # may carry credentials
    broker_url: str = field(repr=False)
    data_dir: Path
    max_body_bytes: int
    timestamp_tolerance_seconds: int
    max_future_skew_seconds: int
    queue: str
    log_level: str
    delivery: DeliverySettings
    sources: Mapping[str, SourceSettings]
    destinations: Mapping[str, DestinationSettings]
    admin_tokens: tuple[str, ...] = field(repr=False)
    ops: OpsSettings
    config_path: Path | None
    demo: bool
    trusted_proxies: int = 0  # [service] trusted_proxies: X-Forwarded-* hops to believe
    verification: VerificationSettings = field(default_factory=VerificationSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
