"""Forensic analysts' pages (a forensic key): the org's scans with live progress, starting a
scan (or a verification re-scan), cancelling a queued or running scan (after a confirming
screen), a scan's candidates with their distances and a blurred thumbnail, confirming and
rejecting them, the signed deletion report (JSON, HTML, PDF), the wipe records of the scan's
media (NIST SP 800-88 fields) and the verification report of a re-scan.

Every page calls the API's own functions (``hashsvc.api.scans``, and the same core functions as
its views: ``workers.jobs.cancel_scan``, ``hashsvc.verification.add_wipe_record``) and leaves
the API's audit entry ("scan.list", "scan.create", "scan.read", "scan.candidates",
"scan.thumbnail", "scan.review", "scan.report", "scan.verification", "scan.cancel",
"scan.wipe_record"), with ``details.via = "web"``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import (Response, flash, g, jsonify, redirect, render_template, request, session,
                   url_for)

from hashsvc.api import state
from hashsvc.api.auth import current_principal, own_page
from hashsvc.api.scans import (FINISHED, _own_scan, deletion_report_bytes, evidence_roots,
                               review_decision, scan_json, start_new_scan, thumbnail_bytes,
                               verification_report)
from hashsvc.errors import HashsvcError, InputError
from hashsvc.store.models import Scan
from hashsvc.web import bp, page

#: File name endings of the report downloads.
EXTENSIONS = {"json": "json", "html": "html", "pdf": "pdf", "vics": "vics.json"}
#: The report form's fields, as the API's report_context reads them.
REPORT_FIELDS = ("format", "examiner", "exhibit", "court", "order_ref")


@bp.get("/analyst")
def analyst_home() -> Any:
    """The analysts' first page."""
    return redirect(url_for("web.scans"), 303)


@bp.get("/analyst/scans")
@page("forensic", action="scan.list", target="scan")
def scans() -> Any:
    """The org's scans, newest first, each with its progress (updated live by progress.js)."""
    rows = own_page(Scan, Scan.created_at.desc(), Scan.id)
    return render_template("web/scans.html", scans=[scan_json(s) for s in rows],
                           finished=FINISHED)


@bp.get("/analyst/scans/new")
@page("forensic")
def new_scan() -> Any:
    """The form to start a scan (or a verification re-scan)."""
    return render_template("web/scan_new.html", roots=evidence_roots(state().settings),
                           form={}, errors={})


@bp.post("/analyst/scans/new")
@page("forensic", action="scan.create", target="scan")
def new_scan_post() -> Any:
    """Start a scan as ``POST /v1/scans`` does; then its page."""
    form = {"source": request.form.get("source", "").strip(),
            "label": request.form.get("label", "").strip()}
    body: dict[str, Any] = {"source": form["source"], "label": form["label"] or None}
    errors: dict[str, str] = {}
    upload = request.files.get("verify_against")
    if upload is not None and upload.filename:
        try:
            body["verify_against"] = json.loads(upload.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            errors["verify_against"] = "This file is not a signed deletion report (not JSON)."
    if not errors:
        try:
            scan_id = start_new_scan(body)
        except InputError as exc:
            field = ("verify_against" if "verify_against" in body
                     and "report" in str(exc) else "source")
            errors[field] = str(exc)
        else:
            flash("The scan was started.", "ok")
            return redirect(url_for("web.scan", scan_id=scan_id), 303)
    return render_template("web/scan_new.html", roots=evidence_roots(state().settings),
                           form=form, errors=errors), 400


def _scan_page(scan: Scan, errors: dict[str, str] | None = None, status: int = 200,
               wipe_form: dict[str, str] | None = None) -> Any:
    """A scan's page: its progress (with "Cancel scan" while it is queued or running), once
    done its candidates and report forms, and its wipe records with the form for one more."""
    from hashsvc.review import candidates, summary
    from hashsvc.verification import WIPE_METHODS, WIPE_REQUIRED, wipe_records

    info = scan_json(scan)
    items: list[dict[str, Any]] = []
    if scan.state == "done":
        items = candidates(state().store, scan.id)
        if g.audit.action == "scan.candidates":
            g.audit.details["count"] = len(items)
    reveal = request.args.get("reveal", type=int)
    return render_template(
        "web/scan.html", scan=info, candidates=items, summary=summary(items),
        finished=FINISHED, reveal=reveal, errors=errors or {},
        verify=(scan.settings or {}).get("verify_against") is not None,
        reviewer=session.get("reviewer", ""), args=request.args,
        cancel_requested=bool(scan.cancel_requested),
        wipes=wipe_records(state().store, [scan.id]), wipe_form=wipe_form or {},
        wipe_methods=WIPE_METHODS, wipe_required=WIPE_REQUIRED), status


@bp.get("/analyst/scans/<scan_id>")
@page("forensic", action="scan.read", target="scan")
def scan(scan_id: str) -> Any:
    """The scan's page (audited as "scan.candidates" once it lists candidates)."""
    row = _own_scan(scan_id)
    if row.state == "done":
        g.audit.action = "scan.candidates"
    return _scan_page(row)


@bp.get("/analyst/scans/<scan_id>/progress.json")
@page("forensic", action="scan.read", target="scan")
def scan_progress(scan_id: str) -> Any:
    """The scan's state and counters (as ``GET /v1/scans/{id}``), for the live progress."""
    return jsonify(scan_json(_own_scan(scan_id)))


@bp.get("/analyst/scans/<scan_id>/candidates/<int:match_id>/thumbnail")
@page("forensic", action="scan.thumbnail", target="scan")
def thumbnail(scan_id: str, match_id: int) -> Any:
    """A candidate's thumbnail, made now from the evidence, blurred unless ``?reveal=1``."""
    row = _own_scan(scan_id)
    reveal = request.args.get("reveal", "0").lower() in ("1", "true", "yes")
    return Response(thumbnail_bytes(row, match_id, reveal), mimetype="image/jpeg")


def _review_field(message: str) -> str:
    """Which field of the review form an error is about."""
    for field in ("reviewer", "reason"):
        if field in message:
            return field
    return "review"


@bp.post("/analyst/scans/<scan_id>/review")
@page("forensic", action="scan.review", target="scan")
def review(scan_id: str) -> Any:
    """Confirm or reject the chosen candidates (one row's button, or the ticked rows)."""
    row = _own_scan(scan_id)
    reviewer = request.form.get("reviewer", "").strip()
    reason = request.form.get("reason", "").strip() or None
    one = request.form.get("one", "")
    if one:
        match_id, _, decision = one.partition(":")
        ids: list[Any] = [match_id]
    else:
        ids, decision = request.form.getlist("match_id"), request.form.get("decision", "")
    if not ids:
        return _scan_page(row, {"review": "Tick at least one candidate first."}, 400)
    if reviewer:
        session["reviewer"] = reviewer[:200]
    try:
        changed = review_decision(row.id, {"match_ids": ids, "decision": decision,
                                           "reviewer": reviewer, "reason": reason})
    except HashsvcError as exc:
        text = str(exc)
        if "reviewer" in text:
            text = "Enter your name as the reviewer."
        elif "rejection needs a reason" in text:
            text = "A rejection needs a reason."
        return _scan_page(row, {_review_field(str(exc)): text}, 400)
    verb = "confirmed" if decision == "confirmed" else "rejected"
    flash(f"{len(changed)} candidate{'s' if len(changed) != 1 else ''} {verb}"
          + ("." if changed else " (no change: already decided so)."), "ok")
    return redirect(url_for("web.scan", scan_id=row.id) + "#candidates", 303)


@bp.post("/analyst/scans/<scan_id>/cancel")
@page("forensic", action="scan.cancel", target="scan")
def cancel(scan_id: str) -> Any:
    """First a confirming screen; with ``confirm=yes``, ask the scan to stop as ``POST
    /v1/scans/{id}/cancel`` does (409 once it has finished)."""
    from workers.jobs import cancel_scan

    row = _own_scan(scan_id)
    if row.state in FINISHED:
        return _scan_page(row, {"cancel": f"This scan has already finished ({row.state}): "
                                          "there is nothing to cancel."}, 409)
    if request.form.get("confirm") != "yes":
        g.pop("audit", None)  # nothing changed yet: the confirmed request is the audited one
        return render_template("web/scan_cancel.html", scan=scan_json(row))
    cancel_scan(state().settings, row.id)
    flash("Cancellation requested: the scan stops after the files it is reading now.", "ok")
    return redirect(url_for("web.scan", scan_id=row.id), 303)


def _wipe_form() -> dict[str, str]:
    """The wipe record fields the form sent (only those the API takes; nothing else)."""
    from hashsvc.verification import WIPE_FIELDS

    return {name: request.form.get(name, "") for name in WIPE_FIELDS}


@bp.post("/analyst/scans/<scan_id>/wipe-records")
@page("forensic", action="scan.wipe_record", target="scan")
def add_wipe(scan_id: str) -> Any:
    """Record how a medium of the scan's evidence was sanitised, as ``POST
    /v1/scans/{id}/wipe-records`` does (the same checks, recorder and audit details)."""
    from hashsvc.verification import add_wipe_record

    row = _own_scan(scan_id)
    form = _wipe_form()
    principal = current_principal()
    try:
        record = add_wipe_record(state().store, row.id, form,
                                 f"{principal.org_name} (key {principal.prefix})")
    except InputError as exc:
        return _scan_page(row, {"wipe": str(exc)}, 400, wipe_form=form)
    g.audit.details.update({"medium": record["fields"].get("medium"),
                            "method": record["fields"].get("method")})
    flash(f"The wipe record of {record['fields']['medium']} was saved.", "ok")
    return redirect(url_for("web.scan", scan_id=row.id) + "#wipe-records", 303)


def _without_empty_fields(endpoint: str, scan_id: str) -> Any | None:
    """A redirect to the same form's URL without its empty optional fields (which the API's
    report context would otherwise print), or None when there are none."""
    cleaned = {k: v for k, v in request.args.items() if v.strip()}
    if len(cleaned) == len(request.args):
        return None
    g.pop("audit", None)  # nothing was read: the redirected request is the audited one
    return redirect(url_for(endpoint, scan_id=scan_id, **cleaned), 303)


@bp.get("/analyst/scans/<scan_id>/report")
@page("forensic", action="scan.report", target="scan")
def report(scan_id: str) -> Any:
    """The signed deletion report of the confirmed candidates, as a download."""
    row = _own_scan(scan_id)
    again = _without_empty_fields("web.report", row.id)
    if again is not None:
        return again
    fmt = request.args.get("format", "pdf")
    try:
        data = deletion_report_bytes(row, fmt)
    except InputError as exc:
        return _scan_page(row, {"report": str(exc)}, 400)
    from hashsvc.api.scans import REPORT_TYPES

    response = Response(data, mimetype=REPORT_TYPES[fmt])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="deletion-report-{row.id[:8]}.{EXTENSIONS[fmt]}"')
    return response


@bp.get("/analyst/scans/<scan_id>/verification")
@page("forensic", action="scan.verification", target="scan")
def verification(scan_id: str) -> Any:
    """A re-scan's signed verification report: shown, or downloaded with ``?download=1``."""
    from hashsvc.api.errors import Conflict

    row = _own_scan(scan_id)
    again = _without_empty_fields("web.verification", row.id)
    if again is not None:
        return again
    try:
        envelope = verification_report(row)
    except (InputError, Conflict) as exc:
        return _scan_page(row, {"verification": str(exc)}, 409 if isinstance(exc, Conflict)
                          else 400)
    if request.args.get("download"):
        response = Response(json.dumps(envelope, indent=2, ensure_ascii=False) + "\n",
                            mimetype="application/json")
        response.headers["Content-Disposition"] = (
            f'attachment; filename="verification-report-{row.id[:8]}.json"')
        return response
    return render_template("web/verification.html", scan=scan_json(row),
                           document=envelope["document"], args=request.args)
