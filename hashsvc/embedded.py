"""Pictures embedded in other pictures: EXIF thumbnails (IFD1) and HEIF thumbnails.

A camera or phone writes a small copy of the photo into its metadata. Editing software often
leaves the old thumbnail in place, and a carved or half-overwritten file may keep a readable
thumbnail after the main picture is gone, so each embedded picture is hashed and matched on
its own, under the locator of its file (``... -> exif-thumbnail:IFD1``).

What is looked at, by the format the file sniffed as:

* JPEG: the first ``APP1`` Exif segment before the scan data; its TIFF structure is parsed here,
  with every offset checked against the bytes there are, so a truncated file whose picture no
  longer decodes still gives up its thumbnail. The thumbnail is the ``JPEGInterchangeFormat`` /
  ``JPEGInterchangeFormatLength`` pair of IFD1 (and of any IFD after it), returned byte for byte.
* TIFF (and the raw camera formats built on it, which sniff as TIFF): the same tags in IFD1 and
  after. IFD0 is the picture itself and a multi-page TIFF's later pages carry no such tags.
* HEIF/HEIC: every thumbnail of the primary image (kind ``heif-thumbnail``, name
  ``thumbnail-<n>`` in file order), decoded by libheif and handed on as a lossless PNG of its
  pixels, since a HEIF thumbnail is an HEVC item with no file of its own: the child's exact hashes
  are those of that PNG, not of bytes found in the evidence. Also the IFD1 thumbnail of the HEIF's
  Exif block, where a converter left one.

HEIF files are usually hashed from their own large thumbnail already (``decode.py``,
``heif_thumbnails``): the file's result is then that thumbnail (``from_thumbnail`` true). The
caller says so with ``heif_stand_in=True`` and that thumbnail is left out of the children, so the
same pixels are not reported twice; every other thumbnail, and all of them when the full picture
was decoded (or failed to decode), come out as children.

Everything is bounded: at most :data:`MAX_PICTURES` pictures per file, none over
:data:`MAX_THUMBNAIL_BYTES` bytes or :data:`MAX_THUMBNAIL_PIXELS` pixels, at most
:data:`MAX_IFDS` IFDs of at most :data:`MAX_IFD_ENTRIES` entries followed, each IFD once.
"""

from __future__ import annotations

import io
import struct
import warnings

#: Embedded pictures returned for one file, at most.
MAX_PICTURES = 8
#: Largest embedded picture taken, in bytes (an APP1 segment holds 64 KiB; raw files hold more).
MAX_THUMBNAIL_BYTES = 8 * 1024 * 1024
#: Largest HEIF thumbnail decoded, in pixels (checked on its declared size, before decoding).
MAX_THUMBNAIL_PIXELS = 16_000_000
#: IFDs followed along a TIFF chain, at most (IFD0, IFD1 and a few more).
MAX_IFDS = 8
#: Entries read from one IFD, at most (real ones have a few dozen).
MAX_IFD_ENTRIES = 1024
#: JPEG marker segments looked at before giving up on finding Exif.
MAX_JPEG_SEGMENTS = 64

_JPEG_IF_OFFSET = 0x0201  # JPEGInterchangeFormat
_JPEG_IF_LENGTH = 0x0202  # JPEGInterchangeFormatLength
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}

Picture = tuple[str, str, bytes]  # (link kind, link name, bytes)


def embedded_pictures(data: bytes, fmt: str, *, heif_stand_in: bool = False) -> list[Picture]:
    """The pictures embedded in an image file of format ``fmt``: (link kind, name, bytes).

    ``heif_stand_in``: the file itself was hashed from the HEIF thumbnail that
    :func:`hashsvc.decode.decode` picks, which is therefore not returned again.
    """
    if fmt == "jpeg":
        exif = jpeg_exif(data)
        return exif_thumbnails(exif) if exif is not None else []
    if fmt == "tiff":
        return exif_thumbnails(data)
    if fmt == "heif":
        return heif_pictures(data, heif_stand_in)
    return []


# --- EXIF / TIFF ---------------------------------------------------------------------------------


def jpeg_exif(data: bytes) -> bytes | None:
    """The TIFF structure of a JPEG's first Exif APP1 segment (cut short if the file is)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # scan data or the end: no metadata after this
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return None
        if marker == 0xE1 and data[pos + 4:pos + 8] == b"Exif":
            return data[pos + 10:pos + 2 + length]
        pos += 2 + length
    return None


def exif_thumbnails(tiff: bytes) -> list[Picture]:
    """JPEG thumbnails named by IFD1 (and later IFDs) of a TIFF structure, bounds checked."""
    if len(tiff) < 8:
        return []
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or struct.unpack(order + "H", tiff[2:4])[0] != 42:
        return []
    out: list[Picture] = []
    seen: set[int] = set()
    offset = struct.unpack(order + "I", tiff[4:8])[0]
    for index in range(MAX_IFDS):
        if offset == 0 or offset in seen or offset + 2 > len(tiff):
            break
        seen.add(offset)
        tags, offset = _read_ifd(tiff, offset, order)
        if index == 0:
            continue  # IFD0 describes the picture itself
        picture = _thumbnail(tiff, tags)
        if picture is not None and picture not in (p[2] for p in out):
            out.append(("exif-thumbnail", f"IFD{index}", picture))
            if len(out) >= MAX_PICTURES:
                break
    return out


def _read_ifd(tiff: bytes, offset: int, order: str) -> tuple[dict[int, int], int]:
    """The single-number tags of one IFD (those that fit) and the next IFD's offset (0: none)."""
    count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
    tags: dict[int, int] = {}
    pos = offset + 2
    for _ in range(min(count, MAX_IFD_ENTRIES)):
        if pos + 12 > len(tiff):
            return tags, 0  # cut short: no next pointer to trust
        tag, kind, n = struct.unpack(order + "HHI", tiff[pos:pos + 8])
        if n == 1 and kind in (3, 4):  # SHORT or LONG, held in the entry itself
            tags[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), tiff[
                pos + 8:pos + 8 + _TYPE_SIZES[kind]])[0]
        pos += 12
    if count > MAX_IFD_ENTRIES or pos + 4 > len(tiff):
        return tags, 0
    return tags, struct.unpack(order + "I", tiff[pos:pos + 4])[0]


def _thumbnail(tiff: bytes, tags: dict[int, int]) -> bytes | None:
    """The JPEG an IFD points at, if it lies wholly inside the data and looks like a JPEG."""
    start, length = tags.get(_JPEG_IF_OFFSET), tags.get(_JPEG_IF_LENGTH)
    if not start or not length or length > MAX_THUMBNAIL_BYTES or start + length > len(tiff):
        return None
    blob = tiff[start:start + length]
    return blob if blob[:3] == b"\xff\xd8\xff" else None


# --- HEIF ----------------------------------------------------------------------------------------


def heif_pictures(data: bytes, stand_in: bool = False) -> list[Picture]:
    """The primary image's HEIF thumbnails (as PNG) and its Exif thumbnail."""
    from pillow_heif import open_heif

    from hashsvc.decode import _register_heif

    _register_heif()  # also turns on the listing of thumbnails
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heif = open_heif(io.BytesIO(data))
        primary = heif[heif.primary_index]
        skip = _stand_in_size(data) if stand_in else None
        out: list[Picture] = []
        for index in range(len(primary.info.get("thumbnails", []))):
            if len(out) >= MAX_PICTURES:
                break
            try:
                thumb = primary.get_thumbnail(index)
                width, height = thumb.size
                if width * height > MAX_THUMBNAIL_PIXELS:
                    continue
                if skip is not None and (width, height) == skip:
                    skip = None  # that one was the file's own picture
                    continue
                out.append(("heif-thumbnail", f"thumbnail-{index}", _png(thumb.to_pillow())))
            except (OSError, ValueError, SyntaxError, RuntimeError, EOFError, IndexError):
                continue  # a broken thumbnail: the others may still be fine
        exif = primary.info.get("exif")
        if isinstance(exif, bytes):
            tiff = exif[6:] if exif[:6] == b"Exif\x00\x00" else exif
            out.extend(exif_thumbnails(tiff)[: MAX_PICTURES - len(out)])
    return out


def _stand_in_size(data: bytes) -> tuple[int, int] | None:
    """The size of the thumbnail :func:`hashsvc.decode.decode` hashes in place of the picture."""
    from hashsvc.decode import HEIF_THUMBNAIL_MIN_SIDE, _heif_thumbnail, _open

    img, used = _heif_thumbnail(_open(data, "heif"), data, HEIF_THUMBNAIL_MIN_SIDE)
    return img.size if used else None


def _png(img: object) -> bytes:
    """A lossless PNG of a decoded thumbnail (fast compression: it is hashed, not kept)."""
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)  # type: ignore[attr-defined]
    return buf.getvalue()
