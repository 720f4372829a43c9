"""One-time registration links: a charity makes one for a case, the victim's intake page uses
its code once to register hashes made on the victim's own device.

The code is shown once, in the link (``/intake#code=...``: in the URL fragment, which browsers
never send to a server); only a digest of it is stored. It has 147 bits of entropy, so a fast
digest is safe; guessing is also limited per client address by the API. Using a code is atomic:
of two requests with the same code, one registers and the other is told the code was used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from hashsvc.errors import InputError
from hashsvc.store import Store
from hashsvc.store.models import IntakeLink, utcnow

#: Letters and digits that cannot be misread for one another (as in victims' secrets).
_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
#: Six groups of five characters: 30 of 30 symbols is 147 bits.
_GROUPS = 6
#: Longest text taken as a code (anything longer is no code of ours).
MAX_CODE = 100


def new_code() -> str:
    """A fresh code, in groups a person can read out and type: ``XXXXX-XXXXX-...``."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(5 * _GROUPS))
    return "-".join(chars[i:i + 5] for i in range(0, len(chars), 5))


def code_digest(code: str) -> str:
    """The stored form of a code (spaces and dashes dropped, capitals)."""
    normal = "".join(c for c in code.upper() if c not in " -\t")
    return hashlib.sha256(f"hashsvc-intake-code:{normal}".encode()).hexdigest()


@dataclass(frozen=True)
class NewLink:
    """A link just made: ``code`` is the only copy there will be."""

    link_id: int
    case_id: int
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class LinkCheck:
    """What a code opens: the case, or why not ("unknown", "expired", "used")."""

    case_id: int | None
    link_id: int | None = None
    refused: str | None = None


def _aware(value: datetime | None) -> datetime | None:
    """A stored time as timezone-aware UTC (SQLite hands back naive times)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def create_link(store: Store, case_id: int, hours: int) -> NewLink:
    """Make a one-time link for a case, valid for ``hours``."""
    if hours <= 0:
        raise InputError("intake links must be valid for at least an hour")
    code = new_code()
    now = utcnow()
    expires = now + timedelta(hours=hours)
    with store.sessions.begin() as session:
        row = IntakeLink(case_id=case_id, code_hash=code_digest(code), created_at=now,
                         expires_at=expires)
        session.add(row)
        session.flush()
        return NewLink(row.id, case_id, code, expires)


def check_code(store: Store, code: str) -> LinkCheck:
    """What a code opens, without using it."""
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE \
            or "\x00" in code or not code.isascii():  # every code of ours is ASCII
        return LinkCheck(None, refused="unknown")
    digest = code_digest(code)
    with store.sessions() as session:
        row = session.execute(select(IntakeLink).where(
            IntakeLink.code_hash == digest)).scalar_one_or_none()
    # Found by its digest (an index lookup, as for API keys' prefixes); compared again in
    # constant time, so that no comparison of the stored value depends on where it differs.
    if row is None or not hmac.compare_digest(row.code_hash, digest):
        return LinkCheck(None, refused="unknown")
    if row.used_at is not None:
        return LinkCheck(None, row.id, "used")
    expires = _aware(row.expires_at)
    if expires is not None and expires <= utcnow():
        return LinkCheck(None, row.id, "expired")
    return LinkCheck(row.case_id, row.id)


def use_link(store: Store, link_id: int) -> bool:
    """Mark a link used, once: True for the one caller that did it, False if it was used (or
    expired) meanwhile. A single conditional UPDATE, so concurrent callers cannot both win."""
    with store.sessions.begin() as session:
        done = session.execute(update(IntakeLink)
                               .where(IntakeLink.id == link_id, IntakeLink.used_at.is_(None),
                                      IntakeLink.expires_at > utcnow())
                               .values(used_at=utcnow()))
        return bool(done.rowcount == 1)


def release_link(store: Store, link_id: int) -> None:
    """Make a link usable again after the registration it was used for failed."""
    with store.sessions.begin() as session:
        session.execute(update(IntakeLink).where(IntakeLink.id == link_id)
                        .values(used_at=None))


__all__ = ["LinkCheck", "NewLink", "check_code", "code_digest", "create_link", "new_code",
           "release_link", "use_link"]
