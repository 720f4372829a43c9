"""Evidence source readers: directories, every archive format, nesting and hostile archives.

Every archive is generated here. Entries are read as soon as they are yielded, as the pipeline
does, because streamed members (tar, gzip) can only be read while the walk is on them.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import lzma
import os
import random
import socket
import struct
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import py7zr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hashsvc.errors import HashsvcError, LimitExceeded, SourceError
from hashsvc.sources import (CONTAINERS, ContainerReader, Limits, open_local, sniff_container,
                             walk)
from hashsvc.sources import directory as directory_module
from hashsvc.sources.archives import TAR_HEADER_CAP
from hashsvc.sources.base import ContainerSeen, Entry, Item, Problem

from evidence_builders import pdf_bytes

MiB = 1024 * 1024
SMALL = Limits(max_file_bytes=4 * MiB, max_archive_depth=6, max_archive_members=1000,
               max_expanded_bytes=64 * MiB, max_ratio=200.0, ratio_floor_bytes=2 * MiB)


def unratioed(**limits: int) -> Limits:
    """Limits with the ratio check off, so that only the byte budget can stop a bomb."""
    return Limits(max_ratio=1e12, ratio_floor_bytes=1 << 40, **limits)


# --- helpers -----------------------------------------------------------------------------------


@dataclass
class Seen:
    """Everything a walk yielded, with each entry read at once (bytes or the read error)."""

    items: list[Item] = field(default_factory=list)
    reads: dict[str, bytes | HashsvcError] = field(default_factory=dict)

    @property
    def problems(self) -> list[Problem]:
        return [i for i in self.items if isinstance(i, Problem)]

    @property
    def containers(self) -> list[ContainerSeen]:
        return [i for i in self.items if isinstance(i, ContainerSeen)]

    @property
    def entries(self) -> list[Entry]:
        return [i for i in self.items if isinstance(i, Entry)]

    def ok(self) -> dict[str, bytes]:
        return {k: v for k, v in self.reads.items() if isinstance(v, bytes)}

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.skipped]

    def skipped(self, reason: str) -> list[Problem]:
        return [p for p in self.problems if p.skipped and p.reason == reason]


def drain(items: Iterator[Item]) -> Seen:
    """Consume a walk the way the pipeline does."""
    seen = Seen()
    for item in items:
        seen.items.append(item)
        if isinstance(item, Entry):
            try:
                seen.reads[item.info.locator.path] = item.read()
            except HashsvcError as exc:
                seen.reads[item.info.locator.path] = exc
    return seen


def scan(path: Path, limits: Limits = SMALL) -> Seen:
    """Walk a source with its reader in this process and drain it (scans run the reader in a
    reading child, which tests/test_guarded.py tests; these tests patch the reader here)."""
    return drain(walk(path, dataclasses.replace(limits, reader_timeout_seconds=0,
                                                reader_memory_mb=0)))


def jpeg(seed: int) -> bytes:
    """A tiny JPEG (readers never decode it; it just looks like evidence)."""
    img = Image.new("RGB", (8, 8), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def noise(n: int, seed: int = 0) -> bytes:
    """Incompressible bytes."""
    return random.Random(seed).randbytes(n)


Members = list[tuple[str, bytes]]


def zip_bytes(members: Members, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip keeping member names exactly as given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def tar_bytes(members: Members, mode: str = "w", fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar (compressed per ``mode``) of regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sevenzip_bytes(members: Members, password: str | None = None) -> bytes:
    """A 7z archive, member names exactly as given."""
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password) as sz:
        for name, data in members:
            # The private writer skips py7zr's name check, which would refuse the hostile names
            # this file needs as evidence.
            sz._writef(io.BytesIO(data), name)
    return buf.getvalue()


def put(path: Path, data: bytes) -> Path:
    """Write a test file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def patch_zip(data: bytes, name: str, flags: int = 0, method: int | None = None) -> bytes:
    """Set flag bits and/or the method of one member in both its headers (crafted damage)."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46: pos + 46 + name_len].decode() == name:
            local = struct.unpack_from("<I", out, pos + 42)[0]
            for flag_at, method_at in ((pos + 8, pos + 10), (local + 6, local + 8)):
                old = struct.unpack_from("<H", out, flag_at)[0]
                struct.pack_into("<H", out, flag_at, old | flags)
                if method is not None:
                    struct.pack_into("<H", out, method_at, method)
        pos = out.find(b"PK\x01\x02", pos + 4)
    return bytes(out)


# --- registry contract -------------------------------------------------------------------------

SAMPLE = jpeg(1)
SAMPLES: dict[str, Callable[[], tuple[str, bytes]]] = {
    "zip": lambda: ("s.zip", zip_bytes([("dcim/IMG_1.jpg", SAMPLE)])),
    "tar": lambda: ("s.tar", tar_bytes([("dcim/IMG_1.jpg", SAMPLE)])),
    "7z": lambda: ("s.7z", sevenzip_bytes([("dcim/IMG_1.jpg", SAMPLE)])),
    "gzip": lambda: ("IMG_1.jpg.gz", gzip.compress(SAMPLE)),
    "bz2": lambda: ("IMG_1.jpg.bz2", bz2.compress(SAMPLE)),
    "xz": lambda: ("IMG_1.jpg.xz", lzma.compress(SAMPLE)),
    "pdf": lambda: ("s.pdf", pdf_bytes([[SAMPLE]])),
}
SAMPLE_PATHS = {"zip": "s.zip/dcim/IMG_1.jpg", "tar": "s.tar/dcim/IMG_1.jpg",
                "7z": "s.7z/dcim/IMG_1.jpg", "gzip": "IMG_1.jpg.gz/IMG_1.jpg",
                "bz2": "IMG_1.jpg.bz2/IMG_1.jpg", "xz": "IMG_1.jpg.xz/IMG_1.jpg",
                "pdf": "s.pdf/page-1/Im1.jpg"}


def test_registry_is_not_empty_and_names_are_unique() -> None:
    assert CONTAINERS
    names = [reader.name for reader in CONTAINERS]
    assert len(names) == len(set(names))
    assert set(names) == set(SAMPLES), "every registered reader needs a contract sample"


@pytest.mark.parametrize("reader", CONTAINERS, ids=lambda r: r.name)
def test_each_reader_sniffs_and_walks_its_format(reader: ContainerReader,
                                                 tmp_path: Path) -> None:
    name, data = SAMPLES[reader.name]()
    assert sniff_container(data[:512]) is reader
    seen = scan(put(tmp_path / name, data))
    assert [c.kind for c in seen.containers] == [reader.name]
    assert seen.reads == {SAMPLE_PATHS[reader.name]: SAMPLE}
    assert not seen.problems
    assert seen.entries[0].info.locator.links[-1].kind == reader.name


@pytest.mark.parametrize("mode,suffix", [("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"),
                                         ("w:xz", "tar.xz"), ("w", "tar")])
def test_tar_in_every_compression(tmp_path: Path, mode: str, suffix: str) -> None:
    members = [("dcim/IMG_1.jpg", jpeg(1)), ("dcim/IMG_2.jpg", jpeg(2))]
    seen = scan(put(tmp_path / f"phone.{suffix}", tar_bytes(members, mode)))
    assert seen.reads == {f"phone.{suffix}/{n}": d for n, d in members}
    assert all(e.info.locator.links[-1].kind == "tar" for e in seen.entries)
    assert not seen.problems


def test_zip_methods_stored_deflated_bzip2_lzma(tmp_path: Path) -> None:
    big = b"evidence " * 20000  # bigger than one decode chunk of the head
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                       zipfile.ZIP_LZMA):
            zf.writestr(f"m{method}.bin", big, compress_type=method)
    seen = scan(put(tmp_path / "m.zip", buf.getvalue()))
    assert seen.reads == {f"m.zip/m{m}.bin": big for m in (0, 8, 12, 14)}


def test_multi_stream_gzip_is_read_whole(tmp_path: Path) -> None:
    seen = scan(put(tmp_path / "two.jpg.gz", gzip.compress(b"first ") + gzip.compress(b"second")))
    assert seen.reads == {"two.jpg.gz/two.jpg": b"first second"}


def test_gzip_without_suffix_is_named_after_the_format(tmp_path: Path) -> None:
    seen = scan(put(tmp_path / "blob", gzip.compress(b"x" * 600)))
    assert list(seen.reads) == ["blob/(gzip content)"]


# --- directories ---------------------------------------------------------------------------------


def test_directory_walk_is_sorted_and_skips_links_and_special_files(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    put(root / "b.jpg", jpeg(2))
    put(root / "a" / "z.jpg", jpeg(3))
    put(root / "a" / "c" / "y.jpg", jpeg(4))
    put(root / "C.jpg", jpeg(5))
    os.symlink(root / "b.jpg", root / "link.jpg")
    os.symlink(root / "a", root / "linkdir")
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "s"))
        has_socket = True
    except OSError:  # socket paths are short; skip that case where tmp_path is too long
        has_socket = False
    seen = scan(root)
    sock.close()
    assert list(seen.reads) == ["C.jpg", "a/c/y.jpg", "a/z.jpg", "b.jpg"]
    assert seen.reads["b.jpg"] == jpeg(2)
    assert {p.locator.path for p in seen.skipped("symlink")} == {"link.jpg", "linkdir"}
    special = {p.locator.path for p in seen.skipped("special-file")}
    assert special == ({"fifo", "s"} if has_socket else {"fifo"})
    assert not seen.errors()
    entry = seen.entries[0]
    assert entry.fs_path == str(root / "C.jpg")
    assert entry.info.locator.to_list() == [{"kind": "fs", "name": "C.jpg"}]
    assert entry.info.size == len(jpeg(5))


def test_unlistable_directory_and_vanished_file_are_problems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ev"
    put(root / "locked" / "x.jpg", jpeg(1))
    put(root / "gone.jpg", jpeg(2))
    put(root / "ok.jpg", jpeg(3))
    real_scandir, real_open = os.scandir, directory_module.open_regular

    def scandir(path):  # root may list any directory, so deny it by hand
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    def open_regular(path):
        if path.endswith("gone.jpg"):
            raise FileNotFoundError(2, "No such file or directory")
        return real_open(path)

    monkeypatch.setattr(directory_module.os, "scandir", scandir)
    monkeypatch.setattr(directory_module, "open_regular", open_regular)
    seen = scan(root)
    assert {(p.locator.path, p.stage, p.message) for p in seen.errors()} == {
        ("locked", "enumerate", "Permission denied"),
        ("gone.jpg", "read", "No such file or directory")}
    assert list(seen.reads) == ["ok.jpg"]


def test_random_bytes_named_zip_are_just_a_file(tmp_path: Path) -> None:
    data = noise(3000)
    seen = scan(put(tmp_path / "ev" / "photos.zip", data))
    assert seen.reads == {"photos.zip": data}
    assert not seen.containers and not seen.problems


def test_single_file_sources_and_a_missing_one(tmp_path: Path) -> None:
    assert scan(put(tmp_path / "one.jpg", jpeg(1))).reads == {"one.jpg": jpeg(1)}
    seen = scan(put(tmp_path / "one.zip", zip_bytes([("a.jpg", jpeg(2))])))
    assert seen.reads == {"one.zip/a.jpg": jpeg(2)}
    with pytest.raises(SourceError):
        walk(tmp_path / "missing")


def test_plain_file_over_max_file_bytes(tmp_path: Path) -> None:
    seen = scan(put(tmp_path / "ev" / "big.jpg", b"x" * 2000), Limits(max_file_bytes=1000))
    error = seen.reads["big.jpg"]
    assert isinstance(error, LimitExceeded)
    assert "2000" in str(error) and "max_file_bytes=1000" in str(error)


# --- nesting ----------------------------------------------------------------------------------


def test_nested_archives_have_chained_locators(tmp_path: Path) -> None:
    inner_tar = tar_bytes([
        ("dcim/IMG_1.jpg", jpeg(1)),
        ("deep.zip", zip_bytes([("IMG_2.jpg", jpeg(2))])),
        ("s.7z", sevenzip_bytes([("IMG_3.jpg", jpeg(3))])),
        ("t.tar.gz", tar_bytes([("IMG_4.jpg", jpeg(4))], "w:gz")),
        ("IMG_5.jpg.xz", lzma.compress(jpeg(5))),
    ])
    seen = scan(put(tmp_path / "ev" / "outer.zip", zip_bytes([("inner.tar", inner_tar)])))
    assert seen.reads == {
        "outer.zip/inner.tar/dcim/IMG_1.jpg": jpeg(1),
        "outer.zip/inner.tar/deep.zip/IMG_2.jpg": jpeg(2),
        "outer.zip/inner.tar/s.7z/IMG_3.jpg": jpeg(3),
        "outer.zip/inner.tar/t.tar.gz/IMG_4.jpg": jpeg(4),
        "outer.zip/inner.tar/IMG_5.jpg.xz/IMG_5.jpg": jpeg(5),
    }
    assert [c.kind for c in seen.containers] == ["zip", "tar", "zip", "7z", "gzip", "xz"]
    deep = next(e for e in seen.entries if e.info.locator.path.endswith("IMG_2.jpg"))
    assert [link.kind for link in deep.info.locator.links] == ["fs", "zip", "tar", "zip"]
    assert deep.info.locator.depth == 3
    assert not seen.problems


def test_depth_limit_stops_twenty_nested_zips(tmp_path: Path) -> None:
    data = zip_bytes([("IMG.jpg", jpeg(1))])
    for level in range(19, -1, -1):
        data = zip_bytes([(f"l{level + 1}.zip", data)])
    seen = scan(put(tmp_path / "ev" / "l0.zip", data), Limits(max_archive_depth=6))
    assert len(seen.containers) == 6
    assert not seen.entries
    [problem] = seen.errors()
    assert problem.stage == "archive" and "depth limit" in problem.message
    assert problem.locator.path == "/".join(f"l{i}.zip" for i in range(7))


# --- decompression bombs --------------------------------------------------------------------------


def test_zip_bomb_is_stopped_by_the_expanded_bytes_budget(tmp_path: Path) -> None:
    bomb = zip_bytes([("bomb.bin", bytes(16 * MiB)), ("after.jpg", jpeg(1))])
    root = tmp_path / "ev"
    put(root / "bomb.zip", bomb)
    put(root / "z_next.jpg", jpeg(2))
    limits = unratioed(max_file_bytes=32 * MiB, max_expanded_bytes=2 * MiB)
    seen = scan(root, limits)
    assert isinstance(seen.reads["bomb.zip/bomb.bin"], LimitExceeded)
    [problem] = seen.errors()
    assert problem.locator.path == "bomb.zip" and "max_expanded_bytes" in problem.message
    assert seen.reads["z_next.jpg"] == jpeg(2)  # the walk goes on after the bomb


def test_member_expanding_past_the_ratio_is_refused_and_the_walk_goes_on(tmp_path: Path) -> None:
    data = zip_bytes([("zeros.bin", bytes(MiB)), ("next.jpg", jpeg(1))])
    seen = scan(put(tmp_path / "r.zip", data), Limits(max_ratio=50, ratio_floor_bytes=64 * 1024))
    error = seen.reads["r.zip/zeros.bin"]
    assert isinstance(error, LimitExceeded) and "max_ratio=50" in str(error)
    assert seen.reads["r.zip/next.jpg"] == jpeg(1)


def test_42zip_style_nested_bomb(tmp_path: Path) -> None:
    level = zip_bytes([(f"{i}.bin", bytes(MiB)) for i in range(8)])
    for _ in range(3):
        level = zip_bytes([(f"{i}.zip", level) for i in range(8)])  # 8**4 MiB = 4 GiB unpacked
    limits = unratioed(max_expanded_bytes=6 * MiB)
    seen = scan(put(tmp_path / "42.zip", level), limits)
    assert len(seen.ok()) < 8
    budget_problems = [p for p in seen.errors() if "max_expanded_bytes" in p.message]
    assert len(budget_problems) == 1 and budget_problems[0].stage == "archive"


def overlapping_zip(copies: int) -> bytes:
    """One deflated member whose central directory entry is repeated under many names."""
    kernel = zip_bytes([("k0000", bytes(MiB))])
    eocd = kernel.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", kernel, eocd + 12)
    record = kernel[cd_offset: cd_offset + cd_size]
    records = b"".join(record.replace(b"k0000", f"k{i:04d}".encode()) for i in range(copies))
    end = bytearray(kernel[eocd:])
    struct.pack_into("<HHII", end, 8, copies, copies, len(records), cd_offset)
    return kernel[:cd_offset] + records + bytes(end)


def test_overlapping_entry_bomb_is_stopped_by_the_budget(tmp_path: Path) -> None:
    seen = scan(put(tmp_path / "o.zip", overlapping_zip(200)),
                unratioed(max_expanded_bytes=8 * MiB))
    assert 1 <= len(seen.ok()) <= 8
    assert any("max_expanded_bytes" in p.message for p in seen.errors())
    assert len(seen.entries) < 20


def test_7z_bomb_is_stopped_by_budget_and_by_ratio(tmp_path: Path) -> None:
    path = put(tmp_path / "bomb.7z", sevenzip_bytes([("z.bin", bytes(8 * MiB)),
                                                     ("after.jpg", jpeg(1))]))
    by_budget = scan(path, unratioed(max_file_bytes=16 * MiB, max_expanded_bytes=2 * MiB))
    by_ratio = scan(path, Limits(ratio_floor_bytes=MiB))
    for seen, words in ((by_budget, "max_expanded_bytes"), (by_ratio, "max_ratio=200")):
        [problem] = seen.errors()
        assert problem.locator.path == "bomb.7z" and words in problem.message
        assert not seen.entries


def test_abandoned_7z_walk_leaves_no_thread(tmp_path: Path) -> None:
    path = put(tmp_path / "s.7z", sevenzip_bytes([(f"{i}.jpg", jpeg(i)) for i in range(4)]))
    before = threading.active_count()
    items = cast(Generator[Item, None, None], walk(path))  # a Walk is typed as an Iterator
    assert next(i for i in items if isinstance(i, Entry)).read() == jpeg(0)
    items.close()
    assert threading.active_count() == before


def test_members_over_max_file_bytes(tmp_path: Path) -> None:
    big = noise(2000)
    root = tmp_path / "ev"
    put(root / "a.zip", zip_bytes([("big.jpg", big), ("inner.zip", zip_bytes([("x", big)]))]))
    put(root / "b.tar", tar_bytes([("big.jpg", big)]))
    put(root / "c.7z", sevenzip_bytes([("big.jpg", big)]))
    put(root / "d.jpg.gz", gzip.compress(big))
    seen = scan(root, Limits(max_file_bytes=1000))
    for path in ("a.zip/big.jpg", "b.tar/big.jpg", "c.7z/big.jpg", "d.jpg.gz/d.jpg"):
        error = seen.reads[path]
        assert isinstance(error, LimitExceeded), path
        assert "max_file_bytes=1000" in str(error)
    assert "2000 bytes" in str(seen.reads["b.tar/big.jpg"])
    [nested] = seen.errors()
    assert (nested.locator.path, nested.stage) == ("a.zip/inner.zip", "read")
    assert "max_file_bytes=1000" in nested.message


def test_member_count_limit(tmp_path: Path) -> None:
    members = [(f"{i}.jpg", jpeg(i)) for i in range(5)]
    root = tmp_path / "ev"
    put(root / "m.zip", zip_bytes(members))
    put(root / "m.tar", tar_bytes(members))
    seen = scan(root, Limits(max_archive_members=3))
    assert sorted(seen.ok()) == [f"m.{k}/{i}.jpg" for k in ("tar", "zip") for i in range(3)]
    assert sorted(p.locator.path for p in seen.errors()) == ["m.tar", "m.zip"]
    assert all("max_archive_members=3" in p.message for p in seen.errors())


# --- hostile names and member types --------------------------------------------------------

HOSTILE = {"../../etc/x.jpg": "etc/x.jpg", "/abs.jpg": "abs.jpg", "C:\\x.jpg": "x.jpg"}


BUILDERS: dict[str, Callable[[Members], bytes]] = {
    "zip": zip_bytes, "tar": tar_bytes, "7z": sevenzip_bytes}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_traversal_and_absolute_names_are_flagged_and_still_scanned(tmp_path: Path,
                                                                    kind: str) -> None:
    members = [(raw, jpeg(i)) for i, raw in enumerate(HOSTILE)]
    seen = scan(put(tmp_path / "ev" / f"h.{kind}", BUILDERS[kind](members)))
    # py7zr reports a member name with backslashes turned into slashes
    raws = {raw.replace("\\", "/") if kind == "7z" else raw: raw for raw in HOSTILE}
    flagged = {p.locator.links[-1].name for p in seen.errors() if p.stage == "member-name"}
    assert flagged == set(raws)
    assert all(not p.skipped for p in seen.problems)
    for found, raw in raws.items():
        i, shown = list(HOSTILE).index(raw), HOSTILE[raw]
        entry = next(e for e in seen.entries if e.info.locator.links[-1].name == found)
        assert entry.info.locator.path == f"h.{kind}/{shown}"
        assert entry.read is not None and seen.reads[entry.info.locator.path] == jpeg(i)
    assert not (tmp_path / "etc").exists() and not Path("/abs.jpg").exists()


def test_tar_links_devices_and_fifos_are_skipped_and_counted(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        img = jpeg(1)
        info = tarfile.TarInfo("dcim/IMG_1.jpg")
        info.size = len(img)
        tf.addfile(info, io.BytesIO(img))
        for name, kind in [("dcim", tarfile.DIRTYPE), ("sym.jpg", tarfile.SYMTYPE),
                           ("hard.jpg", tarfile.LNKTYPE), ("tty", tarfile.CHRTYPE),
                           ("sda", tarfile.BLKTYPE), ("pipe", tarfile.FIFOTYPE)]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "dcim/IMG_1.jpg" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tf.addfile(info)
    seen = scan(put(tmp_path / "t.tar", buf.getvalue()))
    assert seen.reads == {"t.tar/dcim/IMG_1.jpg": jpeg(1)}
    assert [p.locator.path for p in seen.skipped("symlink")] == ["t.tar/sym.jpg"]
    assert [p.locator.path for p in seen.skipped("hardlink")] == ["t.tar/hard.jpg"]
    assert len(seen.skipped("special-file")) == 3
    assert not seen.errors()


def test_zip_symlink_member_is_skipped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.jpg")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
        zf.writestr("real.jpg", jpeg(1))
    seen = scan(put(tmp_path / "l.zip", buf.getvalue()))
    assert seen.reads == {"l.zip/real.jpg": jpeg(1)}
    assert [p.locator.path for p in seen.skipped("symlink")] == ["l.zip/link.jpg"]


def test_huge_tar_extended_header_is_refused(tmp_path: Path) -> None:
    data = tar_bytes([("ok.jpg", jpeg(1)), ("n" * (TAR_HEADER_CAP + 10), b"x")],
                     fmt=tarfile.GNU_FORMAT)
    seen = scan(put(tmp_path / "long.tar", data))
    assert seen.reads == {"long.tar/ok.jpg": jpeg(1)}
    [problem] = seen.errors()
    assert problem.stage == "archive" and "extended header" in problem.message


# --- damaged and encrypted archives ---------------------------------------------------------------


def test_truncated_tar_gz_keeps_what_came_before(tmp_path: Path) -> None:
    members = [(f"{n}.bin", noise(100_000, i)) for i, n in enumerate("abc")]
    data = tar_bytes(members, "w:gz")
    seen = scan(put(tmp_path / "cut.tar.gz", data[: len(data) // 2]))
    assert seen.reads["cut.tar.gz/a.bin"] == members[0][1]
    assert isinstance(seen.reads["cut.tar.gz/b.bin"], SourceError)
    assert "c.bin" not in str(seen.reads)
    [problem] = seen.errors()
    assert problem.locator.path == "cut.tar.gz" and problem.stage == "archive"
    assert "truncated" in problem.message


def test_corrupt_zips(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    put(root / "garbage.zip", b"PK\x03\x04" + noise(2000))
    good = zip_bytes([("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)), ("c.jpg", jpeg(3))],
                     zipfile.ZIP_STORED)
    put(root / "cut.zip", good[: len(good) // 2])
    damaged = bytearray(good)
    at = good.index(jpeg(2)) + 100
    damaged[at: at + 8] = b"\x00" * 8
    put(root / "crc.zip", bytes(damaged))
    seen = scan(root)
    archive_errors = {p.locator.path: p for p in seen.errors()}
    assert set(archive_errors) == {"garbage.zip", "cut.zip"}
    assert all(p.stage == "archive" for p in archive_errors.values())
    assert seen.reads["crc.zip/a.jpg"] == jpeg(1)
    assert seen.reads["crc.zip/c.jpg"] == jpeg(3)
    crc = seen.reads["crc.zip/b.jpg"]
    assert isinstance(crc, SourceError) and "CRC" in str(crc)
    assert {c.info.locator.path for c in seen.containers} == {"garbage.zip", "cut.zip", "crc.zip"}


def test_encrypted_and_unsupported_zip_members(tmp_path: Path) -> None:
    data = zip_bytes([("secret.jpg", jpeg(1)), ("d64.jpg", jpeg(2)), ("open.jpg", jpeg(3))])
    data = patch_zip(patch_zip(data, "secret.jpg", flags=0x1), "d64.jpg", method=9)
    seen = scan(put(tmp_path / "e.zip", data))
    assert seen.reads == {"e.zip/open.jpg": jpeg(3)}
    messages = {p.locator.path: (p.stage, p.message) for p in seen.errors()}
    stage, message = messages["e.zip/secret.jpg"]
    assert stage == "read" and "encrypted" in message
    assert "compression method 9" in messages["e.zip/d64.jpg"][1]


def test_encrypted_7z_members_are_problems(tmp_path: Path) -> None:
    data = sevenzip_bytes([("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))], password="secret")
    seen = scan(put(tmp_path / "e.7z", data))
    assert not seen.entries
    assert {(p.locator.path, p.stage) for p in seen.errors()} == {("e.7z/a.jpg", "read"),
                                                                  ("e.7z/b.jpg", "read")}
    assert all("encrypted" in p.message for p in seen.errors())


def test_streamed_member_reads_once_and_only_while_positioned(tmp_path: Path) -> None:
    # The reader itself, in this process (a scan reads the source in a child, which reads each
    # member as it sends it: tests/test_guarded.py).
    put(tmp_path / "s.tar", tar_bytes([("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))]))
    items = open_local(str(tmp_path / "s.tar")).walk()
    entries = [i for i in items if isinstance(i, Entry)]  # walks on without reading
    with pytest.raises(SourceError, match="moved past"):
        entries[0].read()
    items = open_local(str(tmp_path / "s.tar")).walk()
    first = next(i for i in items if isinstance(i, Entry))
    assert first.read() == jpeg(1)
    with pytest.raises(SourceError, match="once"):
        first.read()


FUZZ_MEMBERS = [("a/IMG_1.jpg", jpeg(1)), ("b.bin", noise(3000, 1)), ("c.txt", b"hello " * 500)]
FUZZ_BASES = {
    "zip": zip_bytes(FUZZ_MEMBERS), "zip-bzip2": zip_bytes(FUZZ_MEMBERS, zipfile.ZIP_BZIP2),
    "tar": tar_bytes(FUZZ_MEMBERS), "tar.gz": tar_bytes(FUZZ_MEMBERS, "w:gz"),
    "tar.xz": tar_bytes(FUZZ_MEMBERS, "w:xz"), "7z": sevenzip_bytes(FUZZ_MEMBERS),
    "nested": zip_bytes([("in.tar", tar_bytes([("x.7z", sevenzip_bytes(FUZZ_MEMBERS))]))]),
}


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(sorted(FUZZ_BASES)), data=st.data())
def test_damaged_archives_never_raise(tmp_path: Path, base: str, data: st.DataObject) -> None:
    raw = bytearray(FUZZ_BASES[base])
    cut = data.draw(st.integers(1, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)),
                               max_size=6))
    for at, value in flips:
        raw[at] = value
    seen = scan(put(tmp_path / "fuzz", bytes(raw[:cut])), Limits(max_expanded_bytes=8 * MiB))
    assert all(isinstance(i, (Entry, Problem, ContainerSeen)) for i in seen.items)


# --- nothing is written -------------------------------------------------------------------------

_WRITES: list[tuple[str, tuple[object, ...]]] = []
_WATCHING: list[bool] = []
_HOOKED: list[bool] = []  # audit hooks cannot be removed: install this one once per process
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link",
                 "os.truncate", "os.chmod", "os.utime", "os.mkfifo", "os.mknod",
                 "tempfile.mkstemp", "tempfile.mkdtemp", "shutil.copyfile", "shutil.move"}


def _audit(event: str, args: tuple[object, ...]) -> None:
    """Record every attempt to create or change a file while a walk is watched."""
    if not _WATCHING:
        return
    if event == "open":
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and set(mode) & set("wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS):
            _WRITES.append((event, args))
    elif event in _WRITE_EVENTS:
        _WRITES.append((event, args))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def test_nothing_is_written_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ev"
    for reader in CONTAINERS:
        name, data = SAMPLES[reader.name]()
        put(root / reader.name / name, data)
    put(root / "hostile.zip", zip_bytes([(raw, jpeg(1)) for raw in HOSTILE]))
    put(root / "hostile.tar", tar_bytes([(raw, jpeg(1)) for raw in HOSTILE]))
    put(root / "bomb.zip", overlapping_zip(50))
    put(root / "nested.zip", zip_bytes([("in.tar", tar_bytes([("x.7z", SAMPLES["7z"]()[1])]))]))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    if not _HOOKED:
        sys.addaudithook(_audit)  # it only records while a walk is watched
        _HOOKED.append(True)
    _WRITES.clear()
    _WATCHING.append(True)
    try:
        seen = scan(root, unratioed(max_expanded_bytes=8 * MiB))
    finally:
        _WATCHING.clear()
    assert _WRITES == []
    assert _snapshot(tmp_path) == before
    assert list(work.iterdir()) == []
    assert len(seen.ok()) >= 12
