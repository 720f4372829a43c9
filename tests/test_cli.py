"""End-to-end tests of the command line, run as a user would run it (real processes)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import py7zr
import pytest
from PIL import Image

from conftest import encode, photo

VICTIM = ("astronaut", "coffee", "chelsea", "rocket")


def hashsvc(args: list[str], env: dict[str, str], stdin: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script."""
    exe = Path(sys.executable).with_name("hashsvc")
    return subprocess.run([str(exe), *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI runs: own data folder, small archive limits, two workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env.update({"HASHSVC_DATA_DIR": str(tmp_path / "data"), "HASHSVC_WORKERS": "2",
                "HASHSVC_MAX_EXPANDED_BYTES": str(64 * 1024 * 1024),
                "HASHSVC_MAX_FILE_BYTES": str(48 * 1024 * 1024),
                "HASHSVC_MAX_ARCHIVE_DEPTH": "4",
                "HASHSVC_MAX_IMAGE_PIXELS": str(50_000_000)})
    return env


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    """A tar archive (optionally compressed) of regular members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def build_hostile_dump(root: Path) -> tuple[set[str], dict[str, str]]:
    """A dump with planted copies and every hostile case; returns (planted paths, hostile)."""
    root.mkdir()
    planted: set[str] = set()
    hostile: dict[str, str] = {}  # path → expected error stage

    def put(rel: str, data: bytes) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    astro, coffee, chelsea, rocket = (photo(n) for n in VICTIM)
    put("DCIM/small.jpg", encode(astro.resize((200, 200)), "JPEG", quality=60))
    put("DCIM/coffee.png", encode(coffee, "PNG"))
    put("DCIM/turned.jpg", encode(chelsea.transpose(Image.Transpose.ROTATE_270), "JPEG"))
    put("DCIM/wrong-extension.txt", encode(rocket, "WEBP"))
    planted |= {"DCIM/small.jpg", "DCIM/coffee.png", "DCIM/turned.jpg",
                "DCIM/wrong-extension.txt"}
    for name in ("camera", "retina", "hubble_deep_field", "coins", "moon"):
        put(f"DCIM/other/{name}.jpg", encode(photo(name), "JPEG"))

    put("archives/chat.zip", zip_bytes({
        "media/a.jpg": encode(astro, "JPEG", quality=75),
        "../../../escaped.jpg": encode(coffee, "JPEG"),
        "/abs/path.jpg": encode(photo("camera"), "JPEG")}))
    planted |= {"archives/chat.zip/media/a.jpg", "archives/chat.zip/escaped.jpg"}
    hostile["archives/chat.zip/escaped.jpg"] = "member-name"
    hostile["archives/chat.zip/abs/path.jpg"] = "member-name"
    put("archives/sd.tar.gz", tar_bytes({"Pictures/m.jpg": encode(
        chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG")}, "w:gz"))
    put("archives/sd.tar.bz2", tar_bytes({"x/coffee.jpg": encode(coffee, "JPEG")}, "w:bz2"))
    put("archives/sd.tar.xz", tar_bytes({"y/rocket.png": encode(rocket, "PNG")}, "w:xz"))
    planted |= {"archives/sd.tar.gz/Pictures/m.jpg", "archives/sd.tar.bz2/x/coffee.jpg",
                "archives/sd.tar.xz/y/rocket.png"}
    inner_zip = zip_bytes({"deep/astro.jpg": encode(astro, "JPEG", quality=80)})
    put("archives/nested.tar", tar_bytes({"backup.zip": inner_zip}))
    planted.add("archives/nested.tar/backup.zip/deep/astro.jpg")
    seven = root / "archives" / "photos.7z"
    with py7zr.SevenZipFile(seven, "w") as sz:
        sz.writestr(encode(rocket.resize((320, 213)), "JPEG"), "cam/rocket.jpg")
    planted.add("archives/photos.7z/cam/rocket.jpg")

    # Hostile files.
    data = encode(astro, "JPEG")
    put("bad/truncated.jpg", data[: len(data) // 3])
    hostile["bad/truncated.jpg"] = "decode"
    put("bad/empty.jpg", b"")
    put("bad/random.jpg", os.urandom(3000))
    hostile["bad/random.jpg"] = "sniff"
    put("bad/bomb.png", encode(Image.new("L", (10000, 10000)), "PNG"))
    hostile["bad/bomb.png"] = "decode"
    put("bad/zipbomb.zip", zip_bytes({"big.bin": b"\0" * (100 * 1024 * 1024)}))
    nested = encode(astro, "JPEG")
    for level in range(8):
        nested = zip_bytes({f"level{level}.zip" if level else "deep.jpg": nested})
    put("bad/nested-deep.zip", nested)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("evil-link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        dev = tarfile.TarInfo("dev-null")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(dev)
    put("bad/specials.tar", buf.getvalue())
    os.symlink("/etc/passwd", root / "bad" / "link-to-passwd")
    os.mkfifo(root / "bad" / "a-fifo")
    return planted, hostile


def test_hash_register_scan_end_to_end(tmp_path: Path, cli_env: dict[str, str]) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in VICTIM:
        (victim / f"{name}.jpg").write_bytes(encode(photo(name), "JPEG", quality=95))
    hashed = hashsvc(["hash", *sorted(str(p) for p in victim.iterdir())], cli_env)
    assert hashed.returncode == 0, hashed.stderr
    lines = [json.loads(x) for x in hashed.stdout.splitlines()]
    assert [Path(x["file"]).stem for x in lines] == sorted(VICTIM)
    for x in lines:
        assert {"sha256", "md5", "hashes"} <= set(x) and {"pdq", "phash"} <= set(x["hashes"])
    (tmp_path / "hashes.jsonl").write_text(hashed.stdout)

    reg = hashsvc(["register", "--case", "RPH-2025-0042", str(tmp_path / "hashes.jsonl")],
                  cli_env)
    assert reg.returncode == 0, reg.stderr
    assert json.loads(reg.stdout)["images_added"] == 4
    again = hashsvc(["register", "--case", "RPH-2025-0042", "-"], cli_env, stdin=hashed.stdout)
    assert json.loads(again.stdout)["images_added"] == 0
    assert json.loads(again.stdout)["hashes_added"] == 0

    dump = tmp_path / "dump"
    planted, hostile = build_hostile_dump(dump)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "report.json"
    res = hashsvc(["scan", str(dump), "--report", str(out)], cli_env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["report.json"])
    assert not (tmp_path / "escaped.jpg").exists() and not Path("/abs/path.jpg").exists()

    report = json.loads(out.read_text())
    found = {m["path"] for m in report["matches"]}
    assert found == planted
    for m in report["matches"]:
        assert m["case"] == "RPH-2025-0042"
        assert {"sha256", "algorithm", "distance", "distances"} <= set(m)
        assert m["distances"]["pdq"] <= 31
    errors = {(e["path"], e["stage"]) for e in report["errors"]}
    for path, stage in hostile.items():
        assert (path, stage) in errors, (path, stage, sorted(errors))
    error_paths = {e["path"] for e in report["errors"]}
    assert any(p.startswith("bad/zipbomb.zip") for p in error_paths)
    assert any(p.startswith("bad/nested-deep.zip") for p in error_paths)
    for e in report["errors"]:
        assert e["message"]
    assert report["skipped"].get("symlink", 0) >= 2  # the tar member and the directory link
    assert report["skipped"].get("special-file", 0) >= 2  # the tar device and the FIFO
    assert report["skipped"].get("empty", 0) == 1
    assert report["images_hashed"] >= len(planted) + 5
    assert report["files_scanned"] >= report["images_hashed"] + 8
    assert report["scan_id"] and report["source"] == str(dump)


def test_hash_reports_failures_in_exit_status(tmp_path: Path, cli_env: dict[str, str]) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(encode(photo("coffee"), "PNG"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
    res = hashsvc(["hash", str(good), str(bad), str(tmp_path / "missing.jpg")], cli_env)
    assert res.returncode == 1
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert "hashes" in lines[0] and "error" in lines[1] and "error" in lines[2]


def test_register_rejects_malformed_lines(tmp_path: Path, cli_env: dict[str, str]) -> None:
    res = hashsvc(["register", "--case", "C1", "-"], cli_env, stdin='{"sha256": 5}\n')
    assert res.returncode != 0
    assert "sha256" in res.stderr and "Traceback" not in res.stderr
    res = hashsvc(["register", "--case", "C1", "-"], cli_env, stdin="not json\n")
    assert res.returncode != 0 and "line 1" in res.stderr


def test_scan_of_archive_source_and_progress(tmp_path: Path, cli_env: dict[str, str]) -> None:
    line = hashsvc(["hash", "-"], cli_env)  # '-' is not a file: an error line, exit 1
    assert line.returncode == 1
    img = tmp_path / "v.png"
    img.write_bytes(encode(photo("chelsea"), "PNG"))
    hashed = hashsvc(["hash", str(img)], cli_env)
    hashsvc(["register", "--case", "C2", "-"], cli_env, stdin=hashed.stdout)
    archive = tmp_path / "dcim.zip"
    archive.write_bytes(zip_bytes({"IMG_1.jpg": encode(photo("chelsea"), "JPEG")}))
    res = hashsvc(["scan", str(archive), "--report", str(tmp_path / "r.json")], cli_env)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    # An archive given as the source is the first link of every chain inside it.
    assert [m["path"] for m in report["matches"]] == ["dcim.zip/IMG_1.jpg"]
    assert "file" in res.stderr  # the progress bar's unit


def test_demo_runs_and_finds_every_planted_copy(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    res = hashsvc(["demo", "--workdir", str(tmp_path / "demo")], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "unrelated files matched: 0" in res.stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert len(report["matches"]) == 7
    crop = [m for m in report["matches"] if m["path"] == "DCIM/100APPLE/IMG_0004.JPG"]
    assert crop[0]["algorithm"] == "orb" and crop[0]["distances"]["orb_inliers"] >= 12
