"""Faults in the middle of a distributed scan: a worker SIGKILLed mid-batch, a Redis restart.

Each scan must end with exactly the counts and matches of an undisturbed (embedded) scan of the
same source: lost batches are retried and repeated writes change nothing.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from rq import Worker
from rq.serializers import JSONSerializer

from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.store import Store
from hashsvc.store.progress import batch_states, get_batch, scan_progress
from workers import jobs
from workers.jobs import redis_connection

from test_jobs import (RedisServer, WorkerPool, photo_dump, redis_server,  # noqa: F401
                       service_settings, start_service_scan, summary, wait_final, wait_until,
                       workers)
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
