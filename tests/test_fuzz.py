"""Fuzzing every reader of untrusted bytes with hypothesis: the type sniffers, the image
decoder on mutated real files of every format hashsvc decodes, the per-file scan step, the
video reader, every archive reader (mutated archives and hostile member names), the disk-image
readers (raw FAT, MBR, GPT, ext4, E01) and the export and extraction detectors (Takeout,
iCloud, UFDR, iOS backups).

The property, for every input: the reader returns results or raises one of hashsvc's own
errors (DecodeError, SourceError, ...), and a walk records whatever it cannot read as a
Problem; never another exception, never a hang (each example is bounded in time), never
unbounded memory (each example is bounded in address space), and everything a walk yields can
be stored as it is (no NUL or lone surrogate in a message, locators that round-trip).

The default run is bounded for CI (about a minute and a half on two cores) and draws the same
inputs every run (derandomised). Damaged ext4 images, on which The Sleuth Kit can stall for
minutes in one call (see test_fuzz_regressions.py), are walked with a short reader time limit:
the reading child is killed and the stalled step skipped. A long run on demand, with other
inputs each seed::

    HASHSVC_FUZZ_EXAMPLES=3000 HASHSVC_FUZZ_SEED=$RANDOM \\
        .venv/bin/python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

(see tests/fuzz_support.py for every knob). Every crash found becomes a regression test with
its input built in, in tests/test_fuzz_regressions.py.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import plistlib
import shutil
import sqlite3
import struct
import subprocess
import tarfile
import time
import unicodedata
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st
from PIL import Image

from hashsvc.decode import PIL_FORMATS, DecodedImage, decode, sniff
from hashsvc.errors import DecodeError, HashsvcError
from hashsvc.hashing import exact_hashes, hash_picture
from hashsvc.locators import Locator, is_unsafe_name
from hashsvc.sources import Limits, open_source, sniff_container
from hashsvc.sources.base import ContainerSeen, Entry, EvidenceSeen, Item, Problem
from hashsvc.sources.exports import (match_sidecars, parse_icloud_csv, parse_sidecar,
                                     parse_ufdr_report)
from hashsvc.sources.pdf import sniff_pdf
from hashsvc.store import locator_hash
from hashsvc.video import (VIDEO_FORMATS, NoVideoStream, VideoLimits, hash_video_bytes,
                           sniff_video)

from conftest import encode, photo
from evidence_builders import pdf_bytes, with_exif, exif_tiff
from fuzz_support import (FUZZ_EXAMPLES, FUZZ_MEMORY_MB, FUZZ_SEED, FUZZ_TIMEOUT, Timer,
                          caused_by_memory, fuzz, guarded, hostile_name, keeping, mutate)
from test_sources import sevenzip_bytes

MiB = 1024 * 1024
#: Pixels a fuzzed picture may declare (the pixel limit is what is under test, not its size).
MAX_PIXELS = 4_000_000
#: The readers run in this process (reader limits 0), where the guard bounds each example and
#: a failure shows its traceback; a scan runs them in a reading child (tests/test_guarded.py),
#: as the disk-image target below does, whose stalls only a reading child can bound.
LIMITS = Limits(max_file_bytes=8 * MiB, max_archive_depth=6, max_archive_members=5000,
                max_expanded_bytes=32 * MiB, max_ratio=200.0, ratio_floor_bytes=2 * MiB,
                reader_timeout_seconds=0, reader_memory_mb=0)
VIDEO_LIMITS = VideoLimits(max_seconds=60.0, time_budget=5.0, max_frames_decoded=5000,
                           max_frame_pixels=MAX_PIXELS)


# --- what may come out -----------------------------------------------------------------------


def storable(text: str, what: str) -> None:
    """Text that PostgreSQL and SQLite store as it is: no NUL, valid UTF-8."""
    assert isinstance(text, str), (what, text)
    assert "\x00" not in text, (what, text[:200])
    text.encode("utf-8")  # raises on a lone surrogate


def check_locator(loc: Locator) -> None:
    """A locator that round-trips through its key and displays safely."""
    key = loc.key()
    assert Locator.from_key(key) == loc
    locator_hash(key)
    path = loc.path
    storable(path, "path")
    assert not path.startswith("/") and ".." not in path.split("/"), path
    assert not any(unicodedata.category(ch).startswith("C") and ch != "\ufffd" for ch in path), path


def drain(items: Iterator[Item], limits: Limits = LIMITS) -> tuple[list[Item], dict[str, Any]]:
    """Consume a walk as the pipeline does (each entry read at once), checking every item:
    each is storable, and no two files or errors share a locator (the store keeps one row per
    locator, and the scan pairs results with files by it). Returns the items and each entry's
    bytes or read error by its locator key."""
    seen: list[Item] = []
    reads: dict[str, Any] = {}
    for item in items:
        seen.append(item)
        assert isinstance(item, (Entry, Problem, ContainerSeen, EvidenceSeen)), item
        if isinstance(item, Problem):
            check_locator(item.locator)
            storable(item.message, "message")
            storable(item.stage, "stage")
            assert "MemoryError" not in item.message, item.message
        elif isinstance(item, EvidenceSeen):
            check_locator(item.locator)
            json.dumps(item.details)
        else:
            check_locator(item.info.locator)
            assert item.info.size is None or isinstance(item.info.size, int)
            assert item.info.mtime is None or isinstance(item.info.mtime, float)
        if isinstance(item, Entry):
            key = item.info.locator.key()
            assert key not in reads, f"two files share the locator {key}"
            try:
                data = item.read()
            except HashsvcError as exc:
                assert not caused_by_memory(exc), exc
                storable(str(exc), "read error")
                reads[key] = exc
            else:
                assert isinstance(data, bytes) and len(data) <= limits.max_file_bytes
                reads[key] = data
    return seen, reads


def walk_file(path: Path, limits: Limits = LIMITS, timeout: float | None = None
              ) -> tuple[list[Item], dict[str, Any]]:
    """Open a source as a scan does and drain it, within the guard."""
    with guarded(f"walking {path.name}", timeout):
        try:
            source = open_source(path, limits)
        except HashsvcError as exc:  # a source that cannot be opened at all
            storable(str(exc), "open error")
            return [], {}
        try:
            return drain(source.walk(), limits)
        finally:
            source.close()


# --- the guard itself --------------------------------------------------------------------------


def test_the_guard_stops_a_hang_and_a_runaway_allocation() -> None:
    """The bounds every target relies on do bound: a loop ends as Overtime, an allocation past
    the memory cap fails as MemoryError (and the cap is lifted afterwards)."""
    import time

    from fuzz_support import Overtime, guarded as guard

    with pytest.raises(Overtime):
        with guard("a loop", timeout=1):
            end = time.monotonic() + 10
            while time.monotonic() < end:
                pass
    with pytest.raises(MemoryError):
        with guard("an allocation"):
            bytearray(FUZZ_MEMORY_MB * MiB + 512 * MiB)
    assert len(bytearray(FUZZ_MEMORY_MB * MiB // 4)) > 0


# --- the sniffers ---------------------------------------------------------------------------

MAGICS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"II*\0",
          b"MM\0*", b"BM", b"\0\0\0\x18ftypheic", b"\0\0\0\x1cftypavif", b"\0\0\0\x20ftypisom",
          b"\0\0\0\x08moov", b"\x1a\x45\xdf\xa3", b"RIFF\0\0\0\0AVI ", b"FLV\x01", b"\0\0\x01\xba",
          b"PK\x03\x04", b"7z\xbc\xaf\x27\x1c", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\0",
          b"%PDF-", b"G")


@fuzz(3000)
@given(head=st.one_of(st.binary(max_size=1100),
                      st.tuples(st.sampled_from(MAGICS), st.binary(max_size=600)).map(
                          lambda t: t[0] + t[1])))
def test_sniffers_name_a_known_format_or_nothing(head: bytes) -> None:
    with guarded("sniffing"):
        image = sniff(head[:64])
        video = sniff_video(head[:1024])
        container = sniff_container(head)
        pdf = sniff_pdf(head)
    assert image is None or image in PIL_FORMATS
    assert video is None or video in VIDEO_FORMATS
    assert image is None or video is None  # a picture is never also a video
    assert container is None or container.name in ("zip", "tar", "7z", "gzip", "bz2", "xz",
                                                   "pdf")
    assert isinstance(pdf, bool)


# --- images -------------------------------------------------------------------------------------


def _images() -> dict[str, bytes]:
    """Small real files of every format decode() opens, in the variants decoders treat apart."""
    base = photo("astronaut").resize((160, 120))
    big = photo("chelsea").resize((600, 400))  # JPEG DCT scaling starts at 512
    alpha = base.copy()
    alpha.putalpha(Image.linear_gradient("L").resize(base.size))
    grey16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))
    thumb = encode(base.resize((40, 30)), "JPEG", quality=70)
    out = {
        "jpeg": encode(base, "JPEG", quality=90),
        "jpeg-exif": with_exif(encode(base, "JPEG", quality=85), exif_tiff(thumb)),
        "jpeg-progressive": encode(big, "JPEG", quality=80, progressive=True, subsampling=2),
        "jpeg-cmyk": encode(base.convert("CMYK"), "JPEG"),
        "png": encode(base, "PNG"),
        "png-rgba": encode(alpha, "PNG"),
        "png-palette-transparency": encode(base.quantize(16), "PNG", transparency=0),
        "png-16bit": encode(grey16, "PNG"),
        "gif": encode(base.quantize(64), "GIF"),
        "gif-animated": _animated(base, "GIF"),
        "webp": encode(base, "WEBP", quality=70),
        "webp-lossless-alpha": encode(alpha, "WEBP", lossless=True),
        "webp-animated": _animated(base, "WEBP"),
        "bmp": encode(base, "BMP"),
        "bmp-palette": encode(base.quantize(16), "BMP"),
        "tiff": encode(base, "TIFF"),
        "tiff-lzw": encode(base, "TIFF", compression="tiff_lzw"),
        "tiff-deflate-alpha": encode(alpha, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-jpeg": encode(base, "TIFF", compression="jpeg"),
        "tiff-packbits-pages": _animated(base, "TIFF", compression="packbits"),
        "avif": encode(base, "AVIF", quality=50),
    }
    from pillow_heif import register_heif_opener

    register_heif_opener(thumbnails=True)
    out["heif"] = encode(base, "HEIF", quality=50, enc_params={"preset": "ultrafast"})
    out["heif-thumbnail"] = _heif_with_thumbnail(big)
    for name, data in out.items():
        assert sniff(data[:64]) is not None, name
        decode(data, MAX_PIXELS)  # every base decodes before it is damaged
    return out


def _animated(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    """A two-frame file."""
    frames = [img.quantize(64) if fmt == "GIF" else img,
              img.rotate(90).quantize(64) if fmt == "GIF" else img.rotate(90)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **kw)
    return buf.getvalue()


def _heif_with_thumbnail(img: Image.Image) -> bytes:
    """A HEIC with an embedded 320x240-class thumbnail, which decode() uses in its place, and
    an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "HEIF", thumbnails=[320], exif=exif.tobytes(), quality=40,
                  enc_params={"preset": "ultrafast"})


def _image_fields(data: bytes) -> tuple[tuple[int, int], ...]:
    """Offsets of the declared dimensions and lengths the decoders trust (offset, width)."""
    fields: list[tuple[int, int]] = []
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        fields += [(8, 4), (16, 4), (20, 4)]  # IHDR length, width, height
    elif data[:3] == b"GIF":
        fields += [(6, 2), (8, 2)]
    elif data[:2] == b"BM":
        fields += [(2, 4), (10, 4), (14, 4), (18, 4), (22, 4), (34, 4), (46, 4)]
    elif data[:2] == b"\xff\xd8":
        for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc4", b"\xff\xdb", b"\xff\xe1"):
            at = data.find(marker)
            if at >= 0:
                fields += [(at + 2, 2), (at + 5, 2), (at + 7, 2)]
    elif data[:4] == b"RIFF":
        fields += [(4, 4), (16, 4)]
        for chunk in (b"VP8X", b"ANMF", b"ALPH"):
            at = data.find(chunk)
            if at >= 0:
                fields += [(at + 4, 4), (at + 12, 3), (at + 15, 3)]
    elif data[:2] in (b"II", b"MM"):
        fields += [(4, 4)]
    elif data[4:8] == b"ftyp":
        fields += [(0, 4)]
        for box in (b"meta", b"iinf", b"iloc", b"ispe", b"ipco", b"mdat", b"idat", b"iref"):
            at = data.find(box)
            if at >= 4:
                fields += [(at - 4, 4), (at + 8, 4), (at + 12, 4)]
    return tuple((at, width) for at, width in fields if at + width <= len(data))


IMAGES = _images()


@st.composite
def damaged_image(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real image file of any format, damaged."""
    name = draw(st.sampled_from(sorted(IMAGES)))
    base = IMAGES[name]
    return name, draw(mutate(base, _image_fields(base), ((0, 1024),), max_ops=4))


DECODE_TIMES = Timer()

@fuzz(2500)
@given(sample=damaged_image())
def test_decode_of_damaged_images_raises_only_decode_errors(sample: tuple[str, bytes]) -> None:
    name, data = sample
    with keeping(name, data), guarded(f"decoding {name}"), DECODE_TIMES.time():
        try:
            picture = decode(data, MAX_PIXELS)
        except DecodeError as exc:
            assert not caused_by_memory(exc), f"{name}: unbounded memory: {exc}"
            storable(str(exc), "decode error")
            event("decode error")
            return
        hs = hash_picture(picture, exact_hashes(data), len(data))
    event("decoded")
    assert isinstance(picture, DecodedImage) and picture.image.mode == "RGB"
    assert picture.width * picture.height <= MAX_PIXELS
    assert min(picture.image.size) >= 1 and len(hs.hashes["pdq"]) == 64


PROCESS_TIMES = Timer()


@fuzz(600)
@given(sample=st.one_of(damaged_image(), st.builds(lambda s: s, st.deferred(
    lambda: damaged_video()))))
def test_one_file_of_a_scan_is_hashed_or_an_error_never_a_crash(
        sample: tuple[str, bytes]) -> None:
    """What a scan does with each file's bytes (pipeline.process_data: sniff, decode or video,
    hash, pictures embedded in it): a result with a stage and a message, and never the
    catch-all for an unexpected exception ("decoder failed: ...")."""
    from hashsvc.pipeline import Task, process_data

    name, data = sample
    task = Task(key="fuzz", data=data, max_pixels=MAX_PIXELS, max_file_bytes=8 * MiB,
                name=f"fuzz.{name.split('-')[0]}", max_video_seconds=60.0, video_time_budget=5.0)
    with keeping(name, data), guarded(f"processing {name}"), PROCESS_TIMES.time():
        result = process_data(task, data)
    with keeping(name, data):
        _check_result(name, result)


def _check_result(name: str, result: Any) -> None:
    """A scan's result for one file: hashed, not an image, or an error that says why."""
    for res in [result] + [child for _kind, _name, child in result.children]:
        assert res.status in ("hashed", "not-image", "error"), res
        storable(res.message, "message")
        assert not res.message.startswith(("decoder failed", "video decoder failed")), \
            f"{name}: an exception the decoder does not expect: {res.message}"
        assert "MemoryError" not in res.message and "out of memory" not in res.message, \
            res.message


# --- videos ------------------------------------------------------------------------------------


def _video(container: str, codec: str, frames: int = 12, size: tuple[int, int] = (96, 64),
           pix_fmt: str = "yuv420p", **options: str) -> bytes:
    """A short generated video (moving gradient) made with PyAV."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=10, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        y, x = np.mgrid[0:size[1], 0:size[0]]
        for i in range(frames):
            arr = np.stack([(x * 2 + i * 9) % 256, (y * 3 + i * 5) % 256,
                            ((x + y) + i * 13) % 256], axis=-1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _videos() -> dict[str, bytes]:
    out = {
        "mp4-h264": _video("mp4", "libx264", preset="ultrafast"),
        "mov-mpeg4": _video("mov", "mpeg4"),
        "mkv-vp9": _video("matroska", "libvpx-vp9", deadline="realtime", **{"cpu-used": "8"}),
        "webm-vp8": _video("webm", "libvpx", deadline="realtime"),
        "avi-mjpeg": _video("avi", "mjpeg", pix_fmt="yuvj420p"),
        "ts-h264": _video("mpegts", "libx264", preset="ultrafast"),
    }
    for name, data in out.items():
        assert sniff_video(data[:1024]) is not None, name
    return out


VIDEOS = _videos()


def _video_fields(data: bytes) -> tuple[tuple[int, int], ...]:
    """Box sizes, sample-table counts and frame dimensions of an MP4/MOV; EBML sizes of MKV."""
    fields: list[tuple[int, int]] = []
    for box in (b"ftyp", b"moov", b"mdat", b"trak", b"stsz", b"stco", b"stts", b"stsc",
                b"avcC", b"tkhd", b"mdhd", b"stsd", b"elst", b"mp4v", b"avc1"):
        at = data.find(box)
        if at >= 4:
            fields += [(at - 4, 4), (at + 4, 4), (at + 8, 4), (at + 12, 4), (at + 16, 4)]
    for marker in (b"\x18\x53\x80\x67", b"\x16\x54\xae\x6b", b"\x1f\x43\xb6\x75", b"\xb0",
                   b"\xba"):
        at = data.find(marker, 4)
        if at >= 0:
            fields += [(at + len(marker), 1), (at + len(marker), 8)]
    return tuple((at, width) for at, width in fields if at + width <= len(data))


@st.composite
def damaged_video(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real video file of any container, damaged."""
    name = draw(st.sampled_from(sorted(VIDEOS)))
    base = VIDEOS[name]
    return name, draw(mutate(base, _video_fields(base), ((0, 2048),), max_ops=4))


VIDEO_TIMES = Timer()


@fuzz(800)
@given(sample=damaged_video())
def test_damaged_videos_are_hashed_in_part_or_raise_decode_errors(
        sample: tuple[str, bytes]) -> None:
    name, data = sample
    with keeping(name, data), guarded(f"decoding video {name}"), VIDEO_TIMES.time():
        try:
            hs = hash_video_bytes(data, limits=VIDEO_LIMITS, threads=1)
        except (DecodeError, NoVideoStream) as exc:
            assert not caused_by_memory(exc), f"{name}: unbounded memory: {exc}"
            storable(str(exc), "video error")
            event("decode error")
            return
    event("hashed in part" if hs.partial else "hashed")
    assert hs.media == "video" and hs.frames is not None
    assert hs.width * hs.height <= MAX_PIXELS
    if hs.partial is not None:
        storable(hs.partial, "partial")


# --- archives -----------------------------------------------------------------------------------


def _jpeg(seed: int) -> bytes:
    """A small JPEG member (a picture the walk hands on)."""
    img = Image.new("RGB", (16, 12), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    return encode(img, "JPEG")


MEMBERS = [("DCIM/IMG_0001.jpg", _jpeg(1)), ("DCIM/IMG_0002.jpg", _jpeg(2)),
           ("notes.txt", b"evidence " * 300), ("empty", b"")]


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def _tar(members: list[tuple[str, bytes]], mode: str = "w",
         fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1714558830
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _archives() -> dict[str, bytes]:
    inner = _zip(MEMBERS)
    out = {
        "zip-deflate": _zip(MEMBERS),
        "zip-stored": _zip(MEMBERS, zipfile.ZIP_STORED),
        "zip-bzip2": _zip(MEMBERS, zipfile.ZIP_BZIP2),
        "zip-lzma": _zip(MEMBERS, zipfile.ZIP_LZMA),
        "tar-pax": _tar(MEMBERS + [("long/" + "n" * 150 + ".jpg", _jpeg(3))]),
        "tar-gnu": _tar(MEMBERS + [("long/" + "n" * 150 + ".jpg", _jpeg(3))],
                        fmt=tarfile.GNU_FORMAT),
        "tar.gz": _tar(MEMBERS, "w:gz"),
        "tar.bz2": _tar(MEMBERS, "w:bz2"),
        "tar.xz": _tar(MEMBERS, "w:xz"),
        "7z": sevenzip_bytes(MEMBERS),
        "gz": gzip.compress(_jpeg(4), mtime=0),
        "bz2": bz2.compress(_jpeg(5)),
        "xz": lzma.compress(_jpeg(6)),
        "nested": _zip([("in/chat.tar", _tar([("x.7z", sevenzip_bytes(MEMBERS[:2])),
                                              ("y.zip.gz", gzip.compress(inner, mtime=0))]))]),
        "pdf": pdf_bytes([[_jpeg(7)], [photo("coffee").resize((32, 24))]]),
    }
    for name, data in out.items():
        assert sniff_container(data) is not None, name
    return out


ARCHIVES = _archives()


def _archive_fields(data: bytes) -> tuple[tuple[int, int], ...]:
    """Declared sizes, counts and offsets of zip, tar, 7z and gzip headers (offset, width)."""
    fields: list[tuple[int, int]] = []
    for sig, offsets in ((b"PK\x03\x04", ((6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2),
                                          (28, 2))),
                         (b"PK\x01\x02", ((8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2),
                                          (38, 4), (42, 4))),
                         (b"PK\x05\x06", ((8, 2), (10, 2), (12, 4), (16, 4), (20, 2)))):
        at = data.find(sig)
        while at >= 0 and len(fields) < 200:
            fields += [(at + off, width) for off, width in offsets]
            at = data.find(sig, at + 4)
    if data[:6] == b"7z\xbc\xaf\x27\x1c":
        fields += [(12, 8), (20, 8), (28, 4)]
    if data[:3] == b"\x1f\x8b\x08":
        fields += [(3, 1), (len(data) - 4, 4), (len(data) - 8, 4)]
    for at in range(0, min(len(data), 64 * 512), 512):  # tar headers: size, checksum, type
        if data[at + 257:at + 262] == b"ustar":
            fields += [(at + 124, 8), (at + 128, 4), (at + 148, 8), (at + 156, 1)]
    return tuple((at, width) for at, width in fields if at + width <= len(data))


@st.composite
def damaged_archive(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(ARCHIVES)))
    base = ARCHIVES[name]
    regions = ((0, 1024), (max(0, len(base) - 1024), 1024))
    return name, draw(mutate(base, _archive_fields(base), regions, max_ops=4))


ARCHIVE_TIMES = Timer()


@fuzz(2000)
@given(sample=damaged_archive())
def test_damaged_archives_yield_items_and_problems_only(tmp_path: Path,
                                                        sample: tuple[str, bytes]) -> None:
    name, data = sample
    path = tmp_path / f"exhibit-{name}"
    path.write_bytes(data)
    with keeping(name, data), ARCHIVE_TIMES.time():
        items, reads = walk_file(path)
    assert items or not data
    event(f"{sum(isinstance(v, bytes) for v in reads.values())} members read")


def _zip_raw_names(members: list[tuple[bytes, bytes]], utf8: bool) -> bytes:
    """A zip whose member names are the raw bytes given (NUL, invalid UTF-8 and all): written
    with same-length placeholders, which are then replaced in both headers."""
    buf = io.BytesIO()
    holders = []
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (raw, data) in enumerate(members):
            holder = (f"\x01{i:05d}" + "\x02" * max(0, len(raw) - 6))[: max(len(raw), 6)]
            holders.append(holder.encode("ascii"))
            info = zipfile.ZipInfo(holder, (2024, 1, 1, 0, 0, 0))
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    out = bytearray(buf.getvalue())
    for (raw, _data), holder in zip(members, holders):
        fixed = raw.ljust(len(holder), b"_") if len(raw) < len(holder) else raw
        out = bytearray(bytes(out).replace(holder, fixed))
    if utf8:  # the 'names are UTF-8' flag (bit 11) on every member, in both headers
        for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = out.find(sig)
            while at >= 0:
                old = struct.unpack_from("<H", out, at + flag_at)[0]
                struct.pack_into("<H", out, at + flag_at, old | 0x800)
                at = out.find(sig, at + 4)
    return bytes(out)


def _named_archive(kind: str, names: list[str]) -> tuple[bytes, list[bytes]]:
    """An archive of ``kind`` holding one distinct picture per name; the pictures."""
    pictures = [_jpeg(100 + i) for i in range(len(names))]
    members = list(zip(names, pictures))
    if kind == "zip":
        return _zip(members), pictures
    if kind == "zip-raw":
        raw = [n.encode("utf-8", "surrogateescape") for n in names]
        return _zip_raw_names(list(zip(raw, pictures)), utf8=False), pictures
    if kind == "zip-raw-utf8":
        raw = [n.encode("utf-8", "surrogateescape") for n in names]
        return _zip_raw_names(list(zip(raw, pictures)), utf8=True), pictures
    if kind == "tar":
        return _tar(members), pictures
    if kind == "tar-gnu":
        return _tar(members, fmt=tarfile.GNU_FORMAT), pictures
    if kind == "tar.gz":
        return _tar(members, "w:gz"), pictures
    return sevenzip_bytes(members), pictures


NAME_TIMES = Timer()


def _written_as_folder(kind: str, name: str) -> bool:
    """Whether the archive writer of ``kind`` turns a member of this name into a folder."""
    if kind == "zip":
        name = name.split("\x00")[0]
    if kind == "7z":
        name = name.replace("\\", "/")
    return name.endswith("/") or name in ("", ".", "..")


@fuzz(800)
@given(kind=st.sampled_from(["zip", "zip-raw", "zip-raw-utf8", "tar", "tar-gnu", "tar.gz",
                             "7z"]),
       names=st.lists(hostile_name(), min_size=1, max_size=5))
def test_hostile_member_names_are_flagged_and_their_members_scanned(
        tmp_path: Path, kind: str, names: list[str]) -> None:
    """Every member is scanned (its bytes read back) or the archive reports why not; a name
    that climbs out of the archive or is absolute is flagged; what is shown is a safe path."""
    if kind.startswith("zip-raw"):
        names = [n.replace("\x00", "") if kind == "zip-raw" else n for n in names]
    try:
        data, pictures = _named_archive(kind, names)
    except (ValueError, UnicodeError, OSError, tarfile.TarError, KeyError) as exc:
        assume(False)  # the writer refuses the name: nothing to read
        raise AssertionError from exc
    path = tmp_path / "exhibit"
    path.write_bytes(data)
    with NAME_TIMES.time():
        items, reads = walk_file(path)
    errors = [i for i in items if isinstance(i, Problem) and not i.skipped]
    read_back = [v for v in reads.values() if isinstance(v, bytes)]
    lost = [n for n, p in zip(names, pictures) if p not in read_back]
    # A writer may store a name as a folder ('x/'; zipfile cuts a name at a NUL first); what
    # the archive really holds under any other name must be scanned, or the walk must say why.
    unexplained = [n for n in lost if not _written_as_folder(kind, n)]
    if unexplained:
        assert any(i.stage in ("archive", "read", "enumerate") for i in errors), (
            f"{kind}: members {unexplained!r} were neither scanned nor reported; "
            f"items {items!r}")
    for item in items:
        if isinstance(item, Entry) and is_unsafe_name(item.info.locator.links[-1].name):
            assert any(p.stage == "member-name" and p.locator == item.info.locator
                       for p in errors), item.info.locator


# --- disk images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disk_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Raw FAT, MBR- and GPT-partitioned disks, ext4 and an E01, each holding pictures, a
    deleted picture and a zip, built with the tools tests/test_disk_images.py uses, with fixed
    volume ids, UUIDs and times, so that the derandomised run damages the same bytes each time."""
    from test_disk_images import FAT_START, MTIME, e01_of, run, stage, tool

    for name in ("mkfs.fat", "mcopy", "sfdisk", "ewfacquire"):
        tool(name)  # skips the test where scripts/ensure-services.sh has not installed it
    root = tmp_path_factory.mktemp("disks")
    files = {"DCIM/IMG_1.JPG": _jpeg(11), "DCIM/IMG_2.JPG": _jpeg(12),
             "chat.zip": _zip([("media/x.jpg", _jpeg(13))]), "gone.jpg": _jpeg(14)}
    staged = stage(root / "files", files)
    fat = root / "fat.img"
    run("mkfs.fat", "-C", "--invariant", "-n", "EVIDENCE", str(fat), "1024")
    run("mmd", "-i", str(fat), "::DCIM")
    for rel in files:
        run("mcopy", "-m", "-i", str(fat), str(staged / rel), f"::{rel}")
    run("mdel", "-i", str(fat), "::gone.jpg")
    out = {"fat": fat.read_bytes()}
    sectors = len(out["fat"]) // 512
    for label, table in (("mbr", f"label: dos\nlabel-id: 0x1d2c3b4a\nstart={FAT_START}, "
                                  f"size={sectors}, type=c\n"),
                         ("gpt", f"label: gpt\nlabel-id: 8D2C1E3F-0000-4000-8000-00000000000A"
                                 f"\nstart={FAT_START}, size={sectors}, type=EBD0A0A2-B9E5-"
                                 "4433-87C0-68B6B72699C7, uuid=8D2C1E3F-0000-4000-8000-"
                                 "00000000000B\n")):
        disk = root / f"{label}.img"
        with open(disk, "wb") as fh:
            fh.truncate((FAT_START + sectors + 2048) * 512)
        run("sfdisk", "-q", str(disk), stdin=table)
        with open(disk, "r+b") as fh:
            fh.seek(FAT_START * 512)
            fh.write(out["fat"])
        out[label] = disk.read_bytes()
    out["e01"] = e01_of(root / "mbr.img", root / "exhibit").read_bytes()
    if shutil.which("mkfs.ext4") and shutil.which("debugfs"):
        ext4 = root / "ext4.img"
        env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(MTIME)}
        commands = root / "debugfs.cmd"
        commands.write_text("mkdir DCIM\n" + "".join(f"write {staged / rel} {rel}\n"
                                                     for rel in files) + "rm gone.jpg\n")
        for args in (["mkfs.ext4", "-q", "-F", "-U", "8d2c1e3f-0000-4000-8000-0000000000e4",
                      "-E", "hash_seed=8d2c1e3f-0000-4000-8000-0000000000e5", str(ext4), "2M"],
                     ["debugfs", "-w", "-f", str(commands), str(ext4)]):
            subprocess.run(args, env=env, capture_output=True, timeout=60, check=True)
        out["ext4"] = ext4.read_bytes()
    return out


DISK_REGIONS = {
    # the boot sector's BPB (sizes, counts), the FATs, the root folder and the files' clusters;
    # the partition entries; the GPT header and entries; ext4's superblock, group descriptors
    # and inode table; the E01's section headers and tables
    "fat": ((11, 51), (512, 4096), (4608, 8192), (12800, 32768)),
    "mbr": ((446, 64), (2048 * 512 + 11, 51), (2048 * 512 + 512, 16384)),
    "gpt": ((446, 64), (512, 92), (1024, 512), (2048 * 512 + 11, 51), (2048 * 512 + 512, 16384)),
    "ext4": ((1024, 1024), (2048, 6144), (8192, 65536)),
    "e01": ((13, 4096), (4096, 65536)),
}
DISK_TIMES = Timer()
#: Seconds one disk-image example may take (see the test below).
DISK_TIMEOUT = 90.0
#: The reading child's time limit in these examples (reader_timeout_seconds).
READER_TIMEOUT = 3.0


def test_an_undamaged_ext4_image_is_walked(disk_images: dict[str, bytes],
                                           tmp_path: Path) -> None:
    """The undamaged ext4 image the damaged ones are made from is read in full."""
    if "ext4" not in disk_images:
        pytest.skip("mkfs.ext4 or debugfs is not installed")
    path = tmp_path / "ext4.img"
    path.write_bytes(disk_images["ext4"])
    items, reads = walk_file(path)
    assert sorted(v for v in reads.values() if isinstance(v, bytes)) == sorted(
        [_jpeg(11), _jpeg(12), _jpeg(13), _jpeg(14)])
    assert any(isinstance(i, EvidenceSeen) for i in items)


@fuzz(500)
@given(data=st.data())
def test_damaged_disk_images_yield_items_and_problems_only(
        tmp_path: Path, disk_images: dict[str, bytes], data: st.DataObject) -> None:
    kinds = sorted(disk_images)
    kind = data.draw(st.sampled_from(kinds), label="kind")
    raw = data.draw(mutate(disk_images[kind], (), DISK_REGIONS[kind], max_ops=8),
                    label="image")
    path = tmp_path / ("exhibit.E01" if kind == "e01" else "exhibit.img")
    path.write_bytes(raw)
    start = time.monotonic()
    with keeping(kind, raw), DISK_TIMES.time():
        # The Sleuth Kit may spend minutes inside one call on a damaged ext inode
        # (test_fuzz_regressions.py: test_an_ext2_image_with_a_large_sparse_file_...); the
        # reading child is killed after READER_TIMEOUT and a fresh one skips the step, so an
        # image gets a longer bound (a few such steps), and stalls are counted
        # (--hypothesis-show-statistics).
        items, reads = walk_file(path, Limits(max_file_bytes=4 * MiB,
                                              max_expanded_bytes=16 * MiB,
                                              reader_timeout_seconds=READER_TIMEOUT),
                                 timeout=max(FUZZ_TIMEOUT, DISK_TIMEOUT))
    stalls = sum(isinstance(i, Problem) and "reader" in i.message for i in items)
    if stalls:
        event(f"{kind}: the reader stalled ({min(stalls, 3)}+ steps skipped)")
    if time.monotonic() - start > FUZZ_TIMEOUT:
        event(f"{kind}: slower than {FUZZ_TIMEOUT:g} s")
    opened = any(isinstance(i, EvidenceSeen) for i in items)
    event(f"{kind}: {'opened' if opened else 'not a disk image'}, "
          f"{min(sum(isinstance(v, bytes) for v in reads.values()), 5)}+ files read")


# --- exports and extractions ------------------------------------------------------------------

SIDECAR = json.dumps({
    "title": "IMG_20240101_120000.jpg", "description": "",
    "photoTakenTime": {"timestamp": "1704110400", "formatted": "1 Jan 2024, 12:00:00 UTC"},
    "creationTime": {"timestamp": "1704110500", "formatted": "1 Jan 2024, 12:01:40 UTC"},
    "geoData": {"latitude": 51.5, "longitude": -0.12}}).encode()
ICLOUD_CSV = ("imgName,fileChecksum,favorite,hidden,deleted,originalCreationDate,"
              "viewCount,importDate\r\n"
              "IMG_0001.JPG,abc=,no,no,no,\"Tuesday October 1,2019 5:20 PM GMT\",3,"
              "\"Tuesday October 1,2019 5:25 PM GMT\"\r\n"
              "IMG_0002.JPG,def=,yes,yes,yes,\"Monday March 2,2020 11:59 AM GMT\",0,\r\n"
              ).encode()
UFDR_XML = (b'<?xml version="1.0" encoding="utf-8"?>\n'
            b'<project id="p1" name="Exhibit 7" reportVersion="7.60" '
            b'xmlns="http://pa.cellebrite.com/report/2.0"><decodedData/><taggedFiles>'
            b'<file path="/private/var/mobile/Media/DCIM/100APPLE/IMG_0001.JPG" deleted="Intact">'
            b'<metadata section="File"><item name="Local Path">files/Image/IMG_0001.JPG</item>'
            b'</metadata></file>'
            b'<file path="/data/media/0/DCIM/Camera/b.jpg" deleted="Deleted"><metadata>'
            b'<item name="Local Path"><![CDATA[files\\Image\\b.jpg]]></item></metadata></file>'
            b'</taggedFiles></project>')


def _json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=40), st.sampled_from(["1704110400", "-1", "9" * 30,
                                                              "1e308", " 12 ", ""]))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
            ["title", "photoTakenTime", "creationTime", "timestamp", "x"]), inner, max_size=4)),
        max_leaves=12)


@st.composite
def export_texts(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    """A Takeout sidecar, an iCloud CSV and a UFDR report.xml, each damaged or made up."""
    sidecar = draw(st.one_of(mutate(SIDECAR), _json_values().map(
        lambda v: json.dumps(v).encode())))
    icloud = draw(mutate(ICLOUD_CSV))
    report = draw(st.one_of(mutate(UFDR_XML), st.sampled_from(HOSTILE_XML)))
    return sidecar, icloud, report


#: XML an attacker would try on the report parser: entity expansion, external entities, depth.
HOSTILE_XML = (
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">'
               % ((98 + i,) + (97 + i,) * 10) for i in range(8))
    + b']><project xmlns="http://pa.cellebrite.com/report/2.0"><file path="&i;"/></project>',
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<project xmlns="http://pa.cellebrite.com/report/2.0"><file path="&x;">'
    b'<item name="Local Path">&x;</item></file></project>',
    b'<project xmlns="http://pa.cellebrite.com/report/2.0">' + b"<file>" * 5000
    + b"</file>" * 5000 + b"</project>",
    b'<project xmlns="http://pa.cellebrite.com/report/2.0"><file path="/x">'
    + b'<item name="y">z</item>' * 20000 + b"</file></project>",
)

EXPORT_TIMES = Timer()


@fuzz(300)
@given(texts=export_texts(), names=st.lists(hostile_name(), max_size=3))
def test_damaged_export_metadata_never_stops_the_walk(
        tmp_path: Path, texts: tuple[bytes, bytes, bytes], names: list[str]) -> None:
    """Takeout, iCloud and UFDR zips and folders whose sidecars, CSVs and reports are damaged
    or hostile: the pictures are still scanned; what the metadata says is attributes only."""
    sidecar, icloud, report = texts
    with guarded("parsing export metadata"):
        parsed = parse_sidecar(sidecar)
        assert parsed is None or all(isinstance(v, str) for v in parsed.values())
        assert isinstance(parse_icloud_csv(icloud), dict)
        try:
            parse_ufdr_report(io.BytesIO(report), True)
        except (SyntaxError, ValueError):  # ParseError, too deep: the walk records a Problem
            pass
        match_sidecars([*names, *(n + ".json" for n in names), "IMG_1.jpg"])
    pictures = [_jpeg(21), _jpeg(22), _jpeg(23)]
    takeout = _zip([("Takeout/Google Photos/Album/IMG_20240101_120000.jpg", pictures[0]),
                    ("Takeout/Google Photos/Album/IMG_20240101_120000.jpg.supplemental-"
                     "metadata.json", sidecar),
                    *((f"Takeout/Google Photos/Album/{n}.json", sidecar) for n in names),
                    ("iCloud Photos/Photos/IMG_0001.JPG", pictures[1]),
                    ("iCloud Photos/Photos/Photo Details.csv", icloud)], zipfile.ZIP_STORED)
    ufdr = _zip([("report.xml", report), ("files/Image/IMG_0001.JPG", pictures[2])])
    folder = tmp_path / "Takeout"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "Google Photos" / "Album").mkdir(parents=True)
    (folder / "Google Photos" / "Album" / "IMG_1.jpg").write_bytes(pictures[0])
    (folder / "Google Photos" / "Album" / "IMG_1.jpg.json").write_bytes(sidecar)
    (folder / "Photo Details.csv").write_bytes(icloud)
    for data, path in ((takeout, tmp_path / "takeout.zip"), (ufdr, tmp_path / "exhibit.ufdr"),
                       (None, folder)):
        if data is not None:
            path.write_bytes(data)
        with EXPORT_TIMES.time():
            items, reads = walk_file(path)
        read_back = {v for v in reads.values() if isinstance(v, bytes)}
        assert read_back & set(pictures), (path.name, items)


def _ios_backup(root: Path, manifest: bytes, plist: bytes, info: bytes) -> Path:
    """An iOS backup folder: two stored files, the manifest and property lists given."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for file_id, data in IOS_FILES.items():
        (root / file_id[:2]).mkdir(exist_ok=True)
        (root / file_id[:2] / file_id).write_bytes(data)
    (root / "Manifest.db").write_bytes(manifest)
    (root / "Manifest.plist").write_bytes(plist)
    (root / "Info.plist").write_bytes(info)
    return root


IOS_FILES = {"ab" + "0" * 38: _jpeg(31), "cd" + "1" * 38: _jpeg(32)}


def _manifest_db() -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hashsvc-fuzz-manifest-{os.getpid()}.db"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE Files (fileID TEXT PRIMARY KEY, domain TEXT, relativePath TEXT, "
                 "flags INTEGER, file BLOB)")
    conn.executemany("INSERT INTO Files VALUES (?, ?, ?, 1, NULL)", [
        ("ab" + "0" * 38, "CameraRollDomain", "Media/DCIM/100APPLE/IMG_0001.JPG"),
        ("cd" + "1" * 38, "AppDomain-net.whatsapp.WhatsApp", "Library/Media/x.jpg")])
    conn.commit()
    conn.close()
    data = path.read_bytes()
    path.unlink()
    return data


MANIFEST_DB = _manifest_db()
MANIFEST_PLIST = plistlib.dumps({"IsEncrypted": False, "Version": "10.0"},
                                fmt=plistlib.FMT_BINARY)
INFO_PLIST = plistlib.dumps({"Device Name": "Alex's iPhone", "Product Type": "iPhone14,2",
                             "Product Version": "17.4", "Serial Number": "F2LX0000XXXX"})


@fuzz(400)
@given(manifest=mutate(MANIFEST_DB, (), ((0, 100), (100, 4096)), max_ops=8),
       plist=st.one_of(mutate(MANIFEST_PLIST), st.just(MANIFEST_PLIST)),
       info=st.one_of(mutate(INFO_PLIST), st.just(INFO_PLIST)))
def test_damaged_ios_backups_are_scanned_under_some_name(
        tmp_path: Path, manifest: bytes, plist: bytes, info: bytes) -> None:
    root = _ios_backup(tmp_path / "backup", manifest, plist, info)
    with EXPORT_TIMES.time():
        items, reads = walk_file(root)
    read_back = {v for v in reads.values() if isinstance(v, bytes)}
    encrypted = any(isinstance(i, Problem) and i.reason == "encrypted-backup" for i in items)
    assert encrypted or set(IOS_FILES.values()) <= read_back, items


# --- a whole scan of hostile evidence ---------------------------------------------------------


def test_a_scan_of_a_folder_of_damaged_files_finishes(tmp_path: Path, settings: Any) -> None:
    """The scan walk end to end (decoding children, store, report) over damaged files of every
    kind drawn with a fixed seed: the scan is done and every file is accounted for."""
    import random

    from hashsvc.pipeline import run_scan
    from hashsvc.report import build_report
    from hashsvc.store import Store

    rng = random.Random(20240501)
    dump = tmp_path / "dump"
    dump.mkdir()
    bases = {**{f"img-{k}": v for k, v in IMAGES.items()},
             **{f"vid-{k}": v for k, v in VIDEOS.items()},
             **{f"arc-{k}": v for k, v in ARCHIVES.items()}}
    for i, (name, base) in enumerate(sorted(bases.items())):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(min(len(data), 2048))
            data[at] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        (dump / f"{i:02d}-{name}").write_bytes(bytes(data))
    store = Store.open(settings)
    try:
        scan_id = run_scan(store, settings.replace(max_image_pixels=MAX_PIXELS,
                                                   decode_timeout_seconds=FUZZ_TIMEOUT),
                           str(dump))
        report = build_report(store, scan_id)
    finally:
        store.close()
    assert report["state"] == "done"
    assert report["files_scanned"] >= len(bases)
    for error in report["errors"]:
        assert not error["message"].startswith(("decoder failed", "video decoder failed")), error


def test_fuzz_timings() -> None:
    """Print each target's example count and slowest example (``pytest -s`` shows them)."""
    for name, timer in (("decode", DECODE_TIMES), ("process_data", PROCESS_TIMES),
                        ("video", VIDEO_TIMES), ("archives", ARCHIVE_TIMES),
                        ("member names", NAME_TIMES), ("disk images", DISK_TIMES),
                        ("exports", EXPORT_TIMES)):
        if timer.count:
            print(f"\nfuzz {name}: {timer.count} examples, slowest {timer.slowest:.2f} s")
    assert not any(t.slowest > FUZZ_TIMEOUT for t in (DECODE_TIMES, VIDEO_TIMES, ARCHIVE_TIMES))
