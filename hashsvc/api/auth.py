"""Bearer-key authentication, role checks, per-key rate limits and the audit trail of requests.

``@requires(role, ..., action="case.read", target="case")`` on a view authenticates the caller,
admits only the named roles and, when ``action`` is given, makes the request leave one audit
entry whatever its outcome: "ok", "denied" (401, 403, 429, another org's record), "refused"
(other 4xx) or "failed" (5xx).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable, TypeVar, cast

from flask import Response, g, request
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized

from hashsvc import audit
from hashsvc.accounts import ROLES, Principal, authenticate, split_key
from hashsvc.api import state
from hashsvc.errors import NotFound
from hashsvc.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class PendingAudit:
    """The audit entry a request will leave: filled in by the view as it learns more."""

    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


class RateLimiter:
    """Requests per minute per key: a shared counter in Redis when configured, else in memory.

    The in-memory counter is per process, so N gunicorn workers allow up to N times the limit.
    """

    def __init__(self, settings: Settings) -> None:
        self.per_minute = settings.rate_limit_per_minute
        self.redis_url = settings.redis_url
        self._redis: Any = None
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def allow(self, prefix: str) -> bool:
        """Count one request of the key with this prefix; False once this minute's quota is spent.

        Keys are counted by their random public prefix, never reused, rather than by row id.
        """
        if self.per_minute <= 0:
            return True
        window = int(time.time() // 60)
        if self.redis_url:
            return self._redis_count(prefix, window) <= self.per_minute
        with self._lock:
            for stale in [k for k in self._counts if k[1] != window]:
                del self._counts[stale]
            count = self._counts[(prefix, window)] = self._counts.get((prefix, window), 0) + 1
        return count <= self.per_minute

    def _redis_count(self, prefix: str, window: int) -> int:
        """Increment and read this minute's shared counter for the key."""
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2,
                                               socket_connect_timeout=2)
        name = f"hashsvc:rate:{prefix}:{window}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, 120)
        return int(pipe.execute()[0])


def bearer_key() -> str | None:
    """The key in the Authorization header, if the header is a Bearer one."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def current_principal() -> Principal:
    """The authenticated caller of this request (only inside a view behind @requires)."""
    return cast(Principal, g.principal)


def _authenticate() -> Principal:
    """The caller, or 401."""
    key = bearer_key()
    if key is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer KEY'")
    principal = authenticate(state().store, key)
    if principal is None:
        parts = split_key(key)
        if parts is not None and "audit" in g:
            # The public part only: enough to see which key is being guessed at.
            g.audit.details["key_prefix"] = parts[0][:16]
        raise Unauthorized("unknown or revoked API key")
    return principal


def requires(*roles: str, action: str | None = None, target: str | None = None
             ) -> Callable[[F], F]:
    """Admit only keys with one of ``roles``; with ``action``, audit every outcome.

    The audit target id is the view's first URL argument (a case or scan id) unless the view
    sets ``g.audit.target_id`` itself.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(**kwargs: Any) -> Any:
            if action is not None:
                first = next(iter(kwargs.values()), None)
                g.audit = PendingAudit(action, target, None if first is None else str(first))
            principal = _authenticate()
            g.principal = principal
            if not state().limiter.allow(principal.prefix):
                raise TooManyRequests("rate limit reached for this key; retry next minute")
            if principal.role not in roles:
                raise Forbidden(f"a {principal.role} key cannot do this")
            return view(**kwargs)

        guarded.roles = roles  # type: ignore[attr-defined]
        guarded.audit_action = action  # type: ignore[attr-defined]
        return cast(F, guarded)

    return decorate


def not_found_for_other_org(kind: str, ident: object) -> NotFound:
    """The 404 for a record that exists but belongs to another org, marked so in the audit.

    The caller sees exactly what an unknown id gives, so ids of other orgs never leak.
    """
    if "audit" in g:
        g.audit.details["denied"] = "other_org"
    return NotFound(f"no {kind} {ident}")


def record_audit(response: Response) -> Response:
    """After a request with a pending audit entry: append it with the outcome and caller."""
    pending: PendingAudit | None = g.pop("audit", None)
    if pending is None:
        return response
    principal: Principal | None = g.get("principal")
    status = response.status_code
    outcome = ("ok" if status < 400 else
               "denied" if status in (401, 403, 429) or "denied" in pending.details else
               "failed" if status >= 500 else "refused")
    audit.record(state().store, action=pending.action,
                 org_id=principal.org_id if principal else None,
                 key_id=principal.key_id if principal else None,
                 target_type=pending.target_type,
                 target_id=pending.target_id,
                 details={"status": status, "outcome": outcome, "method": request.method,
                          **pending.details})
    return response


def own_page(model: Any, *order_by: Any) -> list[Any]:
    """A page (``?limit=``, ``?offset=``) of the caller's org's rows of ``model``, counted in
    the request's audit entry."""
    from sqlalchemy import select

    from hashsvc.api.errors import BIG, int_arg

    limit, offset = int_arg("limit", 100, 1, 1000), int_arg("offset", 0, 0, BIG)
    with state().store.sessions() as session:
        rows = list(session.scalars(select(model)
                                    .where(model.org_id == current_principal().org_id)
                                    .order_by(*order_by).limit(limit).offset(offset)))
    g.audit.details["count"] = len(rows)
    return rows
