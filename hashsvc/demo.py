"""``hashsvc demo``: a sample bank and a sample seized-phone dump from packaged photographs.

The photographs come from scikit-image's bundled data (nothing is downloaded). Four are the
"victim's" images, registered from their hash lines only; the dump holds altered copies of them
(resized, recompressed, converted, rotated, mirrored, inside a zip and a tar.gz) among unrelated
photographs and hostile files. The demo checks the report against what it planted.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from hashsvc.settings import load_settings

VICTIM = ("astronaut", "coffee", "chelsea", "rocket")
UNRELATED = ("camera", "hubble_deep_field", "retina", "immunohistochemistry", "gravel",
             "coins", "moon", "page", "brick", "grass")


def photo(name: str) -> Image.Image:
    """A photograph shipped with scikit-image, as an RGB image."""
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    """Image bytes in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def build_dump(root: Path) -> dict[str, str]:
    """Write the sample dump under ``root``; returns planted copy path → victim photo name."""
    planted: dict[str, str] = {}
    dcim = root / "DCIM" / "100APPLE"
    dcim.mkdir(parents=True)
    copies: dict[str, tuple[str, Callable[[Image.Image], bytes]]] = {
        "DCIM/100APPLE/IMG_0001.JPG": ("astronaut", lambda im: encode(
            im.resize((im.width * 3 // 5, im.height * 3 // 5)), "JPEG", quality=70)),
        "DCIM/100APPLE/IMG_0002.PNG": ("coffee", lambda im: encode(im, "PNG")),
        "DCIM/100APPLE/IMG_0003.JPG": ("chelsea", lambda im: encode(
            im.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=85)),
        "DCIM/100APPLE/holiday.webp": ("rocket", lambda im: encode(im, "WEBP", quality=80)),
        # A crop keeping the central half of the picture: only the local-feature stage finds it.
        "DCIM/100APPLE/IMG_0004.JPG": ("coffee", lambda im: encode(im.crop(
            (im.width // 5, im.height // 6, im.width * 4 // 5, im.height * 5 // 6)), "JPEG")),
    }
    for rel, (name, make) in copies.items():
        (root / rel).write_bytes(make(photo(name)))
        planted[rel] = name
    for i, name in enumerate(UNRELATED):
        (dcim / f"IMG_{100 + i:04d}.JPG").write_bytes(encode(photo(name), "JPEG", quality=90))
    (dcim / "IMG_0099.JPG").write_bytes(encode(photo("camera"), "JPEG")[:5000])  # truncated
    (root / "notes.txt").write_text("shopping list\n")
    (root / "fake.jpg").write_bytes(np.random.default_rng(7).bytes(4096))
    backup = root / "Backup"
    backup.mkdir()
    with zipfile.ZipFile(backup / "whatsapp.zip", "w") as zf:
        zf.writestr("Media/IMG-20240101-WA0001.jpg",
                    encode(photo("rocket").resize((400, 266)), "JPEG", quality=60))
        zf.writestr("Media/IMG-20240101-WA0002.jpg", encode(photo("coins"), "JPEG"))
        zf.writestr("../../escape.jpg", encode(photo("brick"), "JPEG"))
    planted["Backup/whatsapp.zip/Media/IMG-20240101-WA0001.jpg"] = "rocket"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        data = encode(photo("astronaut").transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG")
        info = tarfile.TarInfo("sdcard/Pictures/mirror.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (backup / "sdcard.tar.gz").write_bytes(inner.getvalue())
    planted["Backup/sdcard.tar.gz/sdcard/Pictures/mirror.jpg"] = "astronaut"
    return planted


def run_demo(workdir: Path | None = None) -> int:
    """Build, register, scan and print the summary; returns the exit status."""
    from hashsvc.cli import hash_line, summary_text
    from hashsvc.pipeline import run_scan
    from hashsvc.report import build_report, write_report
    from hashsvc.store import Store

    root = Path(workdir or tempfile.mkdtemp(prefix="hashsvc-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(data_dir=str(root / "data"))
    store = Store.open(settings)
    victim = root / "victim-device"
    victim.mkdir(exist_ok=True)
    lines = []
    for name in VICTIM:
        path = victim / f"{name}.jpg"
        path.write_bytes(encode(photo(name), "JPEG", quality=95))
        lines.append(hash_line(str(path), True, settings.max_image_pixels, with_features=True))
    (root / "hashes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # The demo victim consented to keeping local features, so cropped copies are found too.
    store.register("DEMO-0001", lines, features_consent=True)
    print(f"registered {len(lines)} images (hashes and, with consent, local features) "
          "under case DEMO-0001")

    dump = root / "phone-dump"
    if dump.exists():
        import shutil

        shutil.rmtree(dump)
    planted = build_dump(dump)
    scan_id = run_scan(store, settings, str(dump), "demo phone dump")
    report = build_report(store, scan_id)
    write_report(report, str(root / "report.json"))
    print(summary_text(report))
    found = {m["path"] for m in report["matches"]}
    missed = sorted(set(planted) - found)
    false = sorted(found - set(planted))
    print(f"planted copies found: {len(set(planted) & found)} of {len(planted)}; "
          f"unrelated files matched: {len(false)}")
    print(f"report: {root / 'report.json'}")
    for path in missed:
        print(f"  MISSED {path}")
    for path in false:
        print(f"  FALSE MATCH {path}")
    store.close()
    return 0 if not missed and not false else 1
