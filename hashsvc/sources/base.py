"""The interface every evidence reader implements, and the safety limits they all obey."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

from hashsvc.locators import Link, Locator


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile evidence from exhausting memory, disk or time."""

    max_file_bytes: int = 512 * 1024 * 1024  # one file (or archive member) read into memory
    max_archive_depth: int = 6  # archives inside archives
    max_archive_members: int = 1_000_000  # entries in one archive
    max_expanded_bytes: int = 64 * 1024**3  # all members of one top-level archive, together
    max_ratio: float = 200.0  # uncompressed / compressed for one member ...
    ratio_floor_bytes: int = 16 * 1024 * 1024  # ... checked once a member is this large
    reader_timeout_seconds: float = 120.0  # a file source's reader silent this long is killed
    reader_memory_mb: int = 4096  # address space of a file source's reader (0: unlimited)


@dataclass(frozen=True)
class FileInfo:
    """Facts about one file found in a source (no content)."""

    locator: Locator
    size: int | None = None
    mtime: float | None = None


@dataclass(frozen=True)
class Entry:
    """A regular file found in a source, with a way to read its bytes.

    ``read`` may only be called while the walk is positioned on this entry (stream readers such
    as tar cannot go back); it returns at most ``Limits.max_file_bytes`` bytes or raises
    :class:`~hashsvc.errors.LimitExceeded`. ``fs_path`` is set for plain files on disk so that a
    worker process can read them itself.
    """

    info: FileInfo
    read: Callable[[], bytes]
    fs_path: str | None = None


@dataclass(frozen=True)
class Problem:
    """Something in a source that was not scanned, or only partly: an error or a skip.

    ``skipped`` problems are counted by ``reason`` (a symlink, a device file); the others are
    listed one by one in the report's ``errors`` with the ``stage`` that failed.
    """

    locator: Locator
    stage: str  # "enumerate", "read", "archive", "member-name", ...
    message: str
    skipped: bool = False
    reason: str = ""


@dataclass(frozen=True)
class ContainerSeen:
    """An archive (or other container) was examined and its members are being walked."""

    info: FileInfo
    kind: str


@dataclass(frozen=True)
class EvidenceSeen:
    """An evidence item (a disk image, a bucket, an extraction) was opened and identified.

    ``sha256`` and ``md5`` are of the evidence item as read; ``stored_md5`` is the hash the item
    carries itself (an E01's acquisition MD5), and ``verified`` says whether they agree (None
    where the item carries none). ``details`` holds what the reader learned: partitions, file
    systems, and the coverage (what was examined and what was not, with counts by reason).
    """

    locator: Locator
    kind: str  # "raw", "e01", "s3", "ios-backup", ...
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    stored_md5: str | None = None
    verified: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Occurrences:
    """Keeps the locators of one container's members unique when names repeat.

    A zip, tar or 7z may hold two members under one name (appending to an archive does it, and
    extraction keeps only the last), and each must be scanned and recorded as itself: the
    second and later members of a name get the attribute ``occurrence`` ("2", "3", ...), the
    first keeps a plain link. Only a 16-byte digest of each name is kept.
    """

    ATTR = "occurrence"

    def __init__(self) -> None:
        self._counts: dict[bytes, int] = {}

    def link(self, kind: str, name: str, attrs: tuple[tuple[str, str], ...] = ()) -> Link:
        """The link of the next member called ``name``."""
        digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        count = self._counts.get(digest, 0) + 1
        self._counts[digest] = count
        if count > 1:
            attrs = tuple(sorted((*attrs, (self.ATTR, str(count)))))
        return Link(kind, name, attrs)


Item = Union[Entry, Problem, ContainerSeen, EvidenceSeen]
Walk = Iterator[Item]


@dataclass(frozen=True)
class Unit:
    """A piece of a source that one batch job can scan by itself, found without reading it.

    ``key`` is plain JSON (it is stored with the batch); ``size`` is the bytes it will read.
    """

    key: Any
    size: int


Listing = Iterator[Union[Unit, Problem, EvidenceSeen]]


class Source:
    """One evidence source, walked whole (embedded scans) or in units (distributed scans).

    ``walk()`` yields every item. ``units()`` lists the pieces cheaply, and
    ``walk_units(keys)`` yields exactly the items that ``walk()`` yields for those pieces, with
    the same locators, so that a scan split over many workers records what one walk records.
    Items that belong to no unit (the evidence item itself, problems of the listing) come out of
    ``units()``. Neither raises for bad evidence; a source that cannot be opened at all raises
    :class:`~hashsvc.errors.SourceError` at once.
    """

    kind = "source"

    def __init__(self, uri: str, limits: Limits) -> None:
        self.uri = uri
        self.limits = limits

    def walk(self) -> Walk:
        """Every item of the source: by default, each unit's items after the listing's own."""
        keys: list[Any] = []
        for item in self.units():
            if isinstance(item, Unit):
                keys.append(item.key)
            else:
                yield item
        yield from self.walk_units(keys)

    def units(self) -> Listing:
        """The source's units in walk order, and the items that belong to none."""
        raise NotImplementedError

    def walk_units(self, keys: list[Any]) -> Walk:
        """The items of the given units, as ``walk()`` has them."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds open."""
