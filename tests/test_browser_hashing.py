"""In-browser hashing (hashsvc/web/static/hashing.js) against Python's hashsvc.hashing.

hashing.js is loaded in Debian's Chromium from a loopback HTTP server, under a strict
Content-Security-Policy, and hashes generated pictures; every hash line is compared with
``hash_bytes(data, with_variants=True)`` of the same bytes.

Measured (Chromium 156, Pillow 13, pdqhash 0.2.8; 71 files; Hamming distance browser vs
Python; ``pytest -s`` prints the table and a row per file):

    algorithm      mean   max
    pdq            0.11     2   (match threshold 31)
    pdq variants   0.14     2   (8 per file, each against Python's variant of the same name)
    phash          0.03     2   (threshold 8)
    dhash          0.07     2   (threshold 8)
    pdq quality    0.00     0

    per format (pdq mean/max): JPEG at most 511 px on the shorter side 0.00/0 (n=22);
    JPEG 1203x803 to 4032x3024, which Python decodes at reduced size (draft) 0.80/2 (n=5);
    EXIF orientations 2-8 in JPEG, PNG and WebP 0.29/2 (n=14); JPEGs scikit-image ships
    0.00/0 (dhash 1.00/2) (n=3); PNG, palette PNG, GIF, BMP, gAMA/ICC-tagged PNG: identical,
    bit for bit (n=19); PNG with alpha 0/0 (n=3); WebP lossy, lossless and with alpha 0/0 (n=5).
    Unrelated photographs: at least 110 PDQ bits apart.

JPEG is where the two sides decode differently: Pillow decodes a large JPEG at 1/2, 1/4 or 1/8
size with libjpeg's DCT scaling, the browser at full size, which hashing.js then box-reduces
by the same factor; small JPEGs differ only by Chromium's and Pillow's libjpeg-turbo builds.
"""

from __future__ import annotations

import base64
import functools
import statistics
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import encode, noise_image
from conftest import photo as _load_photo
from hashsvc.api.cases import validate_line
from hashsvc.hashing import DIHEDRAL_NAMES, hamming_hex, hash_bytes
from hashsvc.matching import decide
from hashsvc.settings import load_settings

SKIMAGE = Path(__import__("skimage.data").data.__file__).parent
STATIC = Path(__file__).resolve().parents[1] / "hashsvc" / "web" / "static"

#: The test page: nothing but the script, as the intake page will load it.
PAGE = (b"<!doctype html><html><head><meta charset='utf-8'><title>hashing.js test</title>"
        b"<script src='/static/hashing.js'></script></head><body></body></html>")

#: As strict as the app's: no inline script, no eval, no wasm, nothing from elsewhere.
CSP = "default-src 'none'; script-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'"

#: Bounds asserted, from the measured figures with margin (the match threshold is 31 for PDQ
#: and 8 for pHash/dHash).
PDQ_BOUND = 10
SMALL_BOUND = 8
#: Lossless, opaque formats: the browser decodes the very pixels Pillow does, and from there
#: hashing.js computes what Python computes, bit for bit.
EXACT_GROUPS = {"png", "gif", "bmp", "colour"}
UNRELATED_MIN = 60

LINE_KEYS = {"file", "sha256", "md5", "size", "format", "width", "height", "hashes", "quality",
             "variants", "hash_format", "hashed_in"}


class _Handler(BaseHTTPRequestHandler):
    """Serves the test page and hashsvc/web/static/*, nothing else."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        if path == "/test.html":
            body, ctype = PAGE, "text/html; charset=utf-8"
        elif path.startswith("/static/") and "/.." not in path and (STATIC / path[8:]).is_file():
            body, ctype = (STATIC / path[8:]).read_bytes(), "text/javascript; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The loopback server's base URL (WebCrypto needs a secure context: 127.0.0.1 is one)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def page(chromium: Any, server: str) -> Iterator[Any]:  # noqa: F811
    """A page with hashing.js loaded; ``page.requests`` lists every URL it asked for."""
    context = chromium.new_context()
    pg = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda req: requests.append(req.url))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{server}/test.html")
    pg.wait_for_function("() => globalThis.HashsvcHash !== undefined")
    pg.requests = requests  # type: ignore[attr-defined]
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


# JavaScript run in the page: base64 bytes -> File -> HashsvcHash.hashFile.
HASH_JS = """async ([b64, name, type]) => {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const file = new File([bytes], name, {type});
  const fractions = [];
  try {
    const line = await HashsvcHash.hashFile(file, name, (f) => fractions.push(f));
    return {line, fractions};
  } catch (e) {
    return {error: e instanceof Error ? e.message : String(e), isError: e instanceof Error};
  }
}"""

SUPPORTED_JS = """async ([b64, name, type]) => {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const file = new File([bytes], name, {type});
  const blob = new Blob([bytes]);
  const plain = (r) => ({ok: r.ok, reason: r.reason});
  return {
    bytes: plain(HashsvcHash.supported(bytes)),
    sync: plain(HashsvcHash.supported(file)),
    sniffed: plain(await HashsvcHash.supported(blob)),
    json: JSON.stringify(HashsvcHash.supported(file)),
  };
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_in_browser(page: Any, data: bytes, name: str, mime: str) -> dict[str, Any]:
    return page.evaluate(HASH_JS, [b64(data), name, mime])


# ------------------------------------------------------------------------------------------
# The pictures


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> Image.Image:
    return _load_photo(name)


def photo(name: str) -> Image.Image:
    """A photograph from scikit-image's data, loaded once per session (a copy)."""
    return _photo(name).copy()


def _with_alpha(img: Image.Image) -> Image.Image:
    """The picture with a radial alpha ramp: opaque centre, transparent corners."""
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    alpha = np.clip((1.3 - r) * 255, 0, 255).astype(np.uint8)
    out = img.convert("RGBA")
    out.putalpha(Image.fromarray(alpha))
    return out


#: How Pillow's exif_transpose turns a stored picture for each EXIF orientation; a camera
#: stores the upright picture turned by the inverse.
_SHOW = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
         6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}
_STORE = {**_SHOW, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _exif_encode(upright: Image.Image, orientation: int, fmt: str, **kw: Any) -> bytes:
    """``upright`` stored turned, with the EXIF orientation that shows it upright again."""
    stored = upright.transpose(_STORE[orientation])
    assert stored.transpose(_SHOW[orientation]).tobytes() == upright.tobytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **kw)


def _mosaic(width: int, height: int, seed: int) -> Image.Image:
    """A big picture with a camera photo's fine detail: photographs tiled at native size."""
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left"]
    rng = np.random.default_rng(seed)
    tiles = [photo(n) for n in names[:-1]]
    tiles.append(Image.open(SKIMAGE / f"{names[-1]}.png").convert("RGB"))
    out = Image.new("RGB", (width, height))
    y = 0
    while y < height:
        x = 0
        while x < width:
            tile = tiles[int(rng.integers(len(tiles)))]
            out.paste(tile, (x, y))
            x += tile.width
        y += 300
    return out


def _soft(texture: int = 0, amplitude: float = 0.0) -> Image.Image:
    """A blurry picture with few edges, plus a faint texture of ``texture``^2 blobs: PDQ
    quality 0, 38 and 64 for (0, 0), (6, 0.3) and (8, 0.3)."""
    small = np.random.default_rng(2).integers(60, 200, (3, 3, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((400, 300), Image.Resampling.BICUBIC),
                      dtype=np.float64)
    if texture:
        noise = np.random.default_rng(5).integers(0, 255, (texture, texture), dtype=np.uint8)
        blobs = np.asarray(Image.fromarray(noise).resize((400, 300), Image.Resampling.BICUBIC),
                           dtype=np.float64)
        base += amplitude * (blobs[..., None] - 128)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _png_gamma(gamma: float) -> Any:
    """PNG text chunks declaring a gAMA of ``gamma``."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", round(100000 / gamma).to_bytes(4, "big"))
    return info


def _lab_profile() -> bytes:
    """An ICC profile that would change every colour if it were applied."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def _shipped(name: str) -> bytes:
    """A file scikit-image ships, byte for byte (real JPEGs from real encoders)."""
    return (SKIMAGE / name).read_bytes()


def samples() -> list[tuple[str, str, str, str, Callable[[], bytes]]]:
    """(label, format group, source photo, mime, bytes maker) for every picture tested."""
    out: list[tuple[str, str, str, str, Callable[[], bytes]]] = []

    def add(label: str, group: str, source: str, mime: str, make: Callable[[], bytes]) -> None:
        out.append((label, group, source, mime, make))

    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        for q in (95, 75, 50):
            add(f"{name} q{q}.jpg", "jpeg", name, "image/jpeg",
                lambda name=name, q=q: encode(photo(name), "JPEG", quality=q))
    add("astronaut 3000x2000.jpg", "jpeg large", "astronaut", "image/jpeg",
        lambda: encode(photo("astronaut").resize((3000, 2000), Image.Resampling.LANCZOS),
                       "JPEG", quality=90))
    add("rocket 1600x1067.jpg", "jpeg large", "rocket", "image/jpeg",
        lambda: encode(photo("rocket").resize((1600, 1067), Image.Resampling.LANCZOS),
                       "JPEG", quality=85))
    add("coffee 1203x803 q80.jpg", "jpeg large", "coffee", "image/jpeg",
        lambda: encode(photo("coffee").resize((1203, 803), Image.Resampling.LANCZOS),
                       "JPEG", quality=80))
    add("coffee 4:4:4 q90.jpg", "jpeg", "coffee", "image/jpeg",
        lambda: encode(photo("coffee"), "JPEG", quality=90, subsampling=0))
    add("chelsea progressive.jpg", "jpeg", "chelsea", "image/jpeg",
        lambda: encode(photo("chelsea"), "JPEG", quality=85, progressive=True))
    add("camera grey.jpg", "jpeg", "camera", "image/jpeg",
        lambda: encode(photo("camera").convert("L"), "JPEG", quality=85))
    # EXIF orientation: stored turned, displayed upright (odd sizes: partial reduce blocks).
    for orientation in range(2, 9):
        add(f"coffee 1203x803 exif{orientation}.jpg", "exif", "coffee", "image/jpeg",
            lambda o=orientation: _exif_encode(
                photo("coffee").resize((1203, 803), Image.Resampling.LANCZOS), o, "JPEG",
                quality=85))
    add("chelsea exif6.jpg", "exif", "chelsea", "image/jpeg",
        lambda: _exif_encode(photo("chelsea"), 6, "JPEG", quality=90))
    add("rocket exif3.jpg", "exif", "rocket", "image/jpeg",
        lambda: _exif_encode(photo("rocket"), 3, "JPEG", quality=90))
    add("astronaut 1001x1001 exif3.jpg", "exif", "astronaut", "image/jpeg",
        lambda: _exif_encode(photo("astronaut").resize((1001, 1001), Image.Resampling.LANCZOS),
                             3, "JPEG", quality=85))
    add("chelsea exif6.png", "exif", "chelsea", "image/png",
        lambda: _exif_encode(photo("chelsea"), 6, "PNG"))
    add("chelsea exif8.webp", "exif", "chelsea", "image/webp",
        lambda: _exif_encode(photo("chelsea"), 8, "WEBP", quality=90))
    add("coffee 1203x803 exif5.webp", "exif", "coffee", "image/webp",
        lambda: _exif_encode(photo("coffee").resize((1203, 803), Image.Resampling.LANCZOS), 5,
                             "WEBP", quality=80))
    add("mosaic 2048x1536 q90.jpg", "jpeg large", "mosaic 1", "image/jpeg",
        lambda: encode(_mosaic(2048, 1536, 1), "JPEG", quality=90))
    add("mosaic 4032x3024 q85.jpg", "jpeg large", "mosaic 2", "image/jpeg",
        lambda: encode(_mosaic(4032, 3024, 2), "JPEG", quality=85))
    add("mosaic 4100x5000 exif8.jpg", "exif", "mosaic 3", "image/jpeg",
        lambda: _exif_encode(_mosaic(4100, 5000, 3), 8, "JPEG", quality=80))
    for name in ("rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"):
        add(name, "jpeg shipped", name.split(".")[0], "image/jpeg",
            lambda name=name: _shipped(name))
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        add(f"{name}.png", "png", name, "image/png",
            lambda name=name: encode(photo(name), "PNG"))
    add("chelsea alpha.png", "png alpha", "chelsea", "image/png",
        lambda: encode(_with_alpha(photo("chelsea")), "PNG"))
    add("astronaut alpha.png", "png alpha", "astronaut", "image/png",
        lambda: encode(_with_alpha(photo("astronaut")), "PNG"))  # reduced premultiplied
    add("mosaic 1800x1200 alpha.png", "png alpha", "mosaic 4", "image/png",
        lambda: encode(_with_alpha(_mosaic(1800, 1200, 4)), "PNG", compress_level=1))
    add("motorcycle_left.png", "png", "motorcycle", "image/png",
        lambda: _shipped("motorcycle_left.png"))
    # Colour management stays off, as in Pillow: a gAMA chunk and an ICC profile are ignored.
    add("chelsea gamma 1.0.png", "colour", "chelsea", "image/png",
        lambda: encode(photo("chelsea"), "PNG", pnginfo=_png_gamma(1.0)))
    add("chelsea LAB profile.png", "colour", "chelsea", "image/png",
        lambda: encode(photo("chelsea"), "PNG", icc_profile=_lab_profile()))
    add("chelsea LAB profile.jpg", "jpeg", "chelsea", "image/jpeg",
        lambda: encode(photo("chelsea"), "JPEG", quality=90, icc_profile=_lab_profile()))
    add("coffee palette.png", "png", "coffee", "image/png",
        lambda: encode(photo("coffee").convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    add("rocket 1100x734.png", "png", "rocket", "image/png",
        lambda: encode(photo("rocket").resize((1100, 734), Image.Resampling.LANCZOS), "PNG"))
    for name in ("chelsea", "astronaut", "rocket"):
        add(f"{name}.gif", "gif", name, "image/gif",
            lambda name=name: encode(photo(name).convert("P", palette=Image.Palette.ADAPTIVE),
                                     "GIF"))
    add("chelsea transparent.gif", "gif", "chelsea", "image/gif",
        lambda: encode(photo("chelsea").convert("P", palette=Image.Palette.ADAPTIVE), "GIF",
                       transparency=0))
    for name in ("coffee", "rocket", "chelsea"):
        add(f"{name} q80.webp", "webp", name, "image/webp",
            lambda name=name: encode(photo(name), "WEBP", quality=80))
    add("astronaut lossless.webp", "webp", "astronaut", "image/webp",
        lambda: encode(photo("astronaut"), "WEBP", lossless=True))
    add("chelsea alpha.webp", "webp", "chelsea", "image/webp",
        lambda: encode(_with_alpha(photo("chelsea")), "WEBP", lossless=True))
    for name in ("coffee", "camera"):
        add(f"{name}.bmp", "bmp", name, "image/bmp",
            lambda name=name: encode(photo(name), "BMP"))
    # A soft, featureless picture: PDQ quality far below min_pdq_quality, as Python says.
    add("soft.png", "png", "soft", "image/png", lambda: encode(_soft(), "PNG"))
    add("soft q90.jpg", "jpeg", "soft", "image/jpeg", lambda: encode(_soft(), "JPEG", quality=90))
    add("soft 38.png", "png", "soft 38", "image/png", lambda: encode(_soft(6, 0.3), "PNG"))
    add("soft 64.png", "png", "soft 64", "image/png", lambda: encode(_soft(8, 0.3), "PNG"))
    add("soft 64 q85.jpg", "jpeg", "soft 64", "image/jpeg",
        lambda: encode(_soft(8, 0.3), "JPEG", quality=85))
    add("noise.png", "png", "noise", "image/png", lambda: encode(noise_image(7), "PNG"))
    add("noise q85.jpg", "jpeg", "noise", "image/jpeg",
        lambda: encode(noise_image(7), "JPEG", quality=85))
    return out


# ------------------------------------------------------------------------------------------
# The tests


def test_browser_hashes_match_python(page: Any, server: str, tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"))
    distances: dict[str, list[int]] = defaultdict(list)
    by_group: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    rows: list[str] = []
    browser_pdq: list[tuple[str, str]] = []
    python_pdq: dict[str, str] = {}
    for label, group, source, mime, make in samples():
        data = make()
        ref = hash_bytes(data, with_variants=True).to_json()
        got = hash_in_browser(page, data, label, mime)
        assert "line" in got, f"{label}: {got}"
        line = got["line"]
        assert set(line) == LINE_KEYS, label
        assert line["file"] == label
        for key in ("sha256", "md5", "size", "format", "width", "height", "hash_format"):
            assert line[key] == ref[key], f"{label}: {key} {line[key]} != {ref[key]}"
        assert line["hashed_in"] == "browser"
        assert set(line["variants"]) == {"pdq"}
        assert set(line["variants"]["pdq"]) == set(DIHEDRAL_NAMES)
        assert line["variants"]["pdq"]["orig"] == line["hashes"]["pdq"]
        validate_line(dict(line))  # what POST /v1/cases/{id}/hashes accepts
        fractions = got["fractions"]
        assert fractions[-1] == 1 and fractions == sorted(fractions), label

        d = {alg: hamming_hex(line["hashes"][alg], ref["hashes"][alg])
             for alg in ("pdq", "phash", "dhash")}
        variant_d = {v: hamming_hex(line["variants"]["pdq"][v], ref["variants"]["pdq"][v])
                     for v in DIHEDRAL_NAMES}
        quality_d = abs(line["quality"]["pdq"] - ref["quality"]["pdq"])
        for alg, value in d.items():
            distances[alg].append(value)
            by_group[group][alg].append(value)
        distances["pdq variants"].extend(variant_d.values())
        by_group[group]["pdq variants"].extend(variant_d.values())
        distances["quality"].append(quality_d)
        rows.append(f"  {label:32s} {group:12s} pdq {d['pdq']:3d} phash {d['phash']:2d} "
                    f"dhash {d['dhash']:2d} variants max {max(variant_d.values()):3d} "
                    f"quality {line['quality']['pdq']:3d}/{ref['quality']['pdq']:3d}")

        assert d["pdq"] <= PDQ_BOUND, f"{label}: PDQ {d}"
        assert d["phash"] <= SMALL_BOUND and d["dhash"] <= SMALL_BOUND, f"{label}: {d}"
        for v, value in variant_d.items():
            assert value <= PDQ_BOUND, f"{label}: PDQ variant {v} at {value}"
        assert quality_d <= 10, label
        if group in EXACT_GROUPS:
            assert d == {"pdq": 0, "phash": 0, "dhash": 0}, f"{label}: {d}"
            assert all(variant_d[v] == 0 for v in DIHEDRAL_NAMES), label
            assert line["quality"] == ref["quality"], label
        # The Python bank entry matches the browser's line under the server's own rule, on
        # the perceptual hashes alone (the exact hashes match trivially).
        usable = [q >= settings.min_pdq_quality
                  for q in (line["quality"]["pdq"], ref["quality"]["pdq"])]
        assert usable[0] == usable[1], f"{label}: PDQ quality {line['quality']} {ref['quality']}"
        if usable[0]:
            assert decide(d, settings, True) == ("pdq", d["pdq"]), label
            browser_pdq.append((source, line["hashes"]["pdq"]))
            python_pdq.setdefault(source, ref["hashes"]["pdq"])

    # Unrelated pictures stay far apart.
    nearest_unrelated = min(hamming_hex(value, python_pdq[other])
                            for source, value in browser_pdq
                            for other in python_pdq if other != source)

    summary = ["", "browser vs Python, Hamming distance (mean / max):"]
    for alg in ("pdq", "pdq variants", "phash", "dhash", "quality"):
        values = distances[alg]
        summary.append(f"  {alg:13s} mean {statistics.mean(values):5.2f}  max {max(values):3d}"
                       f"  (n={len(values)})")
    summary.append("per format: pdq / pdq variants / phash / dhash (mean, max)")
    for group, algs in by_group.items():
        summary.append(f"  {group:12s} " + "  ".join(
            f"{alg} {statistics.mean(algs[alg]):.2f}/{max(algs[alg])}"
            for alg in ("pdq", "pdq variants", "phash", "dhash")) + f"  (n={len(algs['pdq'])})")
    summary.append(f"nearest unrelated photo: {nearest_unrelated} PDQ bits")
    print("\n".join(summary + ["per file:"] + rows))
    assert nearest_unrelated > UNRELATED_MIN

    # Nothing left the page: only the page and the script were ever requested.
    assert {url.split("?", 1)[0] for url in page.requests} <= {
        f"{server}/test.html", f"{server}/static/hashing.js"}
    assert page.errors == []


HEIC = (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x08free" +
        b"\x00" * 64)
MP4 = (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x00\x08free" +
       b"\x00" * 64)


def test_supported_refuses_heic_and_video(page: Any) -> None:
    heic = page.evaluate(SUPPORTED_JS, [b64(HEIC), "IMG_0001.HEIC", ""])
    for how in ("bytes", "sync", "sniffed"):
        assert heic[how]["ok"] is False, how
        assert "cannot read HEIC" in heic[how]["reason"], how
        assert "command-line tool" in heic[how]["reason"], how
    assert '"then"' not in heic["json"]
    # A HEIC photo renamed .jpg: the name misleads, the bytes do not.
    renamed = page.evaluate(SUPPORTED_JS, [b64(HEIC), "IMG_0001.jpg", "image/jpeg"])
    assert renamed["sniffed"]["ok"] is False and "HEIC" in renamed["sniffed"]["reason"]
    video = page.evaluate(SUPPORTED_JS, [b64(MP4), "clip.mp4", "video/mp4"])
    for how in ("bytes", "sync", "sniffed"):
        assert video[how]["ok"] is False, how
        assert "video" in video[how]["reason"], how
    jpeg = page.evaluate(SUPPORTED_JS, [b64(encode(noise_image(1), "JPEG")), "a.jpg",
                                        "image/jpeg"])
    assert all(jpeg[how]["ok"] is True for how in ("bytes", "sync", "sniffed"))
    tiff = page.evaluate(SUPPORTED_JS, [b64(encode(noise_image(1), "TIFF")), "scan.tif", ""])
    assert tiff["sniffed"]["ok"] is False and "TIFF" in tiff["sniffed"]["reason"]
    got = hash_in_browser(page, HEIC, "IMG_0001.HEIC", "image/heic")
    assert got.get("isError") and "HEIC" in got["error"]
    got = hash_in_browser(page, MP4, "clip.mp4", "video/mp4")
    assert got.get("isError") and "video" in got["error"].lower()


def test_corrupt_files_reject_with_readable_errors(page: Any) -> None:
    rng = np.random.default_rng(5)
    corrupt = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.integers(0, 256, 5000, np.uint8).tobytes()
    got = hash_in_browser(page, corrupt, "broken.jpg", "image/jpeg")
    assert got.get("isError"), got
    assert "JPEG" in got["error"] and "could not be read" in got["error"]
    assert "InvalidStateError" not in got["error"]
    garbage = b"just some text, not a picture\n" * 10
    got = hash_in_browser(page, garbage, "notes.txt", "text/plain")
    assert got.get("isError") and "not a picture" in got["error"]
    got = hash_in_browser(page, b"", "empty.jpg", "image/jpeg")
    assert got.get("isError") and "empty" in got["error"]


def test_sha256_without_webcrypto(chromium: Any, server: str) -> None:  # noqa: F811
    """Served over plain http to another host, a page has no crypto.subtle: the plain-JS
    SHA-256 takes over and agrees with Python's."""
    context = chromium.new_context()
    try:
        pg = context.new_page()
        pg.goto(f"{server}/test.html")
        pg.evaluate("() => Object.defineProperty(crypto, 'subtle', {get: () => undefined})")
        assert pg.evaluate("() => crypto.subtle") is None
        for size in (0, 55, 56, 64, 1000):
            data = bytes(range(256)) * 4
            data = encode(noise_image(size), "PNG") + data[:size]
            got = hash_in_browser(pg, data, "x.png", "image/png")
            ref = hash_bytes(data)
            assert (got["line"]["sha256"], got["line"]["md5"]) == (ref.sha256, ref.md5)
    finally:
        context.close()
