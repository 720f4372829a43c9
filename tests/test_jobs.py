"""Distributed scans: RQ jobs run by real ``hashsvc worker`` processes against a throwaway Redis
and the session's PostgreSQL, compared with the embedded scan; and the in-process mode."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.sources.directory import decode_relpath, encode_relpath
from hashsvc.store import Store
from hashsvc.store.models import ScanBatch
from hashsvc.store.progress import FINAL_STATES, batch_states, scan_progress
from workers import jobs

from conftest import encode, noise_image, photo
from test_cli import build_hostile_dump
from test_pipeline import register

HASHSVC = Path(sys.executable).with_name("hashsvc")


# -- throwaway Redis and worker processes ----------------------------------------------------

def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of our own on a free port, persisting to an append-only file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (on the same port and files as before) and wait until it answers."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--protected-mode", "no"],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_until(self.answers, 10, "redis-server to answer")

    def answers(self) -> bool:
        """Whether the server accepts connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: it writes its files and exits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway Redis for one test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def service_settings(pg_settings: Settings, redis_server: RedisServer) -> Settings:
    """Service mode: the session's PostgreSQL, the test's Redis, fast dead-worker detection."""
    return pg_settings.replace(redis_url=redis_server.url, dead_worker_after=4, job_retries=2,
                               batch_files=4)


def settings_env(settings: Settings, **changes: Any) -> dict[str, str]:
    """An environment that gives a child process exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    for field in dataclasses.fields(Settings):
        env[f"HASHSVC_{field.name.upper()}"] = str(changes.get(field.name,
                                                               getattr(settings, field.name)))
    return env


def session_pids(sid: int) -> list[int]:
    """Processes of a session: a worker, its forked job and its scheduler."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


class WorkerPool:
    """``hashsvc worker`` processes, each in its own session so it can be killed whole."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def start(self, count: int) -> None:
        """Start ``count`` more workers, each with its own data folder."""
        for _ in range(count):
            i = len(self.procs)
            name = f"w{i}-{uuid.uuid4().hex[:6]}"
            env = settings_env(self.settings, data_dir=str(self.folder / f"data-{name}"))
            log = open(self.folder / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen(
                [str(HASHSVC), "worker", "--name", name], env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
            self.names.append(name)

    def kill(self, i: int) -> None:
        """SIGKILL worker ``i`` and every process it started, as a lost machine would."""
        proc = self.procs[i]
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def stop(self) -> None:
        """Kill every worker left."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is None:
                self.kill(i)

    def logs(self) -> str:
        """The tails of the workers' logs, for failure messages."""
        return "\n".join(f"--- {name}\n" + (self.folder / f"{name}.log").read_text(
            errors="replace")[-3000:] for name in self.names)


@pytest.fixture
def workers(service_settings: Settings, tmp_path: Path) -> Iterator[WorkerPool]:
    """A pool of workers for one test (none started yet)."""
    pool = WorkerPool(service_settings, tmp_path)
    yield pool
    pool.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               diagnose: Callable[[], str] = lambda: "") -> Any:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{diagnose()}")


def wait_final(store: Store, scan_id: str, pool: WorkerPool | None, timeout: float = 90
               ) -> dict[str, Any]:
    """Progress of the scan once it reaches a final state."""
    def final() -> dict[str, Any] | None:
        status = scan_progress(store, scan_id)
        return status if status["state"] in FINAL_STATES else None

    return wait_until(final, timeout, f"scan {scan_id} to end",
                      lambda: f"{scan_progress(store, scan_id)}\n{pool.logs() if pool else ''}")


# -- dumps and reports -----------------------------------------------------------------------

def grainy_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A camera-like JPEG: a smooth random picture with sensor grain (slow enough to decode)."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(noise_image(seed, size), dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * 6
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "JPEG", quality=90)


@pytest.fixture(scope="session")
def photo_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """144 camera-sized photos (hard links of four files, so they cost no disk), half of them
    copies of registered photographs, about 30 ms each to hash."""
    root = tmp_path_factory.mktemp("photo-dump") / "dump"
    originals = tmp_path_factory.mktemp("originals")
    sources = [grainy_jpeg(1, (3000, 2250)), grainy_jpeg(2, (3000, 2250)),
               encode(photo("astronaut").resize((2400, 2400)), "JPEG", quality=90),
               encode(photo("coffee").resize((3000, 2000)), "JPEG", quality=90)]
    for i, data in enumerate(sources):
        (originals / f"{i}.jpg").write_bytes(data)
    for i in range(144):
        folder = root / f"DCIM/{100 + i // 48}APPLE"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(originals / f"{i % 4}.jpg", folder / f"IMG_{i:04d}.JPG")
    return root


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What two scans of the same source must agree on: counts, matches, errors, skips."""
    keys = ("state", "files_scanned", "images_hashed", "containers", "other_files",
            "matched_files", "skipped")
    out = {k: report[k] for k in keys}
    out["matches"] = sorted((m["path"], m["case"], m["algorithm"], m["distance"], m["variant"])
                            for m in report["matches"])
    out["errors"] = sorted((e["path"], e["stage"], e["message"]) for e in report["errors"])
    return out


def start_service_scan(store: Store, settings: Settings, source: Path) -> str:
    """Record and enqueue a scan in service mode."""
    scan_id, thread = jobs.submit_scan(store, settings, str(source))
    assert thread is None
    return scan_id


# -- tests -----------------------------------------------------------------------------------

def test_distributed_scan_equals_embedded(pg_store: Store, service_settings: Settings,
                                          workers: WorkerPool, tmp_path: Path) -> None:
    register(pg_store, "CASE-1", "astronaut", "coffee", "chelsea", "rocket")
    dump = tmp_path / "dump"
    build_hostile_dump(dump)
    workers.start(2)
    scan_id = start_service_scan(pg_store, service_settings, dump)
    embedded = run_scan(pg_store, service_settings, str(dump))
    status = wait_final(pg_store, scan_id, workers)

    expected = summary(build_report(pg_store, embedded))
    assert expected["matched_files"] >= 11 and expected["errors"]
    assert summary(build_report(pg_store, scan_id)) == expected
    assert status["state"] == "done" and status["error"] is None
    assert status["batches_total"] == status["batches_done"] >= 5
    assert status["files_enumerated"] == 22  # top-level regular files; archives are one each
    assert status["files_done"] == expected["files_scanned"]
    assert status["candidates"] == expected["matched_files"]


def test_embedded_mode_runs_jobs_in_process(store: Store, settings: Settings,
                                            tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea", "rocket")
    dump = tmp_path / "dump"
    build_hostile_dump(dump)
    embedded = run_scan(store, settings, str(dump))
    inline_settings = settings.replace(batch_files=3, redis_url="")
    scan_id, thread = jobs.submit_scan(store, inline_settings, str(dump))
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert summary(build_report(store, scan_id)) == summary(build_report(store, embedded))
    status = scan_progress(store, scan_id)
    assert status["state"] == "done" and status["batches_done"] == status["batches_total"] == 8


def test_a_repeated_batch_changes_nothing(store: Store, settings: Settings,
                                          tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea", "rocket")
    dump = tmp_path / "dump"
    build_hostile_dump(dump)
    inline_settings = settings.replace(batch_files=4)
    scan_id, thread = jobs.submit_scan(store, inline_settings, str(dump))
    assert thread is not None
    thread.join(timeout=120)
    before = build_report(store, scan_id)
    ctx = jobs.JobContext.open(inline_settings)
    try:
        # A batch delivered again after it finished does nothing ...
        assert jobs.run_batch(ctx, scan_id, 1) == "done"
        # ... and one whose worker died after writing its results writes nothing new.
        with store.sessions.begin() as session:
            session.execute(update(ScanBatch).where(ScanBatch.scan_id == scan_id)
                            .values(state="running"))
        for batch_no in batch_states(store, scan_id):
            assert jobs.run_batch(ctx, scan_id, batch_no) == "done"
    finally:
        ctx.close()
    after = build_report(store, scan_id)
    assert summary(after) == summary(before)
    assert scan_progress(store, scan_id)["files_done"] == before["files_scanned"]


def test_cancel_stops_a_distributed_scan(pg_store: Store, service_settings: Settings,
                                         workers: WorkerPool, photo_dump: Path) -> None:
    settings = service_settings.replace(batch_files=12)
    workers.settings = settings
    workers.start(1)
    scan_id = start_service_scan(pg_store, settings, photo_dump)
    wait_until(lambda: scan_progress(pg_store, scan_id)["batches_done"] >= 1, 60,
               "a first batch", workers.logs)
    jobs.cancel_scan(settings, scan_id)
    status = wait_final(pg_store, scan_id, workers, timeout=30)
    assert status["state"] == "cancelled"
    assert status["batches_total"] == 12
    assert status["files_done"] < 144
    states = batch_states(pg_store, scan_id)
    assert "cancelled" in states.values() and set(states.values()) <= {"done", "cancelled"}


def test_cancel_stops_an_embedded_scan(store: Store, settings: Settings,
                                       photo_dump: Path) -> None:
    inline_settings = settings.replace(batch_files=12, workers=1)
    scan_id, thread = jobs.submit_scan(store, inline_settings, str(photo_dump))
    assert thread is not None
    wait_until(lambda: scan_progress(store, scan_id)["files_done"] >= 1, 60, "a first file")
    jobs.cancel_scan(inline_settings, scan_id)
    thread.join(timeout=60)
    status = scan_progress(store, scan_id)
    assert status["state"] == "cancelled" and status["files_done"] < 144


def test_a_scan_cancelled_before_it_starts_ends_cancelled(store: Store, settings: Settings,
                                                           tmp_path: Path) -> None:
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "a.jpg").write_bytes(encode(photo("coffee"), "JPEG"))
    scan_id = store.create_scan(str(tmp_path / "dump"), None, {})
    jobs.cancel_scan(settings, scan_id)
    thread = jobs.start_scan(settings, scan_id)
    assert thread is not None
    thread.join(timeout=60)
    status = scan_progress(store, scan_id)
    assert status["state"] == "cancelled" and status["files_done"] == 0


def test_an_empty_source_is_done(store: Store, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    scan_id, thread = jobs.submit_scan(store, settings, str(tmp_path / "empty"))
    assert thread is not None
    thread.join(timeout=60)
    status = scan_progress(store, scan_id)
    assert status["state"] == "done" and status["batches_total"] == 0


def test_a_missing_source_fails_the_scan(pg_store: Store, service_settings: Settings,
                                         workers: WorkerPool, tmp_path: Path) -> None:
    workers.start(1)
    scan_id = start_service_scan(pg_store, service_settings, tmp_path / "no-such-dump")
    status = wait_final(pg_store, scan_id, workers, timeout=30)
    assert status["state"] == "failed"
    assert "not found" in status["error"]


def test_entries_keep_undecodable_names(tmp_path: Path) -> None:
    name = b"\xff\xfename.jpg".decode("utf-8", "surrogateescape")
    encoded = encode_relpath(f"DCIM/{name}")
    assert isinstance(encoded, dict)
    assert decode_relpath(encoded) == f"DCIM/{name}"
    assert encode_relpath("DCIM/ok.jpg") == "DCIM/ok.jpg"


def test_scan_status_command(store: Store, settings: Settings, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hashsvc.cli import main

    (tmp_path / "dump").mkdir()
    for name in ("coffee", "camera"):
        (tmp_path / "dump" / f"{name}.jpg").write_bytes(encode(photo(name), "JPEG"))
    scan_id, thread = jobs.submit_scan(store, settings, str(tmp_path / "dump"))
    assert thread is not None
    thread.join(timeout=60)
    runner = CliRunner()
    args = ["--data-dir", settings.data_dir, "scan-status", scan_id]
    for extra in ([], ["--follow", "--interval", "0.1"]):
        res = runner.invoke(main, args + extra, env={"HASHSVC_DATABASE_URL": ""})
        assert res.exit_code == 0, res.output
        status = json.loads(res.stdout)
        assert status["state"] == "done" and status["files_done"] == 2
        assert status["images_hashed"] == 2 and status["batches_done"] == 1
    res = runner.invoke(main, ["--data-dir", settings.data_dir, "scan-status", "nope"])
    assert res.exit_code != 0 and "no scan nope" in res.output
