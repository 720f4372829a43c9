"""The scan pipeline: walk a source, hash every file on every core, match, record.

Embedded mode calls :func:`run_scan` inline; the service's RQ jobs call :func:`scan_items` on
batches. Decoding happens in child processes under memory, CPU-time and wall-clock limits
(:mod:`hashsvc.isolation`), so that a decoder that crashes or hangs costs one file, and results
are written idempotently so that a repeated batch changes nothing.
"""

from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from hashsvc.decode import HEIF_THUMBNAIL_MIN_SIDE, decode, sniff
from hashsvc.features import extract, from_bytes, to_bytes
from hashsvc.errors import DecodeError, HashsvcError
from hashsvc.hashing import HashSet, exact_hashes, hash_picture
from hashsvc.embedded import embedded_pictures
from hashsvc.isolation import DecodeLimits, IsolatedPool, Outcome, extend_budget, \
    memory_limit_message
from hashsvc.locators import Link, Locator
from hashsvc.matching import BankMatcher, Candidate
from hashsvc.settings import Settings
from hashsvc.sources import walk
from hashsvc.sources.base import ContainerSeen, Entry, EvidenceSeen, Problem
from hashsvc.store import Store, locator_hash
from hashsvc.video import (MAX_FRAME_PIXELS, SNIFF_BYTES, VIDEO_FORMATS, NoVideoStream,
                           VideoLimits, file_hashes, hash_video, is_video_name, sniff_video)

#: Link kinds of pictures embedded in a file (hashsvc.embedded).
EMBEDDED_KINDS = frozenset({"exif-thumbnail", "heif-thumbnail"})

#: Stage of the problem recorded for a video that was hashed only in part (a decoding limit).
VIDEO_LIMIT_STAGE = "video-limit"

log = logging.getLogger(__name__)

@dataclass
class Task:
    """One file for a worker process: a path on disk, or bytes already read."""

    key: str
    path: str | None = None
    data: bytes | None = None
    max_file_bytes: int = 0
    max_pixels: int = 0
    read_error: str | None = None  # the bytes could not be read in the walking process
    name: str = ""  # display path, for messages and the extension check
    heif_thumbnails: bool = True
    features: bool = False  # extract local features for the second stage
    # Videos (hashsvc.video): frames below this PDQ quality are dropped; decoding limits.
    min_pdq_quality: int = 50
    max_video_seconds: float = 14400.0
    video_time_budget: float = 600.0


@dataclass
class FileResult:
    """What a worker found out about one file."""

    key: str
    status: str  # "hashed", "not-image", "error"
    hashset: HashSet | None = None
    size: int | None = None
    stage: str = ""
    message: str = ""
    exact: dict[str, str] = field(default_factory=dict)
    features: bytes | None = None  # local features (hashsvc.features.to_bytes), if extracted
    format_sniffed: str | None = None  # the format the content sniffed as, decoded or not
    #: Pictures found inside this file (an EXIF thumbnail): (link kind, link name, result).
    #: A thumbnail can outlive an edit or the deletion of its original, so each is matched.
    children: list[tuple[str, str, "FileResult"]] = field(default_factory=list)


def process_task(task: Task) -> FileResult:
    """Read, sniff, decode and hash one file; every failure becomes an error result."""
    if task.read_error is not None:
        return FileResult(task.key, "error", stage="read", message=task.read_error)
    if task.path is not None and task.data is None:
        video = _video_on_disk(task)  # decoded from the file, whatever its size
        if video is not None:
            return video
    try:
        data = _task_bytes(task)
    except (OSError, HashsvcError) as exc:
        return FileResult(task.key, "error", stage="read", message=_message(exc))
    return process_data(task, data)


def process_data(task: Task, data: bytes, depth: int = 0) -> FileResult:
    """Hash one file's bytes, and the pictures embedded in it (EXIF and HEIF thumbnails)."""
    res = _hash_data(task, data)
    if depth == 0 and res.format_sniffed and res.format_sniffed not in VIDEO_FORMATS:
        # A HEIF hashed from its own thumbnail: that thumbnail is not a child as well.
        stand_in = res.hashset is not None and res.hashset.from_thumbnail
        for kind, name, blob in _embedded(data, res.format_sniffed, stand_in):
            child = process_data(task, blob, depth + 1)
            child.key = f"{task.key}#{kind}:{name}"
            res.children.append((kind, name, child))
    return res


def _embedded(data: bytes, fmt: str, heif_stand_in: bool = False
              ) -> list[tuple[str, str, bytes]]:
    """Pictures embedded in an image file; a broken container yields none, never an error."""
    try:
        return embedded_pictures(data, fmt, heif_stand_in=heif_stand_in)
    except Exception:  # noqa: BLE001 - the file itself was hashed; its thumbnails are a bonus
        return []


def _hash_data(task: Task, data: bytes) -> FileResult:
    """Sniff, decode and hash one file's bytes."""
    exact = exact_hashes(data)
    fmt = sniff(data[:64])
    if fmt is None:
        video_fmt = sniff_video(data[:SNIFF_BYTES])
        if video_fmt is not None:
            extend_budget(task.video_time_budget)  # the video decoder keeps its own budget
            return _hash_video(task, video_fmt, io.BytesIO(data), exact, len(data))
        if data and is_video_name(task.name):
            return FileResult(task.key, "error", size=len(data), stage="sniff", exact=exact,
                              message="named like a video but the content is not a "
                                      "recognised video format (corrupt, encrypted or wrong)")
        if data and _named_like_image(task.name):
            return FileResult(task.key, "error", size=len(data), stage="sniff", exact=exact,
                              message="named like an image but the content is not a "
                                      "recognised image format (corrupt, encrypted or wrong)")
        return FileResult(task.key, "not-image", size=len(data), exact=exact)
    try:
        picture = decode(data, task.max_pixels, heif_thumbnail_min_side=(
            HEIF_THUMBNAIL_MIN_SIDE if task.heif_thumbnails else None))
        hs = hash_picture(picture, exact, len(data))
    except DecodeError as exc:
        # decode() reports a MemoryError as a DecodeError caused by it: in a decoding child
        # that is the memory limit (hashsvc.isolation).
        message = memory_limit_message() if isinstance(exc.__cause__, MemoryError) else str(exc)
        return FileResult(task.key, "error", size=len(data), stage="decode",
                          message=message, exact=exact, format_sniffed=fmt)
    except MemoryError:
        return FileResult(task.key, "error", size=len(data), stage="decode",
                          message=memory_limit_message(), exact=exact, format_sniffed=fmt)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one file, not the scan
        return FileResult(task.key, "error", size=len(data), stage="decode",
                          message=f"decoder failed: {type(exc).__name__}: {exc}", exact=exact,
                          format_sniffed=fmt)
    features = None
    if task.features:
        try:
            features = to_bytes(extract(picture.image))
        except (ValueError, MemoryError, cv2_error()) as exc:
            # The hashes stand; only the second stage is lost for this file, and recorded.
            why = memory_limit_message() if isinstance(exc, MemoryError) else exc
            return FileResult(task.key, "hashed", hashset=hs, size=len(data), exact=exact,
                              stage="features", message=f"local features failed: {why}",
                              format_sniffed=fmt)
    return FileResult(task.key, "hashed", hashset=hs, size=len(data), exact=exact,
                      features=features, format_sniffed=fmt)


def _video_on_disk(task: Task) -> FileResult | None:
    """Hash a video file on disk streamed from its path (None when it is no video)."""
    assert task.path is not None
    try:
        with open(task.path, "rb") as fh:
            fmt = sniff_video(fh.read(SNIFF_BYTES))
            if fmt is None:
                return None
            extend_budget(task.video_time_budget)  # before reading it whole: it may be long
            fh.seek(0)
            exact, size = file_hashes(fh)
            fh.seek(0)
            return _hash_video(task, fmt, fh, exact, size)
    except OSError:
        return None  # reading it again reports the error


def _hash_video(task: Task, fmt: str, fh: IO[bytes], exact: dict[str, str],
                size: int) -> FileResult:
    """Decode and hash a video's sampled frames; a failure keeps the exact hashes."""
    limits = VideoLimits(max_seconds=task.max_video_seconds, time_budget=task.video_time_budget,
                         max_frame_pixels=min(task.max_pixels or MAX_FRAME_PIXELS,
                                              MAX_FRAME_PIXELS))
    try:
        # One decoding thread: the pool already runs a process per core.
        hs = hash_video(fh, fmt, exact, size, min_quality=task.min_pdq_quality,
                        limits=limits, threads=1)
    except NoVideoStream:
        return FileResult(task.key, "not-image", size=size, exact=exact, format_sniffed=fmt)
    except DecodeError as exc:
        return FileResult(task.key, "error", size=size, stage="decode", message=str(exc),
                          exact=exact, format_sniffed=fmt)
    except MemoryError:
        return FileResult(task.key, "error", size=size, stage="decode",
                          message=memory_limit_message(), exact=exact, format_sniffed=fmt)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one file, not the scan
        return FileResult(task.key, "error", size=size, stage="decode",
                          message=f"video decoder failed: {type(exc).__name__}: {exc}",
                          exact=exact, format_sniffed=fmt)
    res = FileResult(task.key, "hashed", hashset=hs, size=size, exact=exact,
                     format_sniffed=fmt)
    if hs.partial:
        # Hashed and matched for what decoded; the rest was not examined, and says so.
        res.stage, res.message = VIDEO_LIMIT_STAGE, f"video hashed in part: {hs.partial}"
    return res


def cv2_error() -> type[Exception]:
    """OpenCV's exception type (imported lazily: workers without the second stage skip it)."""
    import cv2

    return cv2.error


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif",
                  ".tiff", ".heic", ".heif", ".avif", ".hif")


def _named_like_image(name: str) -> bool:
    """Whether a file's name claims it is an image (reported when the content disagrees)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def process_chunk(tasks: list[Task]) -> list[FileResult]:
    """Process several tasks in one worker call (amortises inter-process overhead)."""
    return [process_task(t) for t in tasks]


def _task_bytes(task: Task) -> bytes:
    """The task's bytes, read from disk if needed, bounded by the file size limit."""
    if task.data is not None:
        return task.data
    assert task.path is not None
    with open(task.path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if task.max_file_bytes and size > task.max_file_bytes:
            raise HashsvcError(f"file of {size:,} bytes is over the limit of "
                               f"{task.max_file_bytes:,} bytes")
        # read(n) reserves n bytes up front, so ask for what fstat promised and one byte more
        # (never for the limit itself: a decoding child's address space is limited); a file
        # that grew since is read on, up to the limit.
        cap = task.max_file_bytes + 1 if task.max_file_bytes else None
        data = fh.read(size + 1 if cap is None else min(size + 1, cap))
        if len(data) <= size:
            return data
        parts, got = [data], len(data)
        while cap is None or got < cap:
            block = fh.read(1 << 20 if cap is None else min(1 << 20, cap - got))
            if not block:
                break
            parts.append(block)
            got += len(block)
        return b"".join(parts)


def _message(exc: BaseException) -> str:
    """A one-line message for an error entry."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text


@dataclass
class ScanTotals:
    """Running counts of one scan, for progress display."""

    discovered: int = 0
    done: int = 0
    images: int = 0
    matches: int = 0
    errors: int = 0


class Recorder:
    """Turns walk items and worker results into store rows, written in batches."""

    def __init__(self, store: Store, scan_id: str, matcher: BankMatcher,
                 batch_size: int = 256, flush_seconds: float = 2.0) -> None:
        self.store = store
        self.scan_id = scan_id
        self.matcher = matcher
        self.batch_size = batch_size
        self.files: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.results: list[tuple[Locator, FileResult]] = []
        self.totals = ScanTotals()
        self.flush_seconds = flush_seconds
        self.last_flush = time.monotonic()

    def problem(self, problem: Problem) -> None:
        """Record a walk problem (an error, or a counted skip)."""
        key = problem.locator.key()
        self.problems.append({
            "locator_hash": locator_hash(key), "path": problem.locator.path,
            "stage": problem.stage[:32], "message": problem.message, "skipped": problem.skipped,
            "reason": (problem.reason or None) and problem.reason[:32]})
        if not problem.skipped:
            self.totals.errors += 1
        self._maybe_flush()

    def container(self, seen: ContainerSeen) -> None:
        """Record an archive that was examined (it counts as a scanned file)."""
        key = seen.info.locator.key()
        self.files.append({"locator_hash": locator_hash(key), "locator": key,
                           "path": seen.info.locator.path, "status": "container",
                           "size": seen.info.size, "format": seen.kind[:16]})
        self.totals.done += 1
        self._maybe_flush()

    def evidence(self, seen: EvidenceSeen) -> None:
        """Record an evidence item the source opened (written at once: there are few)."""
        key = seen.locator.key()
        self.store.record_evidence(self.scan_id, [{
            "locator_hash": locator_hash(key), "locator": key, "path": seen.locator.path,
            "kind": seen.kind[:32], "size": seen.size, "sha256": seen.sha256, "md5": seen.md5,
            "stored_md5": seen.stored_md5, "verified": seen.verified,
            "details": seen.details or None}])

    def result(self, locator: Locator, res: FileResult) -> None:
        """Queue a worker result, and those of pictures embedded in it, for matching."""
        self._queue(locator, res)
        # Flush by size, and every few seconds so that progress and findings reach the store
        # promptly on slow sources. A file and its embedded pictures go in the same flush.
        if (len(self.results) >= self.batch_size
                or time.monotonic() - self.last_flush > self.flush_seconds):
            self.flush()

    def _queue(self, locator: Locator, res: FileResult) -> None:
        """Queue one result and its children's (embedded pictures first)."""
        for kind, name, child in res.children:
            self._queue(locator.child(Link(kind, name)), child)
        self.results.append((locator, res))
        self.totals.done += 1
        self.totals.images += res.status == "hashed"
        self.totals.errors += res.status == "error"

    def _maybe_flush(self) -> None:
        """Flush when enough rows are waiting."""
        if len(self.files) + len(self.problems) >= self.batch_size:
            self.flush()

    def _second_stage(self, hashsets: list[HashSet], candidates: list[list[Candidate]]) -> None:
        """Search local features of the images the hashes did not match (in place)."""
        todo = [i for i, ((_, res), cands) in enumerate(zip(self.results, candidates))
                if not cands and res.features is not None]
        if not todo:
            return
        found = self.matcher.match_features([hashsets[i] for i in todo],
                                            [from_bytes(self.results[i][1].features or b"")
                                             for i in todo])
        for i, cands in zip(todo, found):
            candidates[i] = cands

    def _drop_repeated_embedded(self, candidates: list[list[Candidate]]) -> None:
        """An embedded thumbnail that matches the same registered image as its own file adds
        nothing (deleting the file deletes it): only a thumbnail that matches where its file
        does not, or matches another image, is a finding of its own. In place."""
        embedded = [i for i, ((loc, _), cands) in enumerate(zip(self.results, candidates))
                    if cands and len(loc.links) > 1 and loc.links[-1].kind in EMBEDDED_KINDS]
        if not embedded:  # the usual flush: nothing to compare
            return
        found = {loc.key(): {c.image_id for c in cands}
                 for (loc, _), cands in zip(self.results, candidates) if cands}
        for i in embedded:
            parent = found.get(Locator(self.results[i][0].links[:-1]).key(), set())
            candidates[i] = [c for c in candidates[i] if c.image_id not in parent]

    def flush(self) -> None:
        """Match queued results and write everything queued in one transaction."""
        matches: list[dict[str, Any]] = []
        hashsets = [_as_hashset(res) for _, res in self.results]
        if hashsets:
            self.matcher.refresh_if_stale()  # a withdrawal stops matching mid-scan too
        candidates = self.matcher.match_many(hashsets) if hashsets else []
        self._second_stage(hashsets, candidates)
        self._drop_repeated_embedded(candidates)
        for (locator, res), hs, cands in zip(self.results, hashsets, candidates):
            key = locator.key()
            lh = locator_hash(key)
            self.files.append({
                "locator_hash": lh, "locator": key, "path": locator.path, "status": res.status,
                "size": res.size, "sha256": hs.sha256 or None, "md5": hs.md5 or None,
                "format": hs.format if res.status == "hashed" else None,
                "hashes": dict(hs.hashes) or None, "from_thumbnail": hs.from_thumbnail})
            if res.status == "not-image" and res.size == 0:
                self.problems.append({"locator_hash": lh, "path": locator.path,
                                      "stage": "read", "message": "empty file",
                                      "skipped": True, "reason": "empty"})
            if res.status == "error" or res.stage in ("features", VIDEO_LIMIT_STAGE):
                self.problems.append({"locator_hash": lh, "path": locator.path,
                                      "stage": res.stage, "message": res.message,
                                      "skipped": False, "reason": None})
            matches.extend(_match_row(lh, c) for c in cands)
            self.totals.matches += 1 if cands else 0
        self.store.record_results(self.scan_id, self.files, matches, self.problems)
        self.files, self.problems, self.results = [], [], []
        self.last_flush = time.monotonic()


def _as_hashset(res: FileResult) -> HashSet:
    """The hash set to match: full for images, exact hashes only for other files."""
    if res.hashset is not None:
        return res.hashset
    return HashSet(sha256=res.exact.get("sha256", ""), md5=res.exact.get("md5", ""),
                   size=res.size or 0, format="", width=0, height=0, hashes={})


def _match_row(lh: str, cand: Candidate) -> dict[str, Any]:
    """A scan_matches row for one candidate."""
    return {"locator_hash": lh, "image_id": cand.image_id, "case_ref": cand.case,
            "algorithm": cand.algorithm, "distance": cand.distance,
            "distances": dict(cand.distances), "variant": cand.variant, "video": cand.video}


def make_pool(workers: int) -> ProcessPoolExecutor:
    """A plain pool of processes started with forkserver (no inherited locks), without the
    decoding limits: for trusted work only. Untrusted bytes go to :class:`Hasher`."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hashsvc.pipeline"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread)


def _one_thread() -> None:
    """Keep OpenCV to one thread per hashing process: the pool already uses every core."""
    import cv2

    cv2.setNumThreads(1)


#: A 1x1 grey PNG, decoded by each decoding child before its limits are set.
_WARM_UP_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08"
                b"\x00\x00\x00\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01"
                b"H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")


def _init_decoder() -> None:
    """Set up a decoding child: one OpenCV thread, and the lazy set-up of the decoders done
    once (so that the memory limit, set next, is counted from a warm process)."""
    _one_thread()
    process_task(Task("warm-up", data=_WARM_UP_PNG, name="warm-up.png"))


def _first_result(fn: Callable[[list[Task]], list[FileResult]], task: Task) -> FileResult:
    """Run a chunk function on one task (a decoding child answers file by file)."""
    return fn([task])[0]


def failed_result(task: Task, message: str) -> FileResult:
    """The error result of a file whose decoding child died or ran out of time.

    Its exact hashes are computed here (reading bytes is safe; decoding them was not), so the
    file still matches a registration by sha256 or md5 and the report identifies it.
    """
    exact: dict[str, str] = {}
    size: int | None = None
    try:
        if task.data is not None:
            exact, size = exact_hashes(task.data), len(task.data)
        elif task.path is not None:
            with open(task.path, "rb") as fh:
                exact, size = file_hashes(fh)
    except OSError:
        pass
    return FileResult(task.key, "error", size=size, stage="decode", message=message,
                      exact=exact)


class Hasher:
    """Runs tasks in isolated decoding children (:mod:`hashsvc.isolation`): a file that crashes
    a decoder, hangs it or makes it allocate without end costs itself, recorded as an error;
    every other file, those of the same chunk too, is hashed. Memory stays bounded: at most
    ``2 * workers + 2`` chunks are queued or running."""

    def __init__(self, workers: int, chunk_size: int,
                 fn: Callable[[list[Task]], list[FileResult]] = process_chunk,
                 limits: DecodeLimits | None = None, method: str = "forkserver") -> None:
        self.workers = workers
        self.chunk_size = chunk_size
        self.fn = fn
        self.limits = limits if limits is not None else DecodeLimits()
        self.pool = IsolatedPool(workers, functools.partial(_first_result, fn), self.limits,
                                 method=method, initializer=_init_decoder)

    def close(self) -> None:
        """Stop the decoding children (killing any still busy)."""
        self.pool.close()

    def submit(self, tasks: list[Task]) -> Iterator[FileResult]:
        """Submit a chunk; yields results that came in while waiting for room."""
        self.pool.submit([(t.key, t) for t in tasks])
        while self.pool.chunks_pending >= 2 * self.workers + 2:
            yield from self._results(self.pool.collect())

    def drain(self) -> Iterator[FileResult]:
        """Results of every chunk still running."""
        while True:
            outcomes = self.pool.collect()
            if not outcomes:
                return
            yield from self._results(outcomes)

    @staticmethod
    def _results(outcomes: list[Outcome]) -> Iterator[FileResult]:
        """File results of the pool's outcomes; a failure becomes an error result."""
        for outcome in outcomes:
            if outcome.failure is None:
                yield outcome.result
            else:
                yield failed_result(outcome.item, outcome.failure)


def make_hasher(settings: Settings, workers: int | None = None,
                method: str = "forkserver") -> Hasher:
    """A :class:`Hasher` with the settings' chunk size and decoding limits."""
    return Hasher(settings.worker_count if workers is None else workers, settings.chunk_size,
                  limits=DecodeLimits.from_settings(settings), method=method)


class InlineHasher:
    """Runs tasks in this process, one after another, without isolation: a decoder that
    crashes takes this process with it. For tests and trusted input only."""

    def __init__(self, fn: Callable[[list[Task]], list[FileResult]] = process_chunk) -> None:
        self.fn = fn

    def submit(self, tasks: list[Task]) -> Iterator[FileResult]:
        """Process a chunk now and yield its results."""
        yield from self.fn(tasks)

    def drain(self) -> Iterator[FileResult]:
        """Nothing is ever pending."""
        return iter(())

    def close(self) -> None:
        """Nothing to stop."""


def run_scan(store: Store, settings: Settings, source: str, label: str | None = None,
             progress: Callable[[ScanTotals], None] | None = None,
             scan_id: str | None = None) -> str:
    """Scan ``source`` against the bank inline (embedded mode); returns the scan id."""
    scan_id = store.create_scan(source, label, {"matching": settings.matching_summary()},
                                scan_id)
    reserve = _reserve_space(store, settings)
    try:
        matcher = BankMatcher(store, settings)
        store.set_scan_state(scan_id, "running", bank_cursor=matcher.cursor)
        recorder = Recorder(store, scan_id, matcher, flush_seconds=settings.flush_seconds)
        scan_items(walk(source, settings.limits), recorder, settings, progress)
    except BaseException:
        _mark_failed(store, scan_id, reserve)
        raise
    store.set_scan_state(scan_id, "done")
    return scan_id


#: Space an embedded scan keeps in the data folder (a file of this name and size) so that, when
#: the disk fills up under it, it can still record that it failed: the file is deleted then, and
#: taken again by the next scan.
RESERVE_NAME = "reserved-space"
RESERVE_BYTES = 1 << 20


def _reserve_space(store: Store, settings: Settings) -> Path | None:
    """The embedded store's reserve file, allocated if missing (None: PostgreSQL, or no room)."""
    if store.engine.dialect.name != "sqlite":
        return None
    path = settings.data_path / RESERVE_NAME
    try:
        if path.stat().st_size >= RESERVE_BYTES:
            return path
    except OSError:
        pass
    try:
        with open(path, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, RESERVE_BYTES)
    except OSError as exc:
        log.warning("could not reserve %d bytes in %s: %s", RESERVE_BYTES, path.parent, exc)
        path.unlink(missing_ok=True)
        return None
    return path


def _mark_failed(store: Store, scan_id: str, reserve: Path | None = None) -> None:
    """Record that a scan stopped. On a full disk the store may take no write at all: the
    reserve file is given up so that this one can be made."""
    for attempt in range(2):
        try:
            store.set_scan_state(scan_id, "failed")
            return
        except Exception as exc:  # noqa: BLE001 - the error that stopped the scan is raised
            if attempt == 0 and reserve is not None and reserve.exists():
                reserve.unlink()
                continue
            log.warning("could not record scan %s as failed: %s", scan_id, _first_line(exc))
            return


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (a database error's own, without SQL)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def scan_items(items: Iterable[Any], recorder: Recorder, settings: Settings,
               progress: Callable[[ScanTotals], None] | None = None,
               hasher: Hasher | InlineHasher | None = None) -> ScanTotals:
    """Hash and record every item of a walk; the core loop shared by every mode."""
    if hasher is None:
        hasher = make_hasher(settings)
    locators: dict[str, Locator] = {}
    chunk: list[Task] = []

    def consume(results: Iterable[FileResult]) -> None:
        for res in results:
            recorder.result(locators.pop(res.key), res)
            if progress:
                progress(recorder.totals)

    try:
        for item in items:
            if isinstance(item, Problem):
                recorder.problem(item)
            elif isinstance(item, EvidenceSeen):
                recorder.evidence(item)
            elif isinstance(item, ContainerSeen):
                recorder.totals.discovered += 1
                recorder.container(item)
            elif isinstance(item, Entry):
                recorder.totals.discovered += 1
                task = _task_for(item, settings)
                if task.key in locators:  # a reader gave two files one locator: keep both
                    log.warning("two files at one locator in the source: %s", task.name)
                    task.key = f"{task.key}#{len(locators)}"
                locators[task.key] = item.info.locator
                chunk.append(task)
                if len(chunk) >= settings.chunk_size:
                    consume(hasher.submit(chunk))
                    chunk = []
            if progress:
                progress(recorder.totals)
        if chunk:
            consume(hasher.submit(chunk))
        consume(hasher.drain())
    except BaseException:
        hasher.close()
        try:
            recorder.flush()  # keep what was found before the failure
        except Exception as exc:  # noqa: BLE001 - the failure that stopped the scan is raised
            log.warning("could not record the last results before the scan stopped: %s",
                        _first_line(exc))
        raise
    hasher.close()
    recorder.flush()
    return recorder.totals


def _task_for(entry: Entry, settings: Settings) -> Task:
    """A worker task for a walk entry: by path for plain files, else with its bytes."""
    key = entry.info.locator.key()
    name = entry.info.locator.path
    if entry.fs_path is not None:
        return Task(key, path=entry.fs_path, max_file_bytes=settings.max_file_bytes,
                    max_pixels=settings.max_image_pixels, name=name,
                    heif_thumbnails=settings.heif_thumbnails, features=settings.features_stage,
                    **_video_options(settings))
    try:
        data = entry.read()
    except (OSError, HashsvcError, EOFError) as exc:
        return Task(key, read_error=_message(exc), name=name)
    return Task(key, data=data, max_file_bytes=settings.max_file_bytes,
                max_pixels=settings.max_image_pixels, name=name,
                heif_thumbnails=settings.heif_thumbnails, features=settings.features_stage,
                **_video_options(settings))


def _video_options(settings: Settings) -> dict[str, Any]:
    """The settings a worker needs to hash videos."""
    return {"min_pdq_quality": settings.min_pdq_quality,
            "max_video_seconds": settings.max_video_seconds,
            "video_time_budget": settings.video_time_budget}

