"""Phone extractions and cloud exports that are folders: detection, and the export folder reader.

:func:`detect_folder` is asked about every folder named as a source (``open_source``):

* an iOS backup (``Manifest.db`` beside ``Manifest.plist``/``Info.plist``/``Status.plist``) is
  read by :class:`~hashsvc.sources.ios_backup.IosBackupSource`: files named by their device paths;
* an extracted Google Takeout (the folder is ``Takeout``, holds ``Takeout/`` or
  ``archive_browser.html``, or a folder below it holds ``Takeout/``) or an iCloud Photos export
  (a ``Photo Details*.csv`` in the folder, or at most two folders down under a folder named
  ``iCloud Photos...``) is read by :class:`ExportFolderSource`: a plain folder walk whose files
  carry what the sidecars or CSVs say about them as attributes of their ``fs`` link;
* anything else is a plain folder (None here).

Zips are recognised by their members wherever they are found (``exports.zip_annotations``):
Takeout and iCloud zips, Cellebrite UFDRs. Android extractions (tar or zip of ``/data``,
``/sdcard``) need nothing special: every member is scanned, hidden ``.thumbnails`` folders and
app caches included. See docs/extractions.md.
"""

from __future__ import annotations

import os
from typing import Any

from hashsvc.locators import Link, Locator
from hashsvc.sources.base import EvidenceSeen, Limits, Listing, Source, Walk
from hashsvc.sources.directory import DirectorySource, decode_relpath, walk_fs_file
from hashsvc.sources.exports import FolderAnnotations, is_icloud_csv
from hashsvc.sources.ios_backup import IosBackupSource, is_ios_backup

MAX_PROBED_FOLDERS = 256  # sub-folders looked into while recognising an export


def detect_folder(path: str, limits: Limits) -> Source | None:
    """The reader for a folder that is a known extraction or export, or None."""
    if is_ios_backup(path):
        return IosBackupSource(path, limits)
    marks = export_marks(path)
    if marks:
        return ExportFolderSource(path, limits, marks)
    return None


def _entries(path: str) -> list[os.DirEntry[str]]:
    """A folder's entries, or none if it cannot be listed."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _icloud_csv_in(path: str, prefix: str, depth: int) -> str | None:
    """A Photo Details CSV in a folder or (``depth`` 1) in one of its first sub-folders."""
    entries = _entries(path)
    found = next((f"{prefix}{e.name}" for e in entries if is_icloud_csv(e.name)), None)
    if found is None and depth > 0:
        for sub in sorted((e for e in entries if _is_dir(e)), key=lambda e: e.name)[:16]:
            found = _icloud_csv_in(sub.path, f"{prefix}{sub.name}/", depth - 1)
            if found is not None:
                break
    return found


def export_marks(path: str) -> dict[str, str]:
    """What shows a folder to be a Takeout or iCloud export: {kind: the evidence for it}.

    Cheap for any folder: its own listing, a stat per sub-folder (at most 256), and listings
    below only under folders named ``iCloud Photos...``.
    """
    marks: dict[str, str] = {}
    top = _entries(path)
    names = {e.name for e in top}
    dirs = sorted((e for e in top if _is_dir(e)), key=lambda e: e.name)[:MAX_PROBED_FOLDERS]
    if os.path.basename(os.path.normpath(path)) == "Takeout":
        marks["google-takeout"] = "the folder is named Takeout"
    elif "archive_browser.html" in names:
        marks["google-takeout"] = "archive_browser.html"
    elif any(e.name == "Takeout" for e in dirs):
        marks["google-takeout"] = "Takeout/"
    else:
        below = next((e.name for e in dirs if os.path.isdir(os.path.join(e.path, "Takeout"))
                      and not os.path.islink(os.path.join(e.path, "Takeout"))), None)
        if below is not None:
            marks["google-takeout"] = f"{below}/Takeout/"
    icloud = os.path.basename(os.path.normpath(path)).lower().startswith("icloud photos")
    csv = next((e.name for e in top if is_icloud_csv(e.name)), None)
    for sub in dirs:
        if csv is not None:
            break
        if icloud or sub.name.lower().startswith("icloud photos"):
            csv = _icloud_csv_in(sub.path, f"{sub.name}/", 1)
    if csv is not None:
        marks["icloud-photos"] = csv
    return marks


class ExportFolderSource(DirectorySource):
    """An extracted Takeout or iCloud export: a plain folder walk, files annotated.

    Units are the files, as for a plain folder; a file's attributes come from the sidecar or CSV
    beside it (or one folder up, for iCloud CSVs), so any unit is named as the whole walk names it.
    """

    kind = "export-folder"

    def __init__(self, uri: str, limits: Limits, marks: dict[str, str]) -> None:
        super().__init__(uri, limits)
        self.marks = dict(marks)
        self.annotations = FolderAnnotations(self.uri, takeout="google-takeout" in marks,
                                             icloud="icloud-photos" in marks)

    def walk(self) -> Walk:
        return Source.walk(self)

    def units(self) -> Listing:
        yield EvidenceSeen(Locator((Link("fs", os.path.basename(self.uri) or self.uri),)),
                           "+".join(sorted(self.marks)), details={"recognised_by": self.marks})
        yield from super().units()

    def walk_units(self, keys: list[Any]) -> Walk:
        for key in keys:
            relpath = decode_relpath(key)
            locator = Locator((Link("fs", relpath, self.annotations.attrs(relpath)),))
            yield from walk_fs_file(os.path.join(self.uri, relpath), locator, self.limits)
