"""Measure matching on a labelled set: precision and recall per transform, and the margins.

The labelled set is built from real photographs that scikit-image ships (nothing is downloaded):
every photograph is registered as the victim's (as a JPEG, hashed the way `hashsvc hash` hashes
it), and every transform below is applied to every photograph to make the copies a scan would
find. A copy is a true positive when it matches its own photograph, and a false positive when
it matches any other. The matcher is the real one (a store in a temporary folder, the bank
indexes, the decision rule, the second stage when enabled), so the figures are the product's.

    python benchmarks/eval_matching.py                 # print the table
    python benchmarks/eval_matching.py --write-docs    # also rewrite the table in docs/matching.md
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashsvc.demo import photo  # noqa: E402
from hashsvc.decode import HEIF_THUMBNAIL_MIN_SIDE, decode  # noqa: E402
from hashsvc.features import Features, encode_line, extract, extract_registered  # noqa: E402
from hashsvc.hashing import HashSet, exact_hashes, hash_picture  # noqa: E402
from hashsvc.matching import BankMatcher, pair_distances  # noqa: E402
from hashsvc.settings import Settings, load_settings  # noqa: E402
from hashsvc.store import Store  # noqa: E402

#: Real photographs shipped by scikit-image (greyscale ones are photographs too).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "hubble_deep_field",
          "immunohistochemistry", "coins", "moon", "brick", "grass", "gravel", "motorcycle")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "matching.md"
BEGIN, END = "<!-- eval:begin -->", "<!-- eval:end -->"


def load_photo(name: str) -> Image.Image:
    """A packaged photograph as RGB (the stereo pair's left image for 'motorcycle')."""
    if name == "motorcycle":
        import skimage.data

        return Image.fromarray(skimage.data.stereo_motorcycle()[0])
    return photo(name)


def encode(img: Image.Image, fmt: str = "JPEG", **kw: Any) -> bytes:
    """Image bytes."""
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def crop_sides(img: Image.Image, frac: float, off: float = 0.0) -> Image.Image:
    """Crop ``frac`` of the width and height away, split unevenly by ``off`` (-1..1)."""
    dx, dy = img.width * frac, img.height * frac
    left, top = dx * (1 + off) / 2, dy * (1 - off) / 2
    return img.crop((int(left), int(top), int(left + img.width - dx), int(top + img.height - dy)))


def screenshot(img: Image.Image) -> Image.Image:
    """The picture shown in a phone screenshot: status bar, black letterbox, controls."""
    w, h = 390, 844
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, w, 47), fill=(248, 248, 248))
    draw.text((24, 16), "9:41", fill=(0, 0, 0))
    draw.text((300, 16), "5G  87%", fill=(0, 0, 0))
    draw.rectangle((0, h - 83, w, h), fill=(28, 28, 30))
    draw.text((40, h - 50), "Share    Like    Edit    Delete", fill=(255, 255, 255))
    inner = img.copy()
    inner.thumbnail((w, h - 200))
    canvas.paste(inner, ((w - inner.width) // 2, (h - inner.height) // 2))
    return canvas


def caption_band(img: Image.Image) -> Image.Image:
    """A meme-style white band with text above the picture."""
    band = max(30, img.height // 6)
    canvas = Image.new("RGB", (img.width, img.height + band), (255, 255, 255))
    canvas.paste(img, (0, band))
    ImageDraw.Draw(canvas).text((10, band // 3), "look who it is lol", fill=(0, 0, 0))
    return canvas


def caption_overlay(img: Image.Image) -> Image.Image:
    """Text written over the bottom of the picture."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    for dy in range(3):
        draw.text((12, out.height - 30 + dy * 8), "you know who this is " * 3, fill=(255, 255, 255))
    return out


def exif_rotated(img: Image.Image) -> bytes:
    """Pixels stored turned, with the EXIF tag that turns them back (as phones save)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


Transform = Callable[[Image.Image], bytes]

#: Every transform family of the matching policy, by name.
TRANSFORMS: dict[str, Transform] = {
    "jpeg-q30": lambda im: encode(im, quality=30),
    "resize-50%": lambda im: encode(im.resize((im.width // 2, im.height // 2))),
    "thumbnail-160": lambda im: encode(im.resize((160, max(1, 160 * im.height // im.width)))),
    "upscale-200%": lambda im: encode(im.resize((im.width * 2, im.height * 2),
                                                Image.Resampling.BICUBIC), quality=85),
    "png": lambda im: encode(im, "PNG"),
    "webp": lambda im: encode(im, "WEBP", quality=70),
    "heic": lambda im: encode(im, "HEIF", quality=60),
    "avif": lambda im: encode(im, "AVIF", quality=60),
    "greyscale": lambda im: encode(ImageOps.grayscale(im)),
    "recolour-warm": lambda im: encode(Image.merge("RGB", [
        c.point(lambda v, k=k: min(255, int(v * k))) for c, k in zip(im.split(), (1.2, 1.0, .8))])),
    "brightness+30%": lambda im: encode(ImageEnhance.Brightness(im).enhance(1.3)),
    "contrast-30%": lambda im: encode(ImageEnhance.Contrast(im).enhance(0.7)),
    "rotate-90": lambda im: encode(im.transpose(Image.Transpose.ROTATE_90)),
    "rotate-180": lambda im: encode(im.transpose(Image.Transpose.ROTATE_180)),
    "rotate-270": lambda im: encode(im.transpose(Image.Transpose.ROTATE_270)),
    "exif-rotated": exif_rotated,
    "mirror": lambda im: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "mirror+rotate-90": lambda im: encode(im.transpose(Image.Transpose.TRANSPOSE)),
    "border-black": lambda im: encode(ImageOps.expand(im, max(8, im.width // 8), fill=(0, 0, 0))),
    "border-white": lambda im: encode(ImageOps.expand(im, (im.width // 20, im.height // 5),
                                                      fill=(255, 255, 255))),
    "screenshot": lambda im: encode(screenshot(im), "PNG"),
    "caption-band": lambda im: encode(caption_band(im)),
    "caption-overlay": lambda im: encode(caption_overlay(im)),
    "crop-5%": lambda im: encode(crop_sides(im, 0.10)),
    "crop-10%": lambda im: encode(crop_sides(im, 0.20, 0.5)),
    "crop-25%": lambda im: encode(crop_sides(im, 0.50, -0.3)),
    "crop-half": lambda im: encode(crop_sides(im, 1 - 0.5 ** 0.5, 0.4)),
    "crop-10%+q50": lambda im: encode(crop_sides(im, 0.20, -0.6).resize(
        (im.width // 2, im.height // 2)), quality=50),
}


def register_all(store: Store, features: bool,
                 photos: tuple[str, ...] = PHOTOS) -> dict[str, HashSet]:
    """Register every photograph (as a JPEG on the victim's device) under its own case."""
    out = {}
    for name in photos:
        data = encode(load_photo(name), quality=95)
        picture = decode(data)
        hs = hash_picture(picture, exact_hashes(data), len(data), with_variants=True)
        line = hs.to_json()
        if features:
            line["features"] = encode_line(extract_registered(picture.image))
        store.register(f"case-{name}", [line], features_consent=features)
        out[name] = hs
    return out


def scan_copy(data: bytes, features: bool) -> tuple[HashSet, Features | None]:
    """What a scan computes for one file: its hashes, and its local features if enabled."""
    picture = decode(data, heif_thumbnail_min_side=HEIF_THUMBNAIL_MIN_SIDE)
    hs = hash_picture(picture, exact_hashes(data), len(data))
    return hs, (extract(picture.image) if features else None)


def evaluate(settings: Settings) -> dict[str, Any]:
    """Run every transform of every photograph through the matcher; collect the figures."""
    store = Store.open(settings)
    registered = register_all(store, settings.features_stage)
    matcher = BankMatcher(store, settings, persist=False)
    ids = {d["case"]: i for i, d in matcher.store.image_details(range(1, 10_000)).items()}
    details = store.image_details(ids.values())
    rows: dict[str, dict[str, Any]] = {}
    by_features: dict[str, int] = defaultdict(int)
    for tname, transform in TRANSFORMS.items():
        hits = misses = false = 0
        true_pdq, nearest_other, missed = [], [], []
        scanned = [scan_copy(transform(load_photo(p)), settings.features_stage) for p in PHOTOS]
        copies = [hs for hs, _ in scanned]
        found = matcher.match_many(copies)
        second = [i for i, c in enumerate(found) if not c and scanned[i][1] is not None]
        stage_two = matcher.match_features([copies[i] for i in second],
                                           [scanned[i][1] for i in second])
        for i, cands in zip(second, stage_two):
            found[i] = cands
            by_features[tname] += bool(cands)
        for name, copy, cands in zip(PHOTOS, copies, found):
            cases = {c.case for c in cands}
            own = f"case-{name}"
            hits += own in cases
            if own not in cases:
                misses += 1
                missed.append(name)
            false += len(cases - {own})
            dist = {case: pair_distances(copy, details[iid]["hashes"])[0]
                    for case, iid in ids.items()}
            true_pdq.append(dist[own].get("pdq", 256))
            nearest_other.append(min(d.get("pdq", 256) for c, d in dist.items() if c != own))
        rows[tname] = {"copies": len(PHOTOS), "found": hits, "missed": missed,
                       "false_matches": false, "pdq_true_mean": float(np.mean(true_pdq)),
                       "pdq_true_max": int(max(true_pdq)),
                       "pdq_nearest_unrelated": int(min(nearest_other)),
                       "found_by_features": by_features[tname]}
    store.close()
    total = sum(r["copies"] for r in rows.values())
    found = sum(r["found"] for r in rows.values())
    false = sum(r["false_matches"] for r in rows.values())
    pairs = total * (len(PHOTOS) - 1)
    return {"photos": list(PHOTOS), "settings": settings.matching_summary(),
            "transforms": rows, "recall": found / total, "copies": total,
            "false_matches": false, "unrelated_pairs": pairs,
            "precision": found / (found + false) if found + false else 1.0,
            "registered": len(registered)}


def table(result: dict[str, Any]) -> str:
    """The results as a Markdown table with a summary line."""
    lines = ["| transform | found | recall | false matches | of which by local features "
             "| PDQ to own photo (mean / max) | PDQ to nearest unrelated | missed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["transforms"].items():
        lines.append(f"| {name} | {r['found']}/{r['copies']} | {r['found'] / r['copies']:.2f} "
                     f"| {r['false_matches']} | {r['found_by_features']} "
                     f"| {r['pdq_true_mean']:.1f} / {r['pdq_true_max']} "
                     f"| {r['pdq_nearest_unrelated']} | {', '.join(r['missed']) or '–'} |")
    lines.append("")
    lines.append(f"**All transforms: recall {result['recall']:.3f} ({result['copies']} copies), "
                 f"{result['false_matches']} false matches among {result['unrelated_pairs']} "
                 f"copy × unrelated-photo pairs, precision {result['precision']:.3f}.** "
                 f"Settings: `{json.dumps(result['settings'], sort_keys=True)}`.")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    """Replace the generated table in docs/matching.md."""
    doc = DOCS.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--no-features", action="store_true",
                        help="global hashes only (the second stage off)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate(load_settings(data_dir=tmp,
                                        features_stage=not args.no_features))
    text = table(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
