"""Evidence sources: walk a directory, an archive or a single file into items to scan.

``walk(source)`` yields an :class:`Entry` per file (archive members included, nested archives
walked), a :class:`ContainerSeen` per archive opened, and a :class:`Problem` for everything that
could not be read or was skipped. It never raises for bad evidence, never follows links and
never writes anything to disk.
"""

from __future__ import annotations

import os

from hashsvc.errors import SourceError
from hashsvc.sources.archives import (
    CONTAINERS,
    ContainerReader,
    sniff_container,
    walk_container,
)
from hashsvc.sources.base import (
    ContainerSeen,
    Entry,
    FileInfo,
    Item,
    Limits,
    Problem,
    Walk,
)
from hashsvc.sources.directory import read_fs_file, walk_directory, walk_file
from hashsvc.sources.streams import Budget

__all__ = [
    "CONTAINERS",
    "DEFAULT_LIMITS",
    "Budget",
    "ContainerReader",
    "ContainerSeen",
    "Entry",
    "FileInfo",
    "Item",
    "Limits",
    "Problem",
    "Walk",
    "read_fs_file",
    "sniff_container",
    "walk",
    "walk_container",
]

DEFAULT_LIMITS = Limits()


def walk(source: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> Walk:
    """Walk an evidence source: a directory, or one file (an archive or a plain file).

    Raises SourceError at once if the source does not exist; everything found inside it,
    however broken, comes out as items.
    """
    path = os.fsdecode(source)
    if os.path.isdir(path):
        return walk_directory(path, limits)
    if os.path.lexists(path):
        return walk_file(path, limits)
    raise SourceError(f"evidence source not found: {path}")
