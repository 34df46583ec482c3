"""The one strict base schema: unknown keys are refused, in config files and API bodies alike."""

from __future__ import annotations

from marshmallow import RAISE, Schema


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE
