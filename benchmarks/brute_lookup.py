"""numpy brute force over an embedded bank's PDQ codes: the baseline process of
bench_lookup_cli.py.

    python benchmarks/brute_lookup.py BANK.sqlite3 QUERIES.jsonl --subset 1000 --answers OUT

Reads every PDQ code of the bank (sqlite3, no ORM), the ``{"hashes": {"pdq": HEX}}`` query
lines, and runs ``hashsvc.index.brute_force_search`` over the first ``--subset`` queries at
``--distance``. Writes each of those queries' matches as ``[[image_id, distance], ...]``
(every picture within the distance, at its nearest orientation, by distance then id) to
``--answers`` and prints the time of each phase as JSON, so that the caller can extrapolate
the brute force to every query. Imports only numpy and hashsvc.index, as a lean tool would.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashsvc.index import brute_force_search, hex_to_codes  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """Load, brute-force a subset, write its answers and print the phases' seconds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database", type=Path, help="the bank's SQLite file")
    parser.add_argument("queries", type=Path, help="query lines")
    parser.add_argument("--subset", type=int, default=1000, help="queries brute-forced")
    parser.add_argument("--distance", type=int, default=31)
    parser.add_argument("--answers", type=Path, required=True)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with sqlite3.connect(f"file:{args.database}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT image_id, value FROM bank_hashes WHERE algorithm = 'pdq'"
                            ).fetchall()
    image_ids = np.array([r[0] for r in rows], dtype=np.int64)
    codes = hex_to_codes([r[1] for r in rows], 256)
    del rows
    loaded = time.perf_counter()
    with args.queries.open(encoding="utf-8") as handle:
        values = [json.loads(line)["hashes"]["pdq"] for line in handle if line.strip()]
    queries = hex_to_codes(values, 256)
    parsed = time.perf_counter()
    subset = queries[: args.subset]
    # Row positions as ids: each found row names its picture through image_ids.
    found = brute_force_search(codes, np.arange(len(codes)), subset, args.distance)
    searched = time.perf_counter()
    answers = []
    for rows_found, dists in found:
        best: dict[int, int] = {}
        for image, dist in zip(image_ids[rows_found].tolist(), dists.tolist(), strict=True):
            best.setdefault(image, dist)  # nearest orientation first
        answers.append(sorted(([i, d] for i, d in best.items()), key=lambda x: (x[1], x[0])))
    args.answers.write_text(json.dumps(answers))
    print(json.dumps({
        "bank_codes": len(codes), "queries": len(queries), "brute_queries": len(subset),
        "load_s": loaded - started, "parse_s": parsed - loaded, "brute_s": searched - parsed,
        "answer_s": time.perf_counter() - searched,
    }))


if __name__ == "__main__":
    main()
