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
    EvidenceSeen,
    FileInfo,
    Item,
    Limits,
    Listing,
    Problem,
    Source,
    Unit,
    Walk,
)
from hashsvc.sources.directory import DirectorySource, FileSource, read_fs_file
from hashsvc.sources.streams import Budget

__all__ = [
    "CONTAINERS",
    "DEFAULT_LIMITS",
    "Budget",
    "ContainerReader",
    "ContainerSeen",
    "DirectorySource",
    "Entry",
    "EvidenceSeen",
    "FileInfo",
    "FileSource",
    "Item",
    "Limits",
    "Listing",
    "Problem",
    "Source",
    "Unit",
    "Walk",
    "open_local",
    "open_source",
    "read_fs_file",
    "sniff_container",
    "walk",
    "walk_container",
]

DEFAULT_LIMITS = Limits()


def open_source(source: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> Source:
    """The reader for an evidence source, chosen by its URI or, for files, by their content.

    ``s3://bucket/prefix`` is an S3 source; a folder is read as a phone extraction or backup
    where it has the marks of one, else as a plain folder; a file is read as a disk image (raw
    or E01) where it has a partition table or a file system, else as an archive or a picture.
    A folder or a file is read in a child process under the reader's limits (a
    :class:`~hashsvc.sources.guarded.GuardedSource`, whose ``inner`` is the reader of a folder).
    Raises SourceError at once if the source does not exist.
    """
    uri = os.fsdecode(source)
    if uri.startswith("s3://"):
        from hashsvc.sources.s3 import S3Source

        return S3Source(uri, limits)
    if not os.path.isdir(uri) and not os.path.lexists(uri):
        raise SourceError(f"evidence source not found: {uri}")
    from hashsvc.sources.guarded import GuardedSource
    from hashsvc.sources.steps import in_reader

    if in_reader() or not (limits.reader_timeout_seconds or limits.reader_memory_mb):
        return open_local(uri, limits)
    inner = open_local(uri, limits) if os.path.isdir(uri) else None  # recognised cheaply
    return GuardedSource(uri, limits, inner)


def open_local(uri: str, limits: Limits = DEFAULT_LIMITS) -> Source:
    """The reader itself of a folder or a file (:func:`open_source` reads it in a child)."""
    if os.path.isdir(uri):
        from hashsvc.sources.extractions import detect_folder

        return detect_folder(uri, limits) or DirectorySource(uri, limits)
    from hashsvc.sources.disk import detect_disk_image

    return detect_disk_image(uri, limits) or FileSource(uri, limits)


def walk(source: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> Walk:
    """Walk an evidence source of any kind (see :func:`open_source`).

    Raises SourceError at once if the source does not exist; everything found inside it,
    however broken, comes out as items.
    """
    return _walk_and_close(open_source(source, limits))


def _walk_and_close(src: Source) -> Walk:
    """Every item of an opened source; the source is closed when the walk ends or is dropped."""
    try:
        yield from src.walk()
    finally:
        src.close()
