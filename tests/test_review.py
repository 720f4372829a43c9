"""The analyst's review and the deletion report from the command line, on a real scan.

Generated evidence is registered and scanned; candidates are listed, confirmed (one by one and
--all-exact) and rejected with a reason; each change is an audit entry; the signed deletion
report holds exactly the confirmed files and verifies, in JSON and as a PDF.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashsvc import audit
from hashsvc.hashing import hash_bytes
from hashsvc.signing import document_sha256, verify_document
from hashsvc.review import Reviewer, candidates, decide
from hashsvc.settings import load_settings
from hashsvc.store import Store

from conftest import encode, photo
from test_api import Api, api, new_case, wait_for_scan  # noqa: F401 (api: fixture)
from test_cli import cli_env, hashsvc  # noqa: F401 (cli_env is a fixture)


def scanned(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], str, dict[str, int]]:
    """Register two photos, scan a dump with an exact copy, a resized copy and an unrelated
    photo; returns the CLI environment, the scan id and the match ids by path."""
    originals = tmp_path / "victim"
    originals.mkdir()
    exact = encode(photo("astronaut"), "JPEG", quality=92)
    (originals / "a.jpg").write_bytes(exact)
    (originals / "c.jpg").write_bytes(encode(photo("coffee"), "JPEG"))
    hashed = hashsvc(["hash", "--no-features", str(originals / "a.jpg"),
                      str(originals / "c.jpg")], env)
    assert hashed.returncode == 0, hashed.stderr
    registered = hashsvc(["register", "--case", "CASE-7", "-"], env, stdin=hashed.stdout)
    assert registered.returncode == 0, registered.stderr

    dump = tmp_path / "dump"
    (dump / "DCIM").mkdir(parents=True)
    (dump / "DCIM" / "exact.jpg").write_bytes(exact)
    (dump / "DCIM" / "resized.jpg").write_bytes(
        encode(photo("coffee").resize((200, 133)), "JPEG", quality=80))
    (dump / "DCIM" / "other.jpg").write_bytes(encode(photo("chelsea"), "JPEG"))
    out = tmp_path / "scan.json"
    scan = hashsvc(["scan", str(dump), "--report", str(out), "--quiet", "--label", "EXH-1"], env)
    assert scan.returncode == 0, scan.stderr
    report = json.loads(out.read_text())
    ids = {m["path"]: m["match_id"] for m in report["matches"]}
    assert set(ids) == {"DCIM/exact.jpg", "DCIM/resized.jpg"}
    return env, report["scan_id"], ids


def test_review_and_deletion_report_from_the_command_line(tmp_path: Path,
                                                          cli_env: dict[str, str]) -> None:
    env, scan_id, ids = scanned(tmp_path, cli_env)
    listed = hashsvc(["review", "list", scan_id, "--json"], env)
    assert listed.returncode == 0, listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {i["match_id"]: i["review"] for i in items} == {ids["DCIM/exact.jpg"]: None,
                                                          ids["DCIM/resized.jpg"]: None}
    assert "0 confirmed, 0 rejected, 2 unreviewed" in listed.stderr

    exact = hashsvc(["review", "confirm", scan_id, "--all-exact", "--reviewer", "DC Smith"], env)
    assert exact.returncode == 0, exact.stderr
    assert [c["match_id"] for c in json.loads(exact.stdout)["changed"]] == [
        ids["DCIM/exact.jpg"]]
    no_reason = hashsvc(["review", "reject", scan_id, str(ids["DCIM/resized.jpg"])], env)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    rejected = hashsvc(["review", "reject", scan_id, str(ids["DCIM/resized.jpg"]),
                        "--reason", "different room", "--reviewer", "DC Jones"], env)
    assert rejected.returncode == 0, rejected.stderr
    unknown = hashsvc(["review", "confirm", scan_id, "999999"], env)
    assert unknown.returncode == 1 and "not candidates" in unknown.stderr

    envelope_path = tmp_path / "deletion.json"
    built = hashsvc(["report", scan_id, "--format", "json", "--out", str(envelope_path),
                     "--examiner", "DC Smith", "--org", "Met Police DFU"], env)
    assert built.returncode == 0, built.stderr
    document = json.loads(envelope_path.read_text())["document"]
    assert [f["path"] for f in document["files"]] == ["DCIM/exact.jpg"]
    line = document["files"][0]
    assert line["sha256"] and line["review"]["reviewer"] == "DC Smith"
    verified = hashsvc(["report", "verify", str(envelope_path)], env)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The analyst changes their mind: the rejected file is confirmed, and the report says so.
    changed = hashsvc(["review", "confirm", scan_id, str(ids["DCIM/resized.jpg"]),
                       "--reviewer", "DC Jones", "--reason", "same room, second look"], env)
    assert json.loads(changed.stdout)["changed"][0]["previous"]["decision"] == "rejected"
    again = hashsvc(["report", scan_id, "--out", str(envelope_path)], env)
    assert again.returncode == 0, again.stderr
    document = json.loads(envelope_path.read_text())["document"]
    assert sorted(f["path"] for f in document["files"]) == ["DCIM/exact.jpg", "DCIM/resized.jpg"]

    store = Store.open(load_settings(data_dir=env["HASHSVC_DATA_DIR"]))
    try:
        decisions = [e.details for e in audit.entries(store, 0, 1000)
                     if e.action == "match.review"]
        assert [(d["decision"], d["previous"]) for d in decisions] == [
            ("confirmed", None), ("rejected", None), ("confirmed", "rejected")]
        assert audit.verify(store) == []
    finally:
        store.close()

    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    pdf = tmp_path / "deletion.pdf"
    assert hashsvc(["report", scan_id, "--format", "pdf", "--out", str(pdf)], env).returncode == 0
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "DCIM/exact.jpg" in text and "DCIM/resized.jpg" in text


def test_a_repeated_decision_changes_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env, scan_id, ids = scanned(tmp_path, cli_env)
    store = Store.open(load_settings(data_dir=env["HASHSVC_DATA_DIR"]))
    try:
        who = Reviewer("DC Smith")
        first = decide(store, scan_id, [ids["DCIM/exact.jpg"]], "confirmed", who)
        assert len(first) == 1
        assert decide(store, scan_id, [ids["DCIM/exact.jpg"]], "confirmed", who) == []
        states = {c["match_id"]: c["review"] for c in candidates(store, scan_id)}
        assert states[ids["DCIM/exact.jpg"]]["decision"] == "confirmed"
        assert states[ids["DCIM/resized.jpg"]] is None
    finally:
        store.close()


def test_review_through_the_api(api: Api, tmp_path: Path) -> None:
    pytest.importorskip("workers.jobs")
    case = new_case(api)
    first = encode(photo("astronaut"), "JPEG", quality=90)
    second = encode(photo("coffee"), "JPEG", quality=90)
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",
             json=[{"file": name, **hash_bytes(data, with_variants=True).to_json()}
                   for name, data in (("a.jpg", first), ("b.jpg", second))])
    dump = tmp_path / "evidence" / "laptop"
    dump.mkdir(parents=True)
    (dump / "first.jpg").write_bytes(first)
    (dump / "second.jpg").write_bytes(encode(photo("coffee").resize((200, 133)), "JPEG"))
    started = api.call("POST", "/v1/scans", "forensic",
                       json={"source": str(dump), "label": "EXH-2"})
    scan_id = started.json["scan_id"]
    assert wait_for_scan(api, scan_id)["state"] == "done"

    listed = api.call("GET", f"/v1/scans/{scan_id}/candidates", "forensic").json
    ids = {c["path"]: c["match_id"] for c in listed["candidates"]}
    assert set(ids) == {"first.jpg", "second.jpg"}
    assert listed["summary"] == {"confirmed": 0, "rejected": 0, "unreviewed": 2}
    assert api.call("GET", f"/v1/scans/{scan_id}/candidates", "forensic_b").status_code == 404

    thumb = f"/v1/scans/{scan_id}/candidates/{ids['first.jpg']}/thumbnail"
    blurred, revealed = (api.call("GET", thumb, "forensic"),
                         api.call("GET", thumb + "?reveal=true", "forensic"))
    assert blurred.status_code == revealed.status_code == 200
    assert blurred.mimetype == "image/jpeg" and blurred.headers["Cache-Control"] == "no-store"
    original = np.asarray(Image.open(io.BytesIO(first)).convert("L").resize((256, 256)), float)
    shown = {name: np.asarray(Image.open(io.BytesIO(r.data)).convert("L").resize((256, 256)),
                              float) for name, r in (("blurred", blurred), ("revealed", revealed))}
    # The revealed picture is the evidence; the blurred one keeps its colours, not its detail.
    assert np.abs(shown["revealed"] - original).mean() < 10

    def detail(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())

    assert detail(shown["blurred"]) < 0.35 * detail(shown["revealed"])
    assert api.call("GET", thumb, "forensic_b").status_code == 404

    review = f"/v1/scans/{scan_id}/review"
    bad = api.call("POST", review, "forensic", json={"match_ids": [ids["second.jpg"]],
                                                     "decision": "rejected",
                                                     "reviewer": "DC Jones"})
    assert bad.status_code == 400 and "reason" in bad.json["message"]
    done = api.call("POST", review, "forensic", json={"match_ids": [ids["first.jpg"]],
                                                      "decision": "confirmed",
                                                      "reviewer": "DC Smith"})
    assert done.status_code == 200 and done.json["changed"][0]["reviewer"] == "DC Smith"
    api.call("POST", review, "forensic", json={"match_ids": [ids["second.jpg"]],
                                               "decision": "rejected", "reason": "not her",
                                               "reviewer": "DC Jones"})

    path = f"/v1/scans/{scan_id}/report"
    assert api.call("GET", path + "?format=json", "forensic").status_code == 400  # examiner
    signed = api.call("GET", path + "?format=json&examiner=DC+Smith&court=Leeds", "forensic")
    assert signed.status_code == 200, signed.json
    assert [f["path"] for f in signed.json["document"]["files"]] == ["first.jpg"]
    keys = api.call("GET", "/v1/keys", None).json
    verdict = verify_document(signed.json, [keys])
    assert verdict.valid and verdict.trusted
    pdf = api.call("GET", path + "?format=pdf&examiner=DC+Smith", "forensic")
    assert pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    html = api.call("GET", path + "?format=html&examiner=DC+Smith", "forensic")
    assert html.mimetype == "text/html" and b"first.jpg" in html.data
    plain = api.call("GET", path, "forensic").json
    assert plain["scan_id"] == scan_id and "matches" in plain
    # The victim's status counts the exhibit's deletion report, once however often issued.
    from hashsvc.victims import status as victim_status

    assert victim_status(api.store, case["case_id"])["deletion_reports"] == 1
    assert victim_status(api.store, new_case(api)["case_id"])["deletion_reports"] == 0


def test_verification_rescan_after_a_wipe(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env, scan_id, ids = scanned(tmp_path, cli_env)
    assert hashsvc(["review", "confirm", scan_id, "--all"], env).returncode == 0
    original = tmp_path / "deletion.json"
    assert hashsvc(["report", scan_id, "--out", str(original)], env).returncode == 0
    recorded = hashsvc(["wipe-record", scan_id, "--medium", "Samsung T7 S/N 123",
                        "--method", "clear", "--tool", "hashsvc test", "--verification-method",
                        "re-scan", "--verification-result", "see verification report",
                        "--operator", "DC Smith", "--date", "2026-11-28"], env)
    assert recorded.returncode == 0, recorded.stderr

    # The analyst wipes one confirmed file; a copy of the other turns up elsewhere, and a new
    # copy of a registered photo appears that the original report did not list.
    dump = tmp_path / "dump"
    (dump / "DCIM" / "exact.jpg").unlink()
    (dump / "Downloads").mkdir()
    shutil.copy(dump / "DCIM" / "resized.jpg", dump / "Downloads" / "again.jpg")
    (dump / "DCIM" / "resized.jpg").unlink()
    (dump / "Downloads" / "new.jpg").write_bytes(encode(photo("astronaut").rotate(90, expand=True),
                                                        "JPEG"))
    out = tmp_path / "verification.json"
    run = hashsvc(["scan", str(dump), "--verify-against", str(original), "--report", str(out),
                   "--quiet", "--examiner", "DC Jones"], env)
    assert run.returncode == 0, run.stderr
    envelope = json.loads(out.read_text())
    doc = envelope["document"]
    assert doc["report_type"] == "verification"
    status = {e["path"]: (e["status"], e["present_at"]) for e in doc["files"]}
    assert status == {"DCIM/exact.jpg": ("gone", []),
                      "DCIM/resized.jpg": ("present", ["Downloads/again.jpg"])}
    assert all(e["sha256"] for e in doc["files"])
    assert [m["path"] for m in doc["new_matches"]] == ["Downloads/new.jpg"]
    signed = json.loads(original.read_text())
    assert doc["refers_to"]["document_sha256"] == document_sha256(signed)
    assert doc["wipe_records"][0]["fields"]["medium"] == "Samsung T7 S/N 123"
    assert hashsvc(["report", "verify", str(out)], env).returncode == 0

    signed["document"]["files"][0]["path"] = "elsewhere.jpg"
    original.write_text(json.dumps(signed))
    refused = hashsvc(["scan", str(dump), "--verify-against", str(original), "--report",
                       str(tmp_path / "v2.json"), "--quiet"], env)
    assert refused.returncode == 1 and "does not verify" in refused.stderr


def test_verification_rescan_through_the_api(api: Api, tmp_path: Path) -> None:
    pytest.importorskip("workers.jobs")
    case = new_case(api)
    kept, wiped = encode(photo("astronaut"), "JPEG"), encode(photo("coffee"), "JPEG")
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",
             json=[{"file": n, **hash_bytes(d, with_variants=True).to_json()}
                   for n, d in (("a.jpg", kept), ("b.jpg", wiped))])
    dump = tmp_path / "evidence" / "phone"
    dump.mkdir(parents=True)
    (dump / "kept.jpg").write_bytes(kept)
    (dump / "wiped.jpg").write_bytes(wiped)
    scan_id = api.call("POST", "/v1/scans", "forensic",
                       json={"source": str(dump), "label": "EXH-9"}).json["scan_id"]
    assert wait_for_scan(api, scan_id)["state"] == "done"
    ids = [c["match_id"] for c in api.call("GET", f"/v1/scans/{scan_id}/candidates",
                                            "forensic").json["candidates"]]
    api.call("POST", f"/v1/scans/{scan_id}/review", "forensic",
             json={"match_ids": ids, "decision": "confirmed", "reviewer": "DC Smith"})
    wipe = {"medium": "Pixel 7 IMEI 3569", "method": "purge", "tool": "factory reset",
            "verification_method": "hashsvc re-scan", "verification_result": "see report",
            "operator": "DC Smith", "date": "2026-11-28"}
    assert api.call("POST", f"/v1/scans/{scan_id}/wipe-records", "forensic",
                    json={**wipe, "method": "burn"}).status_code == 400
    assert api.call("POST", f"/v1/scans/{scan_id}/wipe-records", "forensic",
                    json=wipe).status_code == 201
    original = api.call("GET", f"/v1/scans/{scan_id}/report?format=json&examiner=DC+Smith",
                        "forensic").json
    assert original["document"]["wipe_records"][0]["fields"]["method"] == "purge"

    (dump / "wiped.jpg").unlink()
    tampered = json.loads(json.dumps(original))
    tampered["document"]["files"][0]["sha256"] = "0" * 64
    refused = api.call("POST", "/v1/scans", "forensic",
                       json={"source": str(dump), "verify_against": tampered})
    assert refused.status_code == 400 and "does not verify" in refused.json["message"]
    again = api.call("POST", "/v1/scans", "forensic",
                     json={"source": str(dump), "verify_against": original}).json["scan_id"]
    assert wait_for_scan(api, again)["state"] == "done"
    path = f"/v1/scans/{again}/verification"
    assert api.call("GET", path, "forensic").status_code == 400  # the examiner is required
    assert api.call("GET", path + "?examiner=DC+Jones", "forensic_b").status_code == 404
    signed = api.call("GET", path + "?examiner=DC+Jones", "forensic").json
    doc = signed["document"]
    assert {e["path"]: e["status"] for e in doc["files"]} == {"kept.jpg": "present",
                                                             "wiped.jpg": "gone"}
    assert doc["summary"]["new_matches"] == 0
    assert verify_document(signed, [api.call("GET", "/v1/keys", None).json]).valid
    plain = api.call("GET", f"/v1/scans/{scan_id}/verification?examiner=X", "forensic")
    assert plain.status_code == 409
