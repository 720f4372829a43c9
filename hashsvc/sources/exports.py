"""What cloud exports and phone extractions say about their files: names, times, original paths.

A Google Takeout export keeps each photo's original name and times in a JSON sidecar beside it;
an iCloud Photos export lists them in ``Photo Details*.csv``; a Cellebrite UFDR maps the files it
stores under ``files/...`` to the device paths they were extracted from in ``report.xml``. These
facts go onto the member's link as attributes (part of its locator, so reports show them):

* Takeout: ``original_name`` (the sidecar's ``title``), ``taken_time`` (``photoTakenTime``),
  ``created_time`` (``creationTime``, when the item was created in Google Photos), both ISO 8601
  UTC, and ``sidecar`` (the sidecar's file name);
* iCloud: ``original_creation_date`` (ISO 8601 where the date parses, else as written),
  ``deleted`` and ``hidden`` ("true"/"false");
* UFDR: ``original_path``, and ``deleted`` ("true"/"false") or ``deleted_state`` (any other
  state Cellebrite records).

:func:`zip_annotations` is called by the zip reader for every zip (it looks at member names only
and reads nothing unless they show an export); the folder reader of ``extractions.py`` calls
:class:`FolderAnnotations`. Sidecars, CSVs and reports are scanned as ordinary files as well.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable
from datetime import datetime, timezone
from typing import IO, Any
from xml.etree import ElementTree

from hashsvc.locators import Locator
from hashsvc.sources.base import EvidenceSeen, Item, Limits, Problem
from hashsvc.sources.streams import Budget, ByteStream, describe

Attrs = tuple[tuple[str, str], ...]
AttrMap = dict[str, dict[str, str]]

MAX_SIDECAR_BYTES = 1024 * 1024  # a Takeout sidecar is a few kilobytes
MAX_CSV_BYTES = 64 * 1024 * 1024  # an iCloud CSV lists a thousand photos in about 100 KB
MAX_TITLE_SCAN = 10_000  # sidecars parsed per folder to match renamed files by their title
MAX_ATTR_CHARS = 1024  # an attribute value taken from the evidence, at most
#: Sidecar names Takeout may have cut short at its 51-character limit (".json" included);
#: shorter ones need no cutting, and the margin above 51 allows for other exporters' limits.
MIN_CUT_SIDECAR, MAX_CUT_SIDECAR = 40, 64

# --- Google Takeout -------------------------------------------------------------------------------

#: Suffixes Google Photos gives an edited copy, which shares the original's sidecar.
EDITED_SUFFIXES = ("-edited",)
_DUPLICATE = re.compile(r"^(?P<stem>.*?)(?P<n>\(\d+\))(?P<ext>\.[^.()]*)?$")
_SUPPLEMENTAL = ".supplemental-metadata"


def sidecar_candidates(media: str) -> list[str]:
    """The sidecar names Takeout gives a media file, most specific first."""
    names = [f"{media}{_SUPPLEMENTAL}.json", f"{media}.json"]
    dup = _DUPLICATE.match(media)
    if dup:  # IMG_1(1).jpg -> IMG_1.jpg.supplemental-metadata(1).json or IMG_1.jpg(1).json
        orig = dup["stem"] + (dup["ext"] or "")
        names += [f"{orig}{_SUPPLEMENTAL}{dup['n']}.json", f"{orig}{dup['n']}.json"]
    stem, ext = posixpath.splitext(media)
    for suffix in EDITED_SUFFIXES:
        if stem.lower().endswith(suffix):
            orig = stem[: -len(suffix)] + ext
            names += [f"{orig}{_SUPPLEMENTAL}.json", f"{orig}.json"]
    return names


def match_sidecars(names: Iterable[str]) -> dict[str, str]:
    """Media file name -> sidecar name, for the file names of one folder.

    By Takeout's naming (``<name>.supplemental-metadata.json``, older ``<name>.json``,
    duplicates' ``(n)`` moved behind the extension, ``-edited`` copies sharing the original's),
    then by the prefix a sidecar name cut at Takeout's length limit keeps.
    """
    names = list(names)
    jsons = {n for n in names if n.lower().endswith(".json")}
    if not jsons:
        return {}
    # Sidecar names cut short at Takeout's 51-character limit, without ".json": only names of
    # that length can be cut ones, which keeps the search below linear in the number of files
    # (an attacker's folder of thousands of long names sharing a prefix cost quadratic time).
    cut: dict[str, str] = {}
    for j in sorted(jsons):
        if MIN_CUT_SIDECAR <= len(j) <= MAX_CUT_SIDECAR:
            cut.setdefault(j[:-5], j)
    longest = max(map(len, cut), default=0)
    out: dict[str, str] = {}
    for media in names:
        if media in jsons:
            continue
        found = next((c for c in sidecar_candidates(media) if c in jsons), None)
        if found is None and cut:
            # The longest cut name that begins the full sidecar name: at most a few dozen
            # lookups per file, whatever the folder holds.
            full = media + _SUPPLEMENTAL
            for length in range(min(len(full), longest), MIN_CUT_SIDECAR - 6, -1):
                found = cut.get(full[:length])
                if found is not None:
                    break
        if found is not None:
            out[media] = found
    return out


def parse_sidecar(raw: bytes) -> dict[str, str] | None:
    """The original name and times a Takeout sidecar records, or None if it is not one."""
    if len(raw) > MAX_SIDECAR_BYTES:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    out: dict[str, str] = {}
    title = doc.get("title")
    if isinstance(title, str) and title:
        out["original_name"] = title[:MAX_ATTR_CHARS]
    for key, attr in (("photoTakenTime", "taken_time"), ("creationTime", "created_time")):
        when = _epoch_iso(doc.get(key))
        if when is not None:
            out[attr] = when
    return out or None


def _epoch_iso(value: Any) -> str | None:
    """ISO 8601 UTC of a Takeout time object ``{"timestamp": "1577836800", ...}``."""
    if not isinstance(value, dict):
        return None
    try:
        seconds = int(str(value.get("timestamp", "")).strip())
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def takeout_attrs(names: list[str], read: Callable[[str], bytes | None]) -> tuple[AttrMap, int]:
    """Attributes of the media files of one folder from their sidecars; and sidecars read.

    ``read`` returns a sidecar's bytes, or None where it cannot (too large, unreadable).
    Files no sidecar is named for are matched by the ``title`` of the sidecars left over.
    """
    pairs = match_sidecars(names)
    out: AttrMap = {}
    parsed: dict[str, dict[str, str] | None] = {}

    def sidecar(name: str) -> dict[str, str] | None:
        if name not in parsed:
            raw = read(name)
            parsed[name] = parse_sidecar(raw) if raw is not None else None
        return parsed[name]

    for media, name in pairs.items():
        meta = sidecar(name)
        if meta is not None:
            out[media] = {**meta, "sidecar": name}
    jsons = [n for n in names if n.lower().endswith(".json")]
    json_set, used = set(jsons), set(pairs.values())
    left = [n for n in names if n not in out and n not in json_set]
    unused = [j for j in jsons if j not in used][:MAX_TITLE_SCAN]
    if left and unused:
        by_title: dict[str, list[str]] = {}
        for name in unused:
            meta = sidecar(name)
            if meta is not None and "original_name" in meta:
                by_title.setdefault(meta["original_name"], []).append(name)
        for media in left:
            found = by_title.get(media, [])
            if len(found) == 1:
                meta = parsed[found[0]] or {}
                out[media] = {**meta, "sidecar": found[0]}
    return out, sum(1 for v in parsed.values() if v is not None)


def looks_like_takeout(names: Iterable[str]) -> bool:
    """Member names of a Takeout archive: under ``Takeout/``, with JSON sidecars."""
    for name in names:
        norm = name.replace("\\", "/").lstrip("/")
        if norm.startswith("Takeout/") and norm.lower().endswith(".json"):
            return True
    return False


# --- iCloud Photos -------------------------------------------------------------------------------

_ICLOUD_CSV = re.compile(r"^photo details(?:[- ]?\(?\d+\)?)?\.csv$", re.IGNORECASE)
_APPLE_DATE = re.compile(r"^\s*\w+\s+(?P<month>[A-Za-z]+)\s+(?P<day>\d{1,2}),\s*(?P<year>\d{4})"
                         r"\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>AM|PM)"
                         r"\s*(?:GMT|UTC)\s*$", re.IGNORECASE)
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"))}
_YES_NO = {"yes": "true", "no": "false", "true": "true", "false": "false"}


def is_icloud_csv(name: str) -> bool:
    """An iCloud Photos export's list of photos (``Photo Details.csv``, ``Photo Details-1.csv``)."""
    if not name[-4:].lower() == ".csv":  # the common case, cheaply: any zip's every member
        return False
    return bool(_ICLOUD_CSV.match(posixpath.basename(name.replace("\\", "/"))))


def apple_date(text: str) -> str:
    """ISO 8601 of an iCloud export date ("Tuesday October 1,2019 5:20 PM GMT"), else the text."""
    found = _APPLE_DATE.match(text)
    if found:
        month = _MONTHS.get(found["month"].lower())
        hour = int(found["hour"]) % 12 + (12 if found["ampm"].upper() == "PM" else 0)
        try:
            if month is not None:
                return datetime(int(found["year"]), month, int(found["day"]), hour,
                                int(found["minute"]), tzinfo=timezone.utc).isoformat()
        except ValueError:
            pass
    return text.strip()[:64]


def parse_icloud_csv(raw: bytes) -> AttrMap:
    """Photo name -> attributes from one ``Photo Details`` CSV (empty if it is not one)."""
    if len(raw) > MAX_CSV_BYTES:
        return {}
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8-sig", errors="replace")))
    out: AttrMap = {}
    try:
        # Reading the header row can fail too (a stray carriage return, a NUL).
        if not rows.fieldnames or "imgName" not in rows.fieldnames:
            return {}
        for row in rows:
            name = (row.get("imgName") or "").strip()
            if not name:
                continue
            attrs: dict[str, str] = {}
            created = (row.get("originalCreationDate") or "").strip()
            if created:
                attrs["original_creation_date"] = apple_date(created)
            for column in ("deleted", "hidden"):
                flag = _YES_NO.get((row.get(column) or "").strip().lower())
                if flag is not None:
                    attrs[column] = flag
            out[name[:MAX_ATTR_CHARS]] = attrs
    except csv.Error:
        pass  # keep the rows before the damage
    return out


def merge_icloud(maps: Iterable[AttrMap]) -> AttrMap:
    """One name -> attributes map from several CSVs; a name listed differently twice is dropped."""
    out: AttrMap = {}
    clash: set[str] = set()
    for one in maps:
        for name, attrs in one.items():
            if name in out and out[name] != attrs:
                clash.add(name)
            out.setdefault(name, attrs)
    for name in clash:
        del out[name]
    return out


# --- Cellebrite UFDR -----------------------------------------------------------------------------

UFDR_REPORT_NAMES = ("report.xml", "ufedreport.xml")
MAX_UFDR_DEPTH = 256  # Cellebrite's reports nest a dozen deep; deeper is not a report
_DELETED_STATES = {"deleted": "true", "intact": "false"}


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def ufdr_key(path: str) -> str:
    """The form a UFDR 'Local Path' and a zip member name are compared in."""
    norm = path.replace("\\", "/").strip()
    while norm.startswith("./"):
        norm = norm[2:]
    return norm.lstrip("/")


def parse_ufdr_report(stream: Any, named_ufdr: bool) -> tuple[dict[str, Any], AttrMap] | None:
    """The project's attributes and local path -> attributes from a UFDR ``report.xml``.

    None if the XML is not a Cellebrite report (its root is not a ``project`` in a Cellebrite
    namespace, or in any namespace when the archive is named ``.ufdr``). The report is read as a
    stream and every element is dropped once read (a ``file`` element's Local Path is kept as
    it goes by), so its size costs time, not memory, however its elements nest.
    """
    out: AttrMap = {}
    project: dict[str, Any] = {}
    stack: list[ElementTree.Element] = []
    locals_: list[str | None] = []  # the Local Path of each open 'file' element, innermost last
    for event, elem in ElementTree.iterparse(stream, events=("start", "end")):
        tag = _local(elem.tag)
        if event == "start":
            if not stack:
                namespace = elem.tag[1:].split("}", 1)[0] if elem.tag.startswith("{") else ""
                if tag != "project" or not ("cellebrite" in namespace.lower() or named_ufdr):
                    return None
                project = {k: v[:MAX_ATTR_CHARS] for k, v in elem.attrib.items()
                           if k in ("name", "id", "reportVersion", "containsGarbage")}
            stack.append(elem)
            if len(stack) > MAX_UFDR_DEPTH:
                raise ValueError(f"report.xml nests elements more than {MAX_UFDR_DEPTH} deep")
            if tag == "file":
                locals_.append(None)
            continue
        stack.pop()
        if tag == "item" and locals_ and locals_[-1] is None \
                and (elem.get("name") or "").lower() == "local path":
            locals_[-1] = (elem.text or "").strip() or None
        elif tag == "file":
            local = locals_.pop()
            original = elem.get("path")
            if local and original:
                attrs = {"original_path": original[:MAX_ATTR_CHARS]}
                state = (elem.get("deleted") or "").strip()
                if state:
                    flag = _DELETED_STATES.get(state.lower())
                    if flag is not None:
                        attrs["deleted"] = flag
                    else:
                        attrs["deleted_state"] = state[:32]
                out.setdefault(ufdr_key(local), attrs)
        # Nothing is kept: each element is emptied and taken from its parent once it ends, so
        # a parent holds one child at a time (removing it is cheap).
        elem.clear()
        if stack:
            stack[-1].remove(elem)
    return project, out


# --- zips ----------------------------------------------------------------------------------------

Annotating = Generator[Item, None, dict[str, Attrs]]


def zip_annotations(fileobj: IO[bytes], infos: list[zipfile.ZipInfo], locator: Locator,
                    limits: Limits, budget: Budget) -> Annotating:
    """Member name -> link attributes for a zip that is an export; yields its EvidenceSeen.

    Returns {} for an ordinary zip, having looked at the names only.
    """
    names = [info.orig_filename for info in infos]
    report = _ufdr_report(infos)
    takeout = looks_like_takeout(names)
    csvs = [info for info in infos if is_icloud_csv(info.orig_filename)]
    if report is None and not takeout and not csvs:
        return {}
    merged: dict[str, dict[str, str]] = {}
    kinds: list[str] = []
    details: dict[str, Any] = {}
    reader = _ZipReader(fileobj, infos, locator, limits, budget)
    if report is not None:
        try:
            found = _zip_ufdr(reader, report, locator)
        except Exception as exc:  # a damaged report: the files are still scanned, unnamed
            yield Problem(locator, "ufdr-report", f"{report.orig_filename}: {describe(exc)}")
            found = None
        if found is not None:
            kinds.append("cellebrite-ufdr")
            details["cellebrite-ufdr"] = found[1]
            _merge(merged, found[0])
    if takeout:
        attrs, read = _zip_takeout(reader, names)
        kinds.append("google-takeout")
        details["google-takeout"] = {"sidecars_read": read, "files_with_metadata": len(attrs)}
        _merge(merged, attrs)
    if csvs:
        attrs, listed = _zip_icloud(reader, names, csvs)
        if listed:
            kinds.append("icloud-photos")
            details["icloud-photos"] = {"csv_files": [c.orig_filename for c in csvs],
                                        "photos_listed": listed,
                                        "files_with_metadata": len(attrs)}
            _merge(merged, attrs)
    yield from reader.problems
    if kinds:
        yield EvidenceSeen(locator, "+".join(kinds), details=details)
    return {name: tuple(sorted(attrs.items())) for name, attrs in merged.items() if attrs}


def _merge(into: dict[str, dict[str, str]], more: AttrMap) -> None:
    """Add attributes per member; what an earlier kind said stays."""
    for name, attrs in more.items():
        into[name] = {**attrs, **into.get(name, {})}


class _ZipReader:
    """Small members of the zip being walked, read whole, bounded and charged to the budget."""

    def __init__(self, fileobj: IO[bytes], infos: list[zipfile.ZipInfo], locator: Locator,
                 limits: Limits, budget: Budget) -> None:
        self.fileobj = fileobj
        self.by_name = {info.orig_filename: info for info in infos}
        self.locator = locator
        self.limits = limits
        self.budget = budget
        self.problems: list[Problem] = []

    def read(self, name: str, cap: int) -> bytes | None:
        """A member's bytes, or None if it is missing, too large, encrypted or broken."""
        from hashsvc.sources.archives import _zip_read, _zip_refusal

        info = self.by_name.get(name)
        if info is None or info.file_size > cap or _zip_refusal(info) is not None:
            return None
        try:
            return _zip_read(self.fileobj, info, f"zip member {name}", self.limits,
                             self.budget)
        except Exception:  # the member's own walk reports why it cannot be read
            return None

    def stream(self, info: zipfile.ZipInfo) -> ByteStream:
        """A member's bytes as a bounded stream."""
        from hashsvc.sources.archives import _zip_stream

        return _zip_stream(self.fileobj, info, f"zip member {info.orig_filename}",
                           self.limits, self.budget)


def _ufdr_report(infos: list[zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """The UFDR report at the zip's root, if there is one."""
    for info in infos:
        name = info.orig_filename
        if name[-4:].lower() == ".xml" and ufdr_key(name).lower() in UFDR_REPORT_NAMES:
            return info
    return None


def _zip_ufdr(reader: _ZipReader, report: zipfile.ZipInfo, locator: Locator
              ) -> tuple[AttrMap, dict[str, Any]] | None:
    """Member name -> attributes from a UFDR's report, and the evidence details."""
    from hashsvc.sources.archives import _zip_refusal

    refusal = _zip_refusal(report)
    if refusal is not None:
        raise ValueError(refusal)
    named = locator.links[-1].name.lower().endswith(".ufdr")
    parsed = parse_ufdr_report(_Readable(reader.stream(report)), named)
    if parsed is None:
        return None
    project, by_local = parsed
    by_member = {ufdr_key(name): name for name in reader.by_name}
    out: AttrMap = {}
    for local, attrs in by_local.items():
        member = by_member.get(local)
        if member is not None:
            out[member] = attrs
    return out, {"report": report.orig_filename, "project": project,
                 "files_in_report": len(by_local), "files_mapped": len(out)}


class _Readable:
    """A ByteStream as the file object ElementTree reads (it asks for sized chunks)."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size if size >= 0 else 64 * 1024)


def _zip_takeout(reader: _ZipReader, names: list[str]) -> tuple[AttrMap, int]:
    """Member name -> attributes from the Takeout sidecars, folder by folder."""
    folders: dict[str, list[str]] = {}
    for name in names:
        if not name.endswith("/"):
            head, _, base = name.rpartition("/")
            folders.setdefault(head, []).append(base)
    out: AttrMap = {}
    total = 0
    for head, bases in folders.items():
        prefix = f"{head}/" if head else ""
        attrs, read = takeout_attrs(
            bases, lambda base, p=prefix: reader.read(p + base, MAX_SIDECAR_BYTES))
        total += read
        out.update({prefix + base: a for base, a in attrs.items()})
    return out, total


def _zip_icloud(reader: _ZipReader, names: list[str], csvs: list[zipfile.ZipInfo]
                ) -> tuple[AttrMap, int]:
    """Member name -> attributes from the iCloud CSVs in a member's folder or the one above."""
    by_folder: dict[str, list[AttrMap]] = {}
    listed = 0
    for info in csvs:
        raw = reader.read(info.orig_filename, MAX_CSV_BYTES)
        parsed = parse_icloud_csv(raw) if raw is not None else {}
        listed += len(parsed)
        folder = posixpath.dirname(info.orig_filename)
        by_folder.setdefault(folder, []).append(parsed)
    merged = {folder: merge_icloud(maps) for folder, maps in by_folder.items()}
    out: AttrMap = {}
    for name in names:
        folder, base = posixpath.split(name)
        for where in (folder, posixpath.dirname(folder)):
            attrs = merged.get(where, {}).get(base)
            if attrs and not is_icloud_csv(base):
                out[name] = attrs
                break
    return out, listed


# --- folders -------------------------------------------------------------------------------------


class FolderAnnotations:
    """Link attributes of files in an export that is a folder, worked out folder by folder.

    The same file always gets the same attributes whichever order files are asked for in, so a
    distributed scan's units name files as the whole walk does.
    """

    def __init__(self, root: str, takeout: bool, icloud: bool, cache_folders: int = 64) -> None:
        self.root = root
        self.takeout = takeout
        self.icloud = icloud
        self._folders: OrderedDict[str, AttrMap] = OrderedDict()
        self._csvs: OrderedDict[str, AttrMap] = OrderedDict()
        self._cache = cache_folders

    def attrs(self, relpath: str) -> Attrs:
        """The attributes of one file (relative path under the root)."""
        folder, base = posixpath.split(relpath)
        return tuple(sorted(self._folder(folder).get(base, {}).items()))

    def _folder(self, folder: str) -> AttrMap:
        """Attributes of every file in one folder (cached)."""
        if folder in self._folders:
            self._folders.move_to_end(folder)
            return self._folders[folder]
        names = _regular_files(os.path.join(self.root, folder))
        out: AttrMap = {}
        if self.takeout:
            out, _ = takeout_attrs(names, lambda n: _read_small(
                os.path.join(self.root, folder, n), MAX_SIDECAR_BYTES))
        if self.icloud:
            for where in (folder, posixpath.dirname(folder) if folder else None):
                if where is None:
                    continue
                listed = self._csv_map(where)
                for name in names:
                    if name in listed and not is_icloud_csv(name):
                        out[name] = {**listed[name], **out.get(name, {})}
        self._folders[folder] = out
        if len(self._folders) > self._cache:
            self._folders.popitem(last=False)
        return out

    def _csv_map(self, folder: str) -> AttrMap:
        """The merged iCloud CSVs of one folder (cached)."""
        if folder not in self._csvs:
            path = os.path.join(self.root, folder)
            maps = []
            for name in _regular_files(path):
                if is_icloud_csv(name):
                    raw = _read_small(os.path.join(path, name), MAX_CSV_BYTES)
                    maps.append(parse_icloud_csv(raw) if raw is not None else {})
            self._csvs[folder] = merge_icloud(maps)
            if len(self._csvs) > self._cache:
                self._csvs.popitem(last=False)
        return self._csvs[folder]


def _regular_files(path: str) -> list[str]:
    """Names of the regular files in a folder (links not followed), or none if unlistable."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_file(follow_symlinks=False))
    except OSError:
        return []


def _read_small(path: str, cap: int) -> bytes | None:
    """A small regular file's bytes, or None (too large, a link, unreadable)."""
    from hashsvc.sources.directory import open_regular

    try:
        with open_regular(path) as fh:
            data = fh.read(cap + 1)
    except Exception:
        return None
    return data if len(data) <= cap else None
