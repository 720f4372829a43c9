"""Platforms' endpoint: look hashes of uploads up in the bank.

Each answer names the algorithm, the distance and an opaque match reference: an HMAC of the
caller's org id and the registered image id under a server secret. The same image gives one
platform the same reference every time (so it can group its takedowns), gives two platforms
unrelated references, and says nothing of the case or the victim.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, g, jsonify
from werkzeug.exceptions import RequestEntityTooLarge

from hashsvc.api import state
from hashsvc.api.auth import current_principal, requires
from hashsvc.api.errors import LineError, json_body
from hashsvc.errors import InputError
from hashsvc.hashing import EXACT_ALGORITHMS, HEX_DIGITS, VARIANT_SLOTS
from hashsvc.index import hex_to_codes
from hashsvc.matching import BankMatcher
from hashsvc.settings import Settings
from hashsvc.store import Store

bp = Blueprint("lookup", __name__)


#: Most matches returned for one input; a featureless picture could otherwise match thousands.
MAX_MATCHES = 100


@dataclass(frozen=True)
class Query:
    """One hash to look up."""

    algorithm: str
    value: str
    quality: int | None = None


@dataclass(frozen=True)
class Hit:
    """A registered image that one query matched."""

    image_id: int
    algorithm: str
    distance: int


class LookupIndex:
    """One process's bank indexes, brought up to date from the change feed at most every
    ``lookup_refresh_seconds``, so a new hash matches and a withdrawn one stops within that."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.matcher = BankMatcher(store, settings)
        self.secret = match_secret(settings)
        self.refreshed = time.monotonic()
        # HammingIndex is not safe to search while the change feed is applied to it.
        self.lock = threading.Lock()

    def search(self, queries: list[Query]) -> list[list[Hit]]:
        """The hits of each query, nearest first."""
        out: list[list[Hit]] = [[] for _ in queries]
        with self.lock:
            if time.monotonic() - self.refreshed >= self.settings.lookup_refresh_seconds:
                self.matcher.refresh()
                self.refreshed = time.monotonic()
            for name in self.matcher.indexes:
                self._perceptual(name, queries, out)
        for name in EXACT_ALGORITHMS:
            self._exact(name, queries, out)
        return out

    def _perceptual(self, name: str, queries: list[Query], out: list[list[Hit]]) -> None:
        """Search one algorithm's index within its threshold."""
        index = self.matcher.indexes[name]
        floor = self.settings.min_pdq_quality if name == "pdq" else 0
        rows = [i for i, q in enumerate(queries) if q.algorithm == name
                and (q.quality is None or q.quality >= floor)]
        if not rows or len(index) == 0:
            return
        bits = self.matcher.bits[name]
        threshold = self.settings.thresholds()[name]
        found = index.search(hex_to_codes([queries[i].value for i in rows], bits), threshold)
        # A registered video's frames answer as the video: one reference for all of them.
        parent = self.matcher.registrations(
            {int(x) for ids, _ in found for x in (ids // VARIANT_SLOTS).tolist()})
        for i, (ids, dists) in zip(rows, found):
            best: dict[int, int] = {}
            # Results come nearest first, so an image's first entry is its best variant.
            for image_id, dist in zip((ids // VARIANT_SLOTS).tolist(),
                                      np.asarray(dists).tolist()):
                best.setdefault(parent[int(image_id)], int(dist))
            out[i] = [Hit(image, name, dist) for image, dist in best.items()]

    def _exact(self, name: str, queries: list[Query], out: list[list[Hit]]) -> None:
        """Look exact hashes up in the store directly (always current, no index)."""
        rows = [i for i, q in enumerate(queries) if q.algorithm == name]
        if not rows:
            return
        hits = self.store.exact_lookup(name, sorted({queries[i].value for i in rows}))
        for i in rows:
            out[i] = [Hit(image, name, 0) for image in sorted(set(hits.get(queries[i].value,
                                                                          ())))]


def lookup_index() -> LookupIndex:
    """This process's lookup index, built (or loaded from disk) on first use."""
    shared = state()
    with shared.lock:
        if shared.lookup_index is None:
            shared.lookup_index = LookupIndex(shared.store, shared.settings)
        return shared.lookup_index


def match_secret(settings: Settings) -> bytes:
    """The server secret behind match references: the setting, else a file made once."""
    if settings.api_secret:
        return settings.api_secret.encode("utf-8")
    path = settings.data_path / "api_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"api_secret.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(32))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # atomic and never overwrites: concurrent workers agree
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode("utf-8")


def match_ref(secret: bytes, org_id: int, image_id: int) -> str:
    """The opaque reference of a registered image for one org."""
    digest = hmac.new(secret, f"{org_id}:{image_id}".encode(), hashlib.sha256).hexdigest()
    return f"m_{digest[:32]}"


def parse_queries(body: Any, limit: int) -> list[Query]:
    """The ``hashes`` of a lookup request, each checked; 400 naming the bad one, 413 if too many."""
    if not isinstance(body, dict) or not isinstance(body.get("hashes"), list):
        raise InputError('the body must be {"hashes": [{"algorithm": ..., "value": ...}, ...]}')
    items = body["hashes"]
    if len(items) > limit:
        raise RequestEntityTooLarge(f"at most {limit} hashes per lookup")
    queries = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise LineError(index, "expected an object with algorithm and value")
        algorithm, value, quality = item.get("algorithm"), item.get("value"), item.get("quality")
        if algorithm not in HEX_DIGITS:
            raise LineError(index, f"algorithm must be one of {', '.join(HEX_DIGITS)}")
        digits = HEX_DIGITS[algorithm]
        if (not isinstance(value, str) or len(value) != digits
                or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise LineError(index, f"{algorithm} value must be {digits} hex digits")
        if quality is not None and (not isinstance(quality, int) or isinstance(quality, bool)
                                    or not 0 <= quality <= 100):
            raise LineError(index, "quality must be an integer from 0 to 100")
        queries.append(Query(algorithm, value.lower(), quality))
    return queries


@bp.post("/lookup")
@requires("platform", action="lookup", target="match")
def lookup() -> Any:
    """Matches in the bank for each hash sent, in the order sent."""
    settings = state().settings
    queries = parse_queries(json_body(dict), settings.lookup_max_hashes)
    index = lookup_index()
    hits = index.search(queries) if queries else []
    secret = index.secret
    org_id = current_principal().org_id
    results = []
    for query, found in zip(queries, hits):
        found.sort(key=lambda h: (h.distance, h.image_id))
        results.append({"algorithm": query.algorithm, "truncated": len(found) > MAX_MATCHES,
                        "matches": [{"match_ref": match_ref(secret, org_id, h.image_id),
                                     "algorithm": h.algorithm, "distance": h.distance}
                                    for h in found[:MAX_MATCHES]]})
    g.audit.details.update({"hashes": len(queries),
                            "matched": sum(1 for r in results if r["matches"])})
    return jsonify({"results": results})
