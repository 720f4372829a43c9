"""The worker process: one RQ worker on the service's queue (``hashsvc worker``).

Each job runs in a forked child (RQ's default), so a decoder that crashes or leaks costs one
job, which RQ retries. The parent keeps the bank matcher warm and refreshes it before each fork,
so every job starts with current indexes without loading them. While a job runs the parent
beats every ``dead_worker_after / 4`` seconds; a worker that stops beating (SIGKILL, a lost
machine) leaves its job in RQ's StartedJobRegistry past its heartbeat deadline, and another
worker's registry maintenance (every ``dead_worker_after / 2`` seconds) retries it.
"""

from __future__ import annotations

import os
import sys

import cv2
from rq import Worker
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from hashsvc.settings import Settings
from workers.jobs import JobContext, context, redis_connection, set_context


class HashsvcWorker(Worker):
    """An RQ worker that warms the bank matcher before each job and spots dead peers quickly."""

    #: Seconds a job may go without a heartbeat before it counts as abandoned.
    grace = 60

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The deadline of the next heartbeat, with ``grace`` in place of RQ's fixed minute."""
        interval = float(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(interval) + self.grace

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Refresh the shared matcher, then fork and run the job as RQ does."""
        try:
            context().matcher.refresh()
        except Exception:  # noqa: BLE001 - the job itself meets and reports a database outage
            self.log.exception("could not refresh the bank before job %s", job.id)
        super().execute_job(job, queue)


def make_worker(settings: Settings, name: str | None = None) -> HashsvcWorker:
    """A worker on the service's queue with the JSON serializer and fast dead-peer detection."""
    heartbeat = max(1, settings.dead_worker_after // 4)
    maintenance = max(1, settings.dead_worker_after // 2)
    worker = HashsvcWorker(
        [settings.queue_name], name=name, connection=redis_connection(settings),
        serializer=JSONSerializer, job_monitoring_interval=heartbeat,
        maintenance_interval=maintenance,
        # An idle worker waits for jobs for worker_ttl - 15 s between maintenance runs; this
        # makes that wait the maintenance interval, so lost jobs are found while idle too.
        worker_ttl=maintenance + 15)
    worker.grace = max(1, settings.dead_worker_after - heartbeat)
    return worker


def run_worker(settings: Settings, burst: bool = False, name: str | None = None) -> bool:
    """Work on the queue until stopped (or until it is empty, with ``burst``)."""
    if not settings.redis_url:
        raise SystemExit("hashsvc worker needs HASHSVC_REDIS_URL (embedded mode has no workers)")
    # One worker is one core (scale by starting workers): OpenCV's own thread pool, used by
    # the local-feature stage, would contend with the other workers for the same cores.
    cv2.setNumThreads(1)
    ctx = JobContext.open(settings)
    ctx.warm_up()
    # SQLAlchemy's rule for os.fork(): the child drops the inherited pool without closing it.
    os.register_at_fork(after_in_child=ctx.after_fork_in_child)
    set_context(ctx)
    worker = make_worker(settings, name)
    # The scheduler delays the later retries (RETRY_DELAYS); every worker offers to run it and
    # one holds its lock.
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")


def main() -> None:
    """``python -m workers.worker``: the same command as ``hashsvc worker``."""
    from hashsvc.cli import main as cli

    cli(["worker", *sys.argv[1:]], prog_name="hashsvc")


if __name__ == "__main__":
    main()
