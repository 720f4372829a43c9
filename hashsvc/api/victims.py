"""Victims' endpoints: no API key, the case reference and secret a charity handed over.

``GET /v1/status`` shows the case's status (counts only); ``POST /v1/status/withdraw``
withdraws the whole case; ``POST /v1/status/consent`` records or withdraws consent to keeping
local features. Credentials come as HTTP Basic (reference as user name, secret as password) or,
on the POSTs, as ``{"case_ref", "secret"}`` in the body.

Guessing is stopped twice: per client address by flask-limiter (``status_rate_limit``) and per
case by a lockout after ``status_max_failures`` wrong secrets in a row, during which even the
right secret is refused with 429 and Retry-After. Every attempt, right or wrong, leaves an
audit entry; a lockout leaves one more.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from hashsvc import audit, victims
from hashsvc.api import state
from hashsvc.api.auth import PendingAudit, client_address
from hashsvc.api.errors import error_response, json_body
from hashsvc.errors import InputError

bp = Blueprint("victims", __name__)


class _Refused(Exception):
    """A refusal already rendered as a response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _credentials(body: dict[str, Any] | None) -> tuple[str, str]:
    """The reference and secret of the request."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username is not None:
        return auth.username, auth.password or ""
    if body is not None and isinstance(body.get("case_ref"), str) \
            and isinstance(body.get("secret"), str):
        return body["case_ref"], body["secret"]
    raise _Refused(_unauthorized("send the case reference and secret (HTTP Basic, or "
                                 '{"case_ref", "secret"} in the body)'))


def _unauthorized(message: str) -> Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Basic realm="hashsvc case status"'
    return response


def _victim_case(action: str, body: dict[str, Any] | None = None, via: str = "victim") -> int:
    """The case the credentials open, or a refusal; the attempt is audited either way."""
    g.audit = PendingAudit(action, "case", None, {"via": via, "address": client_address()})
    ref, secret = _credentials(body)
    settings = state().settings
    check = victims.check_secret(state().store, ref, secret, settings.status_max_failures,
                                 settings.status_lockout_seconds)
    g.audit.target_id = None if check.target is None else str(check.target)
    if check.locked_now:
        audit.record(state().store, action="status.lockout", org_id=None, key_id=None,
                     target_type="case", target_id=str(check.target),
                     details={"failures": check.failures, "address": client_address(),
                              "locked_seconds": check.locked_for})
    if check.locked_for:
        g.audit.details["denied"] = "locked"
        response = error_response(429, "locked", "too many wrong secrets for this case; try "
                                  "again later or ask your charity for a new secret")
        response.headers["Retry-After"] = str(check.locked_for)
        raise _Refused(response)
    if check.case_id is None:
        g.audit.details["denied"] = "wrong_secret"
        raise _Refused(_unauthorized("unknown case reference or wrong secret"))
    return check.case_id


@bp.errorhandler(_Refused)
def _refused(exc: _Refused) -> Response:
    return exc.response


@bp.get("/status")
def status() -> Any:
    """The case's status: active hashes, platform matches and takedown outcomes by platform,
    deletion reports issued (a count)."""
    case_id = _victim_case("status.read")
    return jsonify(victims.status(state().store, case_id))


@bp.post("/status/withdraw")
def withdraw() -> Any:
    """Withdraw the whole case: every hash stops matching within seconds, everywhere, and the
    registration is erased but for a tombstone. Repeating it changes nothing."""
    body = json_body(dict, required=False)
    return jsonify(withdraw_case(_victim_case("status.withdraw", body)))


def withdraw_case(case_id: int) -> dict[str, Any]:
    """Withdraw a case the victim's credentials opened (the API and the web status page);
    its status afterwards, with how many images were withdrawn now."""
    case = victims.case_by_id(state().store, case_id)
    withdrawn = 0 if case.withdrawn_at else state().store.withdraw_case(case.ref)
    g.audit.details["images_withdrawn"] = withdrawn
    return {**victims.status(state().store, case_id), "images_withdrawn": withdrawn}


@bp.post("/status/consent")
def consent() -> Any:
    """``{"features": false}`` withdraws consent to local features and erases them at once;
    ``true`` gives it (features registered later are kept)."""
    body = json_body(dict)
    case_id = _victim_case("status.consent", body)
    if not isinstance(body.get("features"), bool):
        raise InputError("features must be true or false")
    erased = victims.set_consent(state().store, case_id, body["features"])
    g.audit.details.update({"features_consent": body["features"], "features_erased": erased})
    return jsonify({**victims.status(state().store, case_id), "features_erased": erased})
