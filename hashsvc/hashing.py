"""Perceptual and exact hashes: pure functions from canonical pictures (or bytes) to hex strings.

One explicit registry, :data:`ALGORITHMS`, lists every perceptual hash with its bit length and
default threshold; adding an algorithm is one entry there plus its known-answer test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import pdqhash
from PIL import Image

from hashsvc.decode import DECODE_VERSION, DecodedImage, decode

#: Exact hashes of a file's bytes; matched by equality.
EXACT_ALGORITHMS = ("sha256", "md5")

#: Version of the hash line format that ``hashsvc hash`` prints.
HASH_FORMAT = 1


@dataclass(frozen=True)
class Algorithm:
    """A perceptual hash: name, length in bits, default match threshold and the function."""

    name: str
    bits: int
    threshold: int  # default; settings override it
    compute: Callable[[Image.Image], tuple[str, int | None]]  # -> (hex, quality or None)
    dihedral: Callable[[Image.Image], dict[str, str]] | None = None  # the 8 orientations


def _bits_to_hex(bits: np.ndarray) -> str:
    """Pack a 0/1 vector most-significant bit first into hex (the ThreatExchange convention)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8).ravel()).tobytes().hex()


def _pdq(img: Image.Image) -> tuple[str, int | None]:
    """PDQ (Meta's 256-bit photo hash) with its quality score (0-100)."""
    vector, quality = pdqhash.compute(np.asarray(img))
    return _bits_to_hex(vector), int(quality)


#: The eight orientations in the order pdqhash.compute_dihedral returns them, named after the
#: Pillow transposition that produces each from the original (rotations are anticlockwise;
#: verified by tests/test_hashing.py).
DIHEDRAL_NAMES = ("orig", "rot90", "rot180", "rot270", "flip_tb", "flip_lr", "transpose",
                  "transverse")


def _pdq_dihedral(img: Image.Image) -> dict[str, str]:
    """PDQ of all eight rotations and mirror images, computed from one DCT."""
    vectors, _quality = pdqhash.compute_dihedral(np.asarray(img))
    return {name: _bits_to_hex(v) for name, v in zip(DIHEDRAL_NAMES, vectors)}


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II matrix, identical to ``scipy.fftpack.dct`` with default arguments."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def _phash(img: Image.Image) -> tuple[str, int | None]:
    """pHash as ``imagehash.phash`` computes it (32x32 greyscale DCT, 8x8 low band > median)."""
    small = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS),
                       dtype=np.float64)
    dct = _dct_matrix(32)
    low = (dct @ small @ dct.T)[:8, :8]
    return _bits_to_hex(low > np.median(low)), None


def _dhash(img: Image.Image) -> tuple[str, int | None]:
    """dHash as ``imagehash.dhash`` computes it (9x8 greyscale, horizontal gradient signs)."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits_to_hex(small[:, 1:] > small[:, :-1]), None


#: Every perceptual hash hashsvc computes. PDQ is primary; the others support it.
ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm("pdq", 256, 31, _pdq, _pdq_dihedral),
    Algorithm("phash", 64, 10, _phash),
    Algorithm("dhash", 64, 10, _dhash),
)

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
class HashSet:
    """Every hash of one image file, as ``hashsvc hash`` prints it and the bank stores it."""

    sha256: str
    md5: str
    size: int
    format: str
    width: int
    height: int
    hashes: dict[str, str]
    quality: dict[str, int] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The JSON object of a hash line (without the ``file`` field)."""
        out: dict[str, object] = {
            "sha256": self.sha256, "md5": self.md5, "size": self.size, "format": self.format,
            "width": self.width, "height": self.height, "hashes": dict(self.hashes),
            "quality": dict(self.quality), "hash_format": HASH_FORMAT,
            "decode_version": DECODE_VERSION,
        }
        if self.variants:
            out["variants"] = {k: dict(v) for k, v in self.variants.items()}
        return out


def hash_picture(picture: DecodedImage, exact: dict[str, str], size: int,
                 with_variants: bool = False) -> HashSet:
    """All perceptual hashes of a decoded picture, with the file's exact hashes beside them."""
    hashes: dict[str, str] = {}
    quality: dict[str, int] = {}
    variants: dict[str, dict[str, str]] = {}
    for alg in ALGORITHMS:
        value, q = alg.compute(picture.image)
        hashes[alg.name] = value
        if q is not None:
            quality[alg.name] = q
        if with_variants and alg.dihedral is not None:
            variants[alg.name] = alg.dihedral(picture.image)
    return HashSet(sha256=exact["sha256"], md5=exact["md5"], size=size, format=picture.format,
                   width=picture.width, height=picture.height, hashes=hashes, quality=quality,
                   variants=variants)


def hash_bytes(data: bytes, max_pixels: int = 200_000_000,
               with_variants: bool = False) -> HashSet:
    """Decode untrusted bytes and hash them; raises :class:`~hashsvc.errors.DecodeError`."""
    exact = exact_hashes(data)
    return hash_picture(decode(data, max_pixels), exact, len(data), with_variants)


def hamming_hex(a: str, b: str) -> int:
    """Hamming distance between two equal-length hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
