"""Disk-image scan throughput: the same JPEGs scanned from a raw disk image and from a folder.

Generates ``--files`` JPEGs (packaged photographs, cropped and grained; see common.py; the
``--distinct`` pictures are repeated to fill the count), writes them to a folder and into a
raw FAT32 (mkfs.fat + mtools) or ext4 (mke2fs -d) image, registers a small bank, and runs the
embedded scan (every core) of each, alternately, keeping the best of ``--repeat``. Prints
images/s for each and the time ratio disk/directory, and, for the cost of reading a source in
a child process as scans do, the image and the folder scanned with the reader inline. The disk
scan also reads the whole image once for its SHA-256 and MD5. The CPU seconds of the scanning
process itself (walking and reading, and hashing the image, where the reader is inline) show
the reader's own cost apart from the decoding, which is the same for all.

    python benchmarks/bench_disk.py --files 3000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import camera_photo  # noqa: E402
from hashsvc.demo import encode, photo  # noqa: E402
from hashsvc.hashing import hash_bytes  # noqa: E402
from hashsvc.pipeline import run_scan  # noqa: E402
from hashsvc.report import build_report  # noqa: E402
from hashsvc.settings import load_settings  # noqa: E402
from hashsvc.store import Store  # noqa: E402


def make_dump(folder: Path, files: int, distinct: int, width: int, height: int) -> int:
    """Write ``files`` JPEGs in folders of 500 (``distinct`` pictures, repeated); their bytes."""
    rng = np.random.default_rng(1)
    pictures = []
    for i in range(distinct):
        pictures.append(encode(camera_photo(i, rng, width, height, 5.0), "JPEG", quality=90))
    total = 0
    for i in range(files):
        sub = folder / "DCIM" / f"{100 + i // 500}CANON"
        sub.mkdir(parents=True, exist_ok=True)
        data = pictures[i % distinct]
        (sub / f"IMG_{i:05d}.JPG").write_bytes(data)
        total += len(data)
    return total


def make_image(image: Path, folder: Path, fs: str, payload: int) -> None:
    """A raw image of a FAT32 or ext4 file system holding the folder's files."""
    size_kib = (payload * 12 // 10 + 64 * 1024 * 1024) // 1024
    if fs == "fat":
        subprocess.run(["mkfs.fat", "-F", "32", "-C", str(image), str(size_kib)], check=True,
                       capture_output=True)
        subprocess.run(["mcopy", "-s", "-i", str(image), str(folder / "DCIM"), "::/"],
                       check=True, capture_output=True,
                       env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    else:
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(folder), str(image),
                        f"{size_kib}k"], check=True, capture_output=True)


def timed_scan(tmp: Path, source: Path, bank: list[dict], workers: int | None,
               **overrides: float) -> tuple[float, float, int]:
    """Wall seconds of one embedded scan, the CPU seconds of the scanning process itself (the
    walk, and the disk image's hashing thread, unless a reading child does them; not the
    hashing processes), and the images it hashed."""
    settings = load_settings(data_dir=str(tmp / f"data-{len(list(tmp.iterdir()))}"),
                             workers=workers, **overrides)
    store = Store.open(settings)
    store.register("BENCH", bank)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    scan_id = run_scan(store, settings, str(source))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    hashed = build_report(store, scan_id)["images_hashed"]
    store.close()
    return wall, cpu, hashed


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--distinct", type=int, default=50)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--fs", choices=("fat", "ext4"), default="fat")
    parser.add_argument("--workers", type=int, default=None, help="default: every core")
    parser.add_argument("--repeat", type=int, default=2, help="scans of each, best kept")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    tools = ("mkfs.fat", "mcopy") if args.fs == "fat" else ("mke2fs",)
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        parser.error(f"needs {', '.join(missing)} (Debian: dosfstools, mtools, e2fsprogs)")
    bank = [hash_bytes(encode(photo(n), "JPEG"), with_variants=True).to_json()
            for n in ("astronaut", "coffee", "chelsea")]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        payload = make_dump(tmp / "dump", args.files, args.distinct, args.width, args.height)
        image = tmp / f"disk-{args.fs}.img"
        make_image(image, tmp / "dump", args.fs, payload)
        print(f"{args.files} JPEGs, {payload / 1e6:.0f} MB; {args.fs} image of "
              f"{image.stat().st_size / 1e6:.0f} MB")
        # The image is read in a child process as scans read it (hashsvc/sources/guarded.py),
        # and, for the cost of that, in the scanning process (both reader limits 0).
        in_process = {"reader_timeout_seconds": 0.0, "reader_memory_mb": 0}
        sources = {"directory": (tmp / "dump", {}), f"raw {args.fs} image": (image, {}),
                   "image, reader inline": (image, in_process),
                   "folder, reader inline": (tmp / "dump", in_process)}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
        for _ in range(args.repeat):  # alternated, so that a busy moment hits all alike
            for name, (source, overrides) in sources.items():
                wall, cpu, hashed = timed_scan(tmp, source, bank, args.workers, **overrides)
                assert hashed == args.files, (name, hashed)
                runs[name].append((wall, cpu))
        for name, times in runs.items():
            wall, cpu = min(times)
            results[name] = args.files / wall
            print(f"{name:20s} {results[name]:7.1f} images/s (best of {len(times)}: "
                  f"{wall:.1f} s; scanning process {cpu:.1f} s CPU)")
    directory, disk, inline, folder_inline = results.values()
    print(f"disk / directory: {directory / disk:.2f}x the time")
    print(f"reader in a child / reader inline: image {inline / disk:.2f}x, folder "
          f"{folder_inline / directory:.2f}x the time (the child's own CPU is not in the "
          "scanning process's figure above)")
    if args.json:
        args.json.write_text(json.dumps({"files": args.files, "fs": args.fs,
                                         "images_per_s": results}))


if __name__ == "__main__":
    main()
