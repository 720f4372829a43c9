"""Frame trimming: borders, letterboxes and screenshots give back the picture inside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from hashsvc.decode import decode
from hashsvc.hashing import hamming_hex, hash_bytes
from hashsvc.trim import content_box, trim

from conftest import encode, photo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.eval_matching import caption_band, screenshot  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


@pytest.mark.parametrize("name", PHOTOS)
def test_unframed_photographs_are_left_alone(name: str) -> None:
    assert content_box(decode(encode(photo(name), "PNG")).image) is None


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("frame", ["black", "white-uneven", "screenshot", "caption"])
def test_framed_copies_hash_like_the_photograph(name: str, frame: str) -> None:
    img = photo(name)
    framed = {
        "black": lambda: ImageOps.expand(img, 40, fill=(0, 0, 0)),
        "white-uneven": lambda: ImageOps.expand(img, (10, 90, 30, 60), fill=(255, 255, 255)),
        "screenshot": lambda: screenshot(img),
        "caption": lambda: caption_band(img),
    }[frame]()
    registered = hash_bytes(encode(img, "JPEG", quality=95), with_variants=True)
    copy = hash_bytes(encode(framed, "JPEG"))
    assert hamming_hex(copy.hashes["pdq"], registered.hashes["pdq"]) > 31  # whole: no match
    trimmed = copy.variants["pdq"]["trim"]
    assert hamming_hex(trimmed, registered.hashes["pdq"]) <= 31


def test_box_is_exact_at_full_resolution() -> None:
    img = photo("coffee")
    framed = ImageOps.expand(img, (37, 53, 41, 29), fill=(12, 12, 12))
    assert content_box(framed) == (37, 53, 37 + img.width, 53 + img.height)


def test_thin_or_empty_frames_do_not_count() -> None:
    img = photo("chelsea")
    assert trim(ImageOps.expand(img, 1, fill=(0, 0, 0))) is None
    assert trim(Image.new("RGB", (300, 200), (40, 40, 40))) is None
