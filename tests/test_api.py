"""The HTTP API through Flask's test client, on SQLite and on real PostgreSQL (and Redis)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hashsvc import accounts, audit
from hashsvc.api import create_app
from hashsvc.hashing import hash_bytes
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.store import Store

from conftest import encode, noise_image

REDIS_URL = os.environ.get("HASHSVC_TEST_REDIS", "redis://127.0.0.1:6379/15")


@dataclass
class Api:
    """An app with one org per role and side ("a" and "b"), and a key for each."""

    app: Flask
    client: FlaskClient
    settings: Settings
    store: Store
    keys: dict[str, str]  # "charity", "charity_b", "forensic", ... -> key text
    orgs: dict[str, int]  # same names -> org id

    def call(self, method: str, path: str, who: str | None = None, **kwargs: Any) -> Any:
        """A request as ``who`` (a key name; None sends no key)."""
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        return self.client.open(path, method=method, headers=headers, **kwargs)


def make_api(settings: Settings) -> Api:
    """Create the app and its orgs and keys."""
    app = create_app(settings)
    store = app.extensions["hashsvc"].store
    keys, orgs = {}, {}
    for role in accounts.ROLES:
        for side in ("", "_b"):
            org_id = accounts.create_org(store, f"{role}{side or '_a'} org")
            keys[role + side] = accounts.create_key(store, org_id, role).key
            orgs[role + side] = org_id
    return Api(app, app.test_client(), settings, store, keys, orgs)


def api_settings(base: Settings, tmp_path: Path, **changes: Any) -> Settings:
    """Test settings: an evidence root under tmp_path, no rate limits, fast refreshes."""
    evidence = tmp_path / "evidence"
    evidence.mkdir(exist_ok=True)
    values: dict[str, Any] = {"evidence_roots": str(evidence), "rate_limit_per_minute": 0,
                              "status_rate_limit": "", "audit_lookup_seconds": 0,
                              "lookup_refresh_seconds": 0.2, "workers": 1}
    values.update(changes)
    return base.replace(**values)


def store_settings(request: pytest.FixtureRequest) -> Settings:
    """The base settings of a test parametrised over "sqlite" and "postgresql" (the
    PostgreSQL store is emptied after the test)."""
    if request.param == "sqlite":
        return request.getfixturevalue("settings")  # type: ignore[no-any-return]
    request.getfixturevalue("pg_store")  # truncates every table after the test
    return request.getfixturevalue("pg_settings")  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """The API on the embedded store and on PostgreSQL (emptied after the test)."""
    made = make_api(api_settings(store_settings(request), tmp_path))
    yield made
    made.store.close()


def hash_line(seed: int) -> dict[str, Any]:
    """The line ``hashsvc hash`` prints for a generated picture."""
    data = encode(noise_image(seed), "JPEG", quality=90)
    return {"file": f"IMG_{seed}.jpg", **hash_bytes(data, with_variants=True).to_json()}


def new_case(api: Api, who: str = "charity", **body: Any) -> dict[str, Any]:
    """Create a case and return the response body."""
    response = api.call("POST", "/v1/cases", who, json=body)
    assert response.status_code == 201, response.json
    return response.json


def wait_for_scan(api: Api, scan_id: str, who: str = "forensic", timeout: float = 60
                  ) -> dict[str, Any]:
    """Poll a scan until it finishes; its last state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.call("GET", f"/v1/scans/{scan_id}", who).json
        if body["state"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"scan {scan_id} did not finish: {body}")


# -- probes and errors -------------------------------------------------------------------------

def test_health_and_ready(api: Api) -> None:
    assert api.call("GET", "/v1/health").json == {"status": "ok"}
    ready = api.call("GET", "/v1/ready")
    assert ready.status_code == 200 and ready.json["database"] == "ok"


def test_ready_checks_redis(settings: Settings, tmp_path: Path) -> None:
    up = create_app(api_settings(settings, tmp_path, redis_url=REDIS_URL))
    assert up.test_client().get("/v1/ready").json["redis"] == "ok"
    down = create_app(api_settings(settings, tmp_path, redis_url="redis://127.0.0.1:1/0"))
    response = down.test_client().get("/v1/ready")
    assert response.status_code == 503
    assert response.json["error"] == "unavailable" and "redis" in response.json["message"]
    for app in (up, down):
        app.extensions["hashsvc"].store.close()


def test_errors_are_json_with_the_right_status(api: Api) -> None:
    case = new_case(api)
    cases = [
        (api.call("GET", "/v1/nowhere"), 404, "not_found"),
        (api.call("DELETE", "/v1/cases", "charity"), 405, "method_not_allowed"),
        (api.call("POST", "/v1/cases", "charity", data="{", content_type="application/json"),
         400, "bad_request"),
        (api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", data="[]",
                  content_type="text/plain"), 415, "unsupported_media_type"),
        (api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",
                  json={"not": "a list"}), 400, "bad_input"),
        (api.call("GET", "/v1/cases/1"), 401, "unauthorized"),
        (api.call("GET", "/v1/cases/99999", "charity"), 404, "not_found"),
        (api.call("GET", f"/v1/cases/{2 ** 70}", "charity"), 404, "not_found"),
        (api.call("GET", "/v1/scans/not-a-uuid", "forensic"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.path, response.json)
        assert response.is_json and set(response.json) >= {"error", "message"}
        assert response.json["error"] == code
    assert cases[5][0].headers["WWW-Authenticate"].startswith("Bearer")


def test_oversized_body_is_413(settings: Settings, tmp_path: Path) -> None:
    api = make_api(api_settings(settings, tmp_path, max_request_bytes=2000))
    case = new_case(api)
    response = api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",
                        json=[hash_line(1), hash_line(2)])
    assert response.status_code == 413 and response.json["error"] == "too_large"
    api.store.close()


def test_an_unexpected_failure_is_a_bare_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_args: Any) -> None:
        raise RuntimeError("secret detail /srv/evidence/path")

    monkeypatch.setattr("hashsvc.api.cases.case_json", explode)
    case = new_case(api)
    response = api.call("GET", f"/v1/cases/{case['case_id']}", "charity")
    assert response.status_code == 500
    assert response.json == {"error": "internal", "message": "internal error"}
    assert b"Traceback" not in response.data and b"secret" not in response.data
    last = audit.entries(api.store, audit.head(api.store).seq - 1, 1)[0]
    assert (last.action, last.details["outcome"]) == ("case.read", "failed")


def test_keys_must_be_valid_and_unrevoked(api: Api) -> None:
    assert api.call("GET", "/v1/cases/1", headers={"Authorization": "Basic x"}).status_code == 401
    forged = api.keys["charity"][:-4] + "AAAA"
    assert api.call("GET", "/v1/cases/1", headers={"Authorization": f"Bearer {forged}"}
                    ).status_code == 401
    new = accounts.create_key(api.store, api.orgs["charity"], "charity")
    headers = {"Authorization": f"Bearer {new.key}"}
    assert api.client.post("/v1/cases", headers=headers, json={}).status_code == 201
    accounts.revoke_key(api.store, new.key_id)
    assert api.client.post("/v1/cases", headers=headers, json={}).status_code == 401


def test_rate_limit_answers_429(settings: Settings, tmp_path: Path) -> None:
    for n, redis_url in enumerate(("", REDIS_URL)):
        api = make_api(api_settings(settings, tmp_path, rate_limit_per_minute=3,
                                    redis_url=redis_url, data_dir=str(tmp_path / f"d{n}")))
        statuses = [api.call("GET", "/v1/cases/1", "charity").status_code for _ in range(5)]
        # A minute boundary between requests restarts the count; at most once in 5 requests.
        assert statuses.count(429) >= 1 and statuses[0] == 404, (redis_url, statuses)
        body = api.call("GET", "/v1/cases/1", "charity").json
        assert body["error"] == "rate_limited"
        assert api.call("GET", "/v1/cases/1", "charity_b").status_code == 404  # its own quota
        api.store.close()


# -- cases -------------------------------------------------------------------------------------

def test_case_lifecycle(api: Api) -> None:
    case = new_case(api)
    assert case["case_ref"].startswith("case-")
    given = new_case(api, case_ref="RPH-2025-0042")
    assert given["case_ref"] == "RPH-2025-0042"
    dup = api.call("POST", "/v1/cases", "charity", json={"case_ref": "RPH-2025-0042"})
    assert dup.status_code == 409 and dup.json["error"] == "conflict"
    bad = api.call("POST", "/v1/cases", "charity", json={"case_ref": "has space"})
    assert bad.status_code == 400

    path = f"/v1/cases/{case['case_id']}"
    lines = [hash_line(1), hash_line(2), {"file": "broken.jpg", "error": "truncated",
                                          "stage": "decode"}]
    first = api.call("POST", path + "/hashes", "charity", json=lines).json
    assert first["images_added"] == 2 and first["lines_with_errors_skipped"] == 1
    assert first["hashes_added"] > 2 * 5  # exact, perceptual and eight PDQ orientations
    again = api.call("POST", path + "/hashes", "charity", json=lines).json
    assert again["images_added"] == 0 and again["images_already_registered"] == 2
    assert again["hashes_added"] == 0

    shown = api.call("GET", path, "charity").json
    assert shown["state"] == "active" and shown["images"] == 2
    other = new_case(api, "charity_b")
    listed = api.call("GET", "/v1/cases", "charity").json["cases"]
    assert {c["case_id"] for c in listed} == {case["case_id"], given["case_id"]}
    assert other["case_id"] not in {c["case_id"] for c in
                                    api.call("GET", "/v1/cases?limit=1000", "charity").json["cases"]}
    page = api.call("GET", "/v1/cases?limit=1&offset=1", "charity").json["cases"]
    assert len(page) == 1 and page[0]["case_id"] in {case["case_id"], given["case_id"]}
    assert api.call("GET", "/v1/cases?limit=0", "charity").status_code == 400
    assert shown["hashes"] == first["hashes_added"] and shown["withdrawn_at"] is None

    gone = api.call("POST", path + "/withdraw", "charity").json
    assert gone["state"] == "withdrawn" and gone["images_withdrawn"] == 2
    assert gone["images"] == 0 and gone["hashes"] == 0
    assert api.call("POST", path + "/withdraw", "charity").json["images_withdrawn"] == 0
    late = api.call("POST", path + "/hashes", "charity", json=[hash_line(3)])
    assert late.status_code == 409


@pytest.mark.parametrize("mutate, message", [
    (lambda line: line.clear(), "carries no hash"),
    (lambda line: line.update(sha256="zz" * 32), "sha256"),
    (lambda line: line["hashes"].update(pdq="ab"), "pdq"),
    (lambda line: line["hashes"].update(nohash="00" * 8), "unknown hash algorithm"),
    (lambda line: line.update(size="12"), "size"),
    (lambda line: line.update(width=True), "width"),
    (lambda line: line["quality"].update(pdq=101), "quality"),
    (lambda line: line["variants"]["pdq"].update(rot45="00" * 32), "unknown variant"),
    (lambda line: line.update(variants=[]), "variants"),
    (lambda line: line.update(format="x\0"), "format"),
])
def test_every_line_is_validated_and_the_bad_one_named(settings: Settings, tmp_path: Path,
                                                        mutate: Any, message: str) -> None:
    api = make_api(api_settings(settings, tmp_path))
    case = new_case(api)
    lines = [hash_line(1), hash_line(2), hash_line(3)]
    mutate(lines[2])
    response = api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=lines)
    assert response.status_code == 400, response.json
    assert response.json["index"] == 2 and message in response.json["message"]
    # Nothing of the request was registered: validation precedes every write.
    assert api.call("GET", f"/v1/cases/{case['case_id']}", "charity").json["images"] == 0
    api.store.close()


# -- lookup ------------------------------------------------------------------------------------

def lookup(api: Api, hashes: list[dict[str, Any]], who: str = "platform") -> Any:
    """POST /v1/lookup and return the response."""
    return api.call("POST", "/v1/lookup", who, json={"hashes": hashes})


def eventually(check: Any, timeout: float = 5.0) -> Any:
    """Call ``check`` until it returns something true (the lookup index refreshes each 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_lookup_matches_new_hashes_and_forgets_withdrawn_ones(api: Api) -> None:
    line = hash_line(7)
    other = hash_line(8)
    near = format(int(line["hashes"]["pdq"], 16) ^ 0b1011, "064x")  # 3 bits away
    queries = [{"algorithm": "pdq", "value": near},
               {"algorithm": "sha256", "value": line["sha256"].upper()},
               {"algorithm": "md5", "value": line["md5"]},
               {"algorithm": "phash", "value": line["hashes"]["phash"]},
               {"algorithm": "pdq", "value": other["hashes"]["pdq"]},
               {"algorithm": "pdq", "value": near, "quality": 10}]
    empty = lookup(api, queries).json["results"]
    assert [r["matches"] for r in empty] == [[]] * 6  # builds the index on an empty bank

    case = new_case(api)
    path = f"/v1/cases/{case['case_id']}"
    assert api.call("POST", path + "/hashes", "charity", json=[line]).status_code == 200
    results = eventually(lambda: (r := lookup(api, queries).json["results"])[0]["matches"]
                         and r)
    assert results, "a new registration did not match within seconds"
    assert [r["algorithm"] for r in results] == [q["algorithm"] for q in queries]
    pdq, sha, md5, phash, unrelated, flat = (r["matches"] for r in results)
    assert pdq[0]["algorithm"] == "pdq" and pdq[0]["distance"] == 3
    assert sha[0]["distance"] == 0 and md5[0]["distance"] == 0 and phash[0]["distance"] == 0
    assert unrelated == [] and flat == []
    ref = pdq[0]["match_ref"]
    assert {sha[0]["match_ref"], md5[0]["match_ref"], phash[0]["match_ref"]} == {ref}
    assert set(pdq[0]) == {"match_ref", "algorithm", "distance"}  # no case, no victim data
    assert case["case_ref"] not in str(results)
    # Stable for one platform, unrelated for another.
    assert lookup(api, queries[:1]).json["results"][0]["matches"][0]["match_ref"] == ref
    other_ref = lookup(api, queries[:1], "platform_b").json["results"][0]["matches"][0]
    assert other_ref["match_ref"] != ref

    assert api.call("POST", path + "/withdraw", "charity").status_code == 200
    assert lookup(api, queries[1:2]).json["results"][0]["matches"] == []  # exact: at once
    assert eventually(lambda: lookup(api, queries[:1]).json["results"][0]["matches"] == []), \
        "a withdrawn hash still matched"


def test_lookup_limits_and_validation(api: Api) -> None:
    value = "0" * 64
    assert lookup(api, []).json == {"results": []}
    too_many = lookup(api, [{"algorithm": "pdq", "value": value}] * 10_001)
    assert too_many.status_code == 413 and too_many.json["error"] == "too_large"
    assert lookup(api, [{"algorithm": "pdq", "value": value}] * 10_000).status_code == 200
    for bad in ({"algorithm": "pdq", "value": "00"}, {"algorithm": "sha1", "value": "00"},
                {"algorithm": "md5", "value": "g" * 32}, "pdq",
                {"algorithm": "pdq", "value": value, "quality": 200}):
        response = lookup(api, [{"algorithm": "md5", "value": "0" * 32}, bad])
        assert response.status_code == 400 and response.json["index"] == 1, bad
    assert api.call("POST", "/v1/lookup", "platform", json=[]).status_code == 400


# -- scans -------------------------------------------------------------------------------------

def test_scan_sources_must_stay_inside_an_evidence_root(api: Api, tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    (root / "dump").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    refused = [str(outside), str(root / "dump" / ".." / ".." / "elsewhere"),
               str(root / "dump" / ".."), str(root / "escape"), str(root / "missing"),
               "s3://bucket/prefix", "http://example.org/x", "relative/path", "", 7, None,
               str(tmp_path / "missing-outside")]
    for source in refused:
        response = api.call("POST", "/v1/scans", "forensic",
                            json={"source": source, "label": "x"})
        assert response.status_code == 400, (source, response.json)
    messages = {api.call("POST", "/v1/scans", "forensic", json={"source": s}).json["message"]
                for s in (str(tmp_path / "missing-outside"), str(outside))}
    assert messages == {"source is not inside an evidence root"}  # existence never revealed
    s3 = api.call("POST", "/v1/scans", "forensic", json={"source": "s3://b/p"}).json
    assert "s3_buckets" in s3["message"]


def test_scan_through_the_api(api: Api, tmp_path: Path) -> None:
    pytest.importorskip("workers.jobs")
    case = new_case(api)
    line = hash_line(11)
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[line])
    dump = tmp_path / "evidence" / "phone"
    (dump / "DCIM").mkdir(parents=True)
    (dump / "DCIM" / "copy.jpg").write_bytes(encode(noise_image(11), "JPEG", quality=90))
    (dump / "DCIM" / "other.jpg").write_bytes(encode(noise_image(12), "JPEG", quality=90))
    (dump / "broken.jpg").write_bytes(encode(noise_image(13), "JPEG")[:300])

    started = api.call("POST", "/v1/scans", "forensic",
                       json={"source": "file://" + str(dump), "label": "Exhibit 1"})
    assert started.status_code == 202, started.json
    scan_id = started.json["scan_id"]
    final = wait_for_scan(api, scan_id)
    assert final["state"] == "done", final
    assert final["label"] == "Exhibit 1" and final["source"] == str(dump)
    assert final["images_hashed"] == 2 and final["candidates"] == 1 and final["errors"] == 1
    assert final["files_done"] == 3 and final["finished_at"]

    matches = api.call("GET", f"/v1/scans/{scan_id}/matches", "forensic").json["matches"]
    assert matches == build_report(api.store, scan_id)["matches"]
    assert [m["path"] for m in matches] == ["DCIM/copy.jpg"]
    assert matches[0]["case"] == case["case_ref"]
    errors = api.call("GET", f"/v1/scans/{scan_id}/errors", "forensic").json
    assert [e["path"] for e in errors["errors"]] == ["broken.jpg"]
    report = api.call("GET", f"/v1/scans/{scan_id}/report", "forensic").json
    assert report["scan_id"] == scan_id and report["matches"] == matches

    cancel = api.call("POST", f"/v1/scans/{scan_id}/cancel", "forensic")
    assert cancel.status_code == 409
    listed = api.call("GET", "/v1/scans", "forensic").json["scans"]
    assert [(s["scan_id"], s["state"]) for s in listed] == [(scan_id, "done")]
    assert api.call("GET", "/v1/scans", "forensic_b").json["scans"] == []
    for path in ("", "/matches", "/errors", "/report"):
        assert api.call("GET", f"/v1/scans/{scan_id}{path}", "forensic_b").status_code == 404
    assert api.call("POST", f"/v1/scans/{scan_id}/cancel", "forensic_b").status_code == 404


def test_cancel_a_queued_scan(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = pytest.importorskip("workers.jobs")
    started: list[str] = []
    # Hold the scan in the queue so that the cancel surely comes first.
    monkeypatch.setattr(jobs, "start_scan", lambda _settings, scan_id: started.append(scan_id))
    response = api.call("POST", "/v1/scans", "forensic",
                        json={"source": str(tmp_path / "evidence")})
    scan_id = response.json["scan_id"]
    assert started == [scan_id]
    cancel = api.call("POST", f"/v1/scans/{scan_id}/cancel", "forensic")
    assert cancel.status_code == 202 and cancel.json == {"scan_id": scan_id,
                                                        "cancel_requested": True}
    assert api.store.get_scan(scan_id).cancel_requested


def test_a_queue_failure_is_503_and_recorded(api: Api, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = pytest.importorskip("workers.jobs")

    def down(_settings: Settings, _scan_id: str) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(jobs, "start_scan", down)
    response = api.call("POST", "/v1/scans", "forensic",
                        json={"source": str(tmp_path / "evidence")})
    assert response.status_code == 503 and response.json["error"] == "unavailable"
    entries = audit.entries(api.store, 0, 1000)
    scan_id = entries[-1].target_id
    assert scan_id and api.store.get_scan(scan_id).state == "failed"


# -- admin and audit -----------------------------------------------------------------------------

def test_admin_manages_orgs_and_keys(api: Api) -> None:
    made = api.call("POST", "/v1/orgs", "admin", json={"name": "Helpline North"})
    assert made.status_code == 201
    org_id = made.json["org_id"]
    assert api.call("POST", "/v1/orgs", "admin", json={"name": "Helpline North"}
                    ).status_code == 409
    assert "Helpline North" in {o["name"] for o in api.call("GET", "/v1/orgs", "admin"
                                                            ).json["orgs"]}
    key = api.call("POST", "/v1/api-keys", "admin",
                   json={"org_id": org_id, "role": "charity", "label": "caseworker 1"})
    assert key.status_code == 201 and key.json["key"].startswith("hsk_")
    assert api.call("POST", "/v1/api-keys", "admin", json={"org_id": org_id, "role": "root"}
                    ).status_code == 400
    assert api.call("POST", "/v1/api-keys", "admin", json={"org_id": 10 ** 9, "role": "charity"}
                    ).status_code == 404
    headers = {"Authorization": f"Bearer {key.json['key']}"}
    assert api.client.post("/v1/cases", headers=headers, json={}).status_code == 201
    listed = api.call("GET", f"/v1/api-keys?org_id={org_id}", "admin").json["keys"]
    assert [k["label"] for k in listed] == ["caseworker 1"]
    assert key.json["key"] not in str(listed) and "key_hash" not in listed[0]
    revoked = api.call("POST", f"/v1/api-keys/{key.json['key_id']}/revoke", "admin")
    assert revoked.status_code == 200
    assert api.client.post("/v1/cases", headers=headers, json={}).status_code == 401


def test_requests_leave_audit_entries_even_when_refused(api: Api) -> None:
    case = new_case(api)
    case_path = f"/v1/cases/{case['case_id']}"
    api.call("GET", case_path, "charity")
    api.call("GET", case_path, "charity_b")  # another org's case: 404, recorded as denied
    api.call("GET", case_path, "platform")  # wrong role: 403
    api.call("GET", case_path, headers={"Authorization": "Bearer hsk_abcdef012345_nope"})
    lookup(api, [{"algorithm": "pdq", "value": "0" * 64}])
    api.call("GET", "/v1/health")  # probes are not audited

    page = api.call("GET", "/v1/audit?limit=1000", "admin").json
    rows = [e for e in page["entries"] if e["action"] != "org.create"
            and e["action"] != "key.create"]
    summary = [(e["action"], e["target_id"], e["details"]["status"], e["details"]["outcome"],
                e["org_id"]) for e in rows]
    cid = str(case["case_id"])
    assert summary == [
        ("case.create", cid, 201, "ok", api.orgs["charity"]),
        ("case.read", cid, 200, "ok", api.orgs["charity"]),
        ("case.read", cid, 404, "denied", api.orgs["charity_b"]),
        ("case.read", cid, 403, "denied", api.orgs["platform"]),
        ("case.read", cid, 401, "denied", None),
        ("lookup", None, 200, "ok", api.orgs["platform"]),
    ]
    assert rows[2]["details"]["denied"] == "other_org"
    assert rows[4]["details"]["key_prefix"] == "abcdef012345"
    assert rows[5]["details"]["hashes"] == 1
    verdict = api.call("GET", "/v1/audit/verify", "admin").json
    assert verdict["ok"] and verdict["problems"] == []
    assert verdict["head"]["seq"] == page["entries"][-1]["seq"] + 1  # the audit.read itself

    second = api.call("GET", f"/v1/audit?after={rows[0]['seq']}&limit=2", "admin").json
    assert [e["seq"] for e in second["entries"]] == [rows[0]["seq"] + 1, rows[0]["seq"] + 2]
    assert second["next_after"] == rows[0]["seq"] + 2
    assert api.call("GET", "/v1/audit?limit=0", "admin").status_code == 400


def test_successful_lookups_are_audited_in_summaries(settings: Settings, tmp_path: Path) -> None:
    """Lookups are the platforms' hot path: successful ones are audited as one entry per key per
    audit_lookup_seconds; a refused one still gets its own entry at once."""
    api = make_api(api_settings(settings, tmp_path, audit_lookup_seconds=0.3))
    query = [{"algorithm": "pdq", "value": "0" * 64}, {"algorithm": "md5", "value": "0" * 32}]
    for _ in range(5):
        assert lookup(api, query).status_code == 200
    assert lookup(api, query[:1], "platform_b").status_code == 200
    assert api.call("POST", "/v1/lookup", "platform", json={"hashes": "x"}).status_code == 400
    refused = audit.entries(api.store, 0, 10_000)[-1]
    assert (refused.action, refused.details["status"]) == ("lookup", 400)

    def summaries() -> list[Any]:
        return [e for e in audit.entries(api.store, 0, 10_000)
                if e.action == "lookup" and (e.details or {}).get("summary")]

    found = eventually(lambda: len(summaries()) == 2 and summaries(), timeout=5.0)
    assert found, "the lookup summaries were not written"
    by_key = {e.key_id: e.details for e in found}
    platform_key = accounts.authenticate(api.store, api.keys["platform"])
    assert platform_key is not None
    mine = by_key[platform_key.key_id]
    assert (mine["requests"], mine["hashes"], mine["matched"]) == (5, 10, 0)
    assert mine["first_at"] <= mine["last_at"]
    assert audit.verify(api.store) == []
    api.store.close()
