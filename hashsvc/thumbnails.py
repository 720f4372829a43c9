"""Thumbnails of evidence files for the analyst's review, made on demand and never stored.

The picture is read again from the evidence source by its locator (inside the forensic
deployment, where the evidence is), decoded with the same bounded decoder as a scan, in a
decoding child under the same limits, reduced, and blurred unless the analyst asks to reveal it. Nothing is cached or written anywhere: the
bytes go straight into the response.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import ImageFilter

from hashsvc.decode import decode, sniff
from hashsvc.embedded import embedded_pictures
from hashsvc.errors import DecodeError, HashsvcError, InputError, NotFound
from hashsvc.isolation import (DecodeLimits, IsolatedPool, memory_limit_message,
                               start_method)
from hashsvc.locators import Link, Locator
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
    data, rest = read_located(scan.source, Locator.from_key(row.locator), settings)
    return render_thumbnail(data, rest, settings, reveal)


def render_thumbnail(data: bytes, rest: tuple[Link, ...], settings: Settings,
                     reveal: bool) -> bytes:
    """The thumbnail of a file's bytes (or of the picture embedded in it at ``rest``), made in
    a decoding child under the scans' decoding limits (hashsvc.isolation): a hostile file
    costs its preview (InputError), never the web process."""
    with IsolatedPool(1, _thumbnail, DecodeLimits.from_settings(settings),
                      method=start_method(), preload=("hashsvc.thumbnails",)) as pool:
        pool.submit([("thumbnail", (data, rest, settings.max_image_pixels, reveal))])
        (outcome,) = pool.collect()
    if outcome.failure is not None:
        raise InputError(f"no preview: {outcome.failure}")
    status, value = outcome.result
    if status == "not-found":
        raise NotFound(value)
    if status == "no-preview":
        raise InputError(f"no preview: {value}")
    return bytes(value)


def _thumbnail(job: tuple[bytes, tuple[Link, ...], int, bool]) -> tuple[str, Any]:
    """In a decoding child: ("ok", JPEG bytes), or ("not-found" | "no-preview", why)."""
    data, rest, max_pixels, reveal = job
    try:
        data = _embedded_part(data, rest)
        picture = decode(data, max_pixels)
    except NotFound as exc:
        return "not-found", str(exc)
    except DecodeError as exc:
        # decode() reports a MemoryError as a DecodeError caused by it: here, the child's limit
        return "no-preview", (memory_limit_message() if isinstance(exc.__cause__, MemoryError)
                              else str(exc))
    image = picture.image.copy()
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    if not reveal:
        image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=80)
    return "ok", out.getvalue()


def read_located(source: str, locator: Locator, settings: Settings
                 ) -> tuple[bytes, tuple[Link, ...]]:
    """The bytes of the file at ``locator`` in ``source``, read again from the evidence, and
    the links left over: those of a picture embedded in that file (an EXIF thumbnail), to be
    cut out of it again (:func:`_embedded_part`, in the decoding child).

    A plain folder reads only the top-level file concerned; other sources are walked to the
    file (a file source in its reading child, :mod:`hashsvc.sources.guarded`).
    """
    links = locator.links
    src = open_source(source, settings.limits)
    try:
        for end in range(len(links), 0, -1):
            target = Locator(links[:end]).key()
            for item in _candidates(src, Locator(links[:end])):
                if isinstance(item, Entry) and item.info.locator.key() == target:
                    return item.read(), links[end:]
    except HashsvcError as exc:
        raise InputError(f"the evidence file cannot be read again: {exc}") from exc
    finally:
        src.close()
    raise NotFound("the file is no longer in the evidence source")


def _candidates(src: Any, locator: Locator) -> Walk:
    """Items of the source that may hold ``locator``: as few as the source allows."""
    first = locator.links[0]
    reader = getattr(src, "inner", None) or src  # a folder's reader, read in its child
    if isinstance(reader, DirectorySource) and first.kind == "fs":
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
