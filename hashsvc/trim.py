"""Finding the picture inside a frame: uniform borders, letterboxing and phone screenshots.

A copy of a photo is often framed: padded with a uniform border, letterboxed in a screenshot
between a status bar and the phone's controls, or given a caption band. Global hashes of the
framed copy are far from the photo's, so the scanner (and registration) also hashes the
*content box*: the longest run of rows, then of columns, that are not uniform, where uniform
bands separate it from the rest. The box is an extra variant; the whole picture is always
hashed too, so trimming can add matches but never lose one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: A row or column is uniform when its pixels' spread stays below this (0-255 scale). JPEG
#: ringing in a flat border stays well below it; a row of a photograph almost never does.
UNIFORM_SPREAD = 10.0
#: The content box must keep at least this fraction of each side.
MIN_KEEP = 0.25
#: Trimming less than this fraction of the larger side changes nothing worth a variant.
MIN_TRIM = 0.02


#: The frame is looked for on a copy at most this many pixels on its longer side: box
#: reduction averages away JPEG noise, and it keeps the search under a millisecond.
WORK_SIDE = 160


def _uniform(lines: np.ndarray) -> np.ndarray:
    """Which rows of a (rows, pixels) greyscale array are uniform."""
    return (lines.max(axis=1) - lines.min(axis=1)) < UNIFORM_SPREAD


def _content_run(uniform: np.ndarray) -> tuple[int, int] | None:
    """The longest run of non-uniform lines as [start, stop), or None if there is none."""
    best: tuple[int, int] | None = None
    start = None
    for i, flat in enumerate(np.append(uniform, True)):
        if not flat and start is None:
            start = i
        elif flat and start is not None:
            if best is None or i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def content_box(img: Image.Image) -> tuple[int, int, int, int] | None:
    """The (left, top, right, bottom) box of the framed picture, or None if there is no frame."""
    scale = max(1.0, max(img.size) / WORK_SIDE)
    small = img.convert("L").resize((max(1, round(img.width / scale)),
                                     max(1, round(img.height / scale))), Image.Resampling.BOX)
    grey = np.asarray(small, dtype=np.int16)
    height, width = grey.shape
    rows = _content_run(_uniform(grey))
    if rows is None:
        return None
    top, bottom = rows
    cols = _content_run(_uniform(grey[top:bottom].T))
    if cols is None:
        return None
    left, right = cols
    if (bottom - top) < MIN_KEEP * height or (right - left) < MIN_KEEP * width:
        return None
    if max(top, height - bottom, left, width - right) < MIN_TRIM * max(height, width):
        return None
    full = np.asarray(img.convert("L"), dtype=np.int16)
    margin = int(np.ceil(scale)) + 1
    return (_refine(full, round(left * scale), margin, axis=1, forward=True) if left else 0,
            _refine(full, round(top * scale), margin, axis=0, forward=True) if top else 0,
            _refine(full, round(right * scale), margin, axis=1, forward=False)
            if right < width else img.width,
            _refine(full, round(bottom * scale), margin, axis=0, forward=False)
            if bottom < height else img.height)


def _refine(full: np.ndarray, edge: int, margin: int, axis: int, forward: bool) -> int:
    """The exact full-resolution position of a frame edge found on the reduced copy."""
    lines = full if axis == 0 else full.T
    lo, hi = max(0, edge - margin), min(len(lines), edge + margin + 1)
    window = lines[lo:hi, margin:-margin] if lines.shape[1] > 4 * margin else lines[lo:hi]
    spread = (np.percentile(window, 95, axis=1) - np.percentile(window, 5, axis=1))
    content = np.flatnonzero(spread >= UNIFORM_SPREAD)
    if content.size == 0:
        return edge
    # The first content line going inwards from the frame: the box starts (or ends) there.
    return lo + int(content[0]) if forward else lo + int(content[-1]) + 1


def trim(img: Image.Image) -> Image.Image | None:
    """The picture inside its frame, or None when there is no frame to remove."""
    box = content_box(img)
    return img.crop(box) if box is not None else None
