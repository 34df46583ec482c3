"""A source's mapping settings (`[sources.<name>.mapping]`) and the check of its templates.

Config, not parsing: the loader builds these and checks the templates against the names each
kind offers (schemas/sources.py KIND_VARIABLES); service/sources/mapping.py applies them.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.sources import KIND_VARIABLES

# Answers as forms send them: booleans, yes/no, checkbox "on", 1/0, and our own words.
DEFAULT_VALUES: Mapping[str, str] = {
    "true": "granted",
    "false": "denied",
    "yes": "granted",
    "no": "denied",
    "on": "granted",
    "off": "denied",
    "1": "granted",
    "0": "denied",
    "granted": "granted",
    "denied": "denied",
    "withdrawn": "withdrawn",
    "unknown": "unknown",
}


@dataclass(frozen=True)
class MappingSettings:
    """`[sources.<name>.mapping]`; `source`/`source_id` are the source's templates."""

    source: str
    source_id: str | None = None
    email: str | None = None
    consent: str | None = None
    values: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_VALUES))
    when_missing: str = "ignore"


def template_fields(template: str) -> list[str]:
    """The names a template uses; only plain names (no `{a.b}` or `{a[0]}`), so a template
    can never reach into attributes of the values."""
    names = []
    for _text, name, _spec, _conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"Template field {{{name}}} must be a plain name.")
        names.append(name)
    return names


def template_problems(
    kind: str, mapping: MappingSettings, configured: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    """Config errors in a source's `source`/`source_id` templates, by key: a name the kind
    does not provide would make every event ignored at run time. `configured`: the names
    the source's own config adds (the hmac kind's `variables`)."""
    variables = KIND_VARIABLES.get(kind)
    if variables is None:
        return {"kind": [f"Kind {kind!r} is not implemented."]}
    variables = variables | configured
    problems: dict[str, list[str]] = {}
    for key in ("source", "source_id"):
        template = getattr(mapping, key)
        if template is None:
            continue
        try:
            unknown = sorted(set(template_fields(template)) - variables)
        except ValueError as exc:
            problems[key] = [str(exc)]
            continue
        if unknown:
            offered = ", ".join(sorted(variables)) or "none (a literal label)"
            problems[key] = [f"Unknown template field(s) {unknown}; {kind} offers: {offered}."]
    return problems
