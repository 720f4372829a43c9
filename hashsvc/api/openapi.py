"""The OpenAPI 3 description of the API, written by hand and served at ``/v1/openapi.json``.

tests/test_openapi.py checks that it names every route of the app and fuzzes the app against
it with schemathesis, so a schema that drifts from the code fails the suite.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from hashsvc import __version__
from hashsvc.accounts import ROLES
from hashsvc.api.errors import BIG
from hashsvc.api.lookup import HEX_DIGITS
from hashsvc.hashing import ALGORITHMS, VARIANT_CODES

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]



def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
        closed: bool = True) -> Schema:
    """An object schema; ``closed`` responses list every property the API sends."""
    schema: Schema = {"type": "object", "properties": {**required, **(optional or {})},
                      "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


def nullable(schema: Schema) -> Schema:
    """``schema`` or null."""
    return {**schema, "nullable": True}


def hex_string(digits: int) -> Schema:
    """A hex string of exactly ``digits`` digits."""
    return {"type": "string", "pattern": f"^[0-9a-fA-F]{{{digits}}}$"}


INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
COUNTS = {"type": "object", "additionalProperties": INT}


def _hash_line() -> Schema:
    """A hash line as ``hashsvc hash`` prints it."""
    perceptual = {a.name: hex_string(a.bits // 4) for a in ALGORITHMS}
    variants = {a.name: {"type": "object", "additionalProperties": False,
                         "properties": {v: hex_string(a.bits // 4) for v in VARIANT_CODES}}
                for a in ALGORITHMS}
    return obj({"sha256": hex_string(64)}, {
        "file": STR, "md5": nullable(hex_string(32)),
        "size": nullable({**INT, "maximum": BIG}), "width": nullable({**INT, "maximum": BIG}),
        "height": nullable({**INT, "maximum": BIG}),
        "format": nullable({"type": "string", "pattern": "^[ -~]{0,16}$"}),
        "hashes": {"type": "object", "properties": perceptual, "additionalProperties": False},
        "quality": {"type": "object",
                    "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}},
        "variants": {"type": "object", "properties": variants, "additionalProperties": False},
        "hash_format": {"type": "integer", "enum": [1]},
        "decode_version": nullable({**INT, "maximum": BIG}),
        "from_thumbnail": BOOL,
    }, closed=False)


def _lookup_item() -> Schema:
    """One hash to look up: an algorithm and a value of that algorithm's length."""
    by_length: dict[int, list[str]] = {}
    for name, digits in HEX_DIGITS.items():
        by_length.setdefault(digits, []).append(name)
    quality = {"type": "integer", "minimum": 0, "maximum": 100,
               "description": "PDQ quality; below min_pdq_quality a PDQ hash matches nothing"}
    return {"oneOf": [obj({"algorithm": {"type": "string", "enum": names},
                           "value": hex_string(digits)}, {"quality": quality}, closed=False)
                      for digits, names in sorted(by_length.items())]}


MATCH = obj({
    "path": STR, "locator": {"type": "array", "items": {"type": "object"}},
    "sha256": nullable(STR), "md5": nullable(STR), "size": nullable(INT),
    "format": nullable(STR), "from_thumbnail": nullable(BOOL), "case": STR,
    "deleted": {**BOOL, "description": "a deleted file-system entry (or S3 object version)"},
    "version_id": {**nullable(STR), "description": "the S3 object version, where there is one"},
    "algorithm": STR,
    "distance": {**nullable(INT), "description": "null for a local-feature (orb) match"},
    "distances": COUNTS, "variant": nullable(STR),
    "other_matches": {"type": "array", "items": obj({
        "case": STR, "algorithm": STR, "distance": INT, "distances": COUNTS})},
})

CASE: dict[str, Schema] = {
    "case_id": INT, "case_ref": STR, "state": {"type": "string", "enum": ["active", "withdrawn"]},
    "created_at": TIME, "withdrawn_at": nullable(TIME), "images": INT, "hashes": INT,
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": STR, "message": STR},
                 {"index": {**INT, "description": "the offending item of a list, from 0"}}),
    "Health": obj({"status": {"type": "string", "enum": ["ok"]}}),
    "Ready": obj({"status": {"type": "string", "enum": ["ready"]}, "database": STR,
                  "redis": STR}),
    "CaseCreate": obj({}, {"case_ref": {"type": "string", "pattern": "^[!-~]{1,64}$"}},
                      closed=False),
    "CaseCreated": obj({"case_id": INT, "case_ref": STR}),
    "Case": obj(CASE),
    "CaseWithdrawn": obj({**CASE, "images_withdrawn": INT}),
    "Cases": obj({"cases": {"type": "array", "items": obj({
        "case_id": INT, "case_ref": STR,
        "state": {"type": "string", "enum": ["active", "withdrawn"]},
        "created_at": TIME, "withdrawn_at": nullable(TIME)})}}),
    "HashLine": _hash_line(),
    "RegisterResult": obj({"case_id": INT, "case_ref": STR, "images_added": INT,
                           "images_already_registered": INT, "hashes_added": INT,
                           "lines_with_errors_skipped": INT}),
    "ScanCreate": obj({"source": {"type": "string",
                                  "description": "a path inside an evidence root"}},
                      {"label": nullable({"type": "string", "maxLength": 1000})}, closed=False),
    "ScanAccepted": obj({"scan_id": {"type": "string", "format": "uuid"}}),
    "Scan": obj({
        "scan_id": STR, "label": nullable(STR), "source": STR,
        "state": {"type": "string",
                  "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "files_enumerated": INT, "files_done": INT, "images_hashed": INT, "candidates": INT,
        "errors": INT, "created_at": TIME, "started_at": nullable(TIME),
        "finished_at": nullable(TIME), "error": nullable(STR)}),
    "CancelAccepted": obj({"scan_id": STR, "cancel_requested": BOOL}),
    "Scans": obj({"scans": {"type": "array", "items": obj({
        "scan_id": STR, "label": nullable(STR), "source": STR,
        "state": {"type": "string",
                  "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "created_at": TIME, "started_at": nullable(TIME), "finished_at": nullable(TIME),
        "error": nullable(STR)})}}),
    "Match": MATCH,
    "ScanMatches": obj({"scan_id": STR, "matches": {"type": "array", "items": ref("Match")}}),
    "ScanErrors": obj({"scan_id": STR, "skipped": COUNTS, "errors": {
        "type": "array", "items": obj({"path": STR, "stage": STR, "message": STR})}}),
    "Report": obj({"report_format": INT, "scan_id": STR, "source": STR, "state": STR,
                   "files_scanned": INT, "images_hashed": INT, "matched_files": INT,
                   "matches": {"type": "array", "items": ref("Match")},
                   "errors": {"type": "array", "items": {"type": "object"}},
                   "skipped": COUNTS,
                   "evidence": {"type": "array", "items": obj({
                       "path": STR, "kind": STR, "sha256": nullable(STR),
                       "verified": nullable(BOOL)}, closed=False)},
                   "coverage": obj({"files_examined": INT, "not_examined": COUNTS},
                                   closed=False)}, closed=False),
    "LookupRequest": obj({"hashes": {"type": "array", "maxItems": 10_000,
                                     "items": _lookup_item()}}, closed=False),
    "LookupResponse": obj({"results": {"type": "array", "items": obj({
        "algorithm": {"type": "string", "enum": list(HEX_DIGITS)}, "truncated": BOOL,
        "matches": {"type": "array", "items": obj({
            "match_ref": {"type": "string", "pattern": "^m_[0-9a-f]{32}$"},
            "algorithm": STR, "distance": INT})}})}}),
    "Org": obj({"org_id": INT, "name": STR, "created_at": TIME}),
    "OrgCreate": obj({"name": {"type": "string", "minLength": 1, "maxLength": 128}},
                     closed=False),
    "OrgCreated": obj({"org_id": INT, "name": STR}),
    "Orgs": obj({"orgs": {"type": "array", "items": ref("Org")}}),
    "Key": obj({"key_id": INT, "org_id": INT, "role": {"type": "string", "enum": list(ROLES)},
                "prefix": STR, "label": nullable(STR), "created_at": TIME,
                "revoked_at": nullable(TIME)}),
    "Keys": obj({"keys": {"type": "array", "items": ref("Key")}}),
    "KeyCreate": obj({"org_id": {"type": "integer", "minimum": 1, "maximum": BIG},
                      "role": {"type": "string", "enum": list(ROLES)}},
                     {"label": nullable({"type": "string", "maxLength": 128})}, closed=False),
    "KeyCreated": obj({"key_id": INT, "org_id": INT, "role": STR, "prefix": STR,
                       "key": {"type": "string", "description": "shown once; store it now"}}),
    "KeyRevoked": obj({"key_id": INT, "revoked": BOOL}),
    "AuditEntry": obj({"seq": INT, "at": TIME, "org_id": nullable(INT), "key_id": nullable(INT),
                       "action": STR, "target_type": nullable(STR), "target_id": nullable(STR),
                       "details": nullable({"type": "object"}), "prev_hash": hex_string(64),
                       "entry_hash": hex_string(64)}),
    "AuditPage": obj({"entries": {"type": "array", "items": ref("AuditEntry")},
                      "next_after": nullable(INT)}),
    "AuditVerify": obj({"ok": BOOL, "problems": {"type": "array", "items": STR},
                        "head": nullable(obj({"seq": INT, "entry_hash": hex_string(64)}))}),
}

ERRORS = {
    "400": "malformed request (an `index` names the offending list item)",
    "401": "no key, or an unknown or revoked one",
    "403": "the key's role may not do this",
    "404": "no such record, or one that belongs to another org",
    "409": "conflicts with the record's state",
    "413": "request too large",
    "415": "the body is not declared as JSON",
    "429": "rate limit reached for this key",
    "503": "a backing service is unavailable",
}


def _json(schema: Schema, description: str) -> Schema:
    """A JSON response."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def op(summary: str, roles: tuple[str, ...] | None, ok: tuple[str, str, str],
       errors: str = "", body: str | None = None, body_required: bool = True,
       params: list[Schema] | None = None) -> Schema:
    """One operation: who may call it, its success response and its error statuses."""
    status, schema, description = ok
    responses = {status: _json(ref(schema), description)}
    codes = set(errors.split()) | ({"401", "403", "429"} if roles else set())
    for code in sorted(codes):
        responses[code] = _json(ref("Error"), ERRORS[code])
    operation: Schema = {"summary": summary, "responses": responses,
                         "description": ("Roles: " + ", ".join(roles) + "." if roles
                                         else "No key needed.")}
    if roles is None:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {
            "application/json": {"schema": ref(body) if not body.startswith("[") else {
                "type": "array", "maxItems": 10_000, "items": ref(body[1:-1])}}}}
    if params:
        operation["parameters"] = params
    return operation


def path_param(name: str, schema: Schema) -> Schema:
    """A required path parameter."""
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


CASE_ID = [path_param("case_id", {"type": "integer", "minimum": 0})]
SCAN_ID = [path_param("scan_id", {"type": "string", "format": "uuid"})]
KEY_ID = [path_param("key_id", {"type": "integer", "minimum": 0})]
LIST_PARAMS = [query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                           "page size (default 100)"),
               query_param("offset", {"type": "integer", "minimum": 0, "maximum": BIG},
                           "records to pass over (default 0)")]


def paths() -> dict[str, Schema]:
    """Every route of the API, by path and method."""
    charity, forensic = ("charity",), ("forensic",)
    return {
        "/v1/health": {"get": op("The process is alive", None, ("200", "Health", "alive"))},
        "/v1/ready": {"get": op("Database and Redis (if configured) answer", None,
                                ("200", "Ready", "ready"), "503")},
        "/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                     "responses": {"200": {
                                         "description": "the OpenAPI document",
                                         "content": {"application/json": {
                                             "schema": {"type": "object"}}}}}}},
        "/v1/cases": {
            "get": op("The caller's org's cases, newest first", charity,
                      ("200", "Cases", "cases"), "400", params=LIST_PARAMS),
            "post": op("Open a case", charity, ("201", "CaseCreated", "created"),
                       "400 409 413 415", body="CaseCreate", body_required=False)},
        "/v1/cases/{case_id}": {"get": op("A case and its bank counts", charity,
                                          ("200", "Case", "the case"), "404", params=CASE_ID)},
        "/v1/cases/{case_id}/hashes": {"post": op(
            "Register hash lines under a case (idempotent)", charity,
            ("200", "RegisterResult", "registered"), "400 404 409 413 415",
            body="[HashLine]", params=CASE_ID)},
        "/v1/cases/{case_id}/withdraw": {"post": op(
            "Withdraw every hash of a case", charity,
            ("200", "CaseWithdrawn", "withdrawn"), "404", params=CASE_ID)},
        "/v1/scans": {
            "get": op("The caller's org's scans, newest first", forensic,
                      ("200", "Scans", "scans"), "400", params=LIST_PARAMS),
            "post": op("Scan evidence under an evidence root", forensic,
                       ("202", "ScanAccepted", "queued"), "400 413 415 503",
                       body="ScanCreate")},
        "/v1/scans/{scan_id}": {"get": op("A scan's state and progress", forensic,
                                          ("200", "Scan", "the scan"), "404", params=SCAN_ID)},
        "/v1/scans/{scan_id}/cancel": {"post": op(
            "Ask a scan to stop", forensic, ("202", "CancelAccepted", "cancel requested"),
            "404 409", params=SCAN_ID)},
        "/v1/scans/{scan_id}/matches": {"get": op(
            "The scan's matched files (as in its report)", forensic,
            ("200", "ScanMatches", "matches"), "404", params=SCAN_ID)},
        "/v1/scans/{scan_id}/errors": {"get": op(
            "Files the scan could not read or decode", forensic,
            ("200", "ScanErrors", "errors"), "404", params=SCAN_ID)},
        "/v1/scans/{scan_id}/report": {"get": op(
            "The scan's full JSON report", forensic, ("200", "Report", "the report"), "404",
            params=SCAN_ID)},
        "/v1/lookup": {"post": op("Look hashes up in the bank", ("platform",),
                                  ("200", "LookupResponse", "matches per hash, in order"),
                                  "400 413 415", body="LookupRequest")},
        "/v1/orgs": {
            "get": op("Every org", ("admin",), ("200", "Orgs", "orgs")),
            "post": op("Create an org", ("admin",), ("201", "OrgCreated", "created"),
                       "400 409 413 415", body="OrgCreate")},
        "/v1/keys": {
            "get": op("API keys (never their secrets)", ("admin",), ("200", "Keys", "keys"),
                      "400", params=[query_param("org_id", {"type": "integer", "minimum": 0,
                                                            "maximum": BIG},
                                                 "only this org's keys")]),
            "post": op("Make an API key (shown once)", ("admin",),
                       ("201", "KeyCreated", "created"), "400 404 413 415",
                       body="KeyCreate")},
        "/v1/keys/{key_id}/revoke": {"post": op("Revoke an API key", ("admin",),
                                                ("200", "KeyRevoked", "revoked"), "404",
                                                params=KEY_ID)},
        "/v1/audit": {"get": op(
            "A page of the audit log, oldest first", ("admin",),
            ("200", "AuditPage", "entries"), "400", params=[
                query_param("after", {"type": "integer", "minimum": 0, "maximum": BIG},
                            "entries after this seq"),
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                            "page size (default 100)")])},
        "/v1/audit/verify": {"get": op("Verify the audit chain", ("admin",),
                                       ("200", "AuditVerify", "the verdict and the head"))},
    }


def document() -> Schema:
    """The OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "hashsvc", "version": __version__,
                 "description": "Image hash-matching takedown service for intimate-image "
                                "abuse. Authenticate with `Authorization: Bearer KEY`; every "
                                "error is `{\"error\": CODE, \"message\": TEXT}`."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "hsk_<prefix>_<secret>"}},
            "schemas": SCHEMAS,
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document of this API."""
    return jsonify(document())
