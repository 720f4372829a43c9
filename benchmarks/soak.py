"""Soak: the service under a mixed load on loopback for minutes; errors and memory over time.

Starts ``hashsvc serve --workers 2`` (gunicorn) and two ``hashsvc worker`` processes (RQ) on a
fresh PostgreSQL database and a throwaway redis-server, then for ``--minutes`` runs client
threads that mix:

- lookups of one hash and batches of 100 (platform key; hits and misses),
- registrations: a new case with 5 hash lines (charity key), up to ``--max-active-cases``
  cases at a time, so that the bank stays about one size and memory may stay flat,
- withdrawals of cases made earlier (every API worker then reloads its lookup index),
- scans of small generated folders (forensic key; at most two at a time, each followed to
  its end), and victims' status reads (HTTP Basic with the case's secret).

Every few seconds it samples the resident memory (RSS) of every server and worker process
(gunicorn's master and workers, each RQ worker and its work-horse and decoding children). At
the end it prints request counts and rates, the errors (any 5xx, an unexpected 4xx, a refused
connection, a scan that did not finish "done"), and each long-lived process's RSS at the end of
the warm-up against its RSS at the end. Exit status 1 if there was any error, or if any
process grew after the warm-up by more than ``--growth-mb`` (30) MB *and* ``--growth-pct``
(10) percent.

    .venv/bin/python benchmarks/soak.py                 # the full soak: 10 minutes
    .venv/bin/python benchmarks/soak.py --minutes 1     # a quick check
    .venv/bin/python benchmarks/soak.py --json soak.json

Needs PostgreSQL (``--pg``, default the tests' server; a fresh database is made and dropped) and
the redis-server binary. Opt-in: not part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_workers import free_port, pg_database, redis_server  # noqa: E402
from benchmarks.common import write_json  # noqa: E402
from hashsvc.hashing import hash_bytes  # noqa: E402

HASHSVC = Path(sys.executable).with_name("hashsvc")
PG_ADMIN = os.environ.get("HASHSVC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

#: Relative weights of the client actions.
MIX = {"lookup": 45, "lookup_batch": 15, "register": 15, "withdraw": 8, "status": 7,
       "scan": 10}


# --- test data ----------------------------------------------------------------------------------


def picture(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A distinct smooth picture per seed, as JPEG."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def hash_lines(count: int, start: int) -> list[dict[str, Any]]:
    """Hash lines as ``hashsvc hash`` prints them (with the rotations), for seeds from start."""
    return [{"file": f"IMG_{start + i}.jpg",
             **hash_bytes(picture(start + i), with_variants=True).to_json()}
            for i in range(count)]


def make_folders(root: Path, count: int, seeds: list[int]) -> list[Path]:
    """Small evidence folders: 4 unrelated pictures, a copy of a registered one, a broken file."""
    folders = []
    for n in range(count):
        folder = root / f"exhibit-{n:03d}"
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"IMG_{i}.jpg").write_bytes(picture(100_000 + n * 10 + i))
        (folder / "copy.jpg").write_bytes(picture(seeds[n % len(seeds)], (400, 300)))
        (folder / "broken.jpg").write_bytes(picture(n)[:200])
        folders.append(folder)
    return folders


# --- processes and memory -------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            pass
    return out


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss: dict[str, float]  # process name -> MB
    transient_mb: float  # work-horses and decoding children, together


class Processes:
    """The server and workers; names their long-lived processes for the samples."""

    def __init__(self, env: dict[str, str], folder: Path, api_workers: int, rq_workers: int,
                 bind: str) -> None:
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.server = subprocess.Popen(
            [str(HASHSVC), "serve", "--bind", bind, "--workers", str(api_workers)], env=env,
            stdout=open(self.logs / "serve.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.workers = [subprocess.Popen([str(HASHSVC), "worker", "--name", f"soak-{i}"],
                                         env=env, stdout=open(self.logs / f"worker-{i}.log", "wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True)
                        for i in range(rq_workers)]
        self.api_workers = api_workers

    def long_lived(self) -> dict[str, int]:
        """Name -> pid: gunicorn's master and workers, and each RQ worker."""
        out = {"gunicorn-master": self.server.pid}
        for i, pid in enumerate(sorted(children(self.server.pid))):
            out[f"gunicorn-worker-{i}"] = pid
        for i, proc in enumerate(self.workers):
            out[f"rq-worker-{i}"] = proc.pid
        return out

    def sample(self, at: float) -> Sample:
        rss: dict[str, float] = {}
        for name, pid in self.long_lived().items():
            value = rss_mb(pid)
            if value is not None:
                rss[name] = value
        transient = 0.0
        for proc in self.workers:  # an RQ work-horse and its decoding children
            stack = children(proc.pid)
            while stack:
                pid = stack.pop()
                transient += rss_mb(pid) or 0.0
                stack += children(pid)
        return Sample(at, rss, transient)

    def alive(self) -> bool:
        return self.server.poll() is None and all(w.poll() is None for w in self.workers)

    def stop(self) -> None:
        for proc in [self.server, *self.workers]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.server, *self.workers]:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(HASHSVC), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip()


# --- the load -------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients did, shared between their threads."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cases: list[dict[str, Any]] = field(default_factory=list)  # made by the load, active
    max_active: int = 60
    scans_running: int = 0

    def done(self, action: str, seconds: float) -> None:
        with self.lock:
            self.counts[action] += 1
            self.latencies.setdefault(action, []).append(seconds)

    def error(self, text: str) -> None:
        with self.lock:
            self.counts["errors"] += 1
            if len(self.errors) < 50:
                self.errors.append(text[:500])


class Client(threading.Thread):
    """One client thread: picks actions by MIX until the deadline."""

    def __init__(self, n: int, base: str, keys: dict[str, str], tally: Tally,
                 lines: list[dict[str, Any]], folders: list[Path], deadline: float,
                 seed: int) -> None:
        super().__init__(name=f"client-{n}", daemon=True)
        self.base, self.keys, self.tally = base, keys, tally
        self.lines, self.folders, self.deadline = lines, folders, deadline
        self.rng = random.Random(seed)
        self.http = requests.Session()
        self.next_line = n * 1_000_000

    def request(self, method: str, path: str, key: str | None = None, body: Any = None,
                headers: dict[str, str] | None = None, expect: tuple[int, ...] = (200,)
                ) -> Any:
        hdrs = dict(headers or {})
        if key:
            hdrs["Authorization"] = f"Bearer {self.keys[key]}"
        try:
            response = self.http.request(method, self.base + path, json=body, headers=hdrs,
                                         timeout=120)
        except requests.RequestException as exc:
            self.tally.error(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code not in expect:
            self.tally.error(f"{method} {path}: {response.status_code} {response.text[:200]}")
            return None
        return response.json()

    def run(self) -> None:
        actions, weights = zip(*MIX.items())
        while time.monotonic() < self.deadline:
            action = self.rng.choices(actions, weights)[0]
            start = time.monotonic()
            try:
                did = getattr(self, action)()
            except Exception as exc:  # noqa: BLE001 - a client bug is an error too
                self.tally.error(f"{action}: {type(exc).__name__}: {exc}")
                continue
            if did:
                self.tally.done(action, time.monotonic() - start)

    def lookup(self) -> bool:
        line = self.rng.choice(self.lines)
        query = {"algorithm": "pdq", "value": line["hashes"]["pdq"]}
        return self.request("POST", "/v1/lookup", "platform", {"hashes": [query]}) is not None

    def lookup_batch(self) -> bool:
        queries: list[dict[str, str]] = []
        for _ in range(100):  # half of them hits, half misses
            line = self.rng.choice(self.lines)
            if self.rng.random() < 0.5:
                queries.append({"algorithm": "pdq", "value": line["hashes"]["pdq"]})
            else:
                queries.append({"algorithm": "md5", "value": f"{self.rng.getrandbits(128):032x}"})
        return self.request("POST", "/v1/lookup", "platform", {"hashes": queries}) is not None

    def register(self) -> bool:
        with self.tally.lock:
            full = len(self.tally.cases) >= self.tally.max_active
        if full:  # the bank stays about one size, so memory may stay flat: withdraw instead
            return False
        case = self.request("POST", "/v1/cases", "charity", {}, expect=(201,))
        if case is None:
            return False
        batch = [dict(self.rng.choice(self.lines)) for _ in range(5)]
        answer = self.request("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", batch)
        if answer is None:
            return False
        with self.tally.lock:
            self.tally.cases.append(case)
        return True

    def withdraw(self) -> bool:
        with self.tally.lock:
            if not self.tally.cases:
                return False
            case = self.tally.cases.pop(self.rng.randrange(len(self.tally.cases)))
        answer = self.request("POST", f"/v1/cases/{case['case_id']}/withdraw", "charity")
        return answer is not None and answer["state"] == "withdrawn"

    def status(self) -> bool:
        with self.tally.lock:
            if not self.tally.cases:
                return False
            case = self.rng.choice(self.tally.cases)
        token = base64.b64encode(f"{case['case_ref']}:{case['secret']}".encode()).decode()
        # A case another client withdrew meanwhile still answers (200); 401 would be an error.
        return self.request("GET", "/v1/status", headers={"Authorization": f"Basic {token}"}
                            ) is not None

    def scan(self) -> bool:
        with self.tally.lock:
            if self.tally.scans_running >= 2:
                return False
            self.tally.scans_running += 1
        try:
            folder = self.rng.choice(self.folders)
            started = self.request("POST", "/v1/scans", "forensic",
                                   {"source": str(folder), "label": "soak"}, expect=(202,))
            if started is None:
                return False
            scan_id = started["scan_id"]
            end = time.monotonic() + 300
            while time.monotonic() < end:
                state = self.request("GET", f"/v1/scans/{scan_id}", "forensic")
                if state is None:
                    return False
                if state["state"] in ("done", "failed", "cancelled"):
                    if state["state"] != "done" or state["files_done"] != 6:
                        self.tally.error(f"scan {scan_id}: {state}")
                        return False
                    return True
                time.sleep(0.5)
            self.tally.error(f"scan {scan_id} did not finish in 300 s")
            return False
        finally:
            with self.tally.lock:
                self.tally.scans_running -= 1


# --- the run ------------------------------------------------------------------------------------


def wait_healthy(base: str, procs: Processes) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/v1/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not procs.alive():
            raise RuntimeError(f"a process exited at start; see {procs.logs}")
        time.sleep(0.3)
    raise RuntimeError("the server did not become ready")


def summarise(samples: list[Sample], warm_at: float) -> dict[str, dict[str, float]]:
    """Per process: RSS at the end of the warm-up (median of the samples in the 30 s after it)
    and at the end (median of the last three), and the growth."""
    out: dict[str, dict[str, float]] = {}
    names = sorted({n for s in samples for n in s.rss})
    for name in names:
        warm = [s.rss[name] for s in samples if warm_at <= s.at <= warm_at + 30 and name in s.rss]
        end = [s.rss[name] for s in samples[-3:] if name in s.rss]
        peak = max(s.rss.get(name, 0.0) for s in samples)
        if not warm or not end:
            continue
        w, e = statistics.median(warm), statistics.median(end)
        out[name] = {"warm_mb": round(w, 1), "end_mb": round(e, 1), "peak_mb": round(peak, 1),
                     "growth_mb": round(e - w, 1), "growth_pct": round(100 * (e - w) / w, 1)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hashsvc-soak-"))
    (tmp / "redis").mkdir()
    print(f"soak: {args.minutes:g} min, {args.clients} clients; files in {tmp}", file=sys.stderr)
    bank = hash_lines(args.bank, 0)
    evidence = tmp / "evidence"
    folders = make_folders(evidence, 20, [int(line["file"][4:-4]) for line in bank[:20]])
    with pg_database(args.pg) as db_url, redis_server(tmp / "redis") as redis_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
        env.update(HASHSVC_DATABASE_URL=db_url, HASHSVC_REDIS_URL=redis_url,
                   HASHSVC_DATA_DIR=str(tmp / "data"), HASHSVC_EVIDENCE_ROOTS=str(evidence),
                   HASHSVC_WORKERS="1", HASHSVC_RATE_LIMIT_PER_MINUTE="0",
                   HASHSVC_STATUS_RATE_LIMIT="", HASHSVC_LOOKUP_REFRESH_SECONDS="1")
        cli(env, "admin", "create-org", "Soak")
        keys = {role: cli(env, "admin", "create-key", "--org", "Soak", "--role", role)
                for role in ("charity", "forensic", "platform")}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        procs = Processes(env, tmp, args.api_workers, args.rq_workers, f"127.0.0.1:{port}")
        try:
            wait_healthy(base, procs)
            seed_case = requests.post(base + "/v1/cases", json={}, headers={
                "Authorization": f"Bearer {keys['charity']}"}, timeout=60).json()
            requests.post(f"{base}/v1/cases/{seed_case['case_id']}/hashes", json=bank,
                          headers={"Authorization": f"Bearer {keys['charity']}"}, timeout=300
                          ).raise_for_status()
            tally = Tally(max_active=args.max_active_cases)
            seconds = args.minutes * 60
            warm_at = seconds * args.warmup
            start = time.monotonic()
            clients = [Client(n, base, keys, tally, bank, folders, start + seconds, n + 1)
                       for n in range(args.clients)]
            for client in clients:
                client.start()
            samples: list[Sample] = []
            while any(c.is_alive() for c in clients):
                samples.append(procs.sample(time.monotonic() - start))
                if not procs.alive():
                    tally.error("a server or worker process exited during the soak")
                    break
                time.sleep(args.sample_seconds)
            for client in clients:
                client.join(timeout=320)
            elapsed = time.monotonic() - start
            samples.append(procs.sample(elapsed))
        finally:
            procs.stop()
    memory = summarise(samples, warm_at)
    grown = {name: m for name, m in memory.items()
             if m["growth_mb"] > args.growth_mb and m["growth_pct"] > args.growth_pct}
    lat = {a: {"count": len(v), "p50_ms": round(1000 * statistics.median(v), 1),
               "p99_ms": round(1000 * sorted(v)[int(0.99 * (len(v) - 1))], 1)}
           for a, v in sorted(tally.latencies.items())}
    total = sum(v["count"] for v in lat.values())
    return {"minutes": args.minutes, "elapsed_s": round(elapsed, 1), "clients": args.clients,
            "api_workers": args.api_workers, "rq_workers": args.rq_workers,
            "warmup_s": round(warm_at), "actions": lat, "actions_total": total,
            "actions_per_s": round(total / elapsed, 1), "errors": tally.counts["errors"],
            "error_examples": tally.errors[:10], "memory": memory,
            "transient_peak_mb": round(max(s.transient_mb for s in samples), 1),
            "bound": f"growth after warm-up > {args.growth_mb:g} MB and > {args.growth_pct:g} %",
            "grown": sorted(grown), "samples": [[round(s.at, 1), s.rss] for s in samples],
            "logs": str(procs.logs)}


def print_report(figures: dict[str, Any]) -> None:
    print(f"soak: {figures['elapsed_s']:.0f} s, {figures['clients']} clients, "
          f"{figures['api_workers']} API workers, {figures['rq_workers']} RQ workers "
          f"(warm-up {figures['warmup_s']} s)")
    print(f"actions: {figures['actions_total']} ({figures['actions_per_s']}/s)")
    for action, m in figures["actions"].items():
        print(f"  {action:13s} {m['count']:7d}   p50 {m['p50_ms']:8.1f} ms   "
              f"p99 {m['p99_ms']:8.1f} ms")
    print(f"errors: {figures['errors']}")
    for example in figures["error_examples"]:
        print(f"  {example}")
    print(f"RSS (MB) after warm-up -> end (peak); fails if {figures['bound']}:")
    for name, m in figures["memory"].items():
        print(f"  {name:18s} {m['warm_mb']:7.1f} -> {m['end_mb']:7.1f}  ({m['growth_mb']:+.1f}, "
              f"{m['growth_pct']:+.1f} %; peak {m['peak_mb']:.1f})")
    print(f"  work-horses and decoding children together: peak {figures['transient_peak_mb']} MB")
    verdict = "PASS" if not figures["errors"] and not figures["grown"] else "FAIL"
    print(f"{verdict}: {figures['errors']} errors; grew past the bound: "
          f"{', '.join(figures['grown']) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=6, help="client threads")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--rq-workers", type=int, default=2)
    parser.add_argument("--bank", type=int, default=200, help="hash lines registered first")
    parser.add_argument("--max-active-cases", type=int, default=60,
                        help="cases the load keeps registered at most (then it withdraws "
                             "before it registers more), so that the bank stays one size")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="fraction of the run that is warm-up (default 0.2)")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--growth-mb", type=float, default=30.0)
    parser.add_argument("--growth-pct", type=float, default=10.0)
    parser.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL admin URL")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    figures = run(args)
    print_report(figures)
    write_json(figures, args.json)
    return 1 if figures["errors"] or figures["grown"] else 0


if __name__ == "__main__":
    sys.exit(main())

