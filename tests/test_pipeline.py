"""The scan pipeline on both stores: matching, idempotent re-runs, withdrawal, crashed workers."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from hashsvc.hashing import hash_bytes
from hashsvc.matching import BankMatcher
from hashsvc.pipeline import FileResult, Hasher, Task, process_chunk, run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.store import Store

from conftest import encode, photo


def register(store: Store, case: str, *names: str) -> None:
    """Register photographs (as JPEG files on the victim's device) under a case."""
    lines = []
    for name in names:
        hs = hash_bytes(encode(photo(name), "JPEG", quality=95), with_variants=True)
        lines.append(hs.to_json())
    store.register(case, lines)


def make_dump(root: Path) -> None:
    """Copies of two registered photos and two unrelated ones."""
    root.mkdir()
    (root / "a.jpg").write_bytes(encode(photo("astronaut").resize((300, 300)), "JPEG"))
    (root / "b.png").write_bytes(encode(photo("coffee").transpose(Image.Transpose.ROTATE_90),
                                        "PNG"))
    (root / "c.jpg").write_bytes(encode(photo("camera"), "JPEG"))
    (root / "d.jpg").write_bytes(encode(photo("moon"), "JPEG"))
    (root / b"\xff\xfename.jpg".decode("utf-8", "surrogateescape")).write_bytes(
        encode(photo("astronaut"), "JPEG"))


def test_scan_matches_on_both_stores(any_store: Store, settings: Settings,
                                     tmp_path: Path) -> None:
    register(any_store, "CASE-1", "astronaut", "coffee")
    make_dump(tmp_path / "dump")
    scan_id = run_scan(any_store, settings, str(tmp_path / "dump"))
    report = build_report(any_store, scan_id)
    found = {m["path"]: m for m in report["matches"]}
    assert set(found) == {"a.jpg", "b.png", "\ufffd\ufffdname.jpg"}
    assert found["b.png"]["variant"] == "rot90"
    assert report["files_scanned"] == 5 and report["images_hashed"] == 5
    assert report["state"] == "done" and report["errors"] == []


def test_files_recorded_beside_an_archive_keep_their_hashes(any_store: Store, settings: Settings,
                                                            tmp_path: Path) -> None:
    # An archive's row carries no hashes; rows written with it in one batch must keep theirs.
    register(any_store, "CASE-1", "astronaut")
    dump = tmp_path / "dump"
    dump.mkdir()
    with zipfile.ZipFile(dump / "a.zip", "w") as zf:  # walked (and recorded) first
        zf.writestr("DCIM/IMG_0001.jpg", encode(photo("astronaut"), "JPEG"))
    copy = encode(photo("astronaut").resize((300, 300)), "JPEG")
    (dump / "b.jpg").write_bytes(copy)
    report = build_report(any_store, run_scan(any_store, settings.replace(workers=1), str(dump)))
    found = {m["path"]: m for m in report["matches"]}
    assert set(found) == {"a.zip/DCIM/IMG_0001.jpg", "b.jpg"}
    assert found["b.jpg"]["sha256"] == hashlib.sha256(copy).hexdigest()
    assert found["b.jpg"]["md5"] == hashlib.md5(copy).hexdigest()
    assert all(m["sha256"] and m["md5"] and m["format"] == "jpeg" for m in found.values())


def test_rerunning_a_scan_changes_nothing(store: Store, settings: Settings,
                                          tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    make_dump(tmp_path / "dump")
    scan_id = run_scan(store, settings, str(tmp_path / "dump"))
    first = build_report(store, scan_id)
    run_scan(store, settings, str(tmp_path / "dump"), scan_id=scan_id)
    second = build_report(store, scan_id)
    for key in ("files_scanned", "images_hashed", "matches", "errors", "skipped"):
        assert first[key] == second[key]


def test_withdrawn_case_stops_matching_and_new_hashes_match(store: Store, settings: Settings,
                                                            tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    matcher = BankMatcher(store, settings)
    copy = hash_bytes(encode(photo("astronaut").resize((256, 256)), "JPEG"))
    other = hash_bytes(encode(photo("coffee"), "JPEG"))
    assert [c.case for c in matcher.match_many([copy])[0]] == ["CASE-1"]
    register(store, "CASE-2", "coffee")
    assert matcher.match_many([other]) == [[]]  # not yet seen by this matcher...
    assert matcher.refresh() > 0  # ...until it applies the change feed
    assert [c.case for c in matcher.match_many([other])[0]] == ["CASE-2"]
    store.withdraw_case("CASE-1")
    matcher.refresh()
    assert matcher.match_many([copy]) == [[]]
    assert BankMatcher(store, settings).match_many([copy]) == [[]]


def crashing_chunk(tasks: list[Task]) -> list[FileResult]:
    """Like process_chunk, but the worker dies on a file whose name says 'crash'."""
    if any("crash" in t.name for t in tasks):
        os._exit(1)
    return process_chunk(tasks)


def test_a_crashing_file_costs_only_itself(tmp_path: Path) -> None:
    files = []
    for i in range(6):
        path = tmp_path / f"{'crash' if i == 3 else 'ok'}{i}.png"
        path.write_bytes(encode(photo("coffee").resize((64 + i, 64)), "PNG"))
        files.append(path)
    hasher = Hasher(2, 2, fn=crashing_chunk)
    tasks = [Task(str(p), path=str(p), name=p.name, max_file_bytes=10**8, max_pixels=10**8)
             for p in files]
    results = []
    try:
        for i in range(0, len(tasks), 2):
            results.extend(hasher.submit(tasks[i:i + 2]))
        results.extend(hasher.drain())
    finally:
        hasher.close()
    by_key = {r.key: r for r in results}
    assert set(by_key) == {str(p) for p in files}
    assert by_key[str(files[3])].status == "error"
    assert "crashed" in by_key[str(files[3])].message
    assert all(by_key[str(p)].status == "hashed" for i, p in enumerate(files) if i != 3)


def test_scan_of_missing_source_is_an_error(store: Store, settings: Settings,
                                            tmp_path: Path) -> None:
    from hashsvc.errors import SourceError

    with pytest.raises(SourceError):
        run_scan(store, settings, str(tmp_path / "nope"))


def test_saved_indexes_are_reused_and_caught_up(store: Store, settings: Settings) -> None:
    register(store, "CASE-1", "astronaut")
    first = BankMatcher(store, settings)
    saved = settings.data_path / "index" / "pdq.npz"
    assert saved.exists()
    register(store, "CASE-2", "coffee")  # after the save: must come from the change feed
    second = BankMatcher(store, settings)
    assert second.cursor == store.bank_cursor() > first.cursor
    coffee = hash_bytes(encode(photo("coffee").resize((300, 200)), "JPEG"))
    assert [c.case for c in second.match_many([coffee])[0]] == ["CASE-2"]
    saved.write_bytes(b"not an index")  # a damaged file means a rebuild, never a wrong answer
    third = BankMatcher(store, settings)
    assert [c.case for c in third.match_many([coffee])[0]] == ["CASE-2"]
    assert len(third.indexes["pdq"]) == store.count_hashes("pdq") == 16


def test_a_withdrawal_during_a_scan_stops_matching_at_the_next_flush(store: Store,
                                                                      settings: Settings) -> None:
    """A worker's long batch refreshes the bank before each flush it matches, so a withdrawal
    made mid-batch stops matching within lookup_refresh_seconds, not at the next batch."""
    from hashsvc.locators import Link, Locator
    from hashsvc.pipeline import Recorder

    register(store, "CASE-W", "astronaut")
    data = encode(photo("astronaut"), "JPEG", quality=95)
    quick = settings.replace(lookup_refresh_seconds=0.0)
    matcher = BankMatcher(store, quick, persist=False)
    scan_id = store.create_scan("/evidence", None, {})
    recorder = Recorder(store, scan_id, matcher)

    def scanned(name: str) -> None:
        recorder.result(Locator((Link("fs", name),)),
                        FileResult(name, "hashed", hashset=hash_bytes(data), size=len(data)))
        recorder.flush()

    scanned("before.jpg")
    store.withdraw_case("CASE-W")
    scanned("after.jpg")  # the same picture, a moment after the withdrawal
    assert [f.path for _, f in store.scan_matches(scan_id)] == ["before.jpg"]


def test_the_support_rule_still_matches_with_pdq_searched_to_its_threshold(
        store: Store, settings: Settings) -> None:
    """PDQ is searched only to pdq_threshold; a pair beyond it that pHash and dHash support is
    still found (through the pHash index), and a PDQ-only query that far does not match."""
    import random
    from dataclasses import replace as with_

    register(store, "CASE-R", "astronaut")
    data = encode(photo("astronaut"), "JPEG", quality=95)
    full = hash_bytes(data)
    pdq = full.hashes["pdq"]

    def flipped(bits: int) -> str:
        mask = sum(1 << b for b in random.Random(bits).sample(range(256), bits))
        return format(int(pdq, 16) ^ mask, "064x")

    far = settings.pdq_threshold + 6
    assert far <= settings.pdq_support_threshold
    matcher = BankMatcher(store, settings, persist=False)
    supported = with_(full, sha256="", md5="", hashes={**full.hashes, "pdq": flipped(far)})
    pdq_only = with_(supported, hashes={"pdq": flipped(far)})
    near_only = with_(supported, hashes={"pdq": flipped(settings.pdq_threshold - 2)})
    found = matcher.match_many([supported, pdq_only, near_only])
    assert [(c.algorithm, c.distance) for c in found[0]] == [("pdq+phash", far)]
    assert found[1] == []
    assert [(c.algorithm, c.distance) for c in found[2]] == [("pdq",
                                                              settings.pdq_threshold - 2)]
