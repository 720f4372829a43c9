"""Sniffing and decoding untrusted image bytes into the canonical picture the hashes read.

Every path that hashes an image (``hashsvc hash`` on a victim's device, registration through the
API, a forensic scan) goes through :func:`decode`, so a registered image and its copy on a seized
device are reduced the same way. JPEGs are decoded at reduced size with libjpeg's DCT scaling
(``Image.draft``), which is where nearly all the time goes; other formats are decoded fully and
then reduced with a box filter so that the result resembles what DCT scaling gives. HEVC has no
reduced-size decoding, so a HEIF/HEIC file whose camera embedded a large enough thumbnail is hashed
from that thumbnail (see :data:`HEIF_THUMBNAIL_MIN_SIDE`).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from hashsvc.errors import DecodeError, UnsupportedFormat

#: Bump when the canonical decode changes: hashes made by another version may drift.
#: 2: HEIF files are hashed from an embedded thumbnail when one is large enough.
DECODE_VERSION = 2

#: The shorter side of the canonical picture is reduced to lie in [MIN_SIDE, 2 * MIN_SIDE).
#: PDQ works on a 64x64 and pHash on a 32x32 reduction, so 256 pixels is ample.
MIN_SIDE = 256

#: Smallest shorter side of an embedded HEIF thumbnail that may stand in for the full picture;
#: 240 admits the 320x240 thumbnail of a 12 MP phone photo. benchmarks/bench_heic.py measured the
#: PDQ distance from the full decode on 14 such photos: a filtered 320x240 thumbnail (as cameras
#: make them) drifts 3.1 bits on average, at most 8, the same as a JPEG copy of the photo; the
#: nearest-neighbour thumbnails libheif writes drift 10.4, at most 20, and 28 at 256x192, which
#: is why nothing smaller is taken. ``decode(..., heif_thumbnail_min_side=None)`` turns it off.
HEIF_THUMBNAIL_MIN_SIDE = 240

# Pillow's own bomb check warns at MAX_IMAGE_PIXELS and raises at twice that; hashsvc applies
# its own configurable limit before any pixel is decoded, so Pillow's is disabled here.
Image.MAX_IMAGE_PIXELS = None

_ISO_BMFF_HEIF = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                  b"mif1", b"msf1", b"mif2"}
_ISO_BMFF_AVIF = {b"avif", b"avis"}

#: Formats by sniffed name → the Pillow plugin allowed to open them.
PIL_FORMATS = {
    "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF",
    "heif": "HEIF", "avif": "AVIF",
}

#: Formats that plugins added (:func:`register_format`): sniffed name -> magic bytes at offset 0.
_PLUGIN_MAGIC: dict[str, bytes] = {}

_heif_registered = False


def register_format(name: str, magic: bytes, pil_format: str) -> None:
    """Let :func:`decode` accept a format that a Pillow plugin adds: content starting with
    ``magic`` sniffs as ``name`` and is opened by that plugin alone. Plugins are imported in
    the decoding processes by the ``decode_plugins`` setting (hashsvc.isolation); the tests'
    hostile formats (tests/hostile_plugin.py) come in this way."""
    if not magic or name in PIL_FORMATS and PIL_FORMATS[name] != pil_format:
        raise ValueError(f"cannot register image format {name!r}")
    PIL_FORMATS[name] = pil_format
    _PLUGIN_MAGIC[name] = bytes(magic)


def _register_heif() -> None:
    """Register pillow-heif's opener once, lazily: importing it costs time at start-up."""
    global _heif_registered
    if not _heif_registered:
        from pillow_heif import register_heif_opener

        # Thumbnails must be listed for draft() to pick one; nothing decodes them otherwise.
        register_heif_opener(thumbnails=True)
        _heif_registered = True


def sniff(head: bytes) -> str | None:
    """The image format of bytes starting with ``head`` (at least 32 bytes), by content alone."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18 and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff(head)
    for name, magic in _PLUGIN_MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _sniff_iso_bmff(head: bytes) -> str | None:
    """HEIF or AVIF from the major and compatible brands of an ISO BMFF ``ftyp`` box."""
    size = int.from_bytes(head[0:4], "big")
    brands = [head[8:12]] + [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if any(b in _ISO_BMFF_AVIF for b in brands):
        return "avif"
    if any(b in _ISO_BMFF_HEIF for b in brands):
        return "heif"
    return None


@dataclass(frozen=True)
class DecodedImage:
    """The canonical picture of an image file, as the hashes see it."""

    image: Image.Image  # RGB, EXIF orientation applied, shorter side reduced toward MIN_SIDE
    format: str
    width: int  # of the original picture, after orientation
    height: int
    # True when an embedded HEIF thumbnail stood in for the picture: a scan can record it, since
    # a thumbnail is separate data that an editor may have left stale or a forger made different.
    from_thumbnail: bool = False


def decode(data: bytes, max_pixels: int = 200_000_000, *,
           heif_thumbnail_min_side: int | None = HEIF_THUMBNAIL_MIN_SIDE) -> DecodedImage:
    """Decode untrusted bytes to the canonical picture, or raise :class:`DecodeError`."""
    fmt = sniff(data[:64])
    if fmt is None:
        raise UnsupportedFormat("not a recognised image format")
    if fmt == "heif":
        _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _open(data, fmt)
            width, height = img.size
            if width <= 0 or height <= 0:
                raise DecodeError(f"{fmt} with empty dimensions {width}x{height}")
            if width * height > max_pixels:
                raise DecodeError(
                    f"decompression bomb: {fmt} declares {width}x{height} = {width * height:,} "
                    f"pixels, over the limit of {max_pixels:,}"
                )
            from_thumbnail = False
            if fmt == "heif" and heif_thumbnail_min_side:
                img, from_thumbnail = _heif_thumbnail(img, data, heif_thumbnail_min_side)
            return _canonical(img, fmt, (width, height), from_thumbnail)
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"{fmt}: {exc}") from exc
    except (MemoryError, RecursionError, IndexError, KeyError, TypeError, ZeroDivisionError,
            RuntimeError, struct.error) as exc:  # RuntimeError: Pillow's AVIF plugin
        # Hostile files reach corners of decoders that raise unexpected errors; every one of them
        # means "this file cannot be decoded", never a crashed scan.
        raise DecodeError(f"{fmt}: {type(exc).__name__}: {exc}") from exc


def _open(data: bytes, fmt: str) -> Image.Image:
    """Open (not yet decode) bytes with the one Pillow plugin allowed for the sniffed format."""
    return Image.open(io.BytesIO(data), formats=[PIL_FORMATS[fmt]])


def _heif_thumbnail(img: Image.Image, data: bytes, min_side: int) -> tuple[Image.Image, bool]:
    """The opened HEIF switched to its smallest thumbnail with shorter side >= min_side, if any."""
    # A 12 MP HEVC picture takes about half a CPU-second to decode and HEVC has no reduced-size
    # decoding; the camera's own thumbnail decodes in milliseconds. pillow-heif's draft() picks
    # the smallest thumbnail not smaller than the size asked for, and only one that is a scaled
    # copy of the primary picture: same mode, aspect ratio, crop, colour profile, and the same
    # irot/imir transforms, which libheif applies to both, so the orientation agrees.
    full_width, full_height = img.size
    if img.draft(img.mode, (min_side, min_side)) is None:
        return img, False
    width, height = img.size
    same_shape = abs(width * full_height - height * full_width) <= 2 * max(full_width, full_height)
    if min(width, height) >= min_side and width <= full_width and height <= full_height \
            and same_shape:
        return img, True
    # draft() cannot be undone; a thumbnail that breaks these promises means the full picture.
    return _open(data, "heif"), False


def _canonical(img: Image.Image, fmt: str, size: tuple[int, int],
               from_thumbnail: bool = False) -> DecodedImage:
    """Reduce, orient and convert an opened image to the canonical RGB picture."""
    if fmt == "jpeg":
        # DCT scaling by 1/2, 1/4 or 1/8 while keeping both sides >= MIN_SIDE.
        img.draft("RGB", (MIN_SIDE, MIN_SIDE))
    orientation = _orientation(img)
    img.load()
    img = _reduce(img)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        img = ImageOps.exif_transpose(img.copy() if img.readonly else img)  # type: ignore[assignment]
    img = _to_rgb(img)
    width, height = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    return DecodedImage(image=img, format=fmt, width=width, height=height,
                        from_thumbnail=from_thumbnail)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # a corrupt EXIF block must not stop the picture from being hashed
        return 1


def _reduce(img: Image.Image) -> Image.Image:
    """Box-reduce by an integer factor so the shorter side falls in [MIN_SIDE, 2 * MIN_SIDE)."""
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = _to_rgb(img)
    factor = min(img.size) // MIN_SIDE
    if factor >= 2:
        img = img.reduce(factor)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to RGB, putting transparent pixels on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16-bit and float greyscale (medical and scientific TIFFs, some PNGs): keep the top byte.
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if img.mode != "F" or arr.max(initial=0) > 1.0 else 255.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")
