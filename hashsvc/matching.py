"""Matching scanned hash sets against the bank: per-algorithm indexes and one decision rule."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from hashsvc.errors import HashsvcError
from hashsvc.hashing import ALGORITHMS, VARIANT_CODES, VARIANT_SLOTS, HashSet, hamming_hex
from hashsvc.index import HammingIndex, hex_to_codes
from hashsvc.settings import Settings
from hashsvc.store import FEATURES, Store
from hashsvc.video import SAMPLE_INTERVAL

#: Decision rules by name; each takes the distances of one (file, registered image) pair.
DECISION_RULES = ("pdq_or_exact",)


@dataclass(frozen=True)
class Candidate:
    """A registered image that a scanned file matched, with every distance."""

    image_id: int
    case: str
    algorithm: str  # the algorithm that decided the match
    distance: int
    distances: dict[str, int]
    variant: str | None = None  # orientation of the registered image that matched best
    #: For a match to or from a video: the rule's counts and the frames that matched
    #: ({"t": scanned time, "registered_t": registered frame's time, "distance": PDQ}).
    video: dict[str, Any] | None = None


def search_radius(settings: Settings) -> dict[str, int]:
    """How far each algorithm's index must search for the decision rule to see every pair.

    Each index is searched to its own threshold, PDQ's too, although the rule of
    :func:`decide` accepts PDQ out to ``pdq_support_threshold`` where pHash and dHash agree:
    such a pair has pHash within ``phash_threshold`` (computed over the same variant pairs as
    the pHash index searches, :func:`pair_distances`), so the pHash index finds it. Searching
    PDQ to 50 instead of 31 gave the same answers five times slower
    (benchmarks/bench_lookup_cli.py --full-lines).
    """
    return settings.thresholds()


def decide(distances: Mapping[str, int], settings: Settings, pdq_usable: bool = True
           ) -> tuple[str, int] | None:
    """The decision rule: which algorithm makes this pair a match, and at what distance."""
    if settings.decision_rule != "pdq_or_exact":
        raise ValueError(f"unknown decision rule {settings.decision_rule!r}")
    for exact in ("sha256", "md5"):
        if distances.get(exact) == 0:
            return exact, 0
    if not pdq_usable or "pdq" not in distances:
        return None
    pdq = distances["pdq"]
    if pdq <= settings.pdq_threshold:
        return "pdq", pdq
    # Beyond the PDQ threshold a pair matches only where pHash and dHash both agree closely:
    # pHash or dHash alone make false matches at scale (see docs/matching.md).
    if (pdq <= settings.pdq_support_threshold
            and distances.get("phash", 64) <= settings.phash_threshold
            and distances.get("dhash", 64) <= settings.dhash_threshold):
        return "pdq+phash", pdq
    return None


#: Frames listed in a video match's ``video.frames`` at most (the counts cover them all).
MAX_LISTED_FRAMES = 50


def video_decision(matched: int, fewer_frames: int, coverage: float, settings: Settings
                   ) -> bool:
    """The video rule: do the frame matches between a scanned and a registered video make one
    a copy of the other?

    ``matched`` counts frames that match under :func:`decide`, on the side where fewer are
    matched (several scanned frames may match one registered frame and vice versa);
    ``fewer_frames`` is the number of usable frames of the video that has fewer; ``coverage``
    is the share of the shorter video's running time that its matched frames stand for
    (:func:`time_coverage`). At least ``video_min_frames`` frames must match (every frame of a
    video with fewer), and they must cover at least ``video_min_fraction`` of the shorter
    video: an excerpt matches, a compilation holding a registered clip matches, a video that
    merely shares an intro, a logo or an outro with a registered one does not.
    """
    if matched <= 0 or fewer_frames <= 0:
        return False
    return (matched >= min(settings.video_min_frames, fewer_frames)
            and coverage >= settings.video_min_fraction - 1e-9)


def time_coverage(times: list[float], duration: float | None, matched: set[float]
                  ) -> tuple[float, float]:
    """(share of the running time that the ``matched`` frames stand for, the running time).

    Each kept frame stands for the time from it to the next kept frame (the frames between
    were dropped as near-duplicates of a kept one, or as flat), the last one to the end of the
    video; the running time starts at the first kept frame (a fade-in counts for nothing).
    Counting time rather than frames keeps a busy shared outro, which keeps many frames, from
    outweighing a calm video that keeps few.
    """
    if not times:
        return 0.0, 0.0
    times = sorted(set(times))
    end = max(duration or 0.0, times[-1] + SAMPLE_INTERVAL)
    total = end - times[0]
    covered = sum(nxt - t for t, nxt in zip(times, times[1:] + [end]) if t in matched)
    return (covered / total if total > 0 else 0.0), total


def index_id(image_id: int, variant: str) -> int:
    """The id of a bank hash inside an in-memory index (see VARIANT_CODES)."""
    return image_id * VARIANT_SLOTS + VARIANT_CODES[variant]


class BankMatcher:
    """In-memory indexes of the bank, kept current from the store's change cursor.

    Indexes are saved under ``<data dir>/index`` with the cursor they reflect; the next process
    loads them and applies only the changes since, instead of rebuilding from every row.
    """

    def __init__(self, store: Store, settings: Settings, persist: bool = True) -> None:
        self.store = store
        self.settings = settings
        self.radius = search_radius(settings)
        self.bits = {a.name: a.bits for a in ALGORITHMS}
        self.folder = settings.data_path / "index" if persist else None
        self.indexes: dict[str, HammingIndex] = {}
        self.cursor = 0
        self.refreshed_at = time.monotonic()
        self._details: dict[int, dict[str, Any]] = {}
        self._load()
        self.features = self._load_features() if settings.features_stage else None

    def _load_features(self) -> Any:
        """The local-feature index of every image registered with features (decrypted here)."""
        import faiss

        from hashsvc.features import FeatureIndex

        # Parallelism comes from processes (scan workers, RQ workers, gunicorn workers). faiss's
        # OpenMP threads spinning beside them made one search of 6,000 descriptors take 4.3 s
        # instead of 0.15 s while a hashing process shared the two cores.
        faiss.omp_set_num_threads(1)
        return FeatureIndex.build(self.store.image_features())

    def _load(self) -> None:
        """Load saved indexes and catch up, or build them from the bank's live hashes."""
        if self.folder is not None and self._load_saved():
            if self.refresh():
                self.save()
            if all(len(self.indexes[name]) == self.store.count_hashes(name)
                   for name in self.radius):
                return
        self.cursor = self.store.bank_cursor()
        for name, radius in self.radius.items():
            index = HammingIndex(self.bits[name], radius)
            for rows in self.store.bank_hashes(name):
                ids = np.array([index_id(r[1], r[2]) for r in rows], dtype=np.int64)
                index.add(ids, hex_to_codes([r[3] for r in rows], self.bits[name]))
            self.indexes[name] = index
        self.save()

    def _load_saved(self) -> bool:
        """Read every saved index built for the current radii; False if any is unusable."""
        assert self.folder is not None
        meta_path = self.folder / "cursor.json"
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("radius") != self.radius or meta["cursor"] > self.store.bank_cursor():
                return False
            self.indexes = {name: HammingIndex.load(self.folder / f"{name}.npz")
                            for name in self.radius}
        except (OSError, ValueError, KeyError, HashsvcError):
            self.indexes = {}
            return False
        self.cursor = int(meta["cursor"])
        return True

    def save(self) -> None:
        """Write the indexes and their cursor to the data folder (atomically, file by file)."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, index in self.indexes.items():
            index.save(self.folder / f"{name}.npz")
        tmp = self.folder / "cursor.json.tmp"
        tmp.write_text(json.dumps({"cursor": self.cursor, "radius": self.radius}))
        os.replace(tmp, self.folder / "cursor.json")

    def refresh_if_stale(self) -> int:
        """Refresh when the last refresh is ``lookup_refresh_seconds`` old or more: every
        matching process calls this before it matches, so a withdrawal stops matching
        everywhere within about that long, even in the middle of a long batch."""
        if time.monotonic() - self.refreshed_at >= self.settings.lookup_refresh_seconds:
            return self.refresh()
        return 0

    def refresh(self) -> int:
        """Apply additions and withdrawals made since the last load; returns how many."""
        applied = 0
        self.refreshed_at = time.monotonic()
        while True:
            changes = self.store.bank_changes(self.cursor)
            if not changes:
                return applied
            for change in changes:
                self.cursor = change.seq
                if change.algorithm == FEATURES:
                    self._apply_feature_change(change.op, change.image_id)
                    applied += 1
                    continue
                index = self.indexes.get(change.algorithm)
                if index is None:
                    continue
                ids = np.array([index_id(change.image_id, change.variant)], dtype=np.int64)
                if change.op == "add" and change.value is not None:
                    if not index.contains(ids)[0]:
                        index.add(ids, hex_to_codes([change.value], self.bits[change.algorithm]))
                elif change.op == "remove":
                    index.remove(ids)
                    self._details.pop(change.image_id, None)
                applied += 1

    def _apply_feature_change(self, op: str, image_id: int) -> None:
        """Add or drop one registered image's local features."""
        if self.features is None:
            return
        if op == "remove":
            self.features.remove(image_id)
        elif image_id not in self.features:
            for iid, features in self.store.image_features([image_id]):
                self.features.add(iid, features)

    def match_features(self, hashsets: list[HashSet], features: list[Any]
                       ) -> list[list[Candidate]]:
        """Second stage: registered images whose keypoints each scanned picture's map onto."""
        if self.features is None or len(self.features) == 0:
            return [[] for _ in features]
        found = self.features.match_many(features)
        self._fetch_details({m.image_id for ms in found for m in ms})
        out = []
        for hs, matches in zip(hashsets, found):
            cands = []
            for m in matches:
                detail = self._details.get(m.image_id)
                if detail is None:
                    continue
                distances, variant = pair_distances(hs, detail["hashes"],
                                                    self.settings.trim_frames)
                distances["orb_inliers"] = m.inliers
                cands.append(Candidate(m.image_id, detail["case"], FEATURES, m.inliers,
                                       distances, "mirror" if m.mirrored else variant))
            cands.sort(key=lambda c: (-c.distance, c.image_id))
            out.append(cands)
        return out

    def match_many(self, hashsets: list[HashSet]) -> list[list[Candidate]]:
        """Candidates for each hash set, best first; empty lists where nothing matched.

        A video's sampled frames are looked up like pictures, then gathered per registered
        video or image under the video rule (:func:`video_decision`); a picture that matches
        a registered video's frame names the video.
        """
        queries: list[HashSet] = []
        spans: list[tuple[int, int]] = []
        for hs in hashsets:
            start = len(queries)
            queries.append(hs)
            queries.extend(frame.as_hashset() for frame in hs.frames)
            spans.append((start, len(queries)))
        found = self._match_pictures(queries)
        if not any(hs.frames for hs in hashsets) and not any(
                self._details.get(c.image_id, {}).get("parent") is not None
                for cands in found for c in cands):
            return found
        self._fetch_details({self._details[c.image_id]["parent"] for cands in found
                             for c in cands if self._details[c.image_id].get("parent")})
        return [self._gather(hs, found[start], found[start + 1:end])
                for hs, (start, end) in zip(hashsets, spans)]

    def _gather(self, hs: HashSet, own: list[Candidate], by_frame: list[list[Candidate]]
                ) -> list[Candidate]:
        """One file's candidates: its own, and its frames' gathered per registration."""
        out: dict[int, Candidate] = {}
        still_hits: dict[int, list[tuple[Candidate, float]]] = {}
        for cand in own:  # best first
            parent = self._details[cand.image_id].get("parent")
            if parent is None:
                out.setdefault(cand.image_id, cand)
            else:  # the file is a picture of a registered video's frame
                still_hits.setdefault(parent, []).append(
                    (cand, self._details[cand.image_id]["t"]))
        for parent, hits in still_hits.items():
            if parent in out or parent not in self._details:
                continue
            best = hits[0][0]
            out[parent] = replace(best, image_id=parent, video={
                "registered_frames": self._details[parent].get("frames", 0),
                "frames": [{"registered_t": t, "distance": c.distance}
                           for c, t in sorted(hits, key=lambda h: (h[0].distance, h[1]))
                           ][:MAX_LISTED_FRAMES]})
        if hs.frames:
            for target, cand in self._video_candidates(hs, by_frame):
                if target in out:  # an exact copy: keep the exact match, say which frames
                    out[target] = replace(out[target], video=cand.video)
                else:
                    out[target] = cand
        return sorted(out.values(), key=lambda c: (c.distance, c.image_id))

    def _video_candidates(self, hs: HashSet, by_frame: list[list[Candidate]]
                          ) -> list[tuple[int, Candidate]]:
        """Registered videos (by the video rule) and images that a scanned video's frames
        match."""
        pairs: dict[int, list[tuple[int, float | None, Candidate]]] = {}
        for k, cands in enumerate(by_frame):
            for cand in cands:
                detail = self._details[cand.image_id]
                target = detail.get("parent") or cand.image_id
                pairs.setdefault(target, []).append((k, detail.get("t"), cand))
        scan_times = [f.t for f in hs.frames
                      if f.quality.get("pdq", 100) >= self.settings.min_pdq_quality]
        usable = len(scan_times)
        out = []
        for target, found in pairs.items():
            detail = self._details.get(target)
            if detail is None:
                continue
            best_per_frame: dict[int, tuple[float | None, Candidate]] = {}
            for k, t, cand in found:  # each scanned frame's nearest registered frame
                if k not in best_per_frame or cand.distance < best_per_frame[k][1].distance:
                    best_per_frame[k] = (t, cand)
            best = min((c for _, c in best_per_frame.values()),
                       key=lambda c: (c.distance, c.image_id))
            listed = [{"t": hs.frames[k].t, "registered_t": t, "distance": c.distance}
                      for k, (t, c) in sorted(best_per_frame.items())][:MAX_LISTED_FRAMES]
            if detail.get("media") != "video":
                # A registered picture seen in the video: the picture rule, frame by frame.
                out.append((target, replace(best, video={
                    "scanned_frames": usable, "matched_frames": len(best_per_frame),
                    "frames": listed})))
                continue
            registered = detail.get("frames", 0)
            scanned_matched = len(best_per_frame)
            registered_times = {t for _, t, _ in found if t is not None}
            matched = min(scanned_matched, len({c.image_id for _, _, c in found}))
            # How much of each video's running time the matched frames stand for; the rule
            # reads the shorter video's.
            scanned = time_coverage(scan_times, hs.duration,
                                    {hs.frames[k].t for k in best_per_frame})
            reg = time_coverage(detail.get("times", []), detail.get("duration"),
                                registered_times)
            shorter = min((scanned, usable), (reg, registered), key=lambda x: x[0][1])
            info = {"rule": "frames", "matched_frames": matched, "scanned_frames": usable,
                    "registered_frames": registered, "coverage": round(shorter[0][0], 3),
                    "scanned_seconds": round(scanned[1], 2),
                    "registered_seconds": round(reg[1], 2)}
            if not video_decision(matched, min(usable, registered), shorter[0][0],
                                  self.settings):
                continue
            out.append((target, replace(best, image_id=target,
                                        video={**info, "frames": listed})))
        return out

    def _match_pictures(self, hashsets: list[HashSet]) -> list[list[Candidate]]:
        """Candidates for each hash set taken as one picture (the rule of :func:`decide`)."""
        near: list[dict[int, None]] = [dict() for _ in hashsets]
        for name, index in self.indexes.items():
            if len(index) == 0:
                continue
            rows = [(i, value) for i, hs in enumerate(hashsets)
                    for value in query_values(hs, name, self.settings.trim_frames)]
            if not rows:
                continue
            found = index.search(hex_to_codes([v for _, v in rows], self.bits[name]),
                                 self.radius[name])
            for (i, _), (ids, _dist) in zip(rows, found):
                for image_id in (ids // VARIANT_SLOTS).tolist():
                    near[i][image_id] = None
        for exact in ("sha256", "md5"):
            values = [getattr(hs, exact) for hs in hashsets]
            hits = self.store.exact_lookup(exact, sorted(set(v for v in values if v)))
            for i, value in enumerate(values):
                for image_id in hits.get(value, ()):
                    near[i][image_id] = None
        self._fetch_details({image for n in near for image in n})
        return [self._decide_all(hs, list(n)) for hs, n in zip(hashsets, near)]

    def registrations(self, image_ids: set[int]) -> dict[int, int]:
        """The registered file of each bank row: a video for its frames, else the row itself."""
        self._fetch_details(image_ids)
        return {i: self._details.get(i, {}).get("parent") or i for i in image_ids}

    def _fetch_details(self, image_ids: set[int]) -> None:
        """Cache case references and hashes of the registered images involved."""
        missing = [i for i in image_ids if i not in self._details]
        self._details.update(self.store.image_details(missing))

    def _decide_all(self, hs: HashSet, image_ids: list[int]) -> list[Candidate]:
        """Apply the decision rule to each nearby registered image."""
        pdq_usable = hs.quality.get("pdq", 100) >= self.settings.min_pdq_quality
        out = []
        for image_id in image_ids:
            detail = self._details.get(image_id)
            if detail is None:
                continue  # withdrawn between the index search and now
            distances, variant = pair_distances(hs, detail["hashes"], self.settings.trim_frames)
            decision = decide(distances, self.settings, pdq_usable)
            if decision is not None:
                out.append(Candidate(image_id, detail["case"], decision[0], decision[1],
                                     distances, variant))
        out.sort(key=lambda c: (c.distance, c.image_id))
        return out


def query_values(hs: HashSet, algorithm: str, trimmed: bool = True) -> list[str]:
    """The values a scanned file is looked up by: its hash and its framed-content variant."""
    values = [hs.hashes[algorithm]] if algorithm in hs.hashes else []
    if trimmed and "trim" in hs.variants.get(algorithm, {}):
        values.append(hs.variants[algorithm]["trim"])
    return values


def pair_distances(hs: HashSet, registered: Mapping[str, Mapping[str, str]],
                   trimmed: bool = True) -> tuple[dict[str, int], str | None]:
    """Distances between a scanned hash set and a registered image, per algorithm.

    Perceptual distances take the nearest pair of variants (the scanned file whole or trimmed
    of its frame; the registered image in any orientation or trimmed); exact hashes are 0 when
    equal and absent otherwise (an unequal sha256 says nothing about similarity).
    """
    distances: dict[str, int] = {}
    best_variant: str | None = None
    for exact in ("sha256", "md5"):
        if registered.get(exact, {}).get("orig") == getattr(hs, exact):
            distances[exact] = 0
    for name in hs.hashes:
        variants = registered.get(name)
        if not variants:
            continue
        dist, _, variant = min((hamming_hex(value, reg), kind != "orig", kind)
                               for value in query_values(hs, name, trimmed)
                               for kind, reg in variants.items())
        distances[name] = dist
        if name == "pdq":
            best_variant = variant
    return distances, best_variant
