"""`/ops/contacts/<id>/erase`: the operator page's erasure button (docs/data-protection.md#erasure).

Behind the same sign-in and CSRF check as every other form of the page (service/ops/page.py's
guard); the form asks who requested it and why, and a confirmation box, because an erasure
cannot be undone. It runs the function the admin API and the CLI run (relay/ledger/erasure.py).
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from relay.errors import ProblemError
from relay.ledger import erasure
from schemas.admin import ErasureBodySchema

log = logging.getLogger(__name__)
CONFIRMATION = "erase"


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule(
        "/contacts/<ledger_id:contact_id>/erase",
        "erase_contact",
        erase_contact,
        methods=["POST"],
    )


def erase_contact(contact_id: int) -> ResponseReturnValue:
    back = redirect(url_for("ops.contact", contact_id=contact_id), 303)
    if request.form.get("confirm") != CONFIRMATION:
        flash("Not erased: tick the box to confirm that the erasure cannot be undone.", "warn")
        return back
    try:
        body = ErasureBodySchema().load(
            {key: request.form.get(key, "").strip() for key in ("requested_by", "reason")}
        )
    except ValidationError as exc:
        fields = ", ".join(sorted(exc.messages_dict))
        flash(f"Not erased: fill in who asked and why ({fields}).", "warn")
        return back
    runtime = current_app.extensions["consent_relay"]
    try:
        with runtime.sessions() as session:
            result = erasure.erase_contact(
                session,
                erasure.ErasureRequest(contact_id, body["requested_by"], body["reason"]),
                pseudonym_key=runtime.settings.privacy.pseudonym_key,
                lease_seconds=runtime.settings.delivery.lease_seconds,
            )
    except ProblemError as exc:
        flash(f"Not erased: {exc}", "warn")
        return back
    if result is None:
        abort(404, f"No contact {contact_id}.")
    log.info("ops: contact erased contact_id=%d erasure=%s", contact_id, result.erasure_id)
    flash(
        f"Contact {contact_id} erased: {result.decisions} decision(s) kept without the address, "
        f"{result.settled_deliveries} pending delivery(ies) settled and never sent.",
        "ok",
    )
    return back
