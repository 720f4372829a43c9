"""Every transform family of the matching policy, through the real matcher and both stages.

Uses the labelled-set machinery of benchmarks/eval_matching.py on a few packaged photographs:
each transformed copy must match its own photograph, and nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hashsvc.matching import BankMatcher
from hashsvc.settings import Settings
from hashsvc.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.eval_matching import TRANSFORMS, load_photo, register_all, scan_copy  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "rocket", "coins")


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, BankMatcher]:
    """The photographs registered (with features) under one case each."""
    from hashsvc.settings import load_settings

    settings: Settings = load_settings(env={}, data_dir=str(tmp_path_factory.mktemp("data")))
    store = Store.open(settings)
    register_all(store, features=True, photos=PHOTOS)
    return store, BankMatcher(store, settings, persist=False)


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_transformed_copies_match_their_photograph_only(
        bank: tuple[Store, BankMatcher], transform: str) -> None:
    _, matcher = bank
    scanned = [scan_copy(TRANSFORMS[transform](load_photo(p)), features=True) for p in PHOTOS]
    hashsets = [hs for hs, _ in scanned]
    found = matcher.match_many(hashsets)
    for i, cands in enumerate(found):
        if not cands:
            found[i] = matcher.match_features([hashsets[i]], [scanned[i][1]])[0]
    for name, cands in zip(PHOTOS, found):
        assert {c.case for c in cands} == {f"case-{name}"}, (transform, name, cands)


def test_unrelated_photographs_match_nothing(bank: tuple[Store, BankMatcher]) -> None:
    _, matcher = bank
    for name in ("coffee", "camera", "retina", "hubble_deep_field", "moon", "gravel"):
        hs, features = scan_copy(TRANSFORMS["jpeg-q30"](load_photo(name)), features=True)
        assert matcher.match_many([hs]) == [[]]
        assert matcher.match_features([hs], [features]) == [[]]
