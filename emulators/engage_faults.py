"""Runtime-configurable faults of the Mapp Engage emulator.

References are to docs/reference/engage.md. All
faults are
off by default. They are set when the app is built (``create_emulator_app(faults=...)``, the
``engage-emulator`` CLI flags) or at run time through ``/_emulator/faults``.

Order of the checks for every ``/api/rest...`` request (see ``engage.py``):

1. rate-limit window: the arrival is recorded first, violation -> 500
   (docs/reference/engage.md#rate-limits)
2. latency: every request is delayed by ``latency_ms``
3. hang: ``hang_rate`` of the requests wait ``hang_seconds``, then answer 504 unprocessed
4. forced auth failure: 401, 403 or 417 (docs/reference/engage.md#responses-and-errors)
5. the real Basic-auth check, route (404/405), Accept (406), Content-Type (415)
6. random server error: ``error_rate`` of the requests answer ``error_status``
7. the handler; contacts created there use ``visibility_delay_seconds``
   (docs/reference/engage.md#endpoints)
"""

from __future__ import annotations

import argparse
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from emulators.engage_state import ApiError, missing_authorization, permission_denied

__all__ = ["FaultConfigError", "Faults", "add_arguments", "current_faults", "from_arguments"]

# docs/reference/engage.md#rate-limits: going over the per-account rate answers 500 with this text
# (no 429, no Retry-After).
RATE_LIMIT_MESSAGE = "Database Access Limit Exceeded"
AUTH_FAILURE_STATUSES = (401, 403, 417)
RATE_WINDOW_SECONDS = 1.0


class FaultConfigError(ValueError):
    """A fault setting that is unknown or out of range; ``field`` names it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = name


def _number(name: str, value: Any, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(name, f"{name} must be a finite number")
    if value < 0 or (high is not None and value > high):
        limit = f"between 0 and {high:g}" if high is not None else "non-negative"
        raise FaultConfigError(name, f"{name} must be {limit}")
    return float(value)


def _integer(name: str, value: Any, allowed: range | tuple[int, ...] | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultConfigError(name, f"{name} must be an integer")
    if allowed is not None and value not in allowed:
        shown = f"{allowed.start}..{allowed.stop - 1}" if isinstance(allowed, range) else allowed
        raise FaultConfigError(name, f"{name} must be one of {shown}")
    return value


VALIDATORS: dict[str, Any] = {
    "rate_limit_per_second": _number,
    "error_rate": lambda name, value: _number(name, value, high=1.0),
    "error_status": lambda name, value: _integer(name, value, range(500, 600)),
    "hang_rate": lambda name, value: _number(name, value, high=1.0),
    "hang_seconds": _number,
    "latency_ms": _number,
    "visibility_delay_seconds": _number,
    "auth_failure": lambda name, value: _integer(name, value, AUTH_FAILURE_STATUSES),
    "seed": _integer,
}
HANG_FIELDS = frozenset({"hang_rate", "hang_seconds"})
COUNTERS = ("api_requests", "rate_limit_violations", "injected_errors", "hangs", "auth_failures")


@dataclass(eq=False)  # one shared, mutable object: compare by identity
class Faults:
    """Fault settings and counters, shared by the server's request threads (lock-guarded)."""

    rate_limit_per_second: float | None = None
    error_rate: float = 0.0
    error_status: int = 503
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    latency_ms: float = 0.0
    visibility_delay_seconds: float = 0.0
    auth_failure: int | None = None
    seed: int | None = None
    api_requests: int = field(default=0, init=False)
    rate_limit_violations: int = field(default=0, init=False)
    injected_errors: int = field(default=0, init=False)
    hangs: int = field(default=0, init=False)
    auth_failures: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _window: deque[float] = field(default_factory=deque, init=False, repr=False)
    # For each violation (the latest few): how long the window's requests took to arrive.
    # Just under 1 s means scheduling jitter; far under it means a pacing fault.
    _violation_spans: deque[float] = field(
        default_factory=lambda: deque(maxlen=20), init=False, repr=False
    )
    _random: random.Random = field(default_factory=random.Random, init=False, repr=False)
    _hang_generation: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._wake = threading.Condition(self._lock)
        given = {name: getattr(self, name) for name in VALIDATORS}
        with self._lock:  # _set notifies hung waiters, which needs the lock
            self._set({name: value for name, value in given.items() if value is not None})

    # --- configuration -------------------------------------------------------------------

    def update(self, changes: dict[str, Any]) -> None:
        """Partial update; ``None`` turns a fault off. Validates everything before applying."""
        with self._lock:
            self._set(changes)

    def clear(self) -> None:
        """Turn every fault off; the counters are kept."""
        with self._lock:
            self._set(dict.fromkeys(VALIDATORS))

    def reset(self) -> None:
        """Turn every fault off and zero the counters."""
        with self._lock:
            self._set(dict.fromkeys(VALIDATORS))
            for name in COUNTERS:
                setattr(self, name, 0)
            self._violation_spans.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "config": {name: getattr(self, name) for name in VALIDATORS},
                "counters": {name: getattr(self, name) for name in COUNTERS},
                "violation_spans": list(self._violation_spans),
            }

    def _set(self, changes: dict[str, Any]) -> None:
        # Called with the lock held. Validate all first so a bad field changes nothing.
        unknown = sorted(set(changes) - set(VALIDATORS))
        if unknown:
            raise FaultConfigError(unknown[0], f"unknown fault setting {unknown[0]}")
        values = {
            name: OFF[name] if value is None else VALIDATORS[name](name, value)
            for name, value in changes.items()
        }
        for name, value in values.items():
            setattr(self, name, value)
        if "rate_limit_per_second" in values:
            self._window.clear()
        if "seed" in values:
            self._random.seed(self.seed)  # None: seeded from the OS
        if HANG_FIELDS & set(values):
            self._release_hangs()

    # --- per-request decisions -----------------------------------------------------------

    def arrive(self, now: float) -> bool:
        """Count an API request that arrived at ``now`` (monotonic); False when over the limit.

        Every arrival, rejected or not, stays in the 1-second sliding window
        (docs/reference/engage.md#rate-limits).
        """
        with self._lock:
            self.api_requests += 1
            if self.rate_limit_per_second is None:
                return True
            while self._window and self._window[0] <= now - RATE_WINDOW_SECONDS:
                self._window.popleft()
            self._window.append(now)
            if len(self._window) > self.rate_limit_per_second:
                self.rate_limit_violations += 1
                self._violation_spans.append(round(now - self._window[0], 4))
                return False
            return True

    def latency_seconds(self) -> float:
        with self._lock:
            return self.latency_ms / 1000.0

    def hang(self) -> bool:
        """Draw whether this request hangs; if so block ``hang_seconds`` and return True.

        A reset, a change of the hang settings or EmulatorServer.stop() ends the wait early,
        so that no request thread stays blocked after the test that set the hang.
        """
        with self._lock:
            if not (self.hang_rate > 0 and self._random.random() < self.hang_rate):
                return False
            self.hangs += 1
            generation = self._hang_generation
            # wait_for releases the lock while waiting.
            self._wake.wait_for(
                lambda: self._hang_generation != generation, timeout=self.hang_seconds
            )
            return True

    def release_hangs(self) -> None:
        with self._lock:
            self._release_hangs()

    def forced_auth_status(self) -> int | None:
        with self._lock:
            self.auth_failures += self.auth_failure is not None
            return self.auth_failure

    def draw_error(self) -> int | None:
        with self._lock:
            if not (self.error_rate > 0 and self._random.random() < self.error_rate):
                return None
            self.injected_errors += 1
            return self.error_status

    def visibility_delay(self) -> float:
        with self._lock:
            return self.visibility_delay_seconds

    def _release_hangs(self) -> None:
        self._hang_generation += 1
        self._wake.notify_all()


OFF: dict[str, Any] = {f.name: f.default for f in fields(Faults) if f.name in VALIDATORS}


# --- request checks (engage.py puts them into app.extensions["engage_checks"]) -------------


def current_faults() -> Faults:
    faults: Faults = current_app.extensions["engage_faults"]
    return faults


def check_rate_limit() -> None:
    # first thing, before auth: every transaction counts (docs/reference/engage.md#rate-limits)
    now = time.monotonic()
    if not current_faults().arrive(now):
        raise ApiError(500, "INVALID_REQUEST", RATE_LIMIT_MESSAGE, error_actor="SERVER")


def check_latency() -> None:
    delay = current_faults().latency_seconds()
    if delay > 0:
        time.sleep(delay)


def check_hang() -> None:
    # A hung request never reaches the handler, so its write is never applied, not even
    # after the hang. The client sees a read timeout; 504 is for clients that wait longer.
    if current_faults().hang():
        raise ApiError(504, "INVALID_REQUEST", "Gateway Timeout", error_actor="SERVER")


def check_auth_failure() -> None:
    status = current_faults().forced_auth_status()
    if status == 401:
        raise missing_authorization()
    if status == 403:
        raise permission_denied()
    # docs/reference/engage.md#responses-and-errors: 417 = account expired; the exact body is not
    # documented
    if status == 417:
        raise ApiError(417, "PERMISSION_DENIED", "Account expired")


def check_server_error() -> None:
    status = current_faults().draw_error()
    if status is not None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:  # e.g. 599 has no standard phrase
            message = "Server Error"
        raise ApiError(status, "INVALID_REQUEST", message, error_actor="SERVER")


CHECKS_BEFORE_AUTH = (check_rate_limit, check_latency, check_hang, check_auth_failure)
CHECKS_AFTER_VALIDATION = (check_server_error,)


# --- control endpoint /_emulator/faults (no auth, like the other /_emulator endpoints) -----


def faults_view() -> Response:
    """GET shows, PUT/POST partially update, DELETE turns all faults off (counters kept)."""
    faults = current_faults()
    if request.method == "DELETE":
        faults.clear()
    elif request.method in ("PUT", "POST"):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_REQUEST", "body must be a JSON object")
        try:
            faults.update(body)
        except FaultConfigError as error:
            raise ApiError(
                400, "INVALID_PARAMETER", str(error), parameterName=error.field
            ) from error
    return jsonify(faults.snapshot())


def register_routes(app: Flask) -> None:
    methods = ["GET", "PUT", "POST", "DELETE"]
    app.add_url_rule("/_emulator/faults", view_func=faults_view, methods=methods)


# --- CLI flags of engage-emulator --------------------------------------------------------------

# flag -> (Faults field, type, metavar, help); unset flags keep the (off) defaults of Faults.
CLI_FLAGS: dict[str, tuple[str, type, str | None, str]] = {
    "--rate-limit": (
        "rate_limit_per_second",
        float,
        "N",
        "requests/s; more answer 500 (docs/reference/engage.md#rate-limits)",
    ),
    "--error-rate": ("error_rate", float, "F", "fraction of requests answering --error-status"),
    "--error-status": ("error_status", int, "S", "5xx status of those (default 503)"),
    "--hang-rate": ("hang_rate", float, "F", "fraction of requests that hang, unprocessed"),
    "--hang-seconds": ("hang_seconds", float, "S", "length of a hang (default 30)"),
    "--latency-ms": ("latency_ms", float, "MS", "delay added to every request"),
    "--visibility-delay": ("visibility_delay_seconds", float, "S", "until a new contact is seen"),
    "--auth-failure": ("auth_failure", int, None, "answer every request with this status"),
    "--seed": ("seed", int, "N", "seed of the random faults"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faults (all off by default; see /_emulator/faults)")
    for flag, (name, kind, metavar, text) in CLI_FLAGS.items():
        choices = AUTH_FAILURE_STATUSES if name == "auth_failure" else None
        group.add_argument(flag, dest=name, type=kind, metavar=metavar, choices=choices, help=text)


def from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Faults:
    """The initial Faults of the parsed flags; out-of-range values exit via parser.error."""
    given = {spec[0]: getattr(args, spec[0]) for spec in CLI_FLAGS.values()}
    try:
        return Faults(**{name: value for name, value in given.items() if value is not None})
    except FaultConfigError as error:
        flag = next(flag for flag, spec in CLI_FLAGS.items() if spec[0] == error.field)
        parser.error(f"{flag}: {error}")
