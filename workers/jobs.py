"""The jobs of a distributed scan: enumerate the source, scan batches of files, close the scan.

``enumerate_scan`` lists the source's top-level files cheaply (names and sizes, nothing read),
records them as batches and enqueues one ``scan_batch`` job per batch, then a ``close_scan`` job
that waits for every batch. Jobs take plain ids (RQ's JSON serializer, never pickle), build what
they need from settings, and call the pipeline that embedded mode calls; results are written
idempotently, so a batch run twice (a retry, a lost worker) changes nothing the second time.
Without Redis (``redis_url`` empty) the same functions run in a background thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry
from rq import Queue
from rq.job import Callback, Dependency, Job, Retry
from rq.serializers import JSONSerializer

from hashsvc.errors import SourceError, loggable
from hashsvc.matching import BankMatcher
from hashsvc.isolation import start_method
from hashsvc.pipeline import (Hasher, InlineHasher, Recorder, Task, make_hasher, process_task,
                              scan_items)
from hashsvc.settings import Settings, load_settings
from hashsvc.sources import open_source
from hashsvc.sources.base import EvidenceSeen, Listing, Problem
from hashsvc.store import Store
from hashsvc.store import progress
from hashsvc.store.progress import BATCH_FINAL_STATES, FINAL_STATES

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Delays before the first, second and later retries of a job, in seconds. The first is
#: immediate because the usual cause, a lost worker, needs no wait (and an immediate retry
#: does not depend on RQ's scheduler, whose lock a dead worker may hold for a minute).
RETRY_DELAYS = (0, 15, 60)

#: How often a running job looks at the scan's cancel flag, in seconds.
CANCEL_CHECK_SECONDS = 1.0


#: A 1x1 grey PNG, decoded once by a worker before its first job.
TINY_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08"
            b"\x00\x00\x00\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01"
            b"H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")


# -- process-wide state ----------------------------------------------------------------------

@dataclass
class JobContext:
    """What a worker process keeps between jobs: settings, a store and a warm bank matcher."""

    settings: Settings
    store: Store
    matcher: BankMatcher

    @classmethod
    def open(cls, settings: Settings, upgrade: bool = False) -> "JobContext":
        """Open the store and load the bank's indexes (saved ones, brought up to date)."""
        store = Store.open(settings, upgrade=upgrade)
        return cls(settings, store, BankMatcher(store, settings))

    def warm_up(self) -> None:
        """Do the lazy set-up of decoders once here, rather than in every forked job."""
        process_task(Task("warm-up", data=TINY_PNG, name="warm-up.png",
                          max_pixels=self.settings.max_image_pixels))

    def after_fork_in_child(self) -> None:
        """Leave the parent's pooled database connections to it; the child opens its own."""
        self.store.engine.dispose(close=False)

    def close(self) -> None:
        """Release database connections."""
        self.store.close()


_context: JobContext | None = None
_context_lock = threading.Lock()


def set_context(ctx: JobContext | None) -> None:
    """Use ``ctx`` for the jobs of this process (the worker sets it before working)."""
    global _context
    with _context_lock:
        _context = ctx


def context() -> JobContext:
    """This process's job context, opened from the environment's settings on first use."""
    global _context
    with _context_lock:
        if _context is None:
            _context = JobContext.open(load_settings())
        return _context


# -- Redis and RQ ----------------------------------------------------------------------------

def redis_connection(settings: Settings, retries: int = 10) -> Redis:
    """A Redis client that rides out a restart of the server (10 retries: about 30 s)."""
    retry = RedisRetry(ExponentialBackoff(cap=4.0, base=0.25), retries)
    return Redis.from_url(settings.redis_url, retry=retry, health_check_interval=30)


def job_queue(settings: Settings, connection: Redis | None = None) -> Queue:
    """The service's RQ queue, with the JSON serializer."""
    return Queue(settings.queue_name, connection=connection or redis_connection(settings),
                 serializer=JSONSerializer)


def job_id(scan_id: str, step: str) -> str:
    """The RQ job id of one step of a scan; fixed, so enqueueing a step twice replaces it."""
    return f"scan-{scan_id}-{step}"


def _retry(settings: Settings) -> Retry | None:
    """RQ's retry policy for scan jobs (None when retries are off)."""
    if settings.job_retries < 1:
        return None
    # RQ picks interval[len(intervals) - retries_left], so one delay per retry, in order.
    delays = [RETRY_DELAYS[min(i, len(RETRY_DELAYS) - 1)] for i in range(settings.job_retries)]
    return Retry(max=settings.job_retries, interval=delays, enqueue_at_front=True)


def _enqueue(queue: Queue, settings: Settings, func: str, args: tuple[Any, ...], jid: str,
             depends_on: Dependency | None = None) -> Job:
    """Enqueue one scan job with the service's timeout, retries and failure callback."""
    return queue.enqueue_call(
        func, args=args, job_id=jid, timeout=settings.job_timeout, retry=_retry(settings),
        depends_on=depends_on, on_failure=Callback("workers.jobs.on_job_failure"),
        description=f"{func.rsplit('.', 1)[-1]}{args!r}")


# -- entry points ----------------------------------------------------------------------------

def start_scan(settings: Settings, scan_id: str) -> threading.Thread | None:
    """Start a recorded scan: on RQ in service mode, else in a background thread (returned)."""
    if settings.redis_url:
        # Few retries: a caller (an API request) should hear of a Redis outage in about a
        # second, not wait out a restart as workers do.
        queue = job_queue(settings, redis_connection(settings, retries=2))
        _enqueue(queue, settings, "workers.jobs.enumerate_scan", (scan_id,),
                 job_id(scan_id, "enumerate"))
        return None
    thread = threading.Thread(target=run_inline, args=(settings, scan_id),
                              name=f"scan-{scan_id}", daemon=True)
    thread.start()
    return thread


def submit_scan(store: Store, settings: Settings, source: str, label: str | None = None
                ) -> tuple[str, threading.Thread | None]:
    """Record a scan of ``source`` with the current matching settings and start it."""
    scan_id = store.create_scan(source, label, {"matching": settings.matching_summary()})
    return scan_id, start_scan(settings, scan_id)


def cancel_scan(settings: Settings, scan_id: str) -> None:
    """Ask a scan to stop: running batches stop between files, queued ones do nothing."""
    store = Store.open(settings, upgrade=False)
    try:
        progress.request_cancel(store, scan_id)
    finally:
        store.close()


def scrubbed(job: Callable[..., Any]) -> Callable[..., Any]:
    """An RQ job whose failure carries no data: a database error in it is raised again as
    :func:`~hashsvc.errors.loggable` has it (the statement, not PostgreSQL's DETAIL line),
    since RQ keeps a failed job's traceback in Redis and the scan's error list shows it."""

    @functools.wraps(job)
    def run(*args: Any) -> Any:
        try:
            return job(*args)
        except Exception as exc:
            clean = loggable(exc)
            if clean is exc:
                raise
            raise clean from None

    return run


@scrubbed
def enumerate_scan(scan_id: str) -> int:
    """RQ job: list the source, record and enqueue its batches and the closing job."""
    ctx = context()
    queue = job_queue(ctx.settings)

    def enqueue_batch(batch_no: int) -> None:
        _enqueue(queue, ctx.settings, "workers.jobs.scan_batch", (scan_id, batch_no),
                 job_id(scan_id, f"batch-{batch_no}"))

    numbers = enumerate_batches(ctx, scan_id, enqueue_batch)
    if numbers is None:
        return 0
    if not numbers:
        close(ctx.store, scan_id)
        return 0
    # allow_failure: a batch that failed every retry must still let the scan close (as failed,
    # with the results of every other batch kept).
    deps = Dependency([job_id(scan_id, f"batch-{n}") for n in numbers], allow_failure=True,
                      enqueue_at_front=True)
    _enqueue(queue, ctx.settings, "workers.jobs.close_scan", (scan_id,),
             job_id(scan_id, "close"), depends_on=deps)
    return len(numbers)


@scrubbed
def scan_batch(scan_id: str, batch_no: int) -> str:
    """RQ job: scan one batch of top-level files in this process; returns the batch's state."""
    return run_batch(context(), scan_id, batch_no)


@scrubbed
def close_scan(scan_id: str) -> str:
    """RQ job: give the scan its final state once every batch has finished or failed."""
    return close(context().store, scan_id)


def on_job_failure(job: Job, connection: Redis, exc_type: Any, exc: Any, tb: Any) -> None:
    """RQ failure callback: on a job's last failure, record why and mark what it owned."""
    if job.retries_left:
        return  # RQ retries it
    scan_id = str(job.args[0])
    step = (job.func_name or "").rsplit(".", 1)[-1]
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else "lost"
    store = context().store
    if step == "scan_batch":
        batch_no = int(job.args[1])
        progress.finish_batch(store, scan_id, batch_no, "failed")
        progress.add_scan_error(store, scan_id, f"batch {batch_no} failed: {reason}")
    else:
        # Without its enumeration or closing job nothing else would end the scan.
        progress.add_scan_error(store, scan_id, f"{step} failed: {reason}")
        store.set_scan_state(scan_id, "failed")


# -- the steps, shared by RQ jobs and the in-process runner ----------------------------------

def enumerate_batches(ctx: JobContext, scan_id: str, submit: Callable[[int], None]
                      ) -> list[int] | None:
    """Record the source's batches, handing each unfinished one to ``submit`` as it is formed.

    Returns the batch numbers, or None when the scan ended here (already final, cancelled
    before it began, or a source that does not exist).
    """
    store, settings = ctx.store, ctx.settings
    scan = store.get_scan(scan_id)
    if scan.state in FINAL_STATES:
        return None
    if scan.cancel_requested:
        close(store, scan_id)
        return None
    store.set_scan_state(scan_id, "running", bank_cursor=store.bank_cursor())
    recorder = Recorder(store, scan_id, ctx.matcher, flush_seconds=ctx.settings.flush_seconds)
    watch = CancelWatch(store, scan_id)
    done = {n for n, s in progress.batch_states(store, scan_id).items()
            if s in BATCH_FINAL_STATES}
    numbers: list[int] = []
    files = 0
    try:
        source = open_source(scan.source, settings.limits)
        try:
            for batch_no, entries in enumerate(batches(watch.watch(source.units()), recorder,
                                                       settings)):
                progress.add_batch(store, scan_id, batch_no, entries)
                files += len(entries)
                progress.set_enumerated(store, scan_id, files, None)
                numbers.append(batch_no)
                if batch_no not in done:  # a repeated enumeration skips finished batches
                    submit(batch_no)
        finally:
            source.close()
    except SourceError as exc:
        recorder.flush()
        progress.add_scan_error(store, scan_id, str(exc))
        store.set_scan_state(scan_id, "failed")
        return None
    recorder.flush()
    # A listing cut short by a cancel leaves the total unknown, so the scan cannot pass as done.
    progress.set_enumerated(store, scan_id, files, None if watch.cancelled else len(numbers))
    return numbers


def run_batch(ctx: JobContext, scan_id: str, batch_no: int,
              hasher: Hasher | InlineHasher | None = None) -> str:
    """Scan one batch; stops early on cancel. Returns the batch's final state."""
    store, settings = ctx.store, ctx.settings
    claim = progress.claim_batch(store, scan_id, batch_no)
    if claim.state in BATCH_FINAL_STATES:
        return claim.state  # delivered twice: the first delivery did the work
    if claim.cancel_requested:
        progress.finish_batch(store, scan_id, batch_no, "cancelled")
        return "cancelled"
    if hasher is None:
        # Untrusted bytes are decoded in a child process under the decoding limits
        # (hashsvc.isolation), so a file that crashes or hangs a decoder costs that file, not
        # the batch. An RQ work-horse is single-threaded, so the child is forked from it warm.
        hasher = make_hasher(settings, workers=1, method=start_method())
    ctx.matcher.refresh()  # new registrations match, withdrawn ones stop matching
    watch = CancelWatch(store, scan_id, checked=True)
    source = open_source(claim.source, settings.limits)
    try:
        scan_items(watch.watch(source.walk_units(list(claim.entries))),
                   Recorder(store, scan_id, ctx.matcher, flush_seconds=settings.flush_seconds),
                   settings, hasher=hasher)
    finally:
        source.close()
    state = "cancelled" if watch.cancelled else "done"
    progress.finish_batch(store, scan_id, batch_no, state)
    return state


def close(store: Store, scan_id: str) -> str:
    """Give a scan its final state: done when the source was listed whole and every batch is
    done, else cancelled (when asked) or failed."""
    scan = store.get_scan(scan_id)
    if scan.state in FINAL_STATES:
        return scan.state
    states = progress.batch_states(store, scan_id)
    unfinished = sorted(n for n, s in states.items() if s != "done")
    if scan.batches_total is not None and not unfinished:
        state = "done"
    elif scan.cancel_requested:
        state = "cancelled"
    else:
        state = "failed"
        shown = ", ".join(str(n) for n in unfinished[:20])
        more = f" and {len(unfinished) - 20} more" if len(unfinished) > 20 else ""
        progress.add_scan_error(store, scan_id, f"{len(unfinished)} of {len(states)} batches "
                                                f"did not complete: {shown}{more}")
    store.set_scan_state(scan_id, state)
    return state


def run_inline(settings: Settings, scan_id: str) -> str:
    """Run a scan's jobs one after another in this process (embedded mode, no Redis)."""
    ctx = JobContext.open(settings, upgrade=True)
    try:
        numbers: list[int] = []
        if enumerate_batches(ctx, scan_id, numbers.append) is None:
            return ctx.store.get_scan(scan_id).state
        for batch_no in numbers:
            _run_batch_with_retries(ctx, scan_id, batch_no)
        return close(ctx.store, scan_id)
    except Exception as exc:
        log.exception("scan %s failed", scan_id)
        try:
            progress.add_scan_error(ctx.store, scan_id, f"{type(exc).__name__}: {exc}")
            ctx.store.set_scan_state(scan_id, "failed")
        except Exception:  # noqa: BLE001 - a full disk or a lost database: logged above
            log.exception("could not record scan %s as failed", scan_id)
        return "failed"
    finally:
        ctx.close()


def _run_batch_with_retries(ctx: JobContext, scan_id: str, batch_no: int) -> None:
    """Run a batch inline, retrying as RQ would; a batch that keeps failing is marked failed."""
    reason = ""
    for attempt in range(ctx.settings.job_retries + 1):
        try:
            # Embedded mode has no worker processes, so each batch hashes on every core.
            run_batch(ctx, scan_id, batch_no, make_hasher(ctx.settings))
            return
        except Exception as exc:
            log.warning("scan %s batch %d attempt %d failed: %s", scan_id, batch_no,
                        attempt + 1, exc)
            reason = f"{type(exc).__name__}: {exc}"
    progress.finish_batch(ctx.store, scan_id, batch_no, "failed")
    progress.add_scan_error(ctx.store, scan_id, f"batch {batch_no} failed: {reason}")


# -- enumeration and batches -----------------------------------------------------------------

class CancelWatch:
    """Passes items through until the scan's cancel flag is seen (looked at once a second)."""

    def __init__(self, store: Store, scan_id: str, checked: bool = False) -> None:
        self.store = store
        self.scan_id = scan_id
        self.cancelled = False
        # ``checked``: the caller has just looked, so the first look can wait a second.
        self._next_check = time.monotonic() + CANCEL_CHECK_SECONDS if checked else 0.0

    def watch(self, items: Iterable[T]) -> Iterator[T]:
        """The items, stopping early once a cancel is requested."""
        iterator = iter(items)
        try:
            for item in iterator:
                now = time.monotonic()
                if now >= self._next_check:
                    self._next_check = now + CANCEL_CHECK_SECONDS
                    if progress.cancel_requested(self.store, self.scan_id):
                        self.cancelled = True
                        return
                yield item
        finally:
            close_iter = getattr(iterator, "close", None)
            if close_iter is not None:
                close_iter()  # releases open files of a walk stopped part-way


def batches(listing: Listing, recorder: Recorder, settings: Settings) -> Iterator[list[Any]]:
    """Group listed units into batches of batch_files units or batch_bytes bytes at most.

    What the listing finds outside any unit (problems, the evidence item) is recorded on the
    way; a unit larger than batch_bytes is a batch of its own.
    """
    batch: list[Any] = []
    size = 0
    for item in listing:
        if isinstance(item, Problem):
            recorder.problem(item)
            continue
        if isinstance(item, EvidenceSeen):
            recorder.evidence(item)
            continue
        if batch and (len(batch) >= settings.batch_files
                      or size + item.size > settings.batch_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item.key)
        size += item.size
    if batch:
        yield batch
