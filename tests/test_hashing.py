"""Known-answer and property tests for decoding and every hash algorithm."""

from __future__ import annotations

import itertools
import os

import imagehash
import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image

from hashsvc.decode import DecodeError, UnsupportedFormat, decode, sniff
from hashsvc.hashing import ALGORITHMS, DIHEDRAL_NAMES, hamming_hex, hash_bytes, prepare

from conftest import encode, photo

DATA = os.path.dirname(skimage.data.__file__)

# Pinned outputs of the canonical decode + hash on files that scikit-image ships byte for byte.
KNOWN = {
    "astronaut.png": {"pdq": "6d6b1af3a976c529c79ca3d2506fa834d4196c81cedd04de0a26b855fc99b724",
                      "phash": "c2924c5532bddfc8", "dhash": "cd8dd91d897293a7"},
    "coffee.png": {"pdq": "88629e779a663698f9a3b8468026727c21a679f61eb6e1f8c79b27e27c8299e0",
                   "phash": "bb8320376c0f3637", "dhash": "f3e96933160b1b36"},
    "camera.png": {"pdq": "dc9c9d3b746978f888f40ce6e5c3f70f7266623e8d989cb99f21f2010841e1c7",
                   "phash": "bff1c1c0434e8cbc", "dhash": "509a3c7fbc756cec"},
    "rocket.jpg": {"pdq": "8793786c8f9370e4bf1b40e43f1bc0e03f1cc2e33d2482537cac821b6cecf376",
                   "phash": "c0371bec1be51267", "dhash": "e0c0c090909090d1"},
    "retina.jpg": {"pdq": "87d22a5806923a195e87f178fe1a952fbc0f05f8005afe815fafaaf4aaf82a19",
                   "phash": "c0cd1f977ac02d0f", "dhash": "f0c4828888c0c4f0"},
}
KNOWN_ROT90 = {"astronaut.png":
               "25a76519ad4fbd78e14e470d5e2943fe4c7219cbd22992c99ab654c6e7182d19"}


def read(name: str) -> bytes:
    """Bytes of a file scikit-image ships."""
    with open(os.path.join(DATA, name), "rb") as fh:
        return fh.read()


def test_registry_is_not_empty_and_unique() -> None:
    assert ALGORITHMS
    assert len({a.name for a in ALGORITHMS}) == len(ALGORITHMS)
    assert {a.name for a in ALGORITHMS} == set(KNOWN["astronaut.png"])


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_answers(name: str) -> None:
    hs = hash_bytes(read(name))
    assert hs.hashes == KNOWN[name]
    assert hs.quality["pdq"] == 100


def test_known_answer_rotated_variant() -> None:
    hs = hash_bytes(read("astronaut.png"), with_variants=True)
    assert set(hs.variants["pdq"]) == set(DIHEDRAL_NAMES)
    assert hs.variants["pdq"]["orig"] == hs.hashes["pdq"]
    assert hs.variants["pdq"]["rot90"] == KNOWN_ROT90["astronaut.png"]


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "rocket.jpg"])
def test_phash_and_dhash_equal_imagehash(name: str) -> None:
    canonical = prepare(decode(read(name)).image).image
    hs = hash_bytes(read(name))
    assert hs.hashes["phash"] == str(imagehash.phash(canonical))
    assert hs.hashes["dhash"] == str(imagehash.dhash(canonical))


def test_exact_hashes_are_of_the_file_bytes() -> None:
    import hashlib

    data = read("coffee.png")
    hs = hash_bytes(data)
    assert hs.sha256 == hashlib.sha256(data).hexdigest()
    assert hs.md5 == hashlib.md5(data).hexdigest()
    assert hs.size == len(data)


DIHEDRAL_OPS = {"rot90": Image.Transpose.ROTATE_90, "rot180": Image.Transpose.ROTATE_180,
                "rot270": Image.Transpose.ROTATE_270, "flip_lr": Image.Transpose.FLIP_LEFT_RIGHT,
                "flip_tb": Image.Transpose.FLIP_TOP_BOTTOM,
                "transpose": Image.Transpose.TRANSPOSE, "transverse": Image.Transpose.TRANSVERSE}


@pytest.mark.parametrize("transform", sorted(DIHEDRAL_OPS))
def test_dihedral_variants_match_transformed_copies(transform: str) -> None:
    ops = DIHEDRAL_OPS
    img = photo("chelsea")
    registered = hash_bytes(encode(img, "PNG"), with_variants=True)
    copy = hash_bytes(encode(img.transpose(ops[transform]), "PNG"))
    distances = {k: hamming_hex(copy.hashes["pdq"], v)
                 for k, v in registered.variants["pdq"].items()}
    assert min(distances, key=distances.__getitem__) == transform
    assert distances[transform] <= 31
    assert hamming_hex(copy.hashes["pdq"], registered.hashes["pdq"]) > 31


# -- formats and orientation -------------------------------------------------------------

@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 90}), ("PNG", {}), ("GIF", {}),
                                    ("WEBP", {"quality": 90}), ("BMP", {}), ("TIFF", {}),
                                    ("AVIF", {"quality": 80})])
def test_formats_decode_by_content_and_match(fmt: str, kw: dict) -> None:
    img = photo("astronaut")
    reference = hash_bytes(encode(img, "PNG"))
    hs = hash_bytes(encode(img, fmt, **kw))
    assert hs.format == fmt.lower() if fmt != "JPEG" else hs.format == "jpeg"
    assert hamming_hex(hs.hashes["pdq"], reference.hashes["pdq"]) <= 31


def test_heic_decodes_and_matches() -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    img = photo("coffee")
    reference = hash_bytes(encode(img, "PNG"))
    hs = hash_bytes(encode(img, "HEIF", quality=80))
    assert hs.format == "heif"
    assert hamming_hex(hs.hashes["pdq"], reference.hashes["pdq"]) <= 31


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_exif_orientation_is_honoured(orientation: int) -> None:
    img = photo("chelsea")
    upright = hash_bytes(encode(img, "JPEG", quality=95))
    # The stored pixels are turned the other way; the tag says how to turn them back.
    stored = _inverse(img, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = hash_bytes(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert (tagged.width, tagged.height) == img.size
    assert hamming_hex(tagged.hashes["pdq"], upright.hashes["pdq"]) <= 16


def _inverse(img: Image.Image, orientation: int) -> Image.Image:
    """The stored pixels that display as ``img`` under an EXIF orientation."""
    return {3: img.transpose(Image.Transpose.ROTATE_180),
            6: img.transpose(Image.Transpose.ROTATE_90),
            8: img.transpose(Image.Transpose.ROTATE_270),
            2: img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}[orientation]


def test_modes_with_alpha_palette_and_16_bit() -> None:
    img = photo("coffee")
    ref = hash_bytes(encode(img, "PNG")).hashes["pdq"]
    rgba = img.convert("RGBA")
    assert hamming_hex(hash_bytes(encode(rgba, "PNG")).hashes["pdq"], ref) <= 8
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE)
    assert hamming_hex(hash_bytes(encode(pal, "PNG")).hashes["pdq"], ref) <= 31
    grey16 = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257))
    hs = hash_bytes(encode(grey16, "PNG"))
    grey8 = hash_bytes(encode(img.convert("L"), "PNG"))
    assert hamming_hex(hs.hashes["pdq"], grey8.hashes["pdq"]) <= 4


def test_sniff_is_by_content() -> None:
    assert sniff(encode(photo("coffee"), "PNG")[:64]) == "png"
    assert sniff(b"GIF89a" + b"\0" * 40) == "gif"
    assert sniff(b"hello world, not an image at all" * 2) is None
    assert sniff(b"") is None


# -- hostile input -----------------------------------------------------------------------

def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = Image.new("L", (20000, 20000))
    data = encode(bomb, "PNG")
    assert len(data) < 1_000_000
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode(data, max_pixels=100_000_000)


@pytest.mark.parametrize("data", [
    b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, b"GIF89a\xff\xff\xff\xff",
    b"RIFF\0\0\0\0WEBPVP8 " + b"\x00" * 40, b"II*\x00" + b"\xff" * 60,
    b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 40,
])
def test_garbage_with_image_magic_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        hash_bytes(data)


def test_random_bytes_are_unsupported() -> None:
    with pytest.raises(UnsupportedFormat):
        hash_bytes(np.random.default_rng(1).bytes(5000))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_images_are_decode_errors(fmt: str) -> None:
    data = encode(photo("astronaut"), fmt)
    for cut in (len(data) // 2, 40):
        with pytest.raises(DecodeError):
            hash_bytes(data[:cut])


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=2048), st.sampled_from(["jpeg", "png", "gif", "tiff"]))
def test_fuzzed_headers_never_raise_anything_but_decode_errors(tail: bytes, kind: str) -> None:
    heads = {"jpeg": b"\xff\xd8\xff\xe0", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF89a",
             "tiff": b"II*\x00"}
    try:
        hash_bytes(heads[kind] + tail)
    except DecodeError:
        pass


# -- properties: copies match, unrelated photos do not ------------------------------------

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina")


@hsettings(max_examples=25, deadline=None)
@given(st.sampled_from(PHOTOS), st.floats(0.3, 1.5), st.integers(30, 95),
       st.sampled_from(["JPEG", "PNG", "WEBP"]))
def test_resized_recompressed_reencoded_copies_match(name: str, scale: float, quality: int,
                                                     fmt: str) -> None:
    img = photo(name)
    registered = hash_bytes(encode(img, "JPEG", quality=95))
    size = (max(32, int(img.width * scale)), max(32, int(img.height * scale)))
    kw = {"quality": quality} if fmt != "PNG" else {}
    copy = hash_bytes(encode(img.resize(size, Image.Resampling.BILINEAR), fmt, **kw))
    assert hamming_hex(copy.hashes["pdq"], registered.hashes["pdq"]) <= 31


def test_unrelated_photos_are_far_apart() -> None:
    hashes = {n: hash_bytes(encode(photo(n), "JPEG", quality=90)).hashes for n in PHOTOS}
    for a, b in itertools.combinations(PHOTOS, 2):
        assert hamming_hex(hashes[a]["pdq"], hashes[b]["pdq"]) > 31 + 20, (a, b)
        assert hamming_hex(hashes[a]["phash"], hashes[b]["phash"]) > 10, (a, b)


def test_large_jpeg_uses_reduced_decode() -> None:
    img = photo("astronaut").resize((4000, 3000))
    data = encode(img, "JPEG", quality=90)
    picture = decode(data)
    assert (picture.width, picture.height) == (4000, 3000)
    assert min(picture.image.size) < 512  # 1/8 DCT scaling, never the full 12 MP
    full = hash_bytes(encode(img.resize((500, 375)), "PNG"))
    assert hamming_hex(hash_bytes(data).hashes["pdq"], full.hashes["pdq"]) <= 16


@pytest.mark.parametrize("name", ["astronaut.png", "rocket.jpg"])
def test_variants_do_not_change_the_hashes(name: str) -> None:
    plain = hash_bytes(read(name))
    with_variants = hash_bytes(read(name), with_variants=True)
    assert with_variants.hashes == plain.hashes and with_variants.quality == plain.quality


def test_registration_decodes_heic_fully_and_scans_may_use_the_thumbnail() -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    data = encode(photo("coffee").resize((1200, 800)), "HEIF", thumbnails=[480], quality=80)
    assert hash_bytes(data).from_thumbnail is False
    scanned = hash_bytes(data, heif_thumbnails=True)
    assert scanned.from_thumbnail is True
    assert hamming_hex(scanned.hashes["pdq"], hash_bytes(data).hashes["pdq"]) <= 31
