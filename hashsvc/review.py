"""Analysts' review of a scan's candidates: confirm or reject each matched file, with a reason.

A perceptual match is evidence only once a person has confirmed it. Each matched file of a scan
is a candidate whose ``match_id`` is its file row's id; a decision is appended (never updated)
with who made it and when, and the newest decision counts. Only confirmed candidates go into
the deletion report (:mod:`hashsvc.deletion_report`). Every decision that changes something is
also an audit entry, whether it came through the API or the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import select

from hashsvc import audit
from hashsvc.errors import InputError, NotFound
from hashsvc.hashing import EXACT_ALGORITHMS
from hashsvc.store import Store
from hashsvc.store.models import MatchReview, ScanFile, ScanMatch

DECISIONS = ("confirmed", "rejected")
MAX_REASON = 2000


@dataclass(frozen=True)
class Reviewer:
    """Who decides: the analyst's name, and the org and API key it came through (None: CLI)."""

    name: str
    org_id: int | None = None
    key_id: int | None = None


def review_json(row: MatchReview | None) -> dict[str, Any] | None:
    """A decision as the API and the reports show it (None: not reviewed yet)."""
    if row is None:
        return None
    return {"decision": row.decision, "reason": row.reason, "reviewer": row.reviewer,
            "decided_at": audit.utc_text(row.decided_at)}


def current_reviews(store: Store, scan_id: str) -> dict[int, MatchReview]:
    """The newest decision on each reviewed file of a scan, by match id."""
    with store.sessions() as session:
        rows = session.scalars(select(MatchReview).where(MatchReview.scan_id == scan_id)
                               .order_by(MatchReview.id)).all()
    return {row.file_id: row for row in rows}


def history(store: Store, scan_id: str, match_id: int) -> list[dict[str, Any]]:
    """Every decision on one candidate, oldest first."""
    with store.sessions() as session:
        rows = session.scalars(select(MatchReview).where(
            MatchReview.scan_id == scan_id, MatchReview.file_id == match_id)
            .order_by(MatchReview.id)).all()
    return [review_json(r) or {} for r in rows]


def candidates(store: Store, scan_id: str, report: Mapping[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    """The scan's match objects (as in its report), each with its current ``review``."""
    from hashsvc.report import build_report

    matches = (report or build_report(store, scan_id))["matches"]
    reviews = current_reviews(store, scan_id)
    return [{**m, "review": review_json(reviews.get(m["match_id"]))} for m in matches]


def confirmed_matches(store: Store, scan_id: str, report: Mapping[str, Any]
                      ) -> list[dict[str, Any]]:
    """The report's match objects that analysts confirmed (for the deletion report)."""
    return [c for c in candidates(store, scan_id, report)
            if c["review"] is not None and c["review"]["decision"] == "confirmed"]


def matched_file_ids(store: Store, scan_id: str, exact_only: bool = False) -> list[int]:
    """Match ids of a scan's candidates; ``exact_only``: those with an exact-hash match."""
    query = (select(ScanFile.id).join(ScanMatch, (ScanMatch.scan_id == ScanFile.scan_id)
                                      & (ScanMatch.locator_hash == ScanFile.locator_hash))
             .where(ScanFile.scan_id == scan_id).distinct())
    if exact_only:
        query = query.where(ScanMatch.algorithm.in_(EXACT_ALGORITHMS))
    with store.sessions() as session:
        return sorted(session.scalars(query).all())


def decide(store: Store, scan_id: str, match_ids: Iterable[int], decision: str,
           reviewer: Reviewer, reason: str | None = None) -> list[dict[str, Any]]:
    """Record ``decision`` on each candidate; returns what changed (a repeat changes nothing).

    A rejection needs a reason. An id that is not a candidate of this scan refuses the whole
    request before anything is written.
    """
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {', '.join(DECISIONS)}")
    reason = (reason or "").strip() or None
    if decision == "rejected" and reason is None:
        raise InputError("a rejection needs a reason")
    if reason is not None and (len(reason) > MAX_REASON or "\0" in reason):
        raise InputError(f"reason must be text of at most {MAX_REASON} characters")
    if not reviewer.name.strip() or len(reviewer.name) > 200 or "\0" in reviewer.name:
        raise InputError("reviewer must be a name of at most 200 characters")
    wanted = _unique(match_ids)
    if not wanted:
        raise InputError("no match ids given")
    known = set(matched_file_ids(store, scan_id))
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise NotFound(f"not candidates of scan {scan_id}: "
                       f"{', '.join(str(m) for m in unknown[:20])}")
    before = current_reviews(store, scan_id)
    changed: list[dict[str, Any]] = []
    with store.sessions.begin() as session:
        for match_id in wanted:
            old = before.get(match_id)
            if old is not None and (old.decision, old.reason) == (decision, reason):
                continue
            row = MatchReview(scan_id=scan_id, file_id=match_id, decision=decision,
                              reason=reason, reviewer=reviewer.name.strip(),
                              org_id=reviewer.org_id, key_id=reviewer.key_id)
            session.add(row)
            session.flush()
            audit.append(session, action="match.review", org_id=reviewer.org_id,
                         key_id=reviewer.key_id, target_type="scan", target_id=scan_id,
                         details={"match_id": match_id, "decision": decision,
                                  "previous": old.decision if old is not None else None,
                                  "reason": reason, "reviewer": row.reviewer,
                                  "via": "api" if reviewer.key_id is not None else "cli"})
            changed.append({"match_id": match_id, **(review_json(row) or {}),
                            "previous": review_json(old)})
    return changed


def _unique(ids: Iterable[Any]) -> list[int]:
    """Match ids as integers, in order, without repeats; InputError for anything else."""
    out: list[int] = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InputError("match ids must be integers")
        try:
            number = int(value)
        except ValueError:
            raise InputError(f"not a match id: {str(value)[:40]}") from None
        if number < 0 or number >= 2 ** 62:
            raise InputError(f"not a match id: {number}")
        if number not in out:
            out.append(number)
    return out


def summary(items: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many candidates are confirmed, rejected and not yet reviewed."""
    counts = {"confirmed": 0, "rejected": 0, "unreviewed": 0}
    for item in items:
        review = item.get("review")
        counts[review["decision"] if review else "unreviewed"] += 1
    return counts
