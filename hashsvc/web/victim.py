"""The victims' pages, which need no sign-in: the intake page (a one-time code) and the status
page (the case reference and secret).

The intake page hashes photos in the browser (static/hashing.js) and sends hash lines only, to
``POST /v1/intake``; the server never sees a photo. The status page posts the reference and
secret to the routes below, which call the API's own check (per-case lockout, audit entry
"status.read", "status.withdraw" or "status.consent" with ``via: "web"``); withdrawal needs a
second, confirming screen. The victim can also give or withdraw consent to keeping local
features (withdrawing erases them at once), as ``POST /v1/status/consent`` does. Nothing of
the case is kept in the browser: the secret rides in the forms of pages that are never cached.
"""

from __future__ import annotations

from typing import Any

from flask import g, render_template, request
from flask.typing import ResponseReturnValue

from hashsvc import victims
from hashsvc.api import state
from hashsvc.errors import InputError
from hashsvc.web import bp, public_bp


@bp.get("/intake")
def intake() -> Any:
    """Choose photos, hash them here, see exactly what will be sent, send it."""
    settings = state().settings
    return render_template("web/intake.html", max_lines=10_000,
                           pdq_threshold=settings.pdq_threshold)


@bp.get("/status")
def status() -> Any:
    """The form for the case reference and secret."""
    return render_template("web/status.html")


def _credentials() -> dict[str, str]:
    """The reference and secret the form sent (trimmed)."""
    return {"case_ref": request.form.get("case_ref", "").strip()[:200],
            "secret": request.form.get("secret", "").strip()[:200]}


def _refused(exc: Any, body: dict[str, str]) -> ResponseReturnValue:
    """The status form again, with why the API's check refused the credentials."""
    response = exc.response
    message = (response.get_json(silent=True) or {}).get("message", "refused")
    if response.status_code == 401:
        message = "That case reference and secret do not match. Check them and try again."
    elif response.status_code == 429:
        message = ("Too many wrong secrets were tried for this case, so it is locked for a "
                   "while. Try again later, or ask your charity for a new secret.")
    page = render_template("web/status.html", error=message, case_ref=body["case_ref"])
    headers = {k: v for k, v in response.headers.items() if k == "Retry-After"}
    return page, response.status_code, headers


@public_bp.post("/status")
def status_post() -> Any:
    """Check the reference and secret (lockout and audit as the API's) and show the status."""
    from hashsvc.api.victims import _Refused, _victim_case

    body = _credentials()
    try:
        case_id = _victim_case("status.read", dict(body), via="web")
    except _Refused as exc:
        return _refused(exc, body)
    return render_template("web/status_result.html", status=victims.status(state().store,
                                                                          case_id), **body)


@public_bp.post("/status/withdraw")
def withdraw_post() -> Any:
    """First the confirmation screen; with ``confirm=yes``, the withdrawal itself."""
    from hashsvc.api.victims import _Refused, _victim_case, withdraw_case

    body = _credentials()
    if request.form.get("confirm") != "yes":
        return render_template("web/withdraw_confirm.html", **body)
    try:
        case_id = _victim_case("status.withdraw", dict(body), via="web")
    except _Refused as exc:
        return _refused(exc, body)
    result = withdraw_case(case_id)
    return render_template("web/status_result.html", status=result, withdrawn_now=True, **body)


#: The consent form's answers, as ``POST /v1/status/consent`` takes them (``features``).
CONSENT_ANSWERS = {"yes": True, "no": False}


@public_bp.post("/status/consent")
def consent_post() -> Any:
    """Give (``features=yes``) or withdraw (``features=no``: erased at once) consent to keeping
    local features, with the API's check, lockout and audit entry ("status.consent")."""
    from hashsvc.api.victims import _Refused, _victim_case

    body = _credentials()
    try:
        case_id = _victim_case("status.consent", dict(body), via="web")
    except _Refused as exc:
        return _refused(exc, body)
    features = CONSENT_ANSWERS.get(request.form.get("features", ""))
    if features is None:
        raise InputError("features must be true or false")
    try:
        erased = victims.set_consent(state().store, case_id, features)
    except InputError as exc:  # a withdrawn case takes no new consent
        return render_template("web/status_result.html",
                               status=victims.status(state().store, case_id),
                               consent_error=str(exc), **body), 400
    g.audit.details.update({"features_consent": features, "features_erased": erased})
    return render_template("web/status_result.html",
                           status=victims.status(state().store, case_id),
                           consent_now=features, features_erased=erased, **body)
