"""PDF documents as containers: the images drawn on their pages and the files attached to them.

A PDF that starts with ``%PDF-`` is walked like an archive (Link kind ``pdf``): every image
XObject in a page's resources (Form XObjects followed, a few levels deep) is a member named
``page-<n>/<resource name><ext>``, e.g. ``doc.pdf -> pdf:page-3/Im1.jpg``, and every embedded
file (``/EmbeddedFiles``) is a member named ``attachment/<name>``, walked further if it is itself
an archive or a PDF. An image drawn on several pages is one object and is reported once, at the
first page that draws it.

A JPEG (``/DCTDecode``) is handed on byte for byte, exactly as it was put into the document, so
its exact hashes can match the file it came from; a JPEG 2000 (``/JPXDecode``) likewise (as
``.jp2``; hashsvc records its hashes but does not decode JPEG 2000). Other images (raw pixels
behind Flate, LZW, run-length, CCITT) are converted to a PNG or TIFF by pypdf. JBIG2 images are
not decoded (pypdf would hand them to an external program through temporary files) and inline
images (``BI ... EI`` in content streams) are not looked at: content streams are never parsed.

Bounds: pypdf's own per-stream limits (75 MB decompressed, see ``pypdf.Configuration``), every
image or attachment at most ``max_file_bytes`` and charged to the top-level archive's
:class:`~hashsvc.sources.streams.Budget`, the usual expansion ratio, and at most
:data:`MAX_PDF_PAGES` pages and :data:`MAX_PDF_OBJECTS` images and attachments per document.
A document that cannot be parsed, or that is encrypted with a password (an empty user password
is tried, as a viewer does), is a Problem at stage ``pdf``; one image or attachment that cannot
be extracted is a Problem at stage ``pdf-image`` or ``pdf-attachment`` and the walk goes on.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any, cast

from hashsvc.errors import LimitExceeded
from hashsvc.locators import Link, Locator
from hashsvc.sources.base import FileInfo, Limits, Occurrences, Problem, Walk
from hashsvc.sources.streams import HEAD_BYTES, Budget, ByteStream, HeldRead, describe

MAX_PDF_PAGES = 100_000  # pages looked at in one document
MAX_PDF_OBJECTS = 100_000  # images and attachments taken from one document, together
MAX_FORM_DEPTH = 8  # Form XObjects inside Form XObjects

# Hostile and merely sloppy documents make pypdf log a warning per oddity; what matters becomes
# a Problem, so only its errors are let through.
logging.getLogger("pypdf").setLevel(logging.ERROR)

_RAW_KINDS = {"/DCTDecode": ".jpg", "/DCT": ".jpg", "/JPXDecode": ".jp2"}


def sniff_pdf(head: bytes) -> bool:
    """A PDF header at the very start (a PDF whose header comes later is read as a file)."""
    return head[:5] == b"%PDF-"


def walk_pdf(fileobj: ByteStream, locator: Locator, limits: Limits, depth: int,
             budget: Budget) -> Walk:
    """Walk a PDF (seekable input): its pages' images, then its attachments."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(cast(Any, fileobj), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:  # a broken header, an xref beyond repair, ...
        yield Problem(locator, "pdf", f"PDF not readable: {describe(exc)}")
        return
    if encrypted and not _decrypt_with_empty_password(reader):
        yield Problem(locator, "pdf", "encrypted PDF, not examined (it needs a password)")
        return
    state = _State(locator, limits, depth, budget)
    try:
        pages = reader.pages
        count = len(pages)
    except Exception as exc:
        yield Problem(locator, "pdf", f"PDF page tree not readable: {describe(exc)}")
        return
    if count > MAX_PDF_PAGES:
        yield Problem(locator, "pdf", f"PDF has {count} pages, more than {MAX_PDF_PAGES}; only "
                                      "the first ones are examined")
    for number in range(min(count, MAX_PDF_PAGES)):
        if state.stopped:
            break
        try:
            page = pages[number]
            images = list(_page_images(page))
        except Exception as exc:
            yield Problem(locator.child(Link("pdf", f"page-{number + 1}")), "pdf",
                          f"page not readable: {describe(exc)}")
            continue
        for name, xobj in images:
            yield from state.image(f"page-{number + 1}/{name}", xobj)
            if state.stopped:
                break
    if not state.stopped:
        yield from _attachments(reader, state)
    if budget.exhausted:
        yield from budget.problem_once(locator)


def _decrypt_with_empty_password(reader: Any) -> bool:
    """Open a PDF encrypted only against changes (empty user password), as viewers do."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # an unknown or unsupported security handler
        return False


def _page_images(page: Any) -> Iterator[tuple[str, Any]]:
    """(name, image XObject) of a page's resources, Form XObjects followed, without decoding."""
    stack: list[tuple[str, Any, int]] = [("", page, 0)]
    forms: set[int] = set()  # each Form XObject once: forms may share forms, or loop
    while stack:
        prefix, holder, level = stack.pop(0)
        resources = _resolve(holder.get("/Resources"))
        xobjects = _resolve(resources.get("/XObject")) if isinstance(resources, dict) else None
        if not isinstance(xobjects, dict):
            continue
        for key in sorted(xobjects, key=str):
            obj = _resolve(xobjects[key])
            if not isinstance(obj, dict):
                continue
            name = prefix + str(key).lstrip("/")
            subtype = obj.get("/Subtype")
            if subtype == "/Image":
                yield name, obj
            elif subtype == "/Form" and level < MAX_FORM_DEPTH and id(obj) not in forms:
                forms.add(id(obj))
                stack.append((name + "/", obj, level + 1))


def _resolve(obj: Any) -> Any:
    """An indirect object's target (pypdf resolves lazily)."""
    return obj.get_object() if hasattr(obj, "get_object") else obj


def _filters(stream: Any) -> list[str]:
    """The names of a stream's filters, in order."""
    value = _resolve(stream.get("/Filter"))
    if value is None:
        return []
    if isinstance(value, list):
        return [str(_resolve(v)) for v in value]
    return [str(value)]


class _State:
    """What the walk of one document shares: limits, budget, objects already taken."""

    def __init__(self, locator: Locator, limits: Limits, depth: int, budget: Budget) -> None:
        self.locator = locator
        self.limits = limits
        self.depth = depth
        self.budget = budget
        self.seen: set[tuple[int, int]] = set()
        self.names = Occurrences()  # two resources may come out under one name
        self.taken = 0
        self.stopped = False

    def image(self, name: str, xobj: Any) -> Walk:
        """One image XObject as a member, unless it was already taken from an earlier page."""
        ref = getattr(xobj, "indirect_reference", None)
        if ref is not None:
            ident = (ref.idnum, ref.generation)
            if ident in self.seen:
                return
            self.seen.add(ident)
        if not self._room():
            yield Problem(self.locator, "pdf", f"PDF has more than {MAX_PDF_OBJECTS} images and "
                                               "attachments; the rest are not examined")
            return
        try:
            data, ext = _image_bytes(xobj, self.limits)
        except Exception as exc:
            yield Problem(self.locator.child(Link("pdf", name)), "pdf-image", describe(exc))
            return
        if data is None:
            yield Problem(self.locator.child(Link("pdf", name)), "pdf-image", ext,
                          skipped=True, reason="pdf-jbig2")
            return
        yield from self.member(name + ext, data, _raw_length(xobj))

    def member(self, name: str, data: bytes, packed: int | None) -> Walk:
        """Hand extracted bytes on as a member (walked further if they are a container)."""
        from hashsvc.sources.archives import _member  # archives registers this module

        loc = self.locator.child(self.names.link("pdf", name))
        what = f"PDF member {loc.path}"
        try:
            if len(data) > self.limits.max_file_bytes:
                raise LimitExceeded(f"{what} is {len(data)} bytes, more than max_file_bytes="
                                    f"{self.limits.max_file_bytes}; not read")
            _check_ratio(what, len(data), packed, self.limits)
            self.budget.charge(len(data))
        except LimitExceeded as exc:
            if self.budget.exhausted:
                self.stopped = True
                yield from self.budget.problem_once(self.locator)
            else:
                yield Problem(loc, "read", str(exc))
            return
        held = HeldRead(data, what)
        rest = io.BytesIO(data)
        rest.seek(min(len(data), HEAD_BYTES))
        yield from _member(FileInfo(loc, len(data)), data[:HEAD_BYTES], held, rest, self.limits,
                           self.depth, self.budget)
        held.release()

    def _room(self) -> bool:
        """Count one more object; False (and stop) past the limit."""
        self.taken += 1
        if self.taken > MAX_PDF_OBJECTS:
            self.stopped = True
            return False
        return True


def _raw_length(stream: Any) -> int | None:
    """The stored (compressed) length of a stream, if pypdf kept its raw bytes."""
    raw = getattr(stream, "_data", None)
    return len(raw) if isinstance(raw, (bytes, bytearray)) else None


def _check_ratio(what: str, size: int, packed: int | None, limits: Limits) -> None:
    """The archive readers' expansion-ratio rule, applied to a decompressed stream."""
    if packed is None or size <= limits.ratio_floor_bytes:
        return
    if size > limits.max_ratio * max(packed, 1):
        raise LimitExceeded(f"{what} expands {size} bytes from {packed}, more than max_ratio="
                            f"{limits.max_ratio:g} (a decompression bomb?); not read")


def _image_bytes(xobj: Any, limits: Limits) -> tuple[bytes | None, str]:
    """An image XObject as a file: (bytes, extension), or (None, why) where it is not decoded."""
    filters = _filters(xobj)
    if "/JBIG2Decode" in filters:
        return None, "JBIG2 image in a PDF; not decoded"
    last = filters[-1] if filters else ""
    if last in _RAW_KINDS:
        # Only the filters before it are undone: the JPEG (or JPEG 2000) itself, byte for byte.
        return bytes(xobj.get_data()), _RAW_KINDS[last]
    width, height = int(_resolve(xobj.get("/Width", 0))), int(_resolve(xobj.get("/Height", 0)))
    if width <= 0 or height <= 0:
        raise ValueError(f"image with empty dimensions {width}x{height}")
    if width * height * 4 > limits.max_file_bytes:
        raise LimitExceeded(f"image of {width}x{height} pixels, larger than max_file_bytes="
                            f"{limits.max_file_bytes} when decoded; not read")
    from pypdf.generic._image_xobject import _xobj_to_image

    ext, data, _ = _xobj_to_image(xobj)
    return bytes(data), ext or ".png"


def _attachments(reader: Any, state: _State) -> Walk:
    """The document's embedded files, each a member ``attachment/<name>``."""
    try:
        entries = list(reader.attachment_list)
    except Exception as exc:
        yield Problem(state.locator, "pdf-attachment",
                      f"embedded files not readable: {describe(exc)}")
        return
    names: set[str] = set()
    for entry in entries:
        if state.stopped:
            return
        base = f"attachment/{entry.name}"
        name, n = base, 1
        while name in names:  # two attachments under one name: keep both apart
            n += 1
            name = f"{base}#{n}"
        names.add(name)
        if not state._room():
            yield Problem(state.locator, "pdf", f"PDF has more than {MAX_PDF_OBJECTS} images "
                                                "and attachments; the rest are not examined")
            return
        try:
            stream = getattr(entry, "_embedded_file", None)
            if stream is None:
                raise ValueError("pypdf gives no stream for this attachment")
            if "/JBIG2Decode" in _filters(stream):
                raise ValueError("attachment stream claims the JBIG2 filter; not decoded")
            data = bytes(stream.get_data())
        except Exception as exc:
            yield Problem(state.locator.child(Link("pdf", name)), "pdf-attachment",
                          describe(exc))
            continue
        yield from state.member(name, data, _raw_length(stream))
