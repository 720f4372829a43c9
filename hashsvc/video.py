"""Videos: sniffing by content, bounded decoding with PyAV, and the hashes of sampled frames.

A video is matched by its exact hashes (sha256, md5 of the file) and by PDQ, pHash and dHash of
frames sampled from it (see docs/video.md for the sampling, the match rule and the measurement):

- the frame showing at every :data:`SAMPLE_INTERVAL` seconds of presentation time is a
  candidate; it is reduced like a still image (:mod:`hashsvc.decode`), so that a still taken
  from the video hashes like the frame it shows;
- a candidate whose PDQ quality is below ``min_quality`` (black, flat, faded) is dropped: it
  would match unrelated flat pictures;
- a candidate within :data:`DEDUPE_DISTANCE` PDQ bits of a frame already kept is dropped, and
  every other one is kept and hashed like a picture (:func:`hashsvc.hashing.hash_picture`).
  So the kept frames follow the content, not the clock: a static video keeps a handful, a
  fast pan many, and every candidate (hence every moment of the video, to within half an
  interval) lies within DEDUPE_DISTANCE bits of a kept frame.

Decoding is bounded: the demuxer is the one the content sniffed as (no probing of other
formats), frame size, presentation time and decoded frame count are capped, and a wall-clock
budget stops a pathological file. A file that stops early is still hashed for what decoded,
with the reason in ``HashSet.partial``; one in which no frame decodes is a DecodeError (a
video whose every frame is flat decodes, and is matched by its exact hashes only).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image

from hashsvc.decode import MIN_SIDE, DecodedImage
from hashsvc.errors import DecodeError, UnsupportedFormat
from hashsvc.hashing import FrameHash, HashSet, algorithm, hash_picture, prepare

#: Bump when sampling or frame reduction changes: frames hashed by another version may differ.
VIDEO_VERSION = 1

#: Seconds of presentation time between candidate frames.
SAMPLE_INTERVAL = 0.2
#: A candidate frame within this many PDQ bits of a kept frame adds nothing and is dropped.
DEDUPE_DISTANCE = 16
#: Most frames kept per video; decoding stops there and the result is marked partial.
MAX_FRAMES = 1000
#: Largest frame decoded (8K DCI is 35.4 million pixels).
MAX_FRAME_PIXELS = 36_000_000

#: Sniffed format → the only FFmpeg demuxer allowed to read it.
DEMUXERS = {"mp4": "mov", "mov": "mov", "m4v": "mov", "3gp": "mov", "mkv": "matroska",
            "webm": "matroska", "avi": "avi", "mpegts": "mpegts", "mpeg": "mpeg", "flv": "flv",
            "asf": "asf"}
VIDEO_FORMATS = frozenset(DEMUXERS)

#: File names that claim a video (reported when the content is no recognised format).
#: Not ".ts": TypeScript sources share it, and a device holds far more of those.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mkv", ".webm", ".avi",
                  ".mts", ".m2ts", ".mpg", ".mpeg", ".vob", ".flv", ".wmv", ".asf")

#: Bytes of a file's start that :func:`sniff_video` needs (MPEG-TS shows itself by 188-byte
#: packets).
SNIFF_BYTES = 1024

_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"pnot"}
_EBML = b"\x1a\x45\xdf\xa3"
_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_PS_PACK = b"\x00\x00\x01\xba"


class NoVideoStream(UnsupportedFormat):
    """A container without any video stream (an audio file, a subtitle track)."""

    code = "no_video"


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on decoding one video."""

    max_seconds: float = 4 * 3600.0  # presentation time decoded
    time_budget: float = 600.0  # wall-clock seconds of decoding
    max_frames_decoded: int = 2_000_000
    max_frame_pixels: int = MAX_FRAME_PIXELS


def sniff_video(head: bytes) -> str | None:
    """The video container format of bytes starting with ``head``, by content alone.

    ISO BMFF files whose brands say HEIF or AVIF are pictures (:func:`hashsvc.decode.sniff`
    claims them first); this function never names them, whatever their other brands.
    """
    from hashsvc.decode import sniff

    if len(head) < 12 or sniff(head[:64]) is not None:
        return None
    box = head[4:8]
    if box == b"ftyp":
        return _iso_bmff_video(head)
    if box in _QT_ATOMS:
        # QuickTime files from before ftyp start with a bare atom.
        return "mov"
    if head.startswith(_EBML):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[:4] == b"FLV\x01":
        return "flv"
    if head[:16] == _ASF:
        return "asf"
    if head.startswith(_PS_PACK):
        return "mpeg"
    for first, step in ((0, 188), (4, 192)):  # MPEG-TS, and M2TS with its 4-byte prefix
        if len(head) >= first + 3 * step + 1 and all(
                head[first + k * step] == 0x47 for k in range(4)):
            return "mpegts"
    return None


def _iso_bmff_video(head: bytes) -> str | None:
    """mp4, mov, m4v or 3gp from the brands of an ``ftyp`` box that is not HEIF or AVIF."""
    size = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    brands = [major] + [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if major in _AUDIO_BRANDS:
        return None
    if major == b"qt  ":
        return "mov"
    if major.startswith((b"3gp", b"3g2", b"3gg")):
        return "3gp"
    if major.startswith(b"M4V"):
        return "m4v"
    if major in (b"crx ", b"jp2 ", b"jpm ", b"jpx "):  # Canon raw, JPEG 2000: pictures
        return None
    if any(b in (b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
                 b"mmp4", b"MSNV", b"dash", b"f4v ", b"XAVC", b"iso8", b"iso9", b"mp71",
                 b"qt  ", b"NDAS", b"hvc1", b"av01")
           for b in brands):
        return "mp4"
    return None


def file_hashes(fh: IO[bytes], chunk: int = 1 << 20) -> tuple[dict[str, str], int]:
    """sha256 and md5 of an open file read to its end in chunks, and its size."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    while True:
        block = fh.read(chunk)
        if not block:
            break
        sha.update(block)
        md5.update(block)
        size += len(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}, size


def hash_video_path(path: str, **kwargs: Any) -> HashSet:
    """Hash a video file on disk without reading it into memory (any size)."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        fmt = sniff_video(head)
        if fmt is None:
            raise UnsupportedFormat("not a recognised video format")
        fh.seek(0)
        exact, size = file_hashes(fh)
        fh.seek(0)
        return hash_video(fh, fmt, exact, size, **kwargs)


def hash_video_bytes(data: bytes, exact: dict[str, str] | None = None, **kwargs: Any
                     ) -> HashSet:
    """Hash a video held in memory."""
    fmt = sniff_video(data[:SNIFF_BYTES])
    if fmt is None:
        raise UnsupportedFormat("not a recognised video format")
    if exact is None:
        exact = {"sha256": hashlib.sha256(data).hexdigest(),
                 "md5": hashlib.md5(data).hexdigest()}
    return hash_video(io.BytesIO(data), fmt, exact, len(data), **kwargs)


def hash_video(fh: IO[bytes], fmt: str, exact: dict[str, str], size: int, *,
               with_variants: bool = False, min_quality: int = 50,
               limits: VideoLimits = VideoLimits(), threads: int = 0) -> HashSet:
    """Decode an open, seekable video of sniffed format ``fmt`` and hash its sampled frames.

    Raises :class:`DecodeError` (or :class:`NoVideoStream`) when nothing usable decodes.
    """
    import av

    if fmt not in DEMUXERS:
        raise UnsupportedFormat(f"not a video format: {fmt}")
    try:
        container = av.open(fh, mode="r", format=DEMUXERS[fmt], timeout=(30.0, 30.0))
    except (av.FFmpegError, OSError, ValueError, EOFError, MemoryError) as exc:
        raise DecodeError(f"{fmt}: {_text(exc)}") from exc
    try:
        return _hash_container(container, fmt, exact, size, with_variants, min_quality,
                               limits, threads)
    finally:
        try:
            container.close()
        except Exception:  # noqa: BLE001 - closing a broken container must not mask the result
            pass


def _text(exc: BaseException) -> str:
    """A one-line message for a decoding failure."""
    import av

    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return f"{exc.strerror} (truncated, corrupt or unsupported)"
    return f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)


def _declared_frames(stream: Any) -> int | None:
    """How many frames the container's index says the stream has (None where unknown)."""
    try:
        count = int(stream.frames or 0)
    except (TypeError, ValueError, OverflowError):
        return None
    return count if count > 0 else None


def _video_stream(container: Any) -> Any:
    """The main video stream: the first that is not an attached picture (cover art)."""
    from av.stream import Disposition

    for stream in container.streams.video:
        if stream.disposition & Disposition.attached_pic:
            continue
        return stream
    if container.streams.audio:
        raise NoVideoStream("no video stream (audio only)")
    # Without audio either, a file that sniffed as a video container is broken, not audio.
    raise DecodeError("no video stream found (truncated, corrupt or unsupported)")


def _hash_container(container: Any, fmt: str, exact: dict[str, str], size: int,
                    with_variants: bool, min_quality: int, limits: VideoLimits,
                    threads: int) -> HashSet:
    """The sampling loop (see the module's description)."""
    import av

    stream = _video_stream(container)
    ctx = stream.codec_context
    if ctx is None:  # FFmpeg has no decoder for the codec the file names (damaged, or exotic)
        raise DecodeError(f"{fmt}: no decoder for this video stream's codec "
                          "(corrupt or unsupported)")
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width * height > limits.max_frame_pixels:
        raise DecodeError(f"{fmt}: video frames of {width}x{height} are over the limit of "
                          f"{limits.max_frame_pixels:,} pixels")
    stream.thread_type = "AUTO"
    ctx.thread_count = threads
    sampler = _Sampler(fmt, SAMPLE_INTERVAL, with_variants, min_quality)
    deadline = time.monotonic() + limits.time_budget
    partial: str | None = None
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            if frame.width * frame.height > limits.max_frame_pixels:
                raise DecodeError(f"{fmt}: a frame of {frame.width}x{frame.height} is over the "
                                  f"limit of {limits.max_frame_pixels:,} pixels")
            t = sampler.time_of(frame)
            if t > limits.max_seconds:
                partial = f"stopped at the limit of {limits.max_seconds:g} s of video"
                break
            sampler.offer(frame, t)
            if len(sampler.kept) >= MAX_FRAMES:
                partial = f"stopped at t={t:.1f} s: {MAX_FRAMES} frames kept"
                break
            if decoded >= limits.max_frames_decoded:
                partial = f"stopped at t={t:.1f} s: {decoded:,} frames decoded"
                break
            if time.monotonic() > deadline:
                partial = (f"stopped at t={t:.1f} s: decoding took over "
                           f"{limits.time_budget:g} s")
                break
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, MemoryError, RecursionError,
            IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError) as exc:
        if decoded == 0 or sampler.last_t is None:
            raise DecodeError(f"{fmt}: {_text(exc)}") from exc
        # What decoded before the damage is hashed; the rest is reported as not examined.
        partial = f"decoding failed at t={sampler.last_t:.1f} s: {_text(exc)}"
    if decoded == 0:
        raise DecodeError(f"{fmt}: no frame could be decoded")
    declared = _declared_frames(stream)
    if partial is None and declared and declared - decoded > max(2, declared // 50):
        # The index (an MP4's sample table) promised more: the file was cut short or damaged.
        partial = (f"decoded {decoded:,} of the {declared:,} frames the file declares "
                   f"(truncated or damaged) up to t={sampler.last_t or 0:.1f} s")
    disp_w, disp_h = sampler.display_size or (width, height)
    return HashSet(sha256=exact["sha256"], md5=exact["md5"], size=size, format=fmt,
                   width=disp_w, height=disp_h, hashes={}, media="video",
                   duration=sampler.duration(), frames=tuple(sampler.kept), partial=partial)


class _Sampler:
    """Chooses, reduces, hashes and deduplicates frames as they come out of the decoder."""

    def __init__(self, fmt: str, interval: float, with_variants: bool, min_quality: int):
        self.fmt = fmt
        self.interval = interval
        self.with_variants = with_variants
        self.min_quality = min_quality
        self.kept: list[FrameHash] = []
        self._kept_pdq: list[int] = []
        self.origin: float | None = None
        self.last_t: float | None = None
        self.period = 0.0
        self.next_grid = 0.0
        self.display_size: tuple[int, int] | None = None
        self.counts = {"decoded": 0, "candidates": 0, "low_quality": 0, "duplicate": 0}
        self._index = 0

    def time_of(self, frame: Any) -> float:
        """Seconds from the first frame (frames without timestamps are counted at 25 fps)."""
        self._index += 1
        raw = frame.time
        if raw is None or not math.isfinite(raw):
            raw = (self._index - 1) / 25.0
        if self.origin is None:
            self.origin = raw
        t = max(0.0, raw - self.origin)
        if self.last_t is not None:
            if t > self.last_t:
                self.period = t - self.last_t
            t = max(t, self.last_t)  # broken timestamps never run backwards
        self.last_t = t
        return t

    def duration(self) -> float | None:
        """Presentation time covered by the decoded frames."""
        if self.last_t is None:
            return None
        return round(self.last_t + self.period, 3)

    def offer(self, frame: Any, t: float) -> None:
        """Consider one decoded frame: the first at or after each grid time is a candidate."""
        self.counts["decoded"] += 1
        if self.display_size is None:
            self.display_size = _display_size(frame)
        if t < self.next_grid - 1e-6:
            return
        self.next_grid = (math.floor(t / self.interval + 1e-6) + 1) * self.interval
        self._candidate(frame, t)

    def _candidate(self, frame: Any, t: float) -> None:
        """Keep one candidate frame unless flat or a near-duplicate of a kept one."""
        self.counts["candidates"] += 1
        image = frame_picture(frame)
        value, quality = algorithm("pdq").compute(prepare(image))
        if (quality or 0) < self.min_quality:
            self.counts["low_quality"] += 1
            return
        code = int(value, 16)
        if any((code ^ other).bit_count() <= DEDUPE_DISTANCE for other in self._kept_pdq):
            self.counts["duplicate"] += 1
            return
        picture = DecodedImage(image=image, format=self.fmt, width=frame.width,
                               height=frame.height)
        hs = hash_picture(picture, {"sha256": "", "md5": ""}, 0, self.with_variants)
        self._kept_pdq.append(code)
        self.kept.append(FrameHash(round(t, 3), dict(hs.hashes), dict(hs.quality),
                                   {name: dict(v) for name, v in hs.variants.items()}))


def _display_size(frame: Any) -> tuple[int, int]:
    """A frame's size as a player shows it (turned by the display rotation)."""
    if _rotation(frame) in (90, 270):
        return frame.height, frame.width
    return frame.width, frame.height


def _rotation(frame: Any) -> int:
    """The display rotation of a frame in degrees anticlockwise (0, 90, 180 or 270)."""
    try:
        value = frame.rotation
    except Exception:  # noqa: BLE001 - a damaged display matrix means no rotation
        return 0
    if value is None or not math.isfinite(value):
        return 0
    return int(round(value / 90.0)) % 4 * 90


def frame_picture(frame: Any) -> Image.Image:
    """A decoded frame as the canonical picture: RGB, upright, box-reduced like a still."""
    w, h = frame.width, frame.height
    factor = min(w, h) // MIN_SIDE
    if factor >= 2:
        # An integer area reduction, as decode._reduce does to a still of the same size.
        image = frame.reformat(width=max(1, w // factor), height=max(1, h // factor),
                               format="rgb24", interpolation="AREA").to_image()
    else:
        image = frame.to_image()
    if image.mode != "RGB":
        image = image.convert("RGB")
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
            270: Image.Transpose.ROTATE_270}.get(_rotation(frame))
    return image.transpose(turn) if turn is not None else image


def limits_from(settings: Any) -> VideoLimits:
    """Video limits from settings (their defaults where a setting is absent)."""
    default = VideoLimits()
    return VideoLimits(
        max_seconds=float(getattr(settings, "max_video_seconds", default.max_seconds)),
        time_budget=float(getattr(settings, "video_time_budget", default.time_budget)),
        max_frame_pixels=min(int(getattr(settings, "max_image_pixels",
                                         default.max_frame_pixels)), MAX_FRAME_PIXELS))


def is_video_name(name: str) -> bool:
    """Whether a file's name claims it is a video."""
    return os.path.basename(name).lower().endswith(VIDEO_SUFFIXES)
