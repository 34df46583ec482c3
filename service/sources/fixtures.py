"""Golden payloads, one file per kind and event, from the vendors' documented examples.

`fixtures/<kind>/<event>.json` is sent as JSON, `.xml` as SOAP (`text/xml`), and
`.form.json` (an object of form fields) as `multipart/form-data`, as Jotform posts. The
signing CLI (`consent-relay sources send`) and the tests read them through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from urllib3 import encode_multipart_formdata

FIXTURES_DIR = Path(__file__).parent / "fixtures"
FORM_SUFFIX = ".form.json"
BOUNDARY = "consent-relay-fixture-boundary"


def fixture_names(kind: str) -> list[str]:
    folder = FIXTURES_DIR / kind
    if not folder.is_dir():
        return []
    return sorted(path.name.split(".", 1)[0] for path in folder.iterdir() if path.is_file())


def fixture_path(kind: str, name: str) -> Path:
    matches = sorted((FIXTURES_DIR / kind).glob(f"{name}.*"))
    if not matches:
        known = ", ".join(fixture_names(kind)) or "none"
        raise LookupError(f"No fixture {name!r} for kind {kind!r} (known: {known}).")
    return matches[0]


def load_fixture(kind: str, name: str) -> tuple[bytes, str]:
    """The fixture's body and content type, as the sender would post them."""
    path = fixture_path(kind, name)
    if path.name.endswith(FORM_SUFFIX):
        fields = json.loads(path.read_text())
        return encode_multipart_formdata(fields, boundary=BOUNDARY)
    if path.suffix == ".xml":
        return path.read_bytes(), "text/xml; charset=utf-8"
    return path.read_bytes(), "application/json"
