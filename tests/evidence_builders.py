"""Builders of generated evidence shared by the tests: JPEGs with EXIF thumbnails and PDFs.

Everything is made here, byte by byte where it matters (the EXIF TIFF structure), so that the
tests can also make it hostile.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Union

from PIL import Image
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (ArrayObject, DecodedStreamObject, DictionaryObject, NameObject,
                           NumberObject)

# --- EXIF -----------------------------------------------------------------------------------------


def exif_tiff(thumb: bytes, order: str = "<") -> bytes:
    """A TIFF structure as Exif stores it: IFD0 (orientation) and IFD1 pointing at ``thumb``."""
    mark = b"II" if order == "<" else b"MM"
    ifd0_at = 8
    ifd1_at = ifd0_at + 2 + 12 + 4
    thumb_at = ifd1_at + 2 + 3 * 12 + 4
    out = mark + struct.pack(order + "HI", 42, ifd0_at)
    out += struct.pack(order + "H", 1) + entry(0x0112, 3, 1, order) + struct.pack(
        order + "I", ifd1_at)
    out += struct.pack(order + "H", 3) + entry(0x0103, 3, 6, order) + entry(
        0x0201, 4, thumb_at, order) + entry(0x0202, 4, len(thumb), order) + struct.pack(
        order + "I", 0)
    assert len(out) == thumb_at
    return out + thumb


def entry(tag: int, kind: int, value: int, order: str = "<") -> bytes:
    """One IFD entry holding a single SHORT (3) or LONG (4) value."""
    packed = struct.pack(order + "H", value) + b"\0\0" if kind == 3 else struct.pack(
        order + "I", value)
    return struct.pack(order + "HHI", tag, kind, 1) + packed


def app1(tiff: bytes) -> bytes:
    """An APP1 Exif segment holding ``tiff``."""
    body = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def with_exif(jpeg: bytes, tiff: bytes) -> bytes:
    """``jpeg`` with an Exif segment holding ``tiff`` put right after its SOI marker."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + app1(tiff) + jpeg[2:]


def with_exif_thumbnail(jpeg: bytes, thumb: bytes) -> bytes:
    """``jpeg`` carrying ``thumb`` as its EXIF (IFD1) thumbnail."""
    return with_exif(jpeg, exif_tiff(thumb))


def jpeg_bytes(img: Image.Image, **kw: object) -> bytes:
    """An image as JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


# --- PDF ------------------------------------------------------------------------------------------

PdfImage = Union[bytes, Image.Image]  # a JPEG put in as it is, or pixels stored Flate-compressed


def image_xobject(image: PdfImage) -> DecodedStreamObject:
    """An image XObject: a JPEG byte for byte (DCTDecode) or raw RGB pixels (FlateDecode)."""
    obj = DecodedStreamObject()
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as probe:
            size = probe.size
        obj.set_data(image)
        filt = "/DCTDecode"
    else:
        rgb = image.convert("RGB")
        size = rgb.size
        obj.set_data(zlib.compress(rgb.tobytes()))
        filt = "/FlateDecode"
    obj.update({NameObject("/Type"): NameObject("/XObject"),
                NameObject("/Subtype"): NameObject("/Image"),
                NameObject("/Width"): NumberObject(size[0]),
                NameObject("/Height"): NumberObject(size[1]),
                NameObject("/ColorSpace"): NameObject("/DeviceRGB"),
                NameObject("/BitsPerComponent"): NumberObject(8),
                NameObject("/Filter"): NameObject(filt)})
    return obj


def pdf_bytes(pages: list[list[PdfImage]], attachments: dict[str, bytes] | None = None,
              raw_streams: list[DecodedStreamObject] | None = None) -> bytes:
    """A PDF whose page n draws the images of ``pages[n]`` as /Im1, /Im2, ... (numbered on
    through the pages; an image given twice is one object drawn twice).

    ``raw_streams`` are hostile image XObjects put on one more page as they are.
    """
    writer = PdfWriter()
    numbered = 0
    refs: dict[int, object] = {}  # one object per image given, however often it is drawn
    for images in [*pages, *([raw_streams] if raw_streams else [])]:
        page = writer.add_blank_page(200, 200)
        xobjects = DictionaryObject()
        content = []
        for image in images:
            numbered += 1
            if id(image) not in refs:
                obj = image if isinstance(image, DecodedStreamObject) else image_xobject(image)
                refs[id(image)] = writer._add_object(obj)
            xobjects[NameObject(f"/Im{numbered}")] = refs[id(image)]
            content.append(f"q 100 0 0 100 0 0 cm /Im{numbered} Do Q")
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): xobjects})
        stream = DecodedStreamObject()
        stream.set_data("\n".join(content).encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    for name, data in (attachments or {}).items():
        writer.add_attachment(name, data)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf(pdf: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    """``pdf`` encrypted (AES-256); an empty ``user_password`` only restricts changes."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password, owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def flate_bomb_xobject(decompressed: int, size: tuple[int, int] = (16, 16)
                       ) -> DecodedStreamObject:
    """An image XObject declaring a tiny picture whose stream inflates to ``decompressed``
    bytes of zeros."""
    obj = DecodedStreamObject()
    obj.set_data(zlib.compress(b"\0" * decompressed, 9))
    obj.update({NameObject("/Type"): NameObject("/XObject"),
                NameObject("/Subtype"): NameObject("/Image"),
                NameObject("/Width"): NumberObject(size[0]),
                NameObject("/Height"): NumberObject(size[1]),
                NameObject("/ColorSpace"): NameObject("/DeviceRGB"),
                NameObject("/BitsPerComponent"): NumberObject(8),
                NameObject("/Filter"): ArrayObject([NameObject("/FlateDecode")])})
    return obj
