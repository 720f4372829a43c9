"""Local features for the second matching stage: ORB keypoints verified by geometry.

Global hashes miss crops; local descriptors survive them. A scanned file's :func:`extract` is
searched in a :class:`FeatureIndex` of every registered image's :func:`extract_registered`, and a
registered image is reported only when a similarity transform (shift, scale, rotation, optionally
after a mirror) maps enough of the scanned picture's keypoints onto its own.

Descriptors can be inverted into a likeness of the picture, so they are as sensitive as the image:
they travel as ``to_bytes`` blobs encrypted with :class:`FeatureCipher` (bound to the image id),
live in memory only inside the deployment that scans, and are never sent to platforms.

The constants below say why each value was chosen; ``benchmarks/bench_features.py`` measures
speed, recall and false matches on banks of 1,000 and 10,000 images.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from hashsvc.errors import ConfigError, HashsvcError, InputError
from hashsvc.secretfiles import create_secret_file, read_secret_file

#: Layout of :func:`to_bytes`; bump on any change to it.
FORMAT_VERSION = 1
#: Extraction parameters; bump when they change, since old and new features match less well.
EXTRACTOR_VERSION = 1

#: Scanned pictures are normalised to this shorter side, half the registration side: a crop is
#: usually shown larger than the same region of the registered picture, so the scanned picture
#: is taken coarser. 256 found as many crops of scikit-image photos as 384 at about half the
#: ORB time (5 ms against 10 ms).
SCAN_SIDE = 256
#: Registered pictures are normalised (usually enlarged) to this shorter side. Registering at
#: 512 rather than at the scan side raised recall on 10%-area crops of scikit-image photos from
#: 7/20 to 12/20, while unrelated photographs stayed at <= 5 inliers.
REGISTER_SIDE = 512
#: The longer side is capped at this multiple of the shorter one (long screenshots, panoramas).
MAX_ASPECT = 4.0
#: Keypoints kept from a scanned picture.
SCAN_FEATURES = 500
#: Keypoints kept per orientation of a registered picture (and again for its mirror image);
#: 500 found 8/20 10%-area crops and 7/10 mirrored crops, 700 found 11/20 and 9/10.
REGISTER_FEATURES = 700
#: FAST corner threshold. 5 rather than OpenCV's 20: low-contrast photographs (a motion-blurred
#: clock, a retina) gave no keypoints in their smooth halves at 20, and crops of them failed.
FAST_THRESHOLD = 5
#: ORB pyramid: 10 levels 1.2 apart span 5.2x. A whole picture inside a screenshot shows up
#: ~2.7x smaller in the scan frame than in the registered frame, beyond the 3.6x span of
#: OpenCV's 8 levels at its edge: 10 levels took such screenshots from 7/10 to 9/10.
SCALE_FACTOR = 1.2
LEVELS = 10
PATCH_SIZE = 31
#: Registered keypoints are spread over a GRID x GRID grid (the strongest per cell first), so that
#: a crop of a plain region still holds registered keypoints; ORB's global ranking crowds them
#: into the most textured part. The detector proposes OVERSAMPLE times as many candidates.
GRID = 4
OVERSAMPLE = 4
#: Keypoint coordinates are stored in 1/16 pixel steps as uint16, so frames stay under 4096 px.
_SUBPIXEL = 16
#: Most keypoints one Features may hold: the index packs the keypoint number into 12 bits.
MAX_KEYPOINTS = 1 << 12
_KP_BITS = 12
DESCRIPTOR_BYTES = 32
_MAGIC = b"HSFT"
_HEADER = struct.Struct("<4sBBHHHIII")


class FeatureCryptoError(HashsvcError):
    """An encrypted feature blob cannot be decrypted: wrong key, wrong image, or tampered."""

    code = "feature_crypto"


@dataclass(frozen=True, eq=False)
class Features:
    """ORB keypoints and descriptors of one picture, in its normalised working frame."""

    keypoints: np.ndarray  # float32 (n, 2): x, y in the working frame, multiples of 1/16 px
    descriptors: np.ndarray  # uint8 (n, 32): ORB (rBRIEF) descriptors
    # bool (n,): True where the keypoint was found on the left-right mirror of the picture; its
    # coordinates are then in the mirrored frame, so matching never needs a reflection.
    mirrored: np.ndarray
    frame: tuple[int, int]  # width, height of the working frame
    picture: tuple[int, int]  # width, height of the picture the features were extracted from
    extractor: int = EXTRACTOR_VERSION

    def __post_init__(self) -> None:
        """Check shapes and types, and freeze the arrays."""
        n = len(self.keypoints)
        if self.keypoints.dtype != np.float32 or self.keypoints.shape != (n, 2):
            raise ValueError("keypoints must be float32 of shape (n, 2)")
        if self.descriptors.dtype != np.uint8 or self.descriptors.shape != (n, DESCRIPTOR_BYTES):
            raise ValueError(f"descriptors must be uint8 of shape (n, {DESCRIPTOR_BYTES})")
        if self.mirrored.dtype != np.bool_ or self.mirrored.shape != (n,):
            raise ValueError("mirrored must be bool of shape (n,)")
        if n > MAX_KEYPOINTS:
            raise ValueError(f"{n} keypoints, over the limit of {MAX_KEYPOINTS}")
        for array in (self.keypoints, self.descriptors, self.mirrored):
            array.setflags(write=False)

    def __len__(self) -> int:
        """Number of keypoints."""
        return len(self.keypoints)


def extract(picture: Image.Image, max_features: int = SCAN_FEATURES) -> Features:
    """Features of a scanned picture (the canonical decode's ``DecodedImage.image``)."""
    grey = _working_grey(picture, SCAN_SIDE)
    points, descriptors = _orb(grey, max_features, grid=1)
    return _features([(points, descriptors, False)], grey, picture.size)


def extract_registered(picture: Image.Image, max_features: int = REGISTER_FEATURES) -> Features:
    """Features of a picture being registered: finer, spread out, and of its mirror image too."""
    # ORB is rotation invariant but not mirror invariant. Mirroring at registration doubles the
    # bank's descriptors; mirroring at scan time would double the cost of every scanned file,
    # and scans outnumber registrations by far.
    grey = _working_grey(picture, REGISTER_SIDE)
    parts = [(*_orb(grey, max_features, grid=GRID), False),
             (*_orb(np.ascontiguousarray(grey[:, ::-1]), max_features, grid=GRID), True)]
    return _features(parts, grey, picture.size)


def _working_grey(picture: Image.Image, side: int) -> np.ndarray:
    """The picture in greyscale, resized so its shorter side is ``side`` (aspect capped)."""
    grey = np.asarray(picture.convert("L"))
    height, width = grey.shape
    scale = side / max(1, min(width, height))
    scale = min(scale, side * MAX_ASPECT / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return grey
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, size, interpolation=interpolation)


def _orb(grey: np.ndarray, max_features: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """ORB keypoint positions and descriptors, the strongest per grid cell when grid > 1."""
    oversample = OVERSAMPLE if grid > 1 else 1
    orb = cv2.ORB.create(nfeatures=max_features * oversample, scaleFactor=SCALE_FACTOR,
                          nlevels=LEVELS, edgeThreshold=PATCH_SIZE, patchSize=PATCH_SIZE,
                          fastThreshold=FAST_THRESHOLD)
    if grid > 1:
        chosen = _spread(orb.detect(grey, None), grey.shape, max_features, grid)
        keypoints, descriptors = orb.compute(grey, chosen)
    else:
        keypoints, descriptors = orb.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors


def _spread(keypoints: Sequence[cv2.KeyPoint], shape: tuple[int, ...], count: int,
            grid: int) -> list[cv2.KeyPoint]:
    """Up to ``count`` keypoints: the strongest of each grid cell, then the strongest left."""
    if len(keypoints) <= count:
        return list(keypoints)
    height, width = shape[:2]
    xy = np.array([k.pt for k in keypoints])
    response = np.array([k.response for k in keypoints])
    cx = np.minimum((xy[:, 0] * grid // width).astype(int), grid - 1)
    cy = np.minimum((xy[:, 1] * grid // height).astype(int), grid - 1)
    cell = cy * grid + cx
    order = np.lexsort((-response, cell))
    starts = np.searchsorted(cell[order], np.arange(grid * grid))
    rank = np.arange(len(order)) - starts[cell[order]]
    chosen = order[rank < max(1, count // (grid * grid))]
    rest = np.setdiff1d(np.arange(len(keypoints)), chosen)
    rest = rest[np.argsort(-response[rest], kind="stable")][: count - len(chosen)]
    return [keypoints[i] for i in np.concatenate([chosen, rest])]


def _features(parts: list[tuple[np.ndarray, np.ndarray, bool]], grey: np.ndarray,
              picture_size: tuple[int, int]) -> Features:
    """Assemble parts (points, descriptors, mirrored) into Features with quantised points."""
    points = np.concatenate([p for p, _, _ in parts]).astype(np.float32)
    # Quantise now, so that a round trip through to_bytes gives back equal features.
    points = (np.round(points * _SUBPIXEL) / _SUBPIXEL).astype(np.float32)
    return Features(
        keypoints=points,
        descriptors=np.concatenate([d for _, d, _ in parts]).astype(np.uint8),
        mirrored=np.concatenate([np.full(len(p), m, dtype=bool) for p, _, m in parts]),
        frame=(grey.shape[1], grey.shape[0]),
        picture=(int(picture_size[0]), int(picture_size[1])),
    )


def to_bytes(features: Features) -> bytes:
    """Compact versioned bytes: header, uint16 keypoints, packed mirror flags, descriptors."""
    n = len(features)
    header = _HEADER.pack(_MAGIC, FORMAT_VERSION, features.extractor, 0, *features.frame,
                          *features.picture, n)
    fixed = np.round(features.keypoints * _SUBPIXEL).astype("<u2")
    return b"".join([header, fixed.tobytes(), np.packbits(features.mirrored).tobytes(),
                     features.descriptors.tobytes()])


def from_bytes(data: bytes) -> Features:
    """Parse :func:`to_bytes` output, checking every length and bound (InputError if bad)."""
    if len(data) < _HEADER.size:
        raise InputError("feature bytes are shorter than their header")
    magic, version, extractor, _flags, width, height, pic_w, pic_h, n = \
        _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise InputError("feature bytes do not start with the hashsvc feature magic")
    if version != FORMAT_VERSION:
        raise InputError(f"feature format {version} is not supported (this is {FORMAT_VERSION})")
    if n > MAX_KEYPOINTS:
        raise InputError(f"{n} keypoints, over the limit of {MAX_KEYPOINTS}")
    flag_bytes = (n + 7) // 8
    expected = _HEADER.size + 4 * n + flag_bytes + DESCRIPTOR_BYTES * n
    if len(data) != expected:
        raise InputError(f"feature bytes are {len(data)} long, expected {expected} for {n} "
                         "keypoints")
    offset = _HEADER.size
    fixed = np.frombuffer(data, "<u2", 2 * n, offset).reshape(n, 2)
    offset += 4 * n
    flags = np.frombuffer(data, np.uint8, flag_bytes, offset)
    offset += flag_bytes
    descriptors = np.frombuffer(data, np.uint8, DESCRIPTOR_BYTES * n, offset)
    points = fixed.astype(np.float32) / _SUBPIXEL
    if n and (points[:, 0].max() > width or points[:, 1].max() > height):
        raise InputError("a keypoint lies outside the feature frame")
    return Features(keypoints=points, descriptors=descriptors.reshape(n, DESCRIPTOR_BYTES).copy(),
                    mirrored=np.unpackbits(flags, count=n).astype(bool), frame=(width, height),
                    picture=(pic_w, pic_h), extractor=extractor)


def encode_line(features: Features) -> str:
    """Base64 of :func:`to_bytes`, for the ``features`` field of a JSON hash line."""
    return base64.b64encode(to_bytes(features)).decode("ascii")


def decode_line(text: str) -> Features:
    """Features from a hash line's ``features`` field (InputError if malformed)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"features field is not valid base64: {exc}") from exc
    return from_bytes(data)


KEY_BYTES = 32
_NONCE_BYTES = 12
_CIPHER_VERSION = b"\x01"


class FeatureCipher:
    """AES-256-GCM for feature blobs at rest, each bound to its registered image's id."""

    def __init__(self, key: bytes) -> None:
        """Use a 32-byte key (see :func:`load_or_create_key`)."""
        # Imported here: extraction runs in scan workers and on victims' devices without it.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != KEY_BYTES:
            raise ConfigError(f"feature key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def encrypt(self, data: bytes, image_id: int) -> bytes:
        """Version byte, random 96-bit nonce, then ciphertext with its tag."""
        nonce = os.urandom(_NONCE_BYTES)
        return _CIPHER_VERSION + nonce + self._aead.encrypt(nonce, data, _associated(image_id))

    def decrypt(self, blob: bytes, image_id: int) -> bytes:
        """The plaintext, or FeatureCryptoError if the blob was altered or belongs elsewhere."""
        from cryptography.exceptions import InvalidTag

        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _CIPHER_VERSION:
            raise FeatureCryptoError("encrypted features are truncated or of an unknown version")
        nonce = blob[1:1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES:], _associated(image_id))
        except InvalidTag as exc:
            raise FeatureCryptoError(
                f"encrypted features of image {image_id} failed authentication: wrong key, "
                "another image's blob, or tampered") from exc


def _associated(image_id: int) -> bytes:
    """Associated data naming the image, so a blob copied to another image's row fails."""
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise TypeError("image_id must be an int")
    return b"hashsvc-features-v1:" + str(image_id).encode("ascii")


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte feature key at ``path``, created (mode 0600, atomically) if missing."""
    key_path = Path(path)
    if not key_path.exists():
        _create_key(key_path)
    return _read_key(key_path)


def _create_key(path: Path) -> None:
    """Write a new random key beside ``path`` and link it into place unless one appeared."""
    create_secret_file(path, secrets.token_bytes(KEY_BYTES))


def _read_key(path: Path) -> bytes:
    """Read a key file, refusing one that anybody but its owner can read or write."""
    key = read_secret_file(path, "feature key", "other users could read the key that protects "
                                                "the registered images' features")
    if len(key) != KEY_BYTES:
        raise ConfigError(f"feature key {path} holds {len(key)} bytes, expected {KEY_BYTES}")
    return key


@dataclass(frozen=True)
class MatchParams:
    """Search and verification thresholds of a :class:`FeatureIndex`.

    benchmarks/bench_features.py, 10,000 registered images: with the acceptance rules relaxed to
    6 inliers and no agreement, no unrelated file of 1,500 verified against any registered image
    (at 1,000 images the worst unrelated pair had 7 inliers, agreement 0.14); true crops had at
    least 17 inliers in 9 cases of 10, 51 at the median. Descriptor distances alone separate
    nothing: inlier pairs of true crops are 22 bits apart at the median (99 % within 59), and an
    unrelated file's descriptors find a registered one 43 bits away at the median (94 % within
    64). The decision rests on the geometry; ``max_distance`` only bounds the votes.
    """

    neighbours: int = 4  # nearest registered descriptors fetched per scanned descriptor
    max_distance: int = 64  # Hamming bits (of 256) for a descriptor pair to count at all
    nprobe: int = 3  # inverted lists searched per scanned descriptor
    quantizer_nprobe: int = 4  # coarse cells searched when finding those lists
    candidates: int = 5  # registered images, by votes, that go on to geometric verification
    min_inliers: int = 12  # correspondences consistent with one transform
    # Share of the scanned picture's textured grid cells (inside the overlap) holding inliers.
    # The same logo (20-50 % of the width) on pairs of unrelated photographs reached 26 inliers,
    # but every pair with 12 or more had an agreement of 0.09-0.25; 1-4 of ~200-300 true crops in
    # the benchmark fell below 0.3.
    min_agreement: float = 0.3
    ransac_threshold: float = 5.0  # pixels in the registered working frame
    min_scale: float = 0.2  # registered-frame pixels per scan-frame pixel
    max_scale: float = 16.0
    agreement_grid: int = 4


@dataclass(frozen=True)
class FeatureMatch:
    """A registered image whose keypoints a scanned picture's keypoints map onto."""

    image_id: int
    inliers: int  # one-to-one correspondences consistent with the transform
    matched: int  # one-to-one correspondences the transform was estimated from
    votes: int  # scanned descriptors with a near neighbour among this image's
    agreement: float  # share of textured cells of the scanned picture's overlap with inliers
    shown: float  # share of the registered picture that the scanned picture shows
    rotation: float  # degrees, anticlockwise, from the scanned picture to the registered one
    mirrored: bool  # the scanned picture is a mirror image of the registered one
    # Convex hull of the inliers in the scanned picture's own pixel coordinates, for review.
    region: tuple[tuple[float, float], ...] = field(default=())


class FeatureIndex:
    """In-memory search over every registered image's descriptors, with geometric checks.

    Descriptors live in a faiss binary inverted-file index whose coarse quantizer is itself an
    inverted file (fine centroids sampled from the bank, grouped under k-means coarse centroids),
    so a scanned descriptor is compared with at most ~1,300 centroids and three lists of ~250
    codes instead of every registered descriptor. The index is retrained when the bank grows
    fourfold. Withdrawn images stop matching at once (their votes are dropped) and their
    descriptors are purged from the lists when enough have accumulated, or by :meth:`compact`.

    faiss runs OpenMP threads; in a process whose cores are busy (scan workers), set
    ``faiss.omp_set_num_threads(1)``: on a loaded 2-core host, two threads made a build 25 times
    and single searches up to 70 times slower.
    """

    #: Target mean length of an inverted list.
    LIST_SIZE = 256
    #: Purge withdrawn descriptors once they are this share of the lists.
    PURGE_SHARE = 0.1

    def __init__(self, params: MatchParams | None = None) -> None:
        """An empty index; add images with :meth:`add` or use :meth:`build`."""
        self.params = params or MatchParams()
        self._images: dict[int, _Registered] = {}
        self._withdrawn: dict[int, int] = {}  # image id -> descriptors still in the lists
        self._faiss: Any = None
        self._quantizers: tuple[Any, ...] = ()  # kept alive: faiss does not own them
        self._trained_for = 0
        self._stored = 0  # descriptors in the lists, withdrawn ones included

    @classmethod
    def build(cls, items: Iterable[tuple[int, Features]],
              params: MatchParams | None = None) -> FeatureIndex:
        """An index of many images, trained once on all of them."""
        index = cls(params)
        pending: list[tuple[int, Features]] = []
        for image_id, features in items:
            index._register(image_id, features)
            pending.append((image_id, features))
        index._retrain(_stack(pending))
        return index

    def __len__(self) -> int:
        """Number of registered (not withdrawn) images."""
        return len(self._images)

    def __contains__(self, image_id: object) -> bool:
        """Whether ``image_id`` is registered and not withdrawn."""
        return image_id in self._images

    @property
    def descriptor_count(self) -> int:
        """Descriptors of the registered (not withdrawn) images."""
        return self._stored - sum(self._withdrawn.values())

    def nbytes(self) -> int:
        """Approximate memory held: codes and ids in the lists, keypoints and flags."""
        return self._stored * (DESCRIPTOR_BYTES + 8) + sum(
            r.keypoints.nbytes + r.mirrored.nbytes for r in self._images.values())

    def add(self, image_id: int, features: Features) -> None:
        """Register one image (ValueError if already registered); may retrain the index."""
        if image_id in self._withdrawn:
            self.compact()
        self._register(image_id, features)
        codes, ids = _stack([(image_id, features)])
        if self._faiss is None or self.descriptor_count > 4 * self._trained_for:
            self._retrain((codes, ids))
        else:
            self._tune()
            self._faiss.add_with_ids(codes, ids)
            self._stored += len(ids)

    def remove(self, image_id: int) -> None:
        """Withdraw an image: it stops matching now; unknown ids are ignored."""
        registered = self._images.pop(image_id, None)
        if registered is None:
            return
        self._withdrawn[image_id] = len(registered.keypoints)
        if sum(self._withdrawn.values()) > self.PURGE_SHARE * max(1, self._stored):
            self.compact()

    def compact(self) -> None:
        """Purge withdrawn images' descriptors from the inverted lists."""
        if not self._withdrawn or self._faiss is None:
            self._withdrawn.clear()
            return
        import faiss  # type: ignore[import-untyped]

        ids = np.concatenate([_ids(image_id, count)
                              for image_id, count in self._withdrawn.items()])
        removed = int(self._faiss.remove_ids(faiss.IDSelectorBatch(ids)))
        self._stored -= removed
        self._withdrawn.clear()

    def rebuild(self) -> None:
        """Retrain the quantizers on the current bank and purge withdrawn descriptors."""
        self._retrain((np.zeros((0, DESCRIPTOR_BYTES), np.uint8), np.zeros(0, np.int64)))

    def match(self, query: Features) -> list[FeatureMatch]:
        """Registered images the scanned features verify against, most inliers first."""
        return self.match_many([query])[0]

    def match_many(self, queries: Sequence[Features]) -> list[list[FeatureMatch]]:
        """:meth:`match` for several scanned pictures with one index search."""
        if self._faiss is None or not self._images or not queries:
            return [[] for _ in queries]
        p = self.params
        self._tune()
        codes = np.concatenate([q.descriptors for q in queries])
        if not len(codes):
            return [[] for _ in queries]
        distances, labels = self._faiss.search(np.ascontiguousarray(codes), p.neighbours)
        out = []
        start = 0
        for query in queries:
            end = start + len(query)
            out.append(self._verify_all(query, distances[start:end], labels[start:end]))
            start = end
        return out

    def _register(self, image_id: int, features: Features) -> None:
        """Record an image's keypoints (the descriptors go to faiss)."""
        if not 0 <= image_id < 1 << (63 - _KP_BITS):
            raise ValueError(f"image id {image_id} is out of range")
        if image_id in self._images:
            raise ValueError(f"image {image_id} is already in the feature index")
        self._images[image_id] = _Registered(features.keypoints, features.mirrored,
                                             features.frame)

    def _retrain(self, extra: tuple[np.ndarray, np.ndarray]) -> None:
        """Rebuild the faiss index from what it holds plus ``extra``, sized for the total."""
        codes, ids = self._dump()
        codes = np.concatenate([codes, extra[0]])
        ids = np.concatenate([ids, extra[1]])
        live = np.isin(ids >> _KP_BITS, np.fromiter(self._images, np.int64, len(self._images)))
        codes, ids = np.ascontiguousarray(codes[live]), ids[live]
        self._withdrawn.clear()
        self._faiss, self._quantizers = _make_ivf(codes, self.LIST_SIZE)
        self._tune()
        self._faiss.add_with_ids(codes, ids)
        self._stored = self._trained_for = len(ids)

    def _tune(self) -> None:
        """Apply the search parameters; adding uses them too, so lists are assigned alike."""
        self._faiss.nprobe = self.params.nprobe
        self._quantizers[-1].nprobe = self.params.quantizer_nprobe

    def _dump(self) -> tuple[np.ndarray, np.ndarray]:
        """Every code and id in the inverted lists."""
        if self._faiss is None:
            return np.zeros((0, DESCRIPTOR_BYTES), np.uint8), np.zeros(0, np.int64)
        import faiss

        lists = self._faiss.invlists
        codes, ids = [], []
        for number in range(lists.nlist):
            size = lists.list_size(number)
            if size:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
                raw = faiss.rev_swig_ptr(lists.get_codes(number), size * DESCRIPTOR_BYTES)
                codes.append(raw.copy().reshape(size, DESCRIPTOR_BYTES))
        if not ids:
            return np.zeros((0, DESCRIPTOR_BYTES), np.uint8), np.zeros(0, np.int64)
        return np.concatenate(codes), np.concatenate(ids)

    def _verify_all(self, query: Features, distances: np.ndarray,
                    labels: np.ndarray) -> list[FeatureMatch]:
        """Vote for registered images and verify the best-voted geometrically."""
        p = self.params
        keep = (labels >= 0) & (distances <= p.max_distance)
        q_idx = np.broadcast_to(np.arange(len(labels))[:, None], labels.shape)[keep]
        label = labels[keep]
        dist = distances[keep]
        image = label >> _KP_BITS
        if self._withdrawn:
            live = ~np.isin(image, np.fromiter(self._withdrawn, np.int64, len(self._withdrawn)))
            q_idx, label, dist, image = q_idx[live], label[live], dist[live], image[live]
        # One correspondence per (scanned keypoint, image): its nearest descriptor there.
        order = np.lexsort((dist, q_idx, image))
        q_idx, label, dist, image = q_idx[order], label[order], dist[order], image[order]
        first = np.ones(len(order), bool)
        first[1:] = (image[1:] != image[:-1]) | (q_idx[1:] != q_idx[:-1])
        q_idx, label, dist, image = q_idx[first], label[first], dist[first], image[first]
        ids, starts, votes = np.unique(image, return_index=True, return_counts=True)
        matches = []
        for i in np.argsort(-votes, kind="stable")[: p.candidates]:
            if votes[i] < p.min_inliers:
                break
            span = slice(starts[i], starts[i] + votes[i])
            found = self._verify(query, int(ids[i]), q_idx[span],
                                 label[span] & ((1 << _KP_BITS) - 1), dist[span], int(votes[i]))
            if found is not None:
                matches.append(found)
        matches.sort(key=lambda m: (-m.inliers, m.image_id))
        return matches

    def _verify(self, query: Features, image_id: int, q_idx: np.ndarray, r_idx: np.ndarray,
                dist: np.ndarray, votes: int) -> FeatureMatch | None:
        """The better of the plain and the mirrored verification of one candidate image."""
        registered = self._images[image_id]
        # One-to-one: a registered keypoint keeps only its nearest scanned keypoint, so that a
        # repeated pattern cannot pile many scanned keypoints onto one registered point.
        order = np.lexsort((dist, r_idx))
        r_sorted = r_idx[order]
        first = np.ones(len(order), bool)
        first[1:] = r_sorted[1:] != r_sorted[:-1]
        q_idx, r_idx = q_idx[order][first], r_sorted[first]
        best = None
        for mirrored in (False, True):
            side = registered.mirrored[r_idx] == mirrored
            if side.sum() < self.params.min_inliers:
                continue
            found = _geometry(query, registered, q_idx[side], r_idx[side], self.params)
            if found is not None and (best is None or found[0] > best[0]):
                best = (*found, mirrored, int(side.sum()))
        if best is None:
            return None
        inliers, agreement, shown, rotation, region, mirrored, matched = best
        return FeatureMatch(image_id=image_id, inliers=inliers, matched=matched, votes=votes,
                            agreement=round(agreement, 3), shown=shown,
                            rotation=round(rotation, 1),
                            mirrored=mirrored, region=region)


@dataclass(frozen=True)
class _Registered:
    """What the index keeps of a registered image besides its descriptors."""

    keypoints: np.ndarray
    mirrored: np.ndarray
    frame: tuple[int, int]


def _stack(items: Sequence[tuple[int, Features]]) -> tuple[np.ndarray, np.ndarray]:
    """All descriptors of several images with their faiss ids."""
    if not items:
        return np.zeros((0, DESCRIPTOR_BYTES), np.uint8), np.zeros(0, np.int64)
    codes = np.concatenate([f.descriptors for _, f in items])
    ids = np.concatenate([_ids(image_id, len(f)) for image_id, f in items])
    return np.ascontiguousarray(codes), ids


def _ids(image_id: int, count: int) -> np.ndarray:
    """faiss ids of an image's descriptors: the image id above a 12-bit keypoint number."""
    return (np.int64(image_id) << _KP_BITS) | np.arange(count, dtype=np.int64)


def _pow2(value: float) -> int:
    """The power of two nearest to ``value`` (at least 1)."""
    return 1 << max(0, round(np.log2(max(1.0, value))))


def _make_ivf(codes: np.ndarray, list_size: int) -> tuple[Any, tuple[Any, ...]]:
    """An empty trained binary IVF for ``codes``, with a two-level inverted-file quantizer."""
    import faiss

    bits = DESCRIPTOR_BYTES * 8
    rng = np.random.default_rng(0)
    nlist = min(_pow2(len(codes) / list_size), 1 << 16, max(1, len(codes)))
    ncoarse = _pow2(np.sqrt(nlist))
    coarse = faiss.IndexBinaryFlat(bits)
    if len(codes) and ncoarse > 1:
        # Coarse cells from k-means on the bits (faiss has no binary k-means): balanced cells
        # keep the number of fine centroids compared per scanned descriptor even.
        sample = codes[rng.choice(len(codes), min(len(codes), 100 * ncoarse), replace=False)]
        kmeans = faiss.Kmeans(bits, ncoarse, niter=10, seed=1, verbose=False)
        kmeans.train(np.unpackbits(sample, axis=1).astype(np.float32))
        centroids = kmeans.centroids
        assert centroids is not None
        coarse.add(np.packbits(centroids > 0.5, axis=1))
    else:
        coarse.add(np.zeros((1, DESCRIPTOR_BYTES), np.uint8))
        ncoarse = 1
    quantizer = faiss.IndexBinaryIVF(coarse, bits, ncoarse)
    # Fine centroids are bank descriptors sampled at random: lists then follow the bank's
    # density, and no k-means over tens of thousands of centroids is needed.
    if len(codes):
        fine = codes[rng.choice(len(codes), nlist, replace=False)]
    else:
        fine = np.zeros((1, DESCRIPTOR_BYTES), np.uint8)
        nlist = 1
    quantizer.add(np.ascontiguousarray(fine))
    index = faiss.IndexBinaryIVF(quantizer, bits, nlist)
    return index, (coarse, quantizer)


def _geometry(query: Features, registered: _Registered, q_idx: np.ndarray, r_idx: np.ndarray,
              params: MatchParams
              ) -> tuple[int, float, float, float, tuple[tuple[float, float], ...]] | None:
    """RANSAC a similarity transform; (inliers, agreement, shown, rotation, region) if sane."""
    src = query.keypoints[q_idx]
    dst = registered.keypoints[r_idx]
    # A fixed seed: re-running a scan must give the same inlier counts for the same files.
    cv2.setRNGSeed(0x5EED)
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=params.ransac_threshold,
        maxIters=2000, confidence=0.999)
    if transform is None or mask is None:
        return None
    inlier = mask.ravel().astype(bool)
    inliers = int(inlier.sum())
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if inliers < params.min_inliers or not params.min_scale <= scale <= params.max_scale:
        return None
    agreement = _agreement(query.keypoints, src[inlier], transform, registered.frame,
                           params.agreement_grid)
    if agreement < params.min_agreement:
        return None
    rotation = float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))
    return (inliers, agreement, _shown(query.frame, transform, registered.frame), rotation,
            _region(src[inlier], query))


def _agreement(points: np.ndarray, inlier_points: np.ndarray, transform: np.ndarray,
               frame: tuple[int, int], grid: int) -> float:
    """Share of textured grid cells of the scanned overlap that hold at least one inlier.

    A true crop agrees wherever both pictures have texture; a shared logo or watermark agrees
    only in its own corner while the rest of the scanned picture is textured and unmatched.
    """
    projected = cv2.transform(points[None], transform)[0]
    inside = ((projected[:, 0] >= 0) & (projected[:, 0] < frame[0])
              & (projected[:, 1] >= 0) & (projected[:, 1] < frame[1]))
    overlap = points[inside]
    if len(overlap) == 0:
        return 0.0
    low = overlap.min(axis=0)
    span = np.maximum(overlap.max(axis=0) - low, 1e-3)

    def cells(xy: np.ndarray) -> np.ndarray:
        """Grid cell number of each point, over the overlap's bounding box."""
        c = np.clip(((xy - low) / span * grid).astype(int), 0, grid - 1)
        return c[:, 1] * grid + c[:, 0]

    per_cell = np.bincount(cells(overlap), minlength=grid * grid)
    textured = per_cell >= max(2.0, 0.25 * len(overlap) / grid ** 2)
    hit = np.bincount(cells(inlier_points), minlength=grid * grid) > 0
    return float((textured & hit).sum() / max(1, textured.sum()))


def _shown(frame: tuple[int, int], transform: np.ndarray, registered: tuple[int, int]) -> float:
    """Share of the registered frame covered by the scanned frame mapped onto it."""
    w, h = frame
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    mapped = cv2.transform(corners[None], transform)[0]
    rw, rh = registered
    target = np.array([[0, 0], [rw, 0], [rw, rh], [0, rh]], np.float32)
    area, _ = cv2.intersectConvexConvex(mapped, target)
    return round(float(area) / (rw * rh), 4)


def _region(points: np.ndarray, query: Features) -> tuple[tuple[float, float], ...]:
    """Convex hull of inlier points, in the scanned picture's own pixel coordinates."""
    sx = query.picture[0] / query.frame[0]
    sy = query.picture[1] / query.frame[1]
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)
    return tuple((round(float(x * sx), 1), round(float(y * sy), 1)) for x, y in hull)
