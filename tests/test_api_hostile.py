"""Hostile requests to every JSON-body endpoint, from every kind of caller, on SQLite and on
PostgreSQL: malformed JSON, wrong types in every field, odd Unicode in every string (NUL, lone
surrogates, direction marks, 10,000 characters), deep nesting, batches over their limits,
bodies over the size limit, odd credentials. The answer is always a 4xx JSON error
``{"error", "message"}`` (or, for a body that is hostile but valid, a success), never a 500,
and the audit chain still verifies afterwards.

tests/test_openapi.py runs schemathesis on every operation (values the schema allows and some
it does not); this file sends what schemathesis does not generate: bytes that are not JSON,
recursion bombs, text no database stores, and limits exceeded by one.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from hashsvc.api.openapi import document
from hashsvc.settings import Settings

from conftest import encode, noise_image
from test_api import (Api, api_settings, hash_line, make_api, new_case, store_settings,
                      wait_for_scan)

#: Bytes that are not JSON (or not what a JSON parser should take).
MALFORMED = [b"", b"{", b"[", b"}", b'{"a":}', b"{'a': 1}", b'{"a": 1} trailing', b"\xff\xfe\x00",
             b"\xef\xbb\xbf{}", b"nul", b"NaN", b'{"a": 1e999999}', b"1" * 5000,
             b'{"a": "\\ud800"}', b'{"a": "\\x00"}', b'{"\\u0000": 1}', b'"\\udfff"']
#: Within the size limit, deeper than any parser recurses.
DEEP = [b"[" * 60_000 + b"]" * 60_000, b'{"a":' * 60_000 + b"1" + b"}" * 60_000,
        b'{"hashes": ' + b"[" * 60_000 + b"]" * 60_000 + b"}"]
#: Every JSON type, and the integers and numbers that break columns and arithmetic.
WRONG = [None, True, False, 0, -1, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 1.5, -0.0, 1e308, "",
         [], {}, [[[[]]]], {"a": {"b": {}}}]
#: Text: NUL, lone surrogates, direction and zero-width marks, combining characters, line
#: separators, 10,000 characters, injection-shaped text.
ODD = ["\x00", "a\x00b", "\ud800", "\udfff\ud800", "\u202e\u202dtxt", "\ufeff", "\u200b",
       "e\u0301\u0301\u0301", "\U0001f4a5" * 1000, "x" * 10_000, "\u2028\u2029\r\n\t",
       "'; DROP TABLE cases; --", "../../../etc/passwd", "<script>alert(1)</script>",
       "%00%2e%2e", "\\u0000"]


@dataclass
class World:
    """The API with a case (secret, intake link), a finished scan with a candidate, and ids."""

    api: Api
    case_id: int
    case_ref: str
    secret: str
    intake_code: str
    scan_id: str
    match_id: int
    evidence: Path


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    jobs = pytest.importorskip("workers.jobs")
    api = make_api(api_settings(store_settings(request), tmp_path))
    case = new_case(api)
    line = hash_line(11)
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[line])
    link = api.call("POST", f"/v1/cases/{case['case_id']}/intake-links", "charity").json
    evidence = tmp_path / "evidence" / "phone"
    evidence.mkdir(parents=True)
    (evidence / "copy.jpg").write_bytes(encode(noise_image(11), "JPEG", quality=90))
    scan = api.call("POST", "/v1/scans", "forensic", json={"source": str(evidence)}).json
    assert wait_for_scan(api, scan["scan_id"])["state"] == "done"
    candidates = api.call("GET", f"/v1/scans/{scan['scan_id']}/candidates", "forensic").json
    match_id = candidates["candidates"][0]["match_id"]
    # From here on scans are recorded, never run: hostile bodies may start many.
    monkeypatch.setattr(jobs, "start_scan", lambda _settings, _scan_id: None)
    yield World(api, case["case_id"], case["case_ref"], case["secret"], link["code"],
                scan["scan_id"], match_id, evidence)
    api.store.close()


# --- the operations and their callers ---------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with ids filled in
    caller: str  # who may call it: a role, "victim" or "intake"
    valid: Any  # a body it accepts, every field present


def operations(w: World) -> list[Operation]:
    """Every operation of the OpenAPI document that takes a JSON body, with a valid body."""
    full_line = hash_line(12)
    wipe = {"medium": "Exhibit 1 phone", "method": "purge", "technique": "crypto erase",
            "tool": "nwipe", "tool_version": "0.34", "verification_method": "re-scan",
            "verification_result": "no matches", "operator": "DC Smith", "verifier": "DS Jones",
            "date": "2025-05-01", "notes": "ok"}
    ops = [
        Operation("POST", "/v1/cases", "charity", {"case_ref": "RPH-HOSTILE",
                                                   "features_consent": False}),
        Operation("POST", f"/v1/cases/{w.case_id}/hashes", "charity", [full_line]),
        Operation("POST", f"/v1/cases/{w.case_id}/consent", "charity", {"features": True}),
        Operation("POST", "/v1/intake", "intake", {"lines": [full_line], "code": w.intake_code}),
        Operation("POST", "/v1/scans", "forensic", {"source": str(w.evidence), "label": "Ex 1",
                                                    "verify_against": None}),
        Operation("POST", f"/v1/scans/{w.scan_id}/wipe-records", "forensic", wipe),
        Operation("POST", f"/v1/scans/{w.scan_id}/review", "forensic", {
            "match_ids": [w.match_id], "decision": "rejected", "reviewer": "Analyst A",
            "reason": "not the same picture"}),
        Operation("POST", "/v1/lookup", "platform", {"hashes": [
            {"algorithm": "pdq", "value": full_line["hashes"]["pdq"], "quality": 90}]}),
        Operation("POST", "/v1/feedback", "platform", {"match_ref": "m_" + "0" * 32,
                                                       "outcome": "removed"}),
        Operation("POST", f"/v1/orgs/{w.api.orgs['platform']}/bank-sync", "admin",
                  {"granted": True}),
        Operation("POST", "/v1/orgs", "admin", {"name": "Hostile Helpline"}),
        Operation("POST", "/v1/api-keys", "admin", {"org_id": w.api.orgs["charity"],
                                                    "role": "charity", "label": "a label"}),
        Operation("POST", "/v1/status/consent", "victim", {"features": False,
                                                           "case_ref": w.case_ref,
                                                           "secret": w.secret}),
        # Last: a valid body withdraws the case.
        Operation("POST", "/v1/status/withdraw", "victim", {"case_ref": w.case_ref,
                                                            "secret": w.secret}),
    ]
    body_ops = {(m.upper(), p) for p, methods in document()["paths"].items()
                for m, op in methods.items() if "requestBody" in op}
    covered = {(o.method, _template(o.path, w)) for o in ops}
    assert covered == body_ops, body_ops ^ covered  # a new endpoint must be added here
    return ops


def _template(path: str, w: World) -> str:
    """The document's path of a filled-in path."""
    return (path.replace(str(w.scan_id), "{scan_id}")
            .replace(f"/orgs/{w.api.orgs['platform']}/", "/orgs/{org_id}/")
            .replace(f"/cases/{w.case_id}/", "/cases/{case_id}/"))


CALLERS = [None, "charity", "forensic", "platform", "admin", "victim", "intake"]


def headers_for(w: World, caller: str | None) -> dict[str, str]:
    """The credentials of a caller."""
    if caller is None:
        return {}
    if caller == "victim":
        token = base64.b64encode(f"{w.case_ref}:{w.secret}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if caller == "intake":
        return {"X-Intake-Code": w.intake_code}
    return {"Authorization": f"Bearer {w.api.keys[caller]}"}


def send(w: World, op: Operation, caller: str | None, body: bytes,
         content_type: str = "application/json") -> Any:
    """POST raw bytes; check the answer is JSON and not a server error; return it. The
    intake operation gets a fresh one-time code each time, so that every body reaches the
    checks behind the code's."""
    headers = headers_for(w, caller)
    if caller == "intake" and op.caller == "intake":
        fresh = w.api.call("POST", f"/v1/cases/{w.case_id}/intake-links", "charity")
        if fresh.status_code == 201:
            headers["X-Intake-Code"] = fresh.json["code"]
    response = w.api.client.open(op.path, method=op.method, data=body,
                                 content_type=content_type, headers=headers)
    where = f"{op.method} {op.path} as {caller}: {body[:120]!r}"
    assert response.status_code < 500, (where, response.status_code, response.data[:300])
    assert response.is_json, (where, response.status_code, response.data[:300])
    if response.status_code >= 400:
        payload = response.get_json()
        assert isinstance(payload, dict) and {"error", "message"} <= set(payload), where
        assert isinstance(payload["error"], str) and isinstance(payload["message"], str)
    return response


def dumps(value: Any) -> bytes:
    """JSON as a client would send it (lone surrogates as \\u escapes)."""
    return json.dumps(value).encode()


# --- mutating every field -----------------------------------------------------------------------


def leaves(value: Any, path: tuple[Any, ...] = (), depth: int = 0) -> Iterator[tuple[Any, ...]]:
    """Paths to every field of a body, nested objects and the first item of lists included."""
    if depth > 4:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield path + (key,)
            yield from leaves(item, path + (key,), depth + 1)
    elif isinstance(value, list) and value:
        yield path + (0,)
        yield from leaves(value[0], path + (0,), depth + 1)


def replaced(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A deep copy of ``body`` with the field at ``path`` set to ``new``."""
    out = copy.deepcopy(body)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return out


def removed(body: Any, path: tuple[Any, ...]) -> Any:
    """A deep copy of ``body`` without the field at ``path``."""
    out = copy.deepcopy(body)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    del holder[path[-1]]
    return out


def hostile_bodies(op: Operation, types: bool = True) -> Iterator[bytes]:
    """Every field of the valid body given every wrong type (``types``), removed, and
    (strings) every odd text; wrong top-level types; unknown extra fields."""
    for top in WRONG:
        yield dumps(top)
    for path in leaves(op.valid):
        for value in WRONG if types else ():
            yield dumps(replaced(op.valid, path, value))
        yield dumps(removed(op.valid, path))
        if isinstance(_at(op.valid, path), str) or path[-1] in ("file", "label", "reason"):
            for text in ODD:
                yield dumps(replaced(op.valid, path, text))
    if isinstance(op.valid, dict):
        for text in ODD[:6]:
            yield dumps({**op.valid, text: text})


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


def test_every_field_of_every_body_refused_cleanly(world: World) -> None:
    """The caller each operation is for, with every body above: never a server error. Types
    are checked before any store is touched, so PostgreSQL gets the text (NUL, surrogates)
    and not the whole type matrix again."""
    statuses: dict[int, int] = {}
    types = world.api.store.engine.dialect.name == "sqlite"
    for op in operations(world):
        for body in [*MALFORMED, *DEEP, *hostile_bodies(op, types)]:
            status = send(world, op, op.caller, body).status_code
            statuses[status] = statuses.get(status, 0) + 1
    print(f"\nhostile bodies ({world.api.store.engine.dialect.name}): "  # pytest -s shows it
          f"{sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert set(statuses) - {200, 201, 202} <= set(range(400, 500)), statuses
    assert statuses.get(400, 0) > (1500 if types else 400), statuses
    verdict = world.api.call("GET", "/v1/audit/verify", "admin").json
    assert verdict["ok"], verdict["problems"]


def test_every_caller_gets_a_clean_refusal(world: World) -> None:
    """Every other caller (none, each role, a victim's secret, an intake code) on every
    operation, with malformed, deep and odd bodies: 401, 403, 404 or 400, never a 500."""
    for op in operations(world):
        bodies = [*MALFORMED[:8], DEEP[0], dumps(replaced(op.valid, next(leaves(op.valid)),
                                                          "\ud800")),
                  dumps(replaced(op.valid, next(leaves(op.valid)), "\x00"))]
        for caller in CALLERS:
            if caller == op.caller:
                continue
            for body in bodies:
                assert send(world, op, caller, body).status_code in range(400, 500)


def test_bodies_not_declared_json_are_415(world: World) -> None:
    for op in operations(world):
        for content_type in ("text/plain", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", "application/jsonx"):
            status = send(world, op, op.caller, dumps(op.valid), content_type).status_code
            assert status in (400, 401, 415), (op.path, content_type, status)


# --- limits ------------------------------------------------------------------------------------


def test_batches_one_over_their_limit_are_413(world: World) -> None:
    """Every list the document bounds (maxItems 10,000): one item more is 413, before a
    single item is looked at."""
    w = world
    line = {"sha256": "ab" * 32}
    over = 10_001
    cases = [
        (Operation("POST", f"/v1/cases/{w.case_id}/hashes", "charity", None), [line] * over),
        (Operation("POST", "/v1/intake", "intake", None), {"lines": [line] * over}),
        (Operation("POST", "/v1/lookup", "platform", None),
         {"hashes": [{"algorithm": "md5", "value": "0" * 32}] * over}),
    ]
    for op, body in cases:
        response = send(w, op, op.caller, dumps(body))
        assert response.status_code == 413, (op.path, response.json)
        assert response.json["error"] == "too_large"
    review = Operation("POST", f"/v1/scans/{w.scan_id}/review", "forensic", None)
    response = send(w, review, "forensic", dumps({"match_ids": [w.match_id] * over,
                                                  "decision": "rejected", "reviewer": "A"}))
    assert response.status_code in (400, 413), response.json


def test_bodies_over_the_size_limit_are_413_for_everyone(settings: Settings,
                                                         tmp_path: Path) -> None:
    """max_request_bytes is enforced on every JSON endpoint whoever calls."""
    api = make_api(api_settings(settings, tmp_path, max_request_bytes=4096))
    case = new_case(api)
    w = World(api, case["case_id"], case["case_ref"], case["secret"], "X" * 30,
              "00000000-0000-0000-0000-000000000000", 1, tmp_path)
    big = dumps({"name": "x" * 5000, "hashes": [], "lines": []})
    statuses = set()
    for path, caller in (("/v1/cases", "charity"), (f"/v1/cases/{w.case_id}/hashes", "charity"),
                         ("/v1/lookup", "platform"), ("/v1/orgs", "admin"),
                         ("/v1/api-keys", "admin"), ("/v1/scans", "forensic"),
                         ("/v1/feedback", "platform"), ("/v1/intake", "intake"),
                         ("/v1/status/withdraw", "victim"), ("/v1/status/consent", "victim")):
        op = Operation("POST", path, caller, None)
        status = send(w, op, caller, big).status_code
        statuses.add(status)
        assert status == 413, (path, status)
    api.store.close()


# --- credentials ---------------------------------------------------------------------------------


def test_odd_credentials_are_refused_cleanly(world: World) -> None:
    """Authorization headers and intake codes an attacker would try: 401 (or 429), JSON."""
    w = world
    odd_users = ["\x00", "a\x00b", w.case_ref + "\x00", "x" * 10_000, "\u202e", "é" * 64, ""]
    auths = [f"Bearer {'x' * 10_000}", "Bearer hsk_zz_yy", "Bearer hsk__", "Bearer \u00e9",
             "Basic !!!notbase64", "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
             "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x", "Bearer",
             "bearer " + w.api.keys["admin"][:-1]]
    auths += ["Basic " + base64.b64encode(f"{u}:{w.secret}".encode("utf-8", "surrogatepass")
                                          ).decode() for u in odd_users]
    status_op = Operation("GET", "/v1/status", "victim", None)
    withdraw_op = Operation("POST", "/v1/status/withdraw", "victim", {})
    case_op = Operation("GET", f"/v1/cases/{w.case_id}", "charity", None)
    for auth in auths:
        for op in (status_op, withdraw_op, case_op):
            response = w.api.client.open(op.path, method=op.method,
                                         headers={"Authorization": auth.encode(
                                             "utf-8", "surrogateescape").decode("latin-1")})
            assert response.status_code in (401, 404, 429), (auth[:40], op.path,
                                                             response.status_code)
            assert response.is_json and {"error", "message"} <= set(response.json)
    intake_op = Operation("POST", "/v1/intake", "intake", {})
    for code in ["\x00", "x" * 100_000, "é", "", " ", "A" * 100]:
        response = w.api.client.post(intake_op.path, json={"lines": [], "code": code})
        assert response.status_code in (400, 401, 410), (code[:20], response.status_code)
        assert response.is_json
    verdict = w.api.call("GET", "/v1/audit/verify", "admin").json
    assert verdict["ok"], verdict["problems"]
