"""Step 6: ``hashsvc lookup`` of 10,000 PDQ hashes against a 1M-hash embedded bank, whole process
included, against a process doing numpy brute force over the same bank (goal: at least 10x).

    python benchmarks/bench_lookup_cli.py --bank /tmp/hashsvc-bank-1m --repeat 3 --json

The bank is a real embedded one (SQLite in ``--bank``, reused when it is there): ``--hashes``
PDQ hashes of made-up pictures, ``--variants`` per picture (8: every orientation, as
``hashsvc hash`` registers them), each line also carrying sha256, md5, pHash and dHash (see
benchmarks/lookup_bank.py). Its indexes are built and saved once beforehand, as a deployment has
them. The query file holds ``{"hashes": {"pdq": HEX}}`` lines: a share are copies of bank codes
with up to ``--distance`` bits flipped, the rest random. With ``--full-lines`` each line also
carries a random pHash and dHash, as lines of ``hashsvc hash`` do (no bank picture is near them,
so the answers stay PDQ's, but such lines could match by the pHash-supported rule).

Timed, each as a subprocess from start to exit: ``hashsvc lookup FILE`` (start, settings, store,
index load, search, matching rule, one JSON line out per query), and benchmarks/brute_lookup.py
(start, reading the bank's codes, brute force). Brute force runs on the first ``--brute-queries``
queries only and its time is extrapolated to all of them (reading the bank is counted once).
The CLI's matches on that subset must equal brute force's (same cases at the same distances)
and every planted copy must find its picture, or the script exits non-zero. Runs alternate and
the fastest of ``--repeat`` counts. ``--profile`` adds one CLI run under cProfile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_json  # noqa: E402
from benchmarks.lookup_bank import (  # noqa: E402
    add_bank_options,
    bank_and_queries,
    image_cases,
)
from hashsvc.hashing import VARIANT_SLOTS  # noqa: E402
from hashsvc.index import codes_to_hex  # noqa: E402
from hashsvc.settings import load_settings  # noqa: E402

HASHSVC = Path(sys.executable).with_name("hashsvc")
BRUTE = Path(__file__).with_name("brute_lookup.py")


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the bank, time both processes, compare answers, report."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="bench-lookup-cli-") as tmp_name:
        tmp = Path(tmp_name)
        bank = args.bank or tmp / "bank"
        settings = load_settings(env={}, data_dir=str(bank))
        made = bank_and_queries(settings, args, args.distance, 2, _log)
        meta, queries, planted, rng = made.meta, made.queries, made.planted, made.rng
        del made
        query_file = tmp / "queries.jsonl"
        query_file.write_text("".join(json.dumps({"hashes": hashes}) + "\n"
                                      for hashes in _query_hashes(queries, args.full_lines, rng)))
        env = _env(bank)
        cli_s: list[float] = []
        brute_runs: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            cli_s.append(_run_cli(query_file, tmp / "cli.jsonl", env))
            brute_runs.append(_run_brute(settings.data_path / "hashsvc.sqlite3", query_file,
                                         tmp / "brute.json", args))
        problems = _compare(tmp / "cli.jsonl", tmp / "brute.json", planted, settings.db_url)
        profile = _profile(query_file, tmp, env) if args.profile else None
    figures = _figures(args, meta, cli_s, brute_runs, problems, profile)
    _report(figures)
    write_json(figures, args.json)
    return 1 if problems else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_bank_options(parser)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--planted-share", type=float, default=0.5)
    parser.add_argument("--distance", type=int, default=31, help="most bits flipped in a copy")
    parser.add_argument("--full-lines", action="store_true",
                        help="query lines also carry (random) pHash and dHash, as hashsvc hash "
                             "prints them")
    parser.add_argument("--brute-queries", type=int, default=1000,
                        help="queries brute force runs (its time is extrapolated)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--profile", action="store_true", help="one more CLI run under cProfile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the figures as JSON (to PATH, or stdout)")
    args = parser.parse_args(argv)
    if args.hashes % args.variants:
        parser.error("--hashes must be a multiple of --variants")
    return args


def _query_hashes(queries: np.ndarray, full: bool, rng: np.random.Generator
                  ) -> list[dict[str, str]]:
    """The hashes of each query line: PDQ only, or (``full``) also random pHash and dHash."""
    lines = [{"pdq": value} for value in codes_to_hex(queries)]
    if full:
        # Random 64-bit values: no bank picture is within their thresholds, so the answers stay
        # brute force's over PDQ; but the lines can match by the support rule, so PDQ is
        # searched out to pdq_support_threshold for them.
        small = rng.bytes(16 * len(lines)).hex()
        for k, hashes in enumerate(lines):
            hashes["phash"] = small[32 * k:32 * k + 16]
            hashes["dhash"] = small[32 * k + 16:32 * k + 32]
    return lines


def _log(message: str) -> None:
    """Progress on standard error."""
    print(message, file=sys.stderr, flush=True)


def _env(bank: Path) -> dict[str, str]:
    """The environment of a ``hashsvc`` process on the bank, every other setting its default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env["HASHSVC_DATA_DIR"] = str(bank)
    return env


def _run_cli(query_file: Path, out: Path, env: dict[str, str]) -> float:
    """Wall seconds of one ``hashsvc lookup`` process writing its answers to ``out``."""
    with out.open("wb") as handle:
        started = time.perf_counter()
        done = subprocess.run([str(HASHSVC), "lookup", str(query_file)], env=env, stdout=handle,
                              stderr=subprocess.PIPE, check=False)
        took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"hashsvc lookup failed: {done.stderr.decode()[-2000:]}")
    return took


def _run_brute(database: Path, query_file: Path, answers: Path,
               args: argparse.Namespace) -> dict[str, Any]:
    """Wall seconds and phases of one brute-force process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(BRUTE), str(database), str(query_file),
                           "--subset", str(args.brute_queries), "--distance", str(args.distance),
                           "--answers", str(answers)], capture_output=True, text=True,
                          check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"brute force failed: {done.stderr[-2000:]}")
    phases: dict[str, Any] = json.loads(done.stdout)
    phases["wall_s"] = took
    # The whole process with brute force over every query: what it measured, plus the
    # brute force it did not run, at the rate it ran.
    phases["extrapolated_s"] = took + phases["brute_s"] * (
        phases["queries"] / phases["brute_queries"] - 1)
    return phases


def _compare(cli_out: Path, brute_out: Path, planted: dict[int, int], db_url: str) -> list[str]:
    """Differences between the CLI's answers and brute force's, and planted copies missed."""
    lines = [json.loads(text) for text in cli_out.read_text().splitlines()]
    brute = json.loads(brute_out.read_text())
    wanted = {image for answer in brute for image, _ in answer}
    wanted |= {source // VARIANT_SLOTS for source in planted.values()}
    cases = image_cases(db_url, wanted)
    problems = []
    for q, answer in enumerate(brute):
        mine = Counter((m["case"], m["distance"]) for m in lines[q]["matches"])
        theirs = Counter((cases[image], dist) for image, dist in answer)
        if mine != theirs:
            problems.append(f"query {q}: CLI {sorted(mine.items())} vs brute "
                            f"{sorted(theirs.items())}")
    for q, source in planted.items():
        if cases[source // VARIANT_SLOTS] not in {m["case"] for m in lines[q]["matches"]}:
            problems.append(f"query {q}: planted picture {source // VARIANT_SLOTS} not found")
    return problems


def _profile(query_file: Path, tmp: Path, env: dict[str, str]) -> list[str]:
    """The top of one CLI run's cProfile, by cumulative time."""
    import pstats

    stats_file, out = tmp / "cli.prof", tmp / "profiled.jsonl"
    with out.open("wb") as handle:
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats_file), str(HASHSVC),
                        "lookup", str(query_file)], env=env, stdout=handle, check=True)
    if len(out.read_bytes().splitlines()) != len(query_file.read_bytes().splitlines()):
        raise RuntimeError("the profiled hashsvc lookup did not answer every line")
    stats = pstats.Stats(str(stats_file))
    rows = []
    for func, (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = f"{func[0].split('site-packages/')[-1]}:{func[1]}({func[2]})"
        rows.append((cumulative, calls, name))
    rows.sort(reverse=True)
    return [f"{cum:7.2f} s {calls:>9} calls  {name}" for cum, calls, name in rows[:30]]


def _figures(args: argparse.Namespace, meta: dict[str, Any], cli_s: list[float],
             brute_runs: list[dict[str, Any]], problems: list[str],
             profile: list[str] | None) -> dict[str, Any]:
    """Everything measured, with the ratio and the goal."""
    best_brute = min(brute_runs, key=lambda run: run["extrapolated_s"])
    speedup = best_brute["extrapolated_s"] / min(cli_s)
    return {
        "bank": meta, "queries": args.queries, "planted_share": args.planted_share,
        "line_hashes": "pdq, phash, dhash" if args.full_lines else "pdq",
        "brute_queries": args.brute_queries, "repeat": args.repeat,
        "cli_s": [round(s, 2) for s in cli_s],
        "brute_runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}
                       for run in brute_runs],
        "cli_best_s": round(min(cli_s), 2),
        "brute_best_extrapolated_s": round(best_brute["extrapolated_s"], 2),
        "speedup": round(speedup, 1), "goal_met": speedup >= 10 and not problems,
        "answers_identical": not problems, "problems": problems[:20],
        "load_average": os.getloadavg(), "cpus": os.cpu_count(), "profile": profile,
    }


def _report(figures: dict[str, Any]) -> None:
    """Print the figures."""
    bank = figures["bank"]["spec"]
    brute = min(figures["brute_runs"], key=lambda run: run["extrapolated_s"])
    print(f"bank: {bank['images'] * bank['variants']:,} PDQ hashes ({bank['images']:,} pictures "
          f"x {bank['variants']}); {figures['queries']:,} query lines with "
          f"{figures['line_hashes']}")
    print(f"hashsvc lookup, whole process: {figures['cli_best_s']:.2f} s "
          f"(runs {figures['cli_s']})")
    print(f"brute force process: {brute['wall_s']:.2f} s measured with "
          f"{brute['brute_queries']:,} queries (load {brute['load_s']:.2f} s, brute force "
          f"{brute['brute_s']:.2f} s = {brute['brute_queries'] / brute['brute_s']:.0f} queries/s)"
          f"; extrapolated to {brute['queries']:,} queries: {brute['extrapolated_s']:.1f} s")
    print(f"speed-up: {figures['speedup']:.1f}x (goal >= 10x: "
          f"{'met' if figures['goal_met'] else 'NOT met'}); answers on the subset and planted "
          f"copies: {'identical' if figures['answers_identical'] else 'DIFFER'}")
    for problem in figures["problems"]:
        print(f"  {problem}")
    if figures["profile"]:
        print("cProfile of one CLI run, by cumulative time:")
        for line in figures["profile"]:
            print(f"  {line}")


if __name__ == "__main__":
    raise SystemExit(main())
