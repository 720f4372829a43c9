"""One-time registration links and the victims' intake page's registration.

``POST /v1/cases/{id}/intake-links`` (a charity's key) makes a link for one of its cases; the
answer holds the only copy of the code, as ``/intake#code=...``. ``POST /v1/intake`` (no key:
``{"code", "lines"}``, or the code in ``X-Intake-Code``) registers hash lines made on the
victim's device under that case, once: the lines are checked exactly as ``POST
/v1/cases/{id}/hashes`` checks them, then the code is used up atomically and the lines
registered. An unknown code is a 401, an expired or used one a 410; every attempt is audited
("intake.register", the case as target when the code names one) and limited per client
address like the victims' status endpoints.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, g, jsonify, request

from hashsvc import audit, intake
from hashsvc.api import state
from hashsvc.api.auth import PendingAudit, client_address, requires
from hashsvc.api.cases import _own_case, checked_lines, register_checked
from hashsvc.api.errors import Conflict, error_response, json_body
from hashsvc.errors import InputError
from hashsvc.store.models import Case

#: The charity's route (per-key limits, like every case route).
bp = Blueprint("intake_links", __name__)
#: The victim's route (no key; limited per client address by create_app).
public_bp = Blueprint("intake", __name__)

#: Where a link points; the code rides in the fragment, which browsers never send.
PAGE = "/intake"


@bp.post("/cases/<int:case_id>/intake-links")
@requires("charity", action="case.intake_link", target="case")
def create_link(case_id: int) -> Any:
    """Make a one-time registration link for the case (valid ``intake_link_hours``); the
    answer holds the only copy of the code."""
    return jsonify(make_link(_own_case(case_id))), 201


def make_link(case: Case) -> dict[str, Any]:
    """A new one-time link for the caller's case (the API and the caseworkers' page); 409 for
    a withdrawn case. The code is on the answer only, never in the audit entry."""
    if case.withdrawn_at is not None:
        raise Conflict(f"case {case.id} was withdrawn; open a new case")
    link = intake.create_link(state().store, case.id, state().settings.intake_link_hours)
    expires = audit.utc_text(link.expires_at)
    g.audit.details.update({"link_id": link.link_id, "expires_at": expires})
    return {"case_id": case.id, "code": link.code, "url": f"{PAGE}#code={link.code}",
            "expires_at": expires}


def _other_origin() -> bool:
    """The request names a page of another web site as its origin (browsers send "null"
    under Referrer-Policy no-referrer, which says nothing either way)."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc != request.host


@public_bp.post("/intake")
def register() -> Any:
    """Register hash lines under the case a one-time code opens; the code is used up."""
    g.audit = PendingAudit("intake.register", "case", None,
                           {"via": "intake", "address": client_address()})
    if _other_origin():
        g.audit.details["denied"] = "origin"
        return error_response(403, "forbidden", "requests from another web origin are "
                              "refused")
    body = json_body(dict, required=False)
    code = request.headers.get("X-Intake-Code") or body.get("code")
    if not isinstance(code, str) or not code.strip():
        return error_response(401, "unauthorized", "send the one-time code of your "
                              "registration link")
    check = intake.check_code(state().store, code)
    if check.link_id is not None:
        g.audit.details["link_id"] = check.link_id
    if check.refused == "unknown":
        g.audit.details["denied"] = "unknown_code"
        return error_response(401, "unauthorized", "this code is not a registration link's; "
                              "check it, or ask your charity for a new link")
    if check.case_id is None:
        g.audit.details["denied"] = f"{check.refused}_code"
        return error_response(410, "gone", f"this registration link has {check.refused}; "
                              "ask your charity for a new link")
    g.audit.target_id = str(check.case_id)
    lines = body.get("lines")
    if not isinstance(lines, list):
        raise InputError('the body must be {"code": CODE, "lines": [hash lines]}')
    with state().store.sessions() as session:
        case = session.get(Case, check.case_id)
    assert case is not None
    good, skipped = checked_lines(case, lines)
    assert check.link_id is not None
    if not intake.use_link(state().store, check.link_id):
        g.audit.details["denied"] = "used_code"
        return error_response(410, "gone", "this registration link has been used; ask your "
                              "charity for a new link")
    try:
        summary = register_checked(case, good, skipped)
    except BaseException:
        intake.release_link(state().store, check.link_id)
        raise
    g.audit.details.update({"lines": len(lines), **summary})
    return jsonify(summary)
