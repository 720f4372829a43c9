"""The operator's pages (an admin key): orgs (create, bank-sync grant), API keys (create: the
key is shown once; revoke), and the audit log with its chain check.

Account changes go through :mod:`hashsvc.accounts` (their own audit entries, ``via: "web"``);
each request leaves the API's entry too ("orgs.list", "orgs.create", "orgs.bank_sync",
"keys.list", "keys.create", "keys.revoke", "audit.read", "audit.verify").
"""

from __future__ import annotations

import json
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from hashsvc import accounts, audit
from hashsvc.api import state
from hashsvc.api.admin import MAX_PAGE
from hashsvc.api.auth import current_principal
from hashsvc.errors import HashsvcError, NotFound, StoreError
from hashsvc.web import bp, page


def _actor() -> accounts.Actor:
    """The signed-in operator, as account changes name it in the audit log."""
    principal = current_principal()
    return accounts.Actor(principal.org_id, principal.key_id, "web")


@bp.get("/admin")
def admin_home() -> Any:
    """The operator's first page."""
    return redirect(url_for("web.orgs"), 303)


@bp.get("/admin/orgs")
@page("admin", action="orgs.list")
def orgs() -> Any:
    """Every org, the form to create one, and each org's bank-sync grant."""
    return render_template("web/orgs.html", orgs=accounts.list_orgs(state().store), errors={})


@bp.post("/admin/orgs")
@page("admin", action="orgs.create", target="org")
def create_org() -> Any:
    """Create an org."""
    name = request.form.get("name", "")
    try:
        org_id = accounts.create_org(state().store, name, _actor())
    except HashsvcError as exc:
        status = 409 if isinstance(exc, StoreError) else 400
        return render_template("web/orgs.html", orgs=accounts.list_orgs(state().store),
                               errors={"name": str(exc)}, name=name), status
    g.audit.target_id = str(org_id)
    flash(f"Organisation {name.strip()} was created.", "ok")
    return redirect(url_for("web.orgs"), 303)


@bp.post("/admin/orgs/<int:org_id>/bank-sync")
@page("admin", action="orgs.bank_sync", target="org")
def bank_sync(org_id: int) -> Any:
    """Grant or take back an org's bank sync."""
    granted = request.form.get("granted") == "true"
    if org_id >= 2 ** 62:
        raise NotFound(f"no org {org_id}")
    accounts.set_bank_sync(state().store, org_id, granted, _actor())
    flash(f"Bank sync {'granted to' if granted else 'taken back from'} organisation {org_id}.",
          "ok")
    return redirect(url_for("web.orgs"), 303)


def _keys_page(new: accounts.NewKey | None = None, errors: dict[str, str] | None = None,
               status: int = 200) -> Any:
    """The keys page: every key (never a secret), the form, and a new key once."""
    store = state().store
    orgs = accounts.list_orgs(store)
    names = {o["org_id"]: o["name"] for o in orgs}
    return render_template("web/keys.html", keys=accounts.list_keys(store), orgs=orgs,
                           names=names, roles=accounts.ROLES, new=new,
                           errors=errors or {}, form=request.form), status


@bp.get("/admin/keys")
@page("admin", action="keys.list")
def keys() -> Any:
    """Every key, and the form to make one."""
    return _keys_page()


@bp.post("/admin/keys")
@page("admin", action="keys.create", target="key")
def create_key() -> Any:
    """Make a key; the answer shows it, once."""
    label = request.form.get("label", "").strip() or None
    try:
        org_id = int(request.form.get("org_id", ""))
    except ValueError:
        return _keys_page(errors={"org_id": "Choose an organisation."}, status=400)
    try:
        new = accounts.create_key(state().store, org_id, request.form.get("role", ""), label,
                                  _actor())
    except HashsvcError as exc:
        field = "role" if "role" in str(exc) else "label" if "label" in str(exc) else "org_id"
        return _keys_page(errors={field: str(exc)}, status=404 if isinstance(exc, NotFound)
                          else 400)
    g.audit.target_id = str(new.key_id)
    return _keys_page(new=new)


@bp.post("/admin/keys/<int:key_id>/revoke")
@page("admin", action="keys.revoke", target="key")
def revoke_key(key_id: int) -> Any:
    """Revoke a key after a confirming screen: it stops working at once, here and in the
    API."""
    if key_id >= 2 ** 62:
        raise NotFound(f"no key {key_id}")
    if request.form.get("confirm") != "yes":
        key = next((k for k in accounts.list_keys(state().store) if k["key_id"] == key_id), None)
        if key is None:
            raise NotFound(f"no key {key_id}")
        g.pop("audit", None)  # nothing changed yet: the confirmed request is the audited one
        return render_template("web/key_revoke.html", key=key)
    accounts.revoke_key(state().store, key_id, _actor())
    flash(f"Key {key_id} was revoked.", "ok")
    return redirect(url_for("web.keys"), 303)


def _audit_page(verdict: dict[str, Any] | None = None) -> Any:
    """A page of the audit log: after ``?after=`` (default: the newest ``?limit=``)."""
    from hashsvc.api.errors import BIG, int_arg

    limit = int_arg("limit", 100, 1, MAX_PAGE)
    head = audit.head(state().store)
    newest = head.seq if head else 0
    after = int_arg("after", max(newest - limit, 0), 0, BIG)
    rows = audit.entries(state().store, after, limit)
    entries = [{**audit.to_json(e),
                "details_text": json.dumps(e.details, ensure_ascii=False, sort_keys=True)
                if e.details is not None else ""} for e in rows]
    return render_template("web/audit.html", entries=entries, after=after, limit=limit,
                           newest=newest, verdict=verdict,
                           earlier=max(after - limit, 0) if after > 0 else None,
                           later=rows[-1].seq if rows and rows[-1].seq < newest else None)


@bp.get("/admin/audit")
@page("admin", action="audit.read")
def audit_log() -> Any:
    """A page of the audit log, newest page first."""
    return _audit_page()


@bp.get("/admin/audit/verify")
@page("admin", action="audit.verify")
def audit_verify() -> Any:
    """Check the whole hash chain; show the verdict and the head to write down."""
    problems = audit.verify(state().store)
    head = audit.head(state().store)
    return _audit_page({"ok": not problems, "problems": problems,
                        "head": {"seq": head.seq, "entry_hash": head.entry_hash}
                        if head else None})
