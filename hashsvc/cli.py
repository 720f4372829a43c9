"""The ``hashsvc`` command line: hash, register, scan, withdraw, demo and store maintenance."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

import click

from hashsvc import __version__
from hashsvc.errors import ConfigError, HashsvcError, InputError
from hashsvc.settings import Settings, load_settings


class Context:
    """Per-invocation state: settings and a lazily opened store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None

    @property
    def store(self) -> Any:
        """The store, opened (and migrated) on first use."""
        if self._store is None:
            from hashsvc.store import Store

            self._store = Store.open(self.settings)
        return self._store


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.version_option(__version__, prog_name="hashsvc")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the embedded store (default: $HASHSVC_DATA_DIR or per-user).")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None) -> None:
    """Register image hashes for victims and find matching files in seized evidence."""
    try:
        settings = load_settings(data_dir=data_dir)
    except HashsvcError as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.obj = Context(settings)


def _fail(exc: Exception) -> click.ClickException:
    """A CLI error with hashsvc's message and no traceback."""
    return click.ClickException(str(exc))


# -- hash ------------------------------------------------------------------------------------

def _expand(paths: Iterable[str]) -> Iterator[str]:
    """Files named, and the files inside folders named, in a stable order."""
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield os.path.join(root, name)
        else:
            yield path


def hash_line(path: str, with_variants: bool, max_pixels: int,
              with_features: bool = False, video: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The JSON object ``hashsvc hash`` prints for one file (with "error" on failure).

    A video (``video`` holds its options: min_quality and limits) is hashed by its sampled
    frames, read from the file without loading it whole (hashsvc.video).
    """
    from hashsvc.decode import decode
    from hashsvc.hashing import exact_hashes, hash_picture
    from hashsvc.video import SNIFF_BYTES, sniff_video

    try:
        with open(path, "rb") as fh:
            video_fmt = sniff_video(fh.read(SNIFF_BYTES))
            if video_fmt is not None:
                return _video_line(path, fh, video_fmt, with_variants, video or {})
            fh.seek(0)
            data = fh.read()
    except OSError as exc:
        return {"file": path, "error": exc.strerror or str(exc), "stage": "read"}
    try:
        picture = decode(data, max_pixels, heif_thumbnail_min_side=None)
        hs = hash_picture(picture, exact_hashes(data), len(data), with_variants)
    except HashsvcError as exc:
        if isinstance(exc.__cause__, MemoryError):  # in a decoding child: its memory limit
            from hashsvc.isolation import memory_limit_message

            return {"file": path, "error": memory_limit_message(), "stage": "decode"}
        return {"file": path, "error": str(exc), "stage": "decode"}
    line: dict[str, Any] = {"file": path, **hs.to_json()}
    if with_features:
        from hashsvc.features import encode_line, extract_registered

        # As sensitive as the picture: it stays with the hashes, on this device or in the bank.
        line["features"] = encode_line(extract_registered(picture.image))
    return line


def _video_line(path: str, fh: Any, fmt: str, with_variants: bool, options: dict[str, Any]
                ) -> dict[str, Any]:
    """The hash line of a video file of sniffed format ``fmt``, open as ``fh``."""
    from hashsvc.isolation import extend_budget
    from hashsvc.video import file_hashes, hash_video

    if "limits" in options:  # the decoder keeps its own time budget; the child's is extended
        extend_budget(options["limits"].time_budget)
    fh.seek(0)
    exact, size = file_hashes(fh)
    fh.seek(0)
    try:
        hs = hash_video(fh, fmt, exact, size, with_variants=with_variants, **options)
    except HashsvcError as exc:
        return {"file": path, "error": str(exc), "stage": "decode"}
    return {"file": path, **hs.to_json()}


def _video_options(settings: Settings) -> dict[str, Any]:
    """How ``hashsvc hash`` samples videos: the same quality floor and limits as scans."""
    from hashsvc.video import limits_from

    return {"min_quality": settings.min_pdq_quality, "limits": limits_from(settings)}


def _hash_one(args: tuple[str, bool, int, bool, dict[str, Any]]) -> dict[str, Any]:
    """Process-pool entry for :func:`hash_line`."""
    return hash_line(*args)


@main.command("hash")
@click.argument("files", nargs=-1, required=True)
@click.option("--no-variants", is_flag=True,
              help="Leave out the rotated/mirrored PDQ variants (rotated copies then miss).")
@click.option("--no-features", is_flag=True,
              help="Leave out local image features: only hashes (cropped copies then miss).")
@click.option("--workers", type=int, default=None, help="Processes (default: every core).")
@pass_ctx
def hash_cmd(ctx: Context, files: tuple[str, ...], no_variants: bool, no_features: bool,
             workers: int | None) -> None:
    """Hash image and video files locally and print one JSON line per file; no image leaves
    the device."""
    paths = list(_expand(files))
    video = _video_options(ctx.settings)
    jobs = [(p, not no_variants, ctx.settings.max_image_pixels, not no_features, video)
            for p in paths]
    n = max(1, min(workers or ctx.settings.worker_count, len(jobs)))
    try:
        failed = _print_lines(_isolated_lines(jobs, n, ctx.settings), sys.stdout, len(jobs))
    except HashsvcError as exc:
        raise _fail(exc) from exc
    if failed:
        click.echo(f"hashsvc hash: {failed} of {len(jobs)} files could not be hashed", err=True)
        sys.exit(1)


def _isolated_lines(jobs: list[tuple[str, bool, int, bool, dict[str, Any]]], workers: int,
                    settings: Settings) -> Iterator[dict[str, Any]]:
    """The hash line of each job, in order, each file decoded in a child process under the
    decoding limits (hashsvc.isolation): a file that crashes or hangs a decoder gets an error
    line and the others are hashed."""
    import tqdm

    import hashsvc.pipeline  # noqa: F401 - imported once here, before children are forked
    from hashsvc.isolation import DecodeLimits, IsolatedPool, start_method

    tqdm.tqdm.monitor_interval = 0  # no monitor thread: a replacement child may be forked later
    with IsolatedPool(workers, _hash_one, DecodeLimits.from_settings(settings),
                      method=start_method()) as pool:
        for i in range(0, len(jobs), 4):
            pool.submit([(i + j, job) for j, job in enumerate(jobs[i:i + 4])])
        done: dict[int, dict[str, Any]] = {}
        following = 0
        while following < len(jobs):
            outcomes = pool.collect()
            if not outcomes:
                raise HashsvcError("hash: the decoding processes lost a file's result")
            for outcome in outcomes:
                assert isinstance(outcome.key, int)
                done[outcome.key] = outcome.result if outcome.failure is None else {
                    "file": outcome.item[0], "error": outcome.failure, "stage": "decode"}
            while following in done:
                yield done.pop(following)
                following += 1


def _print_lines(results: Iterable[dict[str, Any]], out: TextIO, total: int) -> int:
    """Print hash lines with a progress bar on stderr; returns how many failed."""
    from tqdm import tqdm

    failed = 0
    for line in tqdm(results, total=total, unit="file", file=sys.stderr, disable=total < 2,
                     leave=False):
        failed += "error" in line
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    out.flush()
    return failed


# -- register / withdraw ----------------------------------------------------------------------

def read_hash_lines(stream: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line; malformed lines raise InputError."""
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"line {number}: expected a JSON object")
        yield number, obj


@main.command()
@click.option("--case", "case_ref", required=True, help="Case reference, e.g. RPH-2025-0042.")
@click.option("--no-features", is_flag=True,
              help="Keep only hashes: drop any local features in the lines before storing.")
@click.option("--features-consent/--no-features-consent", default=None,
              help="Record whether the victim consented to keeping local features (crop-robust "
                   "matching). Without consent only hashes are stored; withdrawing it erases "
                   "the case's features at once. Default: leave the case's answer (a new "
                   "case: no consent).")
@click.argument("hashfile", type=click.File("r", encoding="utf-8"))
@pass_ctx
def register(ctx: Context, case_ref: str, no_features: bool, features_consent: bool | None,
             hashfile: TextIO) -> None:
    """Add the lines of HASHFILE to the bank: lines as `hashsvc hash` prints them, or lines
    with only some hashes such as {"hashes": {"pdq": HEX}} ('-' for stdin)."""
    from hashsvc.store import normalize_line

    try:
        lines, skipped = [], 0
        for number, obj in read_hash_lines(hashfile):
            if "error" in obj:
                skipped += 1
                continue
            try:
                lines.append(normalize_line(obj))
            except InputError as exc:
                raise InputError(f"line {number}: {exc}") from exc
        result = ctx.store.register(_check_case_ref(case_ref), lines,
                                    keep_features=not no_features,
                                    features_consent=features_consent)
    except HashsvcError as exc:
        raise _fail(exc) from exc
    summary = {"case": case_ref, "images_added": result.images_added,
               "images_already_registered": result.images_existing,
               "hashes_added": result.hashes_added, "lines_with_errors_skipped": skipped}
    click.echo(json.dumps(summary))


def _check_case_ref(ref: str) -> str:
    """A case reference: short, printable, no whitespace."""
    if not ref or len(ref) > 64 or not ref.isprintable() or any(c.isspace() for c in ref):
        raise InputError("a case reference is 1-64 printable characters without spaces")
    return ref


@main.command()
@click.option("--case", "case_ref", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def withdraw(ctx: Context, case_ref: str, yes: bool) -> None:
    """Withdraw every hash of a case: they stop matching and are erased."""
    if not yes:
        click.confirm(f"Withdraw all hashes of case {case_ref}?", abort=True)
    try:
        n = ctx.store.withdraw_case(case_ref)
    except HashsvcError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps({"case": case_ref, "images_withdrawn": n}))


# -- scan -------------------------------------------------------------------------------------

@main.command()
@click.argument("source")
@click.option("--report", "report_path", required=True, help="Where to write the JSON report.")
@click.option("--label", default=None, help="Exhibit label recorded with the scan.")
@click.option("--workers", type=int, default=None, help="Processes (default: every core).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--verify-against", "verify_against", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="A signed deletion report: re-scan a wiped device and write a signed "
                   "verification report (each file gone or present, and new matches).")
@click.option("--examiner", default=None,
              help="With --verify-against: the examiner named (default: the login name).")
@click.option("--resume", "resume_id", default=None, metavar="SCAN_ID",
              help="Continue a scan of SOURCE that stopped (a full disk, a crash): it is run "
                   "again under the same id, and what it had recorded is kept, not repeated.")
@pass_ctx
def scan(ctx: Context, source: str, report_path: str, label: str | None, workers: int | None,
         quiet: bool, verify_against: str | None, examiner: str | None,
         resume_id: str | None) -> None:
    """Scan SOURCE against the bank: a folder, an archive (archives nest), a disk image (raw or
    E01), a phone extraction or cloud export, or s3://bucket/prefix."""
    import uuid

    from sqlalchemy.exc import SQLAlchemyError

    from hashsvc.pipeline import run_scan
    from hashsvc.report import build_report, write_report

    if not source.startswith("s3://"):
        if not os.path.exists(source):
            raise click.ClickException(f"no such file or folder: {source}")
        source = os.path.abspath(source)
    original = None
    if verify_against is not None:  # checked before the scan, not after an hour of it
        from hashsvc.verification import checked_original

        try:
            with open(verify_against, encoding="utf-8") as fh:
                original = json.load(fh)
            checked_original(original, ctx.settings)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read {verify_against}: {exc}") from exc
        except HashsvcError as exc:
            raise _fail(exc) from exc
    settings = ctx.settings.replace(workers=workers) if workers else ctx.settings
    scan_id = resume_id or str(uuid.uuid4())
    if resume_id is not None:
        try:
            previous = ctx.store.get_scan(resume_id)
        except HashsvcError as exc:
            raise _fail(exc) from exc
        if previous.source != source:
            raise click.ClickException(f"scan {resume_id} is of {previous.source}, not {source}")
    try:
        with ScanProgress(disable=quiet) as progress:
            run_scan(ctx.store, settings, source, label, progress, scan_id=scan_id)
    except HashsvcError as exc:  # the source cannot be opened: say why, without a traceback
        raise _fail(exc) from exc
    except (OSError, SQLAlchemyError) as exc:  # a full disk, a lost database
        raise click.ClickException(
            f"scan {scan_id} stopped: {_store_failure(exc, settings)}. What it recorded is "
            f"kept; once that is fixed, continue it with: hashsvc scan {source} --report "
            f"{report_path} --resume {scan_id}") from exc
    report = build_report(ctx.store, scan_id)
    if original is not None:
        _write_verification(ctx, original, scan_id, examiner, report_path)
        return
    write_report(report, report_path)
    click.echo(summary_text(report), err=True)


def _store_failure(exc: BaseException, settings: Settings) -> str:
    """One line on why the store (or the data folder) failed a scan."""
    import errno

    orig = getattr(exc, "orig", None) or exc
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    full = "disk is full" in text or getattr(orig, "errno", None) == errno.ENOSPC
    return f"{text} (no space left in {settings.data_path})" if full else text


def _write_verification(ctx: Context, original: Any, scan_id: str, examiner: str | None,
                        out: str) -> None:
    """Write the signed verification report of a re-scan and print its summary."""
    import getpass

    from hashsvc import audit
    from hashsvc.deletion_report import write_rendering
    from hashsvc.verification import verification_envelope

    try:
        envelope = verification_envelope(ctx.store, ctx.settings, original, scan_id,
                                         {"examiner": examiner or getpass.getuser()})
    except HashsvcError as exc:
        raise _fail(exc) from exc
    write_rendering(envelope, "json", out)
    summary = envelope["document"]["summary"]
    audit.record(ctx.store, action="scan.verification_report", target_type="scan",
                 target_id=scan_id, details={"via": "cli", **{
                     k: summary[k] for k in ("files", "gone", "present", "new_matches")}})
    click.echo(f"verification of scan {scan_id}: {summary['statement']}", err=True)


class ScanProgress:
    """A tqdm bar on stderr whose total grows as archives reveal their members."""

    def __init__(self, disable: bool = False) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="file", file=sys.stderr, disable=disable,
                        dynamic_ncols=True, mininterval=0.2)
        self.last = 0.0

    def __enter__(self) -> "ScanProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def __call__(self, totals: Any) -> None:
        """Update the bar from the scan's running totals (at most five times a second)."""
        now = time.monotonic()
        if now - self.last < 0.2 and totals.done < totals.discovered:
            return
        self.last = now
        self.bar.total = totals.discovered
        self.bar.n = totals.done
        self.bar.set_postfix(images=totals.images, matches=totals.matches,
                             errors=totals.errors, refresh=False)
        self.bar.refresh()


def summary_text(report: dict[str, Any]) -> str:
    """A few human lines about a finished scan."""
    lines = [
        f"scan {report['scan_id']} of {report['source']}: {report['state']}",
        f"  files scanned: {report['files_scanned']}  images hashed: {report['images_hashed']}",
        f"  matched files: {len(report['matches'])}  errors: {len(report['errors'])}"
        + (f"  skipped: {sum(report['skipped'].values())}" if report["skipped"] else ""),
    ]
    for m in report["matches"][:20]:
        strength = (f"inliers={m['distances'].get('orb_inliers')}" if m["distance"] is None
                    else f"distance={m['distance']}")
        if m.get("video", {}).get("matched_frames") is not None:
            strength += f" frames={m['video']['matched_frames']}"
        lines.append(f"  MATCH {m['path']}  case {m['case']}  {m['algorithm']} {strength}")
    if len(report["matches"]) > 20:
        lines.append(f"  ... and {len(report['matches']) - 20} more in the report")
    return "\n".join(lines)


# -- deletion reports (docs/deletion-report.md) -----------------------------------------------

class ReportGroup(click.Group):
    """``hashsvc report verify FILE``; any other first word goes to the ``default_command``
    (``hashsvc report SCAN_ID --format ... --out FILE``, registered by the review layer as
    ``@report.command(ReportGroup.default_command)``)."""

    default_command = "build"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-") \
                and self.default_command in self.commands:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@main.group(cls=ReportGroup)
def report() -> None:
    """Signed deletion reports: write one (report SCAN_ID --format ... --out FILE), or check one
    (report verify FILE)."""


@report.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--public-key", "public_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Trust this key (PEM, base64, or the JSON of GET /v1/keys); repeatable. "
                   "Default: this deployment's report keys, where it has any.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_ctx
def report_verify(ctx: Context, file: str, public_keys: tuple[str, ...], as_json: bool) -> None:
    """Check the signature of a deletion report (JSON); exit 1, naming what changed, if it fails."""
    from hashsvc.deletion_report import deployment_trusted_keys, read_trusted_keys, verify_file

    try:
        if public_keys:
            trusted = read_trusted_keys(public_keys)
        else:
            try:
                trusted = deployment_trusted_keys(ctx.settings)
            except ConfigError as exc:  # e.g. the key is not readable by this user
                click.echo(f"hashsvc report verify: not using this deployment's key: {exc}",
                           err=True)
                trusted = None
        verdict = verify_file(file, trusted)
    except HashsvcError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False) if as_json
               else verdict.summary())
    sys.exit(0 if verdict.valid else 1)


# -- bank and store ----------------------------------------------------------------------------

@main.group()
def bank() -> None:
    """Inspect the bank of registered hashes."""


@bank.command("stats")
@pass_ctx
def bank_stats(ctx: Context) -> None:
    """Counts of cases, images and hashes."""
    click.echo(json.dumps(ctx.store.bank_stats()))


@main.group()
def db() -> None:
    """Database schema maintenance."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Create or migrate the schema to the newest revision."""
    from hashsvc.store import make_engine, migrate

    engine = make_engine(ctx.settings.db_url)
    migrate.upgrade(engine)
    click.echo(f"schema up to date at {engine.url.render_as_string(hide_password=True)}")


# -- demo -------------------------------------------------------------------------------------

@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to build the sample bank and dump (default: a new temporary folder).")
def demo(workdir: str | None) -> None:
    """Build a sample bank and a sample dump from packaged photos, scan it, print the summary."""
    from hashsvc.demo import run_demo

    sys.exit(run_demo(Path(workdir) if workdir else None))


from hashsvc import cli_service  # noqa: E402,F401  (registers serve and admin on main)


from hashsvc import cli_jobs  # noqa: E402,F401
from hashsvc import cli_review  # noqa: E402,F401  (review, report build)
from hashsvc import cli_lookup  # noqa: E402,F401  (lookup)
from hashsvc import cli_sync  # noqa: E402,F401  (sync)


if __name__ == "__main__":  # pragma: no cover
    main()
