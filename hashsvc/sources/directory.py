"""The directory reader: a sorted, recursive walk of a folder (or one file) on disk.

Symbolic links are never followed and device files, FIFOs and sockets are never opened (opening
a FIFO blocks). A regular file whose first bytes show an archive is walked as one, streamed from
disk; any other regular file becomes an Entry that a worker process can read by its path.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from functools import partial
from typing import Any, BinaryIO

from hashsvc.errors import LimitExceeded, SourceError
from hashsvc.locators import Link, Locator
from hashsvc.sources.archives import SKIP_MESSAGES, sniff_container, walk_container
from hashsvc.sources.base import Entry, FileInfo, Limits, Listing, Problem, Source, Unit, Walk
from hashsvc.sources.steps import checkpoint, done
from hashsvc.sources.streams import HEAD_BYTES, Budget

# O_NOFOLLOW and the S_ISREG check close the gap between listing a name and opening it, in which
# a file could be swapped for a link or a FIFO; O_NONBLOCK keeps such a FIFO from blocking open().
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))

_Listing = Iterator[tuple[str, os.DirEntry[str]] | Problem]


def fs_locator(relpath: str) -> Locator:
    """The locator of a file on disk: one 'fs' link with its path relative to the source."""
    return Locator((Link("fs", relpath),))


def _os_message(exc: OSError) -> str:
    """The reason of an OS error without the absolute path (the locator names the file)."""
    return exc.strerror or str(exc)


def open_regular(path: str) -> BinaryIO:
    """Open a regular file for reading without following a link; refuse anything else."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError("not a regular file any more (changed during the scan); not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_fs_file(path: str, limits: Limits) -> bytes:
    """The bytes of a regular file, refusing one over ``max_file_bytes``."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limits.max_file_bytes:
                raise LimitExceeded(f"file is {size} bytes, more than max_file_bytes="
                                    f"{limits.max_file_bytes}; not read")
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise SourceError(_os_message(exc)) from exc
    if len(data) > limits.max_file_bytes:
        raise LimitExceeded(f"file grew past max_file_bytes={limits.max_file_bytes} while "
                            "being read; not read")
    return data


def walk_fs_file(path: str, locator: Locator, limits: Limits) -> Walk:
    """Walk one regular file: an archive's members, or the file itself as an Entry."""
    try:
        fh = open_regular(path)
    except (OSError, SourceError) as exc:
        message = _os_message(exc) if isinstance(exc, OSError) else str(exc)
        yield Problem(locator, "read", message)
        return
    with fh:
        try:
            st = os.fstat(fh.fileno())
            reader = sniff_container(fh.read(HEAD_BYTES))
            fh.seek(0)
        except OSError as exc:
            yield Problem(locator, "read", _os_message(exc))
            return
        info = FileInfo(locator, st.st_size, st.st_mtime)
        if reader is not None:
            # One named step: where its reader stalls or crashes on it, a fresh reading child
            # records the archive as a Problem and goes on with the next file.
            step = "fs:" + hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()
            why = checkpoint(step)
            if why is not None:
                yield Problem(locator, "archive", f"the reader {why} reading this "
                                                  f"{reader.name}; it was not scanned in full")
                return
            try:
                yield from walk_container(reader, fh, info, limits, 1,
                                          Budget(limits.max_expanded_bytes))
            finally:
                done()
            return
    yield Entry(info, partial(read_fs_file, path, limits), fs_path=path)


def _kind(entry: os.DirEntry[str]) -> str:
    """'dir', 'file', 'symlink' or 'special-file', never following a link."""
    if entry.is_symlink():
        return "symlink"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "special-file"


def _listing(path: str, relpath: str) -> _Listing:
    """The entries of one directory sorted by name, or a Problem if it cannot be listed."""
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Problem(fs_locator(relpath), "enumerate", _os_message(exc))
        return
    for entry in entries:
        yield (f"{relpath}/{entry.name}" if relpath else entry.name), entry


def iter_tree(root: str) -> Iterator[tuple[str, os.DirEntry[str]] | Problem]:
    """Regular files under ``root`` depth-first in name order, and Problems for everything else.

    An explicit stack, since trees can be deep; links and special files are skipped Problems.
    """
    stack = [_listing(os.path.abspath(root), "")]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        if isinstance(step, Problem):
            yield step
            continue
        relpath, entry = step
        try:
            kind = _kind(entry)
        except OSError as exc:  # vanished, or not permitted to stat
            yield Problem(fs_locator(relpath), "enumerate", _os_message(exc))
            continue
        if kind == "dir":
            stack.append(_listing(entry.path, relpath))
        elif kind == "file":
            yield relpath, entry
        else:
            yield Problem(fs_locator(relpath), "enumerate", SKIP_MESSAGES[kind], skipped=True,
                          reason=kind)


def walk_directory(root: str, limits: Limits) -> Walk:
    """Walk a directory depth-first in name order."""
    for step in iter_tree(root):
        if isinstance(step, Problem):
            yield step
        else:
            relpath, entry = step
            yield from walk_fs_file(entry.path, fs_locator(relpath), limits)


def walk_file(path: str, limits: Limits) -> Walk:
    """Walk a source that is a single file; the analyst named it, so a link to it is followed."""
    loc = fs_locator(os.path.basename(path) or path)
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        yield Problem(loc, "enumerate", _os_message(exc))
        return
    if not stat.S_ISREG(mode):
        yield Problem(loc, "enumerate", SKIP_MESSAGES["special-file"], skipped=True,
                      reason="special-file")
        return
    yield from walk_fs_file(real, loc, limits)


def encode_relpath(relpath: str) -> Any:
    """A relative path as JSON: itself, or its raw bytes where the name is not valid UTF-8."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        # Undecodable names hold lone surrogates, which JSON in PostgreSQL rejects.
        return {"b64": base64.b64encode(os.fsencode(relpath)).decode("ascii")}
    return relpath


def decode_relpath(value: Any) -> str:
    """The relative path an :func:`encode_relpath` value stands for."""
    if isinstance(value, dict):
        return os.fsdecode(base64.b64decode(value["b64"]))
    return str(value)


class DirectorySource(Source):
    """A folder on disk; its units are the regular files under it (an archive is one unit)."""

    kind = "directory"

    def __init__(self, uri: str, limits: Limits) -> None:
        super().__init__(os.path.abspath(uri), limits)

    def walk(self) -> Walk:
        return walk_directory(self.uri, self.limits)

    def units(self) -> Listing:
        for step in iter_tree(self.uri):
            if isinstance(step, Problem):
                yield step
                continue
            relpath, entry = step
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except OSError:
                size = 0  # the batch reports why it cannot be read
            yield Unit(encode_relpath(relpath), size)

    def walk_units(self, keys: list[Any]) -> Walk:
        for key in keys:
            relpath = decode_relpath(key)
            yield from walk_fs_file(os.path.join(self.uri, relpath), fs_locator(relpath),
                                    self.limits)


class FileSource(Source):
    """A single file named as the source (an archive, or one picture): one unit."""

    kind = "file"

    def walk(self) -> Walk:
        return walk_file(self.uri, self.limits)

    def units(self) -> Listing:
        try:
            size = os.stat(self.uri).st_size
        except OSError:
            size = 0  # the batch reports why it cannot be read
        yield Unit(os.path.basename(self.uri) or self.uri, size)

    def walk_units(self, keys: list[Any]) -> Walk:
        if keys:
            yield from walk_file(self.uri, self.limits)
