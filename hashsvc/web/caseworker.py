"""Caseworkers' pages (a charity's key): the org's cases, opening a case (the victim's secret
is shown once), a case's counts, one-time registration links for the intake page, and a new
secret for the victim (after a confirming screen; the old one stops working, shown once).

Each page leaves the API's audit entry ("case.list", "case.create", "case.read",
"case.intake_link", "case.secret") through the API's own functions.
"""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request, url_for

from hashsvc import audit, victims
from hashsvc.api import state
from hashsvc.api.auth import own_page
from hashsvc.api.cases import _own_case, case_json, open_case
from hashsvc.api.errors import Conflict
from hashsvc.api.intake import make_link
from hashsvc.errors import HashsvcError
from hashsvc.store.models import Case
from hashsvc.web import bp, page


def _rows() -> list[dict[str, Any]]:
    """A page of the org's cases, newest first."""
    rows = own_page(Case, Case.created_at.desc(), Case.id.desc())
    return [{"case_id": c.id, "case_ref": c.ref,
             "state": "withdrawn" if c.withdrawn_at else "active",
             "created_at": audit.utc_text(c.created_at)} for c in rows]


@bp.get("/charity")
def charity_home() -> Any:
    """The caseworkers' first page."""
    return redirect(url_for("web.cases"), 303)


@bp.get("/charity/cases")
@page("charity", action="case.list", target="case")
def cases() -> Any:
    """The org's cases, and the form to open one."""
    return render_template("web/cases.html", cases=_rows())


@bp.post("/charity/cases")
@page("charity", action="case.create", target="case")
def create_case() -> Any:
    """Open a case; the victim's secret is on the answer only."""
    ref = request.form.get("case_ref", "").strip()
    consent = request.form.get("features_consent") == "yes"
    try:
        made = open_case({"case_ref": ref or None, "features_consent": consent})
    except HashsvcError as exc:
        status = 409 if isinstance(exc, Conflict) else 400
        return render_template("web/cases.html", cases=None, error=str(exc), case_ref=ref,
                               features_consent=consent), status
    return render_template("web/case_created.html", made=made)


@bp.get("/charity/cases/<int:case_id>")
@page("charity", action="case.read", target="case")
def case(case_id: int) -> Any:
    """A case: state, bank counts, and the form for a registration link."""
    return render_template("web/case.html", case=case_json(_own_case(case_id)))


@bp.post("/charity/cases/<int:case_id>/intake-link")
@page("charity", action="case.intake_link", target="case")
def create_intake_link(case_id: int) -> Any:
    """Make a one-time registration link (as ``POST /v1/cases/{id}/intake-links``); the link
    is on the answer only."""
    row = _own_case(case_id)
    link = make_link(row)
    link["url"] = request.host_url.rstrip("/") + link["url"]
    return render_template("web/case.html", case=case_json(row), link=link)


@bp.post("/charity/cases/<int:case_id>/secret")
@page("charity", action="case.secret", target="case")
def new_secret(case_id: int) -> Any:
    """First a confirming screen; with ``confirm=yes``, give the victim a new secret as ``POST
    /v1/cases/{id}/secret`` does (the old one stops working, any lockout ends); the secret is on
    the answer only."""
    row = _own_case(case_id)
    if request.form.get("confirm") != "yes":
        g.pop("audit", None)  # nothing changed yet: the confirmed request is the audited one
        return render_template("web/secret_confirm.html", case=case_json(row))
    secret = victims.set_secret(state().store, row.id)
    return render_template("web/case.html", case=case_json(_own_case(case_id)),
                           new_secret=secret)
