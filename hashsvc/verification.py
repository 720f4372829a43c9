"""Verification re-scans: after a device was wiped or cleaned, show what of a deletion report
is gone and what is still there, in a signed report linked to the original.

The original deletion report must carry a valid signature (of this deployment's keys where it
has any). Each of its file lines becomes one entry with the line's ``sha256`` and a
``"status"``: ``"present"`` when the re-scan found a file with the same SHA-256 anywhere in the
source, or still found a match at the same locator; ``"gone"`` otherwise. Matches of the
re-scan that are none of the original files are listed as ``new_matches``. The document also
carries the media's wipe records (NIST SP 800-88 fields, as the analyst entered them).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import select

from hashsvc.deletion_report import (deployment_trusted_keys, locator_key, plain, tool_section,
                                     visible)
from hashsvc.errors import InputError
from hashsvc.signing import document_sha256, verify_document
from hashsvc.store import Store
from hashsvc.store.models import ScanFile, WipeRecord

REPORT_TYPE = "verification"
REPORT_FORMAT = 1

#: The fields of a wipe record (NIST SP 800-88 Rev. 1, appendix G, "certificate of
#: sanitization"), as ``hashsvc wipe-record`` and the API take them.
WIPE_FIELDS = ("medium", "method", "technique", "tool", "tool_version",
               "verification_method", "verification_result", "operator", "verifier", "date",
               "notes")
WIPE_METHODS = ("clear", "purge", "destroy")
WIPE_REQUIRED = ("medium", "method", "tool", "verification_method", "verification_result",
                 "operator", "date")


def checked_original(envelope: Any, settings: Any,
                     trusted: Iterable[Any] | None = None) -> Mapping[str, Any]:
    """The original deletion report's document, once its signature has been checked."""
    keys = list(trusted) if trusted is not None else deployment_trusted_keys(settings)
    verdict = verify_document(envelope, keys)
    if not verdict.valid:
        raise InputError("the original report does not verify: " + verdict.summary())
    doc = envelope["document"]
    if doc.get("report_type") != "deletion":
        raise InputError("--verify-against needs a deletion report, not a "
                         f"{visible(doc.get('report_type'))} report")
    return doc


def add_wipe_record(store: Store, scan_id: str, fields: Mapping[str, Any], recorded_by: str
                    ) -> dict[str, Any]:
    """Record how a medium of a scan's evidence was sanitised; returns the record."""
    unknown = sorted(set(fields) - set(WIPE_FIELDS))
    if unknown:
        raise InputError(f"unknown wipe record fields: {', '.join(unknown)}")
    clean = {k: str(v).strip() for k, v in fields.items() if v is not None and str(v).strip()}
    missing = [k for k in WIPE_REQUIRED if k not in clean]
    if missing:
        raise InputError(f"a wipe record needs {', '.join(missing)}")
    if clean["method"] not in WIPE_METHODS:
        raise InputError(f"method must be one of {', '.join(WIPE_METHODS)} (NIST SP 800-88)")
    if any(len(v) > 2000 or "\0" in v for v in clean.values()):
        raise InputError("wipe record fields must be text of at most 2000 characters")
    store.get_scan(scan_id)
    with store.sessions.begin() as session:
        row = WipeRecord(scan_id=scan_id, fields=clean, recorded_by=recorded_by)
        session.add(row)
        session.flush()
        return wipe_json(row)


def wipe_json(row: WipeRecord) -> dict[str, Any]:
    """A wipe record as reports carry it."""
    return {"fields": dict(row.fields), "recorded_by": row.recorded_by,
            "recorded_at": row.recorded_at.astimezone(UTC).isoformat().replace("+00:00", "Z")}


def wipe_records(store: Store, scan_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The wipe records of the given scans, oldest first."""
    with store.sessions() as session:
        rows = session.scalars(select(WipeRecord).where(WipeRecord.scan_id.in_(list(scan_ids)))
                               .order_by(WipeRecord.id)).all()
    return [{"scan_id": r.scan_id, **wipe_json(r)} for r in rows]


def _paths_by_sha256(store: Store, scan_id: str, wanted: set[str]) -> dict[str, list[str]]:
    """Where the re-scan found files with each of the wanted SHA-256 values."""
    found: dict[str, list[str]] = {}
    items = sorted(wanted)
    with store.sessions() as session:
        for start in range(0, len(items), 500):
            rows = session.execute(select(ScanFile.sha256, ScanFile.path).where(
                ScanFile.scan_id == scan_id, ScanFile.sha256.in_(items[start:start + 500]))
            ).all()
            for sha, path in rows:
                found.setdefault(sha, []).append(path)
    return {sha: sorted(paths) for sha, paths in found.items()}


def build_verification_document(store: Store, original: Mapping[str, Any],
                                original_sha256: str, original_key_id: str,
                                scan_report: Mapping[str, Any], context: Mapping[str, Any]
                                ) -> dict[str, Any]:
    """The (unsigned) verification document of a re-scan against an original deletion report."""
    lines = list(original.get("files") or [])
    shas = {str(line["sha256"]) for line in lines if line.get("sha256")}
    present_by_sha = _paths_by_sha256(store, str(scan_report["scan_id"]), shas)
    matches = list(scan_report.get("matches") or [])
    match_at = {locator_key(m.get("locator")): m for m in matches}
    entries, accounted = [], set()
    for line in lines:
        key = locator_key(line.get("locator"))
        at_same_place = match_at.get(key)
        places = list(present_by_sha.get(str(line.get("sha256")), []))
        if at_same_place is not None:
            accounted.add(key)
            places = sorted(set(places) | {at_same_place["path"]})
        entries.append({
            "n": line.get("n"), "path": line.get("path"), "where_text": line.get("where_text"),
            "locator": line.get("locator"), "sha256": line.get("sha256"),
            "md5": line.get("md5"), "status": "present" if places else "gone",
            "present_at": places})
    for m in matches:
        if m.get("sha256") in shas:
            accounted.add(locator_key(m.get("locator")))
    new = [plain({"path": m["path"], "locator": m["locator"], "sha256": m.get("sha256"),
                  "case": m.get("case"), "algorithm": m.get("algorithm"),
                  "distance": m.get("distance"), "distances": m.get("distances")})
           for m in matches if locator_key(m.get("locator")) not in accounted]
    examiner = context.get("examiner")
    if not examiner:
        raise InputError("a verification report needs the examiner's name")
    gone = sum(1 for e in entries if e["status"] == "gone")
    return plain({
        "report_type": REPORT_TYPE,
        "report_format": REPORT_FORMAT,
        "report_id": str(context.get("report_id") or uuid.uuid4()),
        "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "scan_id": scan_report.get("scan_id"),
        "refers_to": {"report_id": original.get("report_id"),
                      "document_sha256": original_sha256, "key_id": original_key_id,
                      "scan_id": original.get("scan_id"),
                      "exhibit": (original.get("case") or {}).get("exhibit")},
        "case": {**(original.get("case") or {}), "examiner": examiner,
                 "org": context.get("org") or (original.get("case") or {}).get("org")},
        "evidence": {"source": scan_report.get("source"), "label": scan_report.get("label"),
                     "items": scan_report.get("evidence") or []},
        "tool": tool_section(scan_report, context),
        "files": entries,
        "new_matches": new,
        "summary": {"files": len(entries), "gone": gone, "present": len(entries) - gone,
                    "new_matches": len(new),
                    "statement": (
                        f"Of the {len(entries)} files of the original report, {gone} were not "
                        f"found on re-scan and {len(entries) - gone} were; "
                        f"{len(new)} other matching files were found.")},
        "coverage": scan_report.get("coverage") or {},
        "wipe_records": list(context.get("wipe_records") or []),
    })


def verification_envelope(store: Store, settings: Any, original_envelope: Any, scan_id: str,
                          context: Mapping[str, Any], trusted: Iterable[Any] | None = None
                          ) -> dict[str, Any]:
    """The signed verification report of re-scan ``scan_id`` against a deletion report."""
    from hashsvc.report import build_report
    from hashsvc.signing import deployment_key, sign_document

    original = checked_original(original_envelope, settings, trusted)
    report = build_report(store, scan_id)
    if report.get("state") != "done":
        raise InputError(f"scan {scan_id} is {report.get('state')}, not done")
    records = wipe_records(store, [s for s in (original.get("scan_id"), scan_id) if s])
    doc = build_verification_document(
        store, original, document_sha256(original_envelope),
        original_envelope["signature"]["key_id"], report,
        {**context, "wipe_records": records})
    return sign_document(doc, deployment_key(settings))


def s3_deletions(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The object versions a deletion report's confirmed lines name: bucket, key, version id.

    Only a report of an ``s3://`` source qualifies; each line must name its bucket and key.
    """
    source = str((document.get("evidence") or {}).get("source") or "")
    if document.get("report_type") != "deletion" or not source.startswith("s3://"):
        raise InputError("deletions are carried out only for deletion reports of s3:// sources")
    planned = []
    for line in document.get("files") or []:
        links = line.get("locator") or []
        bucket = next((link["name"] for link in links if link.get("kind") == "s3"), None)
        obj = next((link for link in links if link.get("kind") == "s3-object"), None)
        if bucket is None or obj is None or "name_hex" in obj:
            raise InputError(f"line {line.get('n')} names no S3 object version")
        version = (obj.get("attrs") or {}).get("version_id")
        planned.append({"n": line.get("n"), "bucket": bucket, "key": obj["name"],
                        "version_id": version, "sha256": line.get("sha256")})
    return planned


def delete_s3_versions(planned: Sequence[Mapping[str, Any]], execute: bool,
                       record: Any) -> list[dict[str, Any]]:
    """Delete each planned object version (only with ``execute``); ``record(result)`` is
    called for every one, so each deletion is audited as it happens."""
    from botocore.exceptions import BotoCoreError, ClientError

    from hashsvc.sources.s3 import make_client

    client = make_client(4) if execute else None
    results = []
    for item in planned:
        result = {**item, "action": "delete" if execute else "dry-run"}
        if client is not None:
            args = {"Bucket": item["bucket"], "Key": item["key"]}
            if item["version_id"]:
                args["VersionId"] = item["version_id"]
            try:
                response = client.delete_object(**args)
                result.update(outcome="deleted",
                              deleted_version=response.get("VersionId"),
                              delete_marker=bool(response.get("DeleteMarker")))
            except (ClientError, BotoCoreError) as exc:
                result.update(outcome="failed", error=str(exc)[:500])
        else:
            result["outcome"] = "not done (dry run: --execute deletes)"
        record(result)
        results.append(result)
    return results
