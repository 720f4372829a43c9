"""Archive readers: zip, tar, 7z and gzip/bz2/xz streams, nested, bounded, never extracted to disk.

Each reader walks one container, opened as a file object, and yields the same items as the
directory walk. Member bytes are decompressed in memory, in chunks, and counted as they come out;
declared sizes are never trusted. One :class:`Budget` per top-level archive bounds everything
decompressed inside it, nested archives included, so a zip bomb (plain, nested or overlapping)
ends as a :class:`Problem` instead of filling memory. A compressed tar (``.tar.gz`` and the like)
is read as a gzip/bz2/xz stream whose content sniffs as tar, so that tarfile never decompresses
anything itself and every byte goes through the same bounded, counted decoder.
"""

from __future__ import annotations

import bz2
import io
import lzma
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import IO, cast

import py7zr

from hashsvc.errors import ConfigError, HashsvcError, LimitExceeded, SourceError
from hashsvc.locators import Link, Locator, is_unsafe_name
from hashsvc.sources.base import (ContainerSeen, Entry, FileInfo, Limits, Occurrences, Problem,
                                  Walk)
from hashsvc.sources.pdf import sniff_pdf, walk_pdf
from hashsvc.sources.sevenzip import MemberSink, pull_members
from hashsvc.sources.streams import (
    HEAD_BYTES,
    Budget,
    ByteStream,
    Codec,
    Counted,
    Decompressing,
    HeldRead,
    Prefixed,
    Slice,
    StreamRead,
    ZipLzmaCodec,
    ZlibCodec,
    as_source_error,
    describe,
    read_member,
    read_up_to,
    too_large,
)

TAR_HEADER_CAP = 1024 * 1024  # tarfile reads long-name and pax headers whole: bound them

SKIP_MESSAGES = {
    "symlink": "symbolic link; not followed",
    "hardlink": "hard link; its target is scanned where it is stored",
    "special-file": "device file, FIFO or socket; not read",
}


# --- shared member handling -------------------------------------------------------------------


def _refuse(error: HashsvcError) -> Callable[[], bytes]:
    """An ``Entry.read`` that always fails with ``error``."""

    def read() -> bytes:
        raise error

    return read


def _skipped(locator: Locator, reason: str) -> Problem:
    """A counted skip of a link or special file found in a container."""
    return Problem(locator, "enumerate", SKIP_MESSAGES[reason], skipped=True, reason=reason)


def _name_problems(locator: Locator) -> Iterator[Problem]:
    """A Problem for a member name that is absolute or climbs out of its archive."""
    link = locator.links[-1]
    if is_unsafe_name(link.name):
        yield Problem(locator, "member-name",
                      f"member name {link.name!r} is absolute or climbs out of its archive; "
                      f"recorded as {link.display!r} and scanned anyway")


def _too_many(locator: Locator, count: int, limits: Limits) -> Iterator[Problem]:
    """A Problem when an archive lists more members than ``max_archive_members``."""
    if count > limits.max_archive_members:
        yield Problem(locator, "archive",
                      f"archive has {count} members, more than max_archive_members="
                      f"{limits.max_archive_members}; only the first ones are read")


def _depth_problem(info: FileInfo, depth: int, limits: Limits) -> Problem | None:
    """A Problem when opening this container would nest deeper than ``max_archive_depth``."""
    if depth <= limits.max_archive_depth:
        return None
    return Problem(info.locator, "archive",
                   f"archive nested {depth} deep, beyond the depth limit "
                   f"max_archive_depth={limits.max_archive_depth}; not opened")


def _member(info: FileInfo, head: bytes, read: Callable[[], bytes], rest: ByteStream | None,
            limits: Limits, depth: int, budget: Budget) -> Walk:
    """Yield a member as an Entry, or walk it when its head sniffs as a container.

    ``read`` returns the whole member (bounded); ``rest`` is the member's stream positioned
    after ``head``, used to walk streamable containers (tar, gzip, ...) without loading them.
    """
    reader = sniff_container(head)
    if reader is None:
        yield Entry(info, read)
        return
    too_deep = _depth_problem(info, depth + 1, limits)
    if too_deep is not None:
        yield too_deep
        return
    if reader.needs_seek or rest is None:
        try:
            fileobj: ByteStream = io.BytesIO(read())
        except HashsvcError as exc:
            if budget.exhausted:
                yield from budget.problem_once(info.locator)
            else:
                yield Problem(info.locator, "read", f"nested archive not opened: {exc}")
            return
    else:
        fileobj = Prefixed(head, rest)
    yield from walk_container(reader, fileobj, info, limits, depth + 1, budget)


# --- zip -------------------------------------------------------------------------------------

_ZIP_CODECS: dict[int, Callable[[], Codec]] = {
    zipfile.ZIP_DEFLATED: lambda: ZlibCodec(-15),
    zipfile.ZIP_BZIP2: bz2.BZ2Decompressor,
    zipfile.ZIP_LZMA: ZipLzmaCodec,
}
_ZIP_ENCRYPTED = 0x1
_ZIP_PATCHED = 0x20


def _sniff_zip(head: bytes) -> bool:
    """A local file header, or the end record of an empty zip."""
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def walk_zip(fileobj: ByteStream, locator: Locator, limits: Limits, depth: int,
             budget: Budget) -> Walk:
    """Walk a zip archive (seekable input) in central-directory order."""
    source = cast(IO[bytes], fileobj)
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
    yield from _too_many(locator, len(infos), limits)
    infos = infos[: limits.max_archive_members]
    # Cloud exports and phone extractions (Takeout, UFDR, iCloud) record where members came
    # from; for any other zip this finds nothing and reads nothing.
    from hashsvc.sources.exports import zip_annotations

    attrs = yield from zip_annotations(source, infos, locator, limits, budget)
    names = Occurrences()
    for info in infos:
        if budget.exhausted:
            yield from budget.problem_once(locator)
            return
        if _zip_is_dir(info):
            continue
        # The name before zipfile trims it (at a NUL), told apart from an earlier member's.
        link = names.link("zip", info.orig_filename, attrs.get(info.orig_filename, ()))
        yield from _zip_member(source, info, locator.child(link), limits, depth, budget)


def _zip_is_dir(info: zipfile.ZipInfo) -> bool:
    """A folder entry: its raw name ends in '/' and it holds nothing.

    zipfile's ``is_dir()`` looks at the name cut at its first NUL, so that a member called
    ``DCIM/\x00x.jpg`` would pass for a folder and its bytes would never be read; and a
    "folder" that holds bytes is scanned as the file it is.
    """
    return info.orig_filename.endswith("/") and info.file_size == 0 and info.compress_size <= 2


def _zip_special(info: zipfile.ZipInfo) -> str | None:
    """'symlink' or 'special-file' for members that a unix zip marks as such."""
    if info.create_system != 3:  # only unix zips record a file type
        return None
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return "special-file"
    return None


def _zip_refusal(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read at all, if it cannot."""
    if info.flag_bits & _ZIP_ENCRYPTED:
        return "encrypted zip member; no password, not read"
    if info.flag_bits & _ZIP_PATCHED:
        return "zip member in patched-data format, which hashsvc cannot read"
    if info.compress_type != zipfile.ZIP_STORED and info.compress_type not in _ZIP_CODECS:
        return (f"zip member uses compression method {info.compress_type}, which hashsvc "
                "cannot decompress; not read")
    return None


def _zip_member(fileobj: IO[bytes], info: zipfile.ZipInfo, loc: Locator, limits: Limits,
                depth: int, budget: Budget) -> Walk:
    """Yield one zip member at locator ``loc`` (its link carries what an export's metadata
    says about it)."""
    locator = Locator(loc.links[:-1])
    special = _zip_special(info)
    if special is not None:
        yield _skipped(loc, special)
        return
    yield from _name_problems(loc)
    refusal = _zip_refusal(info)
    if refusal is not None:
        yield Problem(loc, "read", refusal)
        return
    what = f"zip member {loc.path}"
    read = as_source_error(lambda: _zip_read(fileobj, info, what, limits, budget))
    try:
        stream = _zip_stream(fileobj, info, what, limits, budget)
        head = read_up_to(stream, HEAD_BYTES)
    except Exception as exc:  # a damaged member must not end the archive: record it, go on
        if budget.exhausted:
            yield from budget.problem_once(locator)
        else:
            yield Problem(loc, "read", describe(exc))
        return
    yield from _member(FileInfo(loc, info.file_size), head, read, stream, limits, depth, budget)


def _zip_data_offset(fileobj: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where a member's compressed bytes start, after its local header."""
    fileobj.seek(info.header_offset)
    header = fileobj.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise SourceError("zip member has no valid local header (corrupt archive)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return int(info.header_offset + 30 + name_len + extra_len)


def _zip_stream(fileobj: IO[bytes], info: zipfile.ZipInfo, what: str, limits: Limits,
                budget: Budget) -> ByteStream:
    """A member's decompressed bytes; decoded here, bounded, rather than by zipfile.

    zipfile's bzip2 and LZMA paths decompress a whole input chunk at once, which a few
    kilobytes of bzip2 can turn into gigabytes; these decoders are always asked for a bound.
    """
    raw = Slice(fileobj, _zip_data_offset(fileobj, info), info.compress_size)
    if info.compress_type == zipfile.ZIP_STORED:
        return Counted(raw, budget)
    return Decompressing(raw, _ZIP_CODECS[info.compress_type], what, limits, budget)


def _zip_read(fileobj: IO[bytes], info: zipfile.ZipInfo, what: str, limits: Limits,
              budget: Budget) -> bytes:
    """A whole member, bounded and CRC-checked."""
    stream = _zip_stream(fileobj, info, what, limits, budget)
    data = read_member(b"", stream, limits, what, declared=info.file_size)
    if zlib.crc32(data) != info.CRC:
        raise SourceError(f"{what}: CRC mismatch (corrupt archive)")
    return data


# --- tar -------------------------------------------------------------------------------------

_TAR_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                   tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def _sniff_tar(head: bytes) -> bool:
    """A first header block whose checksum is right (ustar, GNU and old v7 tars alike)."""
    if len(head) < 512:
        return False
    field = head[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(head[:148]) + 8 * 0x20 + sum(head[156:512])
    signed = sum(struct.unpack("148b", head[:148])) + 8 * 0x20 + sum(
        struct.unpack("356b", head[156:512]))
    return stored in (unsigned, signed)


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses huge long-name and pax headers, which tarfile reads whole."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        """Check the header size before tarfile reads it into memory."""
        if self.type in _TAR_META_TYPES and self.size > TAR_HEADER_CAP:
            raise LimitExceeded(f"tar extended header of {self.size} bytes, over {TAR_HEADER_CAP}"
                                "; archive not read further")
        # tarfile's own comments name _proc_member as the override point; typeshed lacks it.
        member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return member


def walk_tar(fileobj: ByteStream, locator: Locator, limits: Limits, depth: int,
             budget: Budget) -> Walk:
    """Walk an uncompressed tar stream in order; it need not be seekable."""
    with tarfile.open(fileobj=cast(IO[bytes], fileobj), mode="r|",
                      tarinfo=_BoundedTarInfo) as archive:
        count = 0
        names = Occurrences()
        while (member := archive.next()) is not None:
            # Stream mode keeps every header it has read in .members; nothing here needs the old
            # ones, and a million of them would be a lot of memory.
            archive.members = []  # type: ignore[attr-defined]  # not in typeshed
            count += 1
            if count > limits.max_archive_members:
                yield from _too_many(locator, count, limits)
                return
            if budget.exhausted:
                yield from budget.problem_once(locator)
                return
            if member.isdir():
                continue
            loc = locator.child(names.link("tar", member.name))
            yield from _tar_member(archive, member, loc, limits, depth, budget)


def _tar_special(member: tarfile.TarInfo) -> str | None:
    """'symlink', 'hardlink' or 'special-file' for members that are not file contents."""
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk() or member.isfifo():
        return "special-file"
    return None


def _tar_member(archive: tarfile.TarFile, member: tarfile.TarInfo, loc: Locator,
                limits: Limits, depth: int, budget: Budget) -> Walk:
    """Yield one tar member (at ``loc``); its bytes can only be read before the walk moves on."""
    special = _tar_special(member)
    if special is not None:
        yield _skipped(loc, special)
        return
    yield from _name_problems(loc)
    what = f"tar member {loc.path}"
    stream = archive.extractfile(member)
    if stream is None:
        yield Problem(loc, "read", f"{what}: tarfile gives no contents for it")
        return
    head = read_up_to(stream, HEAD_BYTES)  # a failure here means the stream is broken: end it
    read = StreamRead(head, stream, limits, what, member.size)
    info = FileInfo(loc, member.size, float(member.mtime))
    yield from _member(info, head, read, stream, limits, depth, budget)
    read.expire()


# --- gzip, bzip2 and xz streams ----------------------------------------------------------------


def _sniff_gzip(head: bytes) -> bool:
    """gzip magic and the deflate method byte."""
    return head[:3] == b"\x1f\x8b\x08"


def _sniff_bz2(head: bytes) -> bool:
    """bzip2 magic, block size digit and the magic of the first block (or of the end)."""
    return (head[:3] == b"BZh" and head[3:4] in b"123456789" and len(head) >= 10
            and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"))


def _sniff_xz(head: bytes) -> bool:
    """xz stream header magic."""
    return head[:6] == b"\xfd7zXZ\x00"


def _inner_name(locator: Locator, kind: str, suffixes: tuple[str, ...]) -> str:
    """The compressed file's own name minus the suffix, or '(<kind> content)'."""
    base = posixpath.basename(locator.links[-1].name.replace("\\", "/"))
    for suffix in suffixes:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return f"({kind} content)"


def _stream_walker(kind: str, new_codec: Callable[[], Codec],
                   suffixes: tuple[str, ...]) -> Callable[..., Walk]:
    """A walk function for one compressed-stream format."""

    def walk(fileobj: ByteStream, locator: Locator, limits: Limits, depth: int,
             budget: Budget) -> Walk:
        """Walk the content: a tar's members, or one member named after the file."""
        stream = Decompressing(fileobj, new_codec, f"{kind} stream {locator.path}", limits,
                                budget, multi_stream=True)
        head = read_up_to(stream, HEAD_BYTES)
        if _sniff_tar(head):
            yield from walk_tar(Prefixed(head, stream), locator, limits, depth, budget)
            return
        loc = locator.child(Link(kind, _inner_name(locator, kind, suffixes)))
        read = StreamRead(head, stream, limits, f"{kind} content {loc.path}")
        yield from _member(FileInfo(loc), head, read, stream, limits, depth, budget)
        read.expire()

    return walk


walk_gzip = _stream_walker("gzip", lambda: ZlibCodec(16 + 15), (".gz", ".gzip", ".tgz"))
walk_bz2 = _stream_walker("bz2", bz2.BZ2Decompressor, (".bz2", ".bz", ".tbz2"))
walk_xz = _stream_walker("xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), (".xz", ".txz"))


# --- 7z --------------------------------------------------------------------------------------


def _sniff_7z(head: bytes) -> bool:
    """7z signature."""
    return head[:6] == b"7z\xbc\xaf\x27\x1c"


def _7z_kind(member: py7zr.py7zr.ArchiveFile) -> str | None:
    """'dir', 'symlink' or 'special-file' for members that are not file contents."""
    fmt = member.st_fmt
    if member.is_directory or (fmt is not None and stat.S_ISDIR(fmt)):
        return "dir"
    if member.is_symlink or member.is_junction:
        return "symlink"
    if fmt is not None and not stat.S_ISREG(fmt):
        return "special-file"
    return None


def _stream_size(fileobj: IO[bytes]) -> int:
    """Length of a seekable file, leaving its position alone."""
    here = fileobj.tell()
    end = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(here)
    return end


def walk_7z(fileobj: ByteStream, locator: Locator, limits: Limits, depth: int,
            budget: Budget) -> Walk:
    """Walk a 7z archive (seekable input), decompressing in memory through py7zr."""
    source = cast(IO[bytes], fileobj)
    packed = _stream_size(source)
    with py7zr.SevenZipFile(source, mode="r") as archive:
        members = list(archive.files)
        yield from _too_many(locator, len(members), limits)
        members = members[: limits.max_archive_members]
        wanted: dict[str, FileInfo] = {}
        names = Occurrences()
        for member in members:
            kind = _7z_kind(member)
            if kind == "dir":
                continue
            loc = locator.child(names.link("7z", member.filename))
            if kind is not None:
                yield _skipped(loc, kind)
            elif archive.needs_password():
                yield Problem(loc, "read", "encrypted 7z member; no password, not read")
            else:
                wanted[str(member.id)] = FileInfo(loc, member.uncompressed, _7z_mtime(member))
        if wanted:
            yield from _7z_members(archive, wanted, packed, limits, depth, budget)


def _7z_mtime(member: py7zr.py7zr.ArchiveFile) -> float | None:
    """A member's modification time, if recorded."""
    stamp = member.lastwritetime
    return stamp.totimestamp() if stamp is not None else None


def _7z_members(archive: py7zr.SevenZipFile, wanted: dict[str, FileInfo], packed: int,
                limits: Limits, depth: int, budget: Budget) -> Walk:
    """Yield the wanted members as py7zr finishes them."""
    with closing(pull_members(archive, wanted, packed, limits, budget)) as sinks:
        for sink in sinks:
            yield from _7z_member(sink, limits, depth, budget)


def _7z_member(sink: MemberSink, limits: Limits, depth: int, budget: Budget) -> Walk:
    """Yield one extracted 7z member."""
    loc = sink.info.locator
    yield from _name_problems(loc)
    what = f"7z member {loc.path}"
    info = FileInfo(loc, sink.written, sink.info.mtime)
    if sink.oversized:
        yield from _member(info, sink.head, _refuse(too_large(what, limits, sink.written)),
                           None, limits, depth, budget)
        return
    data = sink.data()
    held = HeldRead(data, what)
    rest = io.BytesIO(data)
    rest.seek(len(sink.head))
    yield from _member(info, sink.head, held, rest, limits, depth, budget)
    held.release()


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerReader:
    """One container format: how to recognise it from its first bytes and walk its members."""

    name: str  # also the Link.kind of its members ("tar" for compressed tars' members)
    sniff: Callable[[bytes], bool]
    walk: Callable[[ByteStream, Locator, Limits, int, Budget], Walk]
    needs_seek: bool  # reads its directory first, so a nested one is loaded into memory


ZIP = ContainerReader("zip", _sniff_zip, walk_zip, needs_seek=True)
TAR = ContainerReader("tar", _sniff_tar, walk_tar, needs_seek=False)
SEVENZIP = ContainerReader("7z", _sniff_7z, walk_7z, needs_seek=True)
GZIP = ContainerReader("gzip", _sniff_gzip, walk_gzip, needs_seek=False)
BZIP2 = ContainerReader("bz2", _sniff_bz2, walk_bz2, needs_seek=False)
XZ = ContainerReader("xz", _sniff_xz, walk_xz, needs_seek=False)
PDF = ContainerReader("pdf", sniff_pdf, walk_pdf, needs_seek=True)  # pages' images (pdf.py)

CONTAINERS: tuple[ContainerReader, ...] = (ZIP, TAR, SEVENZIP, GZIP, BZIP2, XZ, PDF)


def _check_unique(readers: tuple[ContainerReader, ...]) -> None:
    """Refuse a registry with two readers of the same name."""
    names = [reader.name for reader in readers]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"container readers registered twice: {', '.join(twice)}")


_check_unique(CONTAINERS)


def sniff_container(head: bytes) -> ContainerReader | None:
    """The reader for a container starting with ``head`` (by content, never by name)."""
    for reader in CONTAINERS:
        if reader.sniff(head):
            return reader
    return None


def walk_container(reader: ContainerReader, fileobj: ByteStream, info: FileInfo,
                   limits: Limits, depth: int, budget: Budget) -> Walk:
    """Walk one container at nesting ``depth`` (1 for a top-level archive), never raising.

    Whatever goes wrong inside becomes a Problem on the container; items already yielded stay.
    """
    too_deep = _depth_problem(info, depth, limits)
    if too_deep is not None:
        yield too_deep
        return
    if budget.exhausted:
        yield from budget.problem_once(info.locator)
        return
    yield ContainerSeen(info, reader.name)
    try:
        yield from reader.walk(fileobj, info.locator, limits, depth, budget)
    except Exception as exc:  # hostile archives make parsers raise anything; record, go on
        if budget.exhausted:
            yield from budget.problem_once(info.locator)
        else:
            yield Problem(info.locator, "archive", describe(exc))
