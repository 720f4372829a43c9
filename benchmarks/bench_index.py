"""Benchmark HammingIndex against numpy brute force (and optionally faiss) on random banks.

Run from the repository root, for example::

    python benchmarks/bench_index.py --sizes 1000000,10000000 --faiss \
        --json benchmarks/out/index.json

Each bank of random codes gets a batch of queries, a share of them copies of bank codes with up
to ``--distance`` bits flipped. Every method's answers to the first ``--brute-queries`` queries
are compared with brute force's, in the same run, and the script exits non-zero on a mismatch.
Timings are the fastest of ``--repeat`` runs, since the host is shared; all methods run on one
thread.

Step 6's first goal (10 million PDQ hashes in one process, index at most 2 GB, a 10,000-hash
batch at distance 31 at least 100x faster than brute force) is measured with::

    python benchmarks/bench_index.py --sizes 10000000 --dihedral --queries 10000 \
        --brute-queries 300 --save /tmp

``--dihedral`` makes the bank of pictures with their eight orientations, as the bank registers
them (``--sizes / 8`` pictures, ids ``image_id * VARIANT_SLOTS + variant``; the PDQ codes are
made up, see benchmarks/lookup_bank.py); ``--save`` also times ``HammingIndex.save`` and
``HammingIndex.load`` through a file in that folder (deleted afterwards) and checks the loaded
index's answers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil  # type: ignore[import-untyped]

# Run as a script from anywhere: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashsvc.hashing import VARIANT_SLOTS  # noqa: E402
from hashsvc.index import HammingIndex, brute_force_search  # noqa: E402

Results = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Row:
    """One method's figures on one bank."""

    method: str
    bank: int
    build_s: float
    arrays_mb: float | None  # bytes of the index's own arrays, where they can be counted
    rss_growth_mb: float  # resident memory gained while building, allocator slack included
    queries: int
    search_s: float
    queries_per_s: float
    speedup_vs_brute: float
    matches: int
    agrees_with_brute: bool
    layout: str = ""
    codes: str = "random"
    save_s: float | None = None  # HammingIndex.save to a file, and its size
    file_mb: float | None = None
    load_s: float | None = None  # HammingIndex.load of that file (tables rebuilt)
    load_rss_mb: float | None = None  # resident memory gained while loading


@dataclass(frozen=True)
class Bank:
    """One benchmark bank: codes, their ids, the queries and brute force's reference answers."""

    codes: np.ndarray
    ids: np.ndarray
    queries: np.ndarray
    planted: dict[int, int]  # query row -> id of the bank code planted near it
    brute: Results
    brute_qps: float
    kind: str = "random"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every bank size, print the table and write the JSON."""
    args = _parse(argv)
    rows: list[Row] = []
    model = None
    if args.dihedral:
        from benchmarks.lookup_bank import fit_pdq_model

        model = fit_pdq_model()
    for size in args.sizes:
        rows.extend(_run_bank(size, args, model))
        _print_table(rows)
    _print_goals(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "load_average": os.getloadavg(),
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    wrong = [f"{r.method} at {r.bank}" for r in rows if not r.agrees_with_brute]
    if wrong:
        print(f"answers differ from brute force: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_int_list, default=[1_000_000], help="bank sizes, a,b,c")
    parser.add_argument("--bits", type=int, default=256)
    parser.add_argument("--distance", type=int, default=31)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--planted-share", type=float, default=0.5)
    parser.add_argument("--brute-queries", type=int, default=100, help="queries brute force runs")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the fastest counts")
    parser.add_argument("--faiss", action="store_true", help="add faiss binary index rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dihedral", action="store_true",
                        help="bank of size/8 made-up pictures with their 8 PDQ orientations")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR",
                        help="also time save and load of the index through a file in DIR")
    parser.add_argument("--json", type=Path, help="where to write the rows as JSON")
    args = parser.parse_args(argv)
    if args.dihedral and (args.bits != 256 or any(size % 8 for size in args.sizes)):
        parser.error("--dihedral needs --bits 256 and sizes that are multiples of 8")
    return args


def _int_list(text: str) -> list[int]:
    """Parse a comma-separated list of integers."""
    return [int(part) for part in text.split(",") if part]


def _run_bank(size: int, args: argparse.Namespace, model: Any) -> list[Row]:
    """Measure every method on one bank of ``size`` codes."""
    bank = _make_bank(size, args, model)
    brute_row = Row(
        method="numpy brute force",
        bank=size,
        build_s=0.0,
        arrays_mb=_mb(bank.codes.nbytes + bank.ids.nbytes),
        rss_growth_mb=0.0,
        queries=len(bank.brute),
        search_s=round(len(bank.brute) / bank.brute_qps, 3),
        queries_per_s=round(bank.brute_qps, 1),
        speedup_vs_brute=1.0,
        matches=sum(len(found) for found, _ in bank.brute),
        agrees_with_brute=True,
        codes=bank.kind,
    )
    rows = [brute_row, _hashsvc_row(bank, args)]
    if args.faiss:
        rows.extend(_faiss_rows(bank, args))
    return rows


def _make_bank(size: int, args: argparse.Namespace, model: Any) -> Bank:
    """Draw the bank and queries, plant near neighbours and time brute force on a subset."""
    rng = np.random.default_rng(args.seed)
    width = args.bits // 8
    if model is not None:
        from benchmarks.lookup_bank import synthetic_codes

        started = time.perf_counter()
        images = size // 8
        codes = synthetic_codes(model, images, rng).reshape(size, width)
        # As the bank numbers them: picture (from 1) times VARIANT_SLOTS plus the variant code.
        ids = ((np.arange(images, dtype=np.int64)[:, None] + 1) * VARIANT_SLOTS
               + np.arange(8, dtype=np.int64)).ravel()
        kind = f"{images} pictures x 8 orientations"
        print(f"made {kind} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    else:
        codes = np.frombuffer(rng.bytes(size * width), dtype=np.uint8).reshape(size, width)
        # Shuffled ids, as a bank filled out of order would have them.
        ids = rng.permutation(size).astype(np.int64) + 1_000_000
        kind = "random"
    queries = np.frombuffer(rng.bytes(args.queries * width), dtype=np.uint8)
    queries = queries.reshape(args.queries, width).copy()
    planted: dict[int, int] = {}
    for q in range(int(args.queries * args.planted_share)):
        row = int(rng.integers(size))
        flips = rng.choice(args.bits, size=int(rng.integers(args.distance + 1)), replace=False)
        queries[q] = codes[row]
        np.bitwise_xor.at(queries[q], flips // 8, (1 << (flips % 8)).astype(np.uint8))
        planted[q] = int(ids[row])
    subset = queries[: args.brute_queries]
    run = partial(brute_force_search, codes, ids, subset, args.distance)
    brute, brute_s = _timed(run, args.repeat)
    return Bank(codes, ids, queries, planted, brute, len(subset) / brute_s, kind)


def _hashsvc_row(bank: Bank, args: argparse.Namespace) -> Row:
    """Build and search a HammingIndex over the bank."""
    rss = _rss()
    started = time.perf_counter()
    index = HammingIndex(args.bits, args.distance)
    index.add(bank.ids, bank.codes)
    build_s = time.perf_counter() - started
    rss_growth = _rss() - rss
    found, search_s = _timed(partial(index.search, bank.queries, args.distance), args.repeat)
    missed = [q for q, i in bank.planted.items() if i not in set(found[q][0].tolist())]
    if missed:
        raise AssertionError(f"planted neighbours missed for queries {missed[:10]}")
    widths = index.substring_widths
    row = _row(
        "hashsvc MIH",
        bank,
        build_s,
        _mb(index.nbytes()),
        rss_growth,
        found,
        search_s,
        layout=f"{len(widths)} tables of {min(widths)}-{max(widths)} bits",
    )
    if args.save is None:
        return row
    del found
    # Handed over in a list, so that the built index is freed before the saved one is loaded.
    built = [index]
    del index
    return _save_and_load(built, bank, args.save, row)


def _save_and_load(built: list[HammingIndex], bank: Bank, folder: Path, row: Row) -> Row:
    """Time save and load through a file, and check the loaded index against brute force."""
    from dataclasses import replace

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-index-{os.getpid()}-{len(bank.codes)}.npz"
    try:
        started = time.perf_counter()
        built[0].save(path)
        save_s = time.perf_counter() - started
        file_mb = _mb(path.stat().st_size)
        built.clear()
        gc.collect()
        rss = _rss()
        started = time.perf_counter()
        loaded = HammingIndex.load(path)
        load_s = time.perf_counter() - started
        load_rss = _rss() - rss
    finally:
        path.unlink(missing_ok=True)
    found = loaded.search(bank.queries[: len(bank.brute)], loaded.max_distance)
    agrees = row.agrees_with_brute and _agrees(found, bank.brute)
    return replace(row, save_s=round(save_s, 2), file_mb=file_mb, load_s=round(load_s, 2),
                   load_rss_mb=round(load_rss, 1), agrees_with_brute=agrees)


def _faiss_rows(bank: Bank, args: argparse.Namespace) -> list[Row]:
    """Measure faiss's flat and multi-hash binary indexes on the same bank."""
    import faiss

    faiss.omp_set_num_threads(1)
    substrings = args.bits // 16
    makers: dict[str, Callable[[], Any]] = {
        "faiss IndexBinaryFlat": partial(faiss.IndexBinaryFlat, args.bits),
        "faiss IndexBinaryMultiHash": partial(
            _multi_hash, faiss, args.bits, substrings, args.distance
        ),
    }
    rows = []
    for name, make in makers.items():
        rss = _rss()
        started = time.perf_counter()
        index = make()
        index.add(bank.codes)
        build_s = time.perf_counter() - started
        rss_growth = _rss() - rss
        run = partial(_faiss_range, index, bank.queries, bank.ids, args.distance)
        found, search_s = _timed(run, args.repeat)
        # Only the flat index's memory is plain arrays; the hash tables are C++ maps.
        arrays = _mb(bank.codes.nbytes) if name.endswith("Flat") else None
        rows.append(_row(name, bank, build_s, arrays, rss_growth, found, search_s))
        del index
    return rows


def _multi_hash(faiss_module: Any, bits: int, substrings: int, distance: int) -> Any:
    """Make faiss's multi-index hash with 16-bit substrings, flipping enough bits to be exact."""
    index = faiss_module.IndexBinaryMultiHash(bits, substrings, 16)
    index.nflip = distance // substrings
    return index


def _faiss_range(index: Any, queries: np.ndarray, ids: np.ndarray, distance: int) -> Results:
    """Range-search a faiss index (its radius is exclusive) and sort answers like hashsvc."""
    limits, dist, labels = index.range_search(queries, distance + 1)
    out: Results = []
    for q in range(len(queries)):
        lo, hi = limits[q], limits[q + 1]
        found_ids, found_dist = ids[labels[lo:hi]], dist[lo:hi].astype(np.int32)
        order = np.lexsort((found_ids, found_dist))
        out.append((found_ids[order], found_dist[order]))
    return out


def _timed(run: Callable[[], Results], repeat: int) -> tuple[Results, float]:
    """Return the result of ``run`` and its fastest time over ``repeat`` runs."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return result, best


def _row(
    method: str,
    bank: Bank,
    build_s: float,
    arrays_mb: float | None,
    rss_growth_mb: float,
    found: Results,
    search_s: float,
    layout: str = "",
) -> Row:
    """Summarise one method's run, comparing its first answers with brute force's."""
    qps = len(found) / search_s
    agrees = _agrees(found[: len(bank.brute)], bank.brute)
    return Row(
        method=method,
        bank=len(bank.codes),
        build_s=round(build_s, 3),
        arrays_mb=arrays_mb,
        rss_growth_mb=round(rss_growth_mb, 1),
        queries=len(found),
        search_s=round(search_s, 3),
        queries_per_s=round(qps, 1),
        speedup_vs_brute=round(qps / bank.brute_qps, 1),
        matches=sum(len(ids) for ids, _ in found),
        agrees_with_brute=agrees,
        layout=layout,
        codes=bank.kind,
    )


def _agrees(found: Results, brute: Results) -> bool:
    """Whether two methods gave the same ids and distances, in the same order, per query."""
    return all(
        np.array_equal(a_ids, b_ids) and np.array_equal(a_dist, b_dist)
        for (a_ids, a_dist), (b_ids, b_dist) in zip(found, brute, strict=True)
    )


def _rss() -> float:
    """Return this process's resident memory in MiB."""
    return float(psutil.Process().memory_info().rss) / 2**20


def _mb(nbytes: int) -> float:
    """Return ``nbytes`` in MiB, rounded for the table."""
    return round(nbytes / 2**20, 1)


def _print_table(rows: list[Row]) -> None:
    """Print the rows as an aligned text table."""
    print(
        f"{'method':27} {'bank':>9} {'build s':>8} {'arrays MB':>9} {'RSS+ MB':>8} {'queries':>7}"
        f" {'q/s':>8} {'x brute':>8} {'agree':>5} {'save s':>6} {'load s':>6}  layout"
    )
    for r in rows:
        arrays = "-" if r.arrays_mb is None else f"{r.arrays_mb:.1f}"
        save = "-" if r.save_s is None else f"{r.save_s:.2f}"
        load = "-" if r.load_s is None else f"{r.load_s:.2f}"
        print(
            f"{r.method:27} {r.bank:>9} {r.build_s:>8.2f} {arrays:>9} {r.rss_growth_mb:>8.1f}"
            f" {r.queries:>7} {r.queries_per_s:>8.1f} {r.speedup_vs_brute:>8.1f}"
            f" {r.agrees_with_brute!s:>5} {save:>6} {load:>6}  "
            + "; ".join(part for part in (r.layout, r.codes) if part)
        )
    print(flush=True)


def _print_goals(rows: list[Row]) -> None:
    """Print Step 6's first goal for each hashsvc row of 10M codes or more: at most 2 GB, at
    least 100x brute force."""
    for r in rows:
        if r.method != "hashsvc MIH" or r.bank < 10_000_000:
            continue
        memory = max(r.arrays_mb or 0.0, r.rss_growth_mb, r.load_rss_mb or 0.0)
        loaded = "" if r.load_s is None else f", {r.file_mb:.0f} MB file loaded in {r.load_s:.1f} s"
        print(
            f"{r.bank:,} codes ({r.codes}): memory {memory:.0f} MB (goal <= 2048: "
            f"{'met' if memory <= 2048 else 'NOT met'}), {r.speedup_vs_brute:.0f}x brute force "
            f"(goal >= 100: {'met' if r.speedup_vs_brute >= 100 else 'NOT met'}), answers "
            f"{'identical' if r.agrees_with_brute else 'DIFFER'}; built in {r.build_s:.1f} s"
            f"{loaded}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
