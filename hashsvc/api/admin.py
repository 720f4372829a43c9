"""The operator's endpoints: orgs, API keys, and the audit log (read and verified).

Account changes leave their own audit entry in the same transaction as the change (see
:mod:`hashsvc.accounts`); each request here leaves one more, with its outcome.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from hashsvc import accounts, audit
from hashsvc.api import state
from hashsvc.api.auth import current_principal, requires
from hashsvc.api.errors import BIG, int_arg, json_body
from hashsvc.errors import InputError, NotFound

bp = Blueprint("admin", __name__)

#: Most audit entries one page holds.
MAX_PAGE = 1000


def _actor() -> accounts.Actor:
    """The calling admin key, as account changes name it in the audit log."""
    principal = current_principal()
    return accounts.Actor(principal.org_id, principal.key_id, "api")


@bp.get("/orgs")
@requires("admin", action="orgs.list")
def list_orgs() -> Any:
    """Every org."""
    return jsonify({"orgs": accounts.list_orgs(state().store)})


@bp.post("/orgs")
@requires("admin", action="orgs.create", target="org")
def create_org() -> Any:
    """Create an org; 409 if the name is taken."""
    name = json_body(dict).get("name")
    if not isinstance(name, str):
        raise InputError("name is required")
    org_id = accounts.create_org(state().store, name, _actor())
    g.audit.target_id = str(org_id)
    return jsonify({"org_id": org_id, "name": name.strip()}), 201


@bp.post("/orgs/<int:org_id>/bank-sync")
@requires("admin", action="orgs.bank_sync", target="org")
def bank_sync(org_id: int) -> Any:
    """``{"granted": true|false}``: let the org's platform keys page the bank's change feed."""
    granted = json_body(dict).get("granted")
    if not isinstance(granted, bool):
        raise InputError("granted must be true or false")
    if org_id >= 2 ** 62:
        raise NotFound(f"no org {org_id}")
    accounts.set_bank_sync(state().store, org_id, granted, _actor())
    return jsonify({"org_id": org_id, "bank_sync": granted})


@bp.get("/api-keys")
@requires("admin", action="keys.list")
def list_keys() -> Any:
    """Every key (never a secret or its hash), or one org's with ``?org_id=``."""
    org_id = int_arg("org_id", 0, 0, BIG)
    return jsonify({"keys": accounts.list_keys(state().store, org_id or None)})


@bp.post("/api-keys")
@requires("admin", action="keys.create", target="key")
def create_key() -> Any:
    """Make a key for an org with one role; the response holds the only copy of the key."""
    body = json_body(dict)
    org_id, role, label = body.get("org_id"), body.get("role"), body.get("label")
    if not isinstance(org_id, int) or isinstance(org_id, bool) or not 0 < org_id < 2 ** 62:
        raise InputError("org_id must be an org's id")
    if not isinstance(role, str):
        raise InputError(f"role must be one of {', '.join(accounts.ROLES)}")
    new = accounts.create_key(state().store, org_id, role, label, _actor())
    g.audit.target_id = str(new.key_id)
    return jsonify({"key_id": new.key_id, "org_id": new.org_id, "role": new.role,
                    "prefix": new.prefix, "key": new.key}), 201


@bp.post("/api-keys/<int:key_id>/revoke")
@requires("admin", action="keys.revoke", target="key")
def revoke_key(key_id: int) -> Any:
    """Revoke a key; it stops working at once. Revoking twice is harmless."""
    if key_id >= 2 ** 62:  # beyond a BIGINT: no such row, and PostgreSQL would refuse it
        raise NotFound(f"no key {key_id}")
    accounts.revoke_key(state().store, key_id, _actor())
    return jsonify({"key_id": key_id, "revoked": True})


@bp.get("/audit")
@requires("admin", action="audit.read")
def read_audit() -> Any:
    """A page of the audit log after ``?after=SEQ`` (oldest first, ``?limit=`` entries)."""
    after = int_arg("after", 0, 0, BIG)
    limit = int_arg("limit", 100, 1, MAX_PAGE)
    rows = audit.entries(state().store, after, limit)
    return jsonify({"entries": [audit.to_json(e) for e in rows],
                    "next_after": rows[-1].seq if len(rows) == limit else None})


@bp.get("/audit/verify")
@requires("admin", action="audit.verify")
def verify_audit() -> Any:
    """Check the whole chain; the head returned is what to write down to catch truncation."""
    problems = audit.verify(state().store)
    head = audit.head(state().store)
    return jsonify({"ok": not problems, "problems": problems,
                    "head": {"seq": head.seq, "entry_hash": head.entry_hash} if head else None})
