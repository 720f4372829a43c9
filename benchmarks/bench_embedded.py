"""Benchmark the search for embedded pictures against the hashing of the file itself.

:func:`hashsvc.embedded.embedded_pictures` runs on every image of every scan, so its cost on a
JPEG without EXIF, and on one whose EXIF holds a thumbnail, must be a small fraction of what
hashing the file costs. Run from the repository root, for example::

    python benchmarks/bench_embedded.py --count 6 --json benchmarks/out/embedded.json

Figures are per file, in one process on one core, bytes in memory, each file's fastest of
``--repeats`` calls (CPU time):

* ``hash``: :func:`hashsvc.hashing.hash_bytes` on the 12 MP JPEG (what a scan pays anyway);
* ``embedded-plain``: ``embedded_pictures`` on that JPEG without EXIF;
* ``embedded-exif``: on the same JPEG with an Exif segment holding a 160x120 thumbnail (the
  thumbnail is found and returned; hashing it, a second small picture, is not counted here);
* ``hash-thumbnail``: ``hash_bytes`` on that thumbnail, what each found thumbnail adds.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.common import camera_photo  # noqa: E402
from evidence_builders import with_exif_thumbnail  # noqa: E402
from hashsvc.embedded import embedded_pictures  # noqa: E402
from hashsvc.hashing import hash_bytes  # noqa: E402


def fastest(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest CPU time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def fastest_many(fn: Callable[[], Any], repeats: int, inner: int) -> float:
    """The fastest CPU time per call of ``repeats`` batches of ``inner`` calls (tiny calls)."""
    return fastest(lambda: [fn() for _ in range(inner)], repeats) / inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=6, help="12 MP JPEGs to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    rows: dict[str, list[float]] = {"hash": [], "embedded-plain": [], "embedded-exif": [],
                                    "hash-thumbnail": []}
    for i in range(args.count):
        img = camera_photo(i, rng, 4032, 3024, 6.0)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        plain = buf.getvalue()
        small = img.copy()
        small.thumbnail((160, 160))
        tbuf = io.BytesIO()
        small.save(tbuf, "JPEG", quality=85)
        thumb = tbuf.getvalue()
        exif = with_exif_thumbnail(plain, thumb)
        assert embedded_pictures(exif, "jpeg") == [("exif-thumbnail", "IFD1", thumb)]
        rows["hash"].append(fastest(lambda: hash_bytes(plain), args.repeats))
        rows["embedded-plain"].append(
            fastest_many(lambda: embedded_pictures(plain, "jpeg"), args.repeats, 1000))
        rows["embedded-exif"].append(
            fastest_many(lambda: embedded_pictures(exif, "jpeg"), args.repeats, 1000))
        rows["hash-thumbnail"].append(fastest(lambda: hash_bytes(thumb), args.repeats))
    hash_ms = 1000 * float(np.mean(rows["hash"]))
    out: dict[str, Any] = {"images": args.count, "size": "4032x3024"}
    for method, times in rows.items():
        ms = 1000 * float(np.mean(times))
        out[method] = {"ms": round(ms, 4), "of_hash": round(ms / hash_ms, 6)}
        print(f"{method:16s} {ms:10.4f} ms  {100 * ms / hash_ms:8.4f} % of hashing the file")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
