"""Decoder isolation: files that crash a decoder, hang it or make it allocate without end cost
themselves, recorded as errors with the reason, in embedded scans, RQ batches and ``hashsvc hash``;
every other file, those decoded in the same chunk too, is hashed and matched.

The hostile decoders come from tests/hostile_plugin.py (a test-only Pillow format whose decoder
calls abort(), dereferences NULL, exits, sleeps or spins for ever, or allocates until refused),
loaded in the decoding children through the ``decode_plugins`` setting. The PNGs are real: one
declares a 81-megapixel picture in 330 KB of zlib data (a "decompression bomb" under the pixel
limit, stopped by the memory limit), one declares 10 gigapixels (refused before decoding).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import subprocess
import time
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hashsvc.errors import InputError
from hashsvc.isolation import DecodeLimits, IsolatedPool, IsolationError, extend_budget
from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.store import Store
from hashsvc.store.progress import get_batch
from hashsvc.thumbnails import render_thumbnail

from conftest import encode, photo
from hostile_plugin import hostile_bytes
from test_jobs import (HASHSVC, WorkerPool, redis_server, service_settings,  # noqa: F401
                       settings_env, start_service_scan, summary, wait_final, workers)
from test_pipeline import register

PLUGIN = Path(__file__).with_name("hostile_plugin.py")

#: The limits of these tests: short, so that a hang costs seconds. RLIMIT_CPU counts whole
#: seconds (a file gets CPU seconds from at least CPU to CPU + 1), and on two busy cores a
#: spinning child gets about half of one, so the wall-clock limit is well above it.
TIMEOUT, CPU, MEMORY = 5.0, 1.0, 256


def limited(settings: Settings, **changes: Any) -> Settings:
    """Settings with the hostile plugin loaded and the tests' limits."""
    limits = {"decode_plugins": str(PLUGIN), "decode_timeout_seconds": TIMEOUT,
              "decode_cpu_seconds": CPU, "decode_memory_mb": MEMORY}
    return settings.replace(**{**limits, **changes})


def png(width: int, height: int, channels: int = 3) -> bytes:
    """A valid 8-bit PNG of black pixels, compressed as far as zlib goes (about 1000:1)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    color = {1: 0, 3: 2, 4: 6}[channels]
    packer = zlib.compressobj(9)
    row = b"\x00" * (width * channels + 1)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                            color, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@lru_cache(maxsize=1)
def png_bomb() -> bytes:
    """81 megapixels of RGB (324 MB decoded, as Pillow keeps RGB) in a file of 330 KB."""
    return png(9000, 9000)


def huge_declared_png() -> bytes:
    """A PNG declaring 100000 x 100000 pixels, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8,
                                                            2, 0, 0, 0))
            + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


#: Good files (name -> picture and encoding), interleaved with hostile ones so that every
#: chunk of four holds both.
GOOD = {
    "00-astronaut.jpg": ("astronaut", (300, 300), "JPEG"),
    "02-camera.jpg": ("camera", None, "JPEG"),
    "04-coffee.png": ("coffee", None, "PNG"),
    "06-moon.jpg": ("moon", None, "JPEG"),
    "08-astronaut.png": ("astronaut", None, "PNG"),
    "10-coffee.jpg": ("coffee", (300, 200), "JPEG"),
    "12-chelsea.jpg": ("chelsea", None, "JPEG"),
    "14-rocket.jpg": ("rocket", None, "JPEG"),
}

#: Hostile files and the error each must be recorded with.
HOSTILE = {
    "01-abort.hostile": ("abort", "the decoder crashed the worker process (signal 6, SIGABRT)"),
    "03-segv.hostile": ("segv", "the decoder crashed the worker process (signal 11, SIGSEGV)"),
    "05-exit.hostile": ("exit", "the decoder crashed the worker process (exit status 3)"),
    "07-oom.hostile": ("oom", f"the decoder exceeded its memory limit ({MEMORY} MiB)"),
    "09-spin.hostile": ("spin", f"the decoder exceeded its CPU-time limit ({CPU:g} s)"),
    "11-sleep.hostile": ("sleep", f"the decoder exceeded its time limit ({TIMEOUT:g} s)"),
    "13-bomb.png": ("png-bomb", f"the decoder exceeded its memory limit ({MEMORY} MiB)"),
    "15-huge.png": ("png-huge", "decompression bomb: png declares 100000x100000 = "
                                "10,000,000,000 pixels, over the limit of 200,000,000"),
}


def good_bytes(name: str) -> bytes:
    """The bytes of one good file."""
    picture, size, fmt = GOOD[name]
    img = photo(picture)
    return encode(img.resize(size) if size else img, fmt)


def hostile_file(name: str) -> bytes:
    """The bytes of one hostile file."""
    action = HOSTILE[name][0]
    if action == "png-bomb":
        return png_bomb()
    if action == "png-huge":
        return huge_declared_png()
    return hostile_bytes(action, salt=name)


def build_dump(root: Path, hostile: bool = True, only: tuple[str, ...] | None = None) -> None:
    """The good files, and (``hostile``) the hostile ones among them."""
    root.mkdir(parents=True)
    for name in GOOD:
        (root / name).write_bytes(good_bytes(name))
    for name in HOSTILE if hostile else ():
        if only is None or HOSTILE[name][0] in only:
            (root / name).write_bytes(hostile_file(name))


def errors_of(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """path -> (stage, message) of a report's errors."""
    return {e["path"]: (e["stage"], e["message"]) for e in report["errors"]}


def matches_of(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The report's matches, comparable across scans."""
    return sorted((m["path"], m["case"], m["algorithm"], m["distance"], m["variant"])
                  for m in report["matches"])


# -- embedded scans --------------------------------------------------------------------------

def test_hostile_files_cost_only_themselves_in_an_embedded_scan(store: Store, settings: Settings,
                                                                tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    # A file that crashes the decoder still matches by its exact hashes (computed by the
    # scanning process, which reads the bytes but never decodes them).
    crasher = hostile_file("01-abort.hostile")
    store.register("CASE-X", [{"sha256": hashlib.sha256(crasher).hexdigest(),
                               "md5": hashlib.md5(crasher).hexdigest()}])
    conf = limited(settings, chunk_size=4)
    build_dump(tmp_path / "clean", hostile=False)
    reference = build_report(store, run_scan(store, conf, str(tmp_path / "clean")))
    build_dump(tmp_path / "dump")

    started = time.monotonic()
    report = build_report(store, run_scan(store, conf, str(tmp_path / "dump")))
    elapsed = time.monotonic() - started

    assert report["state"] == "done"
    assert report["files_scanned"] == len(GOOD) + len(HOSTILE)
    assert report["images_hashed"] == reference["images_hashed"] == len(GOOD)
    assert errors_of(report) == {name: ("decode", message)
                                 for name, (_, message) in HOSTILE.items()}
    good_matches = [m for m in matches_of(report) if m[0] in GOOD]
    assert good_matches == matches_of(reference) and len(good_matches) >= 4
    assert [m[:3] for m in matches_of(report) if m[0] not in GOOD] == [
        ("01-abort.hostile", "CASE-X", "sha256")]
    # The sleeping file costs its time limit; the rest goes on beside it.
    print(f"embedded scan with hostile files: {elapsed:.1f} s")
    assert elapsed < 30


def test_a_hang_costs_the_time_limit(store: Store, settings: Settings, tmp_path: Path) -> None:
    conf = limited(settings, workers=1, decode_timeout_seconds=2.0)
    build_dump(tmp_path / "clean", hostile=False)
    build_dump(tmp_path / "hang", only=("sleep",))
    run_scan(store, conf, str(tmp_path / "clean"))  # the fork server is started: warm
    started = time.monotonic()
    run_scan(store, conf, str(tmp_path / "clean"))
    clean = time.monotonic() - started
    started = time.monotonic()
    report = build_report(store, run_scan(store, conf, str(tmp_path / "hang")))
    hang = time.monotonic() - started

    assert errors_of(report) == {"11-sleep.hostile": (
        "decode", "the decoder exceeded its time limit (2 s)")}
    assert report["images_hashed"] == len(GOOD)
    print(f"scan of {len(GOOD)} files: {clean:.2f} s; with a file that hangs: {hang:.2f} s "
          f"(+{hang - clean:.2f} s for a time limit of 2 s)")
    assert 2.0 <= hang - clean < 2.0 + 3.0


def test_a_decoding_process_that_cannot_start_fails_the_scan(store: Store, settings: Settings,
                                                             tmp_path: Path) -> None:
    build_dump(tmp_path / "clean", hostile=False)
    conf = settings.replace(decode_plugins=str(tmp_path / "no-such-plugin.py"))
    with pytest.raises(IsolationError, match="a decoding process could not start"):
        run_scan(store, conf, str(tmp_path / "clean"), scan_id="broken")
    assert store.get_scan("broken").state == "failed"


# -- the pool itself ---------------------------------------------------------------------------

def crash_once(marker: str) -> str:
    """Dies the first time it sees ``marker`` (a folder it creates), then answers."""
    try:
        os.mkdir(marker)
    except FileExistsError:
        return "answered"
    os.kill(os.getpid(), 9)  # as the kernel's OOM killer or an operator would
    return "unreachable"


def slow_video(seconds: float) -> str:
    """Asks for ``seconds`` more (as a video does), then takes most of it in CPU and sleep."""
    extend_budget(seconds)
    deadline = time.process_time() + 1.5
    while time.process_time() < deadline:
        pass
    time.sleep(1.0)
    return "done"


def test_a_child_killed_by_something_else_costs_nothing(tmp_path: Path) -> None:
    with IsolatedPool(1, crash_once, DecodeLimits()) as pool:
        pool.submit([("a", str(tmp_path / "marker"))])
        outcomes = pool.collect()
        assert [(o.key, o.result, o.failure) for o in outcomes] == [("a", "answered", None)]
        assert pool.crashes == 1 and pool.started == 2  # retried alone, in a fresh child


def test_a_video_extends_its_own_limits() -> None:
    limits = DecodeLimits(cpu_seconds=1.0, timeout_seconds=1.0)
    with IsolatedPool(1, slow_video, limits) as pool:
        pool.submit([("long", 5.0), ("short", 0.0)])
        found = {o.key: (o.result, o.failure) for o in pool.collect() + pool.collect()}
    assert found["long"] == ("done", None)
    assert found["short"][1] in ("the decoder exceeded its CPU-time limit (1 s)",
                                 "the decoder exceeded its time limit (1 s)")


# -- RQ batches ------------------------------------------------------------------------------

def test_hostile_files_in_an_rq_batch(pg_store: Store, service_settings: Settings,
                                      workers: WorkerPool, tmp_path: Path) -> None:
    register(pg_store, "CASE-1", "astronaut", "coffee")
    conf = limited(service_settings, batch_files=4, chunk_size=4)
    workers.settings = conf
    dump = tmp_path / "dump"
    build_dump(dump, only=("abort", "segv", "oom", "sleep", "png-huge"))
    workers.start(1)
    scan_id = start_service_scan(pg_store, conf, dump)
    status = wait_final(pg_store, scan_id, workers, timeout=60)
    report = build_report(pg_store, scan_id)

    assert status["state"] == "done" and status["batches_failed"] == 0
    # No batch was lost with a work-horse: each ran once.
    assert {get_batch(pg_store, scan_id, n).attempts
            for n in range(status["batches_total"])} == {1}
    assert errors_of(report) == {name: ("decode", message) for name, (action, message)
                                 in HOSTILE.items() if (dump / name).exists()}
    assert report["images_hashed"] == len(GOOD)
    embedded = build_report(pg_store, run_scan(pg_store, conf, str(dump)))
    assert summary(report) == summary(embedded)


# -- hashsvc hash ----------------------------------------------------------------------------

def test_hash_command_reports_hostile_files_and_hashes_the_rest(settings: Settings,
                                                               tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", only=("abort", "sleep", "oom", "spin"))
    files = sorted(str(p) for p in (tmp_path / "dump").iterdir())
    env = settings_env(limited(settings))
    started = time.monotonic()
    res = subprocess.run([str(HASHSVC), "hash", "--workers", "2", "--no-features", *files],
                         env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.returncode == 1, res.stderr
    assert "4 of 12 files could not be hashed" in res.stderr
    assert [line["file"] for line in lines] == files  # in order
    by_name = {Path(line["file"]).name: line for line in lines}
    for name in GOOD:
        assert by_name[name]["sha256"] == hashlib.sha256(good_bytes(name)).hexdigest()
        assert "pdq" in by_name[name]["hashes"]
    assert {name: line["error"] for name, line in by_name.items() if "error" in line} == {
        name: message for name, (action, message) in HOSTILE.items()
        if action in ("abort", "sleep", "oom", "spin")}
    print(f"hashsvc hash of 8 good and 4 hostile files: {elapsed:.1f} s")


def test_review_thumbnails_are_made_under_the_same_limits(settings: Settings) -> None:
    """An analyst's preview of a hostile file costs the preview, never the web process."""
    conf = limited(settings)
    for action, message in (("segv", "crashed the worker process (signal 11"),
                            ("sleep", f"exceeded its time limit ({TIMEOUT:g} s)"),
                            ("oom", f"exceeded its memory limit ({MEMORY} MiB)")):
        with pytest.raises(InputError, match=re.escape(message)):
            render_thumbnail(hostile_bytes(action), (), conf, reveal=True)
    shown = render_thumbnail(encode(photo("astronaut"), "JPEG"), (), conf, reveal=True)
    assert Image.open(io.BytesIO(shown)).size == (256, 256)
    with pytest.raises(InputError, match="no preview: not a recognised image format"):
        render_thumbnail(b"plain text, not a picture", (), conf, reveal=False)
