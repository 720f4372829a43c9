"""Commands of the distributed service: ``hashsvc worker`` and ``hashsvc scan-status``."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from hashsvc.cli import Context, _fail, main, pass_ctx
from hashsvc.errors import HashsvcError


@main.command()
@click.option("--burst", is_flag=True, help="Quit once the queue is empty.")
@click.option("--name", default=None, help="Worker name shown by RQ (default: random).")
@pass_ctx
def worker(ctx: Context, burst: bool, name: str | None) -> None:
    """Run one scan worker on the service's queue (run one per core)."""
    from workers.worker import run_worker

    run_worker(ctx.settings, burst=burst, name=name)


@main.command("scan-status")
@click.argument("scan_id")
@click.option("--follow", is_flag=True, help="Show a live progress bar until the scan ends.")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Seconds between updates with --follow.")
@pass_ctx
def scan_status(ctx: Context, scan_id: str, follow: bool, interval: float) -> None:
    """Print a scan's progress as JSON; exit status 1 if the scan failed."""
    from hashsvc.store.progress import scan_progress

    try:
        status = (follow_scan(ctx.store, scan_id, interval) if follow
                  else scan_progress(ctx.store, scan_id))
    except HashsvcError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(status))
    if status["state"] == "failed":
        sys.exit(1)


def follow_scan(store: Any, scan_id: str, interval: float) -> dict[str, Any]:
    """Draw a progress bar on stderr until the scan reaches a final state; returns the last
    progress."""
    from tqdm import tqdm

    from hashsvc.store.progress import FINAL_STATES, scan_progress

    status = scan_progress(store, scan_id)
    start, images_at_start = time.monotonic(), status["images_hashed"]
    with tqdm(total=max(status["files_enumerated"], 1), unit="file", file=sys.stderr,
              dynamic_ncols=True, desc=scan_id[:8]) as bar:
        while True:
            # Archive members count as files done, so the total follows whichever is larger.
            bar.total = max(status["files_enumerated"], status["files_done"], 1)
            bar.update(status["files_done"] - bar.n)
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.set_postfix({
                "images/s": f"{(status['images_hashed'] - images_at_start) / elapsed:.1f}",
                "candidates": status["candidates"], "errors": status["errors"],
                "batches": f"{status['batches_done']}/{status['batches_total'] or '?'}",
                "state": status["state"]}, refresh=True)
            if status["state"] in FINAL_STATES:
                return status
            time.sleep(interval)
            status = scan_progress(store, scan_id)
