"""The deletion report: one signed document per scan of an evidence item, listing the files that
analysts confirmed as copies of registered images, for a court's deprivation order.

Pure functions over plain data, so that the review layer and the API can call them:

* :func:`build_deletion_document` — the document, from a scan report (``hashsvc.report``),
  the confirmed matches (each with its ``review``) and the case context;
* :func:`hashsvc.signing.sign_document` — the signed envelope (canonical JSON, Ed25519);
* :func:`render_html`, :func:`render_pdf`, :func:`render_vics` — the court bundle's renderings
  and a VICS-style export for forensic suites; :func:`write_rendering` writes any of them;
* :func:`deletion_envelope_for_scan` — all of it from the store, given the confirmed matches.

Every string that comes from evidence (file names, archive members, S3 keys, E01 headers) is
hostile: the renderings escape it (HTML), show control and direction-changing characters as
``<U+XXXX>`` instead of obeying them, and never interpret it. The canonical JSON is the signed
artefact; HTML and PDF say so and carry its SHA-256. See docs/deletion-report.md.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hashsvc import __version__
from hashsvc.errors import ConfigError, InputError
from hashsvc.locators import safe_name
from hashsvc.signing import (Verdict, document_sha256, load_envelope, public_keys_json,
                             sign_document, trusted_keys_from, verify_document)

REPORT_TYPE = "deletion"
#: Version of the deletion document's layout; a reader refuses one it does not know.
REPORT_FORMAT = 1
FORMATS = ("json", "html", "pdf", "vics")

#: Distributions whose versions the report records (importlib.metadata names).
LIBRARIES = ("pillow", "pillow-heif", "numpy", "pdqhash", "opencv-python-headless", "faiss-cpu",
             "pytsk3", "libewf-python", "av", "boto3", "py7zr", "pypdf", "cryptography",
             "fpdf2", "Jinja2")
#: Link kinds of archives and compressed streams: a file inside one is "in an archive".
ARCHIVE_KINDS = frozenset({"zip", "tar", "7z", "gzip", "bz2", "xz"})
#: Link kinds of pictures embedded in another file (thumbnails, images inside a PDF).
EMBEDDED_KINDS = frozenset({"exif-thumbnail", "heif-thumbnail", "pdf"})
#: Locator attributes that are times, and how the report names them.
TIME_ATTRS = {"mtime": "modified", "atime": "accessed", "ctime": "changed",
              "crtime": "created", "last_modified": "last modified (S3)",
              "original_creation_date": "created (export metadata)"}
REQUIRED_CONTEXT = ("org", "examiner")


# --- hostile text ---------------------------------------------------------------------------------

def json_text(text: str) -> tuple[str, str | None]:
    """A string canonical JSON can carry, and the hex of the raw bytes where it had to change
    (a name that was not UTF-8 arrives with lone surrogates; those become U+FFFD)."""
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    clean = "".join("\N{REPLACEMENT CHARACTER}" if "\ud800" <= ch <= "\udfff" else ch
                    for ch in text)
    return clean, raw.hex()


def plain(value: Any) -> Any:
    """A copy of a JSON-like value that canonical JSON accepts: tuples as lists, strings with
    lone surrogates replaced (keys too), datetimes as ISO text."""
    if isinstance(value, str):
        return json_text(value)[0]
    if isinstance(value, Mapping):
        return {json_text(str(k))[0]: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def visible(text: Any) -> str:
    """Text safe to show a person: control, format (bidi overrides, zero-width) and unassigned
    characters as ``<U+XXXX>``, so a hostile name cannot reorder or hide what is printed."""
    out = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        if cat[0] in "CZ" and ch != " ":
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    return "".join(out)


# --- locators -------------------------------------------------------------------------------------

def plain_link(link: Mapping[str, Any]) -> dict[str, Any]:
    """A locator link for the document: its name JSON-safe, with the raw bytes in hex where the
    name was not valid UTF-8."""
    name, raw_hex = json_text(str(link.get("name", "")))
    out: dict[str, Any] = {"kind": plain(link.get("kind")), "name": name}
    if raw_hex is not None:
        out["name_hex"] = raw_hex
    if link.get("attrs"):
        out["attrs"] = plain(dict(link["attrs"]))
    return out


def _attr(links: Sequence[Mapping[str, Any]], name: str) -> tuple[str | None, int | None]:
    """The innermost value of an attribute and the index of the link that has it."""
    for i in range(len(links) - 1, -1, -1):
        attrs = links[i].get("attrs") or {}
        if name in attrs:
            return attrs[name], i
    return None, None


def describe_location(links: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Where a file is, for people: device / partition / path / inode, or bucket / key /
    version id, the archives and the file it is embedded in, and one line of text."""
    where: dict[str, Any] = {}
    inside: list[dict[str, str]] = []
    parts: list[str] = []
    kinds = [str(link.get("kind")) for link in links]
    on_disk = any(k in ("partition", "tsk") for k in kinds)
    for i, link in enumerate(links):
        kind, name = kinds[i], json_text(str(link.get("name", "")))[0]
        attrs = link.get("attrs") or {}
        shown = safe_name(name)
        if kind == "fs" and i == 0 and on_disk:
            where["device"] = shown
            parts.append(f"device {shown}")
        elif kind == "fs" and i == 0:
            where["path"] = shown
            parts.append(shown)
        elif kind == "partition":
            where["partition"] = name
            extra = ", ".join(x for x in (attrs.get("type"), f"offset {attrs['offset']}"
                                          if attrs.get("offset") else None) if x)
            parts.append(f"partition {name}" + (f" ({extra})" if extra else ""))
        elif kind == "tsk":
            path = "/" + shown if shown != "(unnamed)" else shown
            where["path"] = path
            if attrs.get("inode") is not None:
                where["inode"] = attrs["inode"]
            parts.append(path + (f" (inode {attrs['inode']})" if attrs.get("inode") else ""))
        elif kind == "s3":
            where["bucket"] = name
            parts.append(f"bucket {name}")
        elif kind == "s3-object":
            # An S3 key is an identifier: kept exactly, not neutralised like a file name.
            where["key"] = name
            where["version_id"] = attrs.get("version_id")
            parts.append(f"object {name}" + (f" version {attrs['version_id']}"
                                             if attrs.get("version_id") else ""))
        elif kind in ARCHIVE_KINDS:
            inside.append({"kind": kind, "member": shown})
            parts.append(f"{kind} member {shown}")
        elif kind in EMBEDDED_KINDS:
            where["embedded"] = {"kind": kind, "name": shown}
            parts.append(("picture " if kind == "pdf" else "") + f"{kind} {shown}")
        else:
            inside.append({"kind": kind, "member": shown})
            parts.append(f"{kind} {shown}")
    if inside:
        where["inside"] = inside
    where["text"] = " > ".join(parts) or "(no locator)"
    return where


def _flags(links: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Allocated / deleted / embedded / in an archive, from the locator's link kinds and attrs."""
    kinds = [str(link.get("kind")) for link in links]
    deleted = any((link.get("attrs") or {}).get("deleted") == "true" for link in links)
    overwritten, _ = _attr(links, "overwritten_bytes")
    latest, _ = _attr(links, "latest")
    out: dict[str, Any] = {
        "allocated": not deleted,
        "deleted": deleted,
        "embedded": any(k in EMBEDDED_KINDS for k in kinds),
        "embedded_kind": next((k for k in reversed(kinds) if k in EMBEDDED_KINDS), None),
        "in_archive": any(k in ARCHIVE_KINDS for k in kinds),
        "archive_kinds": [k for k in kinds if k in ARCHIVE_KINDS],
        "overwritten_bytes": int(overwritten) if overwritten and overwritten.isdigit()
        else None,
    }
    if "s3-object" in kinds:
        out["current_version"] = latest == "true" if latest is not None else None
    return out


def _times(links: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], str | None]:
    """MAC times (and S3 / export dates) of the innermost link that has any, and which link
    that is when it is not the file itself (a zip member takes its zip file's times)."""
    for i in range(len(links) - 1, -1, -1):
        attrs = links[i].get("attrs") or {}
        found = {name: attrs[name] for name in TIME_ATTRS if attrs.get(name)}
        if found:
            of = None if i == len(links) - 1 else \
                safe_name(json_text(str(links[i].get("name", "")))[0])
            return plain(found), of
    return {}, None


# --- the document ---------------------------------------------------------------------------------

def locator_key(links: Any) -> str:
    """A locator chain (a report's list of links) as comparable text."""
    return json.dumps(links, ensure_ascii=True, sort_keys=True)


def _strength(match: Mapping[str, Any]) -> str:
    """How strong a match is, in words."""
    alg = match.get("algorithm")
    distances = match.get("distances") or {}
    if alg in ("sha256", "md5"):
        text = f"identical file ({alg} equal)"
    elif match.get("distance") is None:
        text = (f"{distances.get('orb_inliers')} keypoints verified by one geometric "
                f"transform ({alg})")
    else:
        text = f"{alg} distance {match.get('distance')}"
    video = match.get("video") or {}
    if video.get("matched_frames") is not None:
        text += f", {video['matched_frames']} matched frames"
    return text


def _finding(line: Mapping[str, Any]) -> str:
    """One sentence for the court or the provider about a confirmed file."""
    where, flags, match = line["where"], line, line["match"]
    registered = f"a copy of an image registered under case {match['case']} ({_strength(match)})"
    if "key" in where:
        version = where.get("version_id")
        sentence = (f"Object \u201c{where['key']}\u201d" +
                    (f" version \u201c{version}\u201d" if version else "") +
                    f" in bucket \u201c{where.get('bucket')}\u201d (s3) holds {registered}")
        if not version:
            sentence += "; the bucket listing gave no version id (versioning off)"
        elif flags.get("current_version") is False or flags["deleted"]:
            sentence += ("; it is a noncurrent version that a plain GET of the key no longer "
                         "returns, so deleting the key does not remove it: this version must "
                         "be deleted by its version id")
        else:
            sentence += "; it is the current version of the key"
        return sentence + "."
    state = []
    if flags["deleted"]:
        state.append("deleted")
    if flags["in_archive"]:
        state.append("inside an archive")
    if flags["embedded"]:
        state.append(f"embedded ({flags['embedded_kind']})")
    return (f"{line['where_text']}" + (f" [{', '.join(state)}]" if state else "") +
            f" holds {registered}.")


def _review(match: Mapping[str, Any]) -> dict[str, Any]:
    """The analyst's confirmation of a match; InputError where it is not one."""
    review = match.get("review")
    if not isinstance(review, Mapping):
        raise InputError(f"confirmed match {visible(match.get('path'))} carries no review")
    if review.get("decision") != "confirmed":
        raise InputError(f"match {visible(match.get('path'))} was not confirmed "
                         f"(decision {review.get('decision')!r}); only confirmed matches "
                         "go into a deletion report")
    for name in ("reviewer", "decided_at"):
        if not review.get(name):
            raise InputError(f"the review of {visible(match.get('path'))} has no {name}")
    return {"reviewer": plain(str(review["reviewer"])),
            "decided_at": plain(review["decided_at"]) if not isinstance(
                review["decided_at"], datetime) else review["decided_at"].isoformat(),
            "decision": "confirmed", "reason": plain(review.get("reason"))}


def file_line(number: int, match: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the report for one confirmed file."""
    links = [plain_link(link) for link in match.get("locator") or []]
    where = describe_location(links)
    times, times_of = _times(links)
    path, path_hex = json_text(str(match.get("path", "")))
    best = {"case": plain(match.get("case")), "algorithm": plain(match.get("algorithm")),
            "distance": match.get("distance"), "distances": plain(match.get("distances") or {}),
            "variant": plain(match.get("variant")),
            "other_matches": plain(match.get("other_matches") or [])}
    if match.get("video"):
        best["video"] = plain(match["video"])
    line: dict[str, Any] = {
        "n": number,
        "path": path,
        "where": {k: v for k, v in where.items() if k != "text"},
        "where_text": where["text"],
        "locator": links,
        **_flags(links),
        "hashed_from_thumbnail": bool(match.get("from_thumbnail")),
        "size": match.get("size"),
        "format": plain(match.get("format")),
        "times": times,
        "times_of": times_of,
        "sha256": match.get("sha256"),
        "md5": match.get("md5"),
        "match": best,
        "cases": sorted({str(c) for c in [best["case"]] + [
            m.get("case") for m in best["other_matches"]] if c}),
        "review": _review(match),
    }
    if path_hex is not None:
        line["path_hex"] = path_hex
    line["finding"] = _finding(line)
    return line


def _evidence_item(item: Mapping[str, Any]) -> dict[str, Any]:
    details = item.get("details") or {}
    stored = (details.get("e01") or {}).get("stored_hashes")
    if item.get("verified") is True:
        verification = (f"the media read has MD5 {item.get('md5')}, equal to the MD5 stored "
                        "at acquisition: verified")
    elif item.get("verified") is False:
        verification = (f"VERIFICATION FAILED: the media read has MD5 {item.get('md5')} but "
                        f"the acquisition stored {item.get('stored_md5')}")
    else:
        verification = "the item carries no stored hash to verify against"
    out = {"path": plain(item.get("path")), "kind": plain(item.get("kind")),
           "size": item.get("size"), "sha256": item.get("sha256"), "md5": item.get("md5"),
           "stored_md5": item.get("stored_md5"), "stored_hashes": plain(stored),
           "verified": item.get("verified"), "verification": verification,
           "locator": [plain_link(link) for link in item.get("locator") or []]}
    if details.get("e01"):
        e01 = details["e01"]
        out["acquisition"] = plain({"header": e01.get("header"), "segments": e01.get("segments"),
                                    "bytes_per_sector": e01.get("bytes_per_sector")})
    for key in ("bucket", "prefix", "endpoint", "region", "versioning", "listing",
                "listed_at"):
        if key in details:
            out.setdefault("listing", {})[key] = plain(details[key])
    return out


def _source_type(source: str, items: list[dict[str, Any]]) -> str:
    if source.startswith("s3://"):
        return "s3"
    if items:
        return "+".join(sorted({str(i.get("kind")) for i in items}))
    return "file-system path (folder or archive)"


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of the libraries that decode, hash, read evidence and sign."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return {"commit": None, "modified": None, "from": None}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None, "from": None}
    return {"commit": head or None, "modified": dirty, "from": "git checkout"}


def tool_commit(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The commit hashsvc was built from: HASHSVC_COMMIT (set by the image build), else the
    git checkout it runs from (with whether tracked files were modified), else unknown."""
    env = os.environ if env is None else env
    if env.get("HASHSVC_COMMIT"):
        return {"commit": env["HASHSVC_COMMIT"], "modified": None, "from": "HASHSVC_COMMIT"}
    return dict(_git_commit())


def decode_settings(settings: Any) -> dict[str, Any]:
    """The decode and limit settings of a deployment, for ``context["decode_settings"]``."""
    return {"heif_thumbnails": settings.heif_thumbnails,
            "max_image_pixels": settings.max_image_pixels,
            "max_video_seconds": settings.max_video_seconds,
            "video_time_budget": settings.video_time_budget,
            "max_file_bytes": settings.max_file_bytes,
            "max_archive_depth": settings.max_archive_depth,
            "max_archive_members": settings.max_archive_members,
            "max_expanded_bytes": settings.max_expanded_bytes, "max_ratio": settings.max_ratio}


def tool_section(report: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Tool provenance: version, build, libraries, algorithms, thresholds, decode settings."""
    from hashsvc.hashing import ALGORITHMS, EXACT_ALGORITHMS

    settings = report.get("settings") or {}
    matching = settings.get("matching") or {}
    return plain({
        "name": "hashsvc",
        "version": __version__,
        "build": context.get("build") or tool_commit(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "algorithms": {
            "exact": list(EXACT_ALGORITHMS),
            "perceptual": [{"name": a.name, "bits": a.bits} for a in ALGORITHMS],
            "local_features": "orb" if matching.get("features_stage") else None,
        },
        "decision_rule": matching.get("decision_rule"),
        "thresholds": matching.get("thresholds"),
        "matching": matching,
        "decode_version": (report.get("tool") or {}).get("decode_version"),
        # Not stored with the scan: the deployment's settings when the report was made.
        "decode_settings": context.get("decode_settings"),
        "scan_settings": settings,
        "scan_tool": report.get("tool"),
        "bank_cursor": report.get("bank_cursor"),
    })


def _case(report: Mapping[str, Any], files: list[dict[str, Any]],
          context: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_CONTEXT if not context.get(k)]
    exhibit = context.get("exhibit") or report.get("label")
    if not exhibit:
        missing.append("exhibit")
    if missing:
        raise InputError(f"a deletion report needs {', '.join(missing)}")
    refs = context.get("case_refs") or []
    if isinstance(refs, str):
        refs = [refs]
    return plain({
        "org": context["org"],
        "case_refs": list(refs),
        "matched_case_refs": sorted({c for line in files for c in line["cases"]}),
        "exhibit": exhibit,
        "examiner": context["examiner"],
        "court": context.get("court"),
        "order_ref": context.get("order_ref"),
    })


def _coverage(report: Mapping[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
    coverage = report.get("coverage") or {}
    found = int(report.get("matched_files") or len(report.get("matches") or []))
    return plain({
        "files_examined": coverage.get("files_examined", report.get("files_scanned")),
        "images_hashed": report.get("images_hashed"),
        "containers_opened": report.get("containers"),
        "other_files": report.get("other_files"),
        "not_examined": coverage.get("not_examined") or {},
        "skipped": report.get("skipped") or {},
        "errors": len(report.get("errors") or []),
        "error_list": report.get("errors") or [],
        "evidence": [{"path": e.get("path"), "kind": e.get("kind"),
                      "coverage": (e.get("details") or {}).get("coverage")}
                     for e in report.get("evidence") or []],
        "matches_found": found,
        "matches_confirmed": len(files),
        "matches_not_listed": max(found - len(files), 0),
        "statement": (
            f"{len(files)} of the {found} files the scan matched were confirmed by an analyst "
            "and are listed; matches rejected or not yet reviewed are not. Files not examined, "
            "with reasons, are counted here; a copy in them cannot be excluded."),
    })


def build_deletion_document(scan_report: Mapping[str, Any], confirmed: Sequence[Mapping[str, Any]],
                            context: Mapping[str, Any]) -> dict[str, Any]:
    """The deletion document of one scan (unsigned; :func:`hashsvc.signing.sign_document`).

    ``scan_report``: what :func:`hashsvc.report.build_report` returns. ``confirmed``: match
    objects of that report, each with ``review`` {"reviewer", "decided_at", "decision":
    "confirmed", "reason"}. ``context``: "org", "examiner" (required), "exhibit" (else the
    scan's label), "case_refs", "court", "order_ref"; optionally "report_id", "generated_at"
    (datetime or ISO text), "decode_settings" (:func:`decode_settings`), "build" (instead of
    :func:`tool_commit`), "refers_to" (a later
    report type's link to an earlier report: {"report_id", "document_sha256", "key_id"}).
    InputError for a confirmed match that is not a match of this scan, or listed twice.
    """
    known = {locator_key(m.get("locator")): i for i, m in
             enumerate(scan_report.get("matches") or [])}
    order: dict[int, Mapping[str, Any]] = {}
    for match in confirmed:
        idx = known.get(locator_key(match.get("locator")))
        if idx is None:
            raise InputError(f"confirmed match {visible(match.get('path'))} is not a match of "
                             f"scan {scan_report.get('scan_id')}")
        if idx in order:
            raise InputError(f"match {visible(match.get('path'))} is confirmed twice")
        order[idx] = match
    files = [file_line(n, order[idx]) for n, idx in enumerate(sorted(order), 1)]
    generated = context.get("generated_at") or datetime.now(UTC)
    if isinstance(generated, datetime):
        generated = generated.astimezone(UTC).isoformat().replace("+00:00", "Z")
    items = [_evidence_item(e) for e in scan_report.get("evidence") or []]
    source = str(scan_report.get("source", ""))
    doc: dict[str, Any] = {
        "report_type": REPORT_TYPE,
        "report_format": REPORT_FORMAT,
        "report_id": str(context.get("report_id") or uuid.uuid4()),
        "generated_at": generated,
        "scan_id": scan_report.get("scan_id"),
        "case": _case(scan_report, files, context),
        "evidence": plain({
            "source": source, "source_type": _source_type(source, items),
            "label": scan_report.get("label"),
            "scan": {"scan_id": scan_report.get("scan_id"), "state": scan_report.get("state"),
                     "started_at": scan_report.get("started_at"),
                     "finished_at": scan_report.get("finished_at")},
            "items": items,
        }),
        "tool": tool_section(scan_report, context),
        "files": files,
        "coverage": _coverage(scan_report, files),
    }
    if context.get("refers_to"):
        doc["refers_to"] = plain(dict(context["refers_to"]))
    if context.get("wipe_records"):
        doc["wipe_records"] = plain(list(context["wipe_records"]))
    return doc


# --- from the store -------------------------------------------------------------------------------

ConfirmedSource = Callable[[Any, str, Mapping[str, Any]], Sequence[Mapping[str, Any]]]


def deletion_envelope_for_scan(store: Any, settings: Any, scan_id: str,
                               context: Mapping[str, Any],
                               confirmed: ConfirmedSource | Sequence[Mapping[str, Any]],
                               key: Any = None) -> dict[str, Any]:
    """The signed deletion report of a scan, from the store.

    >>> REVIEW LAYER: pass ``confirmed`` as a callable ``(store, scan_id, scan_report) ->
    matches`` returning the report's match objects that analysts confirmed, each with its
    ``review`` (see :func:`build_deletion_document`), or as that list itself. ``key``: the
    signing key (default: the deployment's, ``settings.report_signing_key_path``).
    """
    from hashsvc.report import build_report
    from hashsvc.signing import deployment_key

    report = build_report(store, scan_id)
    if report.get("state") != "done":
        raise InputError(f"scan {scan_id} is {report.get('state')}, not done: a deletion "
                         "report needs a finished scan")
    from hashsvc.verification import wipe_records

    chosen = confirmed(store, scan_id, report) if callable(confirmed) else confirmed
    ctx = {"decode_settings": decode_settings(settings),
           "wipe_records": wipe_records(store, [scan_id]), **context}
    chosen = list(chosen)
    doc = build_deletion_document(report, chosen, ctx)
    envelope = sign_document(doc, key if key is not None else deployment_key(settings))
    # The victims' status counts the reports that named their images (nothing else of them).
    from hashsvc.signing import document_sha256
    from hashsvc.victims import record_issued_report

    record_issued_report(store, str(envelope["document"]["report_id"]), scan_id,
                         document_sha256(envelope), (m.get("case") for m in chosen))
    return envelope


# --- verification helpers -------------------------------------------------------------------------

def deployment_trusted_keys(settings: Any) -> list[dict[str, Any]] | None:
    """This deployment's published keys (as GET /v1/keys lists them), or None where it has no
    report key yet; never creates one."""
    body = public_keys_json(settings, create=False)
    return body["keys"] or None


def read_trusted_keys(paths: Iterable[str | os.PathLike[str]]) -> list[Any]:
    """Trusted keys from files: PEM, base64 of the raw key, or the JSON of GET /v1/keys."""
    out: list[Any] = []
    for path in paths:
        data = Path(path).read_bytes()
        stripped = data.strip()
        if stripped.startswith(b"{"):
            try:
                out.append(json.loads(stripped.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{path}: not JSON ({exc})") from exc
        else:
            out.append(stripped)
    trusted_keys_from(out)  # fail early on a bad key file
    return out


def verify_file(path: str | os.PathLike[str], trusted: Iterable[Any] | None) -> Verdict:
    """:func:`hashsvc.signing.verify_document` of a report file."""
    return verify_document(load_envelope(path), trusted)


# --- renderings -----------------------------------------------------------------------------------

def _document(envelope: Mapping[str, Any]) -> dict[str, Any]:
    doc = envelope.get("document") if isinstance(envelope, Mapping) else None
    if not isinstance(doc, Mapping) or not isinstance(envelope.get("signature"), Mapping):
        raise InputError("not a signed report envelope")
    if doc.get("report_format") != REPORT_FORMAT:
        raise InputError(f"unknown report format {doc.get('report_format')!r}")
    return dict(doc)


def _title(doc: Mapping[str, Any]) -> str:
    return {"deletion": "Deletion report",
            "verification": "Verification report"}.get(str(doc.get("report_type")),
                                                         f"Report ({doc.get('report_type')})")


def _yes_no(value: Any) -> str:
    return "–" if value is None else ("yes" if value else "no")


def _line_rows(line: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Label / value rows of one file line, as HTML and PDF show them."""
    w = line.get("where") or {}
    m = line.get("match") or {}
    status = ["deleted" if line.get("deleted") else "allocated"]
    if line.get("in_archive"):
        status.append("inside an archive (" + ", ".join(line.get("archive_kinds") or []) + ")")
    if line.get("embedded"):
        status.append(f"embedded ({line.get('embedded_kind')})")
    if line.get("overwritten_bytes"):
        status.append(f"{line['overwritten_bytes']} bytes overwritten")
    if line.get("current_version") is not None:
        status.append("current version" if line["current_version"] else "noncurrent version")
    rows: list[tuple[str, str]] = [("Path", str(line.get("path")))]
    for key, label in (("device", "Device"), ("partition", "Partition"), ("inode", "Inode"),
                       ("bucket", "Bucket"), ("key", "Key"), ("version_id", "Version id")):
        if w.get(key) is not None:
            rows.append((label, str(w[key])))
    rows.append(("Status", ", ".join(status)))
    rows.append(("Size", f"{line.get('size')} bytes" + (
        f", {line.get('format')}" if line.get("format") else "")))
    times = line.get("times") or {}
    if times:
        rows.append(("Times" + (f" (of {line['times_of']})" if line.get("times_of") else ""),
                     "; ".join(f"{TIME_ATTRS.get(k, k)} {v}" for k, v in times.items())))
    rows += [("SHA-256", str(line.get("sha256") or "not recorded by the scan")),
             ("MD5", str(line.get("md5") or "not recorded by the scan"))]
    dist = m.get("distances") or {}
    rows.append(("Match", f"case {m.get('case')}: {_strength(m)}" + (
        f" (variant {m.get('variant')})" if m.get("variant") else "")))
    if dist:
        rows.append(("Distances", ", ".join(f"{k} {v}" for k, v in sorted(dist.items()))))
    for other in m.get("other_matches") or []:
        rows.append(("Also matches", f"case {other.get('case')}: {other.get('algorithm')} "
                     f"distance {other.get('distance')}; " + ", ".join(
                         f"{k} {v}" for k, v in sorted((other.get("distances") or {}).items()))))
    r = line.get("review") or {}
    rows.append(("Confirmed by", f"{r.get('reviewer')} at {r.get('decided_at')}" + (
        f": {r.get('reason')}" if r.get("reason") else "")))
    rows.append(("Finding", str(line.get("finding"))))
    return rows


def _summary_rows(doc: Mapping[str, Any], envelope: Mapping[str, Any]
                  ) -> dict[str, list[tuple[str, str]]]:
    """The label / value rows of every section but the files, for HTML and PDF."""
    case, ev, tool = doc.get("case") or {}, doc.get("evidence") or {}, doc.get("tool") or {}
    cov, sig = doc.get("coverage") or {}, envelope.get("signature") or {}
    build = tool.get("build") or {}
    rows: dict[str, list[tuple[str, str]]] = {
        "Case and exhibit": [
            ("Organisation", str(case.get("org"))), ("Examiner", str(case.get("examiner"))),
            ("Exhibit", str(case.get("exhibit"))),
            ("Case references", ", ".join(case.get("case_refs") or []) or "–"),
            ("Matched case references", ", ".join(case.get("matched_case_refs") or []) or "–"),
            ("Court", str(case.get("court") or "–")),
            ("Order reference", str(case.get("order_ref") or "–")),
            ("Report id", str(doc.get("report_id"))), ("Scan id", str(doc.get("scan_id"))),
            ("Generated at", str(doc.get("generated_at")))],
        "Evidence integrity": [
            ("Source", str(ev.get("source"))), ("Source type", str(ev.get("source_type"))),
            ("Scan", (f"{(ev.get('scan') or {}).get('state')}, from "
                      f"{(ev.get('scan') or {}).get('started_at')} to "
                      f"{(ev.get('scan') or {}).get('finished_at')}"))],
        "Tool provenance": [
            ("hashsvc", f"{tool.get('version')}, commit {build.get('commit') or 'unknown'}" + (
                " (modified checkout)" if build.get("modified") else "")),
            ("Python", str(tool.get("python"))),
            ("Libraries", ", ".join(f"{k} {v}" for k, v in (tool.get("libraries") or {}).items()
                                    if v)),
            ("Decision rule", str(tool.get("decision_rule"))),
            ("Thresholds", ", ".join(f"{k} {v}" for k, v in
                                     (tool.get("thresholds") or {}).items())),
            ("Matching settings", json.dumps(tool.get("matching"), sort_keys=True,
                                             ensure_ascii=False)),
            ("Decode", f"decode version {tool.get('decode_version')}; " + json.dumps(
                tool.get("decode_settings"), sort_keys=True, ensure_ascii=False)),
            ("Bank version", f"change-feed cursor {tool.get('bank_cursor')}")],
        "Coverage": [
            ("Files examined", str(cov.get("files_examined"))),
            ("Images hashed", str(cov.get("images_hashed"))),
            ("Containers opened", str(cov.get("containers_opened"))),
            ("Not examined", "; ".join(f"{k}: {v}" for k, v in
                                       (cov.get("not_examined") or {}).items()) or "none"),
            ("Errors", str(cov.get("errors"))),
            ("Matches", (f"{cov.get('matches_found')} found, "
                         f"{cov.get('matches_confirmed')} confirmed and listed")),
            ("Statement", str(cov.get("statement")))],
        "Signature": [
            ("Algorithm", str(sig.get("algorithm"))), ("Key id", str(sig.get("key_id"))),
            ("Public key", str(sig.get("public_key"))), ("Signed at", str(sig.get("signed_at"))),
            ("Document SHA-256", document_sha256(envelope)),
            ("Signature", str(sig.get("value")))],
    }
    for item in ev.get("items") or []:
        stored = item.get("stored_hashes") or {}
        rows["Evidence integrity"] += [
            (f"Item {item.get('path')}", f"{item.get('kind')}, {item.get('size')} bytes"),
            ("  SHA-256", str(item.get("sha256"))), ("  MD5", str(item.get("md5"))),
            ("  Stored hashes", ", ".join(f"{k} {v}" for k, v in stored.items()) or "none"),
            ("  Verification", str(item.get("verification")))]
        header = (item.get("acquisition") or {}).get("header") or {}
        if header:
            rows["Evidence integrity"].append(
                ("  Acquisition", "; ".join(f"{k}: {v}" for k, v in header.items())))
    for e in cov.get("evidence") or []:
        c = e.get("coverage") or {}
        if c:
            rows["Coverage"].append((f"In {e.get('path')}", json.dumps(
                c, sort_keys=True, ensure_ascii=False)))
    return rows


VERIFY_TEXT = (
    "The signed artefact is the JSON file of this report; this rendering is a copy for reading. "
    "To check it: hashsvc report verify REPORT.json (exit status 0 when the signature holds; "
    "otherwise it names what changed), and compare the key id above with the keys the issuing "
    "deployment publishes at GET /v1/keys. The document SHA-256 above ties this rendering to "
    "that JSON: it is the SHA-256 of the document's canonical JSON (RFC 8785).")

_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{{ title }} {{ doc.report_id }}</title>
<style>
body{font-family:"DejaVu Sans",Arial,sans-serif;font-size:10pt;margin:2em;color:#000}
h1{font-size:16pt}h2{font-size:12.5pt;margin-top:1.6em;border-bottom:1px solid #444}
h3{font-size:10.5pt;margin:1.2em 0 .3em}
table{border-collapse:collapse;width:100%;margin:.3em 0}
th,td{border:1px solid #999;padding:3px 6px;vertical-align:top;text-align:left}
th{width:13em;background:#eee;font-weight:normal}
td{word-break:break-all}.note{font-size:9pt}
@media print{body{margin:0}.file{page-break-inside:avoid}}
</style></head><body>
<h1>{{ title }}</h1>
<p>Exhibit {{ exhibit }} &middot; report {{ doc.report_id }} &middot;
{{ files|length }} confirmed file(s)</p>
{% for section, rows in summary.items() if section != "Signature" %}
<h2>{{ section }}</h2>
<table>{% for label, value in rows %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}
</table>
{% if section == "Tool provenance" %}
<h2>Confirmed files</h2>
{% for line in files %}<div class="file">
<h3>{{ line.n }}. {{ line.where_text }}</h3>
<table>{% for label, value in rows_of(line) %}
<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
</div>{% else %}<p>No confirmed files.</p>{% endfor %}
{% endif %}
{% endfor %}
{% if errors %}<h3>Errors ({{ errors|length }})</h3>
<table>{% for e in errors %}
<tr><th>{{ e.stage }}</th><td>{{ e.path }}: {{ e.message }}</td></tr>{% endfor %}</table>
{% endif %}
<h2>Signature</h2>
<table>{% for label, value in summary["Signature"] %}
<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<p class="note">{{ verify_text }}</p>
</body></html>
"""


def _html_finalize(value: Any) -> Any:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return _yes_no(value)
    return visible(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=1)
def _html_template() -> Any:
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, finalize=_html_finalize, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.from_string(_HTML)


def render_html(envelope: Mapping[str, Any]) -> str:
    """A self-contained, printable HTML rendering of a signed report (every string escaped)."""
    doc = _document(envelope)
    return _html_template().render(
        title=_title(doc), doc=doc, files=doc.get("files") or [],
        exhibit=(doc.get("case") or {}).get("exhibit"),
        summary=_summary_rows(doc, envelope), rows_of=_line_rows, verify_text=VERIFY_TEXT,
        errors=(doc.get("coverage") or {}).get("error_list") or [])


# PDF ----------------------------------------------------------------------------------------------

#: Where a Unicode TrueType font may be found (matplotlib ships DejaVu; Debian fonts-dejavu-core).
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu",
             "/usr/share/fonts/TTF", "/usr/local/share/fonts", "/Library/Fonts")


def find_unicode_font() -> tuple[str, str | None] | None:
    """(regular, bold or None) paths of DejaVu Sans, or None where none is installed."""
    dirs = []
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        dirs.append(str(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"))
    dirs += list(FONT_DIRS)
    for folder in dirs:
        regular = Path(folder) / "DejaVuSans.ttf"
        if regular.is_file():
            bold = Path(folder) / "DejaVuSans-Bold.ttf"
            return str(regular), str(bold) if bold.is_file() else None
    return None


class _Pdf:
    """fpdf2 with a Unicode font where one is installed, and text made safe for it."""

    def __init__(self, title: str, doc_sha: str) -> None:
        from fpdf import FPDF

        pdf = FPDF(format="A4")
        pdf.set_margins(15, 15, 15)
        pdf.set_auto_page_break(True, margin=15)
        font = find_unicode_font()
        if font is not None:
            pdf.add_font("dejavu", "", font[0])
            pdf.add_font("dejavu", "B", font[1] or font[0])
            self.family, self.cmap = "dejavu", set(pdf.fonts["dejavu"].cmap)
        else:
            self.family, self.cmap = "helvetica", None
        self.replaced = 0
        pdf.set_title(title)
        pdf.set_creator(f"hashsvc {__version__}")
        pdf.set_subject(f"document sha256 {doc_sha}")
        footer = f"{title} - document SHA-256 {doc_sha}"
        page_font = self.family

        def _footer(p: Any = pdf) -> None:
            p.set_y(-11)
            p.set_font(page_font, "", 7)
            p.cell(0, 5, f"{footer} - page {p.page_no()}/{{nb}}", align="C")

        pdf.footer = _footer  # type: ignore[method-assign]
        pdf.add_page()
        self.pdf = pdf

    def text(self, value: Any) -> str:
        """Visible text the font can draw: other characters as <U+XXXX>."""
        out = []
        for ch in visible(value if value is not None else "–"):
            ok = ord(ch) in self.cmap if self.cmap is not None else ord(ch) < 256
            if ok:
                out.append(ch)
            else:
                out.append(f"<U+{ord(ch):04X}>")
                self.replaced += 1
        return "".join(out)

    def heading(self, text: str, size: float = 12.5) -> None:
        pdf = self.pdf
        pdf.ln(2)
        pdf.set_font(self.family, "B", size)
        pdf.multi_cell(0, size * 0.5, self.text(text), new_x="LMARGIN", new_y="NEXT",
                       align="L", wrapmode="WORD")
        pdf.ln(1)

    def para(self, text: str, size: float = 8.5) -> None:
        self.pdf.set_font(self.family, "", size)
        self.pdf.multi_cell(0, 4.2, self.text(text), new_x="LMARGIN", new_y="NEXT",
                            align="L", wrapmode="WORD")

    def rows(self, rows: Sequence[tuple[str, str]]) -> None:
        from fpdf.enums import WrapMode

        pdf = self.pdf
        pdf.set_font(self.family, "", 8.5)
        with pdf.table(col_widths=(28, 72), text_align="LEFT", first_row_as_headings=False,
                       wrapmode=WrapMode.WORD, line_height=4.2, padding=1) as table:
            for label, value in rows:
                row = table.row()
                row.cell(self.text(label))
                row.cell(self.text(value))


def render_pdf(envelope: Mapping[str, Any]) -> bytes:
    """The PDF rendering for the court bundle (fpdf2, embedding DejaVu Sans where installed)."""
    doc = _document(envelope)
    title = _title(doc)
    sha = document_sha256(envelope)
    out = _Pdf(title, sha)
    out.pdf.alias_nb_pages()
    files = doc.get("files") or []
    out.heading(title, 16)
    out.para(f"Exhibit {(doc.get('case') or {}).get('exhibit')} - report {doc.get('report_id')} "
             f"- {len(files)} confirmed file(s)", 9.5)
    summary = _summary_rows(doc, envelope)
    for section, rows in summary.items():
        if section == "Signature":
            continue
        out.heading(section)
        out.rows(rows)
        if section == "Tool provenance":
            out.heading("Confirmed files")
            if not files:
                out.para("No confirmed files.")
            for line in files:
                out.heading(f"{line.get('n')}. {line.get('where_text')}", 10)
                out.rows(_line_rows(line))
    errors = (doc.get("coverage") or {}).get("error_list") or []
    if errors:
        out.heading(f"Errors ({len(errors)})", 10.5)
        shown = errors[:500]
        out.rows([(str(e.get("stage")), f"{e.get('path')}: {e.get('message')}") for e in shown])
        if len(errors) > len(shown):
            out.para(f"... and {len(errors) - len(shown)} more errors, listed in the JSON.")
    out.heading("Signature")
    out.rows(summary["Signature"])
    out.para(VERIFY_TEXT)
    if out.cmap is None:
        out.para("No Unicode font was installed where this PDF was made: characters outside "
                 "Latin-1 are shown as <U+XXXX>; the JSON holds every name exactly.")
    elif out.replaced:
        out.para(f"{out.replaced} character(s) the embedded font cannot draw, and control or "
                 "direction-changing characters, are shown as <U+XXXX>; the JSON holds every "
                 "name exactly.")
    return bytes(out.pdf.output())


# VICS ---------------------------------------------------------------------------------------------

VICS_METADATA = "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml#Cases"


def render_vics(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """A VICS-style (Project VIC data model 1.3) JSON export of the confirmed files.

    One Media entry per distinct MD5 (as VICS keys media by hash), with one MediaFiles entry per
    confirmed file; SHA-256 goes in AlternativeHashes (VICS has SHA1, which hashsvc does not
    compute). Category is null: VICS categories grade child-abuse material, and a registered
    intimate image of an adult has none; the finding, case and reviewer are in Comments and Tags.
    """
    doc = _document(envelope)
    case = doc.get("case") or {}
    sig = envelope.get("signature") or {}
    media: dict[str, dict[str, Any]] = {}
    without_md5 = 0
    for line in doc.get("files") or []:
        md5 = line.get("md5")
        if not md5:
            without_md5 += 1
            continue
        times = line.get("times") or {}
        path = str(line.get("path"))
        entry = media.get(md5)
        if entry is None:
            m = line.get("match") or {}
            entry = media[md5] = {
                "MediaID": len(media) + 1,
                "Category": None,
                "MD5": md5.upper(),
                "MediaSize": line.get("size"),
                "RelativeFilePath": path,
                "IsPrecategorized": False,
                "Tags": f"hashsvc;confirmed;case:{m.get('case')}",
                "Comments": "",
                "AlternativeHashes": [{"HashName": "SHA256",
                                       "HashValue": str(line.get("sha256") or "").upper()}],
                "MediaFiles": [],
            }
        review = line.get("review") or {}
        note = (f"{line.get('finding')} Confirmed by {review.get('reviewer')} at "
                f"{review.get('decided_at')}.")
        entry["Comments"] = (entry["Comments"] + " " + note).strip()
        entry["MediaFiles"].append({
            "MD5": md5.upper(),
            "FileName": path.rsplit("/", 1)[-1],
            "FilePath": path,
            "Created": times.get("crtime") or times.get("original_creation_date"),
            "Written": times.get("mtime") or times.get("last_modified"),
            "Accessed": times.get("atime"),
            "Unallocated": False,
            "Deleted": bool(line.get("deleted")),
        })
    metadata = [("Exhibit", case.get("exhibit")), ("Examiner", case.get("examiner")),
                ("Court", case.get("court")), ("OrderReference", case.get("order_ref")),
                ("Source", (doc.get("evidence") or {}).get("source")),
                ("DeletionReportID", doc.get("report_id")),
                ("DeletionReportSHA256", document_sha256(envelope)),
                ("SigningKeyID", sig.get("key_id")),
                ("ConfirmedFilesWithoutMD5", str(without_md5))]
    return {
        "odata.metadata": VICS_METADATA,
        "value": [{
            "CaseID": doc.get("report_id"),
            "CaseNumber": ", ".join(case.get("case_refs") or []) or case.get("exhibit"),
            "ContactOrganization": case.get("org"),
            "ContactName": case.get("examiner"),
            "SourceApplicationName": "hashsvc",
            "SourceApplicationVersion": (doc.get("tool") or {}).get("version"),
            "TotalMediaFiles": len(media),
            "TotalPrecategorized": 0,
            "CaseMetadata": [{"PropertyName": k, "PropertyValue": v}
                             for k, v in metadata if v is not None],
            "Media": list(media.values()),
        }],
    }


# writing ------------------------------------------------------------------------------------------

def rendering_bytes(envelope: Mapping[str, Any], fmt: str) -> bytes:
    """The bytes of one rendering: "json" (the signed envelope), "html", "pdf" or "vics"."""
    if fmt == "json":
        _document(envelope)
        return (json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
                ).encode("utf-8")
    if fmt == "html":
        return render_html(envelope).encode("utf-8")
    if fmt == "pdf":
        return render_pdf(envelope)
    if fmt == "vics":
        return (json.dumps(render_vics(envelope), indent=2, ensure_ascii=False) + "\n"
                ).encode("utf-8")
    raise InputError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def write_rendering(envelope: Mapping[str, Any], fmt: str, out: str | os.PathLike[str]) -> None:
    """Write a rendering to ``out`` ('-' for standard output), atomically for a file."""
    data = rendering_bytes(envelope, fmt)
    if str(out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = Path(out)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc


__all__ = [
    "FORMATS",
    "build_deletion_document",
    "decode_settings",
    "deletion_envelope_for_scan",
    "deployment_trusted_keys",
    "read_trusted_keys",
    "render_html",
    "render_pdf",
    "render_vics",
    "rendering_bytes",
    "verify_file",
    "write_rendering",
]
