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
from hashsvc.hashing import ALGORITHMS, HEX_DIGITS, VARIANT_CODES
from hashsvc.verification import WIPE_FIELDS, WIPE_METHODS, WIPE_REQUIRED

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
        # Videos (hashsvc.video): the sampled frames, each with a picture's hashes.
        "media": {"type": "string", "enum": ["image", "video"]},
        "video_version": nullable({**INT, "maximum": BIG}),
        "duration": nullable({"type": "number", "minimum": 0, "maximum": 1e8}),
        "partial": nullable(STR),
        "frames": {"type": "array", "maxItems": 1000, "items": obj({
            "t": {"type": "number", "minimum": 0, "maximum": 1e8},
            "hashes": {"type": "object", "properties": perceptual,
                       "additionalProperties": False},
        }, {"quality": {"type": "object", "additionalProperties": {
                "type": "integer", "minimum": 0, "maximum": 100}},
            "variants": {"type": "object", "properties": variants,
                         "additionalProperties": False}}, closed=False)},
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
    "match_id": {**INT, "description": "the candidate's id for review"},
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
}, {
    "video": {"type": "object", "description": "a match to or from a video: the video rule's "
              "frame counts and the frames that matched (docs/video.md)",
              "properties": {
                  "rule": STR, "matched_frames": INT, "scanned_frames": INT,
                  "registered_frames": INT, "coverage": {"type": "number"},
                  "scanned_seconds": {"type": "number"},
                  "registered_seconds": {"type": "number"},
                  "frames": {"type": "array", "items": obj({"distance": INT}, {
                      "t": nullable({"type": "number"}),
                      "registered_t": nullable({"type": "number"})})}}},
})

CASE: dict[str, Schema] = {
    "case_id": INT, "case_ref": STR, "state": {"type": "string", "enum": ["active", "withdrawn"]},
    "created_at": TIME, "withdrawn_at": nullable(TIME), "images": INT, "hashes": INT,
    "features_consent": {**BOOL, "description": "the victim consented to keeping local "
                         "features; without it only hashes are stored"},
    "victim_secret": {**BOOL, "description": "the case has a victim secret"},
}

OUTCOME = {"type": "string", "enum": ["removed", "not_found", "appealed"]}
MATCH_REF = {"type": "string", "pattern": "^m_[0-9a-f]{32}$"}
OUTCOME_COUNTS = obj({o: INT for o in OUTCOME["enum"]})
STATUS: dict[str, Schema] = {
    "case_ref": STR, "state": {"type": "string", "enum": ["active", "withdrawn"]},
    "created_at": TIME, "withdrawn_at": nullable(TIME), "features_consent": BOOL,
    "images": INT, "active_hashes": INT,
    "platform_matches": {**INT, "description": "registered images platforms found"},
    "takedowns": OUTCOME_COUNTS,
    "platforms": {"type": "array", "items": obj({"platform": STR, "matches": INT,
                                                "outcomes": OUTCOME_COUNTS})},
    "deletion_reports": {**INT, "description": "exhibits (scans) for which a signed deletion "
                         "report named the case's images (a count only)"},
}
VICTIM_BODY = {"case_ref": {"type": "string", "maxLength": 64},
               "secret": {"type": "string", "maxLength": 200}}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": STR, "message": STR},
                 {"index": {**INT, "description": "the offending item of a list, from 0"}}),
    "Health": obj({"status": {"type": "string", "enum": ["ok"]}}),
    "Ready": obj({"status": {"type": "string", "enum": ["ready"]}, "database": STR,
                  "redis": STR}),
    "CaseCreate": obj({}, {"case_ref": {"type": "string", "pattern": "^[!-~]{1,64}$"},
                           "features_consent": BOOL}, closed=False),
    "CaseCreated": obj({"case_id": INT, "case_ref": STR, "features_consent": BOOL,
                        "secret": {"type": "string", "description": "the victim's secret, "
                                   "shown once: hand it to the victim now"}}),
    "CaseSecret": obj({"case_id": INT, "case_ref": STR,
                       "secret": {"type": "string", "description": "shown once"}}),
    "IntakeLink": obj({"case_id": INT,
                       "code": {"type": "string", "description": "the one-time code, shown "
                                "once: hand the link to the victim now"},
                       "url": {"type": "string", "description": "the intake page with the "
                               "code in its fragment (/intake#code=...)"},
                       "expires_at": TIME}),
    "IntakeRequest": obj({"lines": {"type": "array", "maxItems": 10_000,
                                    "items": ref("HashLine")}},
                         {"code": {"type": "string", "maxLength": 100,
                                   "description": "the one-time code (or X-Intake-Code)"}},
                         closed=False),
    "IntakeResult": obj({"images_added": INT, "images_already_registered": INT,
                         "hashes_added": INT, "lines_with_errors_skipped": INT}),
    "ConsentRequest": obj({"features": BOOL}, closed=False),
    "CaseConsent": obj({**CASE, "features_erased": INT}),
    "VictimStatus": obj(STATUS),
    "VictimWithdrawn": obj({**STATUS, "images_withdrawn": INT}),
    "VictimConsent": obj({**STATUS, "features_erased": INT}),
    "VictimWithdraw": obj({}, VICTIM_BODY, closed=False),
    "VictimConsentRequest": obj({"features": BOOL}, VICTIM_BODY, closed=False),
    "FeedbackRequest": obj({"match_ref": MATCH_REF, "outcome": OUTCOME}, closed=False),
    "FeedbackRecorded": obj({"match_ref": STR, "outcome": OUTCOME, "recorded": BOOL}),
    "BankChanges": obj({
        "changes": {"type": "array", "items": obj({
            "seq": INT, "op": {"type": "string", "enum": ["add", "withdraw"]},
            "entry": {"type": "string", "description": "this platform's id of one bank hash"}},
            {"match_ref": MATCH_REF, "algorithm": STR, "value": STR})},
        "cursor": {**INT, "description": "ask from here next"},
        "more": {**BOOL, "description": "another page is ready now"},
        "matching": obj({"thresholds": COUNTS, "exact": {"type": "array", "items": STR},
                         "min_pdq_quality": INT, "max_matches": INT})}),
    "BankSyncGrant": obj({"granted": BOOL}, closed=False),
    "BankSyncGranted": obj({"org_id": INT, "bank_sync": BOOL}),
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
                                  "description": "a path inside an evidence root, or "
                                                 "s3://bucket/prefix for an allowed bucket"}},
                      {"label": nullable({"type": "string", "maxLength": 1000}),
                       "verify_against": nullable({
                           "type": "object", "description": "a signed deletion report: this "
                           "scan re-scans its evidence after a wipe (GET .../verification)"})},
                      closed=False),
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
    "Org": obj({"org_id": INT, "name": STR, "created_at": TIME, "bank_sync": BOOL}),
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
    "SignedReport": obj({"document": {"type": "object"}, "signature": {"type": "object"}}),
    "WipeRecordCreate": obj({k: {"type": "string", "minLength": 1, "maxLength": 2000,
                                 **({"enum": list(WIPE_METHODS)} if k == "method" else {})}
                             for k in WIPE_REQUIRED},
                            {k: {"type": "string", "maxLength": 2000}
                             for k in WIPE_FIELDS if k not in WIPE_REQUIRED}),
    "WipeRecord": obj({"scan_id": STR, "fields": {"type": "object"}, "recorded_by": STR,
                       "recorded_at": TIME}),
    "SigningKeys": obj({"algorithm": {"type": "string", "enum": ["Ed25519"]},
                        "keys": {"type": "array", "items": obj({
                            "key_id": STR, "status": STR}, closed=False)}}, closed=False),
    "Candidates": obj({"scan_id": STR, "candidates": {"type": "array", "items": ref("Match")},
                       "summary": obj({"confirmed": INT, "rejected": INT, "unreviewed": INT})}),
    "ReviewRequest": obj({"match_ids": {"type": "array", "minItems": 1, "maxItems": 10_000,
                                        "items": {"type": "integer", "minimum": 0,
                                                  "maximum": BIG}},
                          "decision": {"type": "string", "enum": ["confirmed", "rejected"]},
                          "reviewer": {"type": "string", "minLength": 1, "maxLength": 200}},
                         {"reason": nullable({"type": "string", "maxLength": 2000})},
                         closed=False),
    "ReviewResult": obj({"scan_id": STR, "changed": {"type": "array", "items": obj({
        "match_id": INT, "decision": STR, "reason": nullable(STR), "reviewer": STR,
        "decided_at": TIME, "previous": nullable({"type": "object"})})}}),
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
    "410": "the one-time code has expired or was used",
    "413": "request too large",
    "415": "the body is not declared as JSON",
    "429": "rate limit reached (Retry-After says when to try again); on a victim's "
           "endpoint also a case locked after too many wrong secrets",
    "503": "a backing service is unavailable",
}


def _json(schema: Schema, description: str) -> Schema:
    """A JSON response."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def op(summary: str, roles: tuple[str, ...] | None, ok: tuple[str, str, str],
       errors: str = "", body: str | None = None, body_required: bool = True,
       params: list[Schema] | None = None) -> Schema:
    """One operation: who may call it, its success response and its error statuses.

    ``roles`` () stands for the victim's case reference and secret (HTTP Basic), None for no
    credentials at all."""
    status, schema, description = ok
    responses = {status: _json(ref(schema), description)}
    codes = set(errors.split()) | ({"401", "403", "429"} if roles else set())
    if roles == ():
        codes |= {"401", "429"}
    for code in sorted(codes):
        responses[code] = _json(ref("Error"), ERRORS[code])
    operation: Schema = {"summary": summary, "responses": responses,
                         "description": ("Roles: " + ", ".join(roles) + "." if roles
                                         else "No key needed." if roles is None else
                                         "The victim's case reference and secret (HTTP "
                                         "Basic: reference as user name); no API key.")}
    if roles is None:
        operation["security"] = []
    elif roles == ():
        operation["security"] = [{"caseSecret": []}]
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


def binary_op(summary: str, roles: tuple[str, ...], types: dict[str, str], errors: str,
              params: list[Schema]) -> Schema:
    """An operation whose success response is not JSON (an image, a document)."""
    operation = op(summary, roles, ("200", "Error", ""), errors, params=params)
    operation["responses"]["200"] = {"description": " or ".join(types.values()), "content": {
        media: {"schema": {"type": "string", "format": "binary"}} for media in types}}
    return operation


def report_op() -> Schema:
    """GET /v1/scans/{id}/report: the scan report, or with ?format= the deletion report."""
    text = {"type": "string", "minLength": 1, "maxLength": 200}
    operation = op("The scan's full JSON report; with format=, the signed deletion report of "
                   "its confirmed matches", ("forensic",), ("200", "Report", "the report"),
                   "400 404", params=SCAN_ID + [
                       query_param("format", {"type": "string",
                                              "enum": ["json", "html", "pdf", "vics"]},
                                   "a deletion report: json (the signed artefact), html, pdf, "
                                   "vics"),
                       query_param("examiner", text, "the examiner it names (with format)"),
                       query_param("exhibit", text, "exhibit label (default: the scan's)"),
                       query_param("court", text, "court"),
                       query_param("order_ref", text, "the order's reference")])
    operation["responses"]["200"]["content"]["application/json"]["schema"] = {"anyOf": [
        ref("Report"), {"type": "object", "required": ["document", "signature"],
                        "description": "the signed deletion report (format=json)"},
        {"type": "object", "description": "the VICS export (format=vics)"}]}
    operation["responses"]["200"]["content"].update({
        "text/html": {"schema": {"type": "string"}},
        "application/pdf": {"schema": {"type": "string", "format": "binary"}}})
    return operation


def intake_op() -> Schema:
    """POST /v1/intake: the victim's intake page registers hashes with a one-time code."""
    operation = op("Register hash lines with a one-time registration link's code (once)", (),
                   ("200", "IntakeResult", "registered"), "400 409 410 413 415",
                   body="IntakeRequest")
    operation["security"] = [{"intakeCode": []}]
    operation["description"] = ("The one-time code of a registration link (in the body as "
                                "`code`, or in X-Intake-Code); no API key. Unknown code: 401; "
                                "expired or used: 410.")
    operation["responses"]["403"] = _json(ref("Error"), "the request came from a page of "
                                          "another web origin")
    return operation


def query_param(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


CASE_ID = [path_param("case_id", {"type": "integer", "minimum": 0})]
SCAN_ID = [path_param("scan_id", {"type": "string", "format": "uuid"})]
KEY_ID = [path_param("key_id", {"type": "integer", "minimum": 0})]
ORG_ID = [path_param("org_id", {"type": "integer", "minimum": 0})]
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
        "/v1/cases/{case_id}/secret": {"post": op(
            "Give the victim a new secret (the old one stops working; shown once)", charity,
            ("200", "CaseSecret", "the new secret"), "404", params=CASE_ID)},
        "/v1/cases/{case_id}/consent": {"post": op(
            "Record the victim's consent to local features (false erases them at once)",
            charity, ("200", "CaseConsent", "recorded"), "400 404 413 415",
            body="ConsentRequest", params=CASE_ID)},
        "/v1/cases/{case_id}/intake-links": {"post": op(
            "Make a one-time registration link for the victim's intake page (shown once)",
            charity, ("201", "IntakeLink", "the link"), "404 409", params=CASE_ID)},
        "/v1/intake": {"post": intake_op()},
        "/v1/status": {"get": op(
            "A victim's view of the case: active hashes, platform matches and takedowns, "
            "deletion reports (counts)", (), ("200", "VictimStatus", "the status"))},
        "/v1/status/withdraw": {"post": op(
            "The victim withdraws the case: every hash stops matching and is erased", (),
            ("200", "VictimWithdrawn", "withdrawn"), "400 413 415", body="VictimWithdraw",
            body_required=False)},
        "/v1/status/consent": {"post": op(
            "The victim gives or withdraws consent to local features (withdrawal erases "
            "them at once)", (), ("200", "VictimConsent", "recorded"), "400 413 415",
            body="VictimConsentRequest")},
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
        "/v1/scans/{scan_id}/report": {"get": report_op()},
        "/v1/scans/{scan_id}/verification": {"get": op(
            "The signed verification report of a re-scan (each original file gone or present)",
            forensic, ("200", "SignedReport", "the signed report"), "400 404 409",
            params=SCAN_ID + [query_param("examiner", {"type": "string", "minLength": 1,
                                                       "maxLength": 200},
                                          "the examiner it names (required)")])},
        "/v1/scans/{scan_id}/wipe-records": {"post": op(
            "Record how a medium was sanitised (NIST SP 800-88 fields)", forensic,
            ("201", "WipeRecord", "recorded"), "400 404 413 415", body="WipeRecordCreate",
            params=SCAN_ID)},
        "/v1/scans/{scan_id}/candidates": {"get": op(
            "The scan's candidates with their current review decision", forensic,
            ("200", "Candidates", "candidates"), "404", params=SCAN_ID)},
        "/v1/scans/{scan_id}/review": {"post": op(
            "Confirm or reject candidates (a rejection needs a reason)", forensic,
            ("200", "ReviewResult", "what changed"), "400 404 413 415", body="ReviewRequest",
            params=SCAN_ID)},
        "/v1/scans/{scan_id}/candidates/{match_id}/thumbnail": {"get": binary_op(
            "A thumbnail of the evidence file, made now and never stored; blurred unless "
            "reveal=true", forensic, {"image/jpeg": "the thumbnail"}, "400 404",
            params=SCAN_ID + [path_param("match_id", {"type": "integer", "minimum": 0,
                                                      "maximum": BIG}),
                              query_param("reveal", {"type": "boolean"},
                                          "show it unblurred (audited)")])},
        "/v1/keys": {"get": {"summary": "The public keys that sign deletion reports",
                             "security": [], "responses": {
                                 "200": _json(ref("SigningKeys"), "current and retired keys")}}},
        "/v1/lookup": {"post": op("Look hashes up in the bank", ("platform",),
                                  ("200", "LookupResponse", "matches per hash, in order"),
                                  "400 413 415", body="LookupRequest")},
        "/v1/feedback": {"post": op(
            "Report what the platform did about a match", ("platform",),
            ("201", "FeedbackRecorded", "recorded"), "400 404 413 415",
            body="FeedbackRequest")},
        "/v1/bank/changes": {"get": op(
            "A page of the bank's additions and withdrawals (platforms granted bank sync)",
            ("platform",), ("200", "BankChanges", "changes, oldest first"), "400", params=[
                query_param("cursor", {"type": "integer", "minimum": 0, "maximum": BIG},
                            "changes after this one (0: from the start)"),
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 10_000},
                            "page size (default 10,000)")])},
        "/v1/orgs/{org_id}/bank-sync": {"post": op(
            "Grant or take back an org's bank sync", ("admin",),
            ("200", "BankSyncGranted", "recorded"), "400 404 413 415", body="BankSyncGrant",
            params=ORG_ID)},
        "/v1/orgs": {
            "get": op("Every org", ("admin",), ("200", "Orgs", "orgs")),
            "post": op("Create an org", ("admin",), ("201", "OrgCreated", "created"),
                       "400 409 413 415", body="OrgCreate")},
        "/v1/api-keys": {
            "get": op("API keys (never their secrets)", ("admin",), ("200", "Keys", "keys"),
                      "400", params=[query_param("org_id", {"type": "integer", "minimum": 0,
                                                            "maximum": BIG},
                                                 "only this org's keys")]),
            "post": op("Make an API key (shown once)", ("admin",),
                       ("201", "KeyCreated", "created"), "400 404 413 415",
                       body="KeyCreate")},
        "/v1/api-keys/{key_id}/revoke": {"post": op("Revoke an API key", ("admin",),
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
                                           "bearerFormat": "hsk_<prefix>_<secret>"},
                                "caseSecret": {"type": "http", "scheme": "basic",
                                               "description": "a victim's case reference "
                                               "(user name) and secret (password)"},
                                "intakeCode": {"type": "apiKey", "in": "header",
                                               "name": "X-Intake-Code",
                                               "description": "a one-time registration "
                                               "link's code (or `code` in the body)"}},
            "schemas": SCHEMAS,
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document of this API."""
    return jsonify(document())
