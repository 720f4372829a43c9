"""The scan pipeline: walk a source, hash every file on every core, match, record.

Embedded mode calls :func:`run_scan` inline; the service's RQ jobs call :func:`scan_items` on
batches. Decoding happens in worker processes so that a decoder that crashes costs one file,
and results are written idempotently so that a repeated batch changes nothing.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator

from hashsvc.decode import HEIF_THUMBNAIL_MIN_SIDE, decode, sniff
from hashsvc.features import extract, from_bytes, to_bytes
from hashsvc.errors import DecodeError, HashsvcError
from hashsvc.hashing import HashSet, exact_hashes, hash_picture
from hashsvc.embedded import embedded_pictures
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
        return FileResult(task.key, "error", size=len(data), stage="decode",
                          message=str(exc), exact=exact, format_sniffed=fmt)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one file, not the scan
        return FileResult(task.key, "error", size=len(data), stage="decode",
                          message=f"decoder failed: {type(exc).__name__}: {exc}", exact=exact,
                          format_sniffed=fmt)
    features = None
    if task.features:
        try:
            features = to_bytes(extract(picture.image))
        except (ValueError, cv2_error()) as exc:
            # The hashes stand; only the second stage is lost for this file, and recorded.
            return FileResult(task.key, "hashed", hashset=hs, size=len(data), exact=exact,
                              stage="features", message=f"local features failed: {exc}",
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
        return fh.read(task.max_file_bytes + 1 if task.max_file_bytes else -1)


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
                 batch_size: int = 256) -> None:
        self.store = store
        self.scan_id = scan_id
        self.matcher = matcher
        self.batch_size = batch_size
        self.files: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.results: list[tuple[Locator, FileResult]] = []
        self.totals = ScanTotals()
        self.flush_seconds = 2.0
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
    """A pool of decode/hash processes, started with forkserver (no inherited locks)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hashsvc.pipeline"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread)


def _one_thread() -> None:
    """Keep OpenCV to one thread per hashing process: the pool already uses every core."""
    import cv2

    cv2.setNumThreads(1)


class Hasher:
    """Runs tasks on a process pool with bounded memory, surviving crashed workers."""

    def __init__(self, workers: int, chunk_size: int,
                 fn: Callable[[list[Task]], list[FileResult]] = process_chunk) -> None:
        self.workers = workers
        self.chunk_size = chunk_size
        self.fn = fn
        self.pool = make_pool(workers)
        self.pending: dict[Future[list[FileResult]], list[Task]] = {}

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, tasks: list[Task]) -> Iterator[FileResult]:
        """Submit a chunk; yields results of chunks that finished while waiting for room."""
        self.pending[self.pool.submit(self.fn, tasks)] = tasks
        while len(self.pending) >= 2 * self.workers + 2:
            yield from self._collect(FIRST_COMPLETED)

    def drain(self) -> Iterator[FileResult]:
        """Results of every chunk still running."""
        while self.pending:
            yield from self._collect(FIRST_COMPLETED)

    def _collect(self, when: str) -> Iterator[FileResult]:
        """Wait for chunks and yield their results; on a crashed pool, retry file by file."""
        done, _ = wait(list(self.pending), return_when=when)
        broken: list[Task] = []
        for fut in done:
            tasks = self.pending.pop(fut)
            try:
                yield from fut.result()
            except BrokenProcessPool:
                broken.extend(tasks)
        if broken:
            broken.extend(t for ts in self.pending.values() for t in ts)
            self.pending.clear()
            yield from self._retry_alone(broken)

    def _retry_alone(self, tasks: list[Task]) -> Iterator[FileResult]:
        """After a worker died, run each affected file alone so only the culprit fails."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for task in tasks:
            pool = make_pool(1)
            try:
                yield from pool.submit(self.fn, [task]).result()
            except BrokenProcessPool:
                yield FileResult(task.key, "error", stage="decode",
                                 message="the decoder crashed the worker process on this file")
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        self.pool = make_pool(self.workers)


class InlineHasher:
    """Runs tasks in this process, one after another: for RQ workers, where the worker process
    is itself the unit of parallelism, and for tests."""

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
    matcher = BankMatcher(store, settings)
    store.set_scan_state(scan_id, "running", bank_cursor=matcher.cursor)
    recorder = Recorder(store, scan_id, matcher)
    try:
        scan_items(walk(source, settings.limits), recorder, settings, progress)
    except BaseException:
        recorder.flush()
        store.set_scan_state(scan_id, "failed")
        raise
    store.set_scan_state(scan_id, "done")
    return scan_id


def scan_items(items: Iterable[Any], recorder: Recorder, settings: Settings,
               progress: Callable[[ScanTotals], None] | None = None,
               hasher: Hasher | InlineHasher | None = None) -> ScanTotals:
    """Hash and record every item of a walk; the core loop shared by every mode."""
    if hasher is None:
        hasher = Hasher(settings.worker_count, settings.chunk_size)
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
    finally:
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

