"""Forensic units' endpoints: start a scan of evidence, follow it, cancel it, read its results.

A scan's source must lie inside one of the configured evidence roots once symlinks are
resolved, or be an ``s3://`` URI of one of the allowed buckets. A forensic org sees only its
own scans; another org's scan id answers exactly like an unknown one, so ids do not leak
between forces.
"""

from __future__ import annotations

import os
import unicodedata
import uuid
from typing import Any, Mapping

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import ServiceUnavailable

from hashsvc import audit
from hashsvc.api import state
from hashsvc.api.auth import current_principal, not_found_for_other_org, own_page, requires
from hashsvc.api.errors import Conflict, json_body
from hashsvc.errors import InputError, NotFound, SourceError
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
    """The real path of a scan source inside an evidence root, or an allowed ``s3://`` URI
    (see :func:`resolve_s3_source`); InputError for anything else.

    ``..`` is refused outright, and the check runs on the path with every symlink resolved, so
    a link inside a root that points out of it is refused too. Whether a path outside the
    roots exists is never revealed.
    """
    if not isinstance(source, str) or not source or "\0" in source or len(source) > 4096:
        raise InputError("source must be a path")
    if source.startswith("s3://"):
        return resolve_s3_source(settings, source)
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


def resolve_s3_source(settings: Settings, source: str) -> str:
    """An ``s3://bucket/prefix`` source in its normal form, for a bucket in ``s3_buckets``.

    The bucket name must follow S3's naming rules and be listed exactly; the prefix may hold
    no ``..`` segment and no control character. Whether the bucket exists is not checked
    here (the API host may hold no AWS credentials): a scan of a missing bucket fails with
    the reason.
    """
    from hashsvc.sources.s3 import parse_s3_uri  # imports boto3: only when it is needed

    allowed = settings.s3_bucket_list
    if not allowed:
        raise InputError("this server scans no S3 bucket: none is allowed (setting s3_buckets)")
    try:
        bucket, prefix = parse_s3_uri(source)
    except SourceError as exc:
        raise InputError(str(exc)) from None
    if ".." in prefix.split("/") or any(
            unicodedata.category(ch).startswith("C") for ch in prefix):
        raise InputError("an s3:// prefix may not contain '..' or control characters")
    if bucket not in allowed:
        raise InputError(f"S3 bucket {bucket!r} is not one this server may scan "
                         "(setting s3_buckets)")
    return f"s3://{bucket}/{prefix}"


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
    return {**scan_row(scan),
            **{k: progress[k] for k in ("files_enumerated", "files_done", "images_hashed",
                                        "candidates", "errors")}}


def scan_row(scan: Scan) -> dict[str, Any]:
    """A scan's identity, state and times, as its row holds them."""
    return {"scan_id": scan.id, "label": scan.label, "source": scan.source,
            "state": scan.state, "created_at": audit.utc_text(scan.created_at),
            "started_at": audit.utc_text(scan.started_at),
            "finished_at": audit.utc_text(scan.finished_at), "error": scan.error}


def report_context() -> dict[str, Any]:
    """Who a signed report names: the caller's org and the ``?examiner=`` (required), with
    the optional ``?exhibit=``, ``?court=`` and ``?order_ref=``."""
    examiner = request.args.get("examiner", "").strip()
    if not examiner or len(examiner) > 200:
        raise InputError("examiner (the name the report gives) is required, at most 200 "
                         "characters")
    context: dict[str, Any] = {"org": current_principal().org_name, "examiner": examiner}
    for name in ("exhibit", "court", "order_ref"):
        value = request.args.get(name)
        if value is not None:
            if len(value) > 500 or "\0" in value:
                raise InputError(f"{name} must be text of at most 500 characters")
            context[name] = value
    return context


@bp.post("/scans")
@requires("forensic", action="scan.create", target="scan")
def create_scan() -> Any:
    """Record a scan of ``source`` for the caller's org and queue it; 202 with its id."""
    return jsonify({"scan_id": start_new_scan(json_body(dict))}), 202


def start_new_scan(body: Mapping[str, Any]) -> str:
    """Record and queue a scan of ``{"source", "label"?, "verify_against"?}`` for the caller's
    org (the API and the analysts' web page); returns its id."""
    from workers.jobs import start_scan

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
    recorded: dict[str, Any] = {"matching": settings.matching_summary()}
    original = body.get("verify_against")
    if original is not None:  # a re-scan after a wipe: the original report is checked now
        from hashsvc.verification import checked_original

        document = checked_original(original, settings)
        recorded["verify_against"] = original
        g.audit.details["verify_against"] = document.get("report_id")
    scan_id = state().store.create_scan(source, label, recorded,
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
    return scan_id


@bp.get("/scans")
@requires("forensic", action="scan.list", target="scan")
def list_scans() -> Any:
    """The caller's org's scans, newest first, a page at a time."""
    rows = own_page(Scan, Scan.created_at.desc(), Scan.id)
    return jsonify({"scans": [scan_row(s) for s in rows]})


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


REPORT_TYPES = {"json": "application/json", "html": "text/html; charset=utf-8",
                "pdf": "application/pdf", "vics": "application/json"}


@bp.get("/scans/<scan_id>/report")
@requires("forensic", action="scan.report", target="scan")
def report(scan_id: str) -> Any:
    """The scan's full JSON report (as ``hashsvc scan --report`` writes it); with ``?format=``
    json, html, pdf or vics, the signed deletion report of its confirmed matches."""
    scan = _own_scan(scan_id)
    fmt = request.args.get("format")
    if fmt is None:
        return jsonify(build_report(state().store, scan_id))
    return Response(deletion_report_bytes(scan, fmt), mimetype=REPORT_TYPES[fmt])


def deletion_report_bytes(scan: Scan, fmt: Any) -> bytes:
    """The signed deletion report of the scan's confirmed matches in ``fmt``, naming the
    caller's org and the ``?examiner=`` (the API and the analysts' web page)."""
    from hashsvc.deletion_report import deletion_envelope_for_scan, rendering_bytes
    from hashsvc.review import confirmed_matches

    if fmt not in REPORT_TYPES:
        raise InputError(f"format must be one of {', '.join(REPORT_TYPES)}")
    context = report_context()
    envelope = deletion_envelope_for_scan(state().store, state().settings, scan.id, context,
                                          confirmed_matches)
    g.audit.details.update({"format": fmt, "files": len(envelope["document"]["files"]),
                            "key_id": envelope["signature"]["key_id"]})
    return rendering_bytes(envelope, fmt)


@bp.get("/scans/<scan_id>/verification")
@requires("forensic", action="scan.verification", target="scan")
def verification(scan_id: str) -> Any:
    """The signed verification report of a re-scan started with ``verify_against``: each file
    of the original report gone or present, and new matches (``?examiner=`` required)."""
    return jsonify(verification_report(_own_scan(scan_id)))


def verification_report(scan: Scan) -> dict[str, Any]:
    """The signed verification report of a re-scan (the API and the analysts' web page)."""
    from hashsvc.verification import verification_envelope

    original = (scan.settings or {}).get("verify_against")
    if original is None:
        raise Conflict(f"scan {scan.id} was not started with verify_against")
    envelope = verification_envelope(state().store, state().settings, original, scan.id,
                                     report_context())
    g.audit.details.update({k: envelope["document"]["summary"][k]
                            for k in ("files", "gone", "present", "new_matches")})
    return envelope


@bp.post("/scans/<scan_id>/wipe-records")
@requires("forensic", action="scan.wipe_record", target="scan")
def add_wipe(scan_id: str) -> Any:
    """Record how a medium of the scan's evidence was sanitised (NIST SP 800-88 fields)."""
    from hashsvc.verification import add_wipe_record

    _own_scan(scan_id)
    body = json_body(dict)
    principal = current_principal()
    record = add_wipe_record(state().store, scan_id, body,
                             f"{principal.org_name} (key {principal.prefix})")
    g.audit.details.update({"medium": record["fields"].get("medium"),
                            "method": record["fields"].get("method")})
    return jsonify({"scan_id": scan_id, **record}), 201


@bp.get("/scans/<scan_id>/candidates")
@requires("forensic", action="scan.candidates", target="scan")
def list_candidates(scan_id: str) -> Any:
    """The scan's matched files with every distance, the locator and the current decision."""
    from hashsvc.review import candidates, summary

    _own_scan(scan_id)
    items = candidates(state().store, scan_id)
    g.audit.details["count"] = len(items)
    return jsonify({"scan_id": scan_id, "candidates": items, "summary": summary(items)})


@bp.post("/scans/<scan_id>/review")
@requires("forensic", action="scan.review", target="scan")
def review_candidates(scan_id: str) -> Any:
    """Confirm or reject candidates: ``{"match_ids": [...], "decision": "confirmed" |
    "rejected", "reason": TEXT, "reviewer": NAME}``; a rejection needs a reason."""
    _own_scan(scan_id)
    return jsonify({"scan_id": scan_id, "changed": review_decision(scan_id, json_body(dict))})


def review_decision(scan_id: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Record ``{"match_ids", "decision", "reason"?, "reviewer"}`` on the caller's scan (the
    API and the analysts' web page); returns what changed."""
    from hashsvc.review import Reviewer, decide

    ids, decision = body.get("match_ids"), body.get("decision")
    reviewer, reason = body.get("reviewer"), body.get("reason")
    if not isinstance(ids, list) or not ids or len(ids) > 10_000:
        raise InputError("match_ids must be a list of 1 to 10,000 match ids")
    if not isinstance(reviewer, str):
        raise InputError("reviewer (the analyst's name) is required")
    if reason is not None and not isinstance(reason, str):
        raise InputError("reason must be text")
    if not isinstance(decision, str):
        raise InputError("decision must be confirmed or rejected")
    principal = current_principal()
    changed = decide(state().store, scan_id, ids, decision,
                     Reviewer(reviewer, principal.org_id, principal.key_id), reason)
    g.audit.details.update({"decision": decision, "changed": len(changed)})
    return changed


@bp.get("/scans/<scan_id>/candidates/<int:match_id>/thumbnail")
@requires("forensic", action="scan.thumbnail", target="scan")
def thumbnail(scan_id: str, match_id: int) -> Any:
    """A small JPEG of the evidence file, made now from the evidence and never stored;
    blurred unless ``?reveal=true`` (each reveal is audited)."""
    scan = _own_scan(scan_id)
    reveal = request.args.get("reveal", "false").lower() in ("1", "true", "yes")
    response = Response(thumbnail_bytes(scan, match_id, reveal), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    return response


def thumbnail_bytes(scan: Scan, match_id: int, reveal: bool) -> bytes:
    """A candidate's thumbnail, made now and never stored; blurred unless ``reveal`` (the API
    and the analysts' web page; the request's audit entry says which)."""
    from hashsvc.thumbnails import evidence_thumbnail

    g.audit.details.update({"match_id": match_id, "revealed": reveal})
    return evidence_thumbnail(state().store, state().settings, scan, match_id, reveal)
