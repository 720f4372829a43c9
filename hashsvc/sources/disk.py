"""Disk images (raw and E01): detection. Filled in by the disk-image reader."""

from __future__ import annotations

from hashsvc.sources.base import Limits, Source


def detect_disk_image(path: str, limits: Limits) -> Source | None:
    """The reader for a file that is a disk image, or None."""
    return None
