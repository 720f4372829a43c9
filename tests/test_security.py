"""The security review's properties, each tested (SECURITY.md lists them):

- API keys, victims' secrets and intake codes are stored only as digests (nowhere in the
  database or the data folder in plain text) and checked with hmac.compare_digest;
- no API key, secret, code or hash value reaches a log: the app's log at DEBUG and gunicorn's
  error and access logs, through registrations, lookups, victims' status, intake, a scan with
  a match and a review, refusals, and a database error whose text carries hash values;
- evidence roots hold: a scan cannot name a path outside them, and a scan inside one does not
  follow a link out of it;
- an S3 endpoint comes only from configuration: no request can name one.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select, text

from hashsvc import accounts, intake, victims
from hashsvc.settings import Settings
from hashsvc.store import Store

from conftest import encode, noise_image
from test_api import (Api, api, api_settings, hash_line, make_api,  # noqa: F401 (api)
                      new_case, wait_for_scan)
from test_victims import basic

#: Hex digits of every length a hash value has (md5, pHash/dHash, sha256/PDQ).
HEX = re.compile(r"[0-9a-fA-F]{16,}")


# --- secrets at rest and their comparison -------------------------------------------------------


def _everything_stored(api: Api) -> str:
    """Every value of every row of every table, as text; and for SQLite every byte of the
    data folder (database, WAL, index files) as well."""
    metadata = MetaData()
    metadata.reflect(api.store.engine)
    parts = []
    with api.store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    if api.store.engine.dialect.name == "sqlite":
        for path in Path(api.settings.data_dir).rglob("*"):
            if path.is_file():
                parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_keys_secrets_and_codes_are_stored_only_as_digests(api: Api) -> None:
    made = api.call("POST", "/v1/api-keys", "admin", json={"org_id": api.orgs["charity"],
                                                           "role": "charity"}).json
    case = new_case(api)
    replaced = api.call("POST", f"/v1/cases/{case['case_id']}/secret", "charity").json["secret"]
    code = api.call("POST", f"/v1/cases/{case['case_id']}/intake-links", "charity").json["code"]
    assert api.call("GET", "/v1/status", headers=basic(case["case_ref"], replaced)
                    ).status_code == 200
    stored = _everything_stored(api)
    plain = [*api.keys.values(), made["key"], case["secret"], replaced, code]
    for text in plain:
        # (The part after a key's last "_" is its secret; a random secret may hold "_" too,
        # and a short piece after it is found anywhere by chance: pieces under 16 are left.)
        for form in {text, text.replace("-", ""), text.split("_")[-1]}:
            if len(form) >= 16:
                assert form not in stored, "a secret is stored in plain text"
    digests = [accounts.key_digest(made["key"]), victims.secret_digest(case["case_id"], replaced),
               intake.code_digest(code)]
    assert all(d in stored for d in digests)


def test_keys_secrets_and_codes_are_compared_in_constant_time(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    case = new_case(api)
    code = api.call("POST", f"/v1/cases/{case['case_id']}/intake-links", "charity").json["code"]
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    key = api.keys["platform"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for given, ok in ((key, True), (forged, False)):
        calls.clear()
        assert (accounts.authenticate(api.store, given) is not None) == ok
        assert calls == [(accounts.key_digest(key), accounts.key_digest(given))]
    store = api.store
    for given, ok in ((case["secret"], True), ("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", False)):
        calls.clear()
        check = victims.check_secret(store, case["case_ref"], given, 5, 60)
        assert (check.case_id is not None) == ok
        assert calls == [(victims.secret_digest(case["case_id"], case["secret"]),
                          victims.secret_digest(case["case_id"], given))]
    calls.clear()
    assert intake.check_code(store, code.lower()).case_id == case["case_id"]
    assert calls == [(intake.code_digest(code), intake.code_digest(code))]


# --- logs -------------------------------------------------------------------------------------


def _secrets_and_hashes(store: Any, keys: dict[str, str], extra: list[str]) -> list[str]:
    """Every secret the run handed out, every digest of one, and every hash value registered
    or scanned (read back from the store)."""
    values = [*keys.values(), *extra]
    metadata = MetaData()
    metadata.reflect(store.engine)
    columns = {"bank_hashes": None, "scan_files": None, "registered_images": None,
               "api_keys": None, "cases": None, "intake_links": None}
    with store.engine.connect() as conn:
        for name in columns:
            for row in conn.execute(select(metadata.tables[name])):
                values += [v for v in row if isinstance(v, str) and HEX.fullmatch(v)]
                values += [h for v in row if isinstance(v, dict) for h in v.values()
                           if isinstance(h, str) and HEX.fullmatch(h)]
    return values


def _leaks(text: str, values: list[str]) -> list[str]:
    lowered = text.lower()
    return sorted({v[:12] + "..." for v in values if v and v.lower() in lowered})


def _exercise(evidence_root: str, keys: dict[str, str], call: Any) -> tuple[list[str], str]:
    """Registrations, lookups, victims' status, intake, refusals and a scan with a match;
    ``call(method, path, who, **kw)`` sends each. Returns the secrets and the scan's id."""
    case = call("POST", "/v1/cases", "charity", json={}).json
    cid = case["case_id"]
    code = call("POST", f"/v1/cases/{cid}/intake-links", "charity").json["code"]
    lines = [hash_line(21), hash_line(22)]
    assert call("POST", f"/v1/cases/{cid}/hashes", "charity", json=lines).status_code == 200
    assert call("POST", "/v1/intake", None, json={"lines": [hash_line(23)]},
                headers={"X-Intake-Code": code}).status_code == 200
    for hashes in ([{"algorithm": "pdq", "value": lines[0]["hashes"]["pdq"]}],
                   [{"algorithm": "sha256", "value": lines[1]["sha256"]}],
                   [{"algorithm": "md5", "value": "0" * 32}]):
        assert call("POST", "/v1/lookup", "platform", json={"hashes": hashes}).status_code == 200
    assert call("GET", "/v1/status", None, headers=basic(case["case_ref"], case["secret"])
                ).status_code == 200
    assert call("GET", "/v1/status", None, headers=basic(case["case_ref"], "WRONG-SECRET")
                ).status_code == 401
    assert call("GET", "/v1/cases/1", None, headers={
        "Authorization": "Bearer " + keys["charity"][:-3] + "xyz"}).status_code == 401
    assert call("GET", "/v1/cases/1", None, headers={
        "Authorization": "Bearer hsk_0123456789ab_" + "A" * 43}).status_code == 401
    evidence = Path(evidence_root) / "phone"
    evidence.mkdir()
    (evidence / "copy.jpg").write_bytes(encode(noise_image(21), "JPEG", quality=90))
    scan = call("POST", "/v1/scans", "forensic", json={"source": str(evidence)}).json
    return [case["secret"], code], scan["scan_id"]


def test_no_secret_or_hash_value_in_the_app_log(api: Api, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("workers.jobs")
    caplog.set_level(logging.DEBUG)
    for name in ("hashsvc", "werkzeug", "rq", "flask.app"):
        caplog.set_level(logging.DEBUG, logger=name)

    def call(method: str, path: str, who: str | None, **kw: Any) -> Any:
        return api.call(method, path, who, **kw)

    extra, scan_id = _exercise(api.settings.evidence_roots, api.keys, call)
    assert wait_for_scan(api, scan_id)["candidates"] == 1
    candidates = api.call("GET", f"/v1/scans/{scan_id}/candidates", "forensic").json
    match_id = candidates["candidates"][0]["match_id"]
    assert api.call("POST", f"/v1/scans/{scan_id}/review", "forensic", json={
        "match_ids": [match_id], "decision": "confirmed", "reviewer": "A"}).status_code == 200

    # A database error whose text carries hash values (PostgreSQL's DETAIL line and the
    # statement's parameters): logged as the 500 it becomes, without them.
    from sqlalchemy.exc import IntegrityError

    leaked = hash_line(24)

    def duplicate(*_args: Any, **_kwargs: Any) -> None:
        raise IntegrityError("INSERT INTO bank_hashes (value) VALUES (%(value)s)",
                             {"value": leaked["hashes"]["pdq"]}, Exception(
                                 "duplicate key value violates unique constraint\nDETAIL:  Key "
                                 f"(value)=({leaked['sha256']}) already exists."))

    monkeypatch.setattr(api.store, "register", duplicate)
    case = new_case(api)
    failed = api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[leaked])
    assert failed.status_code == 500
    assert "database error (Exception: duplicate key value violates" in caplog.text
    values = _secrets_and_hashes(api.store, api.keys, extra + [
        case["secret"], leaked["hashes"]["pdq"], leaked["sha256"]])
    assert len(values) > 20
    assert _leaks(caplog.text, values) == []


def test_no_secret_or_hash_value_in_gunicorn_logs(tmp_path: Path) -> None:
    """``hashsvc serve --access-log``: its error log (standard error) and access log."""
    from test_gunicorn import Server

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env.update(HASHSVC_DATA_DIR=str(tmp_path / "data"), HASHSVC_EVIDENCE_ROOTS=str(evidence),
               HASHSVC_WORKERS="1", HASHSVC_LOOKUP_REFRESH_SECONDS="0.2")
    access = tmp_path / "access.log"
    server = Server(env, tmp_path / "gunicorn.log", "--access-log", str(access))
    try:
        server.cli("admin", "create-org", "Operator")
        keys = {role: server.cli("admin", "create-key", "--org", "Operator", "--role", role)
                for role in ("charity", "forensic", "platform", "admin")}

        def call(method: str, path: str, who: str | None, json: Any = None,
                 headers: dict[str, str] | None = None) -> Any:
            status, body = server.request(method, path, keys[who] if who else None, json,
                                          headers)

            class Answer:
                pass

            answer = Answer()
            answer.status_code, answer.json = status, body  # type: ignore[attr-defined]
            return answer

        extra, scan_id = _exercise(str(evidence), keys, call)
        for _ in range(600):
            if server.request("GET", f"/v1/scans/{scan_id}", keys["forensic"])[1]["state"] \
                    in ("done", "failed"):
                break
            time.sleep(0.1)
    finally:
        server.stop()
    logs = (tmp_path / "gunicorn.log").read_text() + access.read_text()
    assert "POST /v1/lookup" in logs and "GET /v1/status" in logs  # the access log is there
    from hashsvc.settings import load_settings
    from hashsvc.store import Store

    store = Store.open(load_settings(env={}, data_dir=str(tmp_path / "data")))
    try:
        values = _secrets_and_hashes(store, keys, extra)
        assert store.scan_counts(scan_id)["matched_files"] == 1
    finally:
        store.close()
    assert len(values) > 20
    assert _leaks(logs, values) == []


# --- evidence roots ------------------------------------------------------------------------------


def test_evidence_roots_hold_for_odd_paths_and_links_inside_a_scan(
        api: Api, tmp_path: Path) -> None:
    """Beyond test_api's test_scan_sources_must_stay_inside_an_evidence_root: other spellings
    of a way out, and a link inside an evidence folder is never followed by the scan."""
    pytest.importorskip("workers.jobs")
    root = tmp_path / "evidence"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "victim.jpg").write_bytes(encode(noise_image(31), "JPEG", quality=90))
    (root / "dump").mkdir()
    (root / "dump" / "ok.jpg").write_bytes(encode(noise_image(32), "JPEG", quality=90))
    (root / "dump" / "out").symlink_to(outside)  # a folder link out of the root
    (root / "dump" / "file-out.jpg").symlink_to(outside / "victim.jpg")
    (root / "link-root").symlink_to(outside)
    refused = [f"file://{root}/../elsewhere", f"file://{outside}", f"{root}/dump/out",
               f"{root}/dump/file-out.jpg", f"{root}/link-root", f"{root}/link-root/victim.jpg",
               f"{root}//..//elsewhere", f"{root}/./../elsewhere", f"{root}/dump/%2e%2e/x",
               f"{root}\\..\\elsewhere", str(root)[1:], "~/evidence", f"{root}/dump\x00",
               f"file:{root}", f"FILE://{root}", f"file://localhost{root}", f"{root}/" + "a" * 5000,
               [str(root)], {"path": str(root)}]
    for source in refused:
        response = api.call("POST", "/v1/scans", "forensic", json={"source": source})
        assert response.status_code == 400, (source, response.json)
    case = new_case(api)
    outside_line = {**hash_line(31), "file": "victim.jpg"}
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[outside_line])
    started = api.call("POST", "/v1/scans", "forensic", json={"source": str(root / "dump")})
    assert started.status_code == 202
    final = wait_for_scan(api, started.json["scan_id"])
    assert final["state"] == "done" and final["candidates"] == 0  # the outside copy unseen
    errors = api.call("GET", f"/v1/scans/{started.json['scan_id']}/errors", "forensic").json
    assert errors["skipped"] == {"symlink": 2}


# --- S3 endpoints ---------------------------------------------------------------------------------


def test_an_s3_endpoint_comes_only_from_configuration(settings: Settings, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No request can point hashsvc at another S3 endpoint: the scan takes an s3:// URI of an
    allowed bucket and nothing else, the source is stored in its normal form, and the S3
    reader's client takes its endpoint from the environment or profile only."""
    jobs = pytest.importorskip("workers.jobs")
    from hashsvc.sources import s3

    queued: list[str] = []
    monkeypatch.setattr(jobs, "start_scan", lambda _settings, scan_id: queued.append(scan_id))
    api = make_api(api_settings(settings, tmp_path, s3_buckets="evidence-bucket"))
    tries = ["s3://evidence-bucket@attacker.example/x", "s3://attacker.example/evidence-bucket",
             "s3://evidence-bucket.attacker.example/x", "s3://evidence-bucket:9000/x",
             "s3://user:pass@evidence-bucket/x", "s3://evidence-bucket/../other/x",
             "S3://evidence-bucket/x", "s3:///evidence-bucket/x", "s3://Evidence-Bucket/x",
             "s3://evidence-bucket/x\x00", "s3://evidence-bucket/x\u202e",
             "http://attacker.example/evidence-bucket/x",
             "https://s3.amazonaws.com/evidence-bucket"]
    for source in tries:
        response = api.call("POST", "/v1/scans", "forensic", json={"source": source})
        assert response.status_code == 400, (source, response.json)
    body = {"source": "s3://evidence-bucket/DCIM/", "endpoint_url": "http://attacker.example",
            "endpoint": "http://attacker.example", "region": "attacker", "profile": "attacker",
            "aws_access_key_id": "AKIAATTACKER", "s3": {"endpoint_url": "http://attacker"}}
    started = api.call("POST", "/v1/scans", "forensic", json=body)
    assert started.status_code == 202
    scan = api.store.get_scan(started.json["scan_id"])
    assert scan.source == "s3://evidence-bucket/DCIM/"
    assert "attacker" not in json.dumps(scan.settings or {}, default=str)
    # The reader and its client have no way to take an endpoint from a scan.
    assert list(inspect.signature(s3.S3Source.__init__).parameters) == [
        "self", "uri", "limits", "read_threads"]
    assert list(inspect.signature(s3.make_client).parameters) == ["max_connections"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the configured one
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = s3.make_client(1)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    source_code = "\n".join(inspect.getsource(m) for m in _api_modules())
    assert "endpoint_url" not in source_code and "AWS_ENDPOINT" not in source_code
    api.store.close()


def _api_modules() -> list[Any]:
    from hashsvc.api import admin, auth, cases, health, lookup, openapi, scans
    from hashsvc.api import intake as intake_api
    from hashsvc.api import victims as victims_api

    return [admin, auth, cases, health, lookup, openapi, scans, intake_api, victims_api]


def test_a_failed_job_keeps_no_database_values(store: Store) -> None:
    """RQ keeps a failed job's traceback in Redis and the scan's error list shows its text: a
    database error in a job leaves there the statement, never its values or DETAIL line."""
    jobs = pytest.importorskip("workers.jobs")
    from sqlalchemy.exc import IntegrityError

    leaked = hash_line(25)

    def failing(scan_id: str) -> str:
        raise IntegrityError("INSERT INTO scan_files (sha256) VALUES (%(sha256)s)",
                             {"sha256": leaked["sha256"]}, Exception(
                                 "duplicate key value violates unique constraint\nDETAIL:  Key "
                                 f"(sha256)=({leaked['hashes']['pdq']}) already exists."))

    with pytest.raises(Exception) as raised:
        jobs.scrubbed(failing)("scan-1")
    shown = "".join(traceback.format_exception(raised.value))
    assert "database error (Exception: duplicate key value violates unique constraint)" in shown
    assert "INSERT INTO scan_files" in shown
    assert leaked["sha256"] not in shown and leaked["hashes"]["pdq"] not in shown
    with pytest.raises(ValueError, match="plain"):  # other failures are left as they are
        jobs.scrubbed(lambda: (_ for _ in ()).throw(ValueError("plain")))()
    # The engine itself names no values: a statement that fails shows none.
    with pytest.raises(Exception) as failed, store.engine.begin() as conn:
        conn.execute(text("SELECT * FROM no_such_table WHERE x = :x"), {"x": leaked["sha256"]})
    assert "no_such_table" in str(failed.value)
    assert leaked["sha256"] not in str(failed.value)


def test_the_audit_summary_fails_on_vulnerabilities_and_says_what_was_not_audited() -> None:
    """scripts/audit.sh (in `make test`): pip-audit prints "No known vulnerabilities found"
    even when it reached no vulnerability service; the summary says what was checked."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "audit_summary", Path(__file__).parents[1] / "scripts" / "audit_summary.py")
    assert spec is not None and spec.loader is not None
    audit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(audit)
    clean = {"name": "flask", "version": "3.1.0", "vulns": []}
    bad = {"name": "pillow", "version": "9.0.0", "vulns": [
        {"id": "PYSEC-2022-10", "fix_versions": ["9.0.1"]}]}
    unknown = {"name": "alembic", "skip_reason": "Dependency not found on PyPI and could not "
                                                "be audited: alembic (1.20.1)"}
    assert audit.summarise({"dependencies": [clean]}, True) == (0, [
        "audit: 1 of 1 installed distributions checked against the vulnerability service",
        "audit: no known vulnerabilities"])
    status, lines = audit.summarise({"dependencies": [clean, bad, unknown]}, False)
    assert status == 1
    assert "audit: VULNERABLE pillow 9.0.0: PYSEC-2022-10 (fixed in: 9.0.1)" in lines
    status, lines = audit.summarise({"dependencies": [unknown, unknown]}, False)
    assert status == 0 and lines[0].startswith("audit: 0 of 2 installed distributions")
    assert lines[1].startswith("audit: NOT AUDITED: 2 distributions could not be checked")
    assert audit.summarise({"dependencies": [clean, unknown]}, True)[0] == 2
