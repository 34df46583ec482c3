"""`[sources.<name>.hmac]`: how a `kind = "hmac"` source reads and checks a signature.

Most signed senders differ only in where the signature sits and what is signed
(docs/reference/hmac-senders.md), so one kind covers them from configuration: the header
and how to read it, the algorithm and encoding, what is signed, where the timestamp and the
event id are, and how the body is parsed. A `preset` (schemas/hmac_presets/<name>.toml,
shipped with the project) supplies a known sender's values; keys written next to it win.

A combination that would authenticate nothing is refused here, at start-up, with the reason:
a timestamp that is not signed, or neither a signed timestamp nor an event id (a captured
delivery could then be replayed forever) unless `accept_replays = true` says so.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate, validates_schema

from schemas.base import StrictSchema

ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")
SIGNED = ("body", "timestamp-body", "url-body")
BODIES = ("json", "form")
TIMESTAMP_UNITS = ("seconds", "milliseconds")
# Where a value is: `header:<Name>`, `body:<dotted.path>` (a JSON path, or a form field name)
# and, for event ids only, `body-sha256` (the body's digest: the same body is the same event).
HEADER_NAME = r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}"  # an RFC 9110 token
LOCATOR = rf"^(header:{HEADER_NAME}|body:\S{{1,200}})$"
EVENT_ID_LOCATOR = rf"^(header:{HEADER_NAME}|body:\S{{1,200}}|body-sha256)$"
PRESET_DIR = "hmac_presets"
NAME = r"^[a-z][a-z0-9_]{0,40}$"


def preset_names() -> tuple[str, ...]:
    folder = resources.files("schemas").joinpath(PRESET_DIR)
    return tuple(
        sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    )


def load_preset(name: str) -> dict[str, Any]:
    """The preset file: `[hmac]` (the settings) and `[example]` (what `sources new` prints)."""
    if name not in preset_names():
        raise LookupError(f"No preset {name!r} (known: {', '.join(preset_names())}).")
    text = resources.files("schemas").joinpath(PRESET_DIR, f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


class HmacSchema(StrictSchema):
    preset = fields.String(validate=validate.OneOf(preset_names()))
    header = fields.String(required=True, validate=validate.Regexp(f"^{HEADER_NAME}$"))
    algorithm = fields.String(load_default="sha256", validate=validate.OneOf(ALGORITHMS))
    encoding = fields.String(load_default="hex", validate=validate.OneOf(ENCODINGS))
    prefix = fields.String(load_default="", validate=validate.Length(max=40))
    # Several signatures in the header, separated by this character (" " or ","); "" = one.
    separator = fields.String(load_default="", validate=validate.Length(max=1))
    # A `t=...,v1=...` list: the signatures are the values of this key.
    signature_key = fields.String(validate=validate.Regexp(NAME))
    timestamp_key = fields.String(validate=validate.Regexp(NAME))
    timestamp_header = fields.String(validate=validate.Regexp(f"^{HEADER_NAME}$"))
    timestamp_unit = fields.String(load_default="seconds", validate=validate.OneOf(TIMESTAMP_UNITS))
    signed = fields.String(load_default="body", validate=validate.OneOf(SIGNED))
    timestamp_separator = fields.String(load_default=".", validate=validate.Length(max=8))
    event_id = fields.String(validate=validate.Regexp(EVENT_ID_LOCATOR))
    event_type = fields.String(validate=validate.Regexp(LOCATOR))
    # Event types that carry consent; any other is recorded as ignored. Absent: all.
    events = fields.List(fields.String(validate=validate.Length(min=1, max=100)))
    occurred_at = fields.String(validate=validate.Regexp(LOCATOR))
    body = fields.String(load_default="json", validate=validate.OneOf(BODIES))
    variables = fields.Dict(
        keys=fields.String(validate=validate.Regexp(NAME)),
        values=fields.String(validate=validate.Regexp(LOCATOR)),
        load_default=dict,
    )
    accept_replays = fields.Boolean(load_default=False)

    @pre_load
    def _with_preset(self, data: Any, **_: Any) -> Any:
        """The preset's values under the ones written in the file (variables merged)."""
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
            return data
        try:
            preset = dict(load_preset(data["preset"]).get("hmac", {}))
        except LookupError:
            return data  # the OneOf on `preset` names the problem
        variables = {**preset.get("variables", {}), **data.get("variables", {})}
        return {**preset, **data, "variables": variables}

    @validates_schema
    def _authenticates(self, data: dict[str, Any], **_: Any) -> None:
        errors = combination_problems(data)
        if errors:
            raise ValidationError(errors)


def combination_problems(data: dict[str, Any]) -> dict[str, list[str]]:
    """Settings that would accept what they should refuse, by key."""
    errors: dict[str, list[str]] = {}
    timestamp = data.get("timestamp_key") or data.get("timestamp_header")
    if data.get("timestamp_key") and data.get("timestamp_header"):
        errors["timestamp_header"] = ["Use timestamp_key or timestamp_header, not both."]
    if data.get("timestamp_key") and not data.get("signature_key"):
        errors["timestamp_key"] = ["Needs signature_key: a `t=...,v1=...` list holds both."]
    if data["signed"] == "timestamp-body" and not timestamp:
        errors["signed"] = ["'timestamp-body' needs timestamp_header or timestamp_key."]
    if timestamp and data["signed"] != "timestamp-body":
        errors["signed"] = [
            "The timestamp is not signed, so checking it stops no replay (anyone can change "
            "it): sign it (signed = 'timestamp-body') or drop timestamp_header/timestamp_key."
        ]
    if not timestamp and "event_id" not in data and not data["accept_replays"]:
        errors["accept_replays"] = [
            "Neither a signed timestamp nor an event id: a captured delivery could be replayed "
            "at any time and would be recorded again each time. Set timestamp_header or "
            "timestamp_key (with signed = 'timestamp-body'), or event_id, or write "
            "accept_replays = true to accept replays."
        ]
    if data.get("separator") and data["separator"] in data.get("prefix", ""):
        errors["separator"] = ["The separator cannot appear in the prefix."]
    return errors
