"""Platforms' endpoints: look hashes of uploads up in the bank, sync the bank, report takedowns.

Each lookup answer names the algorithm, the distance and an opaque match reference (see
:mod:`hashsvc.bank_sync`): the same image gives one platform the same reference every time (so
it can group its takedowns), gives two platforms unrelated references, and says nothing of the
case or the victim. ``POST /v1/feedback`` takes a reference back with what the platform did,
which the victim's status shows. ``GET /v1/bank/changes`` pages the bank's additions and
withdrawals to platforms granted bank sync, for matching on their own machines.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, g, jsonify
from werkzeug.exceptions import Forbidden, RequestEntityTooLarge

from hashsvc.api import state
from hashsvc.api.auth import current_principal, requires
from hashsvc.api.errors import BIG, LineError, int_arg, json_body
from hashsvc.bank_sync import MAX_FEED_PAGE, MAX_MATCHES, RefCipher, check_query, feed_page
from hashsvc.errors import InputError, NotFound
from hashsvc.hashing import EXACT_ALGORITHMS, VARIANT_SLOTS
from hashsvc.index import hex_to_codes
from hashsvc.matching import BankMatcher
from hashsvc.settings import Settings
from hashsvc.store import Store
from hashsvc.victims import OUTCOMES, record_feedback, record_platform_matches

bp = Blueprint("lookup", __name__)




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
        self.refs = RefCipher(match_secret(settings))
        # (org, image) pairs this process has recorded as platform matches already.
        self.recorded: set[tuple[int, int]] = set()
        # HammingIndex is not safe to search while the change feed is applied to it.
        self.lock = threading.Lock()

    def search(self, queries: list[Query]) -> list[list[Hit]]:
        """The hits of each query, nearest first."""
        out: list[list[Hit]] = [[] for _ in queries]
        with self.lock:
            self.matcher.refresh_if_stale()
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

    def record_matches(self, org_id: int, image_ids: set[int]) -> None:
        """Note, once per platform and image, that a lookup matched it (the victim's status
        counts these)."""
        new = {i for i in image_ids if (org_id, i) not in self.recorded}
        if new:
            record_platform_matches(self.store, org_id, new)
            self.recorded.update((org_id, i) for i in new)

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


def parse_queries(body: Any, limit: int) -> list[Query]:
    """The ``hashes`` of a lookup request, each checked; 400 naming the bad one, 413 if too many."""
    if not isinstance(body, dict) or not isinstance(body.get("hashes"), list):
        raise InputError('the body must be {"hashes": [{"algorithm": ..., "value": ...}, ...]}')
    items = body["hashes"]
    if len(items) > limit:
        raise RequestEntityTooLarge(f"at most {limit} hashes per lookup")
    queries = []
    for index, item in enumerate(items):
        try:
            queries.append(Query(*check_query(item)))
        except InputError as exc:
            raise LineError(index, str(exc)) from exc
    return queries


@bp.post("/lookup")
@requires("platform", action="lookup", target="match")
def lookup() -> Any:
    """Matches in the bank for each hash sent, in the order sent."""
    settings = state().settings
    queries = parse_queries(json_body(dict), settings.lookup_max_hashes)
    index = lookup_index()
    hits = index.search(queries) if queries else []
    org_id = current_principal().org_id
    results = []
    matched: set[int] = set()
    for query, found in zip(queries, hits):
        # Ordered by distance, then reference: what a platform's synced copy can reproduce.
        refs = sorted(((h.distance, index.refs.match_ref(org_id, h.image_id), h)
                       for h in found), key=lambda t: (t[0], t[1]))
        kept = refs[:MAX_MATCHES]
        matched.update(h.image_id for _, _, h in kept)
        results.append({"algorithm": query.algorithm, "truncated": len(refs) > MAX_MATCHES,
                        "matches": [{"match_ref": ref, "algorithm": h.algorithm,
                                     "distance": h.distance} for _, ref, h in kept]})
    index.record_matches(org_id, matched)
    g.audit.details.update({"hashes": len(queries),
                            "matched": sum(1 for r in results if r["matches"])})
    return jsonify({"results": results})


@bp.post("/feedback")
@requires("platform", action="feedback", target="match")
def feedback() -> Any:
    """``{"match_ref", "outcome": "removed" | "not_found" | "appealed"}``: what the platform
    did about a match it was given (by lookup, or by matching its synced copy). The victim's
    status counts it. A reference made for another platform answers as an unknown one."""
    body = json_body(dict)
    ref, outcome = body.get("match_ref"), body.get("outcome")
    if outcome not in OUTCOMES:
        raise InputError(f"outcome must be one of {', '.join(OUTCOMES)}")
    principal = current_principal()
    image_id = lookup_index().refs.image_of(principal.org_id, ref)
    g.audit.target_id = ref[:64] if isinstance(ref, str) else None
    if image_id is None:
        raise NotFound("no such match reference")
    record_feedback(state().store, principal.org_id, principal.key_id, image_id, outcome)
    g.audit.details["outcome"] = outcome
    return jsonify({"match_ref": ref, "outcome": outcome, "recorded": True}), 201


@bp.get("/bank/changes")
@requires("platform", action="bank.sync", target="bank")
def bank_changes() -> Any:
    """A page of the bank's additions and withdrawals after ``?cursor=`` (oldest first, at most
    ``?limit=``), for platforms granted bank sync; ``cursor`` in the answer is where the next
    page starts and ``more`` says whether to ask at once. ``matching`` gives the thresholds the
    lookup API applies, so that a synced copy answers as it does."""
    principal = current_principal()
    if not org_has_bank_sync(state().store, principal.org_id):
        raise Forbidden("this platform is not granted bank sync; ask the operator")
    cursor = int_arg("cursor", 0, 0, BIG)
    limit = int_arg("limit", MAX_FEED_PAGE, 1, MAX_FEED_PAGE)
    page = feed_page(state().store, lookup_index().refs, principal.org_id, cursor, limit,
                     state().settings)
    g.audit.details.update({"cursor": cursor, "changes": len(page["changes"]),
                            "next_cursor": page["cursor"]})
    return jsonify(page)


def org_has_bank_sync(store: Store, org_id: int) -> bool:
    """Whether the operator granted this org bank sync."""
    from hashsvc.store.models import Org

    with store.sessions() as session:
        org = session.get(Org, org_id)
    return bool(org is not None and org.bank_sync)
