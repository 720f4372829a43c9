"""Exact Hamming-radius search over fixed-length binary hashes with multi-index hashing.

Each code is cut into substrings and one table per substring maps a substring value to the codes
holding it (CSR: row positions sorted by value plus an offsets array). By the generalised
pigeonhole principle (Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with
multi-index hashing"), a code within distance ``d`` of a query matches it within radius ``r_t`` on
at least one substring ``t`` whenever ``sum(r_t + 1) >= d + 1``, so probing every value within
``r_t`` of each query substring finds a candidate set that contains every true match; a vectorised
popcount then keeps the candidates truly within ``d``.

Substrings are about ``log2(n)`` bits wide (16 to 24), the width the paper recommends: each probe
then finds about one code, so a 10M bank of 256-bit codes uses 12 tables of 21-22 bits instead of
16 tables of 16 bits, and verifies several times fewer candidates in less memory. The width is
chosen again each time the tables are built.

Additions go to a small tail searched by brute force; each time the tail passes ``max_tail``
codes it is folded into a "recent" part with its own tables, and once the recent part outgrows
``merge_fraction`` of the main part both are merged into the main tables, so each code is
re-indexed a logarithmic number of times rather than on every addition. Removals are tombstones
until the next rebuild of their part.
Results are always exactly those of :func:`brute_force_search`. The index is not thread-safe:
callers serialise writes against searches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from math import comb
from pathlib import Path

import numpy as np

from hashsvc.errors import InputError, StoreError

MIN_SUBSTRING_BITS = 16
MAX_SUBSTRING_BITS = 24
# One probe value (two offset lookups, ragged bookkeeping) costs about two verified candidates;
# the radius allocation weighs probes against the candidates they bring.
_PROBE_COST = 2.0
# Candidates materialised at once: bounds memory to tens of MB whatever the bank's skew.
_CANDIDATE_BUDGET = 1 << 20
# Probe rows (query x probe value) materialised at once.
_PROBE_BUDGET = 1 << 18
# Query-by-code cells one brute-force step computes at once, over blocks of this many codes.
_BRUTE_CELLS = 1 << 18
_SCAN_CODES = 1 << 14
# A probe set touching more than this share of the bank costs more than a scan of it: a verified
# candidate (random gather, ragged expansion) costs several times a scanned code.
_MIH_MAX_FRACTION = 0.125
_FORMAT_VERSION = 1

ResultList = list[tuple[np.ndarray, np.ndarray]]
PathLike = str | os.PathLike[str]
Triples = tuple[np.ndarray, np.ndarray, np.ndarray]


def hex_to_codes(hexes: Sequence[str], bits: int) -> np.ndarray:
    """Parse hex strings of ``bits // 4`` digits each into a (n, bits // 8) ``uint8`` array."""
    width = _check_bits(bits)
    digits = 2 * width
    for text in hexes:
        if not isinstance(text, str) or len(text) != digits:
            raise InputError(f"hash {str(text)[:80]!r} is not {digits} hex digits")
    try:
        raw = bytes.fromhex("".join(hexes))
    except (TypeError, ValueError) as exc:
        raise InputError(f"hash list holds something other than hex digits: {exc}") from None
    # fromhex skips whitespace, so a short result means some string held a space.
    if len(raw) != width * len(hexes):
        raise InputError("hash list holds whitespace inside a hash")
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(hexes), width).copy()


def codes_to_hex(codes: np.ndarray) -> list[str]:
    """Format each row of a ``uint8`` code array as lower-case hex."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] == 0:
        raise InputError("codes must be a 2-D uint8 array with at least one byte per code")
    digits = 2 * codes.shape[1]
    text = np.ascontiguousarray(codes).tobytes().hex()
    return [text[i : i + digits] for i in range(0, len(text), digits)]


def brute_force_search(
    codes: np.ndarray, ids: np.ndarray, queries: np.ndarray, distance: int
) -> ResultList:
    """Return, per query, the ids and distances of all codes within ``distance``, by full scan."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] == 0:
        raise InputError("codes must be a 2-D uint8 array with at least one byte per code")
    bits = 8 * codes.shape[1]
    ids = _check_ids(ids)
    words = _to_words(codes, bits)
    if len(ids) != len(words):
        raise InputError("ids and codes differ in length")
    qwords = _to_words(queries, bits)
    _check_distance(distance)
    qrow, pos, dist = _scan(words, qwords, distance)
    return _group(len(qwords), qrow, ids[pos], dist)


@dataclass(frozen=True)
class _Config:
    """What shapes the tables: code length, tuning radius and an optional fixed substring width."""

    bits: int
    max_distance: int
    substring_bits: int | None


class HammingIndex:
    """All bank codes within a Hamming distance of a query, exactly, for millions of codes."""

    def __init__(
        self,
        bits: int,
        max_distance: int,
        *,
        substring_bits: int | None = None,
        merge_fraction: float = 1 / 32,
        max_tail: int = 4096,
    ) -> None:
        """Create an empty index for ``bits``-bit codes, tuned for searches to ``max_distance``."""
        # substring_bits fixes the main tables' width (8 to 24) instead of following the bank
        # size; at most max_tail codes are scanned before they get tables; the main tables are
        # rebuilt once merge_fraction of their size has been added or removed.
        self._width = _check_bits(bits)
        _check_distance(max_distance)
        if substring_bits is not None and not 8 <= substring_bits <= MAX_SUBSTRING_BITS:
            raise InputError(f"substring_bits must be 8 to {MAX_SUBSTRING_BITS}")
        if not 0 < merge_fraction <= 1 or max_tail < 1:
            raise InputError("merge_fraction must be in (0, 1] and max_tail at least 1")
        self._config = _Config(bits, max_distance, substring_bits)
        self.merge_fraction = merge_fraction
        self.max_tail = max_tail
        self._main = self._empty_part()
        self._recent = self._empty_part()
        self._tail = _Tail(_word_count(bits))

    @property
    def bits(self) -> int:
        """Return the code length in bits."""
        return self._config.bits

    @property
    def max_distance(self) -> int:
        """Return the distance the tables are tuned for."""
        return self._config.max_distance

    @property
    def substring_widths(self) -> tuple[int, ...]:
        """Return the bit width of each table built over the main part."""
        return tuple(table.width for table in self._main.tables)

    def __len__(self) -> int:
        """Return the number of live codes."""
        return self._main.live + self._recent.live + self._tail.size

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add codes under ids that are unique in the batch and not live in the index."""
        ids = _check_ids(ids)
        words = _to_words(codes, self.bits)
        if len(ids) != len(words):
            raise InputError("ids and codes differ in length")
        ordered = np.sort(ids)
        if np.any(ordered[1:] == ordered[:-1]):
            raise InputError("ids repeat within the batch")
        if self.contains(ids).any():
            raise InputError("some ids are already in the index")
        pending = self._recent.live + self._tail.size + len(ids)
        if pending > self._merge_limit():
            # A large batch goes straight into the main tables rather than through the tail.
            self._rebuild_main(ids, words)
        elif self._tail.size + len(ids) > self.max_tail:
            self._rebuild_recent(ids, words)
        else:
            self._tail.append(ids, words)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Return a boolean mask of which ``ids`` are live in the index."""
        ids = _check_ids(ids)
        found: np.ndarray = self._main.live_mask(ids) | self._recent.live_mask(ids)
        return found | np.isin(ids, self._tail.ids)

    def remove(self, ids: np.ndarray) -> None:
        """Stop matching the codes under ``ids`` at once; unknown or removed ids are ignored."""
        ids = _check_ids(ids)
        self._main.kill(ids)
        self._recent.kill(ids)
        self._tail.discard(ids)
        if self._main.dead > self._merge_limit():
            self.merge()

    def merge(self) -> None:
        """Fold every recent addition into the main tables and drop removed codes."""
        self._rebuild_main(np.empty(0, np.int64), self._tail.words[:0])

    def search(self, queries: np.ndarray, distance: int) -> ResultList:
        """Return, per query, the ids and distances within ``distance``, by distance then id."""
        # Any distance is exact: past max_distance the probe radii grow, and once the probes
        # would touch more than _MIH_MAX_FRACTION of a part that part is scanned instead.
        qwords = _to_words(queries, self.bits)
        _check_distance(distance)
        # No code is farther than bits, so planning for more would only add probes.
        reach = min(int(distance), self.bits)
        plans = [(part, part.radii(reach)) for part in (self._main, self._recent)]
        probes = sum(part.probe_count(radii) for part, radii in plans)
        step = max(1, _PROBE_BUDGET // max(1, probes))
        results: ResultList = []
        for start in range(0, len(qwords), step):
            results.extend(self._search_chunk(qwords[start : start + step], distance, plans))
        return results

    def nbytes(self) -> int:
        """Return the bytes held by the index's arrays."""
        return self._main.nbytes() + self._recent.nbytes() + self._tail.nbytes()

    def save(self, path: PathLike) -> None:
        """Write the index to ``path`` as an uncompressed ``.npz`` file, atomically."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        config = self._config
        recent = self._recent.alive
        arrays = {
            # substring_bits 0 stands for "follow the bank size".
            "meta": np.array(
                [
                    _FORMAT_VERSION,
                    config.bits,
                    config.max_distance,
                    config.substring_bits or 0,
                    self.max_tail,
                ],
                dtype=np.int64,
            ),
            "merge_fraction": np.array(self.merge_fraction, dtype=np.float64),
            "main_codes": _from_words(self._main.words, self._width),
            "main_ids": self._main.ids,
            "main_alive": self._main.alive,
            "delta_codes": _from_words(
                np.concatenate([self._recent.words[recent], self._tail.words]), self._width
            ),
            "delta_ids": np.concatenate([self._recent.ids[recent], self._tail.ids]),
        }
        with open(tmp, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: PathLike) -> HammingIndex:
        """Read an index written by :meth:`save`, rebuilding its tables from the stored codes."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read index file {path}: {exc}") from exc
        return cls._from_arrays(arrays)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> HammingIndex:
        """Rebuild an index from the arrays of a saved file, refusing inconsistent ones."""
        try:
            version, bits, max_distance, substring_bits, max_tail = (int(v) for v in arrays["meta"])
            if version != _FORMAT_VERSION:
                raise StoreError(f"index file format {version} is not {_FORMAT_VERSION}")
            index = cls(
                bits,
                max_distance,
                substring_bits=substring_bits or None,
                merge_fraction=float(arrays["merge_fraction"]),
                max_tail=max_tail,
            )
            main_ids = _check_ids(arrays["main_ids"])
            main_words = _to_words(arrays["main_codes"], bits)
            alive = arrays["main_alive"]
            if alive.dtype != np.bool_ or not alive.shape == main_ids.shape == main_words.shape[:1]:
                raise StoreError("index file's ids, codes and tombstones differ in length")
            if np.any(main_ids[1:] <= main_ids[:-1]):
                raise StoreError("index file's main ids are not strictly increasing")
            main = _Main.build(main_words, main_ids, index._config)
            main.kill(main_ids[~alive])
            index._main = main
            index.add(arrays["delta_ids"], arrays["delta_codes"])
        except KeyError as exc:
            raise StoreError(f"index file lacks array {exc}") from None
        except (InputError, ValueError, TypeError) as exc:
            raise StoreError(f"index file is inconsistent: {exc}") from exc
        return index

    def _empty_part(self) -> _Main:
        """Return a part holding no codes."""
        return _Main.build(
            np.empty((0, _word_count(self.bits)), np.uint64), np.empty(0, np.int64), self._config
        )

    def _rebuild_main(self, ids: np.ndarray, words: np.ndarray) -> None:
        """Rebuild the main tables from every live code plus the given new ones."""
        self._main = _Main.build(
            np.concatenate(
                [self._main.live_words(), self._recent.live_words(), self._tail.words, words]
            ),
            np.concatenate([self._main.live_ids(), self._recent.live_ids(), self._tail.ids, ids]),
            self._config,
        )
        self._recent = self._empty_part()
        self._tail = _Tail(_word_count(self.bits))

    def _rebuild_recent(self, ids: np.ndarray, words: np.ndarray) -> None:
        """Rebuild the recent part's tables from its live codes, the tail and the given new ones."""
        self._recent = _Main.build(
            np.concatenate([self._recent.live_words(), self._tail.words, words]),
            np.concatenate([self._recent.live_ids(), self._tail.ids, ids]),
            self._config,
            fixed_width=False,
        )
        self._tail = _Tail(_word_count(self.bits))

    def _merge_limit(self) -> int:
        """Return how many codes, added or removed, the main tables may lag behind by."""
        return max(self.max_tail, int(self.merge_fraction * len(self._main.ids)))

    def _search_chunk(
        self, qwords: np.ndarray, distance: int, plans: list[tuple[_Main, tuple[int, ...]]]
    ) -> ResultList:
        """Search one bounded batch of queries against both parts and the tail."""
        rows, ids, dists = [], [], []
        for part, radii in plans:
            qrow, pos, dist = part.search(qwords, distance, radii)
            live = part.alive[pos]
            rows.append(qrow[live])
            ids.append(part.ids[pos[live]])
            dists.append(dist[live])
        qrow, pos, dist = _scan(self._tail.words, qwords, distance)
        rows.append(qrow)
        ids.append(self._tail.ids[pos])
        dists.append(dist)
        return _group(len(qwords), np.concatenate(rows), np.concatenate(ids), np.concatenate(dists))


@dataclass(frozen=True)
class _Table:
    """One substring's CSR table: rows holding value v are ``order[offsets[v]:offsets[v + 1]]``."""

    start: int  # first bit of the substring within the code
    width: int
    order: np.ndarray  # row positions sorted by substring value
    offsets: np.ndarray  # (2**width + 1,)

    @classmethod
    def build(cls, words: np.ndarray, start: int, width: int) -> _Table:
        """Index the substring of ``width`` bits at ``start`` of every code."""
        position = np.uint32 if len(words) < 2**32 else np.int64
        keys = _substring_keys(words, start, width)
        if width <= 16:
            # A stable sort of 16-bit keys is a radix sort: linear time.
            order = np.argsort(keys.astype(np.uint16), kind="stable")
        else:
            order = _sort_order(keys)
        offsets = np.zeros((1 << width) + 1, dtype=position)
        offsets[1:] = np.cumsum(np.bincount(keys, minlength=1 << width))
        return cls(start, width, order.astype(position), offsets)

    def candidates(
        self, qwords: np.ndarray, radius: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (query row, position) windows of the codes within ``radius`` on this substring."""
        masks = _flip_masks(self.width, radius)
        values = (_substring_keys(qwords, self.start, self.width)[:, None] ^ masks).ravel()
        starts = self.offsets.take(values).astype(np.int64)
        lengths = self.offsets.take(values + 1).astype(np.int64) - starts
        owners = np.arange(len(qwords)).repeat(len(masks))
        for rows, flat in _expand(starts, lengths):
            yield owners.take(rows), self.order.take(flat)


@dataclass
class _Main:
    """The merged part: codes sorted by id, a tombstone mask, and the substring tables."""

    words: np.ndarray  # (n, words) uint64
    ids: np.ndarray  # (n,) int64, strictly increasing
    alive: np.ndarray  # (n,) bool
    tables: list[_Table]
    dead: int = 0

    @classmethod
    def build(
        cls, words: np.ndarray, ids: np.ndarray, config: _Config, fixed_width: bool = True
    ) -> _Main:
        """Sort codes by id and build the tables the tuning radius needs."""
        # The recent part ignores a fixed width (fixed_width=False): it is small, and tables as
        # wide as the main part's would be mostly empty offsets.
        if np.any(ids[1:] <= ids[:-1]):
            by_id = _sort_order(ids)
            words = words.take(by_id, axis=0)
            ids = ids.take(by_id)
            if np.any(ids[1:] == ids[:-1]):
                raise InputError("ids repeat")
        if len(ids) == 0:
            return cls(words, ids, np.ones(0, dtype=bool), [])
        widths = _substring_widths(
            config.bits, len(ids), config.substring_bits if fixed_width else None
        )
        starts = np.cumsum((0,) + widths[:-1]).tolist()
        # Substrings left at radius -1 for max_distance need no table (see _allocate_radii).
        radii = _allocate_radii(widths, len(ids), config.max_distance)
        tables = [
            _Table.build(words, start, width)
            for start, width, radius in zip(starts, widths, radii, strict=True)
            if radius >= 0
        ]
        return cls(words, ids, np.ones(len(ids), dtype=bool), tables)

    @property
    def live(self) -> int:
        """Return the number of codes not removed."""
        return len(self.ids) - self.dead

    def radii(self, distance: int) -> tuple[int, ...]:
        """Return each table's probe radius for a search within ``distance``."""
        return _allocate_radii(tuple(t.width for t in self.tables), len(self.ids), distance)

    def probe_count(self, radii: tuple[int, ...]) -> int:
        """Return the probe values one query makes over all tables."""
        return sum(_ball(t.width, r) for t, r in zip(self.tables, radii, strict=True))

    def probe_fraction(self, radii: tuple[int, ...]) -> float:
        """Return the expected share of the bank one query's probes touch, for uniform codes."""
        return sum(
            _ball(t.width, r) / (1 << t.width) for t, r in zip(self.tables, radii, strict=True)
        )

    def live_mask(self, ids: np.ndarray) -> np.ndarray:
        """Return which of ``ids`` are live in this part."""
        where = np.searchsorted(self.ids, ids)
        found = where < len(self.ids)
        found[found] = self.ids[where[found]] == ids[found]
        found[found] = self.alive[where[found]]
        return found

    def live_words(self) -> np.ndarray:
        """Return the codes not removed."""
        return self.words[self.alive] if self.dead else self.words

    def live_ids(self) -> np.ndarray:
        """Return the ids not removed."""
        return self.ids[self.alive] if self.dead else self.ids

    def search(self, qwords: np.ndarray, distance: int, radii: tuple[int, ...]) -> Triples:
        """Return (query row, position, distance) within ``distance``, dead codes included."""
        if self.probe_fraction(radii) <= _MIH_MAX_FRACTION:
            return self.probe(qwords, distance, radii)
        return _scan(self.words, qwords, distance)

    def kill(self, ids: np.ndarray) -> None:
        """Tombstone the live codes among ``ids``."""
        where = np.searchsorted(self.ids, ids)[self.live_mask(ids)]
        self.alive[where] = False
        self.dead += len(np.unique(where))

    def nbytes(self) -> int:
        """Return the bytes held by this part's arrays."""
        arrays = [self.words, self.ids, self.alive]
        arrays += [a for t in self.tables for a in (t.order, t.offsets)]
        return sum(a.nbytes for a in arrays)

    def probe(self, qwords: np.ndarray, distance: int, radii: tuple[int, ...]) -> Triples:
        """Return the (query row, position, distance) the tables find within ``distance``."""
        found: list[Triples] = []
        for table, radius in zip(self.tables, radii, strict=True):
            if radius < 0:
                continue
            for qrow, pos in table.candidates(qwords, radius):
                dist = _distances(self.words.take(pos, axis=0), qwords.take(qrow, axis=0))
                keep = dist <= distance
                found.append((qrow[keep], pos[keep], dist[keep]))
        return _dedupe(found)


class _Tail:
    """The newest additions, kept in a growable buffer and searched by brute force."""

    def __init__(self, n_words: int) -> None:
        """Create an empty tail for codes of ``n_words`` 64-bit words."""
        self._words = np.empty((0, n_words), dtype=np.uint64)
        self._ids = np.empty(0, dtype=np.int64)
        self.size = 0

    @property
    def words(self) -> np.ndarray:
        """Return the live codes."""
        return self._words[: self.size]

    @property
    def ids(self) -> np.ndarray:
        """Return the live ids."""
        return self._ids[: self.size]

    def append(self, ids: np.ndarray, words: np.ndarray) -> None:
        """Append codes, doubling the buffer when full so single additions stay cheap."""
        need = self.size + len(ids)
        if need > len(self._ids):
            capacity = max(need, 2 * len(self._ids), 64)
            grown = np.empty((capacity, self._words.shape[1]), dtype=np.uint64)
            grown[: self.size] = self.words
            grown_ids = np.empty(capacity, dtype=np.int64)
            grown_ids[: self.size] = self.ids
            self._words, self._ids = grown, grown_ids
        self._words[self.size : need] = words
        self._ids[self.size : need] = ids
        self.size = need

    def discard(self, ids: np.ndarray) -> None:
        """Drop the codes under ``ids``, closing the gaps."""
        keep = ~np.isin(self.ids, ids)
        kept = int(keep.sum())
        if kept == self.size:
            return
        self._words[:kept] = self.words[keep]
        self._ids[:kept] = self.ids[keep]
        self.size = kept

    def nbytes(self) -> int:
        """Return the bytes held by the buffer."""
        return self._words.nbytes + self._ids.nbytes


def _check_bits(bits: int) -> int:
    """Return the byte width of ``bits``-bit codes, refusing lengths that are not whole bytes."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
        raise InputError(f"code length {bits!r} is not a positive multiple of 8 bits")
    return int(bits) // 8


def _check_distance(distance: int) -> None:
    """Refuse a distance that is not a non-negative integer."""
    if isinstance(distance, bool) or not isinstance(distance, (int, np.integer)) or distance < 0:
        raise InputError(f"distance {distance!r} is not a non-negative integer")


def _check_ids(ids: np.ndarray) -> np.ndarray:
    """Return ``ids`` as a 1-D int64 array, refusing non-integer ones."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise InputError("ids must be a 1-D integer array")
    if ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise InputError("ids must fit in int64")
    return ids.astype(np.int64)


def _sort_order(keys: np.ndarray) -> np.ndarray:
    """Return the stable sorting permutation of integer ``keys``."""
    n = len(keys)
    if n == 0:
        return np.empty(0, dtype=np.intp)
    position_bits = max(1, (n - 1).bit_length())
    low, high = int(keys.min()), int(keys.max())
    # Sorting packed (key, position) words is several times faster than argsort of 64-bit keys,
    # when both fit in 64 bits.
    if (high - low).bit_length() + position_bits > 64:
        return np.argsort(keys, kind="stable")
    packed = (keys - low).astype(np.uint64) << np.uint64(position_bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    return (packed & np.uint64((1 << position_bits) - 1)).astype(np.intp)


def _word_count(bits: int) -> int:
    """Return how many 64-bit words hold a ``bits``-bit code."""
    return -(-bits // 64)


def _to_words(codes: np.ndarray, bits: int) -> np.ndarray:
    """Copy (n, bits // 8) uint8 codes into zero-padded (n, words) uint64 rows."""
    # The padding is zero in every code, so it never adds to a distance.
    codes = np.asarray(codes)
    width = bits // 8
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
        raise InputError(f"codes must be a uint8 array of shape (n, {width})")
    padded = np.zeros((len(codes), 8 * _word_count(bits)), dtype=np.uint8)
    padded[:, :width] = codes
    return padded.view(np.uint64)


def _from_words(words: np.ndarray, width: int) -> np.ndarray:
    """Return the (n, width) uint8 codes held in padded uint64 rows."""
    return np.ascontiguousarray(words.view(np.uint8)[:, :width])


def _substring_widths(bits: int, n: int, substring_bits: int | None) -> tuple[int, ...]:
    """Split ``bits`` into near-equal substrings no wider than about ``log2(n)`` bits."""
    # At log2(n) bits a probe finds about one code; wider, the offsets would outweigh the tables.
    target = substring_bits or min(MAX_SUBSTRING_BITS, max(MIN_SUBSTRING_BITS, n.bit_length() - 1))
    count = -(-bits // target)
    base, extra = divmod(bits, count)
    return tuple(base + 1 if t < extra else base for t in range(count))


def _allocate_radii(widths: tuple[int, ...], n: int, distance: int) -> tuple[int, ...]:
    """Give each table a probe radius so that ``sum(r + 1) == distance + 1`` (the pigeonhole)."""
    # Each unit goes to the table whose radius costs least to raise: its new probe values times
    # their cost plus the codes each is expected to bring. Tables left at radius -1 may differ
    # anywhere without breaking the bound, so small distances need few tables; and since the
    # allocation for a smaller distance is a prefix of this one, the tables built for the tuning
    # radius serve every smaller one.
    if not widths:
        return ()
    radii = [-1] * len(widths)
    load = [_PROBE_COST + n / (1 << w) for w in widths]
    for _ in range(distance + 1):
        costs = [comb(w, r + 1) * cost for w, r, cost in zip(widths, radii, load, strict=True)]
        radii[costs.index(min(costs))] += 1
    return tuple(radii)


def _ball(width: int, radius: int) -> int:
    """Return the number of ``width``-bit values within ``radius`` of a given value."""
    return sum(comb(width, k) for k in range(min(radius, width) + 1))


@cache
def _flip_masks(width: int, radius: int) -> np.ndarray:
    """Return every ``width``-bit value with at most ``radius`` bits set: one table's probes."""
    level = np.zeros(1, dtype=np.intp)
    top = np.full(1, -1)
    levels = [level]
    for _ in range(min(radius, width)):
        # Extend each mask by one bit above its highest, so every set appears exactly once.
        grown = [(level[top < b] | (1 << b), b) for b in range(width)]
        level = np.concatenate([g[0] for g in grown])
        top = np.concatenate([np.full(len(g[0]), g[1]) for g in grown])
        levels.append(level)
    masks = np.concatenate(levels)
    masks.flags.writeable = False
    return masks


def _substring_keys(words: np.ndarray, start: int, width: int) -> np.ndarray:
    """Return bits ``start .. start + width`` of each (n, words) uint64 code as integers."""
    word, shift = divmod(start, 64)
    keys = words[:, word] >> np.uint64(shift)
    if shift + width > 64:
        keys |= words[:, word + 1] << np.uint64(64 - shift)
    return (keys & np.uint64((1 << width) - 1)).astype(np.intp)


def _expand(starts: np.ndarray, lengths: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (row, flat index) windows enumerating the ranges ``starts[i] + arange(lengths[i])``."""
    rows = np.arange(len(starts))
    oversized = lengths > _CANDIDATE_BUDGET
    if oversized.any():
        rows, starts, lengths = _split_ranges(rows, starts, lengths)
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    firsts = ends - lengths
    # Each window starts at the first row beginning past a budget multiple; rows are at most one
    # budget long, so a window holds under two budgets of candidates.
    cuts = np.searchsorted(firsts, np.arange(0, total, _CANDIDATE_BUDGET), side="left")
    cuts = np.unique(np.append(cuts, len(rows)))
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        yield _ragged(rows[lo:hi], starts[lo:hi], lengths[lo:hi])


def _split_ranges(
    rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut ranges longer than the candidate budget into budget-sized pieces, keeping their rows."""
    pieces = np.maximum(1, -(-lengths // _CANDIDATE_BUDGET))
    first = np.cumsum(pieces) - pieces
    k = np.arange(int(pieces.sum())) - np.repeat(first, pieces)
    piece_starts = np.repeat(starts, pieces) + k * _CANDIDATE_BUDGET
    piece_lengths = np.minimum(
        np.repeat(lengths, pieces) - k * _CANDIDATE_BUDGET, _CANDIDATE_BUDGET
    )
    return np.repeat(rows, pieces), piece_starts, piece_lengths


def _ragged(
    rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the concatenated ranges ``starts[i] + arange(lengths[i])`` and each element's row."""
    ends = np.cumsum(lengths)
    flat = np.arange(int(ends[-1]) if len(ends) else 0)
    flat += np.repeat(starts - (ends - lengths), lengths)
    return np.repeat(rows, lengths), flat


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return Hamming distances between matching rows of two (n, words) arrays, reusing ``a``."""
    x = np.bitwise_xor(a, b, out=a)
    counts = np.bitwise_count(x)
    # Column sums widen once; a reduction over a short last axis is several times slower.
    total: np.ndarray = counts[:, 0].astype(np.int32)
    for w in range(1, counts.shape[1]):
        total += counts[:, w]
    return total


def _scan(
    words: np.ndarray, qwords: np.ndarray, distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (query row, position, distance) for every code within ``distance``, by full scan."""
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if len(words) == 0 or len(qwords) == 0:
        return _concat(found)
    c_step = min(len(words), _SCAN_CODES)
    q_step = max(1, _BRUTE_CELLS // c_step)
    scratch = np.empty((min(q_step, len(qwords)), c_step), dtype=np.uint64)
    for c0 in range(0, len(words), c_step):
        # Word-major copies make each word's column contiguous for the broadcast below.
        columns = np.ascontiguousarray(words[c0 : c0 + c_step].T)
        for q0 in range(0, len(qwords), q_step):
            query_chunk = qwords[q0 : q0 + q_step]
            xor = scratch[: len(query_chunk), : columns.shape[1]]
            dist = np.zeros(xor.shape, dtype=np.int32)
            for w in range(columns.shape[0]):
                dist += np.bitwise_count(
                    np.bitwise_xor(query_chunk[:, w, None], columns[w], out=xor)
                )
            qrow, pos = np.nonzero(dist <= distance)
            found.append((qrow + q0, pos + c0, dist[qrow, pos]))
    return _concat(found)


def _concat(
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate (query row, position, distance) triples into three arrays."""
    if not found:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int32)
    qrow = np.concatenate([f[0] for f in found]).astype(np.intp)
    pos = np.concatenate([f[1] for f in found]).astype(np.intp)
    dist = np.concatenate([f[2] for f in found]).astype(np.int32)
    return qrow, pos, dist


def _dedupe(
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate triples found through several tables, keeping one per (row, position)."""
    qrow, pos, dist = _concat(found)
    # Only verified matches reach here, so the sort is over few elements.
    key = qrow.astype(np.int64) * (int(pos.max(initial=0)) + 1) + pos
    _, first = np.unique(key, return_index=True)
    return qrow[first], pos[first], dist[first]


def _group(n_queries: int, qrow: np.ndarray, ids: np.ndarray, dist: np.ndarray) -> ResultList:
    """Split matches into one (ids, distances) pair per query, sorted by distance then id."""
    order = np.lexsort((ids, dist, qrow))
    ids, dist = ids[order], dist[order]
    cuts = np.cumsum(np.bincount(qrow, minlength=n_queries))[:-1]
    return list(zip(np.split(ids, cuts), np.split(dist, cuts), strict=True))
