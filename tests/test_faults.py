"""Faults in the middle of a scan: a worker SIGKILLed mid-batch, a Redis restart, a PostgreSQL
restart (distributed scans), a full disk under the data folder (embedded scans).

Each scan must end with exactly the counts and matches of an undisturbed scan of the same
source: lost batches are retried, repeated writes change nothing, and a scan stopped by a full
disk fails cleanly and is resumed to the same result.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from rq import Worker
from rq.serializers import JSONSerializer

from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings, load_settings
from hashsvc.store import Store
from hashsvc.store.progress import batch_states, get_batch, scan_progress
from workers import jobs
from workers.jobs import redis_connection

from test_jobs import (HASHSVC, RedisServer, WorkerPool, free_port, photo_dump,  # noqa: F401
                       redis_server, service_settings, settings_env, start_service_scan, summary,
                       wait_final, wait_until, workers)
from test_cli import build_hostile_dump
from test_pipeline import register


class BatchWatch:
    """Which batch a named worker is running, and since when (as seen from here)."""

    def __init__(self, settings: Settings, worker_name: str) -> None:
        self.connection = redis_connection(settings)
        self.key = f"rq:worker:{worker_name}"
        self.first_seen: dict[str, float] = {}

    def running_for(self, seconds: float) -> int | None:
        """The batch number the worker has been running for at least ``seconds``, if any."""
        worker = Worker.find_by_key(self.key, connection=self.connection,
                                    serializer=JSONSerializer)
        job = worker.get_current_job() if worker is not None else None
        if job is None or not (job.func_name or "").endswith("scan_batch"):
            return None
        seen = self.first_seen.setdefault(job.id, time.monotonic())
        return int(job.args[1]) if time.monotonic() - seen >= seconds else None


def test_sigkill_of_a_worker_mid_batch(pg_store: Store, service_settings: Settings,
                                       workers: WorkerPool, photo_dump: Path) -> None:
    register(pg_store, "CASE-1", "astronaut", "coffee")
    settings = service_settings.replace(batch_files=24)  # six batches of about a second
    workers.settings = settings
    workers.start(2)
    scan_id = start_service_scan(pg_store, settings, photo_dump)

    watch = BatchWatch(settings, workers.names[0])
    batch_no = wait_until(lambda: watch.running_for(0.3), 60, "worker 0 to be mid-batch",
                          workers.logs)
    workers.kill(0)
    assert batch_states(pg_store, scan_id)[batch_no] == "running"  # killed before it finished

    status = wait_final(pg_store, scan_id, workers, timeout=90)
    assert status["state"] == "done", status
    assert status["batches_done"] == status["batches_total"] == 6
    assert get_batch(pg_store, scan_id, batch_no).attempts == 2  # retried once, by worker 1
    reference = run_scan(pg_store, settings, str(photo_dump))
    expected = summary(build_report(pg_store, reference))
    assert expected["files_scanned"] == 144 and expected["matched_files"] == 72
    assert summary(build_report(pg_store, scan_id)) == expected


def test_redis_restart_mid_scan(pg_store: Store, service_settings: Settings,
                                workers: WorkerPool, redis_server: RedisServer,
                                photo_dump: Path) -> None:
    register(pg_store, "CASE-1", "astronaut", "coffee")
    settings = service_settings.replace(batch_files=12)  # twelve batches
    workers.settings = settings
    workers.start(2)
    scan_id = start_service_scan(pg_store, settings, photo_dump)
    wait_until(lambda: scan_progress(pg_store, scan_id)["batches_done"] >= 2, 60,
               "two batches", workers.logs)

    redis_server.stop(signal.SIGTERM)  # Redis writes its append-only file and exits
    at_restart = scan_progress(pg_store, scan_id)
    time.sleep(2)
    redis_server.start()
    assert at_restart["batches_done"] < 12  # queued jobs had to survive the restart

    status = wait_final(pg_store, scan_id, workers, timeout=90)
    assert status["state"] == "done", status
    assert status["batches_done"] == status["batches_total"] == 12
    reference = run_scan(pg_store, settings, str(photo_dump))
    assert summary(build_report(pg_store, scan_id)) == summary(build_report(pg_store,
                                                                            reference))


def test_a_batch_failing_every_retry_closes_the_scan_as_failed(
        pg_store: Store, service_settings: Settings, workers: WorkerPool,
        tmp_path: Path) -> None:
    settings = service_settings.replace(job_retries=1)
    workers.settings = settings
    dump = tmp_path / "dump"
    build_hostile_dump(dump)
    scan_id = start_service_scan(pg_store, settings, dump)
    # Enumerate and scan batch 0 here, then take the evidence away before any worker starts:
    # every other batch fails twice (the source is gone) and the scan keeps batch 0's results.
    ctx = jobs.JobContext.open(settings)
    jobs.set_context(ctx)
    try:
        jobs.job_queue(settings).remove(jobs.job_id(scan_id, "enumerate"))
        total = jobs.enumerate_scan(scan_id)
        assert jobs.run_batch(ctx, scan_id, 0) == "done"
    finally:
        jobs.set_context(None)
        ctx.close()
    files_of_batch_0 = scan_progress(pg_store, scan_id)["files_done"]
    shutil.rmtree(dump)
    workers.start(1)

    status = wait_final(pg_store, scan_id, workers, timeout=60)
    assert status["state"] == "failed"
    assert status["batches_done"] == 1 and status["batches_failed"] == total - 1
    assert status["files_done"] == files_of_batch_0 > 0
    assert "batch 1 failed: SourceError: evidence source not found" in status["error"]
    assert f"{total - 1} of {total} batches did not complete" in status["error"]
    assert {get_batch(pg_store, scan_id, n).attempts for n in range(1, total)} == {2}


# -- a PostgreSQL restart ------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl (Debian keeps them out of PATH), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


class PostgresCluster:
    """A PostgreSQL cluster of our own (never the machine's shared one) on a free port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        # initdb refuses to run as root: as root, the cluster belongs to the postgres user, in
        # a folder it can reach (pytest's own folders are private to root).
        self.folder = Path(tempfile.mkdtemp(prefix="hashsvc-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        """Create the cluster: trust authentication, no fsync (a test, not a crash test)."""
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.folder / "server.log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" ends every session (as a restart or failover does)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        """A connection URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        """Stop the server if it runs and delete its files."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster with a database "hashsvc", for one test."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("initdb and pg_ctl are not installed: no private PostgreSQL cluster")
    cluster = PostgresCluster(bindir)
    try:
        cluster.init()
        cluster.start()
        import psycopg

        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE hashsvc")
        yield cluster
    finally:
        cluster.remove()


def test_postgresql_restart_mid_scan(private_pg: PostgresCluster, redis_server: RedisServer,
                                     photo_dump: Path, tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), workers=2,
                             database_url=private_pg.url("hashsvc"), redis_url=redis_server.url,
                             dead_worker_after=4, job_retries=2, batch_files=12)
    store = Store.open(settings)
    pool = WorkerPool(settings, tmp_path)
    try:
        register(store, "CASE-1", "astronaut", "coffee")
        pool.start(2)
        scan_id = start_service_scan(store, settings, photo_dump)
        wait_until(lambda: scan_progress(store, scan_id)["batches_done"] >= 2, 60,
                   "two batches", pool.logs)

        private_pg.stop("fast")  # every connection is cut, as a restart or a failover does
        time.sleep(2)  # down long enough for every worker to meet the outage
        private_pg.start()
        at_restart = scan_progress(store, scan_id)
        assert at_restart["batches_done"] < 12  # there was work left to do after the restart

        status = wait_final(store, scan_id, pool, timeout=90)
        assert status["state"] == "done", status
        assert status["batches_done"] == status["batches_total"] == 12
        assert status["batches_failed"] == 0 and status["error"] is None
        # The outage was met, and ridden out inside the jobs: none failed, so none was retried.
        logs = "".join((tmp_path / f"{name}.log").read_text(errors="replace")
                       for name in pool.names)
        assert "database unreachable" in logs
        assert {get_batch(store, scan_id, n).attempts for n in range(12)} == {1}
        reference = run_scan(store, settings, str(photo_dump))
        expected = summary(build_report(store, reference))
        assert expected["files_scanned"] == 144 and expected["matched_files"] == 72
        assert summary(build_report(store, scan_id)) == expected
    finally:
        pool.stop()
        store.close()


# -- a full disk under the embedded data folder ----------------------------------------------

def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for block in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
    return filler


def test_full_disk_under_the_data_folder(photo_dump: Path, tmp_path: Path) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN): {exc}")
    try:
        # Findings written every 0.2 s: the disk fills up after the first write and well
        # before the last, however fast the machine scans the 144 photos.
        settings = load_settings(env={}, data_dir=str(mount / "hashsvc"), workers=2,
                                 flush_seconds=0.2)
        store = Store.open(settings)
        register(store, "CASE-1", "astronaut", "coffee")
        store.close()
        env = settings_env(settings)
        database = settings.data_path / "hashsvc.sqlite3"

        def scan(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(HASHSVC), "scan", str(photo_dump), "--quiet",
                                   "--report", str(tmp_path / "report.json"), *extra],
                                  env=env, capture_output=True, text=True, timeout=180)

        def files_recorded() -> int:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
                try:
                    return int(conn.execute("SELECT count(*) FROM scan_files").fetchone()[0])
                except sqlite3.OperationalError:  # busy: look again
                    return 0

        # The disk fills up once the scan has recorded its first results, and stays full.
        filled: list[Path] = []

        def fill_when_started() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not files_recorded():
                time.sleep(0.05)
            filled.append(fill(mount))

        watcher = threading.Thread(target=fill_when_started, daemon=True)
        watcher.start()
        failed = scan()
        watcher.join(timeout=130)
        assert filled, "the scan ended before the disk could be filled"
        assert failed.returncode == 1, failed.stderr
        found = re.search(r"scan (\S+) stopped: database or disk is full \(no space left in "
                          r"(\S+)\)\..* --resume (\S+)", failed.stderr.replace("\n", " "))
        assert found, failed.stderr
        scan_id = found.group(1)
        assert found.group(2) == str(settings.data_path) and found.group(3) == scan_id
        assert "Traceback" not in failed.stderr
        print("\n" + "\n".join(line for line in failed.stderr.splitlines()
                               if line.startswith(("Error:", "could not"))))
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            state, = conn.execute("SELECT state FROM scans WHERE id = ?", (scan_id,)).fetchone()
            partial = files_recorded()
        assert state == "failed" and 0 < partial < 144

        filled[0].unlink()  # space is freed: the scan is resumed under its id
        resumed = scan("--resume", scan_id)
        assert resumed.returncode == 0, resumed.stderr
        undisturbed = scan()
        assert undisturbed.returncode == 0, undisturbed.stderr

        reference_id, = set(_scan_ids(database)) - {scan_id}
        store = Store.open(settings)
        try:
            expected = summary(build_report(store, reference_id))
            assert expected["files_scanned"] == 144 and expected["matched_files"] == 72
            assert summary(build_report(store, scan_id)) == expected
        finally:
            store.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _scan_ids(database: Path) -> list[str]:
    """Ids of the scans in an embedded database."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM scans")]
