"""Tests for the multi-index-hashing Hamming index: it must always agree with brute force."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hashsvc import index as index_module
from hashsvc.errors import InputError, StoreError
from hashsvc.index import HammingIndex, brute_force_search, codes_to_hex, hex_to_codes

Results = list[tuple[np.ndarray, np.ndarray]]


def flip(code: np.ndarray, bits: list[int]) -> np.ndarray:
    """Return a copy of one uint8 code with the given bit positions flipped."""
    out = code.copy()
    for bit in bits:
        out[bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


def random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Return ``n`` random ``bits``-bit codes."""
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def planted_queries(
    rng: np.random.Generator, codes: np.ndarray, bits: int, distances: list[int]
) -> np.ndarray:
    """Return one query per distance, each a bank code with that many bits flipped."""
    rows = rng.integers(0, len(codes), size=len(distances))
    picks = [rng.choice(bits, size=d, replace=False).tolist() for d in distances]
    return np.stack([flip(codes[r], p) for r, p in zip(rows, picks, strict=True)])


def naive_search(codes: np.ndarray, ids: np.ndarray, queries: np.ndarray, distance: int) -> Results:
    """Answer a search one pair at a time with Python integers: the reference for the reference."""
    ints = [int.from_bytes(c.tobytes(), "little") for c in codes]
    out = []
    for q in queries:
        qi = int.from_bytes(q.tobytes(), "little")
        hits = sorted(((c ^ qi).bit_count(), int(i)) for c, i in zip(ints, ids, strict=True))
        hits = [h for h in hits if h[0] <= distance]
        out.append(
            (np.array([h[1] for h in hits], np.int64), np.array([h[0] for h in hits], np.int32))
        )
    return out


def assert_same(found: Results, expected: Results) -> None:
    """Assert two result lists hold the same ids and distances in the same order."""
    assert len(found) == len(expected)
    for (f_ids, f_dist), (e_ids, e_dist) in zip(found, expected, strict=True):
        assert f_ids.dtype == np.int64 and f_dist.dtype == np.int32
        np.testing.assert_array_equal(f_ids, e_ids)
        np.testing.assert_array_equal(f_dist, e_dist)


def test_known_answers_are_sorted_by_distance_then_id() -> None:
    zero = np.zeros(8, np.uint8)
    codes = np.stack(
        [
            flip(zero, [0, 1, 2]),
            zero,
            flip(zero, [63]),
            flip(zero, [5]),
            flip(zero, list(range(20))),
        ]
    )
    ids = np.array([30, 40, 10, 20, 50], np.int64)
    index = HammingIndex(64, 4)
    index.add(ids, codes)
    for _ in ("in the tail", "in the tables"):
        [(found, dist)] = index.search(zero[None], 3)
        assert found.tolist() == [40, 10, 20, 30]
        assert dist.tolist() == [0, 1, 1, 3]
        assert [r[0].tolist() for r in index.search(zero[None], 0)] == [[40]]
        index.merge()


def test_brute_force_agrees_with_python_integers() -> None:
    rng = np.random.default_rng(1)
    for bits in (64, 72, 256):
        codes = random_codes(rng, 300, bits)
        ids = rng.permutation(10_000)[:300].astype(np.int64)
        queries = np.concatenate(
            [planted_queries(rng, codes, bits, [0, 3, 7, 12]), random_codes(rng, 2, bits)]
        )
        for distance in (0, 5, 12, bits // 2):
            assert_same(
                brute_force_search(codes, ids, queries, distance),
                naive_search(codes, ids, queries, distance),
            )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.sampled_from([64, 256, 72]),
    n=st.integers(0, 400),
    max_distance=st.integers(0, 40),
    extra=st.integers(-5, 12),
    substring_bits=st.sampled_from([None, 8, 12, 19]),
    cuts=st.lists(st.integers(0, 400), max_size=3),
    max_tail=st.integers(1, 64),
    merge_fraction=st.sampled_from([0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_search_equals_brute_force(
    bits: int,
    n: int,
    max_distance: int,
    extra: int,
    substring_bits: int | None,
    cuts: list[int],
    max_tail: int,
    merge_fraction: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    distance = max(0, min(max_distance + extra, bits))
    # A few repeated codes so that dense buckets and equal distances are exercised too.
    codes = random_codes(rng, n, bits)
    if n > 10:
        codes[n // 2 : n // 2 + 5] = codes[0]
    ids = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    queries = random_codes(rng, 3, bits)
    if n:
        planted = list(range(distance + 2)) if distance < 40 else [0, distance, distance + 1]
        queries = np.concatenate(
            [queries, planted_queries(rng, codes, bits, [min(d, bits) for d in planted])]
        )
    index = HammingIndex(
        bits,
        max_distance,
        substring_bits=substring_bits,
        max_tail=max_tail,
        merge_fraction=merge_fraction,
    )
    # Batches split at the drawn cuts land in the main tables, the recent part or the tail.
    bounds = [0, *sorted(c for c in cuts if c < n), n]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        index.add(ids[lo:hi], codes[lo:hi])
    assert_same(index.search(queries, distance), brute_force_search(codes, ids, queries, distance))
    index.merge()
    assert_same(index.search(queries, distance), brute_force_search(codes, ids, queries, distance))


def test_searches_beyond_max_distance_stay_exact() -> None:
    rng = np.random.default_rng(2)
    codes = random_codes(rng, 3000, 256)
    ids = np.arange(3000, dtype=np.int64)
    queries = planted_queries(rng, codes, 256, [0, 20, 31, 40, 47, 60, 80])
    index = HammingIndex(256, 31)
    index.add(ids, codes)
    index.merge()
    # 47 still probes the tables at radius 2; 60 and 100 scan the bank instead.
    for distance in (40, 47, 60, 100):
        assert_same(
            index.search(queries, distance), brute_force_search(codes, ids, queries, distance)
        )


def widths_for(bits: int, max_distance: int, substring_bits: int | None = None) -> tuple[int, ...]:
    """Return the table widths of an index holding a few codes."""
    index = HammingIndex(bits, max_distance, substring_bits=substring_bits)
    index.add(np.arange(3), np.zeros((3, bits // 8), np.uint8))
    index.merge()
    return index.substring_widths


def test_table_layout_follows_bank_size_and_radius() -> None:
    assert HammingIndex(256, 31).substring_widths == ()
    assert widths_for(256, 31) == (16,) * 16
    assert widths_for(64, 10) == (16,) * 4
    # Four substrings at radius 0 cover distance 3; the other twelve need no table.
    assert widths_for(256, 3) == (16,) * 4
    assert widths_for(256, 31, 24) == (24,) * 3 + (23,) * 8
    assert index_module._substring_widths(256, 10_000_000, None) == (22,) * 4 + (21,) * 8
    assert index_module._substring_widths(256, 10**12, None) == (24,) * 3 + (23,) * 8
    assert index_module._substring_widths(72, 10, 20) == (18,) * 4


def test_radius_allocation_satisfies_pigeonhole() -> None:
    for widths in [(16,) * 16, (22,) * 4 + (21,) * 8, (16,) * 4, (20, 20, 20, 12)]:
        for n in (0, 10**6, 10**7):
            for distance in range(0, 70, 3):
                radii = index_module._allocate_radii(widths, n, distance)
                assert sum(r + 1 for r in radii) == distance + 1
                assert min(radii) >= -1
    assert index_module._allocate_radii((16,) * 16, 10**6, 31) == (1,) * 16
    assert index_module._allocate_radii((16,) * 4, 10**6, 10) == (2, 2, 2, 1)


def test_flip_masks_enumerate_each_value_once() -> None:
    for width, radius in [(16, 0), (16, 2), (21, 3), (8, 8)]:
        masks = index_module._flip_masks(width, radius)
        assert len(np.unique(masks)) == len(masks) == index_module._ball(width, radius)
        assert masks.max() < 1 << width
        assert np.bitwise_count(masks.astype(np.uint64)).max() == min(radius, width)


def test_wide_substrings_across_word_boundaries() -> None:
    rng = np.random.default_rng(6)
    for bits, substring_bits, max_distance in [
        (256, 24, 31),
        (64, 24, 10),
        (256, 21, 31),
        (72, 13, 9),
    ]:
        codes = random_codes(rng, 1500, bits)
        ids = np.arange(1500, dtype=np.int64)
        queries = planted_queries(rng, codes, bits, list(range(max_distance + 3)))
        index = HammingIndex(bits, max_distance, substring_bits=substring_bits)
        index.add(ids, codes)
        index.merge()
        assert max(index.substring_widths) <= substring_bits
        for distance in (0, max_distance // 2, max_distance, max_distance + 4):
            assert_same(
                index.search(queries, distance), brute_force_search(codes, ids, queries, distance)
            )


def test_bounded_windows_handle_skewed_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "_CANDIDATE_BUDGET", 7)
    monkeypatch.setattr(index_module, "_PROBE_BUDGET", 50)
    monkeypatch.setattr(index_module, "_BRUTE_CELLS", 64)
    rng = np.random.default_rng(3)
    codes = random_codes(rng, 500, 64)
    codes[:200] = 0  # one crowded bucket in every table, like the hash of a blank image
    ids = np.arange(500, dtype=np.int64) * 3
    queries = np.concatenate(
        [np.zeros((1, 8), np.uint8), planted_queries(rng, codes, 64, [0, 1, 2, 5, 9, 10, 11])]
    )
    index = HammingIndex(64, 10, max_tail=50)
    index.add(ids[:300], codes[:300])
    index.add(ids[300:340], codes[300:340])
    for distance in (0, 5, 10, 30):
        assert_same(
            index.search(queries, distance),
            brute_force_search(codes[:340], ids[:340], queries, distance),
        )


def test_removed_ids_never_match_and_can_return() -> None:
    rng = np.random.default_rng(4)
    codes = random_codes(rng, 1000, 256)
    ids = np.arange(1000, dtype=np.int64) + 7
    # max_tail is above the removals, so they stay tombstones in the tables and in the delta.
    index = HammingIndex(256, 31, max_tail=2000)
    index.add(ids[:900], codes[:900])
    index.merge()
    index.add(ids[900:], codes[900:])
    gone = ids[::3]
    index.remove(gone)
    assert len(index) == 1000 - len(gone)
    index.remove(gone)  # withdrawing twice is harmless
    index.remove(np.array([10**9]))  # so is withdrawing an unknown id
    assert len(index) == 1000 - len(gone)
    returned = np.concatenate([f[0] for f in index.search(codes, 31)])
    assert not np.isin(returned, gone).any()
    index.add(gone[[0, -1]], codes[[5, 6]])
    # Row 5 (id 12) is live; row 6 (id 13) was withdrawn; ids 7 and 1006 are back under new codes.
    assert [r[0].tolist() for r in index.search(codes[[5, 6]], 0)] == [[7, 12], [1006]]
    with pytest.raises(InputError):
        index.add(gone[[0]], codes[[0]])


def test_every_tier_stays_exact() -> None:
    rng = np.random.default_rng(8)
    codes = random_codes(rng, 1200, 64)
    ids = rng.permutation(100_000)[:1200].astype(np.int64)
    index = HammingIndex(64, 10, merge_fraction=0.5, max_tail=50)
    for lo, hi in [(0, 1000), (1000, 1030), (1030, 1070), (1070, 1090)]:
        index.add(ids[lo:hi], codes[lo:hi])
    gone = ids[[5, 1010, 1040, 1080]]  # one in each of main, recent (twice) and tail
    index.remove(gone)
    # Main holds the first batch, recent the next two, the tail the last one.
    assert (len(index._main.ids), len(index._recent.ids), index._tail.size) == (1000, 70, 19)
    keep = ~np.isin(ids[:1090], gone)
    queries = planted_queries(rng, codes[:1090], 64, list(range(12)) * 3)
    for distance in (0, 6, 10, 14):
        assert_same(
            index.search(queries, distance),
            brute_force_search(codes[:1090][keep], ids[:1090][keep], queries, distance),
        )
    assert len(index) == 1086
    probe_ids = np.concatenate([ids[[0, 1020, 1050, 1085]], gone, [-1]])
    assert index.contains(probe_ids).tolist() == [True] * 4 + [False] * 5


def test_substring_keys_read_bits_across_words() -> None:
    rng = np.random.default_rng(7)
    codes = random_codes(rng, 20, 256)
    words = index_module._to_words(codes, 256)
    for start, width in [(0, 16), (60, 21), (63, 24), (240, 16), (100, 13)]:
        keys = index_module._substring_keys(words, start, width)
        expected = [
            (int.from_bytes(c.tobytes(), "little") >> start) & ((1 << width) - 1) for c in codes
        ]
        assert keys.tolist() == expected


def test_empty_index() -> None:
    index = HammingIndex(256, 31)
    queries = np.zeros((3, 32), np.uint8)
    found = index.search(queries, 31)
    assert len(index) == 0 and len(found) == 3
    assert all(len(i) == 0 and len(d) == 0 for i, d in found)
    assert index.search(np.zeros((0, 32), np.uint8), 31) == []
    index.add(np.empty(0, np.int64), np.empty((0, 32), np.uint8))
    assert len(index) == 0


def test_empty_index_round_trips(tmp_path: Path) -> None:
    HammingIndex(64, 10).save(tmp_path / "empty.npz")
    loaded = HammingIndex.load(tmp_path / "empty.npz")
    assert len(loaded) == 0 and loaded.bits == 64 and loaded.max_distance == 10


def test_duplicate_codes_under_different_ids_all_match() -> None:
    code = np.full((1, 32), 0xA5, np.uint8)
    index = HammingIndex(256, 31, max_tail=2)
    index.add(np.array([9, 3]), np.repeat(code, 2, axis=0))
    index.add(np.array([5, 1, 7]), np.repeat(code, 3, axis=0))
    [(found, dist)] = index.search(code, 0)
    assert found.tolist() == [1, 3, 5, 7, 9] and dist.tolist() == [0] * 5


def test_bad_input_is_refused() -> None:
    index = HammingIndex(64, 10)
    index.add(np.array([1]), np.zeros((1, 8), np.uint8))
    with pytest.raises(InputError):
        index.add(np.array([1]), np.zeros((1, 8), np.uint8))
    with pytest.raises(InputError):
        index.add(np.array([2, 2]), np.zeros((2, 8), np.uint8))
    with pytest.raises(InputError):
        index.add(np.array([3]), np.zeros((1, 32), np.uint8))
    with pytest.raises(InputError):
        index.add(np.array([3.0]), np.zeros((1, 8), np.uint8))
    with pytest.raises(InputError):
        index.search(np.zeros((1, 8), np.uint8), -1)
    with pytest.raises(InputError):
        index.search(np.zeros((1, 8), np.int64), 3)
    with pytest.raises(InputError):
        HammingIndex(60, 10)
    assert len(index) == 1


def test_hex_round_trip_and_refusals() -> None:
    hexes = ["00" * 31 + "ff", "0123456789abcdef" * 4]
    codes = hex_to_codes(hexes, 256)
    assert codes.shape == (2, 32) and codes[0, 31] == 255 and codes[1, 0] == 0x01
    assert codes_to_hex(codes) == hexes
    assert codes_to_hex(hex_to_codes(["ABCDEF0123456789"], 64)) == ["abcdef0123456789"]
    for bad in (["abc"], ["zz" * 8], ["ab cd" + "0" * 11], ["0x" + "0" * 14]):
        with pytest.raises(InputError):
            hex_to_codes(bad, 64)
    assert hex_to_codes([], 64).shape == (0, 8)


def test_save_load_keeps_answers(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    codes = random_codes(rng, 2000, 64)
    ids = rng.permutation(5000)[:2000].astype(np.int64)
    index = HammingIndex(64, 10, max_tail=500)
    index.add(ids[:1500], codes[:1500])
    index.add(ids[1500:], codes[1500:])  # stays in the delta
    index.remove(ids[:100])
    index.save(tmp_path / "bank.npz")
    loaded = HammingIndex.load(tmp_path / "bank.npz")
    queries = planted_queries(rng, codes, 64, list(range(12)))
    assert len(loaded) == len(index) == 1900
    assert_same(loaded.search(queries, 10), index.search(queries, 10))
    assert_same(loaded.search(queries, 10), brute_force_search(codes[100:], ids[100:], queries, 10))


def test_load_refuses_broken_files(tmp_path: Path) -> None:
    index = HammingIndex(64, 10)
    index.add(np.array([1, 2]), np.zeros((2, 8), np.uint8))
    index.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        arrays = {name: data[name] for name in data.files}
    cases = {
        "pickled.npz": {**arrays, "main_ids": np.array([1, "x"], dtype=object)},
        "shuffled.npz": {**arrays, "main_ids": np.array([2, 1])},
        "short_mask.npz": {**arrays, "main_alive": np.ones(1, bool)},
        "missing.npz": {k: v for k, v in arrays.items() if k != "delta_ids"},
    }
    for name, content in cases.items():
        np.savez(tmp_path / name, **content)
        with pytest.raises(StoreError):
            HammingIndex.load(tmp_path / name)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(StoreError):
        HammingIndex.load(tmp_path / "junk.npz")


class IndexLifecycle(RuleBasedStateMachine):
    """Random interleavings of add, remove, merge, save and load, checked against brute force."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.bank: dict[int, np.ndarray] = {}
        self.next_id = 0

    @initialize(bits=st.sampled_from([64, 256]), seed=st.integers(0, 2**32 - 1))
    def start(self, bits: int, seed: int) -> None:
        self.bits = bits
        self.distance = 10 if bits == 64 else 31
        self.rng = np.random.default_rng(seed)
        self.index = HammingIndex(bits, self.distance, merge_fraction=0.25, max_tail=40)

    @rule(count=st.integers(1, 120), near=st.booleans())
    def add(self, count: int, near: bool) -> None:
        codes = random_codes(self.rng, count, self.bits)
        if near and self.bank:
            base = list(self.bank.values())
            picks = self.rng.integers(0, self.distance + 2, size=count)
            codes = planted_queries(self.rng, np.stack(base), self.bits, picks.tolist())
        ids = np.arange(self.next_id, self.next_id + count, dtype=np.int64)
        self.next_id += count
        self.index.add(ids, codes)
        self.bank.update(zip(ids.tolist(), codes, strict=True))

    @rule(share=st.floats(0.0, 0.7))
    def remove(self, share: float) -> None:
        live = np.array(sorted(self.bank), dtype=np.int64)
        gone = live[self.rng.random(len(live)) < share]
        self.index.remove(gone)
        for i in gone.tolist():
            del self.bank[i]

    @rule()
    def merge(self) -> None:
        self.index.merge()

    @rule()
    def save_and_load(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.npz"
            self.index.save(path)
            self.index = HammingIndex.load(path)

    @invariant()
    def agrees_with_brute_force(self) -> None:
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.bank)
        ids = np.array(list(self.bank), dtype=np.int64)
        codes = (
            np.stack(list(self.bank.values()))
            if self.bank
            else np.zeros((0, self.bits // 8), np.uint8)
        )
        queries = random_codes(self.rng, 2, self.bits)
        if len(codes):
            queries = np.concatenate(
                [
                    queries,
                    planted_queries(
                        self.rng, codes, self.bits, [0, self.distance, self.distance + 1]
                    ),
                ]
            )
        for distance in (self.distance // 2, self.distance):
            assert_same(
                self.index.search(queries, distance),
                brute_force_search(codes, ids, queries, distance),
            )


TestIndexLifecycle = IndexLifecycle.TestCase
TestIndexLifecycle.settings = settings(max_examples=25, stateful_step_count=12, deadline=None)
