"""Test pictures shared by the benchmarks: camera-sized photographs made from packaged ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
from PIL import Image

#: Photographs that scikit-image ships as files (nothing is downloaded).
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "camera.png")


def camera_photo(i: int, rng: np.random.Generator, width: int, height: int,
                 noise: float) -> Image.Image:
    """The i-th distinct camera-sized picture: a random crop of a packaged photo, with grain."""
    with Image.open(Path(skimage.data.__file__).parent / PHOTOS[i % len(PHOTOS)]) as src:
        photo = src.convert("RGB")
    # A different crop of each photograph, so that repeated photographs give different files.
    w, h = photo.size
    cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    big = photo.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BICUBIC)
    # Upscaled photographs are far smoother than a camera's; sensor grain restores the entropy
    # (and so the file size and decoding work) of a real 12 MP picture.
    grain = rng.standard_normal((height, width, 3), dtype=np.float32) * noise
    return Image.fromarray(np.clip(np.asarray(big, dtype=np.float32) + grain, 0, 255)
                           .astype(np.uint8))


def add_run_options(parser: argparse.ArgumentParser, dump_help: str) -> None:
    """The options of the scan benchmarks: a reusable dump folder, repeats and JSON output."""
    parser.add_argument("--dump", type=Path, default=None, help=dump_help)
    parser.add_argument("--repeat", type=int, default=1,
                        help="scans per configuration; the fastest counts (a noisy machine)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the figures as JSON (to PATH, or stdout)")


def write_json(figures: dict[str, Any], json_path: str | None) -> None:
    """Write the figures as JSON: to stdout for '-', to a file for a path, not at all for None."""
    if json_path == "-":
        print(json.dumps(figures, indent=2))
    elif json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")

