"""Organisations and their API keys: creation (the key is shown once), listing, authentication.

A key reads ``hsk_<prefix>_<secret>``: the prefix is public and finds the row, the secret is 256
random bits. Only the sha256 of the whole key is stored; with that much entropy a slow password
hash would add nothing but latency to every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hashsvc import audit
from hashsvc.errors import InputError, NotFound, StoreError
from hashsvc.store import Store
from hashsvc.store.models import ApiKey, Org, utcnow

#: Every role a key can have; each API endpoint names the roles it admits.
ROLES = ("charity", "forensic", "platform", "admin")

KEY_SCHEME = "hsk"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key and its org and role."""

    key_id: int
    org_id: int
    org_name: str
    role: str
    prefix: str


@dataclass(frozen=True)
class NewKey:
    """A freshly made key; ``key`` is the only copy of the secret there will ever be."""

    key_id: int
    org_id: int
    role: str
    prefix: str
    key: str


@dataclass(frozen=True)
class Actor:
    """Who to name in the audit log for an account change (the CLI has no key)."""

    org_id: int | None = None
    key_id: int | None = None
    via: str = "direct"  # "api", "cli", or a direct call (tests, scripts)


def key_digest(key: str) -> str:
    """The stored form of a key: sha256 hex of its text."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_HEX = frozenset("0123456789abcdef")
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def split_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None; nothing else reaches the database."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    prefix, secret = parts[1], parts[2]
    if not 0 < len(prefix) <= 16 or not set(prefix) <= _HEX:
        return None
    if not 0 < len(secret) <= 128 or not set(secret) <= _URLSAFE:
        return None
    return prefix, secret


def _check_name(name: str) -> str:
    """An org name: 1-128 printable characters, trimmed."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 128 or not name.isprintable():
        raise InputError("an org name is 1-128 printable characters")
    return name


def _org(session: Session, org: int | str) -> Org:
    """The org with this id or name, or :class:`NotFound`."""
    row = (session.get(Org, org) if isinstance(org, int)
           else session.execute(select(Org).where(Org.name == org)).scalar_one_or_none())
    if row is None:
        raise NotFound(f"no org {org}")
    return row


def create_org(store: Store, name: str, actor: Actor = Actor()) -> int:
    """Create an org and return its id; :class:`StoreError` if the name is taken."""
    name = _check_name(name)
    try:
        with store.sessions.begin() as session:
            org = Org(name=name, created_at=utcnow())
            session.add(org)
            session.flush()
            audit.append(session, action="org.create", org_id=actor.org_id,
                         key_id=actor.key_id, target_type="org", target_id=org.id,
                         details={"via": actor.via})
            return org.id
    except IntegrityError as exc:  # the unique name, also under a concurrent create
        raise StoreError(f"an org named {name!r} exists") from exc


def create_key(store: Store, org: int | str, role: str, label: str | None = None,
               actor: Actor = Actor()) -> NewKey:
    """Make a key for an org (by id or name) with one role; the result holds the secret."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}")
    if label is not None and (not isinstance(label, str) or len(label) > 128
                              or not label.isprintable()):
        raise InputError("a key label is at most 128 printable characters")
    prefix = secrets.token_hex(6)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    with store.sessions.begin() as session:
        row = ApiKey(org_id=_org(session, org).id, role=role, prefix=prefix,
                     key_hash=key_digest(key), label=label, created_at=utcnow())
        session.add(row)
        session.flush()
        audit.append(session, action="key.create", org_id=actor.org_id, key_id=actor.key_id,
                     target_type="key", target_id=row.id,
                     details={"via": actor.via, "org_id": row.org_id, "role": role})
        return NewKey(row.id, row.org_id, role, prefix, key)


def revoke_key(store: Store, key_id: int, actor: Actor = Actor()) -> None:
    """Revoke a key (it stops authenticating at once); revoking twice changes nothing."""
    with store.sessions.begin() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no key {key_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.append(session, action="key.revoke", org_id=actor.org_id,
                         key_id=actor.key_id, target_type="key", target_id=key_id,
                         details={"via": actor.via})


def authenticate(store: Store, key: str) -> Principal | None:
    """The principal a key stands for, or None if it is malformed, unknown or revoked."""
    parts = split_key(key)
    if parts is None:
        return None
    # A plain Core query on a pooled connection: every API request runs it, and the ORM
    # session's bookkeeping cost more than the query.
    with store.engine.connect() as conn:
        row = conn.execute(_KEY_QUERY, {"prefix": parts[0]}).first()
    if row is None:
        return None
    key_id, org_id, role, prefix, key_hash, revoked_at, org_name = row
    if not hmac.compare_digest(key_hash, key_digest(key)) or revoked_at:
        return None
    return Principal(key_id, org_id, org_name, role, prefix)


_KEY_QUERY = (select(ApiKey.id, ApiKey.org_id, ApiKey.role, ApiKey.prefix, ApiKey.key_hash,
                     ApiKey.revoked_at, Org.name)
              .join(Org, Org.id == ApiKey.org_id)
              .where(ApiKey.prefix == bindparam("prefix")))


def set_bank_sync(store: Store, org: int | str, granted: bool, actor: Actor = Actor()) -> int:
    """Grant (or take back) an org's bank sync: paging the change feed of every registered
    hash, to match on its own machines. Returns the org id; audited."""
    with store.sessions.begin() as session:
        row = _org(session, org)
        if row.bank_sync != granted:
            row.bank_sync = granted
            audit.append(session, action="org.bank_sync", org_id=actor.org_id,
                          key_id=actor.key_id, target_type="org", target_id=row.id,
                          details={"via": actor.via, "granted": granted})
        return row.id


def list_orgs(store: Store) -> list[dict[str, Any]]:
    """Every org with its id, name, creation time and whether it may sync the bank."""
    with store.sessions() as session:
        return [{"org_id": o.id, "name": o.name, "created_at": audit.utc_text(o.created_at),
                 "bank_sync": bool(o.bank_sync)}
                for o in session.execute(select(Org).order_by(Org.id)).scalars()]


def list_keys(store: Store, org_id: int | None = None) -> list[dict[str, Any]]:
    """Keys (never their hashes), optionally of one org."""
    query = select(ApiKey).order_by(ApiKey.id)
    if org_id is not None:
        query = query.where(ApiKey.org_id == org_id)
    with store.sessions() as session:
        return [{"key_id": k.id, "org_id": k.org_id, "role": k.role, "prefix": k.prefix,
                 "label": k.label, "created_at": audit.utc_text(k.created_at),
                 "revoked_at": audit.utc_text(k.revoked_at)}
                for k in session.execute(query).scalars()]
