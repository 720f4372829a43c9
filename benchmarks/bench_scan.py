"""Scan throughput per core: the Step 1 pipeline against the same scan with every stage on.

Generates camera-sized JPEGs (packaged photographs, cropped and grained; see common.py),
registers a bank, and runs the embedded scan with one worker process, first with the Step 1
configuration (global hashes only) and then with every stage (framed-content lookup and the
local-feature second stage), printing images/s per core and the ratio.

    python benchmarks/bench_scan.py --count 24
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import camera_photo  # noqa: E402
from hashsvc.demo import encode, photo  # noqa: E402
from hashsvc.decode import decode  # noqa: E402
from hashsvc.features import encode_line, extract_registered  # noqa: E402
from hashsvc.hashing import exact_hashes, hash_picture  # noqa: E402
from hashsvc.pipeline import run_scan  # noqa: E402
from hashsvc.settings import load_settings  # noqa: E402
from hashsvc.store import Store  # noqa: E402


def registration_line(data: bytes) -> dict[str, Any]:
    """A hash line with orientation variants and local features, as `hashsvc hash` makes."""
    picture = decode(data)
    line = hash_picture(picture, exact_hashes(data), len(data), with_variants=True).to_json()
    line["features"] = encode_line(extract_registered(picture.image))
    return line


def make_dump(folder: Path, count: int, width: int, height: int) -> None:
    """Write ``count`` distinct camera-sized JPEGs."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        camera_photo(i, rng, width, height, 5.0).save(folder / f"IMG_{i:04d}.JPG", quality=90)


def timed_scan(tmp: Path, dump: Path, config: dict[str, Any], bank: list[dict]) -> float:
    """Wall seconds of one embedded scan with one worker process under ``config``."""
    settings = load_settings(data_dir=str(tmp / f"data-{len(list(tmp.iterdir()))}"), workers=1,
                             **config)
    store = Store.open(settings)
    store.register("BENCH", bank)
    start = time.perf_counter()
    run_scan(store, settings, str(dump))
    wall = time.perf_counter() - start
    store.close()
    return wall


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    bank = [registration_line(encode(photo(n), "JPEG"))
            for n in ("astronaut", "coffee", "chelsea")]
    configs = {"step 1 (global hashes)": {"trim_frames": False, "features_stage": False},
               "all stages": {"trim_frames": True, "features_stage": True}}
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_dump(tmp / "dump", args.count, args.width, args.height)
        for name, config in configs.items():
            best = min(timed_scan(tmp, tmp / "dump", config, bank) for _ in range(2))
            results[name] = args.count / best
            print(f"{name:28s} {results[name]:6.1f} images/s with one worker process")
    names = list(results)
    print(f"all stages / step 1: {results[names[1]] / results[names[0]]:.2f}x the throughput")
    if args.json:
        args.json.write_text(json.dumps({"count": args.count, "images_per_s": results}))


if __name__ == "__main__":
    main()
