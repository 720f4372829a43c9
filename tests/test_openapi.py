"""The OpenAPI document against the app: every route described, and schemathesis finds no
undocumented status, no response off its schema, and no server error, with any role's key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis.checks import (content_type_conformance, ignored_auth, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance,
                                 status_code_conformance)
from schemathesis.generation import GenerationMode

from hashsvc.api.openapi import document

from test_api import Api, api_settings, make_api

#: Examples per operation, generation mode and caller: 21 operations × 5 callers stay well
#: under a minute on two cores.
POSITIVE_EXAMPLES = 6
NEGATIVE_EXAMPLES = 3

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@pytest.fixture
def api(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API on the embedded store; scans are recorded but never run."""
    jobs = pytest.importorskip("workers.jobs")
    monkeypatch.setattr(jobs, "start_scan", lambda _settings, _scan_id: None)
    made = make_api(api_settings(settings, tmp_path))
    yield made
    made.store.close()


def test_the_document_describes_every_route(api: Api) -> None:
    served = api.call("GET", "/v1/openapi.json").json
    assert served == document() and served["openapi"].startswith("3.")
    routes = set()
    for rule in api.app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue  # the web pages (hashsvc.web) are not part of the API
        path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
        routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, ops in served["paths"].items() for method in ops}
    assert described == routes
    for path, ops in served["paths"].items():
        for method, operation in ops.items():
            assert operation["responses"], (path, method)
            secured = operation.get("security", served["security"]) != []
            assert secured == (path not in ("/v1/health", "/v1/ready", "/v1/openapi.json",
                                             "/v1/keys"))
            if path.startswith("/v1/status"):  # the victim's reference and secret
                assert operation["security"] == [{"caseSecret": []}]
                assert {"401", "429"} <= set(operation["responses"]), (path, method)
            elif secured:
                assert {"401", "403", "429"} <= set(operation["responses"]), (path, method)


def _fuzz(operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str],
          checks: list[Any]) -> None:
    """Run schemathesis on one operation with one generation mode."""

    @hypothesis_settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    run()


@pytest.mark.parametrize("caller", [None, "charity", "forensic", "platform", "admin"])
def test_schemathesis_finds_nothing(api: Api, caller: str | None) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", api.app)
    headers = {"Authorization": f"Bearer {api.keys[caller]}"} if caller else {}
    checks = CHECKS + ([ignored_auth] if caller else [])
    operations = [result.ok() for result in schema.get_all_operations()]
    # Schemathesis leaves out the operation that serves the schema itself.
    assert {o.label for o in operations} == {
        f"{method.upper()} {path}" for path, ops in document()["paths"].items()
        for method in ops if path != "/v1/openapi.json"}
    paths = document()["paths"]
    for operation in operations:
        _fuzz(operation, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, headers, checks)
        described = paths[operation.path][operation.method.lower()]
        if "parameters" in described or "requestBody" in described:  # else nothing to break
            _fuzz(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, headers,
                  [not_a_server_error, status_code_conformance, content_type_conformance])
