"""The scan report: one JSON document built from the store's records of a scan."""

from __future__ import annotations

import json
from collections import Counter
from itertools import groupby
from typing import Any

from hashsvc import __version__
from hashsvc.decode import DECODE_VERSION
from hashsvc.locators import Locator
from hashsvc.store import FEATURES, Store

REPORT_FORMAT = 1


def _iso(value: Any) -> str | None:
    """ISO 8601 text of a datetime (or None)."""
    return value.isoformat() if value is not None else None


def build_report(store: Store, scan_id: str) -> dict[str, Any]:
    """The report of a scan: counts, matches (one per file), errors and skips."""
    scan = store.get_scan(scan_id)
    counts = store.scan_counts(scan_id)
    by_status = counts["by_status"]
    errors = store.scan_problems(scan_id)
    matches = [match_object(group) for _, group in groupby(
        store.scan_matches(scan_id), key=lambda mf: mf[1].locator_hash)]
    return {
        "report_format": REPORT_FORMAT,
        "scan_id": scan.id,
        "source": scan.source,
        "label": scan.label,
        "state": scan.state,
        "started_at": _iso(scan.started_at),
        "finished_at": _iso(scan.finished_at),
        "tool": {"name": "hashsvc", "version": __version__, "decode_version": DECODE_VERSION},
        "settings": scan.settings,
        "bank_cursor": scan.bank_cursor,
        "files_scanned": sum(by_status.values()),
        "images_hashed": by_status.get("hashed", 0),
        "containers": by_status.get("container", 0),
        "other_files": by_status.get("not-image", 0),
        "matched_files": counts["matched_files"],
        "matches": matches,
        "errors": [{"path": p.path, "stage": p.stage, "message": p.message}
                   for p in errors],
        "skipped": counts["skipped"],
        "evidence": [evidence_object(e) for e in store.scan_evidence(scan_id)],
        "coverage": {
            "files_examined": sum(by_status.values()),
            # What was not examined, by reason: counted skips, and errors by the failed stage.
            "not_examined": {**{reason or "other": n for reason, n in counts["skipped"].items()},
                             **{f"error:{stage}": n for stage, n in
                                sorted(Counter(p.stage for p in errors).items())}},
        },
    }


def evidence_object(row: Any) -> dict[str, Any]:
    """One evidence item of a report: what it is, its hashes and what was found in it."""
    return {"path": row.path, "locator": Locator.from_key(row.locator).to_list(),
            "kind": row.kind, "size": row.size, "sha256": row.sha256, "md5": row.md5,
            "stored_md5": row.stored_md5, "verified": row.verified,
            "details": row.details or {}}


def match_object(group: Any) -> dict[str, Any]:
    """One report entry for a matched file: its best match first, then any others."""
    # Best first: the smallest distance, or for local features the most inliers.
    rows = sorted(group, key=lambda mf: (-mf[0].distance if mf[0].algorithm == FEATURES
                                         else mf[0].distance, mf[0].image_id))
    best, file = rows[0]
    locator = Locator.from_key(file.locator)
    out = {
        # The candidate's id for review (hashsvc review, POST /v1/scans/{id}/review).
        "match_id": file.id,
        "path": file.path,
        "locator": locator.to_list(),
        # Where the file was found: a deleted file-system entry, and an S3 object's version.
        "deleted": locator.attr("deleted") == "true",
        "version_id": locator.attr("version_id"),
        "sha256": file.sha256,
        "md5": file.md5,
        "size": file.size,
        "format": file.format,
        "from_thumbnail": file.from_thumbnail,
        "case": best.case_ref,
        "algorithm": best.algorithm,
        # For the local-feature stage ("orb") there is no distance: the strength of the match
        # is the number of keypoints a single geometric transform maps onto the registration.
        "distance": None if best.algorithm == FEATURES else best.distance,
        "distances": best.distances,
        "variant": best.variant,
        "other_matches": [{"case": m.case_ref, "algorithm": m.algorithm, "distance": m.distance,
                           "distances": m.distances} for m, _ in rows[1:]],
    }
    if best.video:
        # A match to or from a video: the frames that made it (docs/video.md).
        out["video"] = best.video
    return out


def write_report(report: dict[str, Any], path: str) -> None:
    """Write a report as indented UTF-8 JSON ('-' for standard output)."""
    text = json.dumps(report, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    if path == "-":
        import sys

        sys.stdout.write(text)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
