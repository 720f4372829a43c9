"""Perceptual and exact hashes: pure functions from canonical pictures (or bytes) to hex strings.

One explicit registry, :data:`ALGORITHMS`, lists every perceptual hash with its bit length and
default threshold; adding an algorithm is one entry there plus its known-answer test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Callable

import numpy as np
import pdqhash
from PIL import Image

from hashsvc.trim import trim
from hashsvc.decode import DECODE_VERSION, HEIF_THUMBNAIL_MIN_SIDE, DecodedImage, decode

#: Exact hashes of a file's bytes; matched by equality.
EXACT_ALGORITHMS = ("sha256", "md5")

#: Version of the hash line format that ``hashsvc hash`` prints.
HASH_FORMAT = 1


class Views:
    """A canonical picture and the derived pixels that several algorithms share, each made once."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image

    @cached_property
    def rgb(self) -> np.ndarray:
        """The RGB pixels as an (height, width, 3) uint8 array."""
        return np.asarray(self.image)

    @cached_property
    def grey(self) -> Image.Image:
        """Pillow's "L" conversion, which pHash and dHash both start from."""
        return self.image.convert("L")


#: Every perceptual hash reads the canonical picture squeezed to this square. PDQ, pHash and
#: dHash all reduce to a fixed grid ignoring the aspect ratio anyway; feeding them one fixed size
#: keeps PDQ's size-dependent box filters identical for every copy of an image, which took
#: resized and re-encoded copies from a mean of 8.9 (max 94) PDQ bits to 3.7 (max 22) on
#: scikit-image's photographs, while unrelated photographs stayed ≥ 106 bits apart.
HASH_SIDE = 128


def prepare(image: Image.Image) -> Views:
    """The shared views of one canonical picture, for the algorithms' functions."""
    return Views(image.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class Algorithm:
    """A perceptual hash: name, length in bits, default match threshold and the function."""

    name: str
    bits: int
    threshold: int  # default; settings override it
    compute: Callable[[Views], tuple[str, int | None]]  # -> (hex, quality or None)
    # The 8 orientations and the quality; its "orig" entry and quality are exactly what compute
    # returns, so a caller that wants the variants needs only this one call.
    dihedral: Callable[[Views], tuple[dict[str, str], int | None]] | None = None


def _bits_to_hex(bits: np.ndarray) -> str:
    """Pack a 0/1 vector most-significant bit first into hex (the ThreatExchange convention)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8).ravel()).tobytes().hex()


def _pdq(views: Views) -> tuple[str, int | None]:
    """PDQ (Meta's 256-bit photo hash) with its quality score (0-100)."""
    vector, quality = pdqhash.compute(views.rgb)
    return _bits_to_hex(vector), int(quality)


#: The eight orientations in the order pdqhash.compute_dihedral returns them, named after the
#: Pillow transposition that produces each from the original (rotations are anticlockwise;
#: verified by tests/test_hashing.py).
DIHEDRAL_NAMES = ("orig", "rot90", "rot180", "rot270", "flip_tb", "flip_lr", "transpose",
                  "transverse")


#: Pillow transpositions producing each named orientation from the original.
_TRANSPOSE = {
    "rot90": Image.Transpose.ROTATE_90, "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270, "flip_tb": Image.Transpose.FLIP_TOP_BOTTOM,
    "flip_lr": Image.Transpose.FLIP_LEFT_RIGHT, "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


def _pdq_dihedral(views: Views) -> tuple[dict[str, str], int | None]:
    """PDQ of all eight rotations and mirror images of the canonical square, with the quality.

    Each orientation is hashed from the turned pixels rather than derived from one DCT
    (pdqhash.compute_dihedral): PDQ's box filters are not symmetric, and on textured pictures
    the derived hashes were up to 108 bits from a turned copy's hash, against at most 12 this
    way (benchmarks/eval_matching.py). The square turns exactly like any copy of the picture.
    """
    first, quality = _pdq(views)
    out = {"orig": first}
    for name, op in _TRANSPOSE.items():
        out[name] = _pdq(Views(views.image.transpose(op)))[0]
    return out, quality


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II matrix, identical to ``scipy.fftpack.dct`` with default arguments."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def _phash(views: Views) -> tuple[str, int | None]:
    """pHash as ``imagehash.phash`` computes it (32x32 greyscale DCT, 8x8 low band > median)."""
    small = np.asarray(views.grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix(32)
    low = (dct @ small @ dct.T)[:8, :8]
    return _bits_to_hex(low > np.median(low)), None


def _dhash(views: Views) -> tuple[str, int | None]:
    """dHash as ``imagehash.dhash`` computes it (9x8 greyscale, horizontal gradient signs)."""
    small = np.asarray(views.grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits_to_hex(small[:, 1:] > small[:, :-1]), None


#: Every perceptual hash hashsvc computes. PDQ is primary; the others support it.
ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm("pdq", 256, 31, _pdq, _pdq_dihedral),
    Algorithm("phash", 64, 10, _phash),
    Algorithm("dhash", 64, 10, _dhash),
)

#: Hex digits of every hash a hash line or a lookup may carry, by algorithm.
HEX_DIGITS = {**{a.name: a.bits // 4 for a in ALGORITHMS}, "sha256": 64, "md5": 32}

_BY_NAME = {a.name: a for a in ALGORITHMS}
if len(_BY_NAME) != len(ALGORITHMS):
    raise RuntimeError("duplicate algorithm names in ALGORITHMS")


def algorithm(name: str) -> Algorithm:
    """The registered perceptual algorithm called ``name`` (KeyError if unknown)."""
    return _BY_NAME[name]


def exact_hashes(data: bytes) -> dict[str, str]:
    """sha256 and md5 of the file's own bytes."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}


@dataclass(frozen=True)
class FrameHash:
    """The hashes of one sampled frame of a video, at ``t`` seconds from its first frame."""

    t: float
    hashes: dict[str, str]
    quality: dict[str, int] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The frame's entry in a video's hash line."""
        out: dict[str, object] = {"t": self.t, "hashes": dict(self.hashes),
                                  "quality": dict(self.quality)}
        if self.variants:
            out["variants"] = {k: dict(v) for k, v in self.variants.items()}
        return out

    def as_hashset(self) -> "HashSet":
        """The frame as a picture to match (no exact hashes: a frame is not a file)."""
        return HashSet(sha256="", md5="", size=0, format="frame", width=0, height=0,
                       hashes=self.hashes, quality=self.quality, variants=self.variants)


@dataclass(frozen=True)
class HashSet:
    """Every hash of one image (or video) file, as ``hashsvc hash`` prints it and the bank
    stores it. A video has no picture hashes of its own: its sampled frames carry them."""

    sha256: str
    md5: str
    size: int
    format: str
    width: int
    height: int
    hashes: dict[str, str]
    quality: dict[str, int] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)
    from_thumbnail: bool = False  # hashed from an embedded HEIF thumbnail
    media: str = "image"  # or "video" (hashsvc.video)
    duration: float | None = None  # of a video, in seconds, as far as it was decoded
    frames: tuple[FrameHash, ...] = ()  # a video's kept frames, in time order
    #: Why a video was hashed only in part (a decoding limit was reached), else None.
    partial: str | None = None

    def to_json(self) -> dict[str, object]:
        """The JSON object of a hash line (without the ``file`` field)."""
        out: dict[str, object] = {
            "sha256": self.sha256, "md5": self.md5, "size": self.size, "format": self.format,
            "width": self.width, "height": self.height, "hashes": dict(self.hashes),
            "quality": dict(self.quality), "hash_format": HASH_FORMAT,
            "decode_version": DECODE_VERSION,
        }
        if self.from_thumbnail:
            out["from_thumbnail"] = True
        if self.variants:
            out["variants"] = {k: dict(v) for k, v in self.variants.items()}
        if self.media == "video":
            from hashsvc.video import VIDEO_VERSION

            out.update({"media": "video", "video_version": VIDEO_VERSION,
                        "duration": self.duration,
                        "frames": [frame.to_json() for frame in self.frames]})
            if self.partial:
                out["partial"] = self.partial
        return out


def hash_picture(picture: DecodedImage, exact: dict[str, str], size: int,
                 with_variants: bool = False) -> HashSet:
    """All perceptual hashes of a decoded picture, with the file's exact hashes beside them."""
    views = prepare(picture.image)
    hashes: dict[str, str] = {}
    quality: dict[str, int] = {}
    variants: dict[str, dict[str, str]] = {}
    for alg in ALGORITHMS:
        if with_variants and alg.dihedral is not None:
            # One pass gives the hash and its variants; computing both would hash twice.
            variants[alg.name], q = alg.dihedral(views)
            value = variants[alg.name]["orig"]
        else:
            value, q = alg.compute(views)
        hashes[alg.name] = value
        if q is not None:
            quality[alg.name] = q
    framed = trim(picture.image)
    if framed is not None:
        # The picture inside a border or screenshot frame, hashed as one more variant.
        inner = prepare(framed)
        for alg in ALGORITHMS:
            variants.setdefault(alg.name, {})["trim"] = alg.compute(inner)[0]
    return HashSet(sha256=exact["sha256"], md5=exact["md5"], size=size, format=picture.format,
                   width=picture.width, height=picture.height, hashes=hashes, quality=quality,
                   variants=variants, from_thumbnail=picture.from_thumbnail)


def hash_bytes(data: bytes, max_pixels: int = 200_000_000, with_variants: bool = False,
               exact: dict[str, str] | None = None, heif_thumbnails: bool = False) -> HashSet:
    """Decode untrusted bytes and hash them; raises :class:`~hashsvc.errors.DecodeError`.

    ``heif_thumbnails`` lets a HEIC be hashed from its embedded thumbnail: scans use it for
    speed; registration keeps the default full decode, since its hashes are the reference.
    """
    # sha256 and md5 of a 3 MB photo cost about a fifth of its reduced decode; a caller that
    # already has them (the scanner hashes every file, image or not) passes them in.
    if exact is None:
        exact = exact_hashes(data)
    picture = decode(data, max_pixels,
                     heif_thumbnail_min_side=HEIF_THUMBNAIL_MIN_SIDE if heif_thumbnails else None)
    return hash_picture(picture, exact, len(data), with_variants)


def hamming_hex(a: str, b: str) -> int:
    """Hamming distance between two equal-length hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


#: Every variant name a bank hash row may carry, with a small stable code. The in-memory
#: indexes identify a row as ``image_id * VARIANT_SLOTS + code``, so a search result names the
#: registered image without any lookup table.
VARIANT_CODES: dict[str, int] = {
    **{name: code for code, name in enumerate(DIHEDRAL_NAMES)},
    "trim": 8,  # the picture inside its border or screenshot frame (hashsvc.trim)
}
VARIANT_SLOTS = 64
if len(VARIANT_CODES) > VARIANT_SLOTS:
    raise RuntimeError("more variants than VARIANT_SLOTS")
