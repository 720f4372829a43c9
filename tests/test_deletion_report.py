"""Deletion reports: canonical JSON, Ed25519 signing, verification that names what changed, and
the HTML / PDF / VICS renderings, from a real scan of generated evidence."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hashsvc.deletion_report import (build_deletion_document, deletion_envelope_for_scan,
                                     find_unicode_font, render_html, render_pdf, render_vics,
                                     write_rendering)
from hashsvc.errors import ConfigError, InputError
from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings, load_settings
from hashsvc.signing import (canonical_json, deployment_key, document_sha256, generate_key,
                             key_id, load_or_create_signing_key, public_keys_json,
                             raw_public_key, sign_document, verify_document, with_digests)
from hashsvc.store import Store

from conftest import encode, photo
from test_pipeline import register

HOSTILE = '<script>alert("x")<.jpg'
UNICODE = "café_Ωmega.jpg"
BIDI = "photo\u202egpj.jpg"
CONTEXT = {"org": "Example Police DFU", "examiner": "DC 4242 Example",
           "case_refs": ["CASE-1"], "exhibit": "EXH-ABC-01", "court": "Example Crown Court",
           "order_ref": "ORD-2025-17"}


def review(match: dict[str, Any], reviewer: str = "analyst-7") -> dict[str, Any]:
    """A match as the review layer hands it on: confirmed, with who and when."""
    return {**match, "review": {"reviewer": reviewer, "decided_at": "2025-03-01T10:00:00Z",
                                "decision": "confirmed", "reason": "same picture"}}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Settings, str]]:
    """One real scan shared by the module: copies of two registered photos under plain,
    hostile, non-ASCII and bidi names, one turned, plus an unrelated photo. (No archive: see
    test_files_beside_an_archive_keep_their_hashes.)"""
    root = tmp_path_factory.mktemp("deletion")
    settings = load_settings(env={}, data_dir=str(root / "data"), workers=2)
    store = Store.open(settings)
    register(store, "CASE-1", "astronaut", "coffee")
    dump = root / "dump"
    dump.mkdir()
    astronaut = encode(photo("astronaut").resize((300, 300)), "JPEG")
    (dump / "a.jpg").write_bytes(astronaut)
    (dump / HOSTILE).write_bytes(encode(photo("coffee"), "JPEG", quality=80))
    (dump / UNICODE).write_bytes(encode(photo("astronaut").resize((256, 256)), "PNG"))
    (dump / BIDI).write_bytes(astronaut)  # an identical copy: same MD5 as a.jpg
    (dump / "unrelated.jpg").write_bytes(encode(photo("camera"), "JPEG"))
    (dump / "rotated.png").write_bytes(encode(photo("coffee").transpose(
        Image.Transpose.ROTATE_90), "PNG"))
    scan_id = run_scan(store, settings, str(dump), "EXH-ABC-01")
    yield store, settings, scan_id
    store.close()


@pytest.fixture(scope="module")
def report(scanned: tuple[Store, Settings, str]) -> dict[str, Any]:
    store, _, scan_id = scanned
    return build_report(store, scan_id)


@pytest.fixture(scope="module")
def envelope(scanned: tuple[Store, Settings, str], report: dict[str, Any]) -> dict[str, Any]:
    """The signed deletion report of the scan, every match confirmed, the deployment's key."""
    store, settings, scan_id = scanned
    return deletion_envelope_for_scan(store, settings, scan_id, CONTEXT,
                                      lambda _s, _id, rep: [review(m) for m in rep["matches"]])


def paths(report: dict[str, Any]) -> set[str]:
    return {m["path"] for m in report["matches"]}


# --- canonical JSON -----------------------------------------------------------------------------

def test_canonical_json_follows_rfc_8785() -> None:
    # Numbers as ECMAScript prints them (RFC 8785, appendix B samples).
    assert canonical_json([1e21, 333333333.33333329, -0.0, 4.50, 2e-3, 1e-27, 100.0, 1e-7]) == \
        b"[1e+21,333333333.3333333,0,4.5,0.002,1e-27,100,1e-7]"
    # Keys by UTF-16 code units (the euro sign sorts before an astral character, which sorts
    # before U+FB33), only '"', '\\' and controls escaped, no whitespace.
    doc = {"\ufb33": 3, "\U0001F600": 2, "\u20ac": 1, "b": [True, None], "a": "é\n\x01\"\\"}
    assert canonical_json(doc).decode("utf-8") == \
        '{"a":"\u00e9\\n\\u0001\\"\\\\","b":[true,null],"\u20ac":1,"\U0001F600":2,"\ufb33":3}'
    assert canonical_json(json.loads(canonical_json(doc))) == canonical_json(doc)
    for bad in (2**53, float("nan"), "\udcff", {1: 2}, b"bytes"):
        with pytest.raises(ValueError):
            canonical_json(bad)


# --- keys ---------------------------------------------------------------------------------------

def test_deployment_key_is_created_private_and_published(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"))
    assert public_keys_json(settings, create=False) == {"algorithm": "Ed25519", "keys": []}
    key = deployment_key(settings)
    path = settings.report_signing_key_path
    assert path == tmp_path / "data" / "keys" / "report-signing.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert raw_public_key(load_or_create_signing_key(path)) == raw_public_key(key)  # reused
    published = public_keys_json(settings)["keys"]
    assert [k["key_id"] for k in published] == [key_id(raw_public_key(key))]
    assert "PRIVATE" not in json.dumps(published)
    # A retired public key kept beside it is still published, so old reports verify.
    from cryptography.hazmat.primitives import serialization

    old = generate_key()
    (path.parent / "2024.pub.pem").write_bytes(old.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    listed = {k["key_id"]: k["status"] for k in public_keys_json(settings)["keys"]}
    assert listed == {key_id(raw_public_key(key)): "current",
                      key_id(raw_public_key(old)): "retired"}
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        deployment_key(settings)


def test_signing_key_setting_and_environment(tmp_path: Path) -> None:
    s = load_settings(env={"HASHSVC_REPORT_SIGNING_KEY": str(tmp_path / "k.pem")})
    assert s.report_signing_key_path == tmp_path / "k.pem"


# --- the document -------------------------------------------------------------------------------

def test_document_lists_every_confirmed_file_with_its_facts(envelope: dict[str, Any],
                                                            report: dict[str, Any]) -> None:
    doc = envelope["document"]
    assert paths(report) == {"a.jpg", HOSTILE, "café_Ωmega.jpg", "photo\ufffdgpj.jpg",
                             "rotated.png"}
    assert doc["report_type"] == "deletion" and doc["scan_id"] == report["scan_id"]
    assert doc["case"] == {**{k: CONTEXT[k] for k in ("org", "examiner", "exhibit", "court",
                                                      "order_ref", "case_refs")},
                           "matched_case_refs": ["CASE-1"]}
    lines = {line["path"]: line for line in doc["files"]}
    assert set(lines) == paths(report)
    assert lines["rotated.png"]["match"]["variant"] == "rot90"
    plain = lines["a.jpg"]
    assert plain["allocated"] and not plain["deleted"] and not plain["in_archive"]
    for m in report["matches"]:
        line = lines[m["path"]]
        assert (line["sha256"], line["md5"], line["size"]) == (m["sha256"], m["md5"], m["size"])
        assert line["sha256"] and line["md5"]
        assert line["match"]["distances"] == m["distances"]
        assert line["review"]["reviewer"] == "analyst-7"
        assert "CASE-1" in line["finding"]
    # The bidi override stays in the raw locator name, never in the display path.
    assert lines["photo\ufffdgpj.jpg"]["locator"][0]["name"] == BIDI
    tool = doc["tool"]
    assert tool["version"] and tool["thresholds"] == {"pdq": 31, "phash": 8, "dhash": 8}
    assert tool["libraries"]["pdqhash"] and tool["bank_cursor"] == report["bank_cursor"]
    assert tool["decode_settings"]["max_image_pixels"] > 0
    cov = doc["coverage"]
    assert cov["files_examined"] == report["coverage"]["files_examined"]
    assert (cov["matches_found"], cov["matches_confirmed"]) == (5, 5)


def test_only_confirmed_matches_of_this_scan_go_in(report: dict[str, Any]) -> None:
    matches = report["matches"]
    doc = build_deletion_document(report, [review(matches[1])], CONTEXT)
    assert [line["path"] for line in doc["files"]] == [matches[1]["path"]]
    assert doc["coverage"]["matches_not_listed"] == len(matches) - 1
    rejected = {**matches[0], "review": {**review(matches[0])["review"], "decision": "rejected"}}
    for bad, message in (([rejected], "not confirmed"), ([matches[0]], "no review"),
                         ([review(matches[0])] * 2, "twice"),
                         ([review({**matches[0], "locator": [{"kind": "fs", "name": "x"}]})],
                          "not a match of scan")):
        with pytest.raises(InputError, match=message):
            build_deletion_document(report, bad, CONTEXT)
    with pytest.raises(InputError, match="org"):
        build_deletion_document(report, [], {**CONTEXT, "org": ""})


def test_disk_and_s3_locations_are_described_for_the_court() -> None:
    """Plain data as hashsvc.report gives it for a deleted file on a disk image, a file inside
    a zip on it, an EXIF thumbnail, and a noncurrent S3 version."""
    tsk = {"kind": "tsk", "name": "/DCIM/IMG_7.jpg", "attrs": {
        "deleted": "true", "inode": "1234", "mtime": "2024-05-01T10:00:00Z",
        "atime": "2024-05-02T10:00:00Z", "crtime": "2024-04-30T09:00:00Z"}}
    disk = [{"kind": "fs", "name": "phone.E01"},
            {"kind": "partition", "name": "2", "attrs": {"offset": "1048576", "type": "Linux"}}]
    s3 = [{"kind": "s3", "name": "uploads"},
          {"kind": "s3-object", "name": "users/42/a.jpg", "attrs": {
              "deleted": "true", "latest": "false", "last_modified": "2025-01-01T00:00:00Z",
              "version_id": "3HL4kqtJlcpXroDTDmJ"}}]
    locators = {"deleted": disk + [tsk],
                "zipped": disk + [{**tsk, "name": "/a.zip"}, {"kind": "zip", "name": "b.jpg"}],
                "thumb": disk + [tsk, {"kind": "exif-thumbnail", "name": "IFD1"}],
                "s3": s3}
    matches = [{"path": name, "locator": loc, "sha256": "ab" * 32, "md5": f"{i:032x}",
                "size": 1000 + i, "format": "jpeg", "from_thumbnail": False, "case": "CASE-9",
                "algorithm": "pdq", "distance": 6, "distances": {"pdq": 6, "phash": 4},
                "variant": "orig", "other_matches": [], "deleted": True, "version_id": None}
               for i, (name, loc) in enumerate(locators.items())]
    scan_report = {"scan_id": "s-1", "source": "/evidence/phone.E01", "label": "EXH-2",
                   "state": "done", "matches": matches, "matched_files": 4, "evidence": [{
                       "path": "phone.E01", "kind": "e01", "size": 10, "sha256": "cd" * 32,
                       "md5": "ef" * 16, "stored_md5": "ef" * 16, "verified": True,
                       "locator": [{"kind": "fs", "name": "phone.E01"}],
                       "details": {"e01": {"stored_hashes": {"MD5": "ef" * 16},
                                           "header": {"examiner_name": "X"}, "segments": 1},
                                   "coverage": {"examined": {"files": 9}}}}],
                   "coverage": {"files_examined": 9, "not_examined": {"fs-free-space": 2}},
                   "settings": {"matching": {"thresholds": {"pdq": 31}}}, "tool": {}}
    doc = build_deletion_document(scan_report, [review(m) for m in matches], CONTEXT)
    lines = {line["path"]: line for line in doc["files"]}
    deleted = lines["deleted"]
    assert deleted["where"] == {"device": "phone.E01", "partition": "2",
                                "path": "/DCIM/IMG_7.jpg", "inode": "1234"}
    assert deleted["deleted"] and not deleted["allocated"]
    assert deleted["times"] == {"mtime": "2024-05-01T10:00:00Z", "atime": "2024-05-02T10:00:00Z",
                                "crtime": "2024-04-30T09:00:00Z"}
    assert deleted["where_text"] == ("device phone.E01 > partition 2 (Linux, offset 1048576) > "
                                     "/DCIM/IMG_7.jpg (inode 1234)")
    assert lines["zipped"]["in_archive"] and lines["zipped"]["times_of"] == "a.zip"
    assert lines["thumb"]["embedded"] and lines["thumb"]["embedded_kind"] == "exif-thumbnail"
    s3_line = lines["s3"]
    assert s3_line["where"] == {"bucket": "uploads", "key": "users/42/a.jpg",
                                "version_id": "3HL4kqtJlcpXroDTDmJ"}
    assert s3_line["current_version"] is False
    assert s3_line["finding"].startswith(
        "Object \u201cusers/42/a.jpg\u201d version \u201c3HL4kqtJlcpXroDTDmJ\u201d in bucket "
        "\u201cuploads\u201d (s3) holds a copy of an image registered under case CASE-9")
    assert "must be deleted by its version id" in s3_line["finding"]
    item = doc["evidence"]["items"][0]
    assert item["verified"] and item["stored_hashes"] == {"MD5": "ef" * 16}
    assert doc["evidence"]["source_type"] == "e01"
    vics = render_vics(sign_document(doc, generate_key()))["value"][0]["Media"]
    by_path = {f["FilePath"]: f for m in vics for f in m["MediaFiles"]}
    assert by_path["deleted"]["Deleted"] is True
    assert (by_path["deleted"]["Written"], by_path["deleted"]["Created"]) == \
        ("2024-05-01T10:00:00Z", "2024-04-30T09:00:00Z")
    assert by_path["s3"]["Written"] == "2025-01-01T00:00:00Z"


def test_files_beside_an_archive_keep_their_hashes(store: Store, settings: Settings,
                                                   tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    dump = tmp_path / "dump"
    dump.mkdir()
    with zipfile.ZipFile(dump / "a.zip", "w") as zf:  # walked (and recorded) first
        zf.writestr("DCIM/IMG_0001.jpg", encode(photo("astronaut"), "JPEG"))
    (dump / "b.jpg").write_bytes(encode(photo("astronaut").resize((300, 300)), "JPEG"))
    report = build_report(store, run_scan(store, settings, str(dump)))
    doc = build_deletion_document(report, [review(m) for m in report["matches"]], CONTEXT)
    assert {line["path"] for line in doc["files"]} == {"a.zip/DCIM/IMG_0001.jpg", "b.jpg"}
    assert next(line for line in doc["files"] if line["path"] != "b.jpg")["in_archive"]
    for line in doc["files"]:
        assert line["sha256"] and line["md5"], line["path"]


# --- signing and verification -------------------------------------------------------------------

def test_signed_report_verifies_and_survives_a_file_round_trip(
        envelope: dict[str, Any], scanned: tuple[Store, Settings, str], tmp_path: Path) -> None:
    _, settings, _ = scanned
    ours = public_keys_json(settings)
    verdict = verify_document(envelope, [ours])
    assert verdict.valid and verdict.trusted and not verdict.problems
    assert verdict.key_id == ours["keys"][0]["key_id"] == envelope["signature"]["key_id"]
    write_rendering(envelope, "json", tmp_path / "r.json")
    again = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert verify_document(again, [ours]).valid
    assert document_sha256(again) == document_sha256(envelope)
    untrusted = verify_document(envelope)  # no trusted keys: the file's own key only
    assert untrusted.valid and untrusted.trusted is None and "GET /v1/keys" in untrusted.summary()


def _edit_path(doc: dict[str, Any]) -> None:
    line = doc["files"][1]
    line["path"] = line["where"]["path"] = line["where_text"] = "elsewhere.jpg"


def _edit_distance(doc: dict[str, Any]) -> None:
    doc["files"][2]["match"]["distances"]["pdq"] += 1


def _edit_coverage(doc: dict[str, Any]) -> None:
    doc["coverage"]["files_examined"] -= 1


def _remove_line(doc: dict[str, Any]) -> None:
    del doc["files"][3]


@pytest.mark.parametrize("edit, named", [
    (_edit_path, ["files[1] (", ") changed"]),
    (_edit_distance, ["files[2] (", ") changed"]),
    (_edit_coverage, ["section 'coverage' changed"]),
    (_remove_line, ["signed with 5", "files[3] (", "as signed is missing"]),
])
def test_any_edit_is_caught_and_named(envelope: dict[str, Any], edit: Any,
                                      named: list[str]) -> None:
    tampered = copy.deepcopy(envelope)
    edit(tampered["document"])
    verdict = verify_document(tampered)
    assert not verdict.valid
    assert verdict.digests_authentic  # the signed digests were left alone: exact names
    text = "\n".join(verdict.problems)
    assert "the signature does not match the document" in text
    for part in named:
        assert part in text
    if edit is _remove_line:  # a removed line is named by where it was, as signed
        gone = envelope["document"]["files"][3]["where_text"]
        assert f"files[3] ({gone}) as signed is missing" in text
    if edit is _edit_path:
        assert [c["index"] for c in verdict.changes if c["section"] == "files"] == [1]
        assert verdict.changes[0]["what"] == (
            "files[1] (elsewhere.jpg) changed; it was signed as "
            f"{envelope['document']['files'][1]['where_text']}")


def test_edited_digests_and_swapped_signatures_and_keys_are_named(
        envelope: dict[str, Any], scanned: tuple[Store, Settings, str],
        report: dict[str, Any]) -> None:
    _, settings, _ = scanned
    ours = public_keys_json(settings)
    # Sections edited and the digests recomputed to match: the digests' own signature fails.
    forged = copy.deepcopy(envelope)
    _edit_path(forged["document"])
    forged["document"] = with_digests(forged["document"])
    verdict = verify_document(forged, [ours])
    assert not verdict.valid and verdict.digests_authentic is False
    assert "the digests themselves were edited" in "\n".join(verdict.problems)
    # Another report's signature pasted in.
    other = sign_document(build_deletion_document(report, [], CONTEXT), deployment_key(settings))
    swapped = copy.deepcopy(envelope)
    swapped["signature"]["value"] = other["signature"]["value"]
    verdict = verify_document(swapped, [ours])
    assert not verdict.valid
    assert "either the signature or key was replaced" in "\n".join(verdict.problems)
    # Edited, then re-signed whole with somebody else's key: valid only against that key.
    mallory = generate_key()
    resigned = sign_document(forged["document"], mallory)
    assert verify_document(resigned).valid  # no trusted key given: cannot tell
    verdict = verify_document(resigned, [ours])
    assert not verdict.valid and verdict.trusted is False
    assert verdict.problems[0].startswith(f"signed by key {key_id(raw_public_key(mallory))}, "
                                          "which is not a trusted key")
    # The key id in the block no longer matches the key it carries.
    relabelled = copy.deepcopy(envelope)
    relabelled["signature"]["public_key"] = resigned["signature"]["public_key"]
    verdict = verify_document(relabelled, [ours])
    assert not verdict.valid and "the key was swapped" in "\n".join(verdict.problems)
    assert not verify_document({"document": envelope["document"]}).valid
    # Names printed to a terminal cannot carry escape sequences or direction overrides.
    hostile = copy.deepcopy(envelope)
    hostile["document"]["files"][0]["where_text"] = "\x1b[2J\u202eevil"
    summary = verify_document(hostile).summary()
    assert "\x1b" not in summary and "\u202e" not in summary
    assert "files[0] (<U+001B>[2J<U+202E>evil) changed" in summary


# --- renderings ---------------------------------------------------------------------------------

def test_html_escapes_hostile_names_and_is_self_contained(envelope: dict[str, Any]) -> None:
    html = render_html(envelope)
    assert "<script" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;.jpg" in html
    assert "\u202e" not in html  # direction overrides are never emitted raw
    assert "src=" not in html and "http" not in html.split("</head>")[1].replace(
        "GET /v1/keys", "")
    assert envelope["signature"]["key_id"] in html and document_sha256(envelope) in html
    assert "café_Ωmega.jpg" in html and "hashsvc report verify" in html


def test_pdf_shows_every_confirmed_path(envelope: dict[str, Any], report: dict[str, Any],
                                        tmp_path: Path) -> None:
    pdf = render_pdf(envelope)
    assert pdf.startswith(b"%PDF-")
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed; the PDF was rendered but its "
                    "text could not be checked")
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(tmp_path / "r.pdf"), "-"],
                          capture_output=True, check=True).stdout.decode("utf-8")
    flat = " ".join(text.split())
    for path in paths(report) - {"café_Ωmega.jpg"}:
        assert path in flat, path
    expected = "café_Ωmega.jpg" if find_unicode_font() else "café_<U+03A9>mega.jpg"
    assert expected in flat
    assert envelope["signature"]["key_id"] in flat and document_sha256(envelope) in flat


def test_vics_export_has_one_media_file_per_confirmed_file(envelope: dict[str, Any]) -> None:
    vics = render_vics(envelope)
    assert vics["odata.metadata"].endswith("/DataModels/1.3.xml#Cases")
    case = vics["value"][0]
    files = envelope["document"]["files"]
    media_files = [(m, f) for m in case["Media"] for f in m["MediaFiles"]]
    assert sorted(f["FilePath"] for _, f in media_files) == sorted(line["path"] for line in files)
    by_path = {line["path"]: line for line in files}
    for media, f in media_files:
        line = by_path[f["FilePath"]]
        assert media["MD5"] == f["MD5"] == line["md5"].upper()
        assert media["AlternativeHashes"] == [{"HashName": "SHA256",
                                               "HashValue": line["sha256"].upper()}]
        assert media["Category"] is None and media["IsPrecategorized"] is False
    # a.jpg and the bidi-named file are the same bytes: one Media, two MediaFiles.
    assert case["TotalMediaFiles"] == len(case["Media"]) == len(files) - 1
    assert {"PropertyName": "DeletionReportSHA256",
            "PropertyValue": document_sha256(envelope)} in case["CaseMetadata"]


# --- command line -------------------------------------------------------------------------------

def test_cli_verify_good_and_tampered(envelope: dict[str, Any],
                                      scanned: tuple[Store, Settings, str],
                                      tmp_path: Path) -> None:
    _, settings, _ = scanned
    exe = Path(sys.executable).with_name("hashsvc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env["HASHSVC_DATA_DIR"] = str(settings.data_path)  # the deployment whose key signed it
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    write_rendering(envelope, "json", good)
    tampered = copy.deepcopy(envelope)
    tampered["document"]["files"][0]["sha256"] = "0" * 64
    write_rendering(tampered, "json", bad)

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "report", "verify", *args], env=env, check=False,
                              capture_output=True, text=True, timeout=120)

    ok = verify(str(good))
    assert ok.returncode == 0, ok.stderr
    assert f"VALID: signed by key {envelope['signature']['key_id']} (a trusted key)" in ok.stdout
    failed = verify(str(bad))
    assert failed.returncode == 1
    first = envelope["document"]["files"][0]["where_text"]
    assert f"files[0] ({first}) changed" in failed.stdout
    assert envelope["signature"]["key_id"] in failed.stdout
    other = tmp_path / "other.pub"
    other.write_bytes(json.dumps({"keys": [{"public_key": __import__("base64").b64encode(
        raw_public_key(generate_key())).decode()}]}).encode())
    untrusted = verify("--public-key", str(other), "--json", str(good))
    assert untrusted.returncode == 1
    assert json.loads(untrusted.stdout)["trusted"] is False
