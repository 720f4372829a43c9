"""Thumbnails of evidence files for the analyst's review, made on demand and never stored.

The picture is read again from the evidence source by its locator (inside the forensic
deployment, where the evidence is), decoded with the same bounded decoder as a scan, reduced,
and blurred unless the analyst asks to reveal it. Nothing is cached or written anywhere: the
bytes go straight into the response.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import ImageFilter

from hashsvc.decode import decode, sniff
from hashsvc.embedded import embedded_pictures
from hashsvc.errors import DecodeError, HashsvcError, InputError, NotFound
from hashsvc.locators import Locator
from hashsvc.settings import Settings
from hashsvc.sources import open_source
from hashsvc.sources.base import Entry, Walk
from hashsvc.sources.directory import DirectorySource, encode_relpath
from hashsvc.store import Store
from hashsvc.store.models import Scan, ScanFile

THUMBNAIL_SIDE = 256
BLUR_RADIUS = 12  # at 256 pixels: shapes and colours stay, nothing identifiable does


def evidence_thumbnail(store: Store, settings: Settings, scan: Scan, match_id: int,
                       reveal: bool) -> bytes:
    """A JPEG thumbnail of a scan's candidate ``match_id``; blurred unless ``reveal``."""
    from hashsvc.review import matched_file_ids

    if match_id not in set(matched_file_ids(store, scan.id)):
        raise NotFound(f"no candidate {match_id} in scan {scan.id}")
    with store.sessions() as session:
        row = session.get(ScanFile, match_id)
    assert row is not None
    data = read_located(scan.source, Locator.from_key(row.locator), settings)
    try:
        picture = decode(data, settings.max_image_pixels)
    except DecodeError as exc:
        raise InputError(f"no preview: {exc}") from exc
    image = picture.image.copy()
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    if not reveal:
        image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


def read_located(source: str, locator: Locator, settings: Settings) -> bytes:
    """The bytes of the file at ``locator`` in ``source``, read again from the evidence.

    A picture embedded in a file (an EXIF thumbnail) is cut out of its file again. A plain
    folder reads only the top-level file concerned; other sources are walked to the file.
    """
    links = locator.links
    src = open_source(source, settings.limits)
    try:
        for end in range(len(links), 0, -1):
            target = Locator(links[:end]).key()
            for item in _candidates(src, Locator(links[:end])):
                if isinstance(item, Entry) and item.info.locator.key() == target:
                    return _embedded_part(item.read(), links[end:])
    except HashsvcError as exc:
        raise InputError(f"the evidence file cannot be read again: {exc}") from exc
    finally:
        src.close()
    raise NotFound("the file is no longer in the evidence source")


def _candidates(src: Any, locator: Locator) -> Walk:
    """Items of the source that may hold ``locator``: as few as the source allows."""
    first = locator.links[0]
    if isinstance(src, DirectorySource) and first.kind == "fs":
        return src.walk_units([encode_relpath(first.name)])
    return src.walk()


def _embedded_part(data: bytes, rest: tuple[Any, ...]) -> bytes:
    """Follow embedded-picture links (kind, name) from a file's bytes."""
    for link in rest:
        fmt = sniff(data[:64])
        found = [blob for kind, name, blob in embedded_pictures(data, fmt or "")
                 if (kind, name) == (link.kind, link.name)]
        if fmt is None or not found:
            raise NotFound(f"no embedded picture {link.kind}:{link.name} any more")
        data = found[0]
    return data
