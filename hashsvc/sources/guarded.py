"""Evidence readers in a child process, under a wall-clock limit and a memory limit.

The Sleuth Kit, libewf and the archive and PDF readers parse hostile bytes too, and a decoder's
limits (:mod:`hashsvc.isolation`) do not reach them: a damaged ext2 inode can keep The Sleuth
Kit busy for minutes inside one C call, which no signal interrupts. So a source that is a file
(a disk image, an archive, a PDF, a picture) or a folder (with the archives and PDFs in it) is
read by a :class:`GuardedSource`: the real reader runs in a child process that streams its
items to the scanning process. (S3 sources are read in the scanning process.)

* The child sets an address-space limit (``reader_memory_mb`` beyond what it had mapped once
  started), no core dumps and no file size (it cannot write a file), and dies with its parent.
* The scanning process waits at most ``reader_timeout_seconds`` for each item. The child shows
  that it is alive by each item it sends and by heartbeats from long, legitimate work (hashing
  the media, reading a large file, every member byte an archive reader decompresses); a child
  silent past the limit is killed.
* Before each step that may stall (a disk image's next folder entry, a file opened by its
  inode; an archive or PDF in a folder), a reader names it (:func:`~hashsvc.sources.steps.checkpoint`). When the child stalls
  or crashes, the innermost step it was in is marked bad and a fresh child walks the source
  again, sending nothing it sent before the step began and, at the bad step, yielding a Problem
  instead of taking it: the rest of the source is still read, and nothing is sent twice.
* A stall at a step that was not named, or at one already marked, ends the walk with a Problem
  (the rest of the source was not examined), as does the :data:`MAX_RESTARTS`-th restart.

Items cross the pipe as they are: an :class:`Entry`'s bytes are read in the child, since the
scanning process reads every entry at once anyway (a plain file keeps its ``fs_path`` and is
read by the decoding child, not here).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import multiprocessing
import os
import resource
import signal
import time
import traceback
from collections.abc import Iterator
from typing import Any

from hashsvc import errors
from hashsvc.errors import HashsvcError, SourceError
from hashsvc.isolation import FORKSERVER_PRELOAD, exit_description, start_method
from hashsvc.locators import Locator
from hashsvc.sources import steps
from hashsvc.sources.base import Entry, Limits, Listing, Problem, Source, Walk
from hashsvc.sources.directory import fs_locator, read_fs_file

log = logging.getLogger(__name__)

#: Restarts of the reading child for one walk before the rest of the source is given up.
MAX_RESTARTS = 20

_END = object()

#: How often the scanning process looks at the child's heartbeat while it waits.
POLL_SECONDS = 0.5

# -- in the child ----------------------------------------------------------------------------

def _set_limits(limits: Limits) -> None:
    """This child's limits: address space, no core dumps, no file written (a reader writes
    nothing; one that tries gets EFBIG, not SIGXFSZ; pipes are not files)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    if limits.reader_memory_mb > 0:
        with open("/proc/self/statm") as fh:
            base = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = base + limits.reader_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _entry_message(entry: Entry) -> tuple[Any, ...]:
    """An Entry as a message: its bytes read here unless a decoding child reads its file."""
    if entry.fs_path is not None:
        return ("entry", entry.info, entry.fs_path, None, None)
    try:
        return ("entry", entry.info, None, entry.read(), None)
    except HashsvcError as exc:
        return ("entry", entry.info, None, None, (type(exc).__name__, str(exc)))
    except MemoryError:
        return ("entry", entry.info, None, None,
                ("SourceError", "the reader exceeded its memory limit reading this file"))


def _child_main(conn: Any, shared: Any, uri: str, limits: Limits, mode: str,
                keys: list[Any] | None, skip: int, bad: dict[str, str]) -> None:
    """A reading child: open the source, walk it, send each item after the first ``skip``."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    steps.start(shared, bad)
    src: Source | None = None
    try:
        _set_limits(limits)
        src = open_unguarded(uri, limits)
        items = iter(src.walk() if mode == "walk" else src.units() if mode == "units"
                     else src.walk_units(list(keys or ())))
        for position in itertools.count():
            steps.at(position)
            item = next(items, _END)
            if item is _END:
                break
            if position >= skip:
                conn.send(_entry_message(item) if isinstance(item, Entry) else ("item", item))
            steps.beat()
        conn.send(("end",))
    except HashsvcError as exc:
        conn.send(("raise", type(exc).__name__, str(exc)))
    except MemoryError:
        conn.send(("fail", f"the reader exceeded its memory limit ({limits.reader_memory_mb} "
                           "MiB)"))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records it
        conn.send(("fail", f"the reader failed: {type(exc).__name__}: {exc}",
                   traceback.format_exc()))
    finally:
        if src is not None:
            src.close()


def open_unguarded(uri: str, limits: Limits) -> Source:
    """The real reader of a folder or a file (in a reading child)."""
    from hashsvc.sources import open_local

    return open_local(uri, limits)


# -- in the scanning process -----------------------------------------------------------------


class _Stalled(Exception):
    """The reading child went silent past the limit, or died."""

    def __init__(self, why: str, step: tuple[int, str]) -> None:
        super().__init__(why)
        self.why = why
        self.position, self.marker = step


def _replay(data: bytes | None, error: tuple[str, str] | None) -> bytes:
    """``Entry.read`` of an entry read in the child: its bytes, or its error raised again."""
    if error is not None:
        cls = getattr(errors, error[0], None)
        if not (isinstance(cls, type) and issubclass(cls, HashsvcError)):
            cls = SourceError
        raise cls(error[1])
    assert data is not None
    return data


def _rebuild(msg: tuple[Any, ...], limits: Limits) -> Any:
    """The item a child's message stands for."""
    if msg[0] == "entry":
        _, info, fs_path, data, error = msg
        if fs_path is not None:  # a plain file: read where it is needed (as the child would)
            return Entry(info, functools.partial(read_fs_file, fs_path, limits), fs_path)
        return Entry(info, functools.partial(_replay, data, error))
    return msg[1]


def _exit_message(exitcode: int | None) -> str:
    """Why a reading child that died did."""
    verb = "crashed" if exitcode is not None and exitcode < 0 else "ended"
    return f"{verb} the reader process ({exit_description(exitcode)})"


class _Child:
    """One reading child and its end of the pipe."""

    def __init__(self, ctx: Any, uri: str, limits: Limits, mode: str, keys: list[Any] | None,
                 skip: int, bad: dict[str, str]) -> None:
        self.limits = limits
        self.stopped = False
        self.counter = ctx.RawValue(ctypes.c_uint64, 0)
        self.buffer = ctx.RawArray(ctypes.c_char, steps.MARKER_BYTES)
        self.conn, child_end = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child_main, name="hashsvc-reader", daemon=True,
                                args=(child_end, (self.counter, self.buffer), uri, limits,
                                      mode, keys, skip, bad))
        self.proc.start()
        child_end.close()

    def marker(self) -> tuple[int, str]:
        """The step the child is on, and how many items its walk had produced when it began
        it; ``(0, "")`` when it is on no named step."""
        position, _, marker = bytes(self.buffer.value).decode(
            "utf-8", "surrogatepass").partition("|")
        return (int(position), marker) if marker else (0, "")

    def receive(self) -> tuple[Any, ...]:
        """The next message; raises _Stalled when the child is silent past the limit or dies."""
        timeout = self.limits.reader_timeout_seconds
        seen, since = self.counter.value, time.monotonic()
        while True:
            if self.conn.poll(POLL_SECONDS):
                try:
                    return self.conn.recv()  # type: ignore[no-any-return]
                except (EOFError, OSError):
                    self.proc.join(5)
                    raise _Stalled(_exit_message(self.proc.exitcode), self.marker()) from None
            if not self.proc.is_alive():
                raise _Stalled(_exit_message(self.proc.exitcode), self.marker())
            if self.counter.value != seen:
                seen, since = self.counter.value, time.monotonic()
            elif timeout > 0 and time.monotonic() - since > timeout:
                raise _Stalled(f"exceeded the reader's time limit ({timeout:g} s)",
                               self.marker())

    def stop(self) -> None:
        """Kill the child (it is done, stalled, or no longer wanted) and release its pipe."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()
        self.proc.close()


class GuardedSource(Source):
    """A folder or file source read in a child process (see the module's documentation).

    ``inner`` is the reader the child uses, where the scanning process knows it (a folder's,
    recognised by a cheap look at its listing; a file's is chosen in the child, since telling a
    disk image needs The Sleuth Kit); it is never walked here.
    """

    kind = "guarded"

    def __init__(self, uri: str, limits: Limits, inner: Source | None = None) -> None:
        super().__init__(os.path.abspath(uri), limits)  # the child may start elsewhere
        self.inner = inner
        self._children: set[_Child] = set()

    @property
    def locator(self) -> Locator:
        """The locator of the source itself."""
        return fs_locator(os.path.basename(self.uri) or self.uri)

    def walk(self) -> Walk:
        return self._run("walk", None)

    def units(self) -> Listing:
        return self._run("units", None)

    def walk_units(self, keys: list[Any]) -> Walk:
        return self._run("walk_units", keys)

    def close(self) -> None:
        for child in list(self._children):
            self._children.discard(child)
            child.stop()

    def _run(self, mode: str, keys: list[Any] | None) -> Iterator[Any]:
        """The items of one pass, child after child until the pass ends."""
        method = start_method()
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":  # as decoding pools do, whichever starts the server first
            ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        delivered = 0
        bad: dict[str, str] = {}
        while True:
            child = _Child(ctx, self.uri, self.limits, mode, keys, delivered, bad)
            self._children.add(child)
            try:
                while True:
                    msg = child.receive()
                    if msg[0] == "end":
                        return
                    if msg[0] == "raise":
                        cls = getattr(errors, msg[1], None)
                        raise (cls if isinstance(cls, type) and issubclass(cls, HashsvcError)
                               else SourceError)(msg[2])
                    if msg[0] == "fail":
                        if len(msg) > 2:
                            log.error("reader of %s failed:\n%s", self.uri, msg[2])
                        yield Problem(self.locator, "reader", f"{msg[1]}; the rest of the "
                                                              "source was not examined")
                        return
                    delivered += 1
                    yield _rebuild(msg, self.limits)
            except _Stalled as stall:
                log.warning("reader of %s %s at step %r", self.uri, stall.why, stall.marker)
                if stall.marker and stall.marker not in bad and len(bad) < MAX_RESTARTS:
                    # A fresh child walks again, sends nothing before the bad step (what it
                    # yielded already came through) and yields a Problem for the step.
                    bad[stall.marker] = stall.why
                    delivered = min(delivered, stall.position)
                    continue
                yield Problem(self.locator, "reader",
                              f"the reader {stall.why} after {delivered} items"
                              f"{' (restarted ' + str(len(bad)) + ' times)' if bad else ''}; "
                              "the rest of the source was not examined")
                return
            finally:
                self._children.discard(child)
                child.stop()
