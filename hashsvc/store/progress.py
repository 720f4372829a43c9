"""Bookkeeping of distributed scans in SQL: batch rows, cancellation, errors and progress.

Every write here may be repeated by a retried job: batch rows are inserted ignoring conflicts
and state changes are plain updates, so doing one twice changes nothing; each function rides
out a PostgreSQL restart (:func:`hashsvc.store.retry_on_disconnect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import func, select, update

from hashsvc.errors import NotFound
from hashsvc.store import Store, retry_on_disconnect
from hashsvc.store.models import Scan, ScanBatch, ScanFile, ScanMatch, ScanProblem, utcnow

#: States after which a scan changes no more.
FINAL_STATES = ("done", "failed", "cancelled")

#: States after which a batch changes no more.
BATCH_FINAL_STATES = ("done", "failed", "cancelled")


@retry_on_disconnect
def add_batch(store: Store, scan_id: str, batch_no: int, entries: Sequence[Any]) -> None:
    """Record a batch of top-level entries; recording it again keeps the first row."""
    with store.sessions.begin() as session:
        store._insert_ignore(session, ScanBatch, [{
            "scan_id": scan_id, "batch_no": batch_no, "state": "queued", "attempts": 0,
            "entries": list(entries)}])


@retry_on_disconnect
def set_enumerated(store: Store, scan_id: str, files: int, batches_total: int | None) -> None:
    """Record how many top-level files were found so far, and the batch count once known."""
    values: dict[str, Any] = {"files_enumerated": files}
    if batches_total is not None:
        values["batches_total"] = batches_total
    with store.sessions.begin() as session:
        session.execute(update(Scan).where(Scan.id == scan_id).values(**values))


@retry_on_disconnect
def get_batch(store: Store, scan_id: str, batch_no: int) -> ScanBatch:
    """The batch row, or :class:`NotFound`."""
    with store.sessions() as session:
        batch = session.execute(select(ScanBatch).where(
            ScanBatch.scan_id == scan_id, ScanBatch.batch_no == batch_no)).scalar_one_or_none()
    if batch is None:
        raise NotFound(f"no batch {batch_no} of scan {scan_id}")
    return batch


@dataclass(frozen=True)
class BatchClaim:
    """What a batch job needs to know before it starts, read in one query."""

    state: str
    attempt: int  # of this run, 1 for the first; 0 when the batch was not started
    entries: list[Any]
    source: str
    cancel_requested: bool


@retry_on_disconnect
def claim_batch(store: Store, scan_id: str, batch_no: int) -> BatchClaim:
    """Mark a batch running and count the attempt, unless it is final or its scan cancelled."""
    with store.sessions.begin() as session:
        row = session.execute(
            select(ScanBatch.state, ScanBatch.entries, Scan.source, Scan.cancel_requested)
            .join(Scan, Scan.id == ScanBatch.scan_id)
            .where(ScanBatch.scan_id == scan_id, ScanBatch.batch_no == batch_no)).first()
        if row is None:
            raise NotFound(f"no batch {batch_no} of scan {scan_id}")
        state, entries, source, cancel = row
        if state in BATCH_FINAL_STATES or cancel:
            return BatchClaim(state, 0, entries, source, bool(cancel))
        attempt = session.execute(
            update(ScanBatch)
            .where(ScanBatch.scan_id == scan_id, ScanBatch.batch_no == batch_no)
            .values(state="running", attempts=ScanBatch.attempts + 1)
            .returning(ScanBatch.attempts)).scalar_one()
    return BatchClaim("running", int(attempt), entries, source, False)


@retry_on_disconnect
def finish_batch(store: Store, scan_id: str, batch_no: int, state: str) -> None:
    """Move a batch to a final state (done, failed or cancelled)."""
    assert state in BATCH_FINAL_STATES, state
    with store.sessions.begin() as session:
        session.execute(update(ScanBatch).where(
            ScanBatch.scan_id == scan_id, ScanBatch.batch_no == batch_no)
            .values(state=state, finished_at=utcnow()))


@retry_on_disconnect
def batch_states(store: Store, scan_id: str) -> dict[int, str]:
    """The state of every batch of a scan, by batch number."""
    with store.sessions() as session:
        rows = session.execute(select(ScanBatch.batch_no, ScanBatch.state)
                               .where(ScanBatch.scan_id == scan_id)).all()
    return {int(no): state for no, state in rows}


@retry_on_disconnect
def request_cancel(store: Store, scan_id: str) -> None:
    """Ask the scan's jobs to stop; they look between files and stop early."""
    with store.sessions.begin() as session:
        found = session.execute(update(Scan).where(Scan.id == scan_id)
                                .values(cancel_requested=True).returning(Scan.id)).first()
    if found is None:
        raise NotFound(f"no scan {scan_id}")


@retry_on_disconnect
def cancel_requested(store: Store, scan_id: str) -> bool:
    """Whether someone asked the scan to stop."""
    with store.sessions() as session:
        return bool(session.execute(select(Scan.cancel_requested)
                                    .where(Scan.id == scan_id)).scalar())


@retry_on_disconnect
def add_scan_error(store: Store, scan_id: str, message: str) -> None:
    """Append a line to the scan's error text (one line per failed batch or job)."""
    line = message.strip().replace("\n", " ")[:2000]
    with store.sessions.begin() as session:
        # Appended in SQL so that two workers failing at once both keep their line.
        session.execute(update(Scan).where(Scan.id == scan_id).values(
            error=func.coalesce(Scan.error + "\n", "") + line))


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 text of a datetime (or None)."""
    return value.isoformat() if value is not None else None


@retry_on_disconnect
def scan_progress(store: Store, scan_id: str) -> dict[str, Any]:
    """Where a scan stands, counted from the tables: files, images, candidates, batches.

    ``files_enumerated`` counts the top-level files found in the source; ``files_done`` counts
    every file examined, archive members included, so it can pass ``files_enumerated``.
    """
    with store.sessions() as session:
        scan = session.get(Scan, scan_id)
        if scan is None:
            raise NotFound(f"no scan {scan_id}")
        by_status = dict(session.execute(
            select(ScanFile.status, func.count()).where(ScanFile.scan_id == scan_id)
            .group_by(ScanFile.status)).all())
        problems = dict(session.execute(
            select(ScanProblem.skipped, func.count()).where(ScanProblem.scan_id == scan_id)
            .group_by(ScanProblem.skipped)).all())
        candidates = session.execute(
            select(func.count(func.distinct(ScanMatch.locator_hash)))
            .where(ScanMatch.scan_id == scan_id)).scalar()
        batches = dict(session.execute(
            select(ScanBatch.state, func.count()).where(ScanBatch.scan_id == scan_id)
            .group_by(ScanBatch.state)).all())
    return {
        "scan_id": scan.id,
        "state": scan.state,
        "cancel_requested": bool(scan.cancel_requested),
        "files_enumerated": int(scan.files_enumerated or 0),
        "files_done": int(sum(by_status.values())),
        "images_hashed": int(by_status.get("hashed", 0)),
        "candidates": int(candidates or 0),
        "errors": int(problems.get(False, 0)),
        "skipped": int(problems.get(True, 0)),
        "batches_total": scan.batches_total,
        "batches_done": int(batches.get("done", 0)),
        "batches_failed": int(batches.get("failed", 0)),
        "started_at": _iso(scan.started_at),
        "finished_at": _iso(scan.finished_at),
        "error": scan.error,
    }
