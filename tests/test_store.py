"""The store on SQLite and on real PostgreSQL: migrations, idempotent writes, withdrawal."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hashsvc.errors import InputError, NotFound
from hashsvc.store import Store, hash_rows
from hashsvc.store.models import Base


def line(seed: int) -> dict:
    """A syntactically valid hash line with distinct values per seed."""
    h = f"{seed:064x}"
    return {"sha256": h, "md5": h[:32], "size": 10, "format": "jpeg", "width": 4, "height": 3,
            "hashes": {"pdq": h, "phash": h[:16], "dhash": h[-16:]}, "quality": {"pdq": 90},
            "variants": {"pdq": {"orig": h, "rot90": f"{seed + 1:064x}"}}}


def test_migrations_match_models(any_store: Store) -> None:
    with any_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_register_twice_adds_nothing(any_store: Store) -> None:
    first = any_store.register("RPH-1", [line(1), line(2)])
    assert (first.images_added, first.images_existing) == (2, 0)
    assert first.hashes_added == 2 * 6
    again = any_store.register("RPH-1", [line(1), line(2)])
    assert (again.images_added, again.images_existing, again.hashes_added) == (0, 2, 0)
    stats = any_store.bank_stats()
    assert stats["images"] == 2 and stats["hashes"]["pdq"] == 4
    assert stats["cursor"] == 12  # one change per hash, none for the repeat


def test_same_image_in_two_cases_is_two_registrations(any_store: Store) -> None:
    any_store.register("A", [line(1)])
    any_store.register("B", [line(1)])
    hits = any_store.exact_lookup("sha256", [line(1)["sha256"]])
    assert len(hits[line(1)["sha256"]]) == 2


def test_withdraw_erases_and_feeds_removals(any_store: Store) -> None:
    any_store.register("A", [line(1)])
    any_store.register("B", [line(2)])
    cursor = any_store.bank_cursor()
    assert any_store.withdraw_case("A") == 1
    changes = any_store.bank_changes(cursor)
    assert {c.op for c in changes} == {"remove"} and len(changes) == 6
    assert {c.image_id for c in changes} == {1} and {c.value for c in changes} == {None}
    assert any_store.exact_lookup("sha256", [line(1)["sha256"]]) == {}
    assert any_store.bank_stats()["images"] == 1
    with pytest.raises(InputError):
        any_store.register("A", [line(3)])
    with pytest.raises(NotFound):
        any_store.withdraw_case("nope")


def test_scan_results_are_idempotent(any_store: Store) -> None:
    scan_id = any_store.create_scan("/evidence", "exhibit 1", {})
    files = [{"locator_hash": "a" * 64, "locator": "[]", "path": "x.jpg", "status": "hashed"}]
    matches = [{"locator_hash": "a" * 64, "image_id": 7, "case_ref": "A", "algorithm": "pdq",
                "distance": 3, "distances": {"pdq": 3}, "variant": "orig"}]
    problems = [{"locator_hash": "b" * 64, "path": "y.jpg", "stage": "decode",
                 "message": "bad", "skipped": False, "reason": None}]
    for _ in range(3):
        any_store.record_results(scan_id, files, matches, problems)
    counts = any_store.scan_counts(scan_id)
    assert counts == {"by_status": {"hashed": 1}, "skipped": {}, "errors": 1,
                      "matched_files": 1}


@pytest.mark.parametrize("bad,message", [
    ({"sha256": "zz"}, "sha256"),
    ({"sha256": "0" * 64, "hashes": {"pdq": "abc"}}, "pdq"),
    ({"sha256": "0" * 64, "hashes": {"nope": "00"}}, "unknown"),
    ({"sha256": "0" * 64, "hashes": {"phash": "g" * 16}}, "hexadecimal"),
    ({"sha256": "0" * 64, "variants": {"pdq": {"sideways": "0" * 64}}}, "variant"),
])
def test_hash_rows_validate(bad: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        hash_rows(bad)


def test_upgrade_keeps_data_written_under_older_schemas(settings) -> None:
    from hashsvc.store import make_engine, migrate

    engine = make_engine(settings.db_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:  # rows as the first release wrote them
        conn.exec_driver_sql("INSERT INTO cases (id, ref, created_at) VALUES (1, 'OLD-1', "
                             "'2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO registered_images (id, case_id, sha256, created_at) "
                             f"VALUES (1, 1, '{'a' * 64}', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO scans (id, source, state, created_at) "
                             "VALUES ('s1', '/e', 'done', '2026-01-01 00:00:00')")
    migrate.upgrade(engine)  # through every later revision, with rows in the altered tables
    store = Store(engine)
    assert store.bank_stats()["images"] == 1
    assert store.get_scan("s1").files_enumerated == 0
    assert store.exact_lookup("sha256", ["a" * 64]) == {}  # no hash rows were written
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
