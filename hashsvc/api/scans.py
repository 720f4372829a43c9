"""Forensic units' endpoints: start a scan of evidence, follow it, cancel it, read its results.

A scan's source must lie inside one of the configured evidence roots once symlinks are
resolved. A forensic org sees only its own scans; another org's scan id answers exactly like
an unknown one, so ids do not leak between forces.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask import Blueprint, g, jsonify
from werkzeug.exceptions import ServiceUnavailable

from hashsvc import audit
from hashsvc.api import state
from hashsvc.api.auth import current_principal, not_found_for_other_org, own_page, requires
from hashsvc.api.errors import Conflict, json_body
from hashsvc.errors import InputError, NotFound
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.store.models import Scan, utcnow

bp = Blueprint("scans", __name__)

#: States after which a scan changes no more.
FINISHED = ("done", "failed", "cancelled")


def evidence_roots(settings: Settings) -> list[str]:
    """The configured evidence roots, resolved."""
    return [os.path.realpath(r) for r in settings.evidence_roots.split(":") if r.strip()]


def resolve_source(settings: Settings, source: Any) -> str:
    """The real path of a scan source inside an evidence root; InputError for anything else.

    ``..`` is refused outright, and the check runs on the path with every symlink resolved, so
    a link inside a root that points out of it is refused too. Whether a path outside the
    roots exists is never revealed.
    """
    if not isinstance(source, str) or not source or "\0" in source or len(source) > 4096:
        raise InputError("source must be a path")
    if source.startswith("s3://"):
        raise InputError("s3:// sources are not supported yet")
    if source.startswith("file://"):
        source = source[len("file://"):]
    elif "://" in source:
        raise InputError("source must be a path inside an evidence root")
    if not os.path.isabs(source) or ".." in source.split("/"):
        raise InputError("source must be an absolute path without '..'")
    roots = evidence_roots(settings)
    if not roots:
        raise InputError("this server has no evidence roots configured")
    real = os.path.realpath(str(source))
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise InputError("source is not inside an evidence root")
    if not os.path.exists(real):
        raise InputError("source does not exist")
    return real


def _own_scan(scan_id: str) -> Scan:
    """The caller's scan; 404 for an unknown id and for another org's."""
    try:
        uuid.UUID(scan_id)
    except ValueError:
        raise NotFound("no such scan") from None
    with state().store.sessions() as session:
        scan = session.get(Scan, scan_id)
    if scan is None:
        raise NotFound(f"no scan {scan_id}")
    if scan.org_id != current_principal().org_id:
        raise not_found_for_other_org("scan", scan_id)
    return scan


def scan_json(scan: Scan) -> dict[str, Any]:
    """A scan's state and times (from one read of its row) and its progress counters."""
    from hashsvc.store.progress import scan_progress

    # Counted after the row was read: a finished state always comes with its final counts.
    progress = scan_progress(state().store, scan.id)
    return {"scan_id": scan.id, "label": scan.label, "source": scan.source,
            "state": scan.state,
            **{k: progress[k] for k in ("files_enumerated", "files_done", "images_hashed",
                                        "candidates", "errors")},
            "created_at": audit.utc_text(scan.created_at),
            "started_at": audit.utc_text(scan.started_at),
            "finished_at": audit.utc_text(scan.finished_at), "error": scan.error}


@bp.post("/scans")
@requires("forensic", action="scan.create", target="scan")
def create_scan() -> Any:
    """Record a scan of ``source`` for the caller's org and queue it; 202 with its id."""
    from workers.jobs import start_scan

    body = json_body(dict)
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 1000
                              or "\0" in label):
        raise InputError("label must be text of at most 1000 characters")
    settings = state().settings
    given = body.get("source")
    if isinstance(given, str) and "\0" not in given:
        g.audit.details["source"] = given[:1024]  # refused attempts are worth seeing too
    source = resolve_source(settings, given)
    g.audit.details["source"] = source
    scan_id = state().store.create_scan(source, label,
                                        {"matching": settings.matching_summary()},
                                        org_id=current_principal().org_id)
    g.audit.target_id = scan_id
    try:
        start_scan(settings, scan_id)
    except Exception as exc:  # the queue is down: record why on the scan, tell the caller
        with state().store.sessions.begin() as session:
            row = session.get(Scan, scan_id)
            assert row is not None
            row.state, row.finished_at = "failed", utcnow()
            row.error = f"could not be queued: {type(exc).__name__}"
        raise ServiceUnavailable("the job queue is unavailable; try again later") from exc
    return jsonify({"scan_id": scan_id}), 202


@bp.get("/scans")
@requires("forensic", action="scan.list", target="scan")
def list_scans() -> Any:
    """The caller's org's scans, newest first, a page at a time."""
    rows = own_page(Scan, Scan.created_at.desc(), Scan.id)
    return jsonify({"scans": [{
        "scan_id": s.id, "label": s.label, "source": s.source, "state": s.state,
        "created_at": audit.utc_text(s.created_at), "started_at": audit.utc_text(s.started_at),
        "finished_at": audit.utc_text(s.finished_at), "error": s.error} for s in rows]})


@bp.get("/scans/<scan_id>")
@requires("forensic", action="scan.read", target="scan")
def get_scan(scan_id: str) -> Any:
    """The scan's state and progress counters."""
    return jsonify(scan_json(_own_scan(scan_id)))


@bp.post("/scans/<scan_id>/cancel")
@requires("forensic", action="scan.cancel", target="scan")
def cancel(scan_id: str) -> Any:
    """Ask a running or queued scan to stop; 409 once it has finished."""
    from workers.jobs import cancel_scan

    scan = _own_scan(scan_id)
    if scan.state in FINISHED:
        raise Conflict(f"scan {scan_id} has already finished ({scan.state})")
    cancel_scan(state().settings, scan_id)
    return jsonify({"scan_id": scan_id, "cancel_requested": True}), 202


@bp.get("/scans/<scan_id>/matches")
@requires("forensic", action="scan.matches", target="scan")
def matches(scan_id: str) -> Any:
    """The scan's matched files, one object each, exactly as in its report."""
    _own_scan(scan_id)
    found = build_report(state().store, scan_id)["matches"]
    g.audit.details["matches"] = len(found)
    return jsonify({"scan_id": scan_id, "matches": found})


@bp.get("/scans/<scan_id>/errors")
@requires("forensic", action="scan.errors", target="scan")
def errors(scan_id: str) -> Any:
    """Files the scan could not read or decode, and counts of files skipped on purpose."""
    _own_scan(scan_id)
    report = build_report(state().store, scan_id)
    return jsonify({"scan_id": scan_id, "errors": report["errors"],
                    "skipped": report["skipped"]})


@bp.get("/scans/<scan_id>/report")
@requires("forensic", action="scan.report", target="scan")
def report(scan_id: str) -> Any:
    """The scan's full JSON report (as ``hashsvc scan --report`` writes it)."""
    _own_scan(scan_id)
    return jsonify(build_report(state().store, scan_id))
