"""Benchmark hashsvc's per-file hashing of 12 MP JPEGs against a bare reduced-size decode.

Run from the repository root, for example::

    python benchmarks/bench_hashing.py --count 24 --json benchmarks/out/hashing.json

Every figure comes from one process on one core, with the files' bytes already in memory:

* ``bare-draft-decode``: ``Image.open`` + ``draft("RGB", (256, 256))`` + ``load``, the reduced-size
  decode that :func:`hashsvc.decode.decode` asks libjpeg for, and nothing else;
* ``hashsvc``: :func:`hashsvc.hashing.hash_bytes`, what a scan does per image (sha256, md5,
  canonical decode, PDQ, pHash, dHash), and the same with ``with_variants=True``;
* ``hashsvc-exact-given``: ``hash_bytes`` with the sha256 and md5 passed in, as a scanner that
  hashes every file's bytes anyway can call it: the cost of the picture alone;
* ``imagehash-phash``: ``imagehash.phash(Image.open(...))``, a full 12 MP decode plus pHash.

The machine may be shared, so each method runs ``--repeats`` passes over all files (methods
interleaved) and each file counts with its fastest call; CPU time (what a fully loaded scanner
pays) is measured beside wall time, and the cost goal is judged on CPU time.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from typing import Any, Callable, Sequence, TypeVar

import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import camera_photo  # noqa: E402
from hashsvc.decode import MIN_SIDE, decode  # noqa: E402
from hashsvc.hashing import ALGORITHMS, Views, exact_hashes, hash_bytes, prepare  # noqa: E402

T = TypeVar("T")

#: Photographs scikit-image ships as files (no download), colour and greyscale.

GOAL_COST = 1.25  # hashsvc's per-file hashing at most this many times a bare reduced decode
GOAL_SPEEDUP = 3.5  # and at least this many times faster than imagehash on the full picture


@dataclass(frozen=True)
class Row:
    """One method's figures per image: each file's fastest call, averaged over the files."""

    method: str
    images: int
    wall_ms: float
    cpu_ms: float
    images_per_s: float  # from wall time
    images_per_cpu_s: float  # from CPU time: what one fully busy core would do
    median_pass_s: float
    faults_per_image: float  # minor page faults: fresh memory the kernel had to map in


def main(argv: list[str] | None = None) -> int:
    """Generate the files, time every method, print the tables and write the JSON."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="bench_hashing_") as tmp:
        blobs = [p.read_bytes() for p in _generate(Path(tmp), args)]
    sizes = [len(b) for b in blobs]
    print(f"{len(blobs)} JPEGs {args.width}x{args.height} q{args.quality}: "
          f"{statistics.mean(sizes) / 1e6:.2f} MB mean, {min(sizes) / 1e6:.2f}-"
          f"{max(sizes) / 1e6:.2f} MB; {args.repeats} repeats")
    rows = _time_methods(blobs, _methods(blobs, args.skip_imagehash), args.repeats)
    stages = _time_stages(blobs, args.repeats)
    ratios = _ratios(rows)
    _print_rows(rows)
    _print_stages(stages)
    _print_ratios(ratios)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "mean_file_mb": statistics.mean(sizes) / 1e6, "rows": [asdict(r) for r in rows],
                   "stages_cpu_ms_per_image": stages, "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=24, help="number of JPEGs")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--noise", type=float, default=5.0,
                        help="mean sigma of the grain that gives the files a camera's entropy")
    parser.add_argument("--repeats", type=int, default=3, help="calls per file and method")
    parser.add_argument("--skip-imagehash", action="store_true",
                        help="leave out the slow full-decode imagehash row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def _generate(folder: Path, args: argparse.Namespace) -> list[Path]:
    """Write ``--count`` distinct camera-sized JPEGs made from scikit-image's photographs."""
    rng = np.random.default_rng(args.seed)
    paths = []
    for i in range(args.count):
        noise = args.noise * rng.uniform(0.8, 1.2)
        picture = camera_photo(i, rng, args.width, args.height, noise)
        path = folder / f"IMG_{i:04d}.JPG"
        picture.save(path, "JPEG", quality=args.quality)
        paths.append(path)
    return paths


def _methods(blobs: list[bytes], skip_imagehash: bool) -> dict[str, Callable[[bytes], object]]:
    """The methods compared, by name, each taking one file's bytes."""
    exact = {id(b): exact_hashes(b) for b in blobs}  # computed before any timing
    methods: dict[str, Callable[[bytes], object]] = {
        "bare-draft-decode": _bare_draft_decode,
        "hashsvc": hash_bytes,
        "hashsvc-variants": lambda data: hash_bytes(data, with_variants=True),
        "hashsvc-exact-given": lambda data: hash_bytes(data, exact=exact[id(data)]),
    }
    if not skip_imagehash:
        methods["imagehash-phash"] = lambda data: imagehash.phash(Image.open(io.BytesIO(data)))
    return methods


def _bare_draft_decode(data: bytes) -> Image.Image:
    """The reduced-size JPEG decode that hashsvc's canonical decode requests, alone."""
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (MIN_SIDE, MIN_SIDE))
    img.load()
    return img


def _time_methods(blobs: list[bytes], methods: dict[str, Callable[[bytes], object]],
                  repeats: int) -> list[Row]:
    """Figures of every method, methods interleaved within each repeat so noise hits all alike."""
    runs: dict[str, list[_Pass]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            runs[name].append(_one_pass(fn, blobs))
    return [_row(name, passes) for name, passes in runs.items()]


@dataclass(frozen=True)
class _Pass:
    """One pass of one function over every item."""

    wall: list[float]  # seconds per item
    cpu: list[float]
    total_wall: float
    faults: int


def _one_pass(fn: Callable[[T], object], items: Sequence[T]) -> _Pass:
    """Time ``fn`` on every item, item by item, in wall and CPU seconds."""
    walls, cpus = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for item in items:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(item)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return _Pass(wall=walls, cpu=cpus, total_wall=time.perf_counter() - start,
                 faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)


def _fastest_ms(per_pass: list[list[float]]) -> float:
    """Mean over items of each item's fastest time, in milliseconds."""
    # A neighbour's burst of load slows some calls, not every repeat of the same call, so each
    # file's fastest call sheds more noise than the fastest whole pass does.
    n = len(per_pass[0])
    return 1000 * sum(min(p[i] for p in per_pass) for i in range(n)) / n


def _row(name: str, passes: list[_Pass]) -> Row:
    """Summarise one method's passes."""
    wall_ms, cpu_ms = _fastest_ms([p.wall for p in passes]), _fastest_ms([p.cpu for p in passes])
    return Row(method=name, images=len(passes[0].wall), wall_ms=wall_ms, cpu_ms=cpu_ms,
               images_per_s=1000 / wall_ms, images_per_cpu_s=1000 / cpu_ms,
               median_pass_s=statistics.median(p.total_wall for p in passes),
               faults_per_image=min(p.faults for p in passes) / len(passes[0].wall))


def _time_stages(blobs: list[bytes], repeats: int) -> dict[str, float]:
    """CPU milliseconds per image of each stage of ``hash_bytes``, to show where time goes."""
    pictures = [decode(b).image for b in blobs]
    prepared = [prepare(p).image for p in pictures]
    stages: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        ("sha256+md5", exact_hashes, blobs), ("canonical decode", decode, blobs),
        ("prepare", prepare, pictures)]
    for alg in ALGORITHMS:
        stages.append((alg.name, partial(_on_views, alg.compute), prepared))
        if alg.dihedral is not None:
            stages.append((f"{alg.name} with variants", partial(_on_views, alg.dihedral),
                           prepared))
    return {name: _fastest_ms([_one_pass(fn, items).cpu for _ in range(repeats)])
            for name, fn, items in stages}


def _on_views(fn: Callable[[Views], object], image: Image.Image) -> object:
    """Run one algorithm's function on fresh views of a prepared picture, as hash_picture does."""
    return fn(Views(image))


def _ratios(rows: list[Row]) -> dict[str, float]:
    """The goal ratios, on CPU and on wall time."""
    by = {r.method: r for r in rows}
    bare, ours = by["bare-draft-decode"], by["hashsvc"]
    out: dict[str, float] = {}
    for method in ("hashsvc", "hashsvc-variants", "hashsvc-exact-given"):
        out[f"{method}_cost_vs_bare_cpu"] = by[method].cpu_ms / bare.cpu_ms
        out[f"{method}_cost_vs_bare_wall"] = by[method].wall_ms / bare.wall_ms
    if "imagehash-phash" in by:
        out["speedup_vs_imagehash_cpu"] = by["imagehash-phash"].cpu_ms / ours.cpu_ms
        out["speedup_vs_imagehash_wall"] = by["imagehash-phash"].wall_ms / ours.wall_ms
    return out


def _print_rows(rows: list[Row]) -> None:
    """Print the per-method table."""
    print(f"\n{'method':<22} {'images/s':>9} {'/cpu-s':>7} {'wall ms':>8} {'cpu ms':>7} "
          f"{'faults':>7} {'median pass s':>14}")
    for r in rows:
        print(f"{r.method:<22} {r.images_per_s:>9.2f} {r.images_per_cpu_s:>7.2f} "
              f"{r.wall_ms:>8.2f} {r.cpu_ms:>7.2f} {r.faults_per_image:>7.0f} "
              f"{r.median_pass_s:>14.3f}")


def _print_stages(stages: dict[str, float]) -> None:
    """Print where the time of one ``hash_bytes`` call goes."""
    print("\nstages of hash_bytes, CPU ms per image")
    for name, ms in stages.items():
        print(f"  {name:<20} {ms:>7.2f}")


def _print_ratios(ratios: dict[str, float]) -> None:
    """Print the goal ratios and whether they are met."""
    print(f"\ncost of hashsvc / bare decode (goal <= {GOAL_COST}x, judged on CPU):")
    for method in ("hashsvc", "hashsvc-variants", "hashsvc-exact-given"):
        cpu = ratios[f"{method}_cost_vs_bare_cpu"]
        print(f"  {method:<20} {cpu:.3f}x CPU, {ratios[f'{method}_cost_vs_bare_wall']:.3f}x wall"
              f"  {'met' if cpu <= GOAL_COST else 'NOT met'}")
    if "speedup_vs_imagehash_cpu" in ratios:
        cpu = ratios["speedup_vs_imagehash_cpu"]
        print(f"speed-up of hashsvc over imagehash (goal >= {GOAL_SPEEDUP}x): {cpu:.2f}x CPU, "
              f"{ratios['speedup_vs_imagehash_wall']:.2f}x wall  "
              f"{'met' if cpu >= GOAL_SPEEDUP else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
