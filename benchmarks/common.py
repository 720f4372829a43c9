"""Test pictures shared by the benchmarks: camera-sized photographs made from packaged ones."""

from __future__ import annotations

from pathlib import Path

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
