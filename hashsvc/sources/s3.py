"""The S3 reader: every object version under ``s3://bucket/prefix``, read over the network.

The bucket is reached through boto3 with the standard credential chain (environment, shared
files and profiles, SSO, instance or task roles); ``AWS_ENDPOINT_URL`` points it at MinIO or
another S3-compatible store, and botocore's own retry settings (``AWS_RETRY_MODE``,
``AWS_MAX_ATTEMPTS``) apply, with the "standard" mode where none is configured.

In a versioned bucket every version is listed: the current ones, those that were overwritten,
and those hidden behind a delete marker (a file "deleted" from the cloud is still evidence).
Each version is one unit and one locator, ``s3:<bucket> -> s3-object:<key>`` whose attributes
say which version it is (see :class:`ObjectRef`).

Object bodies are fetched by a small thread pool ahead of the walk, in walk order, with at most
``s3_read_threads`` objects of at most ``max_file_bytes`` in memory. An object larger than that
is never downloaded: its first bytes are fetched by a ranged GET, and unless they show an
archive it is reported as too large. Archives are walked without being downloaded whole: zip
and 7z through a seekable view that fetches blocks by ranged GETs, tar and compressed streams
from the streamed response body, all bounded by the archive's :class:`Budget`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from hashsvc import __version__
from hashsvc.errors import ConfigError, SourceError
from hashsvc.locators import Link, Locator
from hashsvc.settings import load_settings
from hashsvc.sources.archives import ContainerReader, sniff_container, walk_container
from hashsvc.sources.base import (
    Entry,
    EvidenceSeen,
    FileInfo,
    Limits,
    Listing,
    Problem,
    Source,
    Unit,
    Walk,
)
from hashsvc.sources.streams import (
    HEAD_BYTES,
    Budget,
    HeldRead,
    SeekableView,
    describe,
    read_member,
    read_up_to,
    too_large,
)

SCHEME = "s3://"

#: Bytes fetched by one ranged GET when an archive is read in place, and how many such blocks
#: are kept: at most 8 MiB of an archive in memory, whatever its size.
RANGE_BLOCK = 4 * 1024 * 1024
RANGE_BLOCKS_KEPT = 2

#: Storage classes whose objects cannot be read until they are restored.
ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")

# S3's rules for bucket names: 3 to 63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit, no two dots in a row, not an IP address.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def valid_bucket_name(name: str) -> bool:
    """Whether ``name`` follows S3's bucket naming rules."""
    if not _BUCKET_NAME.fullmatch(name) or ".." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return True
    return False


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """The bucket and key prefix of ``s3://bucket/prefix``; SourceError for anything else.

    The prefix is a plain string prefix of the keys, as in S3: ``s3://b/DCIM`` also covers
    ``DCIM2/...``; ``s3://b/DCIM/`` is the folder only, ``s3://b`` the whole bucket.
    """
    if not uri.startswith(SCHEME):
        raise SourceError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    if not valid_bucket_name(bucket):
        raise SourceError(f"{uri!r} does not name a valid S3 bucket (3-63 lowercase letters, "
                          "digits, dots and hyphens)")
    return bucket, prefix


# --- the client ------------------------------------------------------------------------------


def make_client(max_connections: int) -> Any:
    """An S3 client from the standard credential chain and endpoint configuration.

    Nothing here names an endpoint, so ``AWS_ENDPOINT_URL`` (or ``endpoint_url`` in the
    profile) decides where requests go. The retry mode is the configured one
    (``AWS_RETRY_MODE`` or the profile's ``retry_mode``), else "standard", which retries
    throttling and transient errors with backoff; ``AWS_MAX_ATTEMPTS`` is left to botocore.
    """
    core = botocore.session.get_session()
    try:
        configured = os.environ.get("AWS_RETRY_MODE") or core.get_scoped_config().get(
            "retry_mode")
        config = Config(retries=None if configured else {"mode": "standard"},
                        max_pool_connections=max_connections,
                        user_agent_extra=f"hashsvc/{__version__}")
        return boto3.session.Session(botocore_session=core).client("s3", config=config)
    except BotoCoreError as exc:  # a missing profile, an unknown region, a bad endpoint
        raise SourceError(f"cannot set up the S3 client: {exc}") from exc


def s3_message(exc: BaseException) -> str:
    """A one-line reason for a failed S3 request: the service's error code and message."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or str(exc.response.get("ResponseMetadata", {})
                                        .get("HTTPStatusCode", "error"))
        message = error.get("Message")
        return f"{code}: {message}" if message else code
    if isinstance(exc, NoCredentialsError):
        return ("no AWS credentials found (environment, shared credentials file or profile, "
                "SSO, or an instance or task role)")
    return describe(exc)


def _error_code(exc: BaseException) -> str:
    """The S3 error code of a failed request ('' for failures without one)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


#: Why a GET failed, in words, for the error codes that have a known cause.
_READ_CAUSES = {
    "PreconditionFailed": "the object changed after it was listed (its ETag no longer "
                          "matches); not read",
    "NoSuchKey": "the object was deleted after it was listed; not read",
    "NoSuchVersion": "the object version was deleted after it was listed; not read",
    "InvalidObjectState": "the object is in an archived storage class (GLACIER or "
                          "DEEP_ARCHIVE) and must be restored before it can be read",
    "AccessDenied": "access denied: the credentials need s3:GetObject (and "
                    "s3:GetObjectVersion for older versions)",
}


def read_failure(exc: BaseException) -> str:
    """The message of a Problem (or read error) for a GET that failed."""
    cause = _READ_CAUSES.get(_error_code(exc))
    return f"{cause} ({s3_message(exc)})" if cause else f"GET failed: {s3_message(exc)}"


# --- one object version --------------------------------------------------------------------


def _iso(stamp: datetime) -> str:
    """A listing time as ISO 8601 in UTC."""
    return stamp.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class ObjectRef:
    """One object version as the listing found it: enough to read it and to name it.

    ``deleted`` is true for a version that a plain GET of the key no longer returns: one
    overwritten by a newer version, or hidden behind a delete marker. ``latest`` is true for
    the newest version of the key that has content: the current object, or for a key whose
    current version is a delete marker, the content it had when it was deleted. Unversioned
    buckets have no version ids; their objects are current and latest.
    """

    key: str
    version_id: str | None
    size: int
    etag: str  # without the quotes S3 puts around it
    last_modified: str  # ISO 8601, UTC
    deleted: bool = False
    latest: bool = True

    def unit_key(self) -> dict[str, Any]:
        """The unit key of a distributed batch: ``k`` and ``v`` name the version, the rest
        keeps the listing's facts so that a batch names it exactly as the walk does."""
        return {"k": self.key, "v": self.version_id, "s": self.size, "e": self.etag,
                "t": self.last_modified, "d": self.deleted, "l": self.latest}

    @classmethod
    def from_unit_key(cls, value: Any) -> ObjectRef:
        """Inverse of :meth:`unit_key`; SourceError for a key this reader did not make."""
        try:
            return cls(key=str(value["k"]), version_id=value["v"], size=int(value["s"]),
                       etag=str(value["e"]), last_modified=str(value["t"]),
                       deleted=bool(value["d"]), latest=bool(value["l"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"malformed S3 unit key {value!r}") from exc

    def locator(self, bucket: str) -> Locator:
        """``s3:<bucket> -> s3-object:<key>``, the version's facts in the object link."""
        attrs = [("deleted", str(self.deleted).lower()), ("last_modified", self.last_modified),
                 ("latest", str(self.latest).lower())]
        if self.etag:
            attrs.append(("etag", self.etag))
        if self.version_id is not None:
            attrs.append(("version_id", self.version_id))
        return Locator((Link("s3", bucket), Link("s3-object", self.key, tuple(sorted(attrs)))))

    @property
    def mtime(self) -> float:
        """The listing's last-modified time as a POSIX timestamp."""
        return datetime.fromisoformat(self.last_modified).timestamp()


# --- reading in place --------------------------------------------------------------------------


class RangedObject(SeekableView):
    """A seekable, read-only view of one S3 object version that reads it by ranged GETs.

    Reads are served from blocks of ``block_size`` bytes, of which the last ``kept`` are
    cached: zip and 7z readers look at their directory at the end and then read members
    mostly in order, so each block is usually fetched once and memory stays within
    ``kept * block_size`` whatever the object's size. ``fetch(start, length)`` returns
    exactly ``length`` bytes from ``start`` or raises SourceError.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int,
                 block_size: int = RANGE_BLOCK, kept: int = RANGE_BLOCKS_KEPT) -> None:
        super().__init__(size)
        self._fetch = fetch
        self._block_size = block_size
        self._kept = kept
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def read(self, size: int | None = -1, /) -> bytes:
        """Read ``size`` bytes; a read to the end is refused unless the rest is one block."""
        if size is None or size < 0:
            size = max(self._size - self._pos, 0)
            if size > self._block_size:
                raise SourceError(f"unbounded read of {size} bytes of an S3 object refused")
        return super().read(size) or b""

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the cached or freshly fetched blocks."""
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(self._size - self._pos, 0))
        done = 0
        while done < want:
            index, offset = divmod(self._pos, self._block_size)
            block = self._block(index)
            n = min(want - done, len(block) - offset)
            view[done:done + n] = block[offset:offset + n]
            done += n
            self._pos += n
        return done

    def _block(self, index: int) -> bytes:
        """Block ``index``, from the cache or by one ranged GET."""
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        start = index * self._block_size
        length = min(self._block_size, self._size - start)
        block = self._fetch(start, length)
        if len(block) != length:
            raise SourceError(f"ranged GET at {start} returned {len(block)} bytes instead of "
                              f"{length} (object changed or truncated)")
        self._blocks[index] = block
        while len(self._blocks) > self._kept:
            self._blocks.popitem(last=False)
        return block

    def close(self) -> None:
        """Drop the cached blocks."""
        self._blocks.clear()
        super().close()


class _Body:
    """A GET response body read in bounded pieces; network failures become SourceError."""

    def __init__(self, body: Any, what: str) -> None:
        self._body = body
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        """Read at most ``size`` bytes."""
        if size < 0:
            raise ValueError("unbounded read refused: pass a size")
        try:
            data: bytes = self._body.read(size)
        except (BotoCoreError, OSError) as exc:
            raise SourceError(f"{self._what}: reading the response failed: "
                              f"{s3_message(exc)}") from exc
        return data

    def close(self) -> None:
        """Release the connection (dropped, if the body was not read to its end)."""
        self._body.close()


@dataclass(frozen=True)
class _Fetched:
    """What a reader thread got for one object version.

    ``data`` is the whole object when it is no archive and at most ``max_file_bytes``;
    ``archive`` the reader of an archive, which is walked in place; neither, for a larger
    object, which is refused unread; ``error`` says why the object could not be read.
    """

    data: bytes | None = None
    archive: ContainerReader | None = None
    error: str | None = None


@dataclass
class _Counts:
    """What the listing found, for the evidence item."""

    objects: int = 0  # keys with at least one version that has content
    versions: int = 0  # object versions listed (one unit each)
    noncurrent: int = 0  # versions overwritten or behind a delete marker
    delete_markers: int = 0
    deleted_objects: int = 0  # keys whose current version is a delete marker
    folder_markers: int = 0  # empty "folder/" objects the console makes; nothing to read
    archived: int = 0  # versions in GLACIER or DEEP_ARCHIVE
    bytes: int = 0


# --- the source --------------------------------------------------------------------------------


class S3Source(Source):
    """``s3://bucket/prefix``: one unit per object version, read in parallel ahead of the walk.

    Opening it asks for the bucket's versioning status, so that a bucket that does not exist,
    refuses access or cannot be reached fails here with a SourceError that says so.
    ``read_threads`` is the number of objects fetched at once (default: the
    ``s3_read_threads`` setting).
    """

    kind = "s3"

    def __init__(self, uri: str, limits: Limits, read_threads: int | None = None) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        super().__init__(f"{SCHEME}{self.bucket}/{self.prefix}", limits)
        if read_threads is None:
            read_threads = load_settings().s3_read_threads
        if read_threads < 1:
            raise ConfigError(f"s3_read_threads must be at least 1, not {read_threads}")
        self.read_threads = read_threads
        # The reader threads, the walk's own archive reads and the listing.
        self.client = make_client(read_threads + 2)
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except (ClientError, BotoCoreError) as exc:
            self.client.close()
            raise SourceError(self._open_failure(exc)) from exc
        #: "enabled", "suspended" or "never enabled"; versions are listed for the first two.
        self.versioning = str(status).lower() if status else "never enabled"

    @property
    def versioned(self) -> bool:
        """Whether the bucket may hold several versions of a key (versioning is or was on)."""
        return self.versioning in ("enabled", "suspended")

    def _open_failure(self, exc: BaseException) -> str:
        """Why the bucket cannot be opened, in words."""
        where = f"{self.uri} (endpoint {self.client.meta.endpoint_url})"
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return f"{where}: the bucket does not exist"
        if code in ("AccessDenied", "AllAccessDisabled", "403"):
            return (f"{where}: access denied ({s3_message(exc)}); the credentials need "
                    "s3:GetBucketVersioning, s3:ListBucket, s3:ListBucketVersions, "
                    "s3:GetObject and s3:GetObjectVersion")
        return f"{where}: cannot open the bucket: {s3_message(exc)}"

    # -- Source interface -----------------------------------------------------------------

    def units(self) -> Listing:
        """One unit per object version in listing order, then the bucket's evidence item."""
        for step in self._listing():
            if isinstance(step, ObjectRef):
                yield Unit(step.unit_key(), step.size)
            else:
                yield step

    def walk(self) -> Walk:
        """Every object version's items as it is listed, then the bucket's evidence item."""
        yield from self._prefetched(self._listing())

    def walk_units(self, keys: list[Any]) -> Walk:
        """The items of the listed versions ``keys``, as :meth:`walk` has them."""
        yield from self._prefetched(ObjectRef.from_unit_key(key) for key in keys)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # -- listing ----------------------------------------------------------------------------

    def _pages(self, operation: str) -> Iterator[dict[str, Any]]:
        """The pages of a listing; SourceError if one cannot be had (after botocore's
        retries), since a scan of part of a bucket must not pass for a scan of all of it."""
        pages = iter(self.client.get_paginator(operation).paginate(Bucket=self.bucket,
                                                                   Prefix=self.prefix))
        while True:
            try:
                page = next(pages, None)
            except (ClientError, BotoCoreError) as exc:
                raise SourceError(f"{self.uri}: listing failed ({operation}): "
                                  f"{s3_message(exc)}") from exc
            if page is None:
                return
            yield page

    def _listing(self) -> Iterator[ObjectRef | EvidenceSeen]:
        """Every object version with content, in listing order, then the evidence item."""
        counts = _Counts()
        started = _iso(datetime.now(UTC))
        refs = self._versions(counts) if self.versioned else self._current(counts)
        yield from refs
        yield self._evidence(counts, started)

    def _versions(self, counts: _Counts) -> Iterator[ObjectRef]:
        """ListObjectVersions: every version, newest first within a key."""
        last_key: str | None = None
        for page in self._pages("list_object_versions"):
            markers = page.get("DeleteMarkers", [])
            counts.delete_markers += len(markers)
            counts.deleted_objects += sum(1 for m in markers if m.get("IsLatest") is True)
            for version in page.get("Versions", []):
                # S3 lists a key's versions newest first, so the first one seen is the newest
                # with content (delete markers are listed apart); a key may span two pages.
                newest = version["Key"] != last_key
                last_key = version["Key"]
                ref = self._ref(version, version_id=str(version["VersionId"]),
                                deleted=version.get("IsLatest") is not True, latest=newest)
                if self._counted(ref, version, counts):
                    yield ref

    def _current(self, counts: _Counts) -> Iterator[ObjectRef]:
        """ListObjectsV2: the objects of a bucket that never had versioning."""
        for page in self._pages("list_objects_v2"):
            for item in page.get("Contents", []):
                ref = self._ref(item, version_id=None, deleted=False, latest=True)
                if self._counted(ref, item, counts):
                    yield ref

    @staticmethod
    def _ref(item: dict[str, Any], version_id: str | None, deleted: bool,
             latest: bool) -> ObjectRef:
        """An ObjectRef from one listing entry."""
        return ObjectRef(key=item["Key"], version_id=version_id, size=int(item["Size"]),
                         etag=str(item.get("ETag", "")).strip('"'),
                         last_modified=_iso(item["LastModified"]), deleted=deleted,
                         latest=latest)

    @staticmethod
    def _counted(ref: ObjectRef, item: dict[str, Any], counts: _Counts) -> bool:
        """Count a listed version; False for a folder marker, which has nothing to read."""
        if ref.size == 0 and ref.key.endswith("/"):
            counts.folder_markers += 1
            return False
        counts.versions += 1
        counts.objects += ref.latest
        counts.noncurrent += ref.deleted
        counts.archived += item.get("StorageClass") in ARCHIVED_CLASSES
        counts.bytes += ref.size
        return True

    def _evidence(self, counts: _Counts, started: str) -> EvidenceSeen:
        """The bucket (and prefix) as an evidence item, with what its listing found."""
        not_readable = {"delete-marker": counts.delete_markers,
                        "folder-marker": counts.folder_markers,
                        "archived-storage-class": counts.archived}
        return EvidenceSeen(
            locator=Locator((Link("s3", self.bucket),)), kind="s3", size=counts.bytes,
            details={
                "bucket": self.bucket, "prefix": self.prefix,
                "endpoint": self.client.meta.endpoint_url,
                "region": self.client.meta.region_name,
                "versioning": self.versioning,
                "listing": "ListObjectVersions" if self.versioned else "ListObjectsV2",
                "listed_at": started,
                "objects": counts.objects, "object_versions": counts.versions,
                "noncurrent_versions": counts.noncurrent,
                "delete_markers": counts.delete_markers,
                "deleted_objects": counts.deleted_objects, "bytes": counts.bytes,
                "coverage": {
                    "listed": counts.versions,
                    # Listed entries with no content (markers), and versions whose storage
                    # class needs a restore first (their read is tried and reported).
                    "not_readable": {k: n for k, n in not_readable.items() if n},
                },
            })

    # -- reading ----------------------------------------------------------------------------

    def _what(self, ref: ObjectRef) -> str:
        """How messages name a version: by its display path (keys are hostile input)."""
        return f"S3 object {ref.locator(self.bucket).path}"

    def _open_body(self, ref: ObjectRef, byte_range: str | None = None) -> _Body:
        """GET one version (or a range of it), only if it is still the version listed."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": ref.key}
        if ref.version_id is not None:
            params["VersionId"] = ref.version_id
        if ref.etag:
            params["IfMatch"] = f'"{ref.etag}"'
        if byte_range is not None:
            params["Range"] = byte_range
        try:
            response = self.client.get_object(**params)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(read_failure(exc)) from exc
        return _Body(response["Body"], self._what(ref))

    def _read_range(self, ref: ObjectRef, start: int, length: int) -> bytes:
        """``length`` bytes of a version from ``start``, by one ranged GET."""
        with closing(self._open_body(ref, f"bytes={start}-{start + length - 1}")) as body:
            return read_up_to(body, length)

    def _fetch(self, ref: ObjectRef) -> _Fetched:
        """Fetch one version in a reader thread: whole if it is small enough and no archive,
        else only its first bytes. Never raises: a failure is the result's ``error``."""
        try:
            if ref.size > self.limits.max_file_bytes:
                head = self._read_range(ref, 0, min(HEAD_BYTES, ref.size))
                return _Fetched(archive=sniff_container(head))
            with closing(self._open_body(ref)) as body:
                head = read_up_to(body, HEAD_BYTES)
                archive = sniff_container(head)
                if archive is not None:  # walked in place; the rest of this body is dropped
                    return _Fetched(archive=archive)
                data = read_member(head, body, self.limits, self._what(ref))
            return _Fetched(data=data)
        except Exception as exc:  # noqa: BLE001 - network stacks raise anything: report, go on
            return _Fetched(error=describe(exc))

    def _prefetched(self, steps: Iterable[ObjectRef | EvidenceSeen]) -> Walk:
        """The items of each version in order, fetched by ``read_threads`` threads ahead.

        At most ``read_threads`` versions are fetched or held at a time: the oldest is
        consumed before another is started. Stopping the walk waits for the fetches running.
        """
        window: deque[tuple[ObjectRef, Future[_Fetched]]] = deque()
        pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="s3-read")
        try:
            for step in steps:
                if not isinstance(step, ObjectRef):
                    while window:
                        yield from self._oldest(window)
                    yield step
                    continue
                window.append((step, pool.submit(self._fetch, step)))
                if len(window) >= self.read_threads:
                    yield from self._oldest(window)
            while window:
                yield from self._oldest(window)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _oldest(self, window: deque[tuple[ObjectRef, Future[_Fetched]]]) -> Walk:
        """Wait for the oldest fetch in the window and yield its items."""
        ref, future = window.popleft()
        yield from self._object_items(ref, future.result())

    def _object_items(self, ref: ObjectRef, fetched: _Fetched) -> Walk:
        """One version's items: a Problem, an archive's members, or an Entry."""
        locator = ref.locator(self.bucket)
        info = FileInfo(locator, ref.size, ref.mtime)
        what = self._what(ref)
        if fetched.error is not None:
            yield Problem(locator, "read", fetched.error)
        elif fetched.archive is not None:
            yield from self._walk_archive(ref, info, fetched.archive)
        elif fetched.data is None:
            yield Entry(info, partial(_refuse, too_large(what, self.limits, ref.size)))
        else:
            held = HeldRead(fetched.data, what)
            yield Entry(info, held)
            held.release()

    def _walk_archive(self, ref: ObjectRef, info: FileInfo, reader: ContainerReader) -> Walk:
        """Walk an archive in place: by ranged GETs (zip, 7z) or from the streamed body."""
        budget = Budget(self.limits.max_expanded_bytes)
        if reader.needs_seek:
            with RangedObject(partial(self._read_range, ref), ref.size) as fileobj:
                yield from walk_container(reader, fileobj, info, self.limits, 1, budget)
            return
        try:
            body = self._open_body(ref)
        except SourceError as exc:
            yield Problem(info.locator, "read", str(exc))
            return
        with closing(body):
            yield from walk_container(reader, body, info, self.limits, 1, budget)


def _refuse(error: SourceError) -> bytes:
    """``Entry.read`` of an object that is not read: raises ``error``."""
    raise error
