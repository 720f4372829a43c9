"""iOS backups (iTunes / Finder, iOS 10 and later): files named by the device paths they had.

A backup folder stores every file as ``<fileID[:2]>/<fileID>``, a SHA-1 of its domain and path;
``Manifest.db`` (SQLite, table ``Files(fileID, domain, relativePath, flags, file)``) maps each
back. A stored file listed in the manifest gets one link ``ios-backup`` named
``<domain>/<relativePath>`` (``CameraRollDomain/Media/DCIM/100APPLE/IMG_0001.JPG``) with the
attribute ``file_id``; anything else in the folder (``Manifest.db``, ``Info.plist``, a file the
manifest does not list) keeps its plain ``fs`` link and stored name. Files the manifest lists but
the folder lacks (an interrupted backup) are counted as skipped (``missing-from-backup``).

An encrypted backup (``Manifest.plist`` ``IsEncrypted``) is not examined without its password:
one error on ``Manifest.db`` says so and every stored file is counted as skipped
(``encrypted-backup``); the plists beside it are still scanned. A manifest that cannot be read in
a backup that is not encrypted is an error too, and the stored files are then scanned under their
stored names. The manifest is opened read-only and immutable: nothing is written beside it.
"""

from __future__ import annotations

import datetime
import os
import plistlib
import re
import sqlite3
import urllib.parse
from typing import Any

from hashsvc.locators import Link, Locator
from hashsvc.sources.base import EvidenceSeen, Limits, Listing, Problem, Source, Unit, Walk
from hashsvc.sources.directory import (decode_relpath, encode_relpath, fs_locator, iter_tree,
                                       open_regular, walk_fs_file)

MANIFEST = "Manifest.db"
MARKERS = ("Manifest.plist", "Info.plist", "Status.plist")
MAX_PLIST_BYTES = 16 * 1024 * 1024
_STORED = re.compile(r"^[0-9a-f]{2}/([0-9a-f]{40})$")
_FILE_FLAG = 1  # Files.flags: 1 file, 2 directory, 4 symbolic link

#: Info.plist keys reported with the evidence item.
_DEVICE_KEYS = {"Device Name": "device_name", "Product Type": "product_type",
                "Product Version": "ios_version", "Build Version": "build_version",
                "Serial Number": "serial_number", "Unique Identifier": "udid",
                "IMEI": "imei", "Phone Number": "phone_number", "Last Backup Date": "last_backup"}


def is_ios_backup(path: str) -> bool:
    """A folder with a Manifest.db and at least one of the backup's property lists."""
    return os.path.isfile(os.path.join(path, MANIFEST)) and any(
        os.path.isfile(os.path.join(path, name)) for name in MARKERS)


class IosBackupSource(Source):
    """An iOS backup folder; its units are the stored files (key: the stored relative path)."""

    kind = "ios-backup"

    def __init__(self, uri: str, limits: Limits) -> None:
        super().__init__(os.path.abspath(uri), limits)
        self._loaded = False
        self.encrypted = False
        self.manifest: dict[str, tuple[str, str]] = {}  # fileID -> (domain, relativePath)
        self.manifest_error = ""
        self.truncated = 0

    # --- the manifest --------------------------------------------------------------------------

    def _load(self) -> None:
        """Read Manifest.plist's encryption flag and Manifest.db's map (once)."""
        if self._loaded:
            return
        self._loaded = True
        plist = _read_plist(os.path.join(self.uri, "Manifest.plist"))
        self.encrypted = bool(plist.get("IsEncrypted", False))
        if self.encrypted:
            return
        try:
            self.manifest, self.truncated = _read_manifest(
                os.path.join(self.uri, MANIFEST), self.limits.max_archive_members)
        except (sqlite3.Error, OSError, ValueError) as exc:
            self.manifest_error = str(exc) or type(exc).__name__

    def locator(self, relpath: str) -> Locator:
        """The locator of a stored file: its device path where the manifest has it."""
        self._load()
        found = _STORED.match(relpath)
        entry = self.manifest.get(found.group(1)) if found else None
        if entry is None:
            return fs_locator(relpath)
        domain, path = entry
        return Locator((Link("ios-backup", f"{domain}/{path}" if path else domain,
                             (("file_id", found.group(1)),)),))  # type: ignore[union-attr]

    # --- the Source interface ------------------------------------------------------------------

    def units(self) -> Listing:
        self._load()
        root_loc = Locator((Link("fs", os.path.basename(self.uri) or self.uri),))
        counts = {"stored_files": 0, "named_from_manifest": 0, "not_in_manifest": 0,
                  "encrypted_not_examined": 0, "missing_from_backup": 0}
        if self.encrypted:
            yield Problem(fs_locator(MANIFEST), "ios-backup",
                          "encrypted iOS backup (Manifest.plist IsEncrypted): its manifest and "
                          "files are encrypted and were not examined; they need the backup "
                          "password")
        elif self.manifest_error:
            yield Problem(fs_locator(MANIFEST), "ios-manifest",
                          f"Manifest.db not readable ({self.manifest_error}); the stored files "
                          "are scanned under their stored names")
        if self.truncated:
            yield Problem(fs_locator(MANIFEST), "ios-manifest",
                          f"Manifest.db lists {self.truncated} files more than "
                          f"max_archive_members={self.limits.max_archive_members}; those are "
                          "scanned under their stored names")
        seen: set[str] = set()
        for step in iter_tree(self.uri):
            if isinstance(step, Problem):
                yield step
                continue
            relpath, entry = step
            stored = _STORED.match(relpath)
            if stored:
                counts["stored_files"] += 1
                seen.add(stored.group(1))
                if self.encrypted:
                    counts["encrypted_not_examined"] += 1
                    yield Problem(fs_locator(relpath), "ios-backup",
                                  "file of an encrypted iOS backup; not examined",
                                  skipped=True, reason="encrypted-backup")
                    continue
                if stored.group(1) in self.manifest:
                    counts["named_from_manifest"] += 1
                else:
                    counts["not_in_manifest"] += 1
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except OSError:
                size = 0  # the batch reports why it cannot be read
            yield Unit(encode_relpath(relpath), size)
        for file_id in sorted(set(self.manifest) - seen):
            counts["missing_from_backup"] += 1
            yield Problem(self.locator(f"{file_id[:2]}/{file_id}"), "ios-backup",
                          "listed in Manifest.db but not stored in the backup",
                          skipped=True, reason="missing-from-backup")
        yield EvidenceSeen(root_loc, "ios-backup", details={
            "device": _device(os.path.join(self.uri, "Info.plist")),
            "encrypted": self.encrypted,
            "manifest_readable": not self.encrypted and not self.manifest_error,
            "manifest_files": len(self.manifest),
            "coverage": counts})

    def walk_units(self, keys: list[Any]) -> Walk:
        for key in keys:
            relpath = decode_relpath(key)
            yield from walk_fs_file(os.path.join(self.uri, relpath), self.locator(relpath),
                                    self.limits)


def _read_manifest(path: str, cap: int) -> tuple[dict[str, tuple[str, str]], int]:
    """fileID -> (domain, relativePath) of the files in Manifest.db, and how many were left out.

    Opened read-only and immutable, so SQLite writes no journal, lock or WAL file beside it.
    """
    uri = f"file:{urllib.parse.quote(path)}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute("SELECT fileID, domain, relativePath FROM Files WHERE flags = ?",
                            (_FILE_FLAG,))
        out: dict[str, tuple[str, str]] = {}
        extra = 0
        for file_id, domain, relpath in rows:
            if not isinstance(file_id, str):
                continue
            if len(out) >= cap:
                extra += 1
                continue
            out[file_id.lower()] = (str(domain or ""), str(relpath or ""))
        return out, extra
    finally:
        conn.close()


def _read_plist(path: str) -> dict[str, Any]:
    """A small property list as a dict ({} when missing, too large or damaged)."""
    try:
        with open_regular(path) as fh:
            data = fh.read(MAX_PLIST_BYTES + 1)
        if len(data) > MAX_PLIST_BYTES:
            return {}
        value = plistlib.loads(data)
    except Exception:  # plistlib raises several things for damaged input
        return {}
    return value if isinstance(value, dict) else {}


def _device(path: str) -> dict[str, str]:
    """What Info.plist says about the device, as text."""
    info = _read_plist(path)
    out: dict[str, str] = {}
    for key, name in _DEVICE_KEYS.items():
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            out[name] = value.isoformat()
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            out[name] = str(value)[:256]
    return out
