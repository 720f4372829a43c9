"""The authorization matrix: every endpoint × every role (and no key) × own and other org's ids.

A role an endpoint does not admit gets 403 before any record is looked up; an admitted role
gets 404 for another org's case or scan, exactly as for an unknown id; every audited request
leaves an entry with its status, refused ones included.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from hashsvc import accounts, audit
from hashsvc.store.models import Case, Scan, utcnow

from test_api import Api, api_settings, hash_line, make_api

_names = itertools.count()


@dataclass(frozen=True)
class Endpoint:
    """One route: who may call it, what it is about, and what success looks like."""

    method: str
    path: str  # "{id}" stands for the record's id
    roles: tuple[str, ...]  # () for public probes
    record: str | None = None  # "case", "scan", "key" or "org": a record of each side's org
    body: Callable[[Api], Any] | None = None
    ok: int = 200
    scoped: bool = True  # another org's record is 404 (False: admins see every org's)


ENDPOINTS = (
    Endpoint("GET", "/v1/health", ()),
    Endpoint("GET", "/v1/ready", ()),
    Endpoint("GET", "/v1/openapi.json", ()),
    Endpoint("GET", "/v1/cases", ("charity",)),
    Endpoint("POST", "/v1/cases", ("charity",), body=lambda api: {}, ok=201),
    Endpoint("GET", "/v1/cases/{id}", ("charity",), "case"),
    Endpoint("POST", "/v1/cases/{id}/hashes", ("charity",), "case",
             body=lambda api: [LINE]),
    Endpoint("POST", "/v1/cases/{id}/withdraw", ("charity",), "case"),
    Endpoint("GET", "/v1/scans", ("forensic",)),
    Endpoint("POST", "/v1/scans", ("forensic",),
             body=lambda api: {"source": api.settings.evidence_roots}, ok=202),
    Endpoint("GET", "/v1/scans/{id}", ("forensic",), "scan"),
    Endpoint("POST", "/v1/scans/{id}/cancel", ("forensic",), "scan", ok=202),
    Endpoint("GET", "/v1/scans/{id}/matches", ("forensic",), "scan"),
    Endpoint("GET", "/v1/scans/{id}/errors", ("forensic",), "scan"),
    Endpoint("GET", "/v1/scans/{id}/report", ("forensic",), "scan"),
    Endpoint("GET", "/v1/scans/{id}/candidates", ("forensic",), "scan"),
    Endpoint("POST", "/v1/scans/{id}/review", ("forensic",), "scan", ok=404,
             body=lambda api: {"match_ids": [987654], "decision": "confirmed",
                               "reviewer": "DC Test"}),
    Endpoint("GET", "/v1/scans/{id}/candidates/987654/thumbnail", ("forensic",), "scan",
             ok=404),
    Endpoint("GET", "/v1/keys", ()),
    Endpoint("GET", "/v1/scans/{id}/verification", ("forensic",), "scan", ok=409),
    Endpoint("POST", "/v1/scans/{id}/wipe-records", ("forensic",), "scan", ok=201,
             body=lambda api: {"medium": "disk", "method": "purge", "tool": "t",
                               "verification_method": "re-scan",
                               "verification_result": "clean", "operator": "DC Test",
                               "date": "2026-11-28"}),
    Endpoint("POST", "/v1/lookup", ("platform",),
             body=lambda api: {"hashes": [{"algorithm": "pdq", "value": "0" * 64}]}),
    Endpoint("POST", "/v1/feedback", ("platform",), ok=404,
             body=lambda api: {"match_ref": "m_" + "0" * 32, "outcome": "removed"}),
    Endpoint("GET", "/v1/bank/changes", ("platform",)),
    Endpoint("POST", "/v1/cases/{id}/secret", ("charity",), "case"),
    Endpoint("POST", "/v1/cases/{id}/consent", ("charity",), "case",
             body=lambda api: {"features": False}),
    # A victim's endpoints take the case reference and secret, never an API key of any role.
    Endpoint("GET", "/v1/status", (), ok=401),
    Endpoint("POST", "/v1/status/withdraw", (), ok=401),
    Endpoint("POST", "/v1/status/consent", (), ok=401, body=lambda api: {"features": False}),
    Endpoint("POST", "/v1/cases/{id}/intake-links", ("charity",), "case", ok=201),
    # The intake page's registration takes a one-time code, never an API key of any role.
    Endpoint("POST", "/v1/intake", (), ok=401),
    Endpoint("POST", "/v1/orgs/{id}/bank-sync", ("admin",), "org", scoped=False,
             body=lambda api: {"granted": True}),
    Endpoint("GET", "/v1/orgs", ("admin",)),
    Endpoint("POST", "/v1/orgs", ("admin",), body=lambda api: {"name": f"org {next(_names)}"},
             ok=201),
    Endpoint("GET", "/v1/api-keys", ("admin",)),
    Endpoint("POST", "/v1/api-keys", ("admin",),
             body=lambda api: {"org_id": api.orgs["platform"], "role": "platform"}, ok=201),
    Endpoint("POST", "/v1/api-keys/{id}/revoke", ("admin",), "key", scoped=False),
    Endpoint("GET", "/v1/audit", ("admin",)),
    Endpoint("GET", "/v1/audit/verify", ("admin",)),
)

LINE = hash_line(21)

#: Every key of the fixture, and None for a request without one.
CALLERS = (None, *(role + side for role in accounts.ROLES for side in ("", "_b")))


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API with scans never actually started (the matrix is about who, not what)."""
    jobs = pytest.importorskip("workers.jobs")
    monkeypatch.setattr(jobs, "start_scan", lambda _settings, _scan_id: None)
    if request.param == "sqlite":
        base = request.getfixturevalue("settings")
    else:
        base = request.getfixturevalue("pg_settings")
        request.getfixturevalue("pg_store")
    made = make_api(api_settings(base, tmp_path))
    for side in ("platform", "platform_b"):  # both platforms may sync the bank
        accounts.set_bank_sync(made.store, made.orgs[side], True)
    yield made
    made.store.close()


def make_record(api: Api, kind: str, owner: str, endpoint: Endpoint) -> str:
    """A fresh case, scan or key belonging to the org of key name ``owner``."""
    org_id = api.orgs[owner]
    if kind == "org":
        return str(org_id)
    if kind == "key":
        return str(accounts.create_key(api.store, org_id, "platform").key_id)
    with api.store.sessions.begin() as session:
        if kind == "case":
            case = Case(ref=f"ref-{uuid.uuid4().hex[:12]}", org_id=org_id, created_at=utcnow())
            session.add(case)
            session.flush()
            return str(case.id)
        scan_id = str(uuid.uuid4())
        state = "queued" if endpoint.path.endswith("/cancel") else "done"
        session.add(Scan(id=scan_id, source="/evidence/x", label="exhibit", state=state,
                         created_at=utcnow(), org_id=org_id, settings={}))
        return scan_id


def expected(endpoint: Endpoint, caller: str | None, owner: str | None) -> int:
    """The status the matrix calls for."""
    if not endpoint.roles:
        return endpoint.ok
    if caller is None:
        return 401
    role = caller.removesuffix("_b")
    if role not in endpoint.roles:
        return 403
    if owner is not None and owner != caller and endpoint.scoped:
        return 404
    return endpoint.ok


def route_views(api: Api) -> dict[tuple[str, str], Any]:
    """The view function of each (method, path) of the app, paths written as in ENDPOINTS."""
    views = {}
    for rule in api.app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue  # the web pages (hashsvc.web; tests/test_web.py)
        path = rule.rule
        for converter in ("<int:case_id>", "<scan_id>", "<int:key_id>", "<int:org_id>"):
            path = path.replace(converter, "{id}")
        path = path.replace("<int:match_id>", "987654")  # a candidate no scan has
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            views[(method, path)] = api.app.view_functions[rule.endpoint]
    return views


def test_the_matrix_covers_every_route(api: Api) -> None:
    assert set(route_views(api)) == {(e.method, e.path) for e in ENDPOINTS}


def test_authorization_matrix(api: Api) -> None:
    failures = []
    cells = 0
    views = route_views(api)
    for endpoint in ENDPOINTS:
        role = endpoint.roles[0] if endpoint.roles else None
        owners: tuple[str | None, ...] = (role, f"{role}_b") if endpoint.record else (None,)
        records = {owner: make_record(api, endpoint.record, owner, endpoint)
                   for owner in owners if owner is not None and endpoint.record}
        view = views[(endpoint.method, endpoint.path)]
        action = getattr(view, "audit_action", None)
        for caller, owner in itertools.product(CALLERS, owners):
            record = records.get(owner) if owner is not None else None
            path = endpoint.path.replace("{id}", record or "")
            body = endpoint.body(api) if endpoint.body else None
            response = api.call(endpoint.method, path, caller,
                                **({"json": body} if body is not None else {}))
            cells += 1
            want = expected(endpoint, caller, owner)
            if response.status_code != want:
                failures.append((endpoint.method, path, caller, owner, response.status_code,
                                 want, response.json))
                continue
            if response.status_code >= 400:
                assert set(response.json) >= {"error", "message"}
            if action is not None:
                entry = audit.entries(api.store, audit.head(api.store).seq - 1, 1)[0]
                assert (entry.action, entry.details["status"]) == (action, want), (path, caller)
                if record is not None:
                    assert entry.target_id == record
                if caller is not None:
                    assert entry.org_id == api.orgs[caller]
    assert failures == []
    assert cells == sum((2 if e.record else 1) * len(CALLERS) for e in ENDPOINTS)
