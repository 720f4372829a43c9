"""Videos: sniffing, bounded decoding, frame hashes, registration, scans, withdrawal, the CLI.

The videos are generated here with PyAV (benchmarks/eval_video.py makes them): pans and zooms
over packaged photographs and seeded random scenes, cut together, H.264 in MP4 at 320x240.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hashsvc.cli import _video_options, hash_line
from hashsvc.decode import DecodedImage
from hashsvc.errors import DecodeError, InputError
from hashsvc.hashing import hamming_hex, hash_bytes, hash_picture
from hashsvc.matching import BankMatcher, video_decision
from hashsvc.pipeline import Task, process_task, run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.store import Store
from hashsvc.video import NoVideoStream, hash_video_bytes, sniff_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.eval_video import (Shot, encode, fractal, still, transcode,  # noqa: E402
                                   video_frames)

from conftest import encode as encode_image, photo  # noqa: E402

SIZE = (320, 240)


@pytest.fixture(scope="module")
def videos() -> dict[str, bytes]:
    """A registered video, copies of it, a still from it, and an unrelated video."""
    original = encode(video_frames([Shot("astronaut", 2.0, 1), Shot(101, 2.0, 2),
                                    Shot("coffee", 2.0, 3)], size=SIZE))
    return {
        "original.mp4": original,
        # Another size and bit rate, in other containers and codecs.
        "reencoded.mov": transcode(original, "mov", size=(480, 360), bit_rate=300_000),
        "reencoded.webm": transcode(original, "webm", "libvpx", (240, 180), 200_000),
        "still.jpg": still(original, 2.9),
        "unrelated.mp4": encode(video_frames([Shot(201, 2.0, 4), Shot("rocket", 2.0, 5),
                                              Shot(202, 2.0, 6)], size=SIZE)),
    }


def video_line(tmp_path: Path, settings: Settings, data: bytes, name: str = "victim.mp4"
               ) -> dict[str, Any]:
    """The line ``hashsvc hash`` prints for a video, made by the same function."""
    path = tmp_path / name
    path.write_bytes(data)
    line = hash_line(str(path), True, settings.max_image_pixels, False,
                     _video_options(settings))
    assert "error" not in line, line
    return line


def test_sniffing_names_video_containers_and_leaves_pictures_alone(
        videos: dict[str, bytes]) -> None:
    assert sniff_video(videos["original.mp4"][:1024]) == "mp4"
    assert sniff_video(videos["reencoded.mov"][:1024]) == "mov"
    assert sniff_video(videos["reencoded.webm"][:1024]) == "webm"
    frames = [np.asarray(fractal(7).resize((64, 48)))] * 5
    assert sniff_video(encode(frames, "avi", "mpeg4")[:1024]) == "avi"
    assert sniff_video(encode(frames, "matroska")[:1024]) == "mkv"
    assert sniff_video(encode(frames, "mpegts", "mpeg2video")[:1024]) == "mpegts"
    # HEIF and AVIF are ISO BMFF too, and pictures, whatever other brands they list.
    for brands in (b"heic\x00\x00\x00\x00mif1heic", b"avif\x00\x00\x00\x00mif1miaf",
                   b"isom\x00\x00\x00\x00isommif1"):
        head = (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00" * 64
        assert sniff_video(head) is None, brands
    assert sniff_video(b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom" + b"\0" * 64) is None
    assert sniff_video(videos["still.jpg"][:1024]) is None
    assert sniff_video(os.urandom(1024)) is None


def test_hash_line_of_a_video(tmp_path: Path, settings: Settings,
                              videos: dict[str, bytes]) -> None:
    line = video_line(tmp_path, settings, videos["original.mp4"])
    assert line["media"] == "video" and line["format"] == "mp4"
    assert (line["width"], line["height"]) == SIZE and abs(line["duration"] - 6.0) < 0.1
    assert line["hashes"] == {} and line["size"] == len(videos["original.mp4"])
    import hashlib

    assert line["sha256"] == hashlib.sha256(videos["original.mp4"]).hexdigest()
    assert line["md5"] == hashlib.md5(videos["original.mp4"]).hexdigest()
    times = [f["t"] for f in line["frames"]]
    assert times == sorted(times) and 6 <= len(times) <= 30
    for frame in line["frames"]:
        assert {"pdq", "phash", "dhash"} <= set(frame["hashes"])
        assert frame["quality"]["pdq"] >= settings.min_pdq_quality
        assert len(frame["variants"]["pdq"]) >= 8  # the rotations, as for pictures
    # Pictures' lines are unchanged: no video fields.
    picture = tmp_path / "p.jpg"
    picture.write_bytes(videos["still.jpg"])
    image_line = hash_line(str(picture), True, settings.max_image_pixels)
    assert not {"media", "frames", "duration"} & set(image_line)


def test_a_still_taken_from_the_video_hashes_like_its_frame(videos: dict[str, bytes]) -> None:
    hs = hash_video_bytes(videos["original.mp4"])
    still_hs = hash_bytes(videos["still.jpg"])
    nearest = min(hamming_hex(still_hs.hashes["pdq"], f.hashes["pdq"]) for f in hs.frames)
    assert nearest <= 16  # DEDUPE_DISTANCE: every moment is that close to a kept frame


def test_scan_finds_reencoded_copies_stills_and_exact_copies(
        any_store: Store, settings: Settings, tmp_path: Path,
        videos: dict[str, bytes]) -> None:
    any_store.register("CASE-V", [video_line(tmp_path, settings, videos["original.mp4"])])
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "copy.mp4").write_bytes(videos["original.mp4"])
    for name in ("reencoded.mov", "reencoded.webm", "still.jpg", "unrelated.mp4"):
        (dump / name).write_bytes(videos[name])
    # Broken files: the moov box of this MP4 is at its end, so half of it is no video at all.
    (dump / "truncated.mp4").write_bytes(videos["original.mp4"][:len(videos["original.mp4"])
                                                                 // 2])
    (dump / "notes.mp4").write_bytes(b"not a video at all" * 100)
    (dump / "junk.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(4000))
    scan_id = run_scan(any_store, settings, str(dump))
    report = build_report(any_store, scan_id)
    found = {m["path"]: m for m in report["matches"]}
    assert set(found) == {"copy.mp4", "reencoded.mov", "reencoded.webm", "still.jpg"}
    assert all(m["case"] == "CASE-V" for m in found.values())
    assert found["copy.mp4"]["algorithm"] == "sha256" and found["copy.mp4"]["distance"] == 0
    for name in ("reencoded.mov", "reencoded.webm"):
        video = found[name]["video"]
        assert video["rule"] == "frames" and found[name]["format"] in ("mov", "webm")
        assert video["matched_frames"] >= 0.5 * min(video["scanned_frames"],
                                                    video["registered_frames"])
        assert all(f["distance"] <= 31 and abs(f["t"] - f["registered_t"]) < 0.5
                   for f in video["frames"])
    # The still names the video and the moment of the frame it matched.
    assert found["still.jpg"]["video"]["frames"][0]["registered_t"] == pytest.approx(2.9,
                                                                                     abs=0.5)
    errors = {e["path"]: e for e in report["errors"]}
    assert set(errors) == {"truncated.mp4", "notes.mp4", "junk.mkv"}
    assert errors["truncated.mp4"]["stage"] == "decode"
    assert errors["notes.mp4"]["stage"] == "sniff"
    assert report["state"] == "done" and report["files_scanned"] == 8


def test_video_rule() -> None:
    from hashsvc.matching import time_coverage
    from hashsvc.settings import load_settings

    s = load_settings(env={})
    assert (s.video_min_frames, s.video_min_fraction) == (3, 0.5)
    assert video_decision(6, 40, 0.2, s) is False  # a shared intro or outro
    assert video_decision(20, 40, 0.6, s) is True
    assert video_decision(2, 40, 0.9, s) is False  # too few frames
    assert video_decision(1, 1, 1.0, s) is True  # a static video: its one frame
    assert video_decision(0, 0, 1.0, s) is False
    # Each kept frame stands for the time to the next one; the last to the end.
    times = [0.2, 1.0, 1.4, 4.0]
    assert time_coverage(times, 5.0, {0.2, 1.0}) == pytest.approx((1.2 / 4.8, 4.8))
    assert time_coverage(times, 5.0, {4.0}) == pytest.approx((1.0 / 4.8, 4.8))
    assert time_coverage([], None, set()) == (0.0, 0.0)


def test_withdrawal_removes_every_frame(any_store: Store, settings: Settings, tmp_path: Path,
                                        videos: dict[str, bytes]) -> None:
    line = video_line(tmp_path, settings, videos["original.mp4"])
    first = any_store.register("CASE-W", [line])
    assert (first.images_added, first.images_existing) == (1, 0)
    again = any_store.register("CASE-W", [line])
    assert (again.images_added, again.images_existing, again.hashes_added) == (0, 1, 0)
    stats = any_store.bank_stats()
    assert stats["images"] == 1 and stats["videos"] == 1
    assert stats["video_frames"] == len(line["frames"])
    assert stats["hashes"]["pdq"] == sum(len(f["variants"]["pdq"]) for f in line["frames"])
    matcher = BankMatcher(any_store, settings, persist=False)
    copy = hash_video_bytes(videos["reencoded.mov"])
    assert [c.case for c in matcher.match_many([copy])[0]] == ["CASE-W"]
    assert any_store.withdraw_case("CASE-W") == 1  # files, not frames
    stats = any_store.bank_stats()
    assert stats["images"] == stats["video_frames"] == 0 and stats["hashes"] == {}
    matcher.refresh()
    assert matcher.match_many([copy, hash_bytes(videos["still.jpg"])]) == [[], []]


def test_a_registered_picture_shown_in_a_video_matches(store: Store, settings: Settings
                                                       ) -> None:
    picture = fractal(11).resize(SIZE)
    store.register("CASE-P", [hash_bytes(encode_image(picture, "JPEG", quality=90),
                                         with_variants=True).to_json()])
    frames = video_frames([Shot(401, 2.0, 9)], size=SIZE, fade=0.0)
    frames += [np.asarray(picture)] * 50  # a slideshow: the picture for two seconds
    slideshow = hash_video_bytes(encode(frames))
    [cands] = BankMatcher(store, settings, persist=False).match_many([slideshow])
    assert [c.case for c in cands] == ["CASE-P"] and cands[0].distance <= 31
    assert cands[0].video["frames"][0]["t"] == pytest.approx(2.0, abs=0.3)


def test_register_rejects_malformed_frames(store: Store) -> None:
    base = {"sha256": "a" * 64, "md5": "b" * 32, "media": "video"}
    good = {"t": 1.0, "hashes": {"pdq": "0" * 64}, "quality": {"pdq": 90}}
    for frames, message in (([{"t": -1, "hashes": good["hashes"]}], "t must"),
                            ([{"t": 1, "hashes": {"pdq": "zz"}}], "pdq"),
                            ([{"t": 1, "hashes": {}}], "no hashes"),
                            ([{**good, "sha256": "a" * 64}], "perceptual"),
                            ([{**good, "quality": {"pdq": 101}}], "quality"),
                            ("x", "list")):
        with pytest.raises(InputError, match=message):
            store.register("C", [{**base, "frames": frames}])
    with pytest.raises(InputError, match="media"):
        store.register("C", [{**base, "media": "image", "frames": [good]}])
    assert store.bank_stats()["images"] == 0


def test_static_and_flat_videos_keep_few_frames() -> None:
    picture = np.asarray(fractal(3).resize(SIZE))
    static = hash_video_bytes(encode([picture] * 100))
    assert len(static.frames) == 1 and static.duration == pytest.approx(4.0)
    flat = hash_video_bytes(encode([np.full((240, 320, 3), i, np.uint8) for i in range(100)]))
    assert flat.frames == () and flat.media == "video"  # matches by its exact hashes only


def test_rotated_video_is_hashed_upright() -> None:
    img = photo("chelsea").resize(SIZE)
    data = encode([np.asarray(img)] * 10)
    # Patch the track header's matrix to "display turned 90 degrees clockwise", as a phone
    # held upright writes it.
    at = data.index(b"tkhd") - 4 + 48
    matrix = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, SIZE[1] << 16, 0, 0x40000000)
    hs = hash_video_bytes(data[:at] + matrix + data[at + 36:])
    assert (hs.width, hs.height) == (SIZE[1], SIZE[0])
    upright = img.transpose(Image.Transpose.ROTATE_270)
    expected = hash_picture(DecodedImage(upright, "png", *upright.size),
                            {"sha256": "", "md5": ""}, 0)
    assert hamming_hex(expected.hashes["pdq"], hs.frames[0].hashes["pdq"]) <= 8


def test_broken_videos_fail_cleanly_or_say_what_was_decoded(videos: dict[str, bytes],
                                                            tmp_path: Path) -> None:
    data = videos["original.mp4"]
    for bad in (data[:len(data) // 2], data[:200], b"\x1a\x45\xdf\xa3" + os.urandom(3000),
                b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x01" * 3000,
                data[:40] + os.urandom(5000)):
        with pytest.raises(DecodeError):
            hash_video_bytes(bad)
    # A file whose index comes first but whose frames were cut off: hashed in part, and said.
    import av

    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for arr in video_frames([Shot(301, 2.0, 7), Shot(302, 2.0, 8)], size=SIZE):
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    whole = path.read_bytes()
    cut = hash_video_bytes(whole[:int(len(whole) * 0.6)])
    assert cut.partial and "of the 100 frames" in cut.partial and cut.frames
    assert hash_video_bytes(whole).partial is None
    # Audio only: not a video, not an error.
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=48000)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate = 48000
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    with pytest.raises(NoVideoStream):
        hash_video_bytes(buf.getvalue())


def test_a_video_over_max_file_bytes_is_hashed_from_its_path(tmp_path: Path,
                                                             videos: dict[str, bytes]) -> None:
    path = tmp_path / "big.mov"
    path.write_bytes(videos["reencoded.mov"])
    res = process_task(Task("k", path=str(path), max_file_bytes=1000, name="big.mov"))
    assert res.status == "hashed" and res.hashset is not None and res.hashset.frames
    assert res.size == len(videos["reencoded.mov"]) and res.exact["sha256"]
    picture = tmp_path / "big.png"
    picture.write_bytes(encode_image(photo("coffee"), "PNG"))
    assert process_task(Task("p", path=str(picture), max_file_bytes=1000)).status == "error"


def test_hash_and_register_on_the_command_line(tmp_path: Path, videos: dict[str, bytes]
                                               ) -> None:
    from test_cli import hashsvc

    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env.update({"HASHSVC_DATA_DIR": str(tmp_path / "data"), "HASHSVC_WORKERS": "1"})
    (tmp_path / "clip.mp4").write_bytes(videos["original.mp4"])
    (tmp_path / "photo.jpg").write_bytes(videos["still.jpg"])
    hashed = hashsvc(["hash", str(tmp_path / "clip.mp4"), str(tmp_path / "photo.jpg")], env)
    assert hashed.returncode == 0, hashed.stderr
    lines = [json.loads(x) for x in hashed.stdout.splitlines()]
    assert lines[0]["media"] == "video" and lines[0]["frames"] and "media" not in lines[1]
    reg = hashsvc(["register", "--case", "CASE-CLI", "-"], env, stdin=hashed.stdout)
    assert reg.returncode == 0, reg.stderr
    assert json.loads(reg.stdout)["images_added"] == 2
    stats = json.loads(hashsvc(["bank", "stats"], env).stdout)
    assert stats["videos"] == 1 and stats["video_frames"] == len(lines[0]["frames"])


def test_the_api_registers_video_lines(settings: Settings, tmp_path: Path,
                                       videos: dict[str, bytes]) -> None:
    from test_api import api_settings, make_api, new_case

    api = make_api(api_settings(settings, tmp_path))
    try:
        case = new_case(api)
        line = video_line(tmp_path, settings, videos["original.mp4"])
        path = f"/v1/cases/{case['case_id']}/hashes"
        response = api.call("POST", path, "charity", json=[line])
        assert response.status_code == 200, response.json
        assert response.json["images_added"] == 1
        shown = api.call("GET", f"/v1/cases/{case['case_id']}", "charity").json
        assert shown["images"] == 1 and shown["hashes"] > len(line["frames"])
        bad = {**line, "frames": [{"t": "soon", "hashes": {}}]}
        refused = api.call("POST", path, "charity", json=[bad])
        assert refused.status_code == 400 and refused.json["index"] == 0
        # A platform looking up frames or a still of the video gets one reference: the video.
        still_pdq = hash_bytes(videos["still.jpg"]).hashes["pdq"]
        queries = [{"algorithm": "pdq", "value": v} for v in
                   (line["frames"][0]["hashes"]["pdq"], line["frames"][-1]["hashes"]["pdq"],
                    still_pdq)] + [{"algorithm": "sha256", "value": line["sha256"]}]
        results = api.call("POST", "/v1/lookup", "platform", json={"hashes": queries}).json
        refs = {m["match_ref"] for r in results["results"] for m in r["matches"]}
        assert len(refs) == 1 and all(r["matches"] for r in results["results"])
    finally:
        api.store.close()
