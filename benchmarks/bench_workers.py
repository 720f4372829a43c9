"""Distributed scan throughput: 1 and 2 RQ worker processes against the embedded scan.

Generates an N-image dump of small JPEGs (random crops of packaged photographs with grain, a
few of them copies of registered ones), then scans it three ways against one PostgreSQL
database: embedded ``run_scan`` with one hashing process, and through Redis with one and with
two ``hashsvc worker`` processes. Prints images/s, the speed-up of two workers over one (goal
at least 1.8x on two cores) and the distributed overhead with one worker against the embedded
scan (goal at most 1.15x the time).

    python benchmarks/bench_workers.py --count 5000 --dump /tmp/dump-5000 --repeat 3 --json

Needs PostgreSQL (``--pg``, a fresh database is created and dropped) and the redis-server
binary (a throwaway server on a free port).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PHOTOS, add_run_options, write_json  # noqa: E402
from hashsvc.demo import encode, photo  # noqa: E402
from hashsvc.hashing import hash_bytes  # noqa: E402
from hashsvc.pipeline import run_scan  # noqa: E402
from hashsvc.settings import Settings, load_settings  # noqa: E402
from hashsvc.store import Store, make_engine, migrate  # noqa: E402
from hashsvc.store.progress import FINAL_STATES, scan_progress  # noqa: E402

HASHSVC = Path(sys.executable).with_name("hashsvc")
BANK = ("astronaut", "coffee", "chelsea")


def make_dump(folder: Path, count: int, width: int, height: int) -> None:
    """Write ``count`` distinct JPEGs in folders of 500, one in fifty a registered photo."""
    with multiprocessing.Pool() as pool:
        pool.starmap(_write_images, [(folder, start, min(start + 250, count), width, height)
                                     for start in range(0, count, 250)])


def _write_images(folder: Path, start: int, stop: int, width: int, height: int) -> None:
    """Write images number ``start`` to ``stop`` of the dump."""
    import skimage.data

    # Photographs shrunk once to about twice the dump's size make each crop cheap.
    base = []
    for name in PHOTOS:
        with Image.open(Path(skimage.data.__file__).parent / name) as src:
            img = src.convert("RGB")
        scale = 2 * max(width / img.width, height / img.height)
        base.append(img.resize((int(img.width * scale), int(img.height * scale))))
    planted = [photo(name).resize((width, height)) for name in BANK]
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        sub = folder / f"DCIM/{100 + i // 500}APPLE"
        sub.mkdir(parents=True, exist_ok=True)
        img = (planted[(i // 50) % len(planted)] if i % 50 == 0
               else _crop(base[i % len(base)], rng, width, height))
        img.save(sub / f"IMG_{i:05d}.JPG", quality=85)


def _crop(src: Image.Image, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A random crop of a photograph at the dump's size, with a little grain."""
    w, h = src.size
    cw, ch = int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = src.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BILINEAR)
    # Sensor grain gives the files a camera's entropy; drawn in C, centred on 128.
    grain = Image.merge("RGB", [Image.effect_noise((width, height), 4) for _ in range(3)])
    return ImageChops.add(img, grain, offset=-128)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throwaway redis-server; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(folder), "--save", "", "--appendonly", "yes"],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database; yields its URL and drops it afterwards."""
    import psycopg

    name = f"hashsvc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    try:
        engine = make_engine(load_settings(env={}, database_url=url).db_url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment of a worker process with exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    for field in dataclasses.fields(Settings):
        env[f"HASHSVC_{field.name.upper()}"] = str(getattr(settings, field.name))
    env["HASHSVC_DATA_DIR"] = str(data_dir)
    return env


def start_workers(settings: Settings, count: int, tmp: Path) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` worker processes and wait until each listens on the queue."""
    from rq import Worker

    from workers.jobs import redis_connection

    procs = [subprocess.Popen([str(HASHSVC), "worker"],
                              env=worker_env(settings, tmp / f"worker-data-{count}-{i}"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
             for i in range(count)]
    connection = redis_connection(settings)
    deadline = time.monotonic() + 60
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start")
        time.sleep(0.1)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop workers (a warm shutdown; they are idle)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


def distributed_seconds(store: Store, settings: Settings, dump: Path, workers: int,
                        tmp: Path) -> tuple[float, dict[str, Any]]:
    """Wall time of one scan through Redis with ``workers`` worker processes."""
    from workers.jobs import submit_scan

    procs = start_workers(settings, workers, tmp)
    try:
        start = time.perf_counter()
        scan_id, _ = submit_scan(store, settings, str(dump))
        while (status := scan_progress(store, scan_id))["state"] not in FINAL_STATES:
            time.sleep(0.1)
        return time.perf_counter() - start, status
    finally:
        stop_workers(procs)


def embedded_seconds(store: Store, settings: Settings, dump: Path) -> tuple[float, int]:
    """Wall time of the embedded scan with one hashing process."""
    start = time.perf_counter()
    scan_id = run_scan(store, settings.replace(workers=1), str(dump))
    seconds = time.perf_counter() - start
    return seconds, scan_progress(store, scan_id)["images_hashed"]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="images in the dump")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--batch-files", type=int, default=None,
                        help="files per batch (default: the batch_files setting)")
    parser.add_argument("--pg", default=os.environ.get(
        "HASHSVC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="PostgreSQL URL of a database to create the benchmark's next to")
    add_run_options(parser, "folder for the generated dump, reused when it exists")
    args = parser.parse_args(argv)
    # One core per process in every configuration (as `hashsvc worker` sets for itself), so
    # OpenCV's thread pool in the embedded hashing process does not blur the comparison.
    os.environ["OPENCV_FOR_THREADS_NUM"] = "1"

    with tempfile.TemporaryDirectory() as tmp_name, pg_database(args.pg) as pg_url:
        tmp = Path(tmp_name)
        dump = args.dump or tmp / "dump"
        if not dump.exists():
            started = time.perf_counter()
            make_dump(dump, args.count, args.width, args.height)
            print(f"generated {args.count} images of {args.width}x{args.height} in "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        (tmp / "redis").mkdir()
        with redis_server(tmp / "redis") as redis_url:
            settings = load_settings(env={}, data_dir=str(tmp / "data"), database_url=pg_url,
                                     redis_url=redis_url, batch_files=args.batch_files)
            store = Store.open(settings, upgrade=False)
            store.register("BENCH", [hash_bytes(encode(photo(n), "JPEG"), with_variants=True)
                                     .to_json() for n in BANK])
            figures = run_all(store, settings, dump, tmp, args.repeat)
            store.close()
    report(figures, args.json)


def run_all(store: Store, settings: Settings, dump: Path, tmp: Path, repeat: int
            ) -> dict[str, Any]:
    """Time the three scans and compute the ratios.

    With ``repeat`` the three are run in turn that many times and the fastest of each counts,
    so that a burst of load from elsewhere does not land on one configuration only.
    """
    seconds: dict[str, float] = {}
    images = 0
    statuses: dict[int, dict[str, Any]] = {}
    for _ in range(repeat):
        took, images = embedded_seconds(store, settings, dump)
        seconds["embedded_1"] = min(seconds.get("embedded_1", took), took)
        for workers in (1, 2):
            took, statuses[workers] = distributed_seconds(store, settings, dump, workers, tmp)
            key = f"workers_{workers}"
            seconds[key] = min(seconds.get(key, took), took)
    for status in statuses.values():
        if status["state"] != "done" or status["images_hashed"] != images:
            raise RuntimeError(f"distributed scan differs from embedded: {status}")
    return {
        "count": statuses[1]["files_done"], "cpus": os.cpu_count(),
        "batch_files": settings.batch_files, "batches": statuses[1]["batches_total"],
        "repeat": repeat, "seconds": seconds,
        "images_per_s": {key: images / took for key, took in seconds.items()},
        "speedup_2_workers": seconds["workers_1"] / seconds["workers_2"],
        "overhead_vs_embedded": seconds["workers_1"] / seconds["embedded_1"],
        "load_average": os.getloadavg(),
    }


def report(figures: dict[str, Any], json_path: str | None) -> None:
    """Print the figures, and write them as JSON when asked."""
    rates = figures["images_per_s"]
    print(f"embedded, 1 hashing process: {rates['embedded_1']:7.1f} images/s")
    print(f"RQ, 1 worker:                {rates['workers_1']:7.1f} images/s")
    print(f"RQ, 2 workers:               {rates['workers_2']:7.1f} images/s")
    print(f"speed-up with 2 workers: {figures['speedup_2_workers']:.2f}x (goal >= 1.8x on "
          f"{figures['cpus']} CPUs)")
    print(f"1 worker vs embedded: {figures['overhead_vs_embedded']:.2f}x the time "
          "(goal <= 1.15x)")
    write_json(figures, json_path)


if __name__ == "__main__":
    main()
