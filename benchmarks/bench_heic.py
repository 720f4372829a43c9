"""Benchmark HEIC decoding: full HEVC decode against the embedded-thumbnail path, and its PDQ drift.

Run from the repository root, for example::

    python benchmarks/bench_heic.py --count 6 --json benchmarks/out/heic.json

Camera-like HEICs (12 MP, a 512x512 tile grid as iPhones write, some rotated with ``irot``) are
generated from scikit-image's photographs with thumbnails of several sizes. For each thumbnail
size the PDQ Hamming distance between the canonical picture of the thumbnail and that of the full
decode is measured, for the thumbnails libheif writes (nearest-neighbour scaled, so aliased: a
worst case) and for a filtered thumbnail (Lanczos, encoded alone) like a camera's. Then the full
decode and the path :func:`hashsvc.decode.decode` takes are timed per core.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pillow_heif
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import camera_photo  # noqa: E402
from hashsvc.decode import HEIF_THUMBNAIL_MIN_SIDE, DecodedImage, decode  # noqa: E402
from hashsvc.hashing import hamming_hex, hash_picture  # noqa: E402


#: EXIF orientations given to the generated files in turn; pillow-heif turns them into irot/imir.
ORIENTATIONS = (1, 6, 1, 3, 1, 8)


@dataclass(frozen=True)
class Sample:
    """One generated HEIC and, per thumbnail box, a filtered stand-alone thumbnail HEIC."""

    name: str
    data: bytes
    filtered: dict[int, bytes]  # box -> HEIC of the Lanczos-reduced picture
    jpeg: bytes  # the same full picture as a JPEG: a benign copy, for scale


@dataclass(frozen=True)
class Drift:
    """PDQ distances, thumbnail path against full decode, for one thumbnail size and kind."""

    box: int
    size: str
    kind: str
    files: int
    mean_bits: float
    max_bits: int
    phash_mean_bits: float


@dataclass(frozen=True)
class Timing:
    """One decode path's speed per image: each file's fastest call, averaged over the files."""

    path: str
    wall_ms: float
    cpu_ms: float
    images_per_s: float
    images_per_core_s: float  # 1 / CPU seconds: libheif's threads all count


def main(argv: list[str] | None = None) -> int:
    """Generate the files, measure drift and speed, print the tables and write the JSON."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="bench_heic_") as tmp:
        samples = _generate(Path(tmp), args)
    sizes = [len(s.data) for s in samples]
    print(f"{len(samples)} HEICs {args.width}x{args.height} q{args.quality} "
          f"grid {args.tile_size or 'none'}, thumbnails {args.boxes}: "
          f"{statistics.mean(sizes) / 1e6:.2f} MB mean")
    drifts = _measure_drift(samples, args.boxes)
    chosen = _chosen_sizes(samples, args.min_side)
    timings = _measure_speed(samples, args.min_side, args.repeats)
    _print_drift(drifts)
    _print_speed(timings, chosen, args.min_side)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "mean_file_mb": statistics.mean(sizes) / 1e6,
                   "drift": [asdict(d) for d in drifts], "chosen_sizes": chosen,
                   "timings": [asdict(t) for t in timings]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6, help="number of HEICs")
    parser.add_argument("--width", type=int, default=4032)
    parser.add_argument("--height", type=int, default=3024)
    parser.add_argument("--quality", type=int, default=60)
    parser.add_argument("--noise", type=float, default=4.0, help="sigma of the sensor-like grain")
    parser.add_argument("--boxes", type=_int_list, default=[256, 320, 416, 512],
                        help="thumbnail bounding boxes to embed (longer side in pixels)")
    parser.add_argument("--tile-size", type=int, default=512, help="grid tile size; 0: none")
    parser.add_argument("--preset", default="ultrafast",
                        help="x265 preset for generating the files (slower presets take minutes)")
    parser.add_argument("--min-side", type=int, default=HEIF_THUMBNAIL_MIN_SIDE,
                        help="shorter side a thumbnail needs for the timed thumbnail path")
    parser.add_argument("--repeats", type=int, default=3, help="calls per file and path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def _int_list(text: str) -> list[int]:
    """Parse a comma-separated list of integers."""
    return [int(part) for part in text.split(",") if part]


def _generate(folder: Path, args: argparse.Namespace) -> list[Sample]:
    """Camera-sized HEICs with embedded thumbnails, and filtered thumbnails beside them."""
    pillow_heif.register_heif_opener()  # Pillow saves HEIF only through pillow-heif's plugin
    rng = np.random.default_rng(args.seed)
    samples = []
    for i in range(args.count):
        stored = camera_photo(i, rng, args.width, args.height, args.noise)
        exif = Image.Exif()
        exif[0x0112] = ORIENTATIONS[i % len(ORIENTATIONS)]
        options = {"quality": args.quality, "exif": exif.tobytes(),
                   "enc_params": {"preset": args.preset}}
        path = folder / f"IMG_{i:04d}.HEIC"
        stored.save(path, "HEIF", thumbnails=args.boxes, tile_size=args.tile_size, **options)
        filtered = {box: _encode(_fit(stored, box), options) for box in args.boxes}
        buf = io.BytesIO()
        stored.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        samples.append(Sample(name=path.name, data=path.read_bytes(), filtered=filtered,
                              jpeg=buf.getvalue()))
    return samples


def _fit(img: Image.Image, box: int) -> Image.Image:
    """``img`` reduced with Lanczos so that its longer side is ``box``, as libheif sizes a box."""
    scale = box / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                      Image.Resampling.LANCZOS)


def _encode(img: Image.Image, options: dict[str, object]) -> bytes:
    """A stand-alone HEIC of ``img``."""
    buf = io.BytesIO()
    img.save(buf, "HEIF", **options)
    return buf.getvalue()


def _measure_drift(samples: list[Sample], boxes: list[int]) -> list[Drift]:
    """PDQ distance from the full decode for every thumbnail size, libheif's and filtered."""
    full = [_hashes(decode(s.data, heif_thumbnail_min_side=None)) for s in samples]
    # For scale: the same picture saved as a JPEG, which the canonical decode reduces by DCT
    # scaling instead, is a copy any scan must match.
    drifts = [_drift(0, "full", "jpeg-q90-copy", full, [decode(s.jpeg) for s in samples])]
    for box in boxes:
        embedded = [_embedded(s, box) for s in samples]
        filtered = [decode(s.filtered[box], heif_thumbnail_min_side=None) for s in samples]
        for kind, pictures in (("libheif-nearest", embedded), ("filtered", filtered)):
            drifts.append(_drift(box, "x".join(map(str, pictures[0].image.size)), kind, full,
                                 pictures))
    return drifts


def _drift(box: int, size: str, kind: str, full: list[dict[str, str]],
           pictures: list[DecodedImage]) -> Drift:
    """Distance statistics of ``pictures`` from the full decodes' hashes."""
    pdq = [hamming_hex(f["pdq"], _hashes(p)["pdq"]) for f, p in zip(full, pictures)]
    ph = [hamming_hex(f["phash"], _hashes(p)["phash"]) for f, p in zip(full, pictures)]
    return Drift(box=box, size=size, kind=kind, files=len(pdq), mean_bits=statistics.mean(pdq),
                 max_bits=max(pdq), phash_mean_bits=statistics.mean(ph))


def _embedded(sample: Sample, box: int) -> DecodedImage:
    """The canonical picture of the embedded thumbnail made for ``box``, through decode()."""
    with Image.open(io.BytesIO(sample.data)) as img:
        full_w, full_h = img.size
    short = round(box * min(full_w, full_h) / max(full_w, full_h))
    # decode() takes the smallest thumbnail whose shorter side reaches the minimum, so asking
    # for exactly this box's shorter side selects this box's thumbnail.
    picture = decode(sample.data, heif_thumbnail_min_side=short)
    if not picture.from_thumbnail:
        raise RuntimeError(f"{sample.name}: the {box} thumbnail was not used")
    if (picture.image.width > picture.image.height) != (full_w > full_h):
        raise RuntimeError(f"{sample.name}: thumbnail oriented unlike the full picture")
    return picture


def _hashes(picture: DecodedImage) -> dict[str, str]:
    """The perceptual hashes of a canonical picture."""
    return hash_picture(picture, {"sha256": "", "md5": ""}, 0).hashes


def _chosen_sizes(samples: list[Sample], min_side: int) -> dict[str, str]:
    """Per file, the size of the picture the timed thumbnail path hashes."""
    return {s.name: "x".join(map(str, decode(s.data, heif_thumbnail_min_side=min_side).image.size))
            for s in samples}


def _measure_speed(samples: list[Sample], min_side: int, repeats: int) -> list[Timing]:
    """Per-core speed of the full decode (with 1 and the default 4 threads) and of decode()."""
    default_threads = pillow_heif.options.DECODE_THREADS
    paths: dict[str, tuple[int, Callable[[bytes], object]]] = {
        "full decode, 1 thread": (1, lambda d: decode(d, heif_thumbnail_min_side=None)),
        f"full decode, {default_threads} threads": (
            default_threads, lambda d: decode(d, heif_thumbnail_min_side=None)),
        f"thumbnail path (>= {min_side})": (
            default_threads, lambda d: decode(d, heif_thumbnail_min_side=min_side)),
    }
    walls: dict[str, list[list[float]]] = {p: [] for p in paths}
    cpus: dict[str, list[list[float]]] = {p: [] for p in paths}
    try:
        for _ in range(repeats):
            for name, (threads, fn) in paths.items():
                pillow_heif.options.DECODE_THREADS = threads
                wall, cpu = _one_pass(fn, [s.data for s in samples])
                walls[name].append(wall)
                cpus[name].append(cpu)
    finally:
        pillow_heif.options.DECODE_THREADS = default_threads
    out = []
    for name in paths:
        wall_ms, cpu_ms = _fastest_ms(walls[name]), _fastest_ms(cpus[name])
        out.append(Timing(path=name, wall_ms=wall_ms, cpu_ms=cpu_ms,
                          images_per_s=1000 / wall_ms, images_per_core_s=1000 / cpu_ms))
    return out


def _one_pass(fn: Callable[[bytes], object], blobs: list[bytes]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``fn`` on every file, file by file."""
    walls, cpus = [], []
    for data in blobs:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(data)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return walls, cpus


def _fastest_ms(per_pass: list[list[float]]) -> float:
    """Mean over files of each file's fastest time, in milliseconds (sheds a neighbour's load)."""
    n = len(per_pass[0])
    return 1000 * sum(min(p[i] for p in per_pass) for i in range(n)) / n


def _print_drift(drifts: list[Drift]) -> None:
    """Print the PDQ drift table."""
    print(f"\nPDQ bits from the full decode\n{'thumbnail':<10} {'size':>9} {'kind':<16} "
          f"{'files':>5} {'PDQ mean':>9} {'PDQ max':>8} {'pHash mean':>11}")
    for d in drifts:
        print(f"{d.box or '-':<10} {d.size:>9} {d.kind:<16} {d.files:>5} {d.mean_bits:>9.1f} "
              f"{d.max_bits:>8} {d.phash_mean_bits:>11.1f}")


def _print_speed(timings: list[Timing], chosen: dict[str, str], min_side: int) -> None:
    """Print the speed table and the speed-up per core."""
    print(f"\n{'decode path':<28} {'images/s':>9} {'per core':>9} {'wall ms':>8} {'cpu ms':>8}")
    for t in timings:
        print(f"{t.path:<28} {t.images_per_s:>9.2f} {t.images_per_core_s:>9.2f} "
              f"{t.wall_ms:>8.1f} {t.cpu_ms:>8.1f}")
    full, thumb = timings[0], timings[-1]
    print(f"thumbnail path per core: {full.cpu_ms / thumb.cpu_ms:.0f}x the 1-thread full decode; "
          f"pictures hashed at >= {min_side}: {sorted(set(chosen.values()))}")


if __name__ == "__main__":
    raise SystemExit(main())
