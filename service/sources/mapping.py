"""From a source event's answers to a canonical decision, as the source's config says.

Where the address and the consent answer are, how answers map to granted/denied/withdrawn/
unknown, what an absent answer means, and the `source`/`source_id` templates are per source
in the config file (docs/sources/index.md). Anything that cannot become a valid decision is
*ignored* with a reason that is recorded, never a 4xx
(docs/reference/senders.md#answers-have-side-effects).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from relay.config.mapping import MappingSettings, template_fields
from relay.domain import Decision, Evidence, evidence_of
from schemas.consent import decision_schema
from service.sources.base import SourceEvent

WHEN_MISSING = ("ignore", "unknown")


def render(template: str, variables: Mapping[str, Any]) -> str:
    missing = [name for name in template_fields(template) if variables.get(name) in (None, "")]
    if missing:
        raise LookupError(f"Template {template!r} needs {', '.join(missing)}, absent here.")
    return template.format_map({name: str(value) for name, value in variables.items()})


def resolve(
    event: SourceEvent,
    settings: MappingSettings,
    default_source_id: str | None,
    max_future_skew: dt.timedelta,
) -> Decision | str:
    """The decision the event carries, or the reason it is ignored."""
    if event.ignored is not None:
        return event.ignored
    if event.decision is not None:
        if not settings.evidence:  # already checked by the canonical schema
            return event.decision
        return _with_evidence(event.decision, settings, event.variables, max_future_skew)
    email = event.answers.get(settings.email) if settings.email else event.email
    if not isinstance(email, str) or not email.strip():
        where = f"answer {settings.email!r}" if settings.email else "e-mail field"
        return f"No e-mail address in the {where}."
    answer = event.answers.get(settings.consent) if settings.consent else None
    consent, reason = _consent(answer, settings)
    if consent is None:
        return reason
    try:
        source = render(settings.source, event.variables)
        id_template = settings.source_id or default_source_id
        source_id = render(id_template, event.variables) if id_template else None
    except LookupError as exc:
        return str(exc)
    candidate = Decision(email.strip(), consent, source, source_id, event.occurred_at)
    return _with_evidence(candidate, settings, event.variables, max_future_skew)


def _with_evidence(
    decision: Decision,
    settings: MappingSettings,
    variables: Mapping[str, Any],
    max_future_skew: dt.timedelta,
) -> Decision | str:
    """The decision with the source's evidence templates filling what it does not carry
    (a canonical payload's own values win), checked like a canonical payload."""
    if settings.evidence:
        try:
            configured = render_evidence(settings.evidence, variables)
        except LookupError as exc:
            return str(exc)
        decision = dataclasses.replace(decision, evidence=decision.evidence.merged(configured))
    return _invalid(decision, max_future_skew) or decision


def render_evidence(
    templates: Mapping[str, str | tuple[str, ...]], variables: Mapping[str, Any]
) -> Evidence:
    rendered: dict[str, Any] = {}
    for key, template in templates.items():
        if isinstance(template, str):
            rendered[key] = render(template, variables)
        else:
            rendered[key] = [render(item, variables) for item in template]
    return evidence_of(rendered)


def _consent(answer: Any, settings: MappingSettings) -> tuple[str | None, str]:
    """The consent state, or None and the reason the event is ignored."""
    found = list(_candidates(answer))
    if not found:
        if settings.when_missing == "unknown":
            return "unknown", ""
        return None, f"No consent answer in {settings.consent!r}."
    for value in found:
        if value in settings.values:
            return settings.values[value], ""
    return None, f"Consent answer {found[0]!r} is not in the mapping's values."


def _candidates(answer: Any) -> Iterable[str]:
    """Normalised answers: a checkbox list offers each selected label in order."""
    values = answer if isinstance(answer, list | tuple) else [answer]
    for value in values:
        if value is None or isinstance(value, dict | list):
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value).strip().lower()
        if text:
            yield text


def _invalid(decision: Decision, skew: dt.timedelta) -> str | None:
    """The canonical schema's verdict, so a mapped decision meets the same rules as a
    canonical one (address syntax, label length, no control characters, no future time)."""
    payload: dict[str, Any] = {
        "email": decision.email,
        "tracking_consent": decision.tracking_consent,
        "source": decision.source,
    }
    if decision.source_id is not None:
        payload["source_id"] = decision.source_id
    if decision.occurred_at is not None:
        payload["occurred_at"] = decision.occurred_at.isoformat()
    for key, value in decision.evidence.as_json().items():
        if value:
            payload[key] = value
    errors = decision_schema(skew).validate(payload)
    if not errors:
        return None
    detail = "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in errors.items())
    return f"The mapped decision is invalid ({detail})."
