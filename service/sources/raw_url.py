"""The URL a request was sent to, as the sender wrote it: for signatures over the URL.

Werkzeug's `request.url` is rebuilt from the decoded path and re-quotes the query string with
its own rules (`?list=a%2Cb` becomes `?list=a,b`), so a signature over the URL as sent would
not match it. The request line as received is in the WSGI environ: gunicorn puts it in
`RAW_URI` (gunicorn `http/wsgi.py`), Werkzeug's server in `RAW_URI` and `REQUEST_URI`
(werkzeug `serving.py`). PEP 3333 servers pass `QUERY_STRING` undecoded, so it is the
fallback for the query; without a raw request line the path is re-quoted from `PATH_INFO`
(exact for paths without escapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

RAW_KEYS = ("RAW_URI", "REQUEST_URI")
# RFC 3986 pchar minus the unreserved characters quote() keeps anyway.
PATH_SAFE = "/:@!$&'()*+,;="


def received_url(environ: Mapping[str, Any], scheme: str, host: str) -> str:
    """`scheme://host` + the request target as received (path and query, escapes kept)."""
    path, query = _raw_target(environ)
    if query is None:
        query = _wsgi_text(environ.get("QUERY_STRING", ""))
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def _raw_target(environ: Mapping[str, Any]) -> tuple[str, str | None]:
    """The raw path, and the raw query when the raw line has one (Werkzeug's test client puts
    only the path in RAW_URI)."""
    raw = next((environ[key] for key in RAW_KEYS if environ.get(key)), None)
    if not isinstance(raw, str) or not raw.startswith(("/", "http://", "https://")):
        script = _wsgi_text(environ.get("SCRIPT_NAME", ""))
        return quote(script + _wsgi_text(environ.get("PATH_INFO", "")), safe=PATH_SAFE), None
    target = _wsgi_text(raw)
    if not target.startswith("/"):  # absolute-form (RFC 9112 §3.2.2): drop scheme and host
        after_scheme = target.split("://", 1)[1]
        target = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
    path, mark, query = target.partition("?")
    return path, query if mark else None


def _wsgi_text(value: str) -> str:
    """WSGI strings are the received bytes as latin-1 (PEP 3333); senders sign UTF-8 text."""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value
