"""In-memory state, error type and request-body validation of the Mapp Engage emulator.

Nothing here depends on Flask; emulators/engage.py wires it into HTTP handlers.

References are to docs/reference/engage.md.
"""

from __future__ import annotations

import copy
import hmac
import json
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

CALL_NAMES = ("update", "create", "get", "edit", "delete")
# docs/reference/engage.md#endpoints (user/updateProfileByEmail): custom attribute values max 2000
# chars.
MAX_ATTRIBUTE_VALUE_LENGTH = 2000
# Long benchmark runs send millions of requests: keep only the newest log entries in memory.
REQUEST_LOG_LIMIT = 10_000
PERMISSION_DENIED_MESSAGE = (
    "Access denied: check that the corresponding system user account is Type 'API' or 'Hybrid'"
)


def utc_now_iso() -> str:
    """Current UTC time as an ISO 8601 string."""
    return datetime.now(UTC).isoformat()


def email_key(email: str) -> str:
    """Key under which a contact is stored: e-mail addresses compare case-insensitively."""
    return email.lower()


class ApiError(Exception):
    """An Engage error answer; rendered with the JSON envelope of
    docs/reference/engage.md#responses-and-errors."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        *,
        error_actor: str = "CLIENT",
        **fields: str,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.error_actor = error_actor
        self.fields = fields

    def body(self) -> dict[str, str]:
        # docs/reference/engage.md#responses-and-errors: errorActor/errorCode/message, plus
        # objectType, propertyName, propertyValue, parameterName where relevant, and an errorId.
        envelope = {
            "errorActor": self.error_actor,
            "errorCode": self.error_code,
            "message": self.message,
        }
        envelope.update(self.fields)
        envelope["errorId"] = str(uuid.uuid4())
        return envelope


def no_such_contact(identifier: str) -> ApiError:
    """The 400 NO_SUCH_OBJECT answer for an unknown contact (docs/reference/engage.md#endpoints,
    docs/reference/engage.md#responses-and-errors)."""
    return ApiError(
        400,
        "NO_SUCH_OBJECT",
        f"Contact with identifier={identifier} does not exist.",
        objectType="Contact",
        propertyName="identifier",
        propertyValue=identifier,
    )


def missing_authorization() -> ApiError:
    """docs/reference/engage.md#responses-and-errors: 401 when the Authorization header is
    missing."""
    return ApiError(401, "PERMISSION_DENIED", "Authorization header is missing")


def permission_denied() -> ApiError:
    """docs/reference/engage.md#base-url-auth-headers /
    docs/reference/engage.md#responses-and-errors: 403 for invalid credentials or a wrong user
    type."""
    return ApiError(403, "PERMISSION_DENIED", PERMISSION_DENIED_MESSAGE)


def contact_json(contact: dict[str, Any]) -> dict[str, Any]:
    """The public Contact body: contactId, emailAddress, attributes as name/value list."""
    attributes = [{"name": n, "value": v} for n, v in contact["attributes"].items()]
    return {
        "contactId": contact["contactId"],
        "emailAddress": contact["emailAddress"],
        "attributes": attributes,
    }


def invalid_parameter(parameter: str, message: str, **fields: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER", message, parameterName=parameter, **fields)


def missing_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, "MISSING_PARAMETER", message, parameterName=parameter)


def parse_json_object(data: bytes) -> dict[str, Any]:
    """Decode a JSON object body; docs/reference/engage.md#responses-and-errors: else 400 "cannot
    deserialize value"."""
    try:
        body = json.loads(data or b"")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_REQUEST", "cannot deserialize value")
    return body


def parse_attributes(body: dict[str, Any]) -> dict[str, str]:
    """Validate ``attributes`` ([{"name": str, "value": str}, ...]) into a name->value dict."""
    raw = body.get("attributes", [])
    shape_error = invalid_parameter(
        "attributes", "attributes must be a list of {name, value} string pairs"
    )
    if not isinstance(raw, list):
        raise shape_error
    attributes: dict[str, str] = {}
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not (isinstance(name, str) and name and isinstance(value, str)):
            raise shape_error
        if len(value) > MAX_ATTRIBUTE_VALUE_LENGTH:
            message = f"Value of attribute {name} exceeds {MAX_ATTRIBUTE_VALUE_LENGTH} characters"
            raise invalid_parameter("attributes", message, propertyName=name)
        attributes[name] = value
    return attributes


def email_address(body: dict[str, Any]) -> str | None:
    """The validated ``emailAddress`` of a body, or None when it is absent or empty."""
    email = body.get("emailAddress")
    if email is None or email == "":
        return None
    if not isinstance(email, str) or "@" not in email:
        raise invalid_parameter("emailAddress", "emailAddress must be an e-mail address string")
    return email


class EngageState:
    """Thread-safe in-memory store of contacts, the request log and per-call counters.

    ``counts`` counts successful calls only; every request (including failures) is in
    ``requests``, which keeps the newest ``request_log_limit`` entries, while
    ``requests_total`` stays exact.

    A contact created with a visibility delay exists (a second create is refused) but
    update/get do not find it until the delay has passed: Engage persists writes
    asynchronously (docs/reference/engage.md#endpoints, contact/checkUpdateVersion).
    """

    def __init__(
        self, username: str, password: str, *, request_log_limit: int = REQUEST_LOG_LIMIT
    ) -> None:
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._contacts: dict[str, dict[str, Any]] = {}
        self._visible_after: dict[str, float] = {}  # time.monotonic() deadlines
        self._requests: deque[dict[str, Any]] = deque(maxlen=request_log_limit)
        self._requests_total = 0
        self._counts = dict.fromkeys(CALL_NAMES, 0)
        self._next_id = 1

    def check_credentials(self, username: str, password: str) -> bool:
        """Constant-time comparison of both parts of the Basic credentials."""
        user_ok = hmac.compare_digest(username.encode(), self._username.encode())
        password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        return user_ok and password_ok

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)
            self._requests_total += 1

    def create_contact(
        self, email: str, attributes: dict[str, str], visibility_delay: float = 0.0
    ) -> dict[str, Any]:
        """Create a contact; it becomes visible to update/get after ``visibility_delay`` s."""
        with self._lock:
            key = email_key(email)
            if key in self._contacts:
                # docs/reference/engage.md#endpoints: create on an existing contact gives 400.
                raise ApiError(
                    400,
                    "INVALID_PARAMETER",
                    "Such contact already exists",
                    objectType="Contact",
                    propertyName="emailAddress",
                    propertyValue=email,
                )
            visible_at = datetime.now(UTC) + timedelta(seconds=visibility_delay)
            contact = {
                "contactId": self._next_id,
                "emailAddress": email,
                "attributes": {},
                "history": [],
                "visible_at": visible_at.isoformat(),
            }
            self._next_id += 1
            self._contacts[key] = contact
            self._visible_after[key] = time.monotonic() + visibility_delay
            # The create's attributes are stored now and become visible with the contact.
            return self._apply(contact, "create", attributes)

    def update_contact(self, identifier: str, attributes: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            return self._apply(self._visible_contact(identifier), "update", attributes)

    def edit_contact(self, email: str, attributes: dict[str, str]) -> dict[str, Any] | None:
        """An out-of-band edit (a CSV import, an edit in Engage's UI): no API call, recorded
        in the contact's history as `edit`. None when there is no such contact."""
        with self._lock:
            contact = self._contacts.get(email_key(email))
            return None if contact is None else self._apply(contact, "edit", attributes)

    def get_contact(self, identifier: str) -> dict[str, Any]:
        with self._lock:
            contact = self._visible_contact(identifier)
            self._counts["get"] += 1
            return contact_json(contact)

    def delete_contact(self, identifier: str) -> None:
        """contact/delete (https://docs.mapp.com/apidocs/contactdelete): the contact is gone;
        an unknown (or not yet visible) one answers 400 NO_SUCH_OBJECT, as contact/get does."""
        with self._lock:
            self._visible_contact(identifier)
            key = email_key(identifier)
            del self._contacts[key]
            self._visible_after.pop(key, None)
            self._counts["delete"] += 1

    def find_contact(self, email: str) -> dict[str, Any] | None:
        """A deep copy of the stored contact (with history and ``visible``), or None."""
        with self._lock:
            key = email_key(email)
            return self._public_copy(key) if key in self._contacts else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "contacts": {key: self._public_copy(key) for key in self._contacts},
                "requests": copy.deepcopy(list(self._requests)),
                "requests_total": self._requests_total,
                "counts": dict(self._counts),
            }

    def reset(self) -> None:
        with self._lock:
            self._contacts.clear()
            self._visible_after.clear()
            self._requests.clear()
            self._requests_total = 0
            self._counts = dict.fromkeys(CALL_NAMES, 0)
            self._next_id = 1

    def _visible_contact(self, identifier: str) -> dict[str, Any]:
        # Called with the lock held. Not yet visible answers like a missing contact.
        key = email_key(identifier)
        contact = self._contacts.get(key)
        if contact is None or time.monotonic() < self._visible_after.get(key, 0.0):
            raise no_such_contact(identifier)
        return contact

    def _public_copy(self, key: str) -> dict[str, Any]:
        # Called with the lock held: the stored contact plus whether update/get can see it.
        contact = copy.deepcopy(self._contacts[key])
        contact["visible"] = time.monotonic() >= self._visible_after.get(key, 0.0)
        return contact

    def _apply(self, contact: dict[str, Any], call: str, attributes: dict[str, str]) -> dict:
        # Merge: attributes not named in the call are kept (the emulator does not model
        # the possible wipe of docs/reference/engage.md#update-may-clear-attributes, which is
        # UNVERIFIED for custom ones).
        contact["attributes"].update(attributes)
        entry = {"call": call, "attributes": dict(attributes), "at": utc_now_iso()}
        contact["history"].append(entry)
        self._counts[call] += 1
        return contact_json(contact)
