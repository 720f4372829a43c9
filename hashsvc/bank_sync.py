"""Match references, the platforms' bank feed, and a platform's own copy of the bank.

**References.** A platform never learns a registered image's id or case. Each answer carries a
*match reference*: the image id and the platform's org id, encrypted as one AES block under a
key derived from the server secret. One image gives one platform the same reference every time
(so it can group takedowns), gives two platforms unrelated references, and only the server can
turn a reference back into the image (for takedown feedback), after checking that it was made
for the platform that sends it. Feed entries (one per hash) carry *entry references* made the
same way under another key.

**Feed.** :func:`feed_page` pages the bank's change log (additions and withdrawals, oldest
first) for a platform granted bank sync. An addition carries the entry reference, the match
reference, the algorithm and the hex value; a withdrawal carries the entry reference only. An
addition whose hash was withdrawn since is skipped (its value is erased): its withdrawal
follows. Local features never appear.

**Local copy.** :class:`LocalBank` applies feed pages and answers lookups exactly as
``POST /v1/lookup`` does (the same thresholds, quality floor, grouping and order), so a
platform that syncs can match on its own machines; the tests hold the two to the same answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import func, select

from hashsvc.errors import InputError
from hashsvc.hashing import EXACT_ALGORITHMS, HEX_DIGITS
from hashsvc.store import FEATURES, Store
from hashsvc.store.models import BankChange, BankHash, RegisteredImage

#: Most matches returned for one input; a featureless picture could otherwise match thousands.
MAX_MATCHES = 100
#: Most changes one feed page holds.
MAX_FEED_PAGE = 10_000


class RefCipher:
    """Opaque, per-platform references to registered images and bank entries."""

    def __init__(self, secret: bytes) -> None:
        self._match = self._cipher(secret, b"hashsvc match references v1")
        self._entry = self._cipher(secret, b"hashsvc feed entries v1")

    @staticmethod
    def _cipher(secret: bytes, label: bytes) -> Cipher[Any]:
        key = hmac.new(secret, label, hashlib.sha256).digest()
        # One 16-byte block per reference: ECB of a single block is a keyed permutation.
        return Cipher(algorithms.AES(key), modes.ECB())

    @staticmethod
    def _seal(cipher: Cipher[Any], org_id: int, ident: int) -> str:
        enc = cipher.encryptor()
        return (enc.update(struct.pack(">QQ", org_id, ident)) + enc.finalize()).hex()

    def match_ref(self, org_id: int, image_id: int) -> str:
        """The reference of a registered image for one platform."""
        return "m_" + self._seal(self._match, org_id, image_id)

    def entry_ref(self, org_id: int, hash_id: int) -> str:
        """The reference of one bank hash (one algorithm and variant) for one platform."""
        return "e_" + self._seal(self._entry, org_id, hash_id)

    def image_of(self, org_id: int, ref: Any) -> int | None:
        """The registered image a match reference names, or None where it is malformed or was
        made for another platform."""
        if not isinstance(ref, str) or len(ref) != 34 or not ref.startswith("m_"):
            return None
        try:
            block = bytes.fromhex(ref[2:])
        except ValueError:
            return None
        dec = self._match.decryptor()
        owner, image_id = struct.unpack(">QQ", dec.update(block) + dec.finalize())
        return image_id if owner == org_id else None


# --- the feed ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedRow:
    """One change of the log, joined to what a platform may learn of it."""

    seq: int
    op: str
    algorithm: str
    hash_id: int
    image_id: int
    value: str | None
    parent_id: int | None


def read_feed(store: Store, after: int, limit: int) -> tuple[list[FeedRow], int]:
    """Changes after ``after`` (features left out), and the cursor to ask from next.

    Writers of the change log commit in sequence order (see ``Store.lock_feed``), so every
    change up to the newest one seen here is visible; the next cursor never skips one.
    """
    with store.sessions() as session:
        newest = int(session.execute(select(func.max(BankChange.seq))).scalar() or 0)
        rows = session.execute(
            select(BankChange.seq, BankChange.op, BankChange.algorithm, BankChange.hash_id,
                   BankChange.image_id, BankHash.value, RegisteredImage.parent_id)
            .outerjoin(BankHash, (BankHash.id == BankChange.hash_id)
                       & (BankHash.algorithm == BankChange.algorithm))
            .outerjoin(RegisteredImage, RegisteredImage.id == BankChange.image_id)
            .where(BankChange.seq > after, BankChange.seq <= newest,
                   BankChange.algorithm != FEATURES)
            .order_by(BankChange.seq).limit(limit)).all()
    out = [FeedRow(*r) for r in rows]
    cursor = out[-1].seq if len(out) == limit else max(after, newest)
    return out, cursor


def feed_page(store: Store, refs: RefCipher, org_id: int, after: int, limit: int,
              settings: Any) -> dict[str, Any]:
    """One page of the feed as ``GET /v1/bank/changes`` answers it."""
    rows, cursor = read_feed(store, after, limit)
    changes: list[dict[str, Any]] = []
    for row in rows:
        entry = refs.entry_ref(org_id, row.hash_id)
        if row.op == "remove":
            changes.append({"seq": row.seq, "op": "withdraw", "entry": entry})
        elif row.value is not None:  # else withdrawn since: its withdrawal follows
            changes.append({
                "seq": row.seq, "op": "add", "entry": entry,
                # A video's frames answer as the video, as lookups do.
                "match_ref": refs.match_ref(org_id, row.parent_id or row.image_id),
                "algorithm": row.algorithm, "value": row.value})
    return {"changes": changes, "cursor": cursor, "more": len(rows) == limit,
            "matching": matching_rules(settings)}


def matching_rules(settings: Any) -> dict[str, Any]:
    """What a platform's own matcher must apply to answer as the lookup API does."""
    from hashsvc.matching import search_radius

    return {"thresholds": {name: settings.thresholds()[name]
                           for name in search_radius(settings)},
            "exact": list(EXACT_ALGORITHMS), "min_pdq_quality": settings.min_pdq_quality,
            "max_matches": MAX_MATCHES}


# --- a platform's copy ------------------------------------------------------------------------

class LocalBank:
    """A platform's copy of the bank, kept by applying feed pages; answers lookups like the API.

    ``save``/``load`` keep it in a JSON file between runs; ``cursor`` is where to sync from.
    """

    def __init__(self) -> None:
        self.cursor = 0
        self.rules: dict[str, Any] = {}
        self.entries: dict[str, tuple[str, str, str]] = {}  # entry: (match_ref, alg, value)
        self._arrays: dict[str, tuple[np.ndarray, list[str]]] | None = None
        self._exact_map: dict[tuple[str, str], set[str]] | None = None

    def apply(self, page: Mapping[str, Any]) -> int:
        """Apply one feed page; returns how many changes it held."""
        for change in page["changes"]:
            if change["op"] == "add":
                self.entries[change["entry"]] = (change["match_ref"], change["algorithm"],
                                                 change["value"])
            elif change["op"] == "withdraw":
                self.entries.pop(change["entry"], None)
        self.cursor = int(page["cursor"])
        self.rules = dict(page["matching"])
        self._arrays = self._exact_map = None
        return len(page["changes"])

    def _index(self) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Per algorithm: the codes as bytes rows and their match references."""
        if self._arrays is None:
            grouped: dict[str, tuple[list[bytes], list[str]]] = {}
            for ref, alg, value in self.entries.values():
                if alg in EXACT_ALGORITHMS:
                    continue
                codes, refs = grouped.setdefault(alg, ([], []))
                codes.append(bytes.fromhex(value))
                refs.append(ref)
            self._arrays = {alg: (np.frombuffer(b"".join(codes), dtype=np.uint8)
                                  .reshape(len(codes), -1), refs)
                            for alg, (codes, refs) in grouped.items()}
        return self._arrays

    def _exact(self) -> dict[tuple[str, str], set[str]]:
        """Exact hashes: (algorithm, hex) to the match references that carry it."""
        if self._exact_map is None:
            self._exact_map = {}
            for ref, alg, value in self.entries.values():
                if alg in EXACT_ALGORITHMS:
                    self._exact_map.setdefault((alg, value), set()).add(ref)
        return self._exact_map

    def search(self, queries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Lookup results for ``[{"algorithm", "value", "quality"?}]``, as the API gives them."""
        index = self._index()
        thresholds = self.rules.get("thresholds", {})
        floor = int(self.rules.get("min_pdq_quality", 0))
        limit = int(self.rules.get("max_matches", MAX_MATCHES))
        results = []
        for query in queries:
            alg, value = query["algorithm"], str(query["value"]).lower()
            best: dict[str, int] = {}
            codes, refs = index.get(alg, (np.zeros((0, 1), np.uint8), []))
            if alg in EXACT_ALGORITHMS:
                best = dict.fromkeys(self._exact().get((alg, value), ()), 0)
            elif alg in thresholds and len(refs) and (
                    alg != "pdq" or query.get("quality") is None or query["quality"] >= floor):
                q = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
                dists = np.unpackbits(codes ^ q, axis=1).sum(axis=1)
                for pos in np.flatnonzero(dists <= thresholds[alg]).tolist():
                    d = int(dists[pos])
                    if d < best.get(refs[pos], 1 << 30):
                        best[refs[pos]] = d
            found = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))
            results.append({"algorithm": alg, "truncated": len(found) > limit,
                            "matches": [{"match_ref": r, "algorithm": alg, "distance": d}
                                        for r, d in found[:limit]]})
        return results

    def save(self, path: str | Path) -> None:
        """Write the copy to a JSON file (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"cursor": self.cursor, "matching": self.rules,
                                   "entries": [[e, *v] for e, v in self.entries.items()]}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "LocalBank":
        """A copy saved by :meth:`save` (an empty one where the file does not exist)."""
        bank = cls()
        path = Path(path)
        if not path.exists():
            return bank
        try:
            data = json.loads(path.read_text())
            bank.cursor = int(data["cursor"])
            bank.rules = dict(data["matching"])
            bank.entries = {e: (r, a, v) for e, r, a, v in data["entries"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a synced bank ({exc})") from exc
        return bank


def check_query(item: Any) -> tuple[str, str, int | None]:
    """(algorithm, lowercase hex, quality) of one lookup query; InputError naming what is wrong."""
    if not isinstance(item, dict):
        raise InputError("expected an object with algorithm and value")
    algorithm, value, quality = item.get("algorithm"), item.get("value"), item.get("quality")
    if not isinstance(algorithm, str) or algorithm not in HEX_DIGITS:  # a list is unhashable
        raise InputError(f"algorithm must be one of {', '.join(HEX_DIGITS)}")
    digits = HEX_DIGITS[algorithm]
    if (not isinstance(value, str) or len(value) != digits
            or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise InputError(f"{algorithm} value must be {digits} hex digits")
    if quality is not None and (not isinstance(quality, int) or isinstance(quality, bool)
                                or not 0 <= quality <= 100):
        raise InputError("quality must be an integer from 0 to 100")
    return algorithm, value.lower(), quality


def sync(bank: LocalBank, fetch: Any, page_size: int = MAX_FEED_PAGE,
         progress: Any = None) -> int:
    """Bring ``bank`` up to date with ``fetch(cursor, limit) -> page``; returns changes applied."""
    applied = 0
    while True:
        page = fetch(bank.cursor, page_size)
        applied += bank.apply(page)
        if progress is not None:
            progress(len(page["changes"]))
        if not page["more"]:
            return applied


__all__ = ["LocalBank", "MAX_FEED_PAGE", "MAX_MATCHES", "RefCipher", "check_query", "feed_page",
           "matching_rules", "read_feed", "sync"]
