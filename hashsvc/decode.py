"""Sniffing and decoding untrusted image bytes into the canonical picture the hashes read.

Every path that hashes an image (``hashsvc hash`` on a victim's device, registration through the
API, a forensic scan) goes through :func:`decode`, so a registered image and its copy on a seized
device are reduced the same way. JPEGs are decoded at reduced size with libjpeg's DCT scaling
(``Image.draft``), which is where nearly all the time goes; other formats are decoded fully and
then reduced with a box filter so that the result resembles what DCT scaling gives.
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
DECODE_VERSION = 1

#: The shorter side of the canonical picture is reduced to lie in [MIN_SIDE, 2 * MIN_SIDE).
#: PDQ works on a 64x64 and pHash on a 32x32 reduction, so 256 pixels is ample.
MIN_SIDE = 256

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

_heif_registered = False


def _register_heif() -> None:
    """Register pillow-heif's opener once, lazily: importing it costs time at start-up."""
    global _heif_registered
    if not _heif_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener(thumbnails=False)
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


def decode(data: bytes, max_pixels: int = 200_000_000) -> DecodedImage:
    """Decode untrusted bytes to the canonical picture, or raise :class:`DecodeError`."""
    fmt = sniff(data[:64])
    if fmt is None:
        raise UnsupportedFormat("not a recognised image format")
    if fmt == "heif":
        _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=[PIL_FORMATS[fmt]])
            width, height = img.size
            if width <= 0 or height <= 0:
                raise DecodeError(f"{fmt} with empty dimensions {width}x{height}")
            if width * height > max_pixels:
                raise DecodeError(
                    f"decompression bomb: {fmt} declares {width}x{height} = {width * height:,} "
                    f"pixels, over the limit of {max_pixels:,}"
                )
            return _canonical(img, fmt, (width, height))
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"{fmt}: {exc}") from exc
    except (MemoryError, RecursionError, IndexError, KeyError, TypeError, ZeroDivisionError,
            struct.error) as exc:
        # Hostile files reach corners of decoders that raise unexpected errors; every one of them
        # means "this file cannot be decoded", never a crashed scan.
        raise DecodeError(f"{fmt}: {type(exc).__name__}: {exc}") from exc


def _canonical(img: Image.Image, fmt: str, size: tuple[int, int]) -> DecodedImage:
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
    return DecodedImage(image=img, format=fmt, width=width, height=height)


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
