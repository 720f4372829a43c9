"""Bounded byte streams for hostile archives: decoders that count what they produce.

Nothing here trusts a declared size. Every decoder is asked for at most a chunk at a time and
every decompressed byte is charged to the :class:`Budget` of the top-level archive, so that a
few kilobytes of input can never turn into gigabytes in memory before a check runs.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Protocol

from hashsvc.errors import HashsvcError, LimitExceeded, SourceError
from hashsvc.locators import Locator
from hashsvc.sources.base import Limits, Problem
from hashsvc.sources.steps import beat

HEAD_BYTES = 512  # enough to recognise every container: a tar header is one 512-byte block
CHUNK = 1024 * 1024  # compressed bytes read, and decompressed bytes asked for, at a time


class ByteStream(Protocol):
    """What a reader needs from its input: bounded reads (zip and 7z also need seek)."""

    def read(self, size: int = -1, /) -> bytes:
        """Return at most ``size`` bytes; b'' at the end."""


# --- the shared decompression budget ---------------------------------------------------------


class SeekableView(io.RawIOBase):
    """A read-only, seekable stream over ``size`` bytes held elsewhere (a file inside a disk
    image, an S3 object): subclasses read at ``self._pos`` in ``readinto`` or ``read``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (nothing is read until a read)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos


class Budget:
    """Decompressed bytes allowed for one top-level archive, shared by all archives inside it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._reported = False

    @property
    def exhausted(self) -> bool:
        """True once more bytes than the limit were decompressed."""
        return self.used > self.limit

    @property
    def remaining(self) -> int:
        """Bytes that may still be decompressed."""
        return max(self.limit - self.used, 0)

    def charge(self, n: int) -> None:
        """Count ``n`` decompressed bytes; raise LimitExceeded once the budget is spent.
        (Every member byte passes here: in a reading child, it shows the reader is alive.)"""
        beat()
        self.used += n
        if self.exhausted:
            raise LimitExceeded(self.message())

    def exhaust(self) -> None:
        """Mark the budget spent (a reader with its own counter hit it)."""
        self.used = max(self.used, self.limit + 1)

    def message(self) -> str:
        """Why the rest of the archive is not read."""
        return (f"archive expands to more than max_expanded_bytes={self.limit} bytes in total "
                "(a decompression bomb?); the rest of it is not read")

    def problem_once(self, locator: Locator) -> Iterator[Problem]:
        """The Problem saying the budget ran out, yielded by whichever level notices first."""
        if not self._reported:
            self._reported = True
            yield Problem(locator, "archive", self.message())


# --- bounded readers ---------------------------------------------------------------------------


def read_up_to(stream: ByteStream, n: int) -> bytes:
    """Read until ``n`` bytes or the end of the stream, in chunks."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = stream.read(min(n - got, CHUNK))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def too_large(what: str, limits: Limits, size: int | None = None,
               declared: bool = False) -> LimitExceeded:
    """The error for a member over ``max_file_bytes``, with its size where known."""
    if size is None:
        known = "is larger than"
    else:
        known = f"is {size} bytes{' by its header' if declared else ''}, more than"
    return LimitExceeded(f"{what} {known} max_file_bytes={limits.max_file_bytes}; not read")


def read_member(head: bytes, rest: ByteStream, limits: Limits, what: str,
                 declared: int | None = None) -> bytes:
    """``head`` plus the rest of a member, refusing anything over ``max_file_bytes``."""
    data = head + read_up_to(rest, limits.max_file_bytes + 1 - len(head))
    if len(data) > limits.max_file_bytes:
        raise too_large(what, limits, declared, declared=declared is not None)
    return data


class Prefixed:
    """A stream whose first bytes were already read for sniffing, put back in front."""

    def __init__(self, head: bytes, rest: ByteStream) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        """Read from the head first, then from the rest."""
        if size < 0:
            raise ValueError("unbounded read refused: pass a size")
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


class Slice:
    """``length`` bytes of a seekable file from ``start``, seeking before each read."""

    def __init__(self, fileobj: IO[bytes], start: int, length: int) -> None:
        self._file = fileobj
        self._pos = start
        self._left = length

    def read(self, size: int = -1, /) -> bytes:
        """Read the next bytes of the slice; a short file is a truncated archive."""
        size = min(size if size >= 0 else CHUNK, self._left)
        if size <= 0:
            return b""
        self._file.seek(self._pos)  # the file is shared with the archive's own parser
        data = self._file.read(size)
        if not data:
            raise SourceError("archive ends inside member data (truncated)")
        self._pos += len(data)
        self._left -= len(data)
        return data


class Counted:
    """A stream of member bytes counted against the budget (stored zip members)."""

    def __init__(self, source: ByteStream, budget: Budget) -> None:
        self._source = source
        self._budget = budget

    def read(self, size: int = -1, /) -> bytes:
        """Read and count."""
        data = self._source.read(size)
        self._budget.charge(len(data))
        return data


class Codec(Protocol):
    """The incremental decompressor shape shared by bz2, lzma and the adapters below."""

    @property
    def eof(self) -> bool:
        """The end-of-stream marker was reached."""

    @property
    def needs_input(self) -> bool:
        """More compressed input is needed before more output can come."""

    @property
    def unused_data(self) -> bytes:
        """Input found after the end of the stream."""

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes:
        """Feed ``data``; return at most ``max_length`` decompressed bytes."""


class ZlibCodec:
    """zlib's decompressobj behind the bz2/lzma decompressor interface."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)

    @property
    def eof(self) -> bool:
        """The end-of-stream marker was reached."""
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        """No input is left waiting inside the decompressor."""
        return not self._d.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        """Input found after the end of the stream."""
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes:
        """Feed ``data`` after any input held back by the last call."""
        return self._d.decompress(self._d.unconsumed_tail + data, max(max_length, 0))


def _lzma1_filter(props: bytes) -> dict[str, int]:
    """The LZMA1 filter described by the 5 property bytes that zip stores before the data."""
    if len(props) != 5 or props[0] >= 9 * 5 * 5:
        raise SourceError("bad LZMA properties in zip member")
    lc, rest = props[0] % 9, props[0] // 9
    return {"id": lzma.FILTER_LZMA1, "dict_size": int.from_bytes(props[1:5], "little"),
            "lc": lc, "lp": rest % 5, "pb": rest // 5}


class ZipLzmaCodec:
    """LZMA as zip stores it: version, properties size and properties, then raw LZMA1."""

    def __init__(self) -> None:
        self._header = b""
        self._d: lzma.LZMADecompressor | None = None

    @property
    def eof(self) -> bool:
        """The end-of-stream marker was reached."""
        return self._d is not None and self._d.eof

    @property
    def needs_input(self) -> bool:
        """The header is incomplete, or the decoder wants more."""
        return self._d is None or self._d.needs_input

    @property
    def unused_data(self) -> bytes:
        """Input found after the end of the stream."""
        return self._d.unused_data if self._d is not None else b""

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes:
        """Collect the header, then decode."""
        if self._d is None:
            self._header += data
            if len(self._header) < 4:
                return b""
            end = 4 + struct.unpack("<H", self._header[2:4])[0]
            if len(self._header) < end:
                return b""
            self._d = lzma.LZMADecompressor(lzma.FORMAT_RAW,
                                            filters=[_lzma1_filter(self._header[4:end])])
            data = self._header[end:]
        return self._d.decompress(data, max_length)


class Decompressing:
    """Decompressed bytes of a stream, counted against the budget and the ratio as they come."""

    def __init__(self, source: ByteStream, new_codec: Callable[[], Codec], what: str,
                 limits: Limits, budget: Budget, multi_stream: bool = False) -> None:
        self._source = source
        self._new_codec = new_codec
        self._codec = new_codec()
        self._what = what
        self._limits = limits
        self._budget = budget
        self._multi_stream = multi_stream  # gzip, bz2 and xz files may be several streams in a row
        self._pending = b""  # input left over from the previous stream
        self._source_done = False
        self._finished = False
        self._stream_out = 0
        self._streams = 1
        self.consumed = 0
        self.produced = 0

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` decompressed bytes; b'' at the end of the data."""
        if size < 0:
            raise ValueError("unbounded read refused: pass a size")
        idle = 0
        while size and not self._finished:
            if self._codec.eof:
                self._next_stream()
                continue
            data = self._input()
            out = self._decode(data, size)
            if out:
                self._count(len(out))
                return out
            if data or self._finished:
                continue
            if self._source_done:
                raise SourceError(f"{self._what}: compressed data ends early (truncated)")
            idle += 1
            if idle > 2:
                raise SourceError(f"{self._what}: decompressor makes no progress")
        return b""

    def _input(self) -> bytes:
        """The next compressed bytes to feed, if the decoder wants any."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if not self._codec.needs_input or self._source_done:
            return b""
        data = self._source.read(CHUNK)
        self.consumed += len(data)
        self._source_done = not data
        return data

    def _decode(self, data: bytes, size: int) -> bytes:
        """Decode, turning codec errors into SourceError (or the end, for trailing junk)."""
        try:
            return self._codec.decompress(data, size)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            if self._streams > 1 and self._stream_out == 0:
                # Bytes after the last stream that are not another stream: the end, as in the
                # standard library's readers (tape padding, appended junk).
                self._finished = True
                return b""
            raise SourceError(f"{self._what}: corrupt compressed data ({exc})") from exc

    def _next_stream(self) -> None:
        """After one stream ends, start the next one if the input goes on."""
        leftover = self._codec.unused_data
        if self._multi_stream and not leftover and not self._source_done:
            leftover = self._source.read(CHUNK)
            self.consumed += len(leftover)
            self._source_done = not leftover
        if not self._multi_stream or not leftover:
            self._finished = True
            return
        self._codec = self._new_codec()
        self._pending = leftover
        self._streams += 1
        self._stream_out = 0

    def _count(self, n: int) -> None:
        """Charge the budget and check the expansion ratio."""
        self.produced += n
        self._stream_out += n
        self._budget.charge(n)
        limits = self._limits
        if (self.produced > limits.ratio_floor_bytes
                and self.produced > limits.max_ratio * max(self.consumed, 1)):
            raise LimitExceeded(
                f"{self._what} expands {self.produced} bytes from {self.consumed}, more than "
                f"max_ratio={limits.max_ratio:g} (a decompression bomb?); not read further")


def describe(exc: BaseException) -> str:
    """A one-line message for a failure, naming the exception type unless it is ours."""
    if isinstance(exc, HashsvcError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def as_source_error(read: Callable[[], bytes]) -> Callable[[], bytes]:
    """Wrap a member read so that any failure surfaces as a SourceError."""

    def guarded() -> bytes:
        try:
            return read()
        except HashsvcError:
            raise
        except Exception as exc:  # parsers of hostile data raise anything: struct.error, ...
            raise SourceError(describe(exc)) from exc

    return guarded


class StreamRead:
    """``Entry.read`` of a streamed member: once, and only while the walk is on it."""

    def __init__(self, head: bytes, rest: ByteStream, limits: Limits, what: str,
                 size: int | None = None) -> None:
        self._head = head
        self._rest = rest
        self._limits = limits
        self._what = what
        self._size = size
        self._gone = ""

    def __call__(self) -> bytes:
        """Read the member, bounded by ``max_file_bytes``."""
        if self._gone:
            raise SourceError(f"{self._what}: {self._gone}")
        self._gone = "already read (a streamed member can be read once)"
        if self._size is not None and self._size > self._limits.max_file_bytes:
            raise too_large(self._what, self._limits, self._size)
        return as_source_error(
            lambda: read_member(self._head, self._rest, self._limits, self._what))()

    def expire(self) -> None:
        """The walk moved on: the stream is no longer positioned on this member."""
        self._gone = self._gone or "the walk has moved past it"


class HeldRead:
    """``Entry.read`` of a member already in memory, released when the walk moves on."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data: bytes | None = data
        self._what = what

    def __call__(self) -> bytes:
        """The member's bytes."""
        if self._data is None:
            raise SourceError(f"{self._what}: the walk has moved past it")
        return self._data

    def release(self) -> None:
        """Drop the bytes."""
        self._data = None
