"""HEIF/HEIC decoding: the embedded-thumbnail path, its fallbacks, orientation and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hashsvc.decode import HEIF_THUMBNAIL_MIN_SIDE, DecodeError, decode
from hashsvc.hashing import hamming_hex, hash_bytes, hash_picture

from conftest import encode, photo

#: PDQ bits a thumbnail may drift from the full decode. benchmarks/bench_heic.py measured at most
#: 8 for filtered (camera-like) 320x240 thumbnails and up to 20 for libheif's nearest-neighbour
#: ones, which are what pillow-heif writes here; these smaller, less grainy pictures drift 2-8.
DRIFT_BOUND = 16

#: Display size of the generated pictures, and their thumbnail's bounding box (an iPhone's).
SIZE = (1280, 960)
BOX = 320
FULL_CANONICAL = (427, 320)  # SIZE box-reduced by 3 (partial boxes kept): short side in [256, 512)

FAST = {"quality": 60, "enc_params": {"preset": "ultrafast"}}  # x265's default takes seconds


def heic(img: Image.Image, thumbnails: tuple[int, ...] = (BOX,), orientation: int = 1) -> bytes:
    """A HEIC of ``img`` with thumbnails of the given boxes, stored turned for ``orientation``."""
    stored = _stored(img, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "HEIF", thumbnails=list(thumbnails), exif=exif.tobytes(), **FAST)


def _stored(img: Image.Image, orientation: int) -> Image.Image:
    """The stored pixels that display as ``img`` under an EXIF orientation."""
    ops = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    op = ops[orientation]
    return img if op is None else img.transpose(op)


def grainy(name: str, seed: int = 0) -> Image.Image:
    """A photograph enlarged to SIZE with sensor-like grain, so thumbnails have detail to lose."""
    big = np.asarray(photo(name).resize(SIZE, Image.Resampling.BICUBIC), dtype=np.float32)
    grain = np.random.default_rng(seed).normal(0, 3, big.shape)
    return Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def coffee_heic() -> bytes:
    """A 1280x960 HEIC with a 320x240 thumbnail."""
    return heic(grainy("coffee"))


def pdq(data: bytes, heif_thumbnail_min_side: int | None = HEIF_THUMBNAIL_MIN_SIDE) -> str:
    """PDQ of the canonical picture of ``data``."""
    picture = decode(data, heif_thumbnail_min_side=heif_thumbnail_min_side)
    return hash_picture(picture, {"sha256": "", "md5": ""}, 0).hashes["pdq"]


def test_thumbnail_is_used_when_large_enough(coffee_heic: bytes) -> None:
    picture = decode(coffee_heic)
    assert picture.from_thumbnail
    assert picture.image.size == (320, 240)  # not reduced further: its short side is under 512
    assert (picture.width, picture.height) == SIZE  # the picture's own size is still reported
    assert picture.format == "heif" and picture.image.mode == "RGB"


def test_full_decode_when_asked(coffee_heic: bytes) -> None:
    picture = decode(coffee_heic, heif_thumbnail_min_side=None)
    assert not picture.from_thumbnail
    assert picture.image.size == FULL_CANONICAL


def test_thumbnail_below_the_minimum_is_not_used() -> None:
    data = heic(grainy("coffee"), thumbnails=(160,))
    picture = decode(data)
    assert not picture.from_thumbnail
    assert min(picture.image.size) >= 256


def test_smallest_large_enough_thumbnail_is_chosen() -> None:
    data = heic(grainy("chelsea"), thumbnails=(160, 320, 640))
    assert HEIF_THUMBNAIL_MIN_SIDE <= 240
    assert decode(data).image.size == (320, 240)
    assert decode(data, heif_thumbnail_min_side=300).image.size == (640, 480)


def test_heic_without_thumbnail_decodes_fully() -> None:
    data = heic(grainy("coffee"), thumbnails=())
    picture = decode(data)
    assert not picture.from_thumbnail
    assert picture.image.size == FULL_CANONICAL
    assert hamming_hex(pdq(data), pdq(encode(grainy("coffee"), "PNG"))) <= 16


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera"])
def test_thumbnail_hash_stays_close_to_full_decode(name: str) -> None:
    data = heic(grainy(name))
    assert decode(data).from_thumbnail
    thumb = hash_bytes(data).hashes["pdq"]
    assert hamming_hex(thumb, pdq(data, heif_thumbnail_min_side=None)) <= DRIFT_BOUND
    # A plain PNG of the same picture, the kind of copy a victim registers, is as close.
    assert hamming_hex(thumb, pdq(encode(grainy(name), "PNG"))) <= DRIFT_BOUND


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_thumbnail_is_oriented_like_the_full_picture(orientation: int) -> None:
    img = grainy("chelsea")
    data = heic(img, orientation=orientation)
    thumb = decode(data)
    full = decode(data, heif_thumbnail_min_side=None)
    assert thumb.from_thumbnail and not full.from_thumbnail
    # libheif applies the irot/imir transforms to both; the EXIF tag is not applied again.
    assert (thumb.width, thumb.height) == (full.width, full.height) == img.size
    assert (thumb.image.width > thumb.image.height) == (img.width > img.height)
    upright = pdq(encode(img, "PNG"))
    assert hamming_hex(pdq(data), pdq(data, heif_thumbnail_min_side=None)) <= DRIFT_BOUND
    assert hamming_hex(pdq(data), upright) <= DRIFT_BOUND


def test_size_limit_applies_to_the_declared_picture_not_the_thumbnail(coffee_heic: bytes) -> None:
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode(coffee_heic, max_pixels=SIZE[0] * SIZE[1] - 1)


@pytest.mark.parametrize("cut", [0.5, 0.7])
def test_truncated_heic_is_a_decode_error(coffee_heic: bytes, cut: float) -> None:
    with pytest.raises(DecodeError):
        hash_bytes(coffee_heic[:int(len(coffee_heic) * cut)])


def test_thumbnail_cut_off_falls_back_to_the_full_decode(coffee_heic: bytes) -> None:
    # pillow-heif writes the thumbnail's coded data after the picture's, so losing the file's
    # last bytes breaks only the thumbnail.
    picture = decode(coffee_heic[:-100])
    assert not picture.from_thumbnail
    assert picture.image.size == FULL_CANONICAL
    assert pdq(coffee_heic[:-100]) == pdq(coffee_heic, heif_thumbnail_min_side=None)


def test_corrupt_heic_is_a_decode_error(coffee_heic: bytes) -> None:
    # Keep the ftyp box so the bytes still sniff as HEIF, and wreck everything after it.
    size = int.from_bytes(coffee_heic[:4], "big")
    garbage = np.random.default_rng(7).bytes(len(coffee_heic) - size)
    with pytest.raises(DecodeError):
        hash_bytes(coffee_heic[:size] + garbage)


def test_corrupt_picture_data_is_a_decode_error_or_a_picture(coffee_heic: bytes) -> None:
    # Scribbling over the coded data (not the boxes) must end in a DecodeError or a picture
    # from a thumbnail that still decodes, never in another exception.
    data = bytearray(coffee_heic)
    rng = np.random.default_rng(3)
    start = len(data) // 3
    data[start:start + 4096] = rng.bytes(4096)
    for min_side in (HEIF_THUMBNAIL_MIN_SIDE, None):
        try:
            decode(bytes(data), heif_thumbnail_min_side=min_side)
        except DecodeError:
            pass
