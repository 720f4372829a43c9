"""Cloud exports and phone extractions: Google Takeout, iOS backups, Cellebrite UFDR, iCloud Photos
and Android extractions, each generated here and scanned for real against registered photos.

What an export knows about a file (its original name and times, its path on the device, whether
it was deleted) must reach the report on the match's locator; a distributed scan of the same
evidence must name everything exactly as the embedded walk does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import plistlib
import sqlite3
import tarfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.sources import DirectorySource, open_source, walk
from hashsvc.sources.base import Entry, EvidenceSeen, Problem, Unit
from hashsvc.sources.exports import apple_date, match_sidecars, parse_sidecar
from hashsvc.sources.extractions import ExportFolderSource, detect_folder
from hashsvc.sources.ios_backup import IosBackupSource
from hashsvc.store import Store
from workers import jobs

from conftest import encode, photo
from test_pipeline import register


def registered_jpeg(name: str) -> bytes:
    """The very bytes test_pipeline.register hashes for ``name``."""
    return encode(photo(name), "JPEG", quality=95)


def copy_of(name: str, size: tuple[int, int] = (300, 240)) -> bytes:
    """A resized re-encoded copy of a photo (matches perceptually, not exactly)."""
    return encode(photo(name).resize(size), "JPEG", quality=80)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A deflated zip with members in the order given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def scan(store: Store, settings: Settings, source: Path) -> dict[str, Any]:
    return build_report(store, run_scan(store, settings, str(source)))


def by_path(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["path"]: m for m in report["matches"]}


def attrs(match: dict[str, Any], index: int = -1) -> dict[str, str]:
    """The attributes of one link of a match's locator (the last by default)."""
    return match["locator"][index].get("attrs", {})


def epoch(text: str) -> str:
    return str(int(datetime.fromisoformat(text).timestamp()))


# --- Google Takeout -------------------------------------------------------------------------------

PHOTOS = "Takeout/Google Photos/Photos from 2019"


def sidecar(title: str, taken: str, created: str = "2020-05-01T08:00:00+00:00") -> bytes:
    return json.dumps({"title": title, "description": "",
                       "photoTakenTime": {"timestamp": epoch(taken), "formatted": "..."},
                       "creationTime": {"timestamp": epoch(created), "formatted": "..."},
                       "geoData": {"latitude": 0.0}}).encode()


def takeout_members() -> list[tuple[str, bytes]]:
    """A Takeout export: sidecars after their photos, a renamed duplicate, an album's metadata."""
    return [
        (f"{PHOTOS}/IMG_20190101_120000.jpg", registered_jpeg("astronaut")),
        (f"{PHOTOS}/IMG_0042(1).jpg", copy_of("coffee")),
        (f"{PHOTOS}/unrelated.jpg", copy_of("moon")),
        (f"{PHOTOS}/IMG_20190101_120000.jpg.supplemental-metadata.json",
         sidecar("IMG_20190101_120000.jpg", "2019-01-01T12:00:00+00:00")),
        (f"{PHOTOS}/IMG_0042.jpg(1).json", sidecar("IMG_0042.jpg", "2019-06-30T23:59:00+00:00")),
        ("Takeout/Google Photos/Holiday/metadata.json", json.dumps({"title": "Holiday"}).encode()),
        ("Takeout/archive_browser.html", b"<html></html>"),
    ]


def test_takeout_zip_carries_original_names_and_times(store: Store, settings: Settings,
                                                      tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    put(tmp_path / "ev" / "takeout-20240101T000000Z-001.zip", zip_bytes(takeout_members()))
    report = scan(store, settings, tmp_path / "ev")
    found = by_path(report)
    zip_name = "takeout-20240101T000000Z-001.zip"
    assert set(found) == {f"{zip_name}/{PHOTOS}/IMG_20190101_120000.jpg",
                          f"{zip_name}/{PHOTOS}/IMG_0042(1).jpg"}
    first = found[f"{zip_name}/{PHOTOS}/IMG_20190101_120000.jpg"]
    assert first["locator"][0] == {"kind": "fs", "name": zip_name}
    assert attrs(first) == {
        "original_name": "IMG_20190101_120000.jpg", "taken_time": "2019-01-01T12:00:00+00:00",
        "created_time": "2020-05-01T08:00:00+00:00",
        "sidecar": "IMG_20190101_120000.jpg.supplemental-metadata.json"}
    renamed = found[f"{zip_name}/{PHOTOS}/IMG_0042(1).jpg"]
    assert attrs(renamed)["original_name"] == "IMG_0042.jpg"  # Takeout renamed the duplicate
    assert attrs(renamed)["taken_time"] == "2019-06-30T23:59:00+00:00"
    # Sidecars and the rest are scanned as ordinary files; nothing is skipped or fails.
    assert report["files_scanned"] == 8 and report["other_files"] == 4
    assert report["errors"] == [] and report["skipped"] == {}
    [evidence] = report["evidence"]
    assert evidence["kind"] == "google-takeout" and evidence["path"] == zip_name
    assert evidence["details"]["google-takeout"] == {"sidecars_read": 2,
                                                     "files_with_metadata": 2}


def test_extracted_takeout_folder(store: Store, settings: Settings, tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    root = tmp_path / "export"
    for name, data in takeout_members():
        put(root / name, data)
    source = open_source(root)
    assert isinstance(source.inner, ExportFolderSource)
    assert same_locators(source)
    report = scan(store, settings, root)
    [match] = report["matches"]
    assert match["locator"] == [{"kind": "fs", "name": f"{PHOTOS}/IMG_20190101_120000.jpg",
                                 "attrs": {
        "original_name": "IMG_20190101_120000.jpg", "taken_time": "2019-01-01T12:00:00+00:00",
        "created_time": "2020-05-01T08:00:00+00:00",
        "sidecar": "IMG_20190101_120000.jpg.supplemental-metadata.json"}}]
    assert [e["kind"] for e in report["evidence"]] == ["google-takeout"]


def test_takeout_sidecar_naming_rules() -> None:
    long_name = "Screenshot_20190303-131408_Samsung Experience Home.jpg"
    names = ["IMG_1.jpg", "IMG_1.jpg.supplemental-metadata.json",
             "IMG_2.jpg", "IMG_2.jpg.json",
             "IMG_3(2).jpg", "IMG_3.jpg.supplemental-metadata(2).json",
             "IMG_4-edited.jpg", "IMG_4.jpg", "IMG_4.jpg.supplemental-metadata.json",
             long_name, (long_name + ".supplemental-metadata")[:46] + ".json",
             "orphan.jpg", "metadata.json"]
    assert match_sidecars(names) == {
        "IMG_1.jpg": "IMG_1.jpg.supplemental-metadata.json",
        "IMG_2.jpg": "IMG_2.jpg.json",
        "IMG_3(2).jpg": "IMG_3.jpg.supplemental-metadata(2).json",
        "IMG_4-edited.jpg": "IMG_4.jpg.supplemental-metadata.json",
        "IMG_4.jpg": "IMG_4.jpg.supplemental-metadata.json",
        long_name: (long_name + ".supplemental-metadata")[:46] + ".json"}
    assert parse_sidecar(b"[1, 2]") is None and parse_sidecar(b"{not json") is None
    assert parse_sidecar(b'{"photoTakenTime": {"timestamp": "1e99"}}') is None
    assert parse_sidecar(b'{"title": "a.jpg", "photoTakenTime": {"timestamp": "0"}}') == {
        "original_name": "a.jpg", "taken_time": "1970-01-01T00:00:00+00:00"}


def test_renamed_file_is_matched_to_its_sidecar_by_title(tmp_path: Path) -> None:
    root = tmp_path / "Takeout"
    put(root / "Google Photos" / "x" / "a very odd name.jpg", copy_of("coffee"))
    put(root / "Google Photos" / "x" / "something.json",
        sidecar("a very odd name.jpg", "2021-02-03T04:05:06+00:00"))
    entries = [i for i in walk(root) if isinstance(i, Entry)]
    named = {e.info.locator.links[-1].name: dict(e.info.locator.links[-1].attrs) for e in entries}
    assert named["Google Photos/x/a very odd name.jpg"]["taken_time"] == \
        "2021-02-03T04:05:06+00:00"
    assert named["Google Photos/x/something.json"] == {}


# --- iOS backups ----------------------------------------------------------------------------------

DCIM = ("CameraRollDomain", "Media/DCIM/100APPLE/IMG_0001.JPG")
THUMB = ("CameraRollDomain", "Media/PhotoData/Thumbnails/V2/DCIM/100APPLE/IMG_0002.JPG/5005.JPG")
APP_FILE = ("AppDomain-net.whatsapp.WhatsApp", "Library/Caches/blob.dat")
MISSING = ("CameraRollDomain", "Media/DCIM/100APPLE/IMG_0003.JPG")


def file_id(domain: str, relpath: str) -> str:
    return hashlib.sha1(f"{domain}-{relpath}".encode()).hexdigest()


def stored(domain: str, relpath: str) -> str:
    fid = file_id(domain, relpath)
    return f"{fid[:2]}/{fid}"


def ios_backup(root: Path, files: dict[tuple[str, str], bytes], *, missing: tuple = (),
               stray: dict[str, bytes] | None = None, encrypted: bool = False,
               manifest: bytes | None = None) -> None:
    """An iOS 10+ backup folder: stored files, Manifest.db, and the property lists."""
    root.mkdir(parents=True)
    for (domain, relpath), data in files.items():
        put(root / stored(domain, relpath), data)
    for relpath, data in (stray or {}).items():
        put(root / relpath, data)
    if manifest is not None:
        (root / "Manifest.db").write_bytes(manifest)
    else:
        conn = sqlite3.connect(root / "Manifest.db")
        conn.execute("CREATE TABLE Files (fileID TEXT PRIMARY KEY, domain TEXT, "
                     "relativePath TEXT, flags INTEGER, file BLOB)")
        rows = [(file_id(d, p), d, p, 1, b"bplist00") for d, p in [*files, *missing]]
        rows.append((file_id("CameraRollDomain", "Media/DCIM"), "CameraRollDomain",
                     "Media/DCIM", 2, b""))
        conn.executemany("INSERT INTO Files VALUES (?, ?, ?, ?, ?)", rows)
        conn.commit()
        conn.close()
    (root / "Manifest.plist").write_bytes(plistlib.dumps({
        "IsEncrypted": encrypted, "Version": "10.0",
        "Lockdown": {"DeviceName": "Test iPhone", "ProductVersion": "17.1"}}))
    (root / "Info.plist").write_bytes(plistlib.dumps({
        "Device Name": "Test iPhone", "Product Type": "iPhone12,1", "Product Version": "17.1",
        "Serial Number": "F2LXXXXXXXXX",
        "Last Backup Date": datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)}))
    (root / "Status.plist").write_bytes(plistlib.dumps({"IsFullBackup": False}))


def same_locators(source: Any) -> bool:
    """Whether units()/walk_units() give exactly the items of walk(), in the same order."""
    def view(items: Any) -> list[tuple[str, str]]:
        out = []
        for item in items:
            if isinstance(item, Entry):
                out.append(("entry", item.info.locator.key()))
            elif isinstance(item, Problem):
                out.append(("problem", item.locator.key() + item.stage))
            elif isinstance(item, EvidenceSeen):
                out.append(("evidence", item.locator.key()))
        return out

    listing = list(source.units())
    keys = [u.key for u in listing if isinstance(u, Unit)]
    split = view(i for i in listing if not isinstance(i, Unit)) + view(source.walk_units(keys))
    return split == view(source.walk()) and bool(keys)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a scan found, independent of how it was run."""
    return {"matches": sorted((m["path"], json.dumps(m["locator"], sort_keys=True), m["case"])
                              for m in report["matches"]),
            "errors": sorted((e["path"], e["stage"]) for e in report["errors"]),
            "skipped": report["skipped"], "files_scanned": report["files_scanned"],
            "evidence": [(e["path"], e["kind"], e["details"]) for e in report["evidence"]]}


def test_ios_backup_names_files_by_device_path(store: Store, settings: Settings,
                                               tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    root = tmp_path / "00008030-001A2B3C4D5E6F70"
    stray = "ff/" + "f" * 40  # stored, but the manifest does not list it
    ios_backup(root, {DCIM: registered_jpeg("astronaut"), THUMB: copy_of("coffee", (256, 192)),
                      APP_FILE: b"\x00" * 100},
               missing=(MISSING,), stray={stray: copy_of("chelsea")})
    source = open_source(root)
    assert isinstance(source.inner, IosBackupSource)
    assert same_locators(source)
    assert stored(*DCIM) in [u.key for u in source.units() if isinstance(u, Unit)]

    report = scan(store, settings, root)
    found = by_path(report)
    # The original was deleted from the phone; its thumbnail outlived it and names it.
    assert set(found) == {f"{DCIM[0]}/{DCIM[1]}", f"{THUMB[0]}/{THUMB[1]}", stray}
    assert found[f"{DCIM[0]}/{DCIM[1]}"]["locator"] == [
        {"kind": "ios-backup", "name": f"{DCIM[0]}/{DCIM[1]}",
         "attrs": {"file_id": file_id(*DCIM)}}]
    assert found[stray]["locator"] == [{"kind": "fs", "name": stray}]
    assert report["skipped"] == {"missing-from-backup": 1}
    assert report["errors"] == []
    [evidence] = report["evidence"]
    assert evidence["kind"] == "ios-backup"
    assert evidence["details"]["device"]["device_name"] == "Test iPhone"
    assert evidence["details"]["coverage"] == {
        "stored_files": 4, "named_from_manifest": 3, "not_in_manifest": 1,
        "encrypted_not_examined": 0, "missing_from_backup": 1}

    # The distributed scan (units in batches, walk_units per batch) records the same.
    scan_id = store.create_scan(str(root), None, {"matching": settings.matching_summary()})
    assert jobs.run_inline(settings.replace(batch_files=4, redis_url=""), scan_id) == "done"
    assert summary(build_report(store, scan_id)) == summary(report)


def test_encrypted_ios_backup_is_reported_not_examined(store: Store, settings: Settings,
                                                       tmp_path: Path) -> None:
    root = tmp_path / "backup"
    ios_backup(root, {DCIM: os.urandom(3000), THUMB: os.urandom(500)}, encrypted=True,
               manifest=os.urandom(4096))
    report = scan(store, settings, root)
    assert [(e["path"], e["stage"]) for e in report["errors"]] == [("Manifest.db", "ios-backup")]
    assert "encrypted" in report["errors"][0]["message"]
    assert report["skipped"] == {"encrypted-backup": 2}
    assert report["coverage"]["not_examined"] == {"encrypted-backup": 2, "error:ios-backup": 1}
    assert report["files_scanned"] == 4  # the manifest and the three property lists
    assert report["evidence"][0]["details"]["encrypted"] is True


def test_unreadable_manifest_still_scans_stored_files(store: Store, settings: Settings,
                                                      tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut")
    root = tmp_path / "backup"
    ios_backup(root, {DCIM: registered_jpeg("astronaut")}, manifest=b"not a database" * 100)
    report = scan(store, settings, root)
    assert [(e["path"], e["stage"]) for e in report["errors"]] == [
        ("Manifest.db", "ios-manifest")]
    assert [m["path"] for m in report["matches"]] == [stored(*DCIM)]


# --- Cellebrite UFDR ------------------------------------------------------------------------------

UFDR_NS = "http://pa.cellebrite.com/report/2.0"


def ufdr_report(files: list[tuple[str, str, str]]) -> bytes:
    """A report.xml: (device path, local path in the UFDR, deleted state) per file."""
    tagged = "".join(
        f'<file fs="Apple iOS Full File System" fsid="f1" path="{path}" size="1" id="{i}" '
        f'extractionId="0" deleted="{state}"><accessInfo/><metadata section="File">'
        f'<item name="Local Path"><![CDATA[{local}]]></item><item name="SHA256">x</item>'
        f'</metadata><metadata section="MetaData"><item name="Make">Apple</item></metadata>'
        f"</file>" for i, (path, local, state) in enumerate(files))
    return (f'<?xml version="1.0" encoding="utf-8"?><project id="p1" name="Case 7" '
            f'reportVersion="7.60" xmlns="{UFDR_NS}"><sourceExtractions><extractionInfo '
            f'id="0" name="Full File System"/></sourceExtractions><metadata section="Additional '
            f'Fields"><item name="DeviceInfoSelectedManufacturer">Apple</item></metadata>'
            f'<decodedData><modelType type="Chat"><model type="Chat" id="c1"><field name="Name">'
            f'<value>x</value></field></model></modelType></decodedData>'
            f"<taggedFiles>{tagged}</taggedFiles></project>").encode()


def test_ufdr_members_carry_device_paths(store: Store, settings: Settings,
                                         tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    deleted = "/private/var/mobile/Media/DCIM/100APPLE/IMG_0001.JPG"
    cached = "/private/var/mobile/Containers/Data/Application/X/Library/Caches/t/5005.jpg"
    members = [
        ("files/Image/IMG_0001.JPG", registered_jpeg("astronaut")),
        ("files/Image/5005.jpg", copy_of("coffee")),
        ("files/Image/unlisted.jpg", copy_of("chelsea")),
        ("report.xml", ufdr_report([(deleted, "files\\Image\\IMG_0001.JPG", "Deleted"),
                                    (cached, "files\\Image\\5005.jpg", "Intact")])),
    ]
    put(tmp_path / "ev" / "phone.ufdr", zip_bytes(members))
    report = scan(store, settings, tmp_path / "ev")
    found = by_path(report)
    first = found["phone.ufdr/files/Image/IMG_0001.JPG"]
    assert attrs(first) == {"original_path": deleted, "deleted": "true"}
    assert first["deleted"] is True  # the report's own flag reads the locator
    assert attrs(found["phone.ufdr/files/Image/5005.jpg"]) == {"original_path": cached,
                                                                "deleted": "false"}
    assert found["phone.ufdr/files/Image/5005.jpg"]["deleted"] is False
    assert attrs(found["phone.ufdr/files/Image/unlisted.jpg"]) == {}
    [evidence] = report["evidence"]
    assert evidence["kind"] == "cellebrite-ufdr"
    assert evidence["details"]["cellebrite-ufdr"] == {
        "report": "report.xml", "project": {"id": "p1", "name": "Case 7", "reportVersion": "7.60"},
        "files_in_report": 2, "files_mapped": 2}
    assert report["errors"] == []


def test_zip_with_another_report_xml_is_a_plain_zip(tmp_path: Path) -> None:
    other = b'<?xml version="1.0"?><project xmlns="urn:something-else"><file path="/x"/></project>'
    put(tmp_path / "ev" / "a.zip", zip_bytes([("report.xml", other), ("a.jpg", copy_of("moon"))]))
    put(tmp_path / "ev" / "broken.ufdr", zip_bytes([("report.xml", b"<project><oops"),
                                                     ("a.jpg", copy_of("moon"))]))
    items = list(walk(tmp_path / "ev"))
    assert not [i for i in items if isinstance(i, EvidenceSeen)]
    assert all(not link.attrs for i in items if isinstance(i, Entry)
               for link in i.info.locator.links)
    problems = [(p.locator.path, p.stage) for p in items if isinstance(p, Problem)]
    assert problems == [("broken.ufdr", "ufdr-report")]


# --- iCloud Photos --------------------------------------------------------------------------------

ICLOUD_CSV_HEADER = "imgName,fileChecksum,favorite,hidden,deleted,originalCreationDate,viewCount," \
                    "importDate\n"


def icloud_csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    """Photo Details CSV rows: (name, hidden, deleted, original creation date)."""
    return (ICLOUD_CSV_HEADER + "".join(
        f'{name},abc=,no,{hidden},{deleted},"{date}",0,"Monday March 2,2020 10:39 AM GMT"\n'
        for name, hidden, deleted, date in rows)).encode()


def test_icloud_export_folder_and_zip(store: Store, settings: Settings, tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    root = tmp_path / "apple-data"
    put(root / "iCloud Photos" / "Photos" / "IMG_0001.JPG", registered_jpeg("astronaut"))
    put(root / "iCloud Photos" / "Photos" / "IMG_0002.JPG", copy_of("coffee"))
    put(root / "iCloud Photos" / "Photo Details.csv", icloud_csv([
        ("IMG_0001.JPG", "no", "yes", "Tuesday October 1,2019 5:20 PM GMT"),
        ("IMG_0002.JPG", "yes", "no", "Saturday January 4,2020 12:05 AM GMT")]))
    part = "iCloud Photos Part 1 of 1"
    put(root / f"{part}.zip", zip_bytes([
        (f"{part}/Photos/IMG_0003.JPG", copy_of("chelsea")),
        (f"{part}/Photos/Photo Details-1.csv", icloud_csv([
            ("IMG_0003.JPG", "no", "no", "not a date")]))]))
    source = open_source(root)
    assert isinstance(source.inner, ExportFolderSource) and same_locators(source)
    report = scan(store, settings, root)
    found = by_path(report)
    assert attrs(found["iCloud Photos/Photos/IMG_0001.JPG"]) == {
        "original_creation_date": "2019-10-01T17:20:00+00:00", "deleted": "true",
        "hidden": "false"}
    assert found["iCloud Photos/Photos/IMG_0001.JPG"]["deleted"] is True
    assert attrs(found["iCloud Photos/Photos/IMG_0002.JPG"])["original_creation_date"] == \
        "2020-01-04T00:05:00+00:00"
    assert attrs(found[f"{part}.zip/{part}/Photos/IMG_0003.JPG"]) == {
        "original_creation_date": "not a date", "deleted": "false", "hidden": "false"}
    assert sorted(e["kind"] for e in report["evidence"]) == ["icloud-photos", "icloud-photos"]


def test_apple_dates() -> None:
    assert apple_date("Tuesday October 1,2019 5:20 PM GMT") == "2019-10-01T17:20:00+00:00"
    assert apple_date("Wednesday January 1,2020 12:00 AM UTC") == "2020-01-01T00:00:00+00:00"
    assert apple_date("Sunday February 30,2020 1:00 PM GMT") == \
        "Sunday February 30,2020 1:00 PM GMT"


# --- Android --------------------------------------------------------------------------------------


def test_android_extraction_scans_thumbnails_and_caches(store: Store, settings: Settings,
                                                        tmp_path: Path) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in [
            ("data/media/0/DCIM/Camera/IMG_20240101_1.jpg", copy_of("moon")),
            ("data/media/0/DCIM/.thumbnails/1700000000123.jpg", copy_of("astronaut", (200, 200))),
            ("data/data/com.whatsapp/cache/f3a9c0", copy_of("coffee")),
            ("data/media/0/Android/data/com.example/cache/.nomedia", b""),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    put(tmp_path / "ev" / "android.tar.gz", buf.getvalue())
    report = scan(store, settings, tmp_path / "ev")
    assert sorted(by_path(report)) == [
        "android.tar.gz/data/data/com.whatsapp/cache/f3a9c0",
        "android.tar.gz/data/media/0/DCIM/.thumbnails/1700000000123.jpg"]
    assert report["images_hashed"] == 3


# --- ordinary evidence is left as it was ----------------------------------------------------------


def test_ordinary_folders_and_zips_are_not_exports(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    put(root / "photos" / "IMG_1.jpg", copy_of("moon"))
    put(root / "photos" / "IMG_1.jpg.json", sidecar("IMG_1.jpg", "2019-01-01T00:00:00+00:00"))
    put(root / "archive.zip", zip_bytes([("photos/IMG_1.jpg", copy_of("moon")),
                                         ("photos/IMG_1.jpg.json", b"{}")]))
    assert detect_folder(str(root), open_source(root).limits) is None
    assert type(open_source(root).inner) is DirectorySource
    items = list(walk(root))
    assert not [i for i in items if isinstance(i, EvidenceSeen)]
    assert all(not link.attrs for i in items if isinstance(i, Entry)
               for link in i.info.locator.links)


@pytest.mark.parametrize("layout", ["Takeout", "archive_browser.html", "sub/Takeout"])
def test_takeout_folder_detection(tmp_path: Path, layout: str) -> None:
    root = tmp_path / ("Takeout" if layout == "Takeout" else "export")
    if layout == "archive_browser.html":
        put(root / layout, b"<html/>")
    elif layout == "sub/Takeout":
        put(root / "sub" / "Takeout" / "Google Photos" / "a.jpg", b"x")
    else:
        put(root / "Google Photos" / "a.jpg", b"x")
    assert isinstance(open_source(root).inner, ExportFolderSource)
