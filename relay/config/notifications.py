"""The `[notifications]` settings as the code reads them (schemas/notifications.py: the file's
format and its defaults; docs/operations/notifications.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.notifications import NotificationsSchema

_DEFAULTS: dict[str, Any] = NotificationsSchema().load({})


@dataclass(frozen=True)
class NotificationTarget:
    name: str
    url: str = field(repr=False)  # may carry a token in its path (Slack's incoming webhooks)
    secret: str = field(repr=False)
    events: tuple[str, ...]
    format: str = "standard"  # standard | slack


@dataclass(frozen=True)
class NotificationSettings:
    enabled: bool = _DEFAULTS["enabled"]
    targets: tuple[NotificationTarget, ...] = ()
    max_attempts: int = _DEFAULTS["max_attempts"]
    timeout_seconds: float = _DEFAULTS["timeout_seconds"]
    retry_schedule_seconds: tuple[float, ...] = tuple(_DEFAULTS["retry_schedule_seconds"])

    def target(self, name: str) -> NotificationTarget | None:
        return next((target for target in self.targets if target.name == name), None)

    def wanting(self, event: str) -> list[NotificationTarget]:
        """The targets that want `event` (none while notifications are off)."""
        if not self.enabled:
            return []
        return [target for target in self.targets if event in target.events]


def build_notifications(data: dict[str, Any]) -> NotificationSettings:
    targets = tuple(
        NotificationTarget(
            name=name,
            url=target["url"],
            secret=target["secret"],
            events=tuple(target["events"]),
            format=target["format"],
        )
        for name, target in sorted(data["targets"].items())
    )
    return NotificationSettings(
        enabled=data["enabled"],
        targets=targets,
        max_attempts=data["max_attempts"],
        timeout_seconds=data["timeout_seconds"],
        retry_schedule_seconds=tuple(data["retry_schedule_seconds"]),
    )
