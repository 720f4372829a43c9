"""Disk images: raw (bare file system, MBR, GPT) and E01, built here with mkfs.fat and mtools,
mke2fs and debugfs, sfdisk and ewfacquire, never mounted.

Registered photographs are put on the images live, deleted and inside a zip; the scans must find
them through ``hashsvc scan`` and through the batch jobs of a distributed scan, flag the deleted
one, name partition and inode, hash the evidence item, verify an E01 (and catch a tampered one),
and report what they could not examine instead of dropping it.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hashsvc.cli import main
from hashsvc.errors import HashsvcError
from hashsvc.locators import Locator
from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.sources import Limits, open_source
from hashsvc.sources.base import ContainerSeen, Entry, EvidenceSeen, Item, Problem, Unit
from hashsvc.sources.disk import DiskImageSource, detect_disk_image
from hashsvc.sources.guarded import GuardedSource
from hashsvc.store import Store
from hashsvc.store.progress import scan_progress
from workers import jobs

from conftest import encode, photo
from test_jobs import summary
from test_pipeline import register

MiB = 1024 * 1024
LIMITS = Limits(max_file_bytes=16 * MiB, max_expanded_bytes=64 * MiB)
#: A fixed modification time for the files put on the images (even seconds: FAT keeps 2 s).
MTIME = 1714558830  # 2024-05-01T10:20:30Z
MTIME_ISO = "2024-05-01T10:20:30Z"
FAT_START = 2048  # sector of the first partition


# --- building images -----------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of a Debian tool the images are built with, or skip the test."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian packages dosfstools, mtools, e2fsprogs, "
                    "fdisk and ewf-tools build the test images)")
    return path


def run(*args: str, stdin: str | None = None) -> None:
    """Run a tool; fail the test with its output if it fails."""
    # mtools writes FAT's local times in this process's time zone, as The Sleuth Kit reads them.
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    res = subprocess.run([tool(args[0]), *args[1:]], input=stdin, capture_output=True,
                         text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    """Copies of three registered photographs and one unrelated photograph, as JPEG."""
    return {name: encode(photo(name).resize((400, 300)), "JPEG", quality=90)
            for name in ("astronaut", "coffee", "chelsea", "camera")}


def zip_of(members: dict[str, bytes]) -> bytes:
    """A deflated zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def stage(folder: Path, files: dict[str, bytes]) -> Path:
    """Write files (with MTIME) under a folder."""
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    return folder


def fat_image(path: Path, files: dict[str, bytes], delete: tuple[str, ...] = (),
              size_kib: int = 8192) -> Path:
    """A FAT file system image holding ``files``; ``delete`` are then deleted with mdel (their
    directory entries are marked, their clusters keep the content)."""
    run("mkfs.fat", "-C", "-n", "EVIDENCE", str(path), str(size_kib))
    staged = stage(path.parent / f"{path.name}.files", files)
    for folder in sorted({str(Path(rel).parent) for rel in files} - {"."}):
        run("mmd", "-i", str(path), f"::{folder}")
    for rel in files:
        run("mcopy", "-m", "-i", str(path), str(staged / rel), f"::{rel}")
    for rel in delete:
        run("mdel", "-i", str(path), f"::{rel}")
    return path


def victim_fat(path: Path, pictures: dict[str, bytes]) -> Path:
    """The FAT file system of most tests: a live and a deleted copy, a zip, an unrelated
    photograph."""
    return fat_image(path, {
        "DCIM/astro.jpg": pictures["astronaut"],
        "DCIM/coffee.jpg": pictures["coffee"],
        "DCIM/other.jpg": pictures["camera"],
        "chat.zip": zip_of({"media/chelsea.jpg": pictures["chelsea"]}),
    }, delete=("DCIM/coffee.jpg",))


def partitioned(path: Path, fs_image: Path, label: str = "dos") -> Path:
    """A disk with a partition table: the file system in the first partition and a second,
    empty partition; free space before, between (GPT) and after."""
    fs_sectors = fs_image.stat().st_size // 512
    second = FAT_START + fs_sectors + 1024
    total = (second + 4096 + 2048) * 512
    with open(path, "wb") as fh:
        fh.truncate(total)
    if label == "dos":
        table = f"label: dos\nstart={FAT_START}, size={fs_sectors}, type=c\n" \
                f"start={second}, size=4096, type=83\n"
    else:
        table = f"label: gpt\nstart={FAT_START}, size={fs_sectors}, " \
                f"type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n" \
                f"start={second}, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
    run("sfdisk", "-q", str(path), stdin=table)
    run("dd", f"if={fs_image}", f"of={path}", "bs=512", f"seek={FAT_START}", "conv=notrunc",
        "status=none")
    return path


def e01_of(raw: Path, target: Path) -> Path:
    """An E01 (uncompressed, in 4 MiB segment files) of a raw image; returns the .E01 path."""
    run("ewfacquire", "-u", "-q", "-t", str(target), "-c", "none", "-S", "4MiB",
        "-C", "CASE-7", "-e", "examiner", "-D", "test disk", str(raw))
    return target.with_suffix(".E01")


def segments(target: Path) -> list[Path]:
    """The segment files of an E01, in order."""
    return sorted(p for p in target.parent.iterdir()
                  if re.fullmatch(re.escape(target.name) + r"\.E\d\d", p.name))


def sha256_of(path: Path) -> str:
    """SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- reading results -------------------------------------------------------------------------


def drain(items: Any) -> tuple[list[Item], dict[str, bytes | HashsvcError]]:
    """Consume a walk as the pipeline does, reading each entry at once."""
    seen: list[Item] = []
    reads: dict[str, bytes | HashsvcError] = {}
    for item in items:
        seen.append(item)
        if isinstance(item, Entry):
            try:
                reads[item.info.locator.key()] = item.read()
            except HashsvcError as exc:
                reads[item.info.locator.key()] = exc
    return seen, reads


def walk_image(path: Path) -> tuple[list[Item], dict[str, bytes | HashsvcError]]:
    """Open a disk image as a scan would and walk it."""
    assert isinstance(detect_disk_image(str(path), LIMITS), DiskImageSource)
    source = open_source(path, LIMITS)
    assert isinstance(source, GuardedSource)  # read in a child process, under limits
    try:
        return drain(source.walk())
    finally:
        source.close()


def one_evidence(items: list[Item]) -> EvidenceSeen:
    """The one evidence item of a walk."""
    found = [i for i in items if isinstance(i, EvidenceSeen)]
    assert len(found) == 1
    return found[0]


def by_path(items: list[Item]) -> dict[str, Entry]:
    """Entries by their path inside the file system (the last link's name)."""
    return {i.info.locator.links[-1].name: i for i in items if isinstance(i, Entry)}


def skips(items: list[Item], reason: str) -> list[Problem]:
    """Skipped Problems with this reason."""
    return [i for i in items if isinstance(i, Problem) and i.skipped and i.reason == reason]


def cli_scan(settings: Settings, source: Path, tmp_path: Path) -> dict[str, Any]:
    """``hashsvc scan SOURCE`` in embedded mode; the report."""
    out = tmp_path / f"{source.name}.report.json"
    res = CliRunner().invoke(main, ["--data-dir", settings.data_dir, "scan", str(source),
                                    "--report", str(out), "--quiet"],
                             env={"HASHSVC_DATABASE_URL": ""})
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def tsk_link(match: dict[str, Any]) -> dict[str, Any]:
    """The 'tsk' link of a report match's locator."""
    links = [link for link in match["locator"] if link["kind"] == "tsk"]
    assert len(links) == 1
    return links[0]


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["fat", "mbr", "gpt", "e01"])
def test_scan_finds_live_deleted_and_zipped_copies(layout: str, store: Store,
                                                   settings: Settings, tmp_path: Path,
                                                   pictures: dict[str, bytes]) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    fat = victim_fat(tmp_path / "fat.img", pictures)
    raw = fat if layout == "fat" else partitioned(tmp_path / "disk.img", fat,
                                                  "gpt" if layout == "gpt" else "dos")
    image = e01_of(raw, tmp_path / "exhibit") if layout == "e01" else raw
    report = cli_scan(settings, image, tmp_path)

    assert report["state"] == "done" and report["errors"] == []
    found = {tsk_link(m)["name"]: m for m in report["matches"]}
    deleted = next(name for name in found if name.startswith("DCIM/") and "offee" in name)
    assert set(found) == {"DCIM/astro.jpg", deleted, "chat.zip"}
    assert found["chat.zip"]["locator"][-1] == {"kind": "zip", "name": "media/chelsea.jpg"}
    assert found[deleted]["deleted"] is True
    assert found["DCIM/astro.jpg"]["deleted"] is False and found["chat.zip"]["deleted"] is False
    assert found[deleted]["size"] == len(pictures["coffee"])
    for m in report["matches"]:
        attrs = tsk_link(m)["attrs"]
        assert attrs["inode"].isdigit() and attrs["mtime"] == MTIME_ISO
        assert m["locator"][0] == {"kind": "fs", "name": image.name}
        if layout == "fat":
            assert m["locator"][1]["kind"] == "tsk"  # no partition link without a table
        else:
            part = m["locator"][1]
            assert part["kind"] == "partition" and part["attrs"]["offset"] == str(FAT_START * 512)
            assert part["name"] == ("4" if layout == "gpt" else "2")  # mmls's slot numbers

    [evidence] = report["evidence"]
    assert evidence["kind"] == ("e01" if layout == "e01" else "raw")
    assert evidence["sha256"] == sha256_of(raw) and evidence["size"] == raw.stat().st_size
    assert evidence["md5"] == hashlib.md5(raw.read_bytes()).hexdigest()
    if layout == "e01":
        assert evidence["stored_md5"] == evidence["md5"] and evidence["verified"] is True
        names = [p.name for p in segments(tmp_path / "exhibit")]
        assert evidence["details"]["e01"]["segments"] == names and len(names) > 2
        assert evidence["details"]["e01"]["header"]["case_number"] == "CASE-7"
    else:
        assert evidence["stored_md5"] is None and evidence["verified"] is None
    details = evidence["details"]
    coverage = details["coverage"]
    assert coverage["examined"]["files"] == 4 and coverage["examined"]["deleted_files"] == 1
    assert coverage["examined"]["file_systems"] == 1
    assert coverage["not_examined"]["fs-free-space"]["count"] == 1
    # $MBR, $FAT1, $FAT2 and the volume label's entry
    assert coverage["not_examined"]["fs-metadata"]["count"] == 4
    assert report["skipped"]["fs-metadata"] == 4
    if layout != "fat":
        assert coverage["examined"]["partitions"] == 1
        assert coverage["not_examined"]["unrecognised-filesystem"] == {
            "count": 1, "bytes": 4096 * 512,
            "what": "no file system The Sleuth Kit can read"}
        assert coverage["not_examined"]["unpartitioned-space"]["count"] >= 2
        assert report["skipped"]["unpartitioned-space"] >= 2
        assert report["skipped"]["unrecognised-filesystem"] == 1
        parts = [v for v in details["volumes"] if v["role"] == "partition"]
        assert [(v["filesystem"], v["not_examined"]) for v in parts] == [
            (parts[0]["filesystem"], None), (None, "unrecognised-filesystem")]
        assert parts[0]["filesystem"].startswith("FAT")
        assert details["partition_table"] == ("GPT" if layout == "gpt" else "MBR")


@pytest.mark.parametrize("layout", ["mbr", "e01"])
def test_distributed_scan_equals_embedded(layout: str, store: Store, settings: Settings,
                                          tmp_path: Path, pictures: dict[str, bytes]) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    raw = partitioned(tmp_path / "disk.img", victim_fat(tmp_path / "fat.img", pictures))
    image = e01_of(raw, tmp_path / "exhibit") if layout == "e01" else raw
    embedded = build_report(store, run_scan(store, settings, str(image)))
    scan_id, thread = jobs.submit_scan(store, settings.replace(batch_files=2, redis_url=""),
                                       str(image))
    assert thread is not None
    thread.join(timeout=120)
    distributed = build_report(store, scan_id)

    assert summary(distributed) == summary(embedded)
    assert len(embedded["matches"]) == 3 and embedded["skipped"]["unpartitioned-space"] == 3
    assert [m["locator"] for m in distributed["matches"]] == [m["locator"] for m in
                                                              embedded["matches"]]
    assert [m["deleted"] for m in distributed["matches"]].count(True) == 1
    assert distributed["evidence"] == embedded["evidence"]
    assert distributed["evidence"][0]["sha256"] == sha256_of(raw)
    status = scan_progress(store, scan_id)
    assert status["state"] == "done" and status["batches_total"] == 2  # 4 files, 2 a batch


def test_units_are_plain_json_and_walk_units_yields_what_walk_yields(
        tmp_path: Path, pictures: dict[str, bytes]) -> None:
    image = partitioned(tmp_path / "disk.img", victim_fat(tmp_path / "fat.img", pictures))
    walked, walked_reads = walk_image(image)
    source = open_source(image, LIMITS)
    listing = list(source.units())
    units = [u for u in listing if isinstance(u, Unit)]
    keys = json.loads(json.dumps([u.key for u in units]))  # as a batch stores them
    assert len(units) == 4 and all(u.size > 0 for u in units)
    # Two batches, in another order than listed.
    split, reads = [], {}
    for batch in (keys[2:], keys[:2]):
        items, batch_reads = drain(source.walk_units(batch))
        split += items
        reads.update(batch_reads)
    source.close()

    def described(items: list[Item]) -> list[tuple[str, str, str]]:
        out = []
        for i in items:
            loc = i.locator if isinstance(i, (Problem, EvidenceSeen)) else i.info.locator
            out.append((type(i).__name__, loc.key(), getattr(i, "message", "")))
        return sorted(out)

    assert described([i for i in listing if not isinstance(i, Unit)] + split) == \
        described(walked)
    # The deleted photograph is read whole, and the zip is walked, not read as one file.
    assert reads == walked_reads and sorted(reads.values()) == sorted(  # type: ignore[type-var]
        pictures[name] for name in ("astronaut", "coffee", "camera", "chelsea"))
    assert [i for i in listing if isinstance(i, EvidenceSeen)] == [one_evidence(walked)]


def test_ext4_deleted_files_what_the_sleuth_kit_gives(store: Store, settings: Settings,
                                                      tmp_path: Path,
                                                      pictures: dict[str, bytes]) -> None:
    """debugfs's rm frees an inode but keeps its extents, so the content is still there; the
    kernel's ext4 also clears size and extents (simulated here), and then it is gone."""
    tree = stage(tmp_path / "tree", {"DCIM/astro.jpg": pictures["astronaut"],
                                     "DCIM/removed.jpg": pictures["coffee"],
                                     "DCIM/wiped.jpg": pictures["chelsea"]})
    os.symlink("astro.jpg", tree / "DCIM" / "link.jpg")
    image = tmp_path / "ext4.img"
    run("mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), "8M")
    inode = subprocess.run([tool("debugfs"), "-R", "stat DCIM/wiped.jpg", str(image)],
                           capture_output=True, text=True, check=True).stdout.split()[1]
    run("debugfs", "-w", "-R", "link DCIM DCIM/loop", str(image))  # a folder in itself
    run("debugfs", "-w", "-R", "rm DCIM/removed.jpg", str(image))
    run("debugfs", "-w", "-R", "rm DCIM/wiped.jpg", str(image))
    for field, value in (("size", "0"), ("block[0]", "0xF30A"), ("block[3]", "0"),
                         ("block[4]", "0"), ("block[5]", "0")):
        run("debugfs", "-w", "-R", f"sif <{inode}> {field} {value}", str(image))

    items, reads = walk_image(image)
    entries = by_path(items)
    assert set(entries) == {"DCIM/astro.jpg", "DCIM/removed.jpg"}
    removed = entries["DCIM/removed.jpg"].info.locator
    assert removed.attr("deleted") == "true" and reads[removed.key()] == pictures["coffee"]
    live = entries["DCIM/astro.jpg"].info.locator
    assert live.attr("deleted") == "false" and reads[live.key()] == pictures["astronaut"]
    for name in ("mtime", "atime", "ctime"):
        assert (live.attr(name) or "").endswith("Z")
    assert (live.attr("mtime") or "").startswith(MTIME_ISO[:-1])
    [gone] = skips(items, "deleted-content-gone")
    assert gone.locator.path == "ext4.img/DCIM/wiped.jpg" and f"inode {inode}" in gone.message
    assert [p.locator.path for p in skips(items, "symlink")] == ["ext4.img/DCIM/link.jpg"]
    assert [p.locator.path for p in skips(items, "already-listed")] == ["ext4.img/DCIM/loop"]
    coverage = one_evidence(items).details["coverage"]
    assert coverage["not_examined"]["deleted-content-gone"]["count"] == 1
    assert coverage["examined"]["deleted_files"] == 1

    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    report = build_report(store, run_scan(store, settings, str(image)))
    assert sorted((m["path"], m["deleted"]) for m in report["matches"]) == [
        ("ext4.img/DCIM/astro.jpg", False), ("ext4.img/DCIM/removed.jpg", True)]
    assert report["skipped"]["deleted-content-gone"] == 1  # in the report, not dropped
    assert report["evidence"][0]["details"]["coverage"] == coverage


def fat_entry(image: bytearray, name: bytes) -> int:
    """The offset of the one 8.3 directory entry with this 11-byte name."""
    at = image.find(name)
    assert at > 0 and image.find(name, at + 1) < 0
    return at


def test_deleted_fat_files_whose_clusters_were_reused(tmp_path: Path,
                                                      pictures: dict[str, bytes]) -> None:
    """GAP.JPG takes the first cluster, LIVE.JPG the next ones; the deleted OLD.JPG is made to
    start at LIVE.JPG's first cluster and PART.JPG at GAP.JPG's, freed, just before it."""
    image = fat_image(tmp_path / "fat.img", {"GAP.JPG": b"x" * 100,
                                             "LIVE.JPG": pictures["camera"],
                                             "OLD.JPG": pictures["coffee"],
                                             "PART.JPG": pictures["chelsea"]},
                      delete=("GAP.JPG", "OLD.JPG", "PART.JPG"))
    data = bytearray(image.read_bytes())
    live = fat_entry(data, b"LIVE    JPG")
    start = int.from_bytes(data[live + 26: live + 28], "little")
    for name, cluster in ((b"\xe5LD     JPG", start), (b"\xe5ART    JPG", start - 1)):
        at = fat_entry(data, name)
        data[at + 26: at + 28] = cluster.to_bytes(2, "little")
    image.write_bytes(bytes(data))

    items, reads = walk_image(image)
    [old] = skips(items, "deleted-overwritten")
    assert old.locator.path == "fat.img/_LD.JPG" and "first block" in old.message
    # The Sleuth Kit recovers a deleted FAT file from the free clusters only, so PART.JPG
    # skips LIVE.JPG's clusters: nothing of it is counted as overwritten.
    part = by_path(items)["_ART.JPG"].info.locator
    assert part.attr("deleted") == "true" and part.attr("overwritten_bytes") is None
    content = reads[part.key()]
    assert isinstance(content, bytes) and pictures["camera"][-4096:] not in content
    assert by_path(items)["LIVE.JPG"].info.locator.attr("deleted") == "false"


def test_ext4_deleted_file_partly_reused_is_scanned_with_the_overwritten_bytes(
        tmp_path: Path, pictures: dict[str, bytes]) -> None:
    """On ext4 The Sleuth Kit reads a deleted file's blocks as its extents give them, live or
    not: the deleted file's extent is made to start one block before a live file's."""
    tree = stage(tmp_path / "tree", {"old.jpg": pictures["chelsea"]})
    image = tmp_path / "ext4.img"
    run("mke2fs", "-q", "-t", "ext4", "-b", "1024", "-d", str(tree), str(image), "8M")
    staged = stage(tmp_path / "more", {"live.jpg": pictures["camera"]}) / "live.jpg"
    run("debugfs", "-w", "-R", f"write {staged} live.jpg", str(image))

    def debugfs(request: str) -> str:
        return subprocess.run([tool("debugfs"), "-R", request, str(image)],
                              capture_output=True, text=True, check=True).stdout

    inode = debugfs("stat old.jpg").split()[1]
    live_block = int(debugfs("bmap live.jpg 0"))
    run("debugfs", "-w", "-R", "rm old.jpg", str(image))
    assert "not in use" in debugfs(f"testb {live_block - 1}")  # old.jpg's last block, freed
    run("debugfs", "-w", "-R", f"sif <{inode}> block[5] {live_block - 1}", str(image))

    items, reads = walk_image(image)
    old = by_path(items)["old.jpg"].info.locator
    size = len(pictures["chelsea"])
    taken = min(-(-size // 1024) - 1, -(-len(pictures["camera"]) // 1024)) * 1024
    assert old.attr("deleted") == "true" and old.attr("overwritten_bytes") == str(taken)
    content = reads[old.key()]
    assert isinstance(content, bytes) and content[1024:5120] == pictures["camera"][:4096]
    assert one_evidence(items).details["coverage"]["examined"]["deleted_files"] == 1


def test_e01_verification_fails_when_the_media_was_altered(store: Store, settings: Settings,
                                                          tmp_path: Path,
                                                          pictures: dict[str, bytes]) -> None:
    raw = partitioned(tmp_path / "disk.img", victim_fat(tmp_path / "fat.img", pictures))
    e01 = e01_of(raw, tmp_path / "exhibit")
    for segment in segments(tmp_path / "exhibit"):
        data = bytearray(segment.read_bytes())
        at = data.find(pictures["camera"][200:264])  # stored uncompressed: find and flip
        if at > 0:
            data[at] ^= 0xFF
            segment.write_bytes(bytes(data))
            break
    else:
        pytest.fail("the unrelated photograph is not in any segment file")
    report = build_report(store, run_scan(store, settings, str(e01)))
    [evidence] = report["evidence"]
    assert evidence["verified"] is False and evidence["stored_md5"] == hashlib.md5(
        raw.read_bytes()).hexdigest() != evidence["md5"]
    [error] = [e for e in report["errors"] if e["stage"] == "disk-image"]
    assert error["path"] == "exhibit.E01" and "verification failed" in error["message"]
    assert report["files_scanned"] == 5 and report["state"] == "done"  # the zip and its member

    # Without its last segment the media is incomplete and there is nothing to verify against.
    segments(tmp_path / "exhibit")[-1].unlink()
    items, _ = walk_image(e01)
    evidence_item = one_evidence(items)
    assert evidence_item.verified is None and evidence_item.stored_md5 is None
    stages = {p.stage for p in items if isinstance(p, Problem) and not p.skipped}
    assert {"read", "disk-image"} <= stages
    assert evidence_item.details["coverage"]["not_examined"]["read-errors"]["bytes"] > 0


def test_truncated_image_reports_the_lost_partition_and_scans_the_rest(
        store: Store, settings: Settings, tmp_path: Path, pictures: dict[str, bytes]) -> None:
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    fat = victim_fat(tmp_path / "fat.img", pictures)
    whole = partitioned(tmp_path / "disk.img", fat)
    cut = tmp_path / "cut.img"  # ends where the second partition would begin
    cut.write_bytes(whole.read_bytes()[: FAT_START * 512 + fat.stat().st_size])
    report = build_report(store, run_scan(store, settings, str(cut)))
    assert len(report["matches"]) == 3
    [error] = report["errors"]
    assert error["stage"] == "partition" and "past the end" in error["message"]
    [evidence] = report["evidence"]
    assert evidence["sha256"] == sha256_of(cut)
    assert evidence["details"]["coverage"]["not_examined"]["past-end-of-image"]["count"] == 1

    # Cut inside the file system: what lies before the cut is still read.
    inside = tmp_path / "inside.img"
    inside.write_bytes(whole.read_bytes()[: (FAT_START + 200) * 512])
    items, reads = walk_image(inside)
    problems = [(p.stage, p.locator.path) for p in items if isinstance(p, Problem)
                and not p.skipped]
    assert problems[0] == ("partition", "inside.img/2")  # ends past the end of the image
    assert problems[-1] == ("partition", "inside.img/4")  # starts past it
    lost = {path for stage, path in problems[1:-1]}
    assert lost and all(stage == "read" for stage, _ in problems[1:-1])
    read_whole = {Locator.from_key(key).path for key, value in reads.items()
                  if isinstance(value, bytes)}
    assert read_whole and not read_whole & lost
    assert one_evidence(items).details["coverage"]["not_examined"]["past-end-of-image"][
        "count"] == 2


def test_garbage_file_systems_and_partition_tables_never_raise(
        tmp_path: Path, pictures: dict[str, bytes]) -> None:
    fat = victim_fat(tmp_path / "fat.img", pictures)
    whole = partitioned(tmp_path / "disk.img", fat).read_bytes()
    noise = random.Random(0).randbytes(fat.stat().st_size)
    garbage = tmp_path / "garbage-fs.img"  # a sane table, random bytes where the FS should be
    garbage.write_bytes(whole[: FAT_START * 512] + noise + whole[FAT_START * 512 + len(noise):])
    items, _ = walk_image(garbage)
    # The Sleuth Kit takes random bytes for possible encryption.
    assert [p.locator.path for p in skips(items, "possibly-encrypted")] == ["garbage-fs.img/2"]
    assert [p.locator.path for p in skips(items, "unrecognised-filesystem")] == [
        "garbage-fs.img/4"]
    assert not [i for i in items if isinstance(i, Entry)]

    # A LUKS header in the second partition: an encrypted volume, not examined.
    luks = bytearray(whole)
    second = next(int(v["start"]) for v in one_evidence(items).details["volumes"]
                  if v["index"] == 4)
    luks[second: second + 6] = b"LUKS\xba\xbe"
    (tmp_path / "luks.img").write_bytes(bytes(luks))
    items, _ = walk_image(tmp_path / "luks.img")
    [encrypted] = skips(items, "encrypted-volume")
    assert encrypted.locator.path == "luks.img/4" and "LUKS" in encrypted.message
    assert len(by_path(items)) == 4  # the FAT partition is scanned all the same (with the zip)

    for seed in range(40):  # damaged tables, boot sectors, FATs and folders; truncations
        rng = random.Random(seed)
        data = bytearray(whole)
        for _ in range(rng.randint(1, 400)):
            lo, hi = rng.choice([(0, 1024), (FAT_START * 512, FAT_START * 512 + 65536),
                                 (0, len(data))])
            data[rng.randrange(lo, hi)] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        path = tmp_path / f"damaged-{seed}.img"
        path.write_bytes(bytes(data))
        source = open_source(path, LIMITS)
        items, reads = drain(source.walk())  # must not raise
        source.close()
        if isinstance(detect_disk_image(str(path), LIMITS), DiskImageSource):
            assert one_evidence(items).sha256 == sha256_of(path)
        assert all(isinstance(v, (bytes, HashsvcError)) for v in reads.values())


def test_detection_is_by_content_and_conservative(tmp_path: Path,
                                                  pictures: dict[str, bytes]) -> None:
    fat = victim_fat(tmp_path / "fat.img", pictures)
    disk = partitioned(tmp_path / "disk.img", fat)
    named_like_a_photo = tmp_path / "holiday.jpg"
    shutil.copy(fat, named_like_a_photo)
    for path in (fat, disk, named_like_a_photo, e01_of(disk, tmp_path / "exhibit")):
        assert isinstance(detect_disk_image(str(path), LIMITS), DiskImageSource), path

    jpeg = bytearray(pictures["astronaut"])
    jpeg[510:512] = b"\x55\xaa"  # the boot signature, but no sane partition entries
    (tmp_path / "photo.jpg").write_bytes(bytes(jpeg))
    (tmp_path / "random.bin").write_bytes(random.Random(1).randbytes(MiB))
    # A zip whose member data starts at byte 446, so that the disk's partition table and boot
    # signature sit where an MBR has them: an archive all the same.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("m" * (446 - 30), disk.read_bytes()[446:4096])
    assert buf.getvalue()[446:512] == disk.read_bytes()[446:512]
    (tmp_path / "stored.zip").write_bytes(buf.getvalue())
    os.mkfifo(tmp_path / "fifo")
    for name in ("photo.jpg", "random.bin", "stored.zip", "fifo"):
        assert detect_disk_image(str(tmp_path / name), LIMITS) is None, name

    fake = tmp_path / "fake.E01"  # the signature and nothing else
    fake.write_bytes(b"EVF\x09\x0d\x0a\xff\x00" + bytes(100))
    items, _ = drain(open_source(fake, LIMITS).walk())
    assert [(type(i).__name__, i.stage) for i in items if isinstance(i, Problem)] == [
        ("Problem", "disk-image")]
    assert not [i for i in items if isinstance(i, (Entry, ContainerSeen, EvidenceSeen))]


def test_abandoned_walk_is_closed_by_the_source(tmp_path: Path,
                                                pictures: dict[str, bytes]) -> None:
    image = partitioned(tmp_path / "disk.img", victim_fat(tmp_path / "fat.img", pictures))

    def open_on_image() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(image)
                   for fd in os.listdir("/proc/self/fd"))

    source = detect_disk_image(str(image), LIMITS)  # the reader itself, in this process
    assert source is not None
    walk = source.walk()
    assert next(i for i in walk if isinstance(i, Entry))
    assert open_on_image() >= 1
    source.close()  # as a cancelled scan does, with the walk left part-way
    assert open_on_image() == 0
    assert not [t for t in threading.enumerate() if t.name == "disk-image-hash"]
    walk.close()  # the walk's own clean-up finds everything closed already
    assert open_on_image() == 0

    def readers() -> list[multiprocessing.Process]:
        return [p for p in multiprocessing.active_children() if p.name == "hashsvc-reader"]

    guarded = open_source(image, LIMITS)  # as scans open it: the reader in a child process
    walk = guarded.walk()
    assert next(i for i in walk if isinstance(i, Entry))
    assert len(readers()) == 1
    guarded.close()
    assert readers() == []
    walk.close()
