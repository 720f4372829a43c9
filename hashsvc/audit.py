"""The audit log: append-only entries, each chained to the previous one by a hash.

An entry's hash is the sha256 of the canonical JSON of its fields, the previous entry's hash
among them, so editing, removing or reordering entries breaks the chain where it happened.
Removing the newest entries leaves a valid shorter chain: :func:`verify` can check a head
recorded elsewhere (``expect_head``) to catch that too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from hashsvc.store import Store
from hashsvc.store.models import AuditEntry

#: The previous hash of the first entry.
GENESIS = "0" * 64

# One arbitrary 64-bit key for PostgreSQL's advisory lock that serialises appends: two writers
# reading the same last entry would both chain to it and fork the log.
_LOCK_KEY = 0x68617368_61756474


@dataclass(frozen=True)
class Head:
    """The newest entry's position and hash: what an operator writes down to detect truncation."""

    seq: int
    entry_hash: str


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime (SQLite gives back naive ones that were stored as UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(
        timezone.utc)


def utc_text(value: datetime | None) -> str | None:
    """A datetime as fixed-format UTC text (microseconds, "Z"), or None."""
    return None if value is None else _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers: sorted, compact JSON in UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_fields(seq: int, at: datetime, org_id: int | None, key_id: int | None, action: str,
                 target_type: str | None, target_id: str | None,
                 details: Mapping[str, Any] | None, prev_hash: str) -> dict[str, Any]:
    """The hashed fields of an entry, with the time as fixed-format UTC text."""
    return {"seq": seq, "at": utc_text(at), "org_id": org_id,
            "key_id": key_id, "action": action, "target_type": target_type,
            "target_id": target_id, "details": dict(details) if details is not None else None,
            "prev_hash": prev_hash}


def compute_hash(fields: Mapping[str, Any]) -> str:
    """The sha256 hex digest of an entry's canonical JSON."""
    return hashlib.sha256(canonical(fields)).hexdigest()


def _hash_of(entry: AuditEntry) -> str:
    """What the stored entry's hash should be, from its stored fields."""
    return compute_hash(entry_fields(entry.seq, entry.at, entry.org_id, entry.key_id,
                                     entry.action, entry.target_type, entry.target_id,
                                     entry.details, entry.prev_hash))


def _lock(session: Session) -> None:
    """Serialise appenders (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE already does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def append(session: Session, *, action: str, org_id: int | None = None,
           key_id: int | None = None, target_type: str | None = None,
           target_id: str | int | None = None, details: Mapping[str, Any] | None = None
           ) -> AuditEntry:
    """Add an entry chained to the newest one, inside the caller's transaction."""
    _lock(session)
    last = session.execute(select(AuditEntry.seq, AuditEntry.entry_hash)
                           .order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    # Microseconds survive both databases; anything finer would change the hash on reading.
    at = datetime.now(timezone.utc)
    # A target id may come from a URL: NUL is refused by PostgreSQL and the column holds 64.
    target = None if target_id is None else str(target_id).replace("\0", "\ufffd")[:64]
    clean = json.loads(canonical(details)) if details is not None else None
    fields = entry_fields(seq, at, org_id, key_id, action, target_type, target, clean,
                          prev_hash)
    entry = AuditEntry(seq=seq, at=at, org_id=org_id, key_id=key_id, action=action,
                       target_type=target_type, target_id=target, details=clean,
                       prev_hash=prev_hash, entry_hash=compute_hash(fields))
    session.add(entry)
    session.flush()
    return entry


def record(store: Store, **kwargs: Any) -> AuditEntry:
    """Append one entry in its own transaction (see :func:`append` for the arguments)."""
    with store.sessions.begin() as session:
        return append(session, **kwargs)


def entries(store: Store, after: int = 0, limit: int = 100) -> list[AuditEntry]:
    """Entries with ``seq`` greater than ``after``, oldest first."""
    with store.sessions() as session:
        return list(session.execute(select(AuditEntry).where(AuditEntry.seq > after)
                                    .order_by(AuditEntry.seq).limit(limit)).scalars())


def to_json(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the API returns it."""
    return {**entry_fields(entry.seq, entry.at, entry.org_id, entry.key_id, entry.action,
                           entry.target_type, entry.target_id, entry.details, entry.prev_hash),
            "entry_hash": entry.entry_hash}


def _walk(store: Store, batch: int = 5000) -> Iterator[AuditEntry]:
    """Every entry in ``seq`` order, read in batches."""
    after = 0
    while True:
        rows = entries(store, after, batch)
        if not rows:
            return
        yield from rows
        after = rows[-1].seq


def head(store: Store) -> Head | None:
    """The newest entry's position and hash (None for an empty log)."""
    with store.sessions() as session:
        row = session.execute(select(AuditEntry.seq, AuditEntry.entry_hash)
                              .order_by(AuditEntry.seq.desc()).limit(1)).first()
    return Head(row[0], row[1]) if row else None


def verify(store: Store, expect_head: Head | None = None) -> list[str]:
    """Every place the chain is broken (edited, removed or reordered entries); [] if intact.

    ``expect_head`` is an entry recorded earlier (say, by a daily job); it must still be in
    the chain with the same hash, which catches removal of the newest entries.
    """
    problems: list[str] = []
    expected_seq, prev_hash = 1, GENESIS
    seen_head = expect_head is None
    for entry in _walk(store):
        if entry.seq != expected_seq:  # seq is unique and read in order, so only gaps
            problems.append(f"entries {expected_seq}..{entry.seq - 1} are missing")
        if entry.prev_hash != prev_hash:
            problems.append(f"entry {entry.seq}: does not chain to the entry before it")
        if _hash_of(entry) != entry.entry_hash:
            problems.append(f"entry {entry.seq}: contents do not match its hash (edited)")
        if expect_head is not None and entry.seq == expect_head.seq:
            seen_head = True
            if entry.entry_hash != expect_head.entry_hash:
                problems.append(f"entry {entry.seq}: differs from the recorded head")
        expected_seq, prev_hash = entry.seq + 1, entry.entry_hash
    if not seen_head:
        assert expect_head is not None
        problems.append(f"entry {expect_head.seq} (the recorded head) is missing: "
                        "entries were removed from the end")
    return problems
