"""Step 6: single-hash ``POST /v1/lookup`` requests from a concurrent client process against
``hashsvc serve`` (gunicorn, 2 workers) on a 1M-hash bank: requests/s and latency.

    python benchmarks/bench_lookup_http.py --bank /tmp/hashsvc-bank-1m --duration 30 \\
        --concurrency 8 --json

The bank is the one bench_lookup_cli.py uses (``--bank`` reused when there; see
benchmarks/lookup_bank.py), SQLite by default or a fresh PostgreSQL database with ``--pg``. A
platform key is made in it, the per-key rate limit is turned off (``rate_limit_per_minute=0``),
and ``hashsvc serve --workers 2`` is started on a free loopback port. Before timing, the first
``--check-queries`` queries are sent one by one and each answer's match distances must equal
numpy brute force's over the bank's codes (one entry per picture, at its nearest orientation),
and every planted copy must match, or the script exits non-zero.

Then a separate client process sends one query per request from ``--concurrency`` threads (one
connection each; gunicorn's sync workers close a connection after each answer, so every request
opens a new one) for ``--warmup`` seconds that are not counted (each worker loads its indexes on
its first lookup) and ``--duration`` seconds that are. Queries cycle through ``--queries`` hashes,
a share (``--planted-share``, half by default; a platform's uploads rarely match) copies of bank
codes with up to 31 bits flipped. Requests/s, latency percentiles and errors are reported, with
the CPU used by the server, the client and the whole machine (they share its cores), the server's
CPU per request, and how the workers spent their time (Linux's schedstat: on a CPU, waiting for
one, or neither). The reference open-source matcher reports 450-500 requests/s across 10 pods.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_json  # noqa: E402

HASHSVC = Path(sys.executable).with_name("hashsvc")


def main(argv: list[str] | None = None) -> int:
    """Run the server benchmark, or (``--client``) be the client process."""
    args = _parse(argv)
    if args.client:
        _client(args)
        return 0
    return _server_side(args)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from benchmarks.lookup_bank import add_bank_options

    add_bank_options(parser)
    parser.add_argument("--pg", default=None, metavar="URL",
                        help="PostgreSQL URL of a database to create the bank's next to (the "
                             "bank is then built in a fresh database and dropped afterwards)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--concurrency", default="8",
                        help="client threads, or a comma-separated list of runs")
    parser.add_argument("--duration", type=float, default=30.0, help="timed seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="untimed seconds first")
    parser.add_argument("--queries", type=int, default=10_000, help="distinct query hashes")
    parser.add_argument("--planted-share", type=float, default=0.5)
    parser.add_argument("--check-queries", type=int, default=200,
                        help="queries checked against brute force before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the figures as JSON (to PATH, or stdout)")
    # The client process's own arguments.
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--query-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hashes % args.variants:
        parser.error("--hashes must be a multiple of --variants")
    if args.pg and args.bank:
        parser.error("--pg builds its bank in a fresh database each time: leave out --bank")
    return args


def _log(message: str) -> None:
    """Progress on standard error."""
    print(message, file=sys.stderr, flush=True)


# -- the server side -------------------------------------------------------------------------


def _server_side(args: argparse.Namespace) -> int:
    """Build or reuse the bank, serve it, check answers, run the client, report."""
    from benchmarks.lookup_bank import bank_and_queries
    from hashsvc.index import codes_to_hex
    from hashsvc.settings import load_settings

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lookup-http-")))
        bank = args.bank or tmp / "bank"
        database_url = stack.enter_context(_pg_database(args.pg)) if args.pg else ""
        settings = load_settings(env={}, data_dir=str(bank), database_url=database_url)
        made = bank_and_queries(settings, args, 31, 3, _log)
        meta, codes, ids, queries, planted = (made.meta, made.codes, made.ids, made.queries,
                                              made.planted)
        del made
        values = codes_to_hex(queries)
        query_file = tmp / "queries.json"
        query_file.write_text(json.dumps(values))
        key = _platform_key(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
        env.update(HASHSVC_DATA_DIR=str(bank), HASHSVC_RATE_LIMIT_PER_MINUTE="0")
        if database_url:
            env["HASHSVC_DATABASE_URL"] = database_url
        server = stack.enter_context(_serve(env, args.workers, tmp / "gunicorn.log"))
        problems = _check(server.url, key, values, planted, codes, ids, args.check_queries)
        del codes, ids
        runs = [_run_client(server, key, query_file, int(c), args)
                for c in args.concurrency.split(",") if c]
    figures = {
        "bank": meta, "database": "postgresql" if args.pg else "sqlite",
        "workers": args.workers, "queries": args.queries, "planted_share": args.planted_share,
        "checked_queries": args.check_queries, "answers_identical": not problems,
        "problems": problems[:20], "runs": runs, "cpus": os.cpu_count(),
    }
    _report(figures)
    write_json(figures, args.json)
    return 1 if problems else 0


@contextmanager
def _pg_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database next to ``admin_url``'s, dropped afterwards."""
    import psycopg

    name = f"hashsvc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _platform_key(settings: Any) -> str:
    """A new platform org and key in the bank's store; the key's secret."""
    from hashsvc import accounts
    from hashsvc.store import Store

    store = Store.open(settings)
    try:
        org = accounts.create_org(store, f"bench-platform-{uuid.uuid4().hex[:8]}")
        return accounts.create_key(store, org, "platform").key
    finally:
        store.close()


class _Server:
    """A running ``hashsvc serve``."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def worker_cpu(self) -> float:
        """CPU seconds used so far by the server's processes (master and workers)."""
        import psutil  # type: ignore[import-untyped]

        total = 0.0
        master = psutil.Process(self.process.pid)
        for proc in [master, *master.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def worker_sched(self) -> tuple[float, float, int]:
        """Seconds the workers have run on a CPU and waited for one (Linux's schedstat),
        and how many workers were read."""
        import psutil  # type: ignore[import-untyped]

        ran = waited = 0.0
        count = 0
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                fields = Path(f"/proc/{proc.pid}/schedstat").read_text().split()
            except OSError:
                continue
            ran += int(fields[0]) / 1e9
            waited += int(fields[1]) / 1e9
            count += 1
        return ran, waited, count


@contextmanager
def _serve(env: dict[str, str], workers: int, log: Path) -> Iterator[_Server]:
    """``hashsvc serve`` with ``workers`` workers on a free loopback port, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with log.open("wb") as handle:
        process = subprocess.Popen([str(HASHSVC), "serve", "--bind", f"127.0.0.1:{port}",
                                    "--workers", str(workers)], env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = _Server(process, f"127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _request(server.url, "GET", "/v1/health", None, None)[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hashsvc serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _request(url: str, method: str, path: str, key: str | None, body: Any
             ) -> tuple[int, Any]:
    """(status, JSON answer) of one request on a new connection."""
    conn = http.client.HTTPConnection(url, timeout=300)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _check(url: str, key: str, values: list[str], planted: dict[int, int], codes: np.ndarray,
           ids: np.ndarray, count: int) -> list[str]:
    """Compare the service's answers to the first ``count`` queries with brute force's."""
    from hashsvc.hashing import VARIANT_SLOTS
    from hashsvc.index import brute_force_search, hex_to_codes

    brute = brute_force_search(codes, ids, hex_to_codes(values[:count], 256), 31)
    problems = []
    for q, (found, dists) in enumerate(brute):
        nearest: dict[int, int] = {}
        for image, dist in zip((found // VARIANT_SLOTS).tolist(), dists.tolist(), strict=True):
            nearest.setdefault(image, dist)
        status, answer = _request(url, "POST", "/v1/lookup", key,
                                  {"hashes": [{"algorithm": "pdq", "value": values[q]}]})
        if status != 200:
            problems.append(f"query {q}: status {status}: {str(answer)[:300]}")
            continue
        served = sorted(m["distance"] for m in answer["results"][0]["matches"])
        if served != sorted(nearest.values()) or (q in planted and not served):
            problems.append(f"query {q}: served distances {served} vs brute force "
                            f"{sorted(nearest.values())}")
    return problems


def _run_client(server: _Server, key: str, query_file: Path, concurrency: int,
                args: argparse.Namespace) -> dict[str, Any]:
    """One client process's run at ``concurrency`` threads, with the server's CPU use."""
    import psutil  # type: ignore[import-untyped]

    _log(f"client: {concurrency} threads, {args.warmup:.0f} s warm-up + {args.duration:.0f} s")
    cpu_before = server.worker_cpu()
    sched_before = server.worker_sched()
    machine_before = psutil.cpu_times()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--client", server.url, "--key", key,
                           "--query-file", str(query_file), "--concurrency", str(concurrency),
                           "--duration", str(args.duration), "--warmup", str(args.warmup)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    server_cpu = server.worker_cpu() - cpu_before
    sched_after = server.worker_sched()
    machine_after = psutil.cpu_times()
    busy = sum(machine_after) - machine_after.idle - (sum(machine_before) - machine_before.idle)
    if done.returncode != 0:
        raise RuntimeError(f"the client failed: {done.stderr[-3000:]}\n"
                           f"{server.log.read_text()[-3000:]}")
    run: dict[str, Any] = json.loads(done.stdout)
    # Over the client's whole life (warm-up included), as shares of one core.
    run["server_cpu_cores"] = round(server_cpu / wall, 2)
    run["server_cpu_ms_per_request"] = round(1000 * server_cpu / max(1, run.pop("sent")), 2)
    run["client_cpu_cores"] = round(run.pop("client_cpu_s") / wall, 2)
    # Every process on the machine (PostgreSQL, other work) together.
    run["machine_busy_cores"] = round(busy / wall, 2)
    # What the workers did, as shares of their time: on a CPU, ready but waiting for a CPU
    # (taken by other processes), and neither (waiting for a request, the database, I/O).
    workers = sched_after[2]
    if workers and workers == sched_before[2]:
        ran = (sched_after[0] - sched_before[0]) / (wall * workers)
        waited = (sched_after[1] - sched_before[1]) / (wall * workers)
        run["workers_time_share"] = {"on_cpu": round(ran, 2), "waiting_for_cpu": round(waited, 2),
                                     "blocked_or_idle": round(max(0.0, 1 - ran - waited), 2)}
    run["load_average"] = os.getloadavg()
    return run


def _report(figures: dict[str, Any]) -> None:
    """Print the figures."""
    spec = figures["bank"]["spec"]
    print(f"bank: {spec['images'] * spec['variants']:,} PDQ hashes ({spec['images']:,} pictures "
          f"x {spec['variants']}, {figures['database']}); gunicorn with {figures['workers']} "
          f"workers; {figures['cpus']} CPUs shared by server and client")
    print(f"answers to {figures['checked_queries']} queries vs brute force: "
          f"{'identical' if figures['answers_identical'] else 'DIFFER'}")
    for problem in figures["problems"]:
        print(f"  {problem}")
    for run in figures["runs"]:
        lat = run["latency_ms"]
        print(f"{run['concurrency']:>3} client threads: {run['requests_per_s']:7.1f} requests/s "
              f"over {run['duration_s']:.0f} s ({run['requests']:,} requests, {run['errors']} "
              f"errors); latency ms p50 {lat['p50']:.1f}, p90 {lat['p90']:.1f}, p99 "
              f"{lat['p99']:.1f}, max {lat['max']:.1f}; CPU cores used: server "
              f"{run['server_cpu_cores']:.2f}, client {run['client_cpu_cores']:.2f}, whole "
              f"machine {run['machine_busy_cores']:.2f}; server CPU per request "
              f"{run['server_cpu_ms_per_request']:.1f} ms")
        share = run.get("workers_time_share")
        if share:
            print(f"     workers' time: {share['on_cpu']:.0%} on a CPU, "
                  f"{share['waiting_for_cpu']:.0%} waiting for a CPU, "
                  f"{share['blocked_or_idle']:.0%} blocked (database lock, I/O) or idle")


# -- the client process ----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> None:
    """Send single-hash lookups from threads until the time is up; print the figures as JSON."""
    threads_wanted = int(args.concurrency)
    values: list[str] = json.loads(args.query_file.read_text())
    bodies = [json.dumps({"hashes": [{"algorithm": "pdq", "value": v}]}).encode()
              for v in values]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {args.key}"}
    begin = time.perf_counter() + args.warmup
    end = begin + args.duration
    latencies: list[list[float]] = [[] for _ in range(threads_wanted)]
    errors: list[dict[str, int]] = [{} for _ in range(threads_wanted)]
    sent = [0] * threads_wanted  # warm-up included

    def worker(slot: int) -> None:
        conn = http.client.HTTPConnection(args.client, timeout=60)
        k = slot * len(bodies) // threads_wanted
        while True:
            started = time.perf_counter()
            if started >= end:
                break
            try:
                conn.request("POST", "/v1/lookup", bodies[k % len(bodies)], headers)
                response = conn.getresponse()
                data = response.read()
                outcome = "ok" if response.status == 200 and data.startswith(b"{") else \
                    f"status {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(args.client, timeout=60)
            took = time.perf_counter() - started
            k += 1
            sent[slot] += 1
            if started < begin:
                continue
            if outcome == "ok":
                latencies[slot].append(took)
            else:
                errors[slot][outcome] = errors[slot].get(outcome, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(threads_wanted)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timed = np.array([x for slot in latencies for x in slot]) * 1000
    failed: dict[str, int] = {}
    for slot_errors in errors:
        for name, count in slot_errors.items():
            failed[name] = failed.get(name, 0) + count
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "concurrency": threads_wanted, "duration_s": args.duration,
        "requests": len(timed), "requests_per_s": round(len(timed) / args.duration, 1),
        "errors": sum(failed.values()), "error_kinds": failed, "sent": sum(sent),
        "latency_ms": {name: round(float(np.percentile(timed, p)), 2) if len(timed) else None
                       for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }))


if __name__ == "__main__":
    raise SystemExit(main())
