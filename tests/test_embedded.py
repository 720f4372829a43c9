"""Pictures inside other files: EXIF and HEIF thumbnails, images in PDFs and Office documents.

Each scenario is scanned for real (``run_scan`` + ``build_report``) against registered photos;
the locator of every finding names the whole way to it (file -> page or member -> thumbnail).
"""

from __future__ import annotations

import io
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from PIL import Image

from hashsvc.embedded import (MAX_IFDS, embedded_pictures, exif_thumbnails, heif_pictures,
                              jpeg_exif)
from hashsvc.pipeline import Task, process_task, run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.sources import Limits, walk
from hashsvc.sources.base import ContainerSeen, Entry, Problem
from hashsvc.store import Store

from conftest import encode, photo
from evidence_builders import (encrypted_pdf, entry, exif_tiff, flate_bomb_xobject, jpeg_bytes,
                               pdf_bytes, with_exif, with_exif_thumbnail)
from test_pipeline import register


def registered_jpeg(name: str) -> bytes:
    """The very bytes test_pipeline.register hashes for ``name``."""
    return encode(photo(name), "JPEG", quality=95)


def thumbnail_of(name: str, box: int = 160) -> bytes:
    """A camera-style EXIF thumbnail of a photo (fits in an APP1 segment)."""
    img = photo(name)
    img.thumbnail((box, box))
    return jpeg_bytes(img, quality=90)


def scan(store: Store, settings: Settings, root: Path) -> dict[str, Any]:
    """Scan a folder and return its report."""
    return build_report(store, run_scan(store, settings, str(root)))


def chain(match: dict[str, Any]) -> list[tuple[str, str]]:
    """A match's locator as (kind, name) pairs."""
    return [(link["kind"], link["name"]) for link in match["locator"]]


# --- EXIF thumbnails ------------------------------------------------------------------------------


def test_thumbnail_of_an_edited_photo_matches_its_original(store: Store, settings: Settings,
                                                           tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    # The picture was replaced (an unrelated photo now), the thumbnail kept the original.
    edited = with_exif_thumbnail(encode(photo("moon"), "JPEG"), thumbnail_of("astronaut"))
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "photo.jpg").write_bytes(edited)
    report = scan(store, settings, tmp_path / "ev")
    assert [chain(m) for m in report["matches"]] == [
        [("fs", "photo.jpg"), ("exif-thumbnail", "IFD1")]]
    assert report["matches"][0]["case"] == "CASE-1"
    assert report["matches"][0]["format"] == "jpeg"
    # The file and its thumbnail are both hashed and counted.
    assert report["files_scanned"] == report["images_hashed"] == 2
    assert report["errors"] == []


def test_a_thumbnail_of_the_same_picture_is_not_a_second_finding(
        store: Store, settings: Settings, tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    (tmp_path / "ev").mkdir()
    # A camera photo with its own thumbnail: one match. A photo of another registered picture
    # whose thumbnail kept the first: both are findings.
    (tmp_path / "ev" / "a.jpg").write_bytes(
        with_exif_thumbnail(registered_jpeg("astronaut"), thumbnail_of("astronaut")))
    (tmp_path / "ev" / "b.jpg").write_bytes(
        with_exif_thumbnail(registered_jpeg("coffee"), thumbnail_of("astronaut")))
    report = scan(store, settings, tmp_path / "ev")
    assert sorted(chain(m) for m in report["matches"]) == [
        [("fs", "a.jpg")], [("fs", "b.jpg")], [("fs", "b.jpg"), ("exif-thumbnail", "IFD1")]]
    assert report["files_scanned"] == 4 and report["images_hashed"] == 4


def test_truncated_jpeg_keeps_its_thumbnail(store: Store, settings: Settings,
                                            tmp_path: Path) -> None:
    register(store, "CASE-1", "coffee")
    whole = with_exif_thumbnail(registered_jpeg("coffee"), thumbnail_of("coffee"))
    after_exif = 4 + int.from_bytes(whole[4:6], "big")  # the thumbnail has a scan of its own
    scan_data = whole.index(b"\xff\xda", after_exif)
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "carved.jpg").write_bytes(whole[: scan_data + 2000])  # half overwritten
    report = scan(store, settings, tmp_path / "ev")
    assert [(e["path"], e["stage"]) for e in report["errors"]] == [("carved.jpg", "decode")]
    assert [chain(m) for m in report["matches"]] == [
        [("fs", "carved.jpg"), ("exif-thumbnail", "IFD1")]]


def test_exif_parsing_of_well_formed_files() -> None:
    thumb = thumbnail_of("camera", 96)
    for order in ("<", ">"):
        jpeg = with_exif(registered_jpeg("camera"), exif_tiff(thumb, order))
        assert embedded_pictures(jpeg, "jpeg") == [("exif-thumbnail", "IFD1", thumb)]
    # A TIFF file (raw camera formats are TIFF too) names its thumbnail the same way.
    assert embedded_pictures(exif_tiff(thumb), "tiff") == [("exif-thumbnail", "IFD1", thumb)]
    # A plain JPEG, and a JPEG whose Exif has no IFD1, have none.
    assert embedded_pictures(registered_jpeg("camera"), "jpeg") == []
    only_ifd0 = exif_tiff(thumb)[:26 - 4] + b"\0\0\0\0"
    assert embedded_pictures(with_exif(registered_jpeg("camera"), only_ifd0), "jpeg") == []
    assert embedded_pictures(encode(photo("camera"), "PNG"), "png") == []


def _ifd1(tags: list[bytes], next_ifd: int = 0) -> bytes:
    return struct.pack("<H", len(tags)) + b"".join(tags) + struct.pack("<I", next_ifd)


HEADER = b"II" + struct.pack("<HI", 42, 8)
IFD0_TO_26 = struct.pack("<H", 1) + entry(0x0112, 3, 1) + struct.pack("<I", 26)
SMALL_JPEG = jpeg_bytes(Image.new("RGB", (8, 8), (200, 0, 0)))

HOSTILE_TIFFS = {
    "thumbnail past the end": HEADER + IFD0_TO_26 + _ifd1(
        [entry(0x0201, 4, 68), entry(0x0202, 4, 10_000)]) + SMALL_JPEG[:100],
    "offset past the end": HEADER + IFD0_TO_26 + _ifd1(
        [entry(0x0201, 4, 0xFFFFFFF0), entry(0x0202, 4, 100)]),
    "IFD1 loops to itself": HEADER + IFD0_TO_26 + _ifd1(
        [entry(0x0201, 4, 56), entry(0x0202, 4, len(SMALL_JPEG))], 26) + SMALL_JPEG,
    "IFD1 loops to IFD0": HEADER + IFD0_TO_26 + _ifd1([], 8),
    "IFD0 past the end": b"II" + struct.pack("<HI", 42, 0x7FFFFFFF),
    "entry count 65535": HEADER + struct.pack("<H", 0xFFFF) + b"\0" * 40,
    "thumbnail is not a JPEG": HEADER + IFD0_TO_26 + _ifd1(
        [entry(0x0201, 4, 56), entry(0x0202, 4, 8)], 0) + b"notjpeg!",
    "zero offset": HEADER + IFD0_TO_26 + _ifd1([entry(0x0201, 4, 0), entry(0x0202, 4, 8)]),
    "wrong magic": b"II" + struct.pack("<HI", 43, 8),
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TIFFS))
def test_hostile_exif_never_crashes(name: str) -> None:
    tiff = HOSTILE_TIFFS[name]
    jpeg = with_exif(SMALL_JPEG, tiff)
    for data, fmt in ((jpeg, "jpeg"), (tiff, "tiff")):
        found = embedded_pictures(data, fmt)
        assert all(blob[:3] == b"\xff\xd8\xff" for _, _, blob in found)
        assert len(found) <= 1
    # Through the pipeline, the file is still hashed and nothing fails.
    res = process_task(Task("k", data=jpeg, name="x.jpg", max_pixels=10**8))
    assert res.status == "hashed"


def test_ifd_chain_is_followed_only_so_far() -> None:
    # A chain of IFDs, each pointing at the next, each with its own (identical) thumbnail.
    tiff = bytearray(HEADER)
    at = 8
    for i in range(40):
        nxt = at + 2 + 2 * 12 + 4
        tiff += _ifd1([entry(0x0201, 4, 0), entry(0x0202, 4, 0)], nxt)
        at = nxt
    tiff += _ifd1([], 0)
    assert exif_thumbnails(bytes(tiff)) == []  # and it stops after MAX_IFDS without a loop
    assert MAX_IFDS < 40


def test_exif_segment_cut_short_or_lying_about_its_length() -> None:
    good = with_exif_thumbnail(SMALL_JPEG, SMALL_JPEG)
    for cut in range(0, 200, 7):
        jpeg_exif(good[:cut])  # never raises
        embedded_pictures(good[:cut], "jpeg")
    lying = b"\xff\xd8\xff\xe1\x00\x01Exif\0\0" + exif_tiff(SMALL_JPEG)
    assert embedded_pictures(lying, "jpeg") == []


@hsettings(max_examples=300, deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 400))
def test_damaged_exif_never_raises(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(with_exif_thumbnail(SMALL_JPEG, SMALL_JPEG))
    for at, value in flips:
        data[at] = value
    found = embedded_pictures(bytes(data[: len(data) - cut]), "jpeg")
    assert len(found) <= 8


def test_exif_extraction_is_cheap() -> None:
    """Called for every image of every scan: microseconds, not milliseconds (a 12 MP JPEG's
    hashing takes tens of milliseconds; see benchmarks/bench_embedded.py for the figures)."""
    plain = registered_jpeg("astronaut")
    with_thumb = with_exif_thumbnail(plain, thumbnail_of("astronaut"))
    for data in (plain, with_thumb):
        start = time.perf_counter()
        for _ in range(200):
            embedded_pictures(data, "jpeg")
        assert (time.perf_counter() - start) / 200 < 0.002


# --- HEIF thumbnails ------------------------------------------------------------------------------

FAST = {"quality": 60, "enc_params": {"preset": "ultrafast"}}


@pytest.fixture(scope="module")
def coffee_heic() -> bytes:
    """A 1024x768 HEIC of coffee with a 320-pixel thumbnail (large enough to stand in for the
    picture when hashed) and a 160-pixel one (too small to)."""
    big = photo("coffee").resize((1024, 768))
    return encode(big, "HEIF", thumbnails=[320, 160], **FAST)


def test_heif_thumbnails_are_children(coffee_heic: bytes) -> None:
    found = heif_pictures(coffee_heic)
    assert [(kind, name) for kind, name, _ in found] == [
        ("heif-thumbnail", "thumbnail-0"), ("heif-thumbnail", "thumbnail-1")]
    sizes = sorted(Image.open(io.BytesIO(blob)).size for _, _, blob in found)
    assert sizes == [(160, 120), (320, 240)]
    assert all(blob.startswith(b"\x89PNG") for _, _, blob in found)
    # The thumbnail the file itself is hashed from is not repeated as a child.
    left = heif_pictures(coffee_heic, stand_in=True)
    assert [Image.open(io.BytesIO(b)).size for _, _, b in left] == [(160, 120)]


def test_heif_children_through_the_pipeline(coffee_heic: bytes) -> None:
    def children(heif_thumbnails: bool) -> list[tuple[str, str, bool]]:
        res = process_task(Task("k", data=coffee_heic, name="IMG_1.HEIC", max_pixels=10**8,
                                heif_thumbnails=heif_thumbnails))
        assert res.status == "hashed" and res.hashset is not None
        assert res.hashset.from_thumbnail is heif_thumbnails
        return [(k, n, c.status == "hashed") for k, n, c in res.children]

    # Hashed from its 320-pixel thumbnail: only the 160-pixel one is a child.
    assert children(True) == [("heif-thumbnail", "thumbnail-1", True)]
    # Hashed from the full picture: both thumbnails are children.
    assert children(False) == [("heif-thumbnail", "thumbnail-0", True),
                               ("heif-thumbnail", "thumbnail-1", True)]


def test_heic_thumbnail_is_matched(store: Store, settings: Settings, tmp_path: Path,
                                   coffee_heic: bytes) -> None:
    register(store, "CASE-1", "coffee")
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "IMG_1.HEIC").write_bytes(coffee_heic)
    report = scan(store, settings, tmp_path / "ev")
    # The thumbnail matches the same registered image as its file: one finding, not two.
    assert [chain(m) for m in report["matches"]] == [[("fs", "IMG_1.HEIC")]]
    assert report["files_scanned"] == 2


# --- PDFs -----------------------------------------------------------------------------------------


def test_pdf_images_and_attachments_are_matched(store: Store, settings: Settings,
                                                tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea", "rocket")
    astronaut = registered_jpeg("astronaut")
    # Page 2 draws the same image again (reported once) and pixels stored Flate-compressed.
    stale = with_exif_thumbnail(encode(photo("moon"), "JPEG"), thumbnail_of("rocket"))
    pdf = pdf_bytes([[astronaut], [astronaut, photo("coffee").resize((200, 150)), stale]],
                    attachments={"holiday.zip": zip_of({"IMG_7.jpg": registered_jpeg("chelsea")})})
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "doc.pdf").write_bytes(pdf)
    report = scan(store, settings, tmp_path / "ev")
    found = {tuple(chain(m)): m for m in report["matches"]}
    assert set(found) == {
        (("fs", "doc.pdf"), ("pdf", "page-1/Im1.jpg")),
        (("fs", "doc.pdf"), ("pdf", "page-2/Im3.png")),
        (("fs", "doc.pdf"), ("pdf", "page-2/Im4.jpg"), ("exif-thumbnail", "IFD1")),
        (("fs", "doc.pdf"), ("pdf", "attachment/holiday.zip"), ("zip", "IMG_7.jpg")),
    }
    # The JPEG comes out byte for byte: its exact hash is the registered one.
    assert found[(("fs", "doc.pdf"), ("pdf", "page-1/Im1.jpg"))]["algorithm"] in ("sha256", "md5")
    assert found[(("fs", "doc.pdf"), ("pdf", "page-1/Im1.jpg"))]["path"] == "doc.pdf/page-1/Im1.jpg"
    assert report["containers"] == 2 and report["errors"] == []


def zip_of(members: dict[str, bytes]) -> bytes:
    """A deflated zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_encrypted_broken_and_hostile_pdfs(store: Store, settings: Settings,
                                           tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    plain = pdf_bytes([[registered_jpeg("astronaut")]])
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "secret.pdf").write_bytes(encrypted_pdf(plain, "s3cret"))
    (ev / "no-copying.pdf").write_bytes(encrypted_pdf(plain, ""))  # opens without a password
    (ev / "junk.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    xref = plain.rindex(b"startxref")  # a wrong xref offset: pypdf rebuilds the table
    (ev / "bad-xref.pdf").write_bytes(plain[:xref] + b"startxref\n999999\n%%EOF\n")
    (ev / "bomb.pdf").write_bytes(pdf_bytes([], raw_streams=[flate_bomb_xobject(80 * 2**20)]))
    report = scan(store, settings, ev)
    errors = {(e["path"], e["stage"]): e["message"] for e in report["errors"]}
    assert set(errors) == {("secret.pdf", "pdf"), ("junk.pdf", "pdf"),
                           ("bomb.pdf/page-1/Im1", "pdf-image")}
    assert errors[("secret.pdf", "pdf")].startswith("encrypted PDF, not examined")
    assert "Limit" in errors[("bomb.pdf/page-1/Im1", "pdf-image")]
    assert sorted(m["path"] for m in report["matches"]) == [
        "bad-xref.pdf/page-1/Im1.jpg", "no-copying.pdf/page-1/Im1.jpg"]
    assert report["coverage"]["not_examined"] == {"error:pdf": 2, "error:pdf-image": 1}


def test_pdf_limits(tmp_path: Path) -> None:
    big = Image.new("RGB", (2000, 2000), (10, 20, 30))
    pdf = pdf_bytes([[big, jpeg_bytes(Image.new("RGB", (8, 8)))]])
    (tmp_path / "doc.pdf").write_bytes(pdf)
    limits = Limits(max_file_bytes=4 * 2**20, max_expanded_bytes=64 * 2**20)
    items = list(walk(tmp_path / "doc.pdf", limits))
    problems = [i for i in items if isinstance(i, Problem)]
    assert [(p.locator.path, p.stage) for p in problems] == [("doc.pdf/page-1/Im1", "pdf-image")]
    assert "max_file_bytes" in problems[0].message
    assert [i.info.locator.path for i in items if isinstance(i, Entry)] == [
        "doc.pdf/page-1/Im2.jpg"]
    # The byte budget of the top-level archive covers PDF members too.
    tight = Limits(max_expanded_bytes=100)
    items = list(walk(tmp_path / "doc.pdf", tight))
    assert any("max_expanded_bytes" in i.message for i in items if isinstance(i, Problem))


# --- Office documents -----------------------------------------------------------------------------


def test_office_documents_are_walked_as_zips(store: Store, settings: Settings,
                                             tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    docx = zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>",
                   "word/media/image1.jpeg": registered_jpeg("astronaut")})
    odt = zip_of({"mimetype": b"application/vnd.oasis.opendocument.text",
                  "Pictures/1000000.png": encode(photo("coffee"), "PNG")})
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "report.docx").write_bytes(docx)
    (tmp_path / "ev" / "notes.odt").write_bytes(odt)
    report = scan(store, settings, tmp_path / "ev")
    assert sorted(chain(m) for m in report["matches"]) == [
        [("fs", "notes.odt"), ("zip", "Pictures/1000000.png")],
        [("fs", "report.docx"), ("zip", "word/media/image1.jpeg")]]


FUZZ_PDF = pdf_bytes([[SMALL_JPEG, Image.new("RGB", (12, 9), (1, 2, 3))], [SMALL_JPEG]],
                     attachments={"a.zip": zip_of({"b.jpg": SMALL_JPEG})})


@hsettings(max_examples=120, deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_pdfs_never_raise(tmp_path: Path, data: st.DataObject) -> None:
    raw = bytearray(FUZZ_PDF)
    cut = data.draw(st.integers(5, len(raw)))
    for at, value in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                                  st.integers(0, 255)), max_size=6)):
        raw[at] = value
    path = tmp_path / "fuzz.pdf"
    path.write_bytes(b"%PDF-" + bytes(raw[5:cut]))
    items = list(walk(path, Limits(max_expanded_bytes=8 * 2**20)))
    assert all(isinstance(i, (Entry, Problem, ContainerSeen)) for i in items)
