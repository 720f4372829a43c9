"""Measure video matching on generated videos: recall per re-encoding, and false matches.

Every video is generated here (nothing is downloaded): a few shots, each a slow pan and zoom
over one picture (a photograph that scikit-image ships, or a seeded random "fractal" scene with
shapes) with a moving disc, cut together, faded in and out. Registered videos are encoded as
H.264 MP4 at 640x360, hashed the way `hashsvc hash` hashes them and registered; each is then
re-encoded in every way below, and stills are taken from it, to make the copies a scan would
find. Unrelated videos are made the same way from pictures and seeds no registered video uses;
some of them share a generated "platform outro" with some registered videos, the false-match
trap of frame matching. The matcher is the real one (a store in a temporary folder, the bank
indexes, the decision rule and the video rule), so the figures are the product's.

    python benchmarks/eval_video.py                 # print the tables
    python benchmarks/eval_video.py --write-docs    # also rewrite the tables in docs/video.md
    python benchmarks/eval_video.py --quick         # fewer videos (a smoke run)

Besides the headline at the configured rule, it sweeps the video rule (video_min_frames,
video_min_fraction) over the same frame matches: the matcher is run once with the rule off
(every pair with a matching frame is kept with its counts) and each rule is applied to those
counts with :func:`hashsvc.matching.video_decision`, the function the matcher uses.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashsvc.demo import photo  # noqa: E402
from hashsvc.hashing import HashSet, hash_bytes  # noqa: E402
from hashsvc.matching import BankMatcher, video_decision  # noqa: E402
from hashsvc.settings import Settings, load_settings  # noqa: E402
from hashsvc.store import Store  # noqa: E402
from hashsvc.video import hash_video_bytes, limits_from  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "video.md"
BEGIN, END = "<!-- eval:begin -->", "<!-- eval:end -->"

#: Photographs scikit-image ships (chelsea and cat are one picture, so only chelsea).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "hubble_deep_field",
          "immunohistochemistry", "coins", "moon", "brick", "grass", "gravel", "clock", "cell",
          "horse")

# -- generated videos ---------------------------------------------------------------------------


def fractal(seed: int, size: tuple[int, int] = (960, 720)) -> Image.Image:
    """A distinct natural-looking picture per seed: coloured 1/f noise with a few shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    acc = np.zeros((h, w, 3), dtype=np.float32)
    for cells, amp in ((3, 1.0), (6, 0.6), (12, 0.35), (24, 0.2), (48, 0.12)):
        small = (rng.random((cells, cells * 4 // 3, 3)) * 255).astype(np.uint8)
        up = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC),
                        dtype=np.float32)
        acc += amp * (up - 127.5)
    acc -= acc.min()
    acc *= 255.0 / max(float(acc.max()), 1.0)
    img = Image.fromarray(acc.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        x1, y1 = x0 + int(rng.integers(40, w // 3)), y0 + int(rng.integers(40, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img


def source_picture(source: str | int) -> Image.Image:
    """A photograph by name, or a fractal scene by seed, as RGB at least 640 pixels wide."""
    if isinstance(source, int):
        return fractal(source)
    img = photo(source)
    if img.width < 960:
        scale = 960 / img.width
        img = img.resize((960, max(540, int(img.height * scale))), Image.Resampling.BICUBIC)
    return img


@dataclass(frozen=True)
class Shot:
    """A pan and zoom over one picture for ``seconds``."""

    source: str | int
    seconds: float
    seed: int


def shot_frames(shot: Shot, size: tuple[int, int], fps: float) -> Iterator[np.ndarray]:
    """The frames of one shot, as RGB arrays of ``size``."""
    rng = np.random.default_rng(shot.seed)
    src = source_picture(shot.source)
    sw, sh = src.size
    aspect = size[0] / size[1]

    def box(zoom: float, fx: float, fy: float) -> np.ndarray:
        bw = min(sw, sh * aspect) * zoom
        bh = bw / aspect
        return np.array([fx * (sw - bw), fy * (sh - bh), fx * (sw - bw) + bw,
                         fy * (sh - bh) + bh])

    # Most shots move gently (a handheld camera, people moving); one in four pans and zooms
    # fast, so that frames a second apart share nothing.
    fast = rng.random() < 0.25
    reach = shot.seconds * (0.25 if fast else 0.025)
    z0, x0, y0 = rng.uniform(0.6, 0.85), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)
    z1 = float(np.clip(z0 * rng.uniform(1 - reach, 1 + reach), 0.5, 0.95))
    x1, y1 = np.clip([x0, y0] + rng.uniform(-reach, reach, 2) * 2, 0.0, 1.0)
    start, end = box(z0, x0, y0), box(z1, x1, y1)
    disc = rng.integers(0, 256, 3)
    d0 = rng.uniform(0.1, 0.9, 2)
    d1 = np.clip(d0 + rng.uniform(-reach, reach, 2) * 2, 0.05, 0.95)
    n = max(1, int(round(shot.seconds * fps)))
    for i in range(n):
        a = i / max(1, n - 1)
        x0, y0, x1, y1 = (1 - a) * start + a * end
        img = src.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
        draw = ImageDraw.Draw(img)
        cx, cy = ((1 - a) * d0 + a * d1) * np.array(size)
        r = size[1] * 0.08
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in disc))
        yield np.asarray(img)


def outro_frames(size: tuple[int, int], fps: float, seconds: float = 2.0
                 ) -> Iterator[np.ndarray]:
    """A shared "platform outro": a logo zooming in on white (the same in every video)."""
    import skimage.data

    logo = Image.fromarray(skimage.data.logo()[..., :3])
    n = int(round(seconds * fps))
    for i in range(n):
        canvas = Image.new("RGB", size, (255, 255, 255))
        side = int(size[1] * (0.5 + 0.4 * i / max(1, n - 1)))
        mark = logo.resize((side, side), Image.Resampling.BILINEAR)
        canvas.paste(mark, ((size[0] - side) // 2, (size[1] - side) // 2))
        yield np.asarray(canvas)


def video_frames(shots: list[Shot], size: tuple[int, int] = (640, 360), fps: float = 25.0,
                 fade: float = 0.5, outro: bool = False) -> list[np.ndarray]:
    """Every frame of a video made of ``shots``, faded in from and out to black."""
    frames = [f for shot in shots for f in shot_frames(shot, size, fps)]
    k = int(round(fade * fps))
    for i in range(min(k, len(frames) // 2)):
        scale = i / k
        frames[i] = (frames[i] * scale).astype(np.uint8)
        frames[-1 - i] = (frames[-1 - i] * scale).astype(np.uint8)
    if outro:
        frames.extend(outro_frames(size, fps))
    return frames


def encode(frames: Iterable[np.ndarray], fmt: str = "mp4", codec: str = "libx264",
           fps: float = 25.0, bit_rate: int | None = None, crf: int | None = 20,
           size: tuple[int, int] | None = None) -> bytes:
    """Encode RGB frames with PyAV (to ``size`` when given); returns the file's bytes."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        options: dict[str, str] = {}
        if codec.startswith("libx264"):
            options["preset"] = "veryfast"
            if crf is not None and bit_rate is None:
                options["crf"] = str(crf)
        elif codec.startswith("libvpx"):
            options.update({"deadline": "realtime", "cpu-used": "8"})
        stream.options = options
        if bit_rate:
            stream.bit_rate = bit_rate
        elif not codec.startswith("libx264"):
            stream.bit_rate = 2_000_000
        first = True
        for arr in frames:
            img = Image.fromarray(arr)
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BICUBIC)
            if first:
                stream.width, stream.height = img.size
                first = False
            frame = av.VideoFrame.from_image(img)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def decode_frames(data: bytes) -> tuple[list[np.ndarray], list[float], float]:
    """Every frame of a video as RGB arrays, their times, and the frame rate."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time or 0.0))
    origin = times[0] if times else 0.0
    return frames, [t - origin for t in times], rate


def still(data: bytes, t: float, fmt: str = "JPEG", scale: float = 1.0) -> bytes:
    """A still of the video at ``t`` seconds, as a player's screenshot would save it."""
    frames, times, _ = decode_frames(data)
    k = max(i for i, ti in enumerate(times) if ti <= t + 1e-6)
    img = Image.fromarray(frames[k])
    if scale != 1.0:
        img = img.resize((int(img.width * scale), int(img.height * scale)),
                         Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def transcode(data: bytes, fmt: str = "mp4", codec: str = "libx264",
              size: tuple[int, int] | None = None, bit_rate: int | None = None,
              crf: int | None = 23, fps: float | None = None,
              start: float = 0.0, end: float | None = None,
              each: Callable[[Image.Image], Image.Image] | None = None) -> bytes:
    """Re-encode a video: another container, codec, size, bit rate, frame rate or excerpt, and
    ``each`` applied to every frame."""
    frames, times, rate = decode_frames(data)
    fps = fps or rate
    keep = [(f, t) for f, t in zip(frames, times)
            if t >= start - 1e-6 and (end is None or t < end)]
    out_frames: list[np.ndarray] = []
    duration = (keep[-1][1] - keep[0][1]) + 1 / rate
    n = max(1, int(round(duration * fps)))
    j = 0
    for i in range(n):  # the latest source frame at each output time
        t = keep[0][1] + i / fps
        while j + 1 < len(keep) and keep[j + 1][1] <= t + 1e-6:
            j += 1
        arr = keep[j][0]
        if each is not None:
            arr = np.asarray(each(Image.fromarray(arr)))
        out_frames.append(arr)
    return encode(out_frames, fmt, codec, fps, bit_rate, crf, size)


def letterbox(img: Image.Image) -> Image.Image:
    """16:9 content in a 4:3 frame with black bars above and below."""
    w, h = img.size
    canvas = Image.new("RGB", (w, w * 3 // 4), (0, 0, 0))
    canvas.paste(img, (0, (w * 3 // 4 - h) // 2))
    return canvas


def crop5(img: Image.Image) -> Image.Image:
    """5 % cut from every side."""
    w, h = img.size
    return img.crop((w // 20, h // 20, w - w // 20, h - h // 20))


#: Re-encodings of a registered video: name → (bytes → bytes).
TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {
    "exact-copy": lambda d: d,
    "h264-mp4-320x180-250k": lambda d: transcode(d, size=(320, 180), bit_rate=250_000),
    "h264-mov-crf38": lambda d: transcode(d, "mov", crf=38),
    "h264-mkv-854x480": lambda d: transcode(d, "matroska", size=(854, 480), crf=26),
    "vp8-webm-480x270-300k": lambda d: transcode(d, "webm", "libvpx", (480, 270), 300_000),
    "mpeg4-avi-320x180": lambda d: transcode(d, "avi", "mpeg4", (320, 180), 400_000),
    "mpeg2-ts-640x360": lambda d: transcode(d, "mpegts", "mpeg2video", None, 1_500_000),
    "fps-15": lambda d: transcode(d, fps=15.0),
    "excerpt-3.3s-7.7s": lambda d: transcode(d, start=3.3, end=7.7),
    "letterbox-4:3": lambda d: transcode(d, each=letterbox),
    "mirror": lambda d: transcode(d, each=lambda im: im.transpose(
        Image.Transpose.FLIP_LEFT_RIGHT)),
    "brightness+25%": lambda d: transcode(d, each=lambda im: ImageEnhance.Brightness(im)
                                          .enhance(1.25)),
    "crop-5%": lambda d: transcode(d, size=(640, 360), each=crop5),
}

#: Stills taken from a registered video: name → (bytes, time) → bytes.
STILLS: dict[str, Callable[[bytes, float], bytes]] = {
    "still-jpeg": lambda d, t: still(d, t),
    "still-png-half-size": lambda d, t: still(d, t, "PNG", 0.5),
}


def plan(count: int, first_seed: int, photos: list[str], rng: np.random.Generator,
         outro_every: int = 0) -> list[tuple[list[Shot], bool]]:
    """``count`` videos of 3 or 4 shots (10 s in all); sources are never shared."""
    videos = []
    seed = first_seed
    for i in range(count):
        shots_n = int(rng.integers(3, 5))
        lengths = rng.dirichlet(np.ones(shots_n)) * (10.0 - 1.5 * shots_n) + 1.5
        sources: list[str | int] = []
        if photos:
            sources.append(photos.pop())
        while len(sources) < shots_n:
            sources.append(seed)
            seed += 1
        rng.shuffle(sources)  # type: ignore[arg-type]
        shots = [Shot(src, float(s), seed * 7 + k) for k, (src, s) in
                 enumerate(zip(sources, lengths))]
        videos.append((shots, bool(outro_every) and i % outro_every == 0))
    return videos


# -- the measurement --------------------------------------------------------------------------


def hash_line_of(data: bytes, settings: Settings, with_variants: bool) -> HashSet:
    """A video's hash set as ``hashsvc hash`` (registration) or a scan makes it."""
    return hash_video_bytes(data, with_variants=with_variants,
                            min_quality=settings.min_pdq_quality, limits=limits_from(settings))


def _original(job: tuple[list[Shot], bool, Settings, bool]) -> tuple[bytes, HashSet, float]:
    """Encode one generated video as registered (or unrelated) and hash it."""
    shots, outro, settings, with_variants = job
    frames = video_frames(shots, outro=outro)
    data = encode(frames)
    return data, hash_line_of(data, settings, with_variants), lag_distance(frames)


def _copy(job: tuple[str, bytes, Settings, float]) -> HashSet:
    """Make one copy of a registered video and hash it as a scan would."""
    name, data, settings, t = job
    if name in STILLS:
        return hash_bytes(STILLS[name](data, t))
    return hash_line_of(TRANSFORMS[name](data), settings, False)


def _degenerate(job: tuple[str, Settings]) -> HashSet:
    """A video of one still picture, or of flat colours."""
    name, settings = job
    if name == "unrelated-static":
        frames = [np.asarray(fractal(9999).resize((640, 360)))] * 250
    else:
        frames = [np.full((360, 640, 3), (i * 3) % 256, dtype=np.uint8) for i in range(250)]
    return hash_line_of(encode(frames), settings, False)


def _sampling(interval: float | None, dedupe: int | None) -> None:
    """Change the sampling constants of hashsvc.video in this process (for comparisons)."""
    import hashsvc.video

    if interval is not None:
        hashsvc.video.SAMPLE_INTERVAL = interval
    if dedupe is not None:
        hashsvc.video.DEDUPE_DISTANCE = dedupe


def run(quick: bool = False, workers: int = 0, interval: float | None = None,
        dedupe: int | None = None) -> dict[str, Any]:
    """Build the set, register, scan every copy; returns the figures."""
    from concurrent.futures import ProcessPoolExecutor

    _sampling(interval, dedupe)

    rng = np.random.default_rng(20250601)
    n_reg, n_unrel = (4, 6) if quick else (12, 24)
    photos = list(PHOTOS)
    rng.shuffle(photos)  # type: ignore[arg-type]
    reg_photos, unrel_photos = photos[: len(photos) // 2], photos[len(photos) // 2:]
    registered_plan = plan(n_reg, 1000, reg_photos, rng, outro_every=3)
    unrelated_plan = plan(n_unrel, 5000, unrel_photos, rng, outro_every=3)
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(max_workers=workers or os.cpu_count(), initializer=_sampling,
                                initargs=(interval, dedupe)) as pool:
        settings = load_settings(env={}, data_dir=tmp, workers=1)
        store = Store.open(settings)
        t0 = time.perf_counter()
        made = list(pool.map(_original, [(shots, outro, settings, True)
                                         for shots, outro in registered_plan]))
        build_seconds = time.perf_counter() - t0
        originals = [data for data, _, _ in made]
        reg_stats = [(len(hs.frames), hs.duration or 0.0) for _, hs, _ in made]
        for i, (_, hs, _) in enumerate(made):
            store.register(f"V{i:02d}", [hs.to_json()])
        h0 = time.perf_counter()
        hash_line_of(originals[0], settings, True)
        hash_seconds = time.perf_counter() - h0
        jobs: list[tuple[str, int | None, Any]] = []
        for name in TRANSFORMS:
            jobs += [(name, i, (name, data, settings, 0.0)) for i, data in enumerate(originals)]
        for name in STILLS:
            jobs += [(name, i, (name, data, settings, float(rng.uniform(0.8, 8.5))))
                     for i, data in enumerate(originals)]
        copies = list(pool.map(_copy, [job for _, _, job in jobs], chunksize=2))
        scans: list[tuple[str, int | None, HashSet]] = [
            (name, i, hs) for (name, i, _), hs in zip(jobs, copies)]
        unrelated = list(pool.map(_original, [(shots, outro, settings, False)
                                              for shots, outro in unrelated_plan]))
        for (shots, outro), (_, hs, _) in zip(unrelated_plan, unrelated):
            scans.append(("unrelated" + ("+outro" if outro else ""), None, hs))
        for name, hs in zip(("unrelated-static", "unrelated-flat"), pool.map(
                _degenerate, [("unrelated-static", settings), ("unrelated-flat", settings)])):
            scans.append((name, None, hs))
        permissive = settings.replace(video_min_frames=1, video_min_fraction=0.0)
        matcher = BankMatcher(store, permissive, persist=False)
        found = matcher.match_many([hs for _, _, hs in scans])
        total_seconds = time.perf_counter() - t0
        store.close()
    motion = [lag for _, _, lag in made]
    result = summarise(settings, scans, found, reg_stats,
                       [len(hs.frames) for _, hs, _ in unrelated], hash_seconds, total_seconds)
    result["motion"] = motion
    import hashsvc.video

    result["sampling"] = (hashsvc.video.SAMPLE_INTERVAL, hashsvc.video.DEDUPE_DISTANCE)
    result["build_seconds"] = build_seconds
    return result


def lag_distance(frames: list[np.ndarray], fps: float = 25.0) -> float:
    """Mean PDQ distance between frames one second apart: how fast the content moves."""
    from hashsvc.hashing import algorithm, prepare

    step = int(round(fps / 5))
    codes = [int(algorithm("pdq").compute(prepare(Image.fromarray(f)))[0], 16)
             for f in frames[::step]]
    lag = 5  # candidates one second apart
    return float(np.mean([(a ^ b).bit_count() for a, b in zip(codes, codes[lag:])]))


RULES = [(1, 0.0), (2, 0.0), (3, 0.0), (3, 0.25), (3, 0.5), (3, 0.75), (5, 0.5)]


def summarise(settings: Settings, scans: list[tuple[str, int | None, HashSet]],
              found: list[list[Any]], reg_stats: list[tuple[int, float]],
              unrelated_frames: list[int], hash_seconds: float,
              build_seconds: float) -> dict[str, Any]:
    """Recall and false matches per kind of copy, at the configured rule and at others."""
    rule = (settings.video_min_frames, settings.video_min_fraction)
    rules = sorted(set(RULES) | {rule})

    def accepted(cand: Any, k: int, f: float) -> bool:
        video = cand.video or {}
        if cand.algorithm in ("sha256", "md5") or "rule" not in video:
            return True  # an exact copy, or the picture rule (a still, a registered picture)
        return video_decision(video["matched_frames"],
                              min(video["scanned_frames"], video["registered_frames"]),
                              video["coverage"],
                              settings.replace(video_min_frames=k, video_min_fraction=f))

    rows: dict[str, dict[str, Any]] = {}
    sweep = {r: {"found": 0, "copies": 0, "false": 0} for r in rules}
    margins: list[float] = []
    counted: list[float] = []  # the same by frame counts, for comparison
    for (kind, own, hs), cands in zip(scans, found):
        row = rows.setdefault(kind, {"kind": kind, "n": 0, "found": 0, "false": 0,
                                     "fractions": [], "distances": [], "missed": []})
        row["n"] += 1
        own_case = None if own is None else f"V{own:02d}"
        for k, f in rules:
            ok = [c for c in cands if accepted(c, k, f)]
            if own_case is not None:
                sweep[(k, f)]["copies"] += 1
                sweep[(k, f)]["found"] += any(c.case == own_case for c in ok)
            sweep[(k, f)]["false"] += sum(1 for c in ok if c.case != own_case)
        ok = [c for c in cands if accepted(c, *rule)]
        mine = [c for c in ok if c.case == own_case]
        row["false"] += sum(1 for c in ok if c.case != own_case)
        if own_case is not None:
            if mine:
                row["found"] += 1
                row["distances"].append(mine[0].distance)
                video = mine[0].video or {}
                if video.get("rule"):
                    row["fractions"].append(video["coverage"])
            else:
                row["missed"].append(own_case)
        for c in cands:  # how close unrelated pairs came (before the rule)
            if c.case != own_case and (c.video or {}).get("rule"):
                v = c.video
                margins.append(v["coverage"])
                counted.append(v["matched_frames"] / max(1, min(v["scanned_frames"],
                                                               v["registered_frames"])))
    copies = [r for r in rows.values() if not r["kind"].startswith("unrelated")]
    n_copies = sum(r["n"] for r in copies)
    pairs = sum(r["n"] for r in rows.values()) * len(reg_stats) - n_copies
    return {
        "settings": settings.matching_summary(), "rule": rule, "rows": list(rows.values()),
        "sweep": {f"{k}/{f}": v for (k, f), v in sweep.items()},
        "recall": sum(r["found"] for r in copies) / max(1, n_copies), "copies": n_copies,
        "false": sum(r["false"] for r in rows.values()), "pairs": pairs,
        "registered": len(reg_stats),
        "frames_per_video": [n for n, _ in reg_stats],
        "unrelated_frames": unrelated_frames,
        "hash_seconds_per_video_second": hash_seconds / max(1e-9, reg_stats[0][1]),
        "worst_unrelated_fraction": max(margins, default=0.0),
        "worst_unrelated_frame_share": max(counted, default=0.0),
        "unrelated_pairs_with_a_frame_match": len(margins),
        "seconds": build_seconds,
    }


def table(result: dict[str, Any]) -> str:
    """The Markdown tables of a run."""
    lines = ["| copy | found | recall | false matches | PDQ of best frame pair (mean / max) "
             "| time coverage of the shorter video (mean / min) | missed |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["kind"].startswith("unrelated"):
            continue
        d, f = r["distances"], r["fractions"]
        dist = f"{np.mean(d):.1f} / {max(d)}" if d else "–"
        frac = f"{np.mean(f):.2f} / {min(f):.2f}" if f else "–"
        lines.append(f"| {r['kind']} | {r['found']}/{r['n']} | {r['found'] / r['n']:.2f} | "
                     f"{r['false']} | {dist} | {frac} | {', '.join(r['missed']) or '–'} |")
    lines.append("")
    lines.append("| unrelated videos | scanned | false matches |")
    lines.append("|---|---|---|")
    for r in result["rows"]:
        if r["kind"].startswith("unrelated"):
            lines.append(f"| {r['kind']} | {r['n']} | {r['false']} |")
    lines.append("")
    lines.append("| rule (video_min_frames / video_min_fraction) | recall | false matches |")
    lines.append("|---|---|---|")
    for name, v in result["sweep"].items():
        mark = " **(configured)**" if name == "{}/{}".format(*result["rule"]) else ""
        lines.append(f"| {name}{mark} | {v['found'] / max(1, v['copies']):.3f} | "
                     f"{v['false']} |")
    fpv = result["frames_per_video"]
    lines.append("")
    lines.append(
        f"**All copies: recall {result['recall']:.3f} ({result['copies']} copies of "
        f"{result['registered']} registered videos), {result['false']} false matches among "
        f"{result['pairs']} scanned-file × unrelated-registration pairs.** Frames kept per "
        f"registered 10–12 s video: mean {np.mean(fpv):.1f}, min {min(fpv)}, max {max(fpv)}. "
        f"Unrelated pairs sharing at least one matching frame: "
        f"{result['unrelated_pairs_with_a_frame_match']}, the largest time coverage among "
        f"them {result['worst_unrelated_fraction']:.2f} (by frame counts instead of time: "
        f"{result['worst_unrelated_frame_share']:.2f}). Hashing took "
        f"{result['hash_seconds_per_video_second'] * 1000:.0f} ms per second of 640x360 video "
        f"(one core, with the rotation variants). Sampling: a candidate every "
        f"{result['sampling'][0]} s, {result['sampling'][1]}-bit deduplication. Content "
        f"motion: frames 1 s apart "
        f"differ by {np.mean(result['motion']):.0f} PDQ bits on average (per video "
        f"{min(result['motion']):.0f} to {max(result['motion']):.0f}). Settings: "
        f"`{json.dumps(result['settings'], sort_keys=True)}`.")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    """Replace the generated block of docs/video.md."""
    doc = DOCS.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOCS.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between candidate frames instead of SAMPLE_INTERVAL")
    parser.add_argument("--dedupe", type=int, default=None,
                        help="PDQ bits instead of DEDUPE_DISTANCE")
    args = parser.parse_args()
    if (args.interval is not None or args.dedupe is not None) and args.write_docs:
        parser.error("--write-docs documents the configured sampling only")
    result = run(args.quick, interval=args.interval, dedupe=args.dedupe)
    text = table(result)
    print(text)
    print(f"\n({result['seconds']:.0f} s)")
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
