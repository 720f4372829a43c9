"""Pulling 7z members out of py7zr one at a time, in memory.

py7zr pushes each decompressed member into a writer object; the walk wants to pull members as
items. A helper thread runs py7zr's extraction and hands each finished member over, then waits
until the walk asks for the next one: only one side runs at a time (the budget needs no lock)
and only one member is held in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator

import py7zr
from py7zr.io import MemIO, Py7zIO, WriterFactory

from hashsvc.errors import LimitExceeded
from hashsvc.sources.base import FileInfo, Limits
from hashsvc.sources.streams import HEAD_BYTES, Budget


class _Cancelled(Exception):
    """The walk stopped early; py7zr's extraction thread unwinds with this."""


class MemberSink(Py7zIO):
    """Receives one 7z member from py7zr: counts it, keeps at most ``max_file_bytes`` of it."""

    def __init__(self, info: FileInfo, handoff: _Handoff, packed: int, limits: Limits,
                 budget: Budget) -> None:
        self.info = info
        self.written = 0
        self.head = b""
        self.oversized = False
        self._chunks: list[bytes] = []
        self._handoff = handoff
        self._packed = max(packed, 1)
        self._limits = limits
        self._budget = budget

    def write(self, s: bytes | bytearray) -> int:
        """Count and keep decompressed bytes."""
        self.written += len(s)
        self._budget.charge(len(s))
        limits = self._limits
        expanded = self.written > limits.max_ratio * self._packed
        if expanded and self.written > limits.ratio_floor_bytes:
            raise LimitExceeded(
                f"7z member {self.info.locator.path} expands to {self.written} bytes from an "
                f"archive of {self._packed}, more than max_ratio={limits.max_ratio:g} "
                "(a decompression bomb?); archive not read further")
        if len(self.head) < HEAD_BYTES:
            self.head += bytes(s[: HEAD_BYTES - len(self.head)])
        if self.written > limits.max_file_bytes:
            self.oversized = True
            self._chunks = []
        elif not self.oversized:
            self._chunks.append(bytes(s))
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        """Not read back through py7zr."""
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        """py7zr rewinds finished members; nothing to do."""
        return 0

    def flush(self) -> None:
        """Nothing buffered."""

    def size(self) -> int:
        """Bytes written so far."""
        return self.written

    def close(self) -> None:
        """py7zr finished this member (CRC checked): hand it to the walk."""
        self._handoff.deliver(self)

    def data(self) -> bytes:
        """The member's bytes (only when not oversized)."""
        return b"".join(self._chunks)


class _SinkFactory(WriterFactory):
    """Makes the sink of each wanted member; py7zr names members by the key given to MemIO."""

    def __init__(self, wanted: dict[str, FileInfo], make: Callable[[FileInfo], MemberSink]) -> None:
        self._wanted = wanted
        self._make = make

    def create(self, filename: str) -> Py7zIO:
        """The sink for one member."""
        return self._make(self._wanted[filename])


class _Handoff:
    """Passes finished 7z members from py7zr's extraction thread to the walk, one at a time.

    py7zr pushes members into writers while the walk pulls items. The thread waits after each
    member until the walk asks for the next, so only one side runs at a time (the budget needs
    no lock) and only one member is held in memory.
    """

    def __init__(self) -> None:
        self._members: queue.Queue[MemberSink | BaseException | None] = queue.Queue(maxsize=1)
        self._go: queue.Queue[bool] = queue.Queue(maxsize=1)
        self._thread_waiting = False

    def run(self, extract: Callable[[], None]) -> None:
        """Thread body: extract every member, then report the end or the failure."""
        try:
            extract()
        except BaseException as exc:  # handed to the walk, which records or re-raises it
            self._members.put(exc)
            return
        self._members.put(None)

    def deliver(self, sink: MemberSink) -> None:
        """Extraction thread: give one member to the walk and wait until it moves on."""
        self._members.put(sink)
        if not self._go.get():
            raise _Cancelled()

    def next_member(self) -> MemberSink | None:
        """Walk: the next finished member, None at the end; re-raises extraction failures."""
        if self._thread_waiting:
            self._thread_waiting = False
            self._go.put(True)
        item = self._members.get()
        if isinstance(item, BaseException):
            raise item
        self._thread_waiting = item is not None
        return item

    def stop(self) -> None:
        """Walk ended early: let a waiting extraction thread unwind."""
        if self._thread_waiting:
            self._thread_waiting = False
            self._go.put(False)


def pull_members(archive: py7zr.SevenZipFile, wanted: dict[str, FileInfo], packed: int,
                 limits: Limits, budget: Budget) -> Generator[MemberSink, None, None]:
    """Extract the wanted members (keyed by member id) and yield each as it finishes.

    Close the iterator (``contextlib.closing``) to stop early: the helper thread unwinds.
    """
    handoff = _Handoff()
    factory = _SinkFactory(wanted, lambda info: MemberSink(info, handoff, packed, limits, budget))
    # py7zr's public extract() refuses a whole archive over one '../' name and renames
    # duplicates; registering writers by member id reads every member under its raw name.
    worker = archive.worker
    for key in wanted:
        worker.register_filelike(int(key), MemIO(key, factory))
    # py7zr counts every byte it decompresses, skipped and CRC-checked members included.
    worker.max_extract_size = budget.remaining
    thread = threading.Thread(
        target=handoff.run, daemon=True,
        args=(lambda: worker.extract(archive.fp, None, parallel=False),))
    thread.start()
    try:
        while True:
            try:
                sink = handoff.next_member()
            except py7zr.DecompressionBombError:
                budget.exhaust()
                raise LimitExceeded(budget.message()) from None
            if sink is None:
                return
            yield sink
    finally:
        handoff.stop()
        thread.join()
