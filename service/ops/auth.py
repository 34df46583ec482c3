"""Sign-in, session and CSRF for the operator page (`/ops`).

- One operator account: `[admin] username` / `[admin] password`. Both are compared in constant
  time (as SHA-256 digests, so that not even the length of a wrong guess shows in the timing).
- The session is Flask's signed cookie, limited to `/ops`, HttpOnly, SameSite=Lax, Secure
  whenever the page is served over HTTPS (`request.is_secure`: behind a proxy, see
  `[service] trusted_proxies`), expiring with the browser and at the latest
  `SESSION_MAX_AGE` after sign-in.
- A cookie alone is not enough: it names the account's session epoch (service/ops/throttle.py,
  in the ledger) and a mark of the password; signing out moves the epoch on and a changed
  password changes the mark, so either ends every session, copied cookies included.
- Every gunicorn worker must verify every other worker's cookies, so the signing key is the same
  in all of them: the app's SECRET_KEY when one is configured, else a key derived from the admin
  username and password with PBKDF2 (slow on purpose: any visitor of the login page gets a
  signed cookie, which must not become a fast offline test of password guesses). Changing the
  password signs everybody out.
- CSRF: a random token per session, in a hidden field of every form, checked in constant time
  on every POST (the login form included).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from relay.config.settings import OpsSettings
from relay.telemetry import metrics
from service.ops import throttle as ops_throttle

SESSION_MAX_AGE_SECONDS = 12 * 3600
KDF_LABEL = b"consent-relay /ops session key v1"
KDF_ITERATIONS = 600_000
CSRF_FIELD = "csrf_token"
_USER, _SIGNED_IN_AT, _CSRF = "ops_user", "ops_at", "ops_csrf"
_EPOCH, _PASSWORD_MARK = "ops_epoch", "ops_pw"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",  # the pages show personal data
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def configure_sessions(app: Flask, ops: OpsSettings) -> None:
    """Set the cookie settings and, when none is configured, a stable SECRET_KEY."""
    if ops.admin_password and not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = derive_session_key(ops.admin_username, ops.admin_password)
    app.config.update(
        SESSION_COOKIE_NAME="consent_relay_ops",
        SESSION_COOKIE_PATH="/ops",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.session_interface = _SecureWhenHttps()


class _SecureWhenHttps(SecureCookieSessionInterface):
    """The cookie gets `Secure` whenever this request came over HTTPS (or always, with
    SESSION_COOKIE_SECURE): a browser then never sends it over plain HTTP."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


@lru_cache(maxsize=4)
def derive_session_key(username: str, password: str) -> bytes:
    """The same bytes in every process for the same credentials; about 0.1 s, once."""
    salt = KDF_LABEL + b"\0" + username.encode()
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, KDF_ITERATIONS)


def credentials_match(ops: OpsSettings, username: str, password: str) -> bool:
    expected_password = ops.admin_password or ""
    user_ok = _same(username, ops.admin_username)
    password_ok = _same(password, expected_password) and bool(expected_password)
    return user_ok & password_ok  # both compared, always


def _same(given: str, expected: str) -> bool:
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())


def throttled_page(target: str, username: str, retry_after: int) -> Response:
    """429 with Retry-After (RFC 6585 §4): too many failed sign-ins from this address or
    for this account."""
    error = f"Too many failed sign-ins. Try again in {max(1, round(retry_after / 60))} min."
    page = render_template("ops/login.html", next=target, username=username, error=error)
    return Response(page, 429, {"Retry-After": str(retry_after)}, mimetype="text/html")


def is_operator_name(ops: OpsSettings, username: str) -> bool:
    return _same(username, ops.admin_username)


def sign_in(ops: OpsSettings, epoch: int) -> None:
    """A fresh session (new CSRF token) for the operator, under the account's current epoch."""
    session.clear()
    session[_USER] = ops.admin_username
    session[_SIGNED_IN_AT] = int(time.time())
    session[_EPOCH] = epoch
    session[_PASSWORD_MARK] = password_mark(ops)
    session[_CSRF] = secrets.token_urlsafe(32)


def sign_out(ops: OpsSettings) -> None:
    """This session and every other one of the account: the epoch moves on."""
    with current_app.extensions["consent_relay"].sessions() as ledger:
        ops_throttle.end_all_sessions(ledger, ops.admin_username)
        ledger.commit()
    session.clear()


@dataclass(frozen=True)
class SignInResult:
    signed_in: bool
    refusal: ops_throttle.Refusal | None = None


def try_sign_in(ops: OpsSettings, username: str, password: str, client: str) -> SignInResult:
    """The throttle first (a throttled attempt is not even compared, so it tells nothing
    about the password), then the credentials; every outcome is counted."""
    now = time.time()
    account = ops.admin_username if is_operator_name(ops, username) else None
    keys = ops_throttle.keys_for(client, account)
    with current_app.extensions["consent_relay"].sessions() as ledger:
        refused = ops_throttle.refusal(ledger, keys, now)
        if refused is not None:
            metrics.count_ops_sign_in(f"throttled_{refused.scope}")
            return SignInResult(False, refused)
        if not credentials_match(ops, username, password):
            ops_throttle.record_failure(ledger, keys, now)
            ledger.commit()
            metrics.count_ops_sign_in("refused")
            return SignInResult(False)
        ops_throttle.clear(ledger, keys["client"])
        epoch = ops_throttle.current_epoch(ledger, ops.admin_username)
        ledger.commit()
    sign_in(ops, epoch)
    metrics.count_ops_sign_in("signed_in")
    return SignInResult(True)


def password_mark(ops: OpsSettings) -> str:
    """Changes with the password; keyed with the app's secret so that the (readable) cookie
    does not offer a fast offline test of password guesses."""
    key = current_app.secret_key
    key_bytes = key.encode() if isinstance(key, str) else bytes(key or b"")
    message = KDF_LABEL + b"\0password\0" + (ops.admin_password or "").encode()
    return hmac.new(key_bytes, message, hashlib.sha256).hexdigest()[:32]


def signed_in(ops: OpsSettings) -> bool:
    """A live session of the operator: its cookie, its age, its password mark and its epoch
    (one ledger read per request, remembered for the rest of the request)."""
    cached = g.get("ops_signed_in")
    if cached is None:
        cached = g.ops_signed_in = _cookie_valid(ops) and _epoch_current(ops)
    return bool(cached)


def _cookie_valid(ops: OpsSettings) -> bool:
    user, since = session.get(_USER), session.get(_SIGNED_IN_AT)
    if user != ops.admin_username or not isinstance(since, int):
        return False
    mark = session.get(_PASSWORD_MARK)
    if not isinstance(mark, str) or not hmac.compare_digest(mark, password_mark(ops)):
        return False
    return 0 <= time.time() - since < SESSION_MAX_AGE_SECONDS


def _epoch_current(ops: OpsSettings) -> bool:
    epoch = session.get(_EPOCH)
    if not isinstance(epoch, int):
        return False
    with current_app.extensions["consent_relay"].sessions() as ledger:
        return epoch == ops_throttle.current_epoch(ledger, ops.admin_username)


def operator() -> str | None:
    user = session.get(_USER)
    return user if isinstance(user, str) else None


def csrf_token() -> str:
    """This session's token (created on first use: the login form needs one too)."""
    token = session.get(_CSRF)
    if not isinstance(token, str):
        token = session[_CSRF] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort with 400 unless the form carries this session's token."""
    expected = session.get(_CSRF)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        abort(
            400,
            "The form was missing its security token or it had expired. "
            "Go back, reload the page and try again.",
        )


def safe_next(target: str | None, default: str) -> str:
    """Only a path inside /ops: never an open redirect to another site."""
    if not target or not target.startswith("/ops") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(ch) < 32 for ch in target):
        return default
    return target


def guard(ops: OpsSettings, *, public: bool) -> Response | tuple[str, int] | None:
    """Before every /ops request: the page is off without a password; every other page needs
    a session; every POST needs the CSRF token."""
    if not ops.admin_password:
        return render_template("ops/disabled.html"), 404
    if not public and not signed_in(ops):
        return _to_login()
    if request.method == "POST":
        check_csrf()
    return None


def _to_login() -> Response:
    """Back here after sign-in; never with an address in the URL (it would reach access logs)."""
    if request.method == "POST" or "email" in request.args:
        flash("Your session has ended. Sign in again, then repeat the action.", "warn")
        return redirect(url_for("ops.login"))
    return redirect(url_for("ops.login", next=request.full_path.rstrip("?")))


def with_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
