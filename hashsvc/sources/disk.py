"""Disk images (raw/dd and E01): partitions, file systems and deleted files, read through The
Sleuth Kit (pytsk3) and libewf (pyewf), never mounted and never written.

A disk image is one evidence item. Its media (the raw file, or the acquired media inside the
E01 segment files) is read once from start to end for its SHA-256 and MD5, and an E01's stored
MD5 is checked against what was read; that pass runs in a background thread while the file
systems are walked, and ends as one :class:`EvidenceSeen` item that also records the partitions
found and the coverage: what was examined and what was not, with counts by reason.

Partitions come from the MBR or GPT (as The Sleuth Kit numbers them, like ``mmls``); an image
without a partition table is read as one file system. Every file a file system still names is
walked, deleted ones included, with its locator carrying the partition, the inode, whether it is
deleted and its MAC times::

    fs:disk.E01 -> partition:2 {offset, type} -> tsk:DCIM/IMG_1.JPG {deleted, inode, mtime, ...}

Archives on the disk are walked as archives, read in place. A deleted file is scanned when its
content is still there; one whose content is gone (no metadata, no size or no data blocks left,
as ext4 leaves them), or whose inode or first block now belongs to a live file, is a counted
skip instead, and one whose later blocks were partly reused is scanned with the overwritten byte
count in its locator. Nothing in a hostile image raises: every failure is a :class:`Problem`
naming its stage ("disk-image", "partition", "filesystem", "read") and the rest is scanned.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import re
import stat
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pyewf
import pytsk3

from hashsvc.errors import SourceError
from hashsvc.locators import Link, Locator
from hashsvc.sources.archives import SKIP_MESSAGES, sniff_container, walk_container
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
from hashsvc.sources.directory import decode_relpath, encode_relpath, fs_locator
from hashsvc.sources.steps import beat, checkpoint, done
from hashsvc.sources.streams import HEAD_BYTES, Budget, SeekableView, describe, too_large

EWF_SIGNATURE = b"EVF\x09\x0d\x0a\xff\x00"
SECTOR = 512
DETECT_BYTES = 64 * 1024  # what detection reads: boot sector, GPT header, superblocks, ISO PVD
HASH_CHUNK = 4 * 1024 * 1024  # media bytes hashed per read
READ_CHUNK = 4 * 1024 * 1024  # file bytes asked of The Sleuth Kit per read
ARCHIVE_BUFFER = 1024 * 1024  # read-ahead for archives walked in place
MAX_FOLDER_DEPTH = 128  # deeper folders are a corrupt or hostile file system
MAX_MAPPED_RUNS = 4_000_000  # block runs of live files kept to check deleted ones against
MAX_LISTED_READ_ERRORS = 100  # unreadable ranges listed one by one in the evidence details
# The Sleuth Kit refuses a partition table whose partitions start past the end of the image.
# Claiming this size (the most an MBR can address) lets it read the table of a truncated image;
# reads past the real end still fail, and such partitions are reported, not examined.
PADDED_SIZE = 2 * 2**32 * SECTOR

_TSK_PREFIX = re.compile(r"^\w+: \(tsk3\.cpp:\d+\) ")

_NAME_UNALLOC = int(pytsk3.TSK_FS_NAME_FLAG_UNALLOC)
_META_ALLOC = int(pytsk3.TSK_FS_META_FLAG_ALLOC)
_META_UNALLOC = int(pytsk3.TSK_FS_META_FLAG_UNALLOC)
_PART_ALLOC = int(pytsk3.TSK_VS_PART_FLAG_ALLOC)
_PART_UNALLOC = int(pytsk3.TSK_VS_PART_FLAG_UNALLOC)
_RUN_NO_DATA = int(pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE) | int(pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER)
_ATTR_NONRES = int(pytsk3.TSK_FS_ATTR_NONRES)
_DIR_TYPES = {int(pytsk3.TSK_FS_META_TYPE_DIR), int(pytsk3.TSK_FS_META_TYPE_VIRT_DIR)}
_REG = int(pytsk3.TSK_FS_META_TYPE_REG)
_VIRT = int(pytsk3.TSK_FS_META_TYPE_VIRT)
_LNK = int(pytsk3.TSK_FS_META_TYPE_LNK)
_SPECIAL = {int(pytsk3.TSK_FS_META_TYPE_CHR), int(pytsk3.TSK_FS_META_TYPE_BLK),
            int(pytsk3.TSK_FS_META_TYPE_FIFO), int(pytsk3.TSK_FS_META_TYPE_SOCK),
            int(pytsk3.TSK_FS_META_TYPE_SHAD), int(pytsk3.TSK_FS_META_TYPE_WHT)}
# The attribute holding a file's content, per file system (NTFS: the unnamed $DATA).
_NTFS_DATA = int(pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA)
_DATA_ATTRS = {int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT), _NTFS_DATA,
               int(pytsk3.TSK_FS_ATTR_TYPE_HFS_DATA), int(pytsk3.TSK_FS_ATTR_TYPE_APFS_DATA)}
# The Sleuth Kit names NTFS's unnamed $DATA "$Data" (or leaves it unnamed); others are streams.
_NTFS_UNNAMED = (None, b"", b"$Data")

_FS_NAMES = {
    pytsk3.TSK_FS_TYPE_FAT12: "FAT12", pytsk3.TSK_FS_TYPE_FAT16: "FAT16",
    pytsk3.TSK_FS_TYPE_FAT32: "FAT32", pytsk3.TSK_FS_TYPE_EXFAT: "exFAT",
    pytsk3.TSK_FS_TYPE_NTFS: "NTFS", pytsk3.TSK_FS_TYPE_EXT2: "ext2",
    pytsk3.TSK_FS_TYPE_EXT3: "ext3", pytsk3.TSK_FS_TYPE_EXT4: "ext4",
    pytsk3.TSK_FS_TYPE_HFS: "HFS+", pytsk3.TSK_FS_TYPE_ISO9660: "ISO9660",
    pytsk3.TSK_FS_TYPE_FFS1: "UFS1", pytsk3.TSK_FS_TYPE_FFS1B: "UFS1b",
    pytsk3.TSK_FS_TYPE_FFS2: "UFS2", pytsk3.TSK_FS_TYPE_YAFFS2: "YAFFS2",
    pytsk3.TSK_FS_TYPE_APFS: "APFS",
}
_FAT_TYPES = {pytsk3.TSK_FS_TYPE_FAT12, pytsk3.TSK_FS_TYPE_FAT16, pytsk3.TSK_FS_TYPE_FAT32}
_FAT_LABEL = "(Volume Label Entry)"  # how The Sleuth Kit names a FAT volume label's entry
_TABLE_NAMES = {pytsk3.TSK_VS_TYPE_DOS: "MBR", pytsk3.TSK_VS_TYPE_GPT: "GPT",
                pytsk3.TSK_VS_TYPE_MAC: "Apple", pytsk3.TSK_VS_TYPE_BSD: "BSD",
                pytsk3.TSK_VS_TYPE_SUN: "Sun"}

#: Why part of a disk image was not examined (the ``reason`` of skipped Problems and the keys
#: of the coverage's ``not_examined``), with what the report says about it.
REASONS = {
    "unpartitioned-space": "space outside every partition; not carved",
    "unrecognised-filesystem": "no file system The Sleuth Kit can read",
    "encrypted-volume": "encrypted volume (no key); not examined",
    "possibly-encrypted": "random-looking volume (encrypted, or wiped with random data)",
    "filesystem-error": "file system found but it could not be opened",
    "past-end-of-image": "partition (or part of one) past the end of the image",
    "read-errors": "media bytes that could not be read (hashed as zeros)",
    "fs-free-space": "unallocated clusters inside a file system; not carved",
    "fs-metadata": "file-system metadata files ($MFT, $FAT1, ...); not scanned",
    "deleted-content-gone": "deleted entries with no content left to read",
    "deleted-overwritten": "deleted files whose space now belongs to a live file",
    "deleted-inode-in-use": "deleted names whose inode belongs to a live file",
    "already-listed": "folders reached twice (directory hard links or loops)",
    "overwrite-unchecked": "file systems whose deleted files were scanned without checking "
                           "for reuse of their blocks (too many live files to map)",
    "symlink": SKIP_MESSAGES["symlink"],
    "special-file": SKIP_MESSAGES["special-file"],
    "reader-stalled": "folder entries and files on which The Sleuth Kit stalled or crashed "
                      "(past reader_timeout_seconds); skipped by a fresh reader",
}


# --- the media: raw bytes of the evidence item ---------------------------------------------


class Media:
    """The bytes of an evidence item by offset: a raw image file, or the media of an E01. Each
    thread that reads (the walk, the hashing pass) opens its own.

    ``granularity`` is the smallest unit that fails to read on its own (where a bad read is
    narrowed down to): a storage block for a raw file, a chunk for an E01.
    """

    def __init__(self, size: int, granularity: int) -> None:
        self.size = size
        self.granularity = granularity

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at the end; OSError on a bad read."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handles."""


class RawMedia(Media):
    """A raw (dd) image file."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)
                           | getattr(os, "O_CLOEXEC", 0))
        super().__init__(os.fstat(self._fd).st_size, 4096)

    def read(self, offset: int, size: int) -> bytes:
        parts: list[bytes] = []
        while size > 0:
            data = os.pread(self._fd, size, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            size -= len(data)
        return b"".join(parts)

    def close(self) -> None:
        os.close(self._fd)


class EwfMedia(Media):
    """The media stored in an E01 (all its segment files), with the hashes stored in it."""

    def __init__(self, path: str) -> None:
        names = pyewf.glob(path)
        self.segments = [os.path.basename(name) for name in names]
        self._handle = pyewf.handle()
        self._handle.open(names)
        super().__init__(int(self._handle.get_media_size()),
                         max(int(self._handle.get_chunk_size()), SECTOR))

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._handle.read_buffer_at_offset(size, offset))

    def stored_md5(self) -> str | None:
        """The MD5 the acquisition stored, lower-case hex (None when it stored none)."""
        value = self._handle.get_hash_value("MD5")
        return value.lower() if value else None

    def facts(self) -> dict[str, Any]:
        """Segment files, stored hashes, sector size and the acquisition's header values."""
        return {"segments": self.segments,
                "bytes_per_sector": int(self._handle.get_bytes_per_sector()),
                "stored_hashes": dict(self._handle.get_hash_values()),
                "header": dict(self._handle.get_header_values())}

    def close(self) -> None:
        self._handle.close()


def open_media(path: str, kind: str) -> Media:
    """Open an image's media (``kind`` "raw" or "e01"); OSError or libewf's error if it fails."""
    return EwfMedia(path) if kind == "e01" else RawMedia(path)


class _TskImage(pytsk3.Img_Info):  # type: ignore[misc]  # pytsk3 ships no type hints
    """The Sleuth Kit's view of a Media. ``size`` may be claimed larger than the media (see
    PADDED_SIZE); reads beyond the real end then come back short and The Sleuth Kit fails
    them."""

    def __init__(self, media: Media, size: int) -> None:
        self._media = media
        self._size = size
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset: int, size: int) -> bytes:
        """Bytes for The Sleuth Kit. Its cache asks in 64 KiB blocks, so one bad sector would
        fail a whole block: unreadable sectors come back as zeros instead, as dd's
        conv=noerror,sync gives them (the hashing pass finds and reports the same ones)."""
        if offset >= self._media.size:
            return b""
        size = min(size, self._media.size - offset)
        try:
            return self._media.read(offset, size)
        except OSError:
            return _read_salvaging(self._media, offset, size, [])

    def get_size(self) -> int:
        """The size The Sleuth Kit is told."""
        return self._size

    def close(self) -> None:
        """The media is closed by its owner."""


def _tsk_message(exc: BaseException) -> str:
    """The Sleuth Kit's error text without pytsk3's source-file prefix and preamble."""
    text = str(exc) if isinstance(exc, OSError) else describe(exc)
    text = _TSK_PREFIX.sub("", text).strip()
    return text.rsplit(" with error: ", 1)[-1] or type(exc).__name__


# --- detection ---------------------------------------------------------------------------------


def _mbr_has_partitions(head: bytes) -> bool:
    """An MBR whose four entries are each empty or sane, at least one of them not empty."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return False
    found = False
    for i in range(4):
        entry = head[446 + 16 * i: 462 + 16 * i]
        if entry == bytes(16):
            continue
        start, count = struct.unpack("<II", entry[8:16])
        if entry[0] not in (0x00, 0x80) or entry[4] == 0 or start == 0 or count == 0:
            return False
        found = True
    return found


def _has_partition_table(head: bytes) -> bool:
    """A GPT header (512- or 4096-byte sectors) or an MBR with sane partition entries."""
    return (head[512:520] == b"EFI PART" or head[4096:4104] == b"EFI PART"
            or _mbr_has_partitions(head))


def _encryption(head: bytes) -> str | None:
    """The encryption a volume's first bytes announce: 'BitLocker', 'LUKS' or None."""
    if head[3:11] == b"-FVE-FS-":
        return "BitLocker"
    if head[:6] == b"LUKS\xba\xbe":
        return "LUKS"
    return None


def _may_hold_filesystem(head: bytes) -> bool:
    """Cheap marks of a file system at offset 0, to be confirmed by The Sleuth Kit: a FAT, exFAT
    or NTFS boot sector, an ext2/3/4 or HFS+ superblock, an ISO 9660 volume descriptor."""
    boot = (len(head) >= 512 and head[510:512] == b"\x55\xaa" and head[0] in (0xEB, 0xE9)
            and (head[3:11] in (b"NTFS    ", b"EXFAT   ")
                 or struct.unpack("<H", head[11:13])[0] in (512, 1024, 2048, 4096)))
    ext = head[1080:1082] == b"\x53\xef"
    hfs = head[1024:1026] in (b"H+", b"HX")
    iso = head[32769:32774] == b"CD001"
    return boot or ext or hfs or iso


def _tsk_opens_filesystem(path: str) -> bool:
    """Whether The Sleuth Kit recognises a file system at the start of a file."""
    media = RawMedia(path)
    try:
        pytsk3.FS_Info(_TskImage(media, media.size), offset=0)
        return True
    except Exception:  # noqa: BLE001 - any refusal means "not a file system"
        return False
    finally:
        media.close()


def detect_disk_image(path: str, limits: Limits) -> Source | None:
    """The reader for a file that is a disk image, or None.

    Only a regular file named as the source is considered (a link to one is followed, as the
    analyst named it). An E01 is known by its signature; a raw image by a GPT header, an MBR
    with sane partition entries, an encrypted volume's header, or a file system at its start
    that The Sleuth Kit opens. Archives are never disk images. Reads the first 64 KiB (and,
    where they show a file system's marks, what The Sleuth Kit reads to open it).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as fh:
            head = fh.read(DETECT_BYTES)
        if head.startswith(EWF_SIGNATURE):
            return DiskImageSource(path, limits, "e01")
        if sniff_container(head) is not None:
            return None
        if (_has_partition_table(head) or _encryption(head) is not None
                or (_may_hold_filesystem(head) and _tsk_opens_filesystem(path))):
            return DiskImageSource(path, limits, "raw")
    except OSError:
        return None  # the file reader reports why it cannot be read
    return None


# --- hashing the media -------------------------------------------------------------------------


@dataclass
class Digest:
    """The media's hashes as read, and the ranges that could not be read (hashed as zeros)."""

    sha256: str
    md5: str
    bad_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def bad_bytes(self) -> int:
        """Bytes that could not be read."""
        return sum(length for _, length in self.bad_ranges)


def _read_salvaging(media: Media, offset: int, size: int,
                    bad: list[tuple[int, int]]) -> bytes:
    """``size`` bytes at ``offset`` read a block (``media.granularity``) at a time, with the
    blocks that cannot be read as zeros and added to ``bad``."""
    parts: list[bytes] = []
    step = media.granularity
    at = offset
    while at < offset + size:
        want = min(step - at % step, offset + size - at)  # aligned, so a bad block fails once
        try:
            data = media.read(at, want)
        except OSError:
            data = b""
        if len(data) < want:
            _add_range(bad, at + len(data), want - len(data))
            data += bytes(want - len(data))
        parts.append(data)
        at += want
    return b"".join(parts)


def _add_range(ranges: list[tuple[int, int]], offset: int, length: int) -> None:
    """Append a range, merging it with the last one where they touch."""
    if ranges and ranges[-1][0] + ranges[-1][1] == offset:
        ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
    else:
        ranges.append((offset, length))


def hash_media(media: Media, stop: threading.Event,
               on_chunk: Callable[[], None] | None = None) -> Digest | None:
    """SHA-256 and MD5 of the whole media, read once in order (None if stopped early).

    The two digests of each chunk are computed side by side (hashlib lets go of the GIL), so
    the pass takes the time of the slower one, not of both.
    """
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    bad: list[tuple[int, int]] = []
    offset = 0
    with ThreadPoolExecutor(1, thread_name_prefix="disk-image-md5") as md5_thread:
        while offset < media.size:
            if stop.is_set():
                return None
            size = min(HASH_CHUNK, media.size - offset)
            try:
                data = media.read(offset, size)
            except OSError:
                data = b""
            if len(data) < size:
                data = data + _read_salvaging(media, offset + len(data), size - len(data), bad)
            md5_done = md5_thread.submit(md5.update, data)
            sha256.update(data)
            md5_done.result()
            offset += size
            if on_chunk is not None:
                on_chunk()
    return Digest(sha256.hexdigest(), md5.hexdigest(), bad)


class _Hashing:
    """:func:`hash_media` in a background thread, on media of its own, while the walk runs."""

    def __init__(self, path: str, kind: str) -> None:
        self._path = path
        self._kind = kind
        self._stop = threading.Event()
        self._digest: Digest | None = None
        self.error: str | None = None
        self.chunks = 0  # chunks hashed so far
        self._thread = threading.Thread(target=self._run, name="disk-image-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            media = open_media(self._path, self._kind)
        except Exception as exc:  # noqa: BLE001 - reported as a Problem by the caller
            self.error = describe(exc)
            return
        try:
            self._digest = hash_media(media, self._stop, self._chunk_done)
        except Exception as exc:  # noqa: BLE001 - a failing library must not end the walk
            self.error = describe(exc)
        finally:
            media.close()

    def _chunk_done(self) -> None:
        self.chunks += 1

    def result(self) -> Digest | None:
        """Wait for the digest (None where the media could not be read; see ``error``),
        showing a reading child's parent that the hashing goes on."""
        seen = -1
        while self._thread.is_alive():
            self._thread.join(1.0)
            if self.chunks != seen:
                seen = self.chunks
                beat()
        return self._digest

    def cancel(self) -> None:
        """Stop reading (the walk was abandoned) and wait for the thread."""
        self._stop.set()
        self._thread.join()


# --- the layout: partitions and file systems ---------------------------------------------------


@dataclass
class Volume:
    """One slot of the partition table (as mmls numbers them), or the whole image when there is
    no table; what was found in it and, when it was not examined, why."""

    index: int | None  # None: no partition table, the image is one file system
    start: int  # bytes
    length: int  # bytes
    description: str
    role: str  # "partition", "unallocated", "partition-table" or "image"
    filesystem: str | None = None
    not_examined: str | None = None  # a REASONS key
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The volume for the evidence details."""
        return {"index": self.index, "start": self.start, "length": self.length,
                "description": self.description, "role": self.role,
                "filesystem": self.filesystem, "not_examined": self.not_examined,
                "message": self.message}


class _Coverage:
    """Counts of what was examined and of what was not, by reason."""

    def __init__(self) -> None:
        self.examined: Counter[str] = Counter()
        self.count: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def skip(self, reason: str, size: int | None = None) -> None:
        """Count one thing not examined, with its size where known."""
        self.count[reason] += 1
        if size:
            self.bytes[reason] += size

    def to_dict(self) -> dict[str, Any]:
        """The coverage for the evidence details."""
        examined = {key: self.examined[key] for key in
                    ("partitions", "file_systems", "folders", "files", "deleted_files",
                     "bytes")}
        not_examined = {reason: {"count": self.count[reason],
                                 "bytes": self.bytes.get(reason),
                                 "what": REASONS[reason]}
                        for reason in REASONS if self.count[reason]}
        return {"examined": examined, "not_examined": not_examined}


@dataclass(frozen=True)
class FileRef:
    """A regular file found in a file system: what a unit key holds, and what its walk needs.

    ``overwritten`` is how many bytes of a deleted file's blocks now belong to live files.
    ``listed`` is the pytsk3 file as the listing found it (reused by a walk in one pass).
    """

    volume: int | None
    inode: int
    path: str
    deleted: bool
    size: int
    overwritten: int = 0
    listed: Any = field(default=None, compare=False, repr=False)

    def key(self) -> dict[str, Any]:
        """The unit key: plain JSON."""
        key: dict[str, Any] = {"p": self.volume, "i": self.inode,
                               "path": encode_relpath(self.path), "d": self.deleted}
        if self.overwritten:
            key["ow"] = self.overwritten
        return key

    @classmethod
    def from_key(cls, key: dict[str, Any]) -> FileRef:
        """Inverse of :meth:`key` (without the listed file)."""
        volume = key.get("p")
        return cls(None if volume is None else int(volume), int(key["i"]),
                   decode_relpath(key["path"]), bool(key.get("d")), 0, int(key.get("ow", 0)))


class _BlockMap:
    """Blocks of one file system that live files occupy, to tell overwritten deleted files."""

    def __init__(self) -> None:
        self._runs: list[tuple[int, int]] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.complete = True

    def add(self, start: int, length: int) -> None:
        """Record a run of blocks of a live file."""
        if len(self._runs) >= MAX_MAPPED_RUNS:
            self.complete = False
            return
        self._runs.append((start, start + length))

    def freeze(self) -> None:
        """Sort and merge the runs for lookups."""
        for start, end in sorted(self._runs):
            if self._ends and start <= self._ends[-1]:
                self._ends[-1] = max(self._ends[-1], end)
            else:
                self._starts.append(start)
                self._ends.append(end)
        self._runs = []

    def overlap(self, start: int, length: int) -> int:
        """How many blocks of the run ``start``..``start + length`` live files occupy."""
        end = start + length
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        total = 0
        while i < len(self._starts) and self._starts[i] < end:
            total += max(0, min(end, self._ends[i]) - max(start, self._starts[i]))
            i += 1
        return total


def _data_runs(tsk_file: Any) -> list[tuple[int, int]] | None:
    """The block runs holding a file's content (sparse runs left out); None when its content
    is not in runs (resident in the metadata, or no data attribute)."""
    for attr in tsk_file:
        kind = int(attr.info.type)
        if kind not in _DATA_ATTRS or (kind == _NTFS_DATA and attr.info.name not in _NTFS_UNNAMED):
            continue
        if not int(attr.info.flags) & _ATTR_NONRES:
            return None
        return [(int(run.addr), int(run.len)) for run in attr
                if not int(run.flags) & _RUN_NO_DATA and int(run.len) > 0]
    return None


def _iso_time(seconds: int, nanos: int) -> str | None:
    """A file-system time as ISO 8601 UTC (None where unset or out of range)."""
    if not seconds:
        return None
    try:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    except OverflowError:
        return None
    text = (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
            f"{t.second:02d}")
    if 0 < nanos < 10**9:
        text += f".{nanos:09d}"
    return text + "Z"


def _file_link(ref: FileRef, meta: Any) -> Link:
    """The 'tsk' link of a file: its path, deleted flag, inode and MAC times."""
    attrs = {"deleted": "true" if ref.deleted else "false", "inode": str(ref.inode)}
    if ref.overwritten:
        attrs["overwritten_bytes"] = str(ref.overwritten)
    for name in ("mtime", "atime", "ctime", "crtime"):
        value = _iso_time(int(getattr(meta, name)), int(getattr(meta, f"{name}_nano")))
        if value is not None:
            attrs[name] = value
    return Link("tsk", ref.path, tuple(sorted(attrs.items())))


class _TskFileIO(SeekableView):
    """A TSK file as a seekable binary stream, so archives on the disk are read in place."""

    def __init__(self, tsk_file: Any, size: int, what: str) -> None:
        super().__init__(size)
        self._file = tsk_file
        self._what = what

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = _tsk_read(self._file, self._pos, want, self._what)
        if not data:
            raise SourceError(f"{self._what}: ends after {self._pos} of {self._size} bytes "
                              "(damaged or truncated image)")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _tsk_read(tsk_file: Any, offset: int, size: int, what: str) -> bytes:
    """Bytes of a file through The Sleuth Kit; its failures as SourceError."""
    try:
        return bytes(tsk_file.read_random(offset, size))
    except Exception as exc:  # pytsk3 raises OSError; on hostile data, anything
        raise SourceError(f"{what}: {_tsk_message(exc)}") from exc


def _read_file(tsk_file: Any, size: int, limits: Limits, what: str) -> bytes:
    """A whole file's bytes (``Entry.read``), refusing one over ``max_file_bytes``."""
    if size > limits.max_file_bytes:
        raise too_large(what, limits, size)
    parts: list[bytes] = []
    offset = 0
    while offset < size:
        data = _tsk_read(tsk_file, offset, min(READ_CHUNK, size - offset), what)
        if not data:
            raise SourceError(f"{what}: ends after {offset} of {size} bytes "
                              "(damaged or truncated image)")
        parts.append(data)
        offset += len(data)
        beat()
    return b"".join(parts)


class _Disk:
    """One opened disk image: its media, partition layout and file systems, for one pass."""

    def __init__(self, source: DiskImageSource) -> None:
        self.source = source
        self.limits = source.limits
        self.evidence = fs_locator(os.path.basename(source.uri) or source.uri)
        self.coverage = _Coverage()
        self.layout_problems: list[Problem] = []
        self.volumes: list[Volume] = []
        self.table: str | None = None
        self._filesystems: dict[int | None, Any] = {}
        try:
            self.media = open_media(source.path, source.format)
        except Exception as exc:  # libewf raises OSError, IOError, ...
            raise SourceError(f"disk image cannot be opened: {_tsk_message(exc)}") from exc
        try:
            self._image = _TskImage(self.media, self.media.size)
            self._find_volumes()
        except BaseException:
            self.media.close()
            raise

    def close(self) -> None:
        """Close the media."""
        self._filesystems.clear()
        self.media.close()

    # -- layout --

    def locator(self, volume: Volume) -> Locator:
        """The locator of a volume: the evidence, then its partition link (if in a table)."""
        if volume.index is None:
            return self.evidence
        kind = volume.description or f"{self.table} partition"
        if volume.role == "unallocated":
            kind = "Unallocated"
        return self.evidence.child(Link("partition", str(volume.index), tuple(sorted(
            (("offset", str(volume.start)), ("type", kind))))))

    def volume(self, index: int | None) -> Volume | None:
        """The examinable volume with this index."""
        for volume in self.volumes:
            if volume.index == index and volume.role in ("partition", "image"):
                return volume
        return None

    def _head(self, offset: int, size: int = DETECT_BYTES) -> bytes:
        """The first bytes of a volume (b'' where they cannot be read)."""
        try:
            return self.media.read(offset, size)
        except OSError:
            return b""

    def _find_volumes(self) -> None:
        """Read the partition table (or find a file system without one) into ``volumes``."""
        try:
            table = pytsk3.Volume_Info(self._image)
        except Exception:  # noqa: BLE001 - no table The Sleuth Kit can read
            table = None
        if table is None:
            whole = Volume(None, 0, self.media.size, "no partition table", "image")
            self.volumes = [whole]
            if not _has_partition_table(self._head(0)) or self._opens(whole):
                return
            # A table whose partitions start past the end of a truncated image: read it as if
            # the image were whole, and report what lies past the end.
            try:
                table = pytsk3.Volume_Info(_TskImage(self.media, max(PADDED_SIZE,
                                                                      self.media.size)))
            except Exception as exc:  # noqa: BLE001
                whole.description = "partition table that cannot be read"
                self.layout_problems.append(Problem(
                    self.evidence, "partition", "partition table found but The Sleuth Kit "
                    f"cannot read it: {_tsk_message(exc)}"))
                return
            self.volumes = []
        self.table = _TABLE_NAMES.get(table.info.vstype, f"type {int(table.info.vstype)}")
        sector = int(table.info.block_size)
        for part in table:
            self._add_partition(part, sector)

    def _add_partition(self, part: Any, sector: int) -> None:
        """Record one slot of the partition table."""
        flags = int(part.flags)
        start, length = int(part.start) * sector, int(part.len) * sector
        description = part.desc.decode("utf-8", "replace") if part.desc else ""
        if flags & _PART_ALLOC:
            role = "partition"
        elif flags & _PART_UNALLOC:
            role = "unallocated"
            length = min(start + length, self.media.size) - start  # the padding is not space
            if length <= 0:
                return
        else:
            role = "partition-table"
        self.volumes.append(Volume(int(part.addr), start, length, description, role))

    def _opens(self, volume: Volume) -> bool:
        """Whether the volume holds a file system The Sleuth Kit opens."""
        try:
            self.filesystem(volume)
        except SourceError:
            return False
        return True

    def filesystem(self, volume: Volume) -> Any:
        """The volume's file system (opened once); SourceError where it cannot be opened."""
        if volume.index not in self._filesystems:
            why = checkpoint(f"fs:{volume.index}")
            if why is not None:
                raise SourceError(f"The Sleuth Kit {why} opening it")
            try:
                self._filesystems[volume.index] = pytsk3.FS_Info(self._image,
                                                                 offset=volume.start)
            except Exception as exc:  # pytsk3 raises OSError; on hostile data, anything
                raise SourceError(_tsk_message(exc)) from exc
            finally:
                done()
        return self._filesystems[volume.index]

    # -- the listing --

    def listing(self) -> Iterator[FileRef | Problem]:
        """Problems of the layout and every regular file of every file system, in order."""
        yield from self.layout_problems
        for volume in self.volumes:
            if volume.role == "unallocated":
                self.coverage.skip("unpartitioned-space", volume.length)
                yield Problem(self.locator(volume), "partition",
                              f"space outside every partition ({volume.length} bytes at "
                              f"offset {volume.start}); not carved", skipped=True,
                              reason="unpartitioned-space")
            elif volume.role in ("partition", "image"):
                yield from self._list_volume(volume)

    def _list_volume(self, volume: Volume) -> Iterator[FileRef | Problem]:
        """The files of one partition (or of the image), or why it was not examined."""
        loc = self.locator(volume)
        if volume.start >= self.media.size:
            self._not_examined(volume, "past-end-of-image", volume.length,
                               f"partition starts at byte {volume.start}, past the end of the "
                               f"{self.media.size}-byte image (truncated image or corrupt "
                               "partition table)")
            yield Problem(loc, "partition", f"{volume.message}; not examined")
            return
        if volume.start + volume.length > self.media.size:
            missing = volume.start + volume.length - self.media.size
            self.coverage.skip("past-end-of-image", missing)
            yield Problem(loc, "partition", f"partition ends {missing} bytes past the end of "
                                            "the image (truncated image): files stored there "
                                            "cannot be read")
        encryption = _encryption(self._head(volume.start, 4096))
        if encryption is not None:
            self._not_examined(volume, "encrypted-volume", volume.length,
                               f"{encryption} encrypted volume; no key, not examined")
            yield Problem(loc, "filesystem", volume.message or "", skipped=True,
                          reason="encrypted-volume")
            return
        try:
            fs = self.filesystem(volume)
        except SourceError as exc:
            yield from self._unopened(volume, loc, str(exc))
            return
        volume.filesystem = _FS_NAMES.get(fs.info.ftype, f"type {int(fs.info.ftype)}")
        self.coverage.examined["file_systems"] += 1
        self.coverage.examined["partitions"] += int(volume.index is not None)
        self.coverage.skip("fs-free-space")
        yield Problem(loc, "carving", f"{volume.filesystem}: unallocated clusters are not "
                                      "carved; files the file system still names, deleted "
                                      "ones included, are scanned",
                      skipped=True, reason="fs-free-space")
        yield from _TreeLister(self, volume, fs, loc).run()

    def _not_examined(self, volume: Volume, reason: str, size: int, message: str) -> None:
        """Mark a volume as not examined, and count it."""
        volume.not_examined, volume.message = reason, message
        self.coverage.skip(reason, size)

    def _unopened(self, volume: Volume, loc: Locator, message: str) -> Iterator[Problem]:
        """The Problem of a volume whose file system The Sleuth Kit could not open."""
        if "ncrypt" in message:  # The Sleuth Kit's "Encryption detected", "Possible encryption"
            reason = "possibly-encrypted" if "ossible" in message else "encrypted-volume"
            self._not_examined(volume, reason, volume.length, message)
            yield Problem(loc, "filesystem", f"{message}; not examined", skipped=True,
                          reason=reason)
        elif "determine file system type" in message:
            self._not_examined(volume, "unrecognised-filesystem", volume.length, message)
            yield Problem(loc, "filesystem", f"{volume.description or 'volume'}: {message}",
                          skipped=True, reason="unrecognised-filesystem")
        else:
            self._not_examined(volume, "filesystem-error", volume.length, message)
            yield Problem(loc, "filesystem", f"file system cannot be opened: {message}")

    # -- the files --

    def file_items(self, ref: FileRef, volume: Volume, loc: Locator, tsk_file: Any) -> Walk:
        """The items of one file: its Entry, or its archive's members."""
        meta = tsk_file.info.meta
        size = int(meta.size)
        link = _file_link(ref, meta)
        floc = loc.child(link)
        mtime = int(meta.mtime)
        info = FileInfo(floc, size, mtime + int(meta.mtime_nano) / 1e9 if mtime else None)
        what = f"file {floc.path}"
        try:
            head = _tsk_read(tsk_file, 0, min(HEAD_BYTES, size), what) if size else b""
        except SourceError as exc:
            yield Problem(floc, "read", str(exc))
            return
        reader = sniff_container(head)
        if reader is None:
            yield Entry(info, partial(_read_file, tsk_file, size, self.limits, what))
            return
        stream = io.BufferedReader(_TskFileIO(tsk_file, size, what), ARCHIVE_BUFFER)
        yield from walk_container(reader, stream, info, self.limits, 1,
                                  Budget(self.limits.max_expanded_bytes))

    def open_file(self, ref: FileRef) -> Walk:
        """The items of a listed file, opened again by its inode (a batch of a distributed
        scan, or a deleted file after its file system was listed)."""
        volume = self.volume(ref.volume)
        if volume is None:
            raise SourceError(f"disk image has no partition {ref.volume} any more")
        return self.guarded_file(ref, self._reopened(ref, volume))

    def _reopened(self, ref: FileRef, volume: Volume) -> Walk:
        """The items of a file opened again by its inode."""
        loc = self.locator(volume)
        try:
            fs = self.filesystem(volume)
            tsk_file = fs.open_meta(inode=ref.inode)
        except Exception as exc:  # noqa: BLE001
            yield Problem(self._bare(ref, loc), "filesystem",
                          f"cannot be opened again by its inode: {_tsk_message(exc)}")
            return
        yield from self.file_items(ref, volume, loc, tsk_file)

    @staticmethod
    def _bare(ref: FileRef, loc: Locator) -> Locator:
        """A file's locator before its metadata is known."""
        return loc.child(Link("tsk", ref.path, (("deleted", "true" if ref.deleted else "false"),
                                                ("inode", str(ref.inode)))))

    def guarded_file(self, ref: FileRef, items: Walk) -> Walk:
        """A file's items as one named step (reading included): where The Sleuth Kit stalls
        or crashes on it, a fresh reader records it as a Problem and goes on."""
        why = checkpoint(f"file:{ref.volume}:{ref.inode}:{ref.deleted}")
        if why is not None:
            self.coverage.skip("reader-stalled", ref.size)
            volume = self.volume(ref.volume)
            loc = self.locator(volume) if volume is not None else self.evidence
            yield Problem(self._bare(ref, loc), "read", f"The Sleuth Kit {why} reading this "
                                                        "file; it was not scanned in full")
            return
        try:
            yield from items
        finally:
            done()

    def evidence_item(self, digest: Digest | None, hash_error: str | None) -> Walk:
        """The EvidenceSeen of the image, and the Problems of its hashing pass."""
        details: dict[str, Any] = {"format": self.source.format, "media_size": self.media.size,
                                   "partition_table": self.table,
                                   "volumes": [v.to_dict() for v in self.volumes]}
        stored = verified = None
        if isinstance(self.media, EwfMedia):
            details["e01"] = self.media.facts()
            stored = self.media.stored_md5()
        if digest is None:
            yield Problem(self.evidence, "read", f"the media could not be hashed: {hash_error}")
        else:
            if digest.bad_ranges:
                self.coverage.count["read-errors"] += len(digest.bad_ranges)
                self.coverage.bytes["read-errors"] += digest.bad_bytes
                details["read_errors"] = [{"offset": o, "length": n} for o, n in
                                          digest.bad_ranges[:MAX_LISTED_READ_ERRORS]]
                yield Problem(self.evidence, "read",
                              f"{digest.bad_bytes} bytes of the media in "
                              f"{len(digest.bad_ranges)} ranges could not be read; they are "
                              "hashed as zeros and files stored there may be incomplete")
            if stored is None and isinstance(self.media, EwfMedia):
                yield Problem(self.evidence, "disk-image",
                              "the E01 carries no stored MD5, so the media cannot be verified "
                              "(acquired without one, or its last segment file is missing)")
            elif stored is not None:
                verified = digest.md5 == stored
                if not verified:
                    yield Problem(self.evidence, "disk-image",
                                  f"E01 verification failed: the media read has MD5 "
                                  f"{digest.md5} but the acquisition stored {stored} (the "
                                  "image was altered or damaged after acquisition)")
        details["coverage"] = self.coverage.to_dict()
        yield EvidenceSeen(self.evidence, self.source.format, self.media.size,
                           digest.sha256 if digest else None, digest.md5 if digest else None,
                           stored, verified, details)


class _TreeLister:
    """Lists one file system's folders depth-first, never the same folder twice, and yields
    its regular files: live ones as they are found, deleted ones at the end, checked against
    the blocks the live files occupy."""

    def __init__(self, disk: _Disk, volume: Volume, fs: Any, loc: Locator) -> None:
        self.volume = volume
        self.fs = fs
        self.loc = loc
        self.coverage = disk.coverage
        self.ntfs = fs.info.ftype == pytsk3.TSK_FS_TYPE_NTFS
        self.fat = fs.info.ftype in _FAT_TYPES
        self.blocks = _BlockMap()
        self.deleted: list[tuple[FileRef, list[tuple[int, int]] | None]] = []

    def _here(self, path: str, inode: int | None, deleted: bool) -> Locator:
        """The locator of an entry that is not scanned (inode and deleted flag tell apart
        entries of the same name, as deleted ones often are)."""
        attrs = (("deleted", "true" if deleted else "false"),)
        if inode is not None:
            attrs += (("inode", str(inode)),)
        return self.loc.child(Link("tsk", path, attrs))

    def _skip(self, path: str, inode: int | None, deleted: bool, reason: str, message: str,
              size: int | None = None) -> Problem:
        """A counted skip of one entry."""
        self.coverage.skip(reason, size)
        return Problem(self._here(path, inode, deleted), "enumerate", message, skipped=True,
                       reason=reason)

    def _error(self, path: str, inode: int | None, deleted: bool, message: str) -> Problem:
        """An entry of a damaged file system that cannot be read."""
        return Problem(self._here(path, inode, deleted), "filesystem", message)

    def run(self) -> Iterator[FileRef | Problem]:
        """Every regular file of the file system (and a Problem for everything else).

        Each entry is one named step (:func:`~hashsvc.sources.steps.checkpoint`): where The
        Sleuth Kit stalls on one, a fresh reader skips it and the rest of its folder."""
        root = int(self.fs.info.root_inum)
        visited = {root}
        why = checkpoint(f"list:{self.volume.index}:{root}:open")
        try:
            if why is not None:
                raise SourceError(f"The Sleuth Kit {why}")
            stack = [(iter(self.fs.open_dir(inode=root)), "", False, root)]
        except Exception as exc:  # noqa: BLE001 - pytsk3 raises OSError; hostile data anything
            yield Problem(self.loc, "filesystem", f"root folder cannot be listed: "
                                                  f"{_tsk_message(exc)}")
            return
        finally:
            if why is None:
                done()
        self.coverage.examined["folders"] += 1
        seen = [0]  # entries taken from each folder on the stack
        while stack:
            step = self._next_entry(stack, seen, visited)
            if isinstance(step, tuple):
                stack.append(step)
                seen.append(0)
            elif step is not None:
                yield step
        yield from self._deleted_files()

    def _next_entry(self, stack: list[tuple[Iterator[Any], str, bool, int]], seen: list[int],
                    visited: set[int]
                    ) -> tuple[Iterator[Any], str, bool, int] | FileRef | Problem | None:
        """The next entry of the folder on top of the stack, as :meth:`_entry` has it (the
        folder is popped when it is done, cannot be listed further or stalled a reader)."""
        entries, prefix, parent_deleted, parent = stack[-1]
        why = checkpoint(f"list:{self.volume.index}:{parent}:{seen[-1]}")
        if why is not None:
            stack.pop()
            self.coverage.skip("reader-stalled")
            message = (f"The Sleuth Kit {why} on entry {seen.pop() + 1} of this folder: that "
                       "entry and the rest of the folder were not listed")
            return (self._error(prefix, parent, parent_deleted, message) if prefix
                    else Problem(self.loc, "filesystem", message))
        try:
            seen[-1] += 1
            try:
                tsk_file = next(entries, None)
            except Exception as exc:  # noqa: BLE001
                stack.pop()
                seen.pop()
                message = f"folder could not be listed in full: {_tsk_message(exc)}"
                return (self._error(prefix, parent, parent_deleted, message) if prefix
                        else Problem(self.loc, "filesystem", message))
            if tsk_file is None:
                stack.pop()
                seen.pop()
                return None
            name = os.fsdecode(tsk_file.info.name.name)
            if name in (".", ".."):
                return None
            path = f"{prefix}/{name}" if prefix else name
            return self._entry(tsk_file, path, parent_deleted, len(stack), visited)
        finally:
            done()

    def _entry(self, tsk_file: Any, path: str, parent_deleted: bool, depth: int,
               visited: set[int]
               ) -> tuple[Iterator[Any], str, bool, int] | FileRef | Problem | None:
        """What one directory entry is: a folder to list, a file, a Problem or nothing."""
        name = tsk_file.info.name
        deleted = parent_deleted or bool(int(name.flags) & _NAME_UNALLOC)
        meta = tsk_file.info.meta
        if meta is None and int(name.meta_addr):
            # Entries of $OrphanFiles (and some deleted names) come without their metadata.
            try:
                tsk_file = self.fs.open_meta(inode=int(name.meta_addr))
                meta = tsk_file.info.meta
            except Exception:  # noqa: BLE001 - no metadata to be had: handled below
                meta = None
        if meta is None:
            inode = int(name.meta_addr) or None
            if deleted:
                return self._skip(path, inode, True, "deleted-content-gone",
                                  "deleted entry whose metadata is gone; nothing to read")
            return self._error(path, inode, False,
                               "entry without metadata (corrupt file system); not read")
        meta_flags, kind, inode = int(meta.flags), int(meta.type), int(meta.addr)
        deleted = deleted or bool(meta_flags & _META_UNALLOC)
        if deleted and meta_flags & _META_ALLOC:
            return self._skip(path, inode, True, "deleted-inode-in-use",
                              f"deleted name whose inode {inode} belongs to a live file (the "
                              "file was renamed or moved, or the inode reused); the live file "
                              "is scanned under its own name")
        if (kind == _VIRT or (self.ntfs and inode < 16 and path.startswith("$"))
                or (self.fat and path.endswith(_FAT_LABEL))):
            return self._skip(path, inode, deleted, "fs-metadata",
                              "file-system metadata; not scanned", int(meta.size))
        if kind in _DIR_TYPES:
            return self._folder(tsk_file, path, deleted, depth, inode, visited)
        if kind == _LNK:
            return self._skip(path, inode, deleted, "symlink", SKIP_MESSAGES["symlink"])
        if kind in _SPECIAL:
            return self._skip(path, inode, deleted, "special-file",
                              SKIP_MESSAGES["special-file"])
        if kind != _REG:
            if deleted:
                return self._skip(path, inode, True, "deleted-content-gone",
                                  "deleted entry whose metadata was wiped; nothing to read")
            return self._error(path, inode, False, f"entry of unknown type {kind} (corrupt "
                                                   "file system); not read")
        return self._file(tsk_file, path, deleted, inode, int(meta.size))

    def _folder(self, tsk_file: Any, path: str, deleted: bool, depth: int, inode: int,
                visited: set[int]) -> tuple[Iterator[Any], str, bool, int] | Problem:
        """A folder to list next, or why it is not listed."""
        if inode in visited:
            return self._skip(path, inode, deleted, "already-listed",
                              f"folder (inode {inode}) already listed under another path (a "
                              "directory hard link, or a loop in a corrupt file system)")
        if depth >= MAX_FOLDER_DEPTH:
            return self._error(path, inode, deleted, f"folders nested more than "
                                                     f"{MAX_FOLDER_DEPTH} deep (corrupt or "
                                                     "hostile file system); not listed")
        visited.add(inode)
        try:
            entries = iter(tsk_file.as_directory())
        except Exception as exc:  # noqa: BLE001
            message = f"folder cannot be listed: {_tsk_message(exc)}"
            if deleted:
                return self._skip(path, inode, True, "deleted-content-gone",
                                  f"deleted {message}")
            return self._error(path, inode, False, message)
        self.coverage.examined["folders"] += 1
        return entries, path, deleted, inode

    def _file(self, tsk_file: Any, path: str, deleted: bool, inode: int,
              size: int) -> FileRef | Problem | None:
        """A live file (yielded now), or a deleted one kept for the end of the listing."""
        ref = FileRef(self.volume.index, inode, path, deleted, size)
        try:
            runs = _data_runs(tsk_file)
        except Exception as exc:  # noqa: BLE001 - The Sleuth Kit cannot map its blocks
            if deleted:
                return self._skip(path, inode, True, "deleted-content-gone",
                                  f"deleted file whose blocks cannot be found: "
                                  f"{_tsk_message(exc)}", size)
            runs = None  # reading it reports the failure
        if deleted:
            self.deleted.append((ref, runs))
            return None
        for start, length in runs or ():
            self.blocks.add(start, length)
        self._count(ref)
        return FileRef(ref.volume, inode, path, False, size, listed=tsk_file)

    def _count(self, ref: FileRef) -> None:
        """Count a file that will be scanned."""
        self.coverage.examined["files"] += 1
        self.coverage.examined["deleted_files"] += int(ref.deleted)
        self.coverage.examined["bytes"] += ref.size

    def _deleted_files(self) -> Iterator[FileRef | Problem]:
        """The deleted files, once every live file's blocks are known: skipped where nothing
        of theirs is left or their first block is a live file's, else with the bytes of theirs
        that live files now occupy."""
        self.blocks.freeze()
        block_size = int(self.fs.info.block_size)
        unchecked = 0
        for ref, runs in self.deleted:
            if ref.size == 0 or runs == []:
                yield self._skip(ref.path, ref.inode, True, "deleted-content-gone",
                                 f"deleted file (inode {ref.inode}) with no size or no data "
                                 "blocks left (ext4, for one, clears them); nothing to read",
                                 ref.size)
                continue
            if runs and not self.blocks.complete:
                unchecked += 1
            elif runs:
                if self.blocks.overlap(runs[0][0], 1):
                    yield self._skip(ref.path, ref.inode, True, "deleted-overwritten",
                                     f"deleted file (inode {ref.inode}) whose first block now "
                                     "belongs to a live file: its content is overwritten",
                                     ref.size)
                    continue
                taken = sum(self.blocks.overlap(a, n) for a, n in runs) * block_size
                ref = FileRef(ref.volume, ref.inode, ref.path, True, ref.size,
                              min(taken, ref.size))
            self._count(ref)
            yield ref
        if unchecked:
            self.coverage.skip("overwrite-unchecked")
            yield Problem(self.loc, "enumerate",
                          f"{unchecked} deleted files scanned without checking whether live "
                          f"files reuse their blocks (more than {MAX_MAPPED_RUNS} block runs "
                          "of live files to map)", skipped=True, reason="overwrite-unchecked")


# --- the source --------------------------------------------------------------------------------


class DiskImageSource(Source):
    """A raw (dd) or E01 disk image named as the source; its units are its regular files."""

    kind = "disk-image"

    def __init__(self, uri: str, limits: Limits, fmt: str) -> None:
        super().__init__(uri, limits)
        self.path = os.path.realpath(uri)  # the analyst named it: a link to it is followed
        self.format = fmt  # "raw" or "e01"
        self._open: set[_Disk] = set()
        self._hashing: set[_Hashing] = set()

    def _disk(self) -> _Disk:
        """Open the image for one pass (closed by :meth:`_done`)."""
        disk = _Disk(self)
        self._open.add(disk)
        return disk

    def _done(self, disk: _Disk) -> None:
        """Close an image opened by :meth:`_disk` (once: a walk closes what close() has not)."""
        if disk in self._open:
            self._open.discard(disk)
            disk.close()

    def _start_hashing(self) -> _Hashing:
        """Start the hashing pass in the background."""
        hashing = _Hashing(self.path, self.format)
        self._hashing.add(hashing)
        return hashing

    def _stop_hashing(self, hashing: _Hashing) -> None:
        """Stop a hashing pass (after its result was taken, this only forgets it)."""
        if hashing in self._hashing:
            self._hashing.discard(hashing)
            hashing.cancel()

    def _unopened(self, exc: SourceError) -> Problem:
        """The Problem of an image that cannot be opened at all."""
        return Problem(fs_locator(os.path.basename(self.uri)), "disk-image", str(exc))

    def _pass(self, files: Callable[[_Disk, FileRef], Walk | Iterator[Unit]]) -> Iterator[Any]:
        """One pass over the image: the listing, each file through ``files``, then the
        evidence item once the background hashing is done."""
        try:
            disk = self._disk()
        except SourceError as exc:
            yield self._unopened(exc)
            return
        hashing = self._start_hashing()
        try:
            for step in disk.listing():
                if isinstance(step, FileRef):
                    yield from files(disk, step)
                else:
                    yield step
            yield from disk.evidence_item(hashing.result(), hashing.error)
        finally:
            self._stop_hashing(hashing)
            self._done(disk)

    def walk(self) -> Walk:
        """Every item in one pass: files are read as they are listed."""

        def items(disk: _Disk, ref: FileRef) -> Walk:
            if ref.listed is None:
                return disk.open_file(ref)
            volume = disk.volume(ref.volume)
            assert volume is not None  # the listing found the file in it
            return disk.guarded_file(ref, disk.file_items(ref, volume, disk.locator(volume),
                                                          ref.listed))

        return self._pass(items)

    def units(self) -> Listing:
        """The files as units, the listing's problems, and the evidence item (hashed here)."""
        return self._pass(lambda disk, ref: iter((Unit(ref.key(), ref.size),)))

    def walk_units(self, keys: list[Any]) -> Walk:
        """The items of the listed files, each opened again by its inode."""
        if not keys:
            return
        disk = self._disk()
        try:
            for key in keys:
                yield from disk.open_file(FileRef.from_key(key))
        finally:
            self._done(disk)

    def close(self) -> None:
        """Stop any hashing pass and close any image a walk left open."""
        for hashing in list(self._hashing):
            self._stop_hashing(hashing)
        for disk in list(self._open):
            self._done(disk)
