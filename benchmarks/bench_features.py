"""Benchmark the second matching stage (ORB features + geometric check) on large banks.

Run from the repository root, for example::

    python benchmarks/bench_features.py --sizes 1000,10000 --json benchmarks/out/features.json

What the bank holds: scikit-image's bundled photographs (the "registered photos") and, for the
rest, synthetic pictures: random overlapping discs, rectangles and ellipses with power-law sizes
(a "dead leaves" model, which has the scale statistics of natural images), slightly blurred and
grained. Distinct pictures cut from the same few photographs would share content, and local
features rightly match shared content, so they could not serve as distinct registered images.

Each scanned file is a picture encoded as JPEG (or PNG) and decoded by ``hashsvc.decode`` exactly
as a scan does. Crops keep 25-90 % of the area (50-95 % of each side), off-centre, then are left
as they are, rescaled and recompressed, rotated by 90 degrees, mirrored, framed by a border, or
pasted into a phone-screenshot-like frame; 10 %-area crops are reported apart. Unrelated files
are other synthetic pictures and photographs that are not registered, whole, cropped and
mirrored. The second stage per file (extract + index search + verification) runs on one thread.
The linear-scan baseline matches each file against every registered image's descriptors with
OpenCV's brute-force Hamming matcher; it runs on a subset of the bank and is extrapolated.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps

# Run as a script from anywhere: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashsvc import features as F  # noqa: E402
from hashsvc.decode import decode  # noqa: E402

#: Photographs registered at the start of every bank (ids 1..len).
REGISTERED_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "clock",
                     "hubble_deep_field", "immunohistochemistry", "motorcycle_left")
#: Photographs never registered: unrelated scanned files.
UNRELATED_PHOTOS = ("brick", "grass", "gravel", "moon", "page", "text", "retina", "cell",
                    "colorwheel", "logo", "horse")
#: Alterations of a crop, applied in turn.
ALTERATIONS = ("crop", "crop+rescale+jpeg", "crop+rot90", "mirrored crop", "crop+border",
               "crop+screenshot")
#: Seeds of unrelated synthetic pictures start here, far from every bank seed.
UNRELATED_SEED = 10_000_000


@dataclass(frozen=True)
class Query:
    """One scanned file: its canonical picture and the registered image it copies, if any."""

    kind: str
    truth: int | None
    picture: Image.Image


@dataclass(frozen=True)
class Row:
    """Figures of one bank size."""

    bank: int
    descriptors: int
    index_mb: float
    build_s: float
    files: int
    ms_unrelated_mean: float
    ms_unrelated_p90: float
    ms_crops_mean: float
    ms_crops_p90: float
    extract_ms_mean: float
    match_ms_mean: float
    linear_ms_per_file: float
    linear_measured_on: int
    speedup: float
    recall: float
    recall_by_kind: dict[str, str]
    hard_crop_recall: str
    false_matches: int
    unrelated_files: int
    wrong_image_matches: int
    margin: dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    """Register the banks, scan the files, print the table and write the JSON."""
    args = _parse(argv)
    cv2.setNumThreads(1)
    # One thread throughout: faiss's OpenMP threads spin against busy cores, which made an
    # index build 25 times slower and single searches 70 times slower on a loaded 2-core host.
    _faiss_threads(1)
    largest = max(args.sizes)
    print(f"registering {largest} images ({len(REGISTERED_PHOTOS)} photographs, the rest "
          f"synthetic dead-leaves pictures) on {args.workers} processes ...", flush=True)
    started = time.perf_counter()
    bank = _bank_features(largest, args.workers, args.cache)
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    queries = _queries(args, min(args.sizes))
    print(f"{len(queries)} scanned files: "
          f"{sum(q.truth is not None and not q.kind.startswith('hard') for q in queries)} crops, "
          f"{sum(q.kind.startswith('hard') for q in queries)} hard 10%-area crops, "
          f"{sum(q.truth is None for q in queries)} unrelated", flush=True)
    scanned = [F.extract(q.picture) for q in queries]
    rows = [_run_bank(size, bank, queries, scanned, args) for size in sorted(args.sizes)]
    _print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k != "params"}
        payload = {"args": arguments, "params": asdict(args.params),
                   "load_average": os.getloadavg(),
                   "bank": "photographs + synthetic dead-leaves pictures (see the docstring)",
                   "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if any(r.false_matches or r.wrong_image_matches for r in rows) else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=_int_list, default=[1000, 10_000],
                        help="bank sizes, a,b")
    parser.add_argument("--crops", type=int, default=180, help="crops of registered images")
    parser.add_argument("--hard-crops", type=int, default=30, help="10%%-area crops")
    parser.add_argument("--unrelated", type=int, default=180, help="unrelated files")
    parser.add_argument("--baseline-images", type=int, default=300,
                        help="registered images the linear scan is timed on")
    parser.add_argument("--baseline-files", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="npz of the bank's features, reused if there")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a MatchParams field, e.g. --param nprobe=3")
    parser.add_argument("--json", type=Path, help="where to write the rows as JSON")
    args = parser.parse_args(argv)
    args.params = _params(args.param)
    return args


def _params(overrides: list[str]) -> F.MatchParams:
    """MatchParams with NAME=VALUE overrides, each converted to the field's default's type."""
    params = F.MatchParams()
    for item in overrides:
        name, _, value = item.partition("=")
        params = replace(params, **{name: type(getattr(params, name))(value)})
    return params


def _int_list(text: str) -> list[int]:
    """Parse a comma-separated list of integers."""
    return [int(part) for part in text.split(",") if part]


def _faiss_threads(count: int) -> None:
    """Pin faiss to ``count`` threads so that per-file times are one core's."""
    import faiss  # type: ignore[import-untyped]

    faiss.omp_set_num_threads(count)


def synthetic(seed: int, width: int = 512, height: int = 384) -> np.ndarray:
    """A dead-leaves picture: overlapping shapes with power-law sizes, blurred, with grain."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    n = int(rng.integers(150, 400))
    # Radii drawn from a power law (exponent 2), as in the dead-leaves model of natural images.
    lo, hi = 3.0, max(width, height) / 3
    radii = np.sort((lo ** -1 + rng.random(n) * (hi ** -1 - lo ** -1)) ** -1)[::-1]
    centres = rng.integers(0, [width, height], (n, 2))
    colours = rng.integers(0, 256, (n, 3)).tolist()
    kinds, aspects, angles = rng.random(n), rng.uniform(0.25, 1, n), rng.uniform(0, 180, n)
    for i in range(n):
        r, (x, y) = int(radii[i]), (int(centres[i, 0]), int(centres[i, 1]))
        if kinds[i] < 0.4:
            cv2.circle(img, (x, y), r, colours[i], -1)
        elif kinds[i] < 0.8:
            box = cv2.boxPoints(((x, y), (2 * r, 2 * r * aspects[i]), angles[i]))
            cv2.fillConvexPoly(img, box.astype(np.int32), colours[i])
        else:
            cv2.ellipse(img, (x, y), (r, max(1, int(r * aspects[i]))), angles[i], 0, 360,
                        colours[i], -1)
    blurred = cv2.GaussianBlur(img, (0, 0), 0.8)
    grain = rng.integers(0, 7, img.shape, dtype=np.uint8)
    return cv2.subtract(cv2.add(blurred, grain), np.full_like(img, 3))


def photo(name: str) -> Image.Image:
    """A photograph bundled with scikit-image, as RGB."""
    import skimage.data

    if name == "motorcycle_left":
        return Image.fromarray(skimage.data.stereo_motorcycle()[0])
    arr = np.asarray(getattr(skimage.data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8))


def source(image_id: int) -> Image.Image:
    """The picture registered under ``image_id`` (1-based), before the canonical decode."""
    if image_id <= len(REGISTERED_PHOTOS):
        return photo(REGISTERED_PHOTOS[image_id - 1])
    return Image.fromarray(synthetic(image_id))


def canonical(picture: Image.Image, fmt: str = "JPEG", **options: Any) -> Image.Image:
    """Encode and decode a picture the way a scanned or registered file is read."""
    buf = io.BytesIO()
    picture.save(buf, fmt, **options)
    return decode(buf.getvalue()).image


def _register_one(image_id: int) -> bytes:
    """Registration features of one bank image (a worker process function)."""
    return F.to_bytes(F.extract_registered(canonical(source(image_id), "PNG")))


def _bank_features(count: int, workers: int, cache: Path | None) -> list[F.Features]:
    """Features of bank images 1..count, from the cache file when it holds enough."""
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            blobs = saved["blobs"]
            if len(saved["sizes"]) >= count:
                offsets = np.concatenate([[0], np.cumsum(saved["sizes"])])
                return [F.from_bytes(blobs[offsets[i]:offsets[i + 1]].tobytes())
                        for i in range(count)]
    ctx = get_context("forkserver")
    with ctx.Pool(workers) as pool:
        raw = pool.map(_register_one, range(1, count + 1), chunksize=50)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, sizes=np.array([len(b) for b in raw]),
                 blobs=np.frombuffer(b"".join(raw), np.uint8))
    return [F.from_bytes(b) for b in raw]


def _queries(args: argparse.Namespace, smallest_bank: int) -> list[Query]:
    """Crops of registered images (all inside the smallest bank) and unrelated files."""
    rng = np.random.default_rng(args.seed)
    out = []
    for i in range(args.crops):
        # A quarter of the crops come from the registered photographs.
        image_id = (int(rng.integers(1, len(REGISTERED_PHOTOS) + 1)) if i % 4 == 0
                    else int(rng.integers(len(REGISTERED_PHOTOS) + 1, smallest_bank + 1)))
        kind = ALTERATIONS[i % len(ALTERATIONS)]
        picture = _crop(source(image_id), rng.uniform(0.25, 0.9), rng)
        out.append(Query(kind, image_id, _alter(picture, kind, rng)))
    for _ in range(args.hard_crops):
        image_id = int(rng.integers(1, smallest_bank + 1))
        out.append(Query("hard 10%-area crop", image_id,
                         canonical(_crop(source(image_id), 0.1, rng), quality=85)))
    for i in range(args.unrelated):
        if i % 3 == 2:
            picture = photo(UNRELATED_PHOTOS[(i // 3) % len(UNRELATED_PHOTOS)])
        else:
            picture = Image.fromarray(synthetic(UNRELATED_SEED + i))
        kind = ("unrelated", "unrelated crop", "unrelated mirrored")[(i // 3) % 3]
        if kind == "unrelated crop":
            picture = _crop(picture, rng.uniform(0.25, 0.9), rng)
        elif kind == "unrelated mirrored":
            picture = ImageOps.mirror(picture)
        out.append(Query(kind, None, canonical(picture, quality=85)))
    return out


def _crop(picture: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    """An off-centre crop keeping ``area`` of the picture, its aspect ratio jittered."""
    side = np.sqrt(area)
    kw = min(0.98, side * rng.uniform(0.85, 1.18))
    kh = min(0.98, area / kw)
    w, h = picture.size
    left, top = rng.uniform(0, 1 - kw), rng.uniform(0, 1 - kh)
    return picture.crop((round(w * left), round(h * top), round(w * (left + kw)),
                         round(h * (top + kh))))


def _alter(picture: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """Apply one alteration and the encode/decode round trip."""
    alterations: dict[str, Callable[[], Image.Image]] = {
        "crop": lambda: canonical(picture, quality=85),
        "crop+rescale+jpeg": lambda: canonical(_rescale(picture, rng.uniform(0.5, 2.0)),
                                               quality=int(rng.integers(50, 80))),
        "crop+rot90": lambda: canonical(picture.transpose(Image.Transpose.ROTATE_90),
                                        quality=85),
        "mirrored crop": lambda: canonical(ImageOps.mirror(picture), quality=85),
        "crop+border": lambda: canonical(_border(picture, rng), "PNG"),
        "crop+screenshot": lambda: canonical(_screenshot(picture), quality=85),
    }
    return alterations[kind]()


def _rescale(picture: Image.Image, factor: float) -> Image.Image:
    """The picture resized by ``factor``."""
    w, h = picture.size
    return picture.resize((max(8, round(w * factor)), max(8, round(h * factor))),
                          Image.Resampling.BICUBIC)


def _border(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The picture inside a plain border of random colour and width."""
    pad = int(max(picture.size) * rng.uniform(0.05, 0.3))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    return ImageOps.expand(picture.convert("RGB"), border=(pad, pad // 2), fill=colour)


def _screenshot(picture: Image.Image) -> Image.Image:
    """The picture shown full width in a phone screenshot with a status bar and chat text."""
    width, height = 585, 1266
    canvas = Image.new("RGB", (width, height), (246, 246, 246))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, 56), fill=(24, 24, 24))
    for y in range(80, 290, 30):
        draw.text((20, y), "message text in a chat application, typed", fill=(0, 0, 0))
    shown = _rescale(picture.convert("RGB"), width / picture.width)
    canvas.paste(shown, (0, 310))
    for y in range(330 + shown.height, height - 40, 30):
        draw.text((20, y), "a reply below the picture", fill=(0, 0, 0))
    return canvas


def _run_bank(size: int, bank: list[F.Features], queries: list[Query],
              scanned: list[F.Features], args: argparse.Namespace) -> Row:
    """Build the index of the first ``size`` bank images and scan every file against it."""
    started = time.perf_counter()
    index = F.FeatureIndex.build(((i + 1, f) for i, f in enumerate(bank[:size])), args.params)
    build_s = time.perf_counter() - started
    print(f"bank {size}: {index.descriptor_count:,} descriptors, index built in {build_s:.1f} s",
          flush=True)
    extract_ms, match_ms, results = [], [], []
    for query in queries:
        t0 = time.perf_counter()
        features = F.extract(query.picture)
        t1 = time.perf_counter()
        results.append(index.match(features))
        t2 = time.perf_counter()
        extract_ms.append(1000 * (t1 - t0))
        match_ms.append(1000 * (t2 - t1))
    margin = _margins(index, queries, scanned)
    linear_ms, measured_on = _linear_baseline(bank[:size], queries, scanned, args)
    return _row(size, index, build_s, queries, results, np.array(extract_ms),
                np.array(match_ms), linear_ms, measured_on, margin)


def _row(size: int, index: F.FeatureIndex, build_s: float, queries: list[Query],
         results: list[list[F.FeatureMatch]], extract_ms: np.ndarray, match_ms: np.ndarray,
         linear_ms: float, measured_on: int, margin: dict[str, Any]) -> Row:
    """Summarise one bank's scan."""
    total = extract_ms + match_ms
    unrelated = np.array([q.truth is None for q in queries])
    hard = np.array([q.kind.startswith("hard") for q in queries])
    crops = ~unrelated & ~hard
    found = [bool(r) and r[0].image_id == q.truth for q, r in zip(queries, results)]
    by_kind: dict[str, list[bool]] = {}
    for q, ok in zip(queries, found):
        if q.truth is not None and not q.kind.startswith("hard"):
            by_kind.setdefault(q.kind, []).append(ok)
    wrong = sum(any(m.image_id != q.truth for m in r)
                for q, r in zip(queries, results) if q.truth is not None)
    per_file = float(total[unrelated | crops].mean())
    return Row(
        bank=size, descriptors=index.descriptor_count, index_mb=round(index.nbytes() / 2**20, 1),
        build_s=round(build_s, 1), files=len(queries),
        ms_unrelated_mean=_r(total[unrelated].mean()),
        ms_unrelated_p90=_r(np.percentile(total[unrelated], 90)),
        ms_crops_mean=_r(total[crops].mean()), ms_crops_p90=_r(np.percentile(total[crops], 90)),
        extract_ms_mean=_r(extract_ms.mean()), match_ms_mean=_r(match_ms.mean()),
        linear_ms_per_file=_r(linear_ms), linear_measured_on=measured_on,
        speedup=_r(linear_ms / per_file),
        recall=_r(float(np.mean([f for f, c in zip(found, crops) if c]))),
        recall_by_kind={k: f"{sum(v)}/{len(v)}" for k, v in by_kind.items()},
        hard_crop_recall=f"{sum(f for f, h in zip(found, hard) if h)}/{int(hard.sum())}",
        false_matches=sum(bool(r) for r, u in zip(results, unrelated) if u),
        unrelated_files=int(unrelated.sum()), wrong_image_matches=wrong, margin=margin)


def _r(value: float) -> float:
    """Round a figure for the table."""
    return round(float(value), 2)


def _margins(index: F.FeatureIndex, queries: list[Query],
             scanned: list[F.Features]) -> dict[str, Any]:
    """Inliers and agreement of true and of wrong pairs with the acceptance rules relaxed."""
    strict = index.params
    index.params = replace(strict, min_inliers=6, min_agreement=0.0)
    true_pairs: list[tuple[int, float]] = []
    wrong_pairs: list[tuple[int, float]] = []
    for query, features in zip(queries, scanned):
        for m in index.match(features):
            pair = (m.inliers, round(m.agreement, 3))
            (true_pairs if m.image_id == query.truth else wrong_pairs).append(pair)
    index.params = strict
    true_inliers = sorted(p[0] for p in true_pairs)
    return {
        "relaxed_to": {"min_inliers": 6, "min_agreement": 0.0},
        "wrong_pairs_seen": len(wrong_pairs),
        "wrong_max_inliers": max((p[0] for p in wrong_pairs), default=0),
        "wrong_top": sorted(wrong_pairs, reverse=True)[:5],
        "true_pairs_seen": len(true_pairs),
        "true_inliers_p10_p50": [int(np.percentile(true_inliers, q)) for q in (10, 50)]
        if true_inliers else [],
        "true_below_min_inliers": sum(i < strict.min_inliers for i in true_inliers),
        "true_below_min_agreement": sum(a < strict.min_agreement for i, a in true_pairs
                                        if i >= strict.min_inliers),
    }


def _linear_baseline(bank: list[F.Features], queries: list[Query], scanned: list[F.Features],
                     args: argparse.Namespace) -> tuple[float, int]:
    """ms per file of brute-force matching against every image, extrapolated from a subset."""
    subset = bank[: args.baseline_images]
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    picks = np.linspace(0, len(queries) - 1, args.baseline_files).astype(int)
    started = time.perf_counter()
    for i in picks:
        descriptors = scanned[i].descriptors
        for registered in subset:
            pairs = matcher.knnMatch(descriptors, registered.descriptors, k=2)
            sum(1 for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance)
    per_image = (time.perf_counter() - started) / (len(picks) * len(subset))
    return 1000 * per_image * len(bank), len(subset)


def _print_table(rows: list[Row]) -> None:
    """Print the measurements as a table."""
    print()
    print("bank    descr.   index MB  build s | ms/file unrel. (p90)  crops (p90) | extract "
          "match | linear ms/file (extrap.)  ratio | recall  false  wrong-image")
    for r in rows:
        print(f"{r.bank:<7} {r.descriptors / 1e6:5.1f}M  {r.index_mb:8.0f}  {r.build_s:7.1f} | "
              f"{r.ms_unrelated_mean:6.1f} ({r.ms_unrelated_p90:5.1f})  "
              f"{r.ms_crops_mean:6.1f} ({r.ms_crops_p90:5.1f}) | {r.extract_ms_mean:6.1f} "
              f"{r.match_ms_mean:5.1f} | {r.linear_ms_per_file:9.0f} (on {r.linear_measured_on})"
              f"  {r.speedup:7.0f}x | {r.recall:6.1%} {r.false_matches:3d}/{r.unrelated_files}"
              f"  {r.wrong_image_matches:3d}")
    for r in rows:
        print(f"bank {r.bank}: recall by alteration {r.recall_by_kind}; "
              f"10%-area crops {r.hard_crop_recall}")
        print(f"  margin: {r.margin}")


if __name__ == "__main__":
    sys.exit(main())
