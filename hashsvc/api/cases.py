"""Charities' endpoints: create a case, register hashes under it, read it, withdraw it.

A charity sees only its own cases; another org's case id answers exactly like an unknown one.
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping

from flask import Blueprint, g, jsonify
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from hashsvc import audit, victims
from hashsvc.api import state
from hashsvc.api.auth import current_principal, not_found_for_other_org, own_page, requires
from hashsvc.api.errors import Conflict, LineError, json_body
from hashsvc.errors import InputError, NotFound
from hashsvc.hashing import HASH_FORMAT
from hashsvc.store import frame_lines, hash_rows, normalize_line
from hashsvc.store.models import BankHash, Case, RegisteredImage, utcnow

bp = Blueprint("cases", __name__)

#: Most hash lines one registration request may carry (413 beyond); a victim's set is far less.
MAX_LINES = 10_000

# Optional facts of a hash line, with the type each must have when present.
_INT_FIELDS = ("size", "width", "height", "hash_format", "decode_version", "video_version")


def check_case_ref(ref: Any) -> str:
    """A case reference: 1-64 printable characters without whitespace."""
    if (not isinstance(ref, str) or not ref or len(ref) > 64 or not ref.isprintable()
            or any(c.isspace() for c in ref)):
        raise InputError("a case reference is 1-64 printable characters without spaces")
    return ref


def _is_int(value: Any) -> bool:
    """A JSON integer (not a boolean) that fits the database's 64-bit columns."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 62


def _str_map(value: Any, name: str) -> Mapping[str, Any]:
    """``value`` as an object, or InputError naming the field."""
    if not isinstance(value, dict):
        raise InputError(f"{name} must be an object")
    return value


def validate_line(line: Any) -> dict[str, Any]:
    """A hash line as ``hashsvc hash`` prints it, checked field by field; InputError if not."""
    if not isinstance(line, dict):
        raise InputError("expected a JSON object")
    for name in _INT_FIELDS:
        if line.get(name) is not None and not _is_int(line[name]):
            raise InputError(f"{name} must be a non-negative integer")
    if line.get("hash_format", HASH_FORMAT) != HASH_FORMAT:
        raise InputError(f"hash_format {line['hash_format']} is not {HASH_FORMAT}")
    for name in ("sha256", "md5"):
        if line.get(name) is not None and not isinstance(line[name], str):
            raise InputError(f"{name} must be a hex string")
    if line.get("format") is not None and (not isinstance(line["format"], str)
                                           or len(line["format"]) > 16
                                           or not line["format"].isprintable()):
        raise InputError("format must be a short string")
    for alg, value in _str_map(line.get("hashes", {}), "hashes").items():
        if not isinstance(value, str):
            raise InputError(f"hashes.{alg} must be a hex string")
    for alg, value in _str_map(line.get("quality", {}), "quality").items():
        if not _is_int(value) or value > 100:
            raise InputError(f"quality.{alg} must be an integer from 0 to 100")
    for alg, variants in _str_map(line.get("variants", {}), "variants").items():
        for variant, value in _str_map(variants, f"variants.{alg}").items():
            if not isinstance(value, str):
                raise InputError(f"variants.{alg}.{variant} must be a hex string")
    line = normalize_line(line)  # sha256/md5 may come inside hashes; at least one hash
    hash_rows(line)  # hex lengths, algorithm and variant names
    frame_lines(line)  # a video's frames, each checked like a picture's hashes
    return line


def _own_case(case_id: int) -> Case:
    """The caller's case with this id; 404 for an unknown one and for another org's."""
    if case_id >= 2 ** 63:  # beyond a BIGINT: no such row, and PostgreSQL would refuse it
        raise NotFound(f"no case {case_id}")
    with state().store.sessions() as session:
        case = session.get(Case, case_id)
    if case is None:
        raise NotFound(f"no case {case_id}")
    if case.org_id != current_principal().org_id:
        raise not_found_for_other_org("case", case_id)
    return case


def case_json(case: Case) -> dict[str, Any]:
    """A case as the API shows it to its charity, with its bank counts."""
    with state().store.sessions() as session:
        # Files registered: a video counts once, not once per frame.
        images = session.execute(select(func.count()).select_from(RegisteredImage)
                                 .where(RegisteredImage.case_id == case.id,
                                        RegisteredImage.parent_id.is_(None))).scalar() or 0
        hashes = session.execute(select(func.count()).select_from(BankHash)
                                 .join(RegisteredImage, RegisteredImage.id == BankHash.image_id)
                                 .where(RegisteredImage.case_id == case.id)).scalar() or 0
    return {"case_id": case.id, "case_ref": case.ref,
            "state": "withdrawn" if case.withdrawn_at else "active",
            "created_at": audit.utc_text(case.created_at),
            "withdrawn_at": audit.utc_text(case.withdrawn_at),
            "features_consent": bool(case.features_consent),
            "victim_secret": case.secret_hash is not None,
            "images": images, "hashes": hashes}


@bp.post("/cases")
@requires("charity", action="case.create", target="case")
def create_case() -> Any:
    """Open a case under the caller's org; the reference is made here unless one is given.

    The answer holds the victim's secret, the only copy there will be: with the reference it
    opens ``GET /v1/status`` and withdrawal. ``features_consent`` (default false) records
    whether the victim agreed to keeping local features; without it only hashes are stored.
    """
    return jsonify(open_case(json_body(dict, required=False))), 201


def open_case(body: Mapping[str, Any]) -> dict[str, Any]:
    """Open a case for the caller's org from ``{"case_ref"?, "features_consent"?}`` (the API
    and the caseworkers' web page); the answer holds the victim's secret."""
    ref = check_case_ref(body["case_ref"]) if body.get("case_ref") is not None else (
        f"case-{secrets.token_hex(8)}")
    consent = body.get("features_consent", False)
    if not isinstance(consent, bool):
        raise InputError("features_consent must be true or false")
    try:
        with state().store.sessions.begin() as session:
            case = Case(ref=ref, org_id=current_principal().org_id, created_at=utcnow(),
                        features_consent=consent)
            session.add(case)
            session.flush()
            case_id = case.id
    except IntegrityError as exc:
        raise Conflict(f"case reference {ref} is taken") from exc
    secret = victims.set_secret(state().store, case_id)
    g.audit.target_id = str(case_id)
    g.audit.details["features_consent"] = consent
    return {"case_id": case_id, "case_ref": ref, "secret": secret, "features_consent": consent}


@bp.post("/cases/<int:case_id>/secret")
@requires("charity", action="case.secret", target="case")
def replace_secret(case_id: int) -> Any:
    """Give the victim a new secret (a lost one, or one that leaked): the old one stops
    working and any lockout ends. The answer holds the only copy."""
    case = _own_case(case_id)
    return jsonify({"case_id": case.id, "case_ref": case.ref,
                    "secret": victims.set_secret(state().store, case.id)})


@bp.post("/cases/<int:case_id>/consent")
@requires("charity", action="case.consent", target="case")
def set_consent(case_id: int) -> Any:
    """Record the victim's answer on local features: ``{"features": false}`` erases the
    case's features at once; ``true`` keeps those registered from now on."""
    case = _own_case(case_id)
    features = json_body(dict).get("features")
    if not isinstance(features, bool):
        raise InputError("features must be true or false")
    erased = victims.set_consent(state().store, case.id, features)
    g.audit.details.update({"features_consent": features, "features_erased": erased})
    return jsonify({**case_json(_own_case(case_id)), "features_erased": erased})


@bp.get("/cases")
@requires("charity", action="case.list", target="case")
def list_cases() -> Any:
    """The caller's org's cases, newest first, a page at a time (no counts: see each case)."""
    rows = own_page(Case, Case.created_at.desc(), Case.id.desc())
    return jsonify({"cases": [{
        "case_id": c.id, "case_ref": c.ref, "state": "withdrawn" if c.withdrawn_at else "active",
        "created_at": audit.utc_text(c.created_at),
        "withdrawn_at": audit.utc_text(c.withdrawn_at)} for c in rows]})


@bp.get("/cases/<int:case_id>")
@requires("charity", action="case.read", target="case")
def get_case(case_id: int) -> Any:
    """The case's state and how many images and hashes it has in the bank."""
    return jsonify(case_json(_own_case(case_id)))


@bp.post("/cases/<int:case_id>/hashes")
@requires("charity", action="case.register", target="case")
def register_hashes(case_id: int) -> Any:
    """Add hash lines to the case; every line is checked first; repeating it adds nothing."""
    case = _own_case(case_id)
    lines = json_body(list)
    good, skipped = checked_lines(case, lines)
    summary = register_checked(case, good, skipped)
    g.audit.details.update({"lines": len(lines), **summary})
    return jsonify({"case_id": case.id, "case_ref": case.ref, **summary})


def checked_lines(case: Case, lines: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """The lines to register under ``case`` (each checked) and how many error lines were
    skipped; 413 beyond MAX_LINES, 409 for a withdrawn case, 400 naming a bad line. Shared by
    ``POST /v1/cases/{id}/hashes`` and the intake page's ``POST /v1/intake``."""
    if len(lines) > MAX_LINES:
        from werkzeug.exceptions import RequestEntityTooLarge

        raise RequestEntityTooLarge(f"at most {MAX_LINES} hash lines per request")
    if case.withdrawn_at is not None:
        raise Conflict(f"case {case.id} was withdrawn; open a new case")
    good, skipped = [], 0
    for index, line in enumerate(lines):
        if isinstance(line, dict) and "error" in line:
            skipped += 1  # a file the victim's device could not hash, as `hashsvc hash` says
            continue
        try:
            good.append(validate_line(line))
        except InputError as exc:
            raise LineError(index, str(exc)) from exc
    return good, skipped


def register_checked(case: Case, good: list[dict[str, Any]], skipped: int) -> dict[str, int]:
    """Register lines :func:`checked_lines` passed; the summary the API answers with."""
    result = state().store.register(case.ref, good)
    return {"images_added": result.images_added,
            "images_already_registered": result.images_existing,
            "hashes_added": result.hashes_added, "lines_with_errors_skipped": skipped}


@bp.post("/cases/<int:case_id>/withdraw")
@requires("charity", action="case.withdraw", target="case")
def withdraw_case(case_id: int) -> Any:
    """Withdraw every hash of the case: they stop matching and are erased; repeatable."""
    case = _own_case(case_id)
    withdrawn = 0 if case.withdrawn_at else state().store.withdraw_case(case.ref)
    g.audit.details["images_withdrawn"] = withdrawn
    return jsonify({**case_json(_own_case(case_id)), "images_withdrawn": withdrawn})
