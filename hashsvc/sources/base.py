"""The interface every evidence reader implements, and the safety limits they all obey."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Union

from hashsvc.locators import Locator


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile evidence from exhausting memory, disk or time."""

    max_file_bytes: int = 512 * 1024 * 1024  # one file (or archive member) read into memory
    max_archive_depth: int = 6  # archives inside archives
    max_archive_members: int = 1_000_000  # entries in one archive
    max_expanded_bytes: int = 64 * 1024**3  # all members of one top-level archive, together
    max_ratio: float = 200.0  # uncompressed / compressed for one member ...
    ratio_floor_bytes: int = 16 * 1024 * 1024  # ... checked once a member is this large


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


Item = Union[Entry, Problem, ContainerSeen]
Walk = Iterator[Item]
