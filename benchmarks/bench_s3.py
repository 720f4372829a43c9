"""S3 scan throughput: a bucket read with one read thread and with parallel reads, against the
same files scanned from a folder.

Generates N JPEGs as bench_workers.py does (640x480 by default, one in fifty a registered
photo), uploads them to moto's S3 server started on a free loopback port (its own process, as a
remote store would be), and runs the embedded scan three ways: the folder (the baseline), the
bucket with ``s3_read_threads=1``, and the bucket with the default ``s3_read_threads``. Prints
images/s and the ratios. ``--latency-ms`` adds a delay before every GET of the scans' clients,
standing in for the first-byte latency of a real store (tens of milliseconds), which loopback
does not have.

    python benchmarks/bench_s3.py --files 1000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_workers import BANK, free_port, make_dump  # noqa: E402
from benchmarks.common import add_run_options, write_json  # noqa: E402
from hashsvc.demo import encode, photo  # noqa: E402
from hashsvc.hashing import hash_bytes  # noqa: E402
from hashsvc.pipeline import run_scan  # noqa: E402
from hashsvc.settings import Settings, load_settings  # noqa: E402
from hashsvc.sources import s3 as s3_source  # noqa: E402
from hashsvc.store import Store  # noqa: E402
from hashsvc.store.progress import scan_progress  # noqa: E402

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "bench-evidence"


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in its own process on a free loopback port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def upload(dump: Path) -> int:
    """Upload every file of ``dump`` to the bucket under its relative path; the file count."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(max_pool_connections=32))
    client.create_bucket(Bucket=BUCKET)
    files = sorted(p for p in dump.rglob("*") if p.is_file())

    def put(path: Path) -> None:
        client.put_object(Bucket=BUCKET, Key=path.relative_to(dump).as_posix(),
                          Body=path.read_bytes())

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, files))
    client.close()
    return len(files)


def add_get_latency(seconds: float) -> None:
    """Make every client the S3 source creates wait ``seconds`` before each GET it sends."""
    make_client = s3_source.make_client

    def slow_client(max_connections: int) -> Any:
        client = make_client(max_connections)
        client.meta.events.register("before-send.s3.GetObject",
                                    lambda **_: time.sleep(seconds))
        return client

    s3_source.make_client = slow_client


def timed_scan(store: Store, settings: Settings, source: str,
               read_threads: int | None = None) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one embedded scan, and its final progress."""
    if read_threads is not None:
        os.environ["HASHSVC_S3_READ_THREADS"] = str(read_threads)
    start = time.perf_counter()
    scan_id = run_scan(store, settings, source)
    seconds = time.perf_counter() - start
    return seconds, scan_progress(store, scan_id)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="JPEGs in the bucket")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--workers", type=int, default=0,
                        help="hashing processes (default 0: one per core)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay added before each GET of the scans (default 0: loopback)")
    add_run_options(parser, "folder for the generated images, reused when it exists")
    args = parser.parse_args(argv)
    default_threads = load_settings(env={}).s3_read_threads

    with tempfile.TemporaryDirectory() as tmp_name, moto_server() as endpoint:
        tmp = Path(tmp_name)
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                          AWS_EC2_METADATA_DISABLED="true")
        dump = args.dump or tmp / "dump"
        started = time.perf_counter()
        if not dump.exists():
            make_dump(dump, args.files, args.width, args.height)
        count = upload(dump)
        print(f"generated and uploaded {count} images in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        if args.latency_ms:
            add_get_latency(args.latency_ms / 1000)
        settings = load_settings(env={}, data_dir=str(tmp / "data"), workers=args.workers)
        store = Store.open(settings)
        store.register("BENCH", [hash_bytes(encode(photo(n), "JPEG"), with_variants=True)
                                 .to_json() for n in BANK])
        runs = {"directory": (str(dump), None),
                "s3_1_thread": (f"s3://{BUCKET}/", 1),
                f"s3_{default_threads}_threads": (f"s3://{BUCKET}/", default_threads)}
        seconds: dict[str, float] = {}
        statuses: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for name, (source, threads) in runs.items():
                took, statuses[name] = timed_scan(store, settings, source, threads)
                seconds[name] = min(seconds.get(name, took), took)
        store.close()
    baseline = statuses["directory"]
    for name, status in statuses.items():
        if (status["state"], status["images_hashed"], status["candidates"]) != (
                "done", baseline["images_hashed"], baseline["candidates"]):
            raise RuntimeError(f"{name} scan differs from the folder's: {status}")
    images = baseline["images_hashed"]
    parallel = f"s3_{default_threads}_threads"
    figures = {
        "files": count, "images": images, "cpus": os.cpu_count(),
        "hashing_processes": settings.worker_count, "latency_ms": args.latency_ms,
        "repeat": args.repeat, "seconds": seconds,
        "images_per_s": {name: images / took for name, took in seconds.items()},
        "parallel_vs_1_thread": seconds["s3_1_thread"] / seconds[parallel],
        "parallel_vs_directory": seconds["directory"] / seconds[parallel],
        "load_average": os.getloadavg(),
    }
    report(figures, parallel, args.json)


def report(figures: dict[str, Any], parallel: str, json_path: str | None) -> None:
    """Print the figures, and write them as JSON when asked."""
    rates = figures["images_per_s"]
    print(f"{figures['images']} images, {figures['hashing_processes']} hashing processes, "
          f"{figures['latency_ms']:g} ms added per GET")
    print(f"directory (baseline):       {rates['directory']:7.1f} images/s")
    print(f"S3, 1 read thread:          {rates['s3_1_thread']:7.1f} images/s")
    print(f"S3, {parallel.split('_')[1]} read threads:         {rates[parallel]:7.1f} images/s")
    print(f"parallel reads vs 1 thread: {figures['parallel_vs_1_thread']:.2f}x the throughput")
    print(f"parallel reads vs directory: {figures['parallel_vs_directory']:.2f}x the throughput")
    write_json(figures, json_path)


if __name__ == "__main__":
    main()
