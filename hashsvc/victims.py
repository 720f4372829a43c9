"""What a victim can do without an account, with the case reference and secret a charity gave:
read the case's status, withdraw it, withdraw consent to local features.

The secret is shown once, when the case is made (or a charity replaces a lost one); only a
digest of it is stored. It has 120 bits of entropy, so a fast digest is safe; guessing is
stopped by a per-case lockout (here) and a per-client rate limit (in the API), both audited.

The status tells the victim counts, never content: active hashes, platform matches and
takedown outcomes per platform (by platform name), and for how many exhibits (scans) a signed
deletion report named the case's images.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import func, select, update

from hashsvc import audit
from hashsvc.errors import InputError, NotFound
from hashsvc.store import Store
from hashsvc.store.models import (BankHash, Case, IssuedReport, Org, PlatformMatch,
                                  RegisteredImage, TakedownFeedback, utcnow)

#: Letters and digits that cannot be misread for one another (no 0/O, 1/I/L, U).
_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
#: Groups of five characters; 24 of 30 symbols is 117.8 bits.
_GROUPS = 5
#: Outcomes a platform can report for a match.
OUTCOMES = ("removed", "not_found", "appealed")


def new_secret() -> str:
    """A victim's secret, in groups a person can read out and type: ``XXXXX-XXXXX-...``."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(5 * _GROUPS))
    return "-".join(chars[i:i + 5] for i in range(0, len(chars), 5))


def _normal(secret: str) -> str:
    """The secret as typed, without spaces and dashes, in capitals."""
    return "".join(c for c in secret.upper() if c not in " -\t")


def secret_digest(case_id: int, secret: str) -> str:
    """The stored form of a case's secret (bound to the case, so digests never repeat)."""
    return hashlib.sha256(f"hashsvc-case-secret:{case_id}:{_normal(secret)}".encode()).hexdigest()


def set_secret(store: Store, case_id: int) -> str:
    """Give the case a new secret (the old one stops working) and clear any lockout; returns
    the only copy of the secret there will be."""
    secret = new_secret()
    with store.sessions.begin() as session:
        case = session.get(Case, case_id)
        if case is None:
            raise NotFound(f"no case {case_id}")
        case.secret_hash = secret_digest(case_id, secret)
        case.secret_failures = 0
        case.locked_until = None
    return secret


@dataclass(frozen=True)
class SecretCheck:
    """The answer to a victim's reference and secret."""

    case_id: int | None  # the case, when the secret was right and the case not locked
    locked_for: int = 0  # seconds until the case accepts secrets again, when locked
    locked_now: bool = False  # this attempt locked the case
    failures: int = 0
    target: int | None = None  # the case the reference names, for the audit log only


def check_secret(store: Store, case_ref: str, secret: str, max_failures: int,
                 lockout_seconds: int) -> SecretCheck:
    """Check a reference and secret. After ``max_failures`` wrong secrets in a row the case
    refuses every secret, the right one too, for ``lockout_seconds``; an unknown reference
    answers exactly as a wrong secret does."""
    if not isinstance(case_ref, str) or not isinstance(secret, str) or len(secret) > 200 \
            or len(case_ref) > 200 or not _storable(case_ref) or not _storable(secret):
        return SecretCheck(None)  # no case has it (and PostgreSQL refuses a NUL in a query)
    now = utcnow()
    with store.sessions.begin() as session:
        case = session.execute(select(Case).where(Case.ref == case_ref)
                               .with_for_update()).scalar_one_or_none()
        if case is None:
            secret_digest(0, secret)  # the same work as for a real case
            return SecretCheck(None)
        locked = _aware(case.locked_until)
        if locked is not None and locked > now:
            return SecretCheck(None, max(1, int((locked - now).total_seconds() + 0.999)),
                               target=case.id)
        right = case.secret_hash is not None and hmac.compare_digest(
            case.secret_hash, secret_digest(case.id, secret))
        if right:
            if case.secret_failures or case.locked_until:
                case.secret_failures, case.locked_until = 0, None
            return SecretCheck(case.id, target=case.id)
        # Counted in the database, so every API process shares the count.
        session.execute(update(Case).where(Case.id == case.id)
                        .values(secret_failures=Case.secret_failures + 1))
        session.refresh(case)
        if case.secret_failures >= max_failures:
            case.locked_until = now + timedelta(seconds=lockout_seconds)
            case.secret_failures = 0
            return SecretCheck(None, lockout_seconds, True, max_failures, case.id)
        return SecretCheck(None, failures=case.secret_failures, target=case.id)


def _storable(text: str) -> bool:
    """Text a database can compare: no NUL, valid UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _aware(value: datetime | None) -> datetime | None:
    """A stored time as timezone-aware UTC (SQLite hands back naive times)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def status(store: Store, case_id: int) -> dict[str, Any]:
    """What the victim may see of a case: counts only, and the names of matching platforms."""
    with store.sessions() as session:
        case = session.get(Case, case_id)
        if case is None:
            raise NotFound(f"no case {case_id}")
        images = session.execute(select(func.count()).select_from(RegisteredImage).where(
            RegisteredImage.case_id == case_id, RegisteredImage.parent_id.is_(None))).scalar()
        hashes = session.execute(select(func.count()).select_from(BankHash).join(
            RegisteredImage, RegisteredImage.id == BankHash.image_id).where(
            RegisteredImage.case_id == case_id)).scalar()
        matched = dict(session.execute(
            select(Org.name, func.count()).select_from(PlatformMatch)
            .join(Org, Org.id == PlatformMatch.org_id)
            .where(PlatformMatch.case_id == case_id).group_by(Org.name)).all())
        # Each match counts once, at its latest outcome: a removal after an appeal is removed.
        latest = (select(TakedownFeedback.org_id, TakedownFeedback.image_id,
                         func.max(TakedownFeedback.id).label("last"))
                  .where(TakedownFeedback.case_id == case_id)
                  .group_by(TakedownFeedback.org_id, TakedownFeedback.image_id).subquery())
        outcomes = session.execute(
            select(Org.name, TakedownFeedback.outcome, func.count())
            .select_from(TakedownFeedback).join(latest, latest.c.last == TakedownFeedback.id)
            .join(Org, Org.id == TakedownFeedback.org_id)
            .group_by(Org.name, TakedownFeedback.outcome)).all()
        # Per exhibit (scan): a report downloaded again, or in another format, is the same
        # deletion report to the victim.
        reports = session.execute(select(func.count(func.distinct(IssuedReport.scan_id)))
                                  .where(IssuedReport.case_id == case_id)).scalar()
    platforms: dict[str, dict[str, Any]] = {}
    for name, count in matched.items():
        platforms[name] = {"platform": name, "matches": count,
                           "outcomes": dict.fromkeys(OUTCOMES, 0)}
    for name, outcome, count in outcomes:
        entry = platforms.setdefault(name, {"platform": name, "matches": 0,
                                            "outcomes": dict.fromkeys(OUTCOMES, 0)})
        entry["outcomes"][outcome] = count
    listed = sorted(platforms.values(), key=lambda p: p["platform"])
    return {
        "case_ref": case.ref,
        "state": "withdrawn" if case.withdrawn_at else "active",
        "created_at": audit.utc_text(case.created_at),
        "withdrawn_at": audit.utc_text(case.withdrawn_at),
        "features_consent": bool(case.features_consent),
        "images": images or 0,
        "active_hashes": hashes or 0,
        "platform_matches": sum(p["matches"] for p in listed),
        "takedowns": {o: sum(p["outcomes"][o] for p in listed) for o in OUTCOMES},
        "platforms": listed,
        "deletion_reports": reports or 0,
    }


def record_platform_matches(store: Store, org_id: int, image_ids: Iterable[int]) -> int:
    """Note that a platform's lookup matched these registered images (the first time only);
    returns how many were new. Images withdrawn meanwhile are skipped."""
    ids = sorted(set(image_ids))
    if not ids:
        return 0
    with store.sessions.begin() as session:
        cases = session.execute(select(RegisteredImage.id, RegisteredImage.case_id)
                                .where(RegisteredImage.id.in_(ids))).all()
        return len(store._insert_ignore(session, PlatformMatch, [
            {"org_id": org_id, "case_id": case_id, "image_id": image_id, "first_at": utcnow()}
            for image_id, case_id in cases]))


def record_feedback(store: Store, org_id: int, key_id: int | None, image_id: int,
                    outcome: str) -> int:
    """Record a platform's takedown outcome for a match it was given; returns the case id.

    The match may have come from a lookup or from the platform's own matching on a synced
    bank; either way it counts as a match of that platform. NotFound when the image is unknown
    (or withdrawn before the platform ever looked it up).
    """
    if outcome not in OUTCOMES:
        raise InputError(f"outcome must be one of {', '.join(OUTCOMES)}")
    with store.sessions.begin() as session:
        case_id = session.execute(select(RegisteredImage.case_id).where(
            RegisteredImage.id == image_id)).scalar_one_or_none()
        if case_id is None:
            case_id = session.execute(select(PlatformMatch.case_id).where(
                PlatformMatch.image_id == image_id)).scalars().first()
        if case_id is None:
            raise NotFound("no such match")
        store._insert_ignore(session, PlatformMatch, [
            {"org_id": org_id, "case_id": case_id, "image_id": image_id, "first_at": utcnow()}])
        session.add(TakedownFeedback(org_id=org_id, key_id=key_id, case_id=case_id,
                                     image_id=image_id, outcome=outcome, at=utcnow()))
        return int(case_id)


def record_issued_report(store: Store, report_id: str, scan_id: str, document_sha256: str,
                         case_refs: Iterable[str]) -> int:
    """Note that a signed deletion report named images of these cases; returns how many cases.
    Issuing the same report again changes nothing."""
    refs = sorted({r for r in case_refs if r})
    if not refs:
        return 0
    with store.sessions.begin() as session:
        ids = session.execute(select(Case.id).where(Case.ref.in_(refs))).scalars().all()
        store._insert_ignore(session, IssuedReport, [
            {"report_id": report_id, "case_id": i, "scan_id": scan_id,
             "document_sha256": document_sha256, "issued_at": utcnow()} for i in ids])
        return len(ids)


def case_by_id(store: Store, case_id: int) -> Case:
    """The case row, or NotFound."""
    with store.sessions() as session:
        case = session.get(Case, case_id)
    if case is None:
        raise NotFound(f"no case {case_id}")
    return case


def set_consent(store: Store, case_id: int, consent: bool) -> int:
    """Record the victim's answer on local features; withdrawing consent erases them at once
    (returns how many images' features were erased)."""
    case = case_by_id(store, case_id)
    if not consent:
        return store.drop_features(case.ref)
    if case.withdrawn_at is not None:
        raise InputError("the case was withdrawn")
    with store.sessions.begin() as session:
        store.ensure_case(session, case.ref, True)
    return 0


__all__ = ["OUTCOMES", "SecretCheck", "check_secret", "new_secret", "record_feedback",
           "record_issued_report", "record_platform_matches", "secret_digest", "set_consent",
           "set_secret", "status"]
