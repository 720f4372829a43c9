"""The chained audit log: appends, tamper detection, concurrent writers, the CLI check."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update

from hashsvc import audit
from hashsvc.cli import main
from hashsvc.settings import Settings
from hashsvc.store import Store
from hashsvc.store.models import AuditEntry


def fill(store: Store, n: int) -> None:
    """Append ``n`` entries with varied fields."""
    for i in range(n):
        audit.record(store, action="case.read", org_id=i % 3 or None, key_id=i,
                     target_type="case", target_id=i * 10,
                     details={"status": 200, "note": f"é{i}", "nested": {"b": [1, 2], "a": None}})


def test_an_untouched_chain_verifies(any_store: Store) -> None:
    assert audit.verify(any_store) == [] and audit.head(any_store) is None
    fill(any_store, 12)
    rows = audit.entries(any_store, 0, 100)
    assert [r.seq for r in rows] == list(range(1, 13))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in zip(rows, rows[1:]))
    assert audit.verify(any_store) == []
    head = audit.head(any_store)
    assert head == audit.Head(12, rows[-1].entry_hash)
    assert audit.verify(any_store, head) == []
    assert rows[3].target_id == "30" and rows[3].details["nested"] == {"b": [1, 2], "a": None}


def _change(store: Store, seq: int, **values: object) -> None:
    """Overwrite columns of one entry behind the log's back."""
    with store.sessions.begin() as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(**values))


@pytest.mark.parametrize("column, value", [
    ("action", "case.create"), ("org_id", 99), ("key_id", None), ("target_id", "31"),
    ("details", {"status": 403}), ("target_type", "scan"),
])
def test_an_edited_entry_is_found(any_store: Store, column: str, value: object) -> None:
    fill(any_store, 6)
    _change(any_store, 4, **{column: value})
    assert audit.verify(any_store) == ["entry 4: contents do not match its hash (edited)"]


def test_an_edit_that_recomputes_its_own_hash_breaks_the_next_link(any_store: Store) -> None:
    fill(any_store, 6)
    row = audit.entries(any_store, 3, 1)[0]
    fields = audit.entry_fields(row.seq, row.at, row.org_id, row.key_id, "case.withdraw",
                                row.target_type, row.target_id, row.details, row.prev_hash)
    _change(any_store, 4, action="case.withdraw", entry_hash=audit.compute_hash(fields))
    assert audit.verify(any_store) == ["entry 5: does not chain to the entry before it"]


def test_removed_entries_are_found(any_store: Store) -> None:
    fill(any_store, 8)
    head = audit.head(any_store)
    with any_store.sessions.begin() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq.in_([3, 4])))
    assert audit.verify(any_store) == ["entries 3..4 are missing",
                                       "entry 5: does not chain to the entry before it"]
    with any_store.sessions.begin() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq >= 7))
    problems = audit.verify(any_store, head)
    assert problems[-1].startswith("entry 8 (the recorded head) is missing")


def test_reordered_entries_are_found(any_store: Store) -> None:
    fill(any_store, 5)
    rows = {r.seq: r for r in audit.entries(any_store, 0, 10)}
    # Swap the contents of entries 2 and 3 (hashes included), keeping their positions.
    columns = ("at", "org_id", "key_id", "action", "target_type", "target_id", "details",
               "prev_hash")
    _change(any_store, 2, entry_hash="x" * 64)
    for seq, source in ((3, rows[2]), (2, rows[3])):
        _change(any_store, seq, entry_hash=source.entry_hash,
                **{c: getattr(source, c) for c in columns})
    problems = audit.verify(any_store)
    assert "entry 2: contents do not match its hash (edited)" in problems
    assert "entry 3: contents do not match its hash (edited)" in problems


def test_append_joins_the_callers_transaction(any_store: Store) -> None:
    with pytest.raises(RuntimeError):
        with any_store.sessions.begin() as session:
            audit.append(session, action="case.create")
            raise RuntimeError("the action failed")
    assert audit.head(any_store) is None


@pytest.mark.postgres
def test_concurrent_appenders_keep_one_chain(pg_store: Store) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                audit.record(pg_store, action="lookup", key_id=n, details={"i": i})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pg_store.sessions() as session:
        seqs = list(session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars())
    assert seqs == list(range(1, 91))
    assert audit.verify(pg_store) == []


def test_cli_verify_audit_exit_status(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"HASHSVC_DATA_DIR": settings.data_dir}
    created = runner.invoke(main, ["admin", "create-org", "Helpline"], env=env)
    assert created.exit_code == 0, created.output
    key = runner.invoke(main, ["admin", "create-key", "--org", "Helpline", "--role", "charity"],
                        env=env)
    assert key.exit_code == 0 and key.stdout.strip().startswith("hsk_")
    assert runner.invoke(main, ["admin", "create-key", "--org", "Nobody", "--role", "charity"],
                         env=env).exit_code == 1
    ok = runner.invoke(main, ["admin", "verify-audit"], env=env)
    assert ok.exit_code == 0 and "intact: head 2:" in ok.stdout
    head = ok.stdout.strip().rsplit(" ", 1)[-1]

    store = Store.open(settings)
    rows = audit.entries(store, 0, 10)
    assert [(r.action, r.details["via"]) for r in rows] == [("org.create", "cli"),
                                                             ("key.create", "cli")]
    audit.record(store, action="case.read")
    assert runner.invoke(main, ["admin", "verify-audit", "--expect-head", head],
                         env=env).exit_code == 0
    with store.sessions.begin() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq >= 2))
    store.close()
    assert runner.invoke(main, ["admin", "verify-audit"], env=env).exit_code == 0  # looks whole
    truncated = runner.invoke(main, ["admin", "verify-audit", "--expect-head", head], env=env)
    assert truncated.exit_code == 1 and "BROKEN" in truncated.output
