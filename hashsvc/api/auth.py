"""Bearer-key authentication, role checks, per-key rate limits (flask-limiter) and the audit
trail of requests.

``@requires(role, ..., action="case.read", target="case")`` on a view authenticates the caller,
admits only the named roles and, when ``action`` is given, makes the request leave one audit
entry whatever its outcome: "ok", "denied" (401, 403, 429, another org's record), "refused"
(other 4xx) or "failed" (5xx).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable, TypeVar, cast

from flask import Response, g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from hashsvc import audit
from hashsvc.accounts import ROLES, Principal, authenticate, split_key
from hashsvc.api import state
from hashsvc.errors import NotFound
from hashsvc.settings import Settings
from hashsvc.store.models import utcnow

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class PendingAudit:
    """The audit entry a request will leave: filled in by the view as it learns more."""

    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


def client_address() -> str:
    """The caller's address as the server saw it (behind a proxy: the proxy's, unless the
    deployment wraps the app in werkzeug's ProxyFix)."""
    return request.remote_addr or "unknown"


def rate_key() -> str:
    """Whom a request counts against: its API key when the key is valid, else its address
    (so that guessing keys is limited per address, and cannot spend a real key's quota)."""
    principal = _known_principal()
    return f"key:{principal.prefix}" if principal else f"addr:{client_address()}"


def address_key() -> str:
    """Requests counted per client address (the victims' status endpoints)."""
    return f"addr:{client_address()}"


def _audit_breach(limit: Any) -> None:
    """flask-limiter's callback on a 429: leave an audit entry naming the caller and limit."""
    principal = _known_principal()
    audit.record(state().store, action="rate_limit",
                 org_id=principal.org_id if principal else None,
                 key_id=principal.key_id if principal else None,
                 target_type=None, target_id=None,
                 details={"status": 429, "outcome": "denied", "method": request.method,
                          "path": request.path[:200], "limit": str(limit.limit),
                          "counted_as": "key" if principal else "address"})


def make_limiter(app: Any, settings: Settings) -> Any:
    """flask-limiter on ``app``: ``rate_limit_per_minute`` per API key (per address for
    requests without a valid key), counted in Redis when ``redis_url`` is set so that every
    API process shares the counts, else in this process. A 429 carries Retry-After and is
    audited. If Redis fails the limits fall back to per-process counts rather than failing
    requests."""
    from flask_limiter import Limiter

    per_key = ([f"{settings.rate_limit_per_minute}/minute"]
               if settings.rate_limit_per_minute > 0 else [])
    redis = bool(settings.redis_url)
    return Limiter(
        key_func=rate_key, app=app, default_limits=per_key,
        storage_uri=settings.redis_url if redis else "memory://",
        storage_options={"socket_timeout": 2, "socket_connect_timeout": 2} if redis else {},
        strategy="fixed-window", headers_enabled=True, swallow_errors=True,
        in_memory_fallback_enabled=redis, on_breach=_audit_breach, key_prefix="hashsvc")


def bearer_key() -> str | None:
    """The key in the Authorization header, if the header is a Bearer one."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def current_principal() -> Principal:
    """The authenticated caller of this request (only inside a view behind @requires)."""
    return cast(Principal, g.principal)


def _known_principal() -> Principal | None:
    """The principal of the request's key, looked up once per request (None if no valid key)."""
    if "key_checked" not in g:
        key = bearer_key()
        g.key_checked = True
        g.key_principal = authenticate(state().store, key) if key is not None else None
    return cast("Principal | None", g.key_principal)


def _authenticate() -> Principal:
    """The caller, or 401."""
    key = bearer_key()
    if key is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer KEY'")
    principal = _known_principal()
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


class LookupAuditBatch:
    """Successful lookups, summed per key into one audit entry per ``window`` seconds.

    A platform may send hundreds of lookups a second; an audit entry each (a chained insert)
    cost more than the lookup itself. Refused and failed lookups are still audited one by one;
    successful ones are written as ``lookup`` entries with ``requests``, ``hashes``,
    ``matched`` and the first and last time, by a background thread every ``window`` seconds
    and when the process exits. A process killed outright loses at most that window's
    summary, never an entry about cases, scans or reports.
    """

    def __init__(self, store: Any, window: float) -> None:
        self.store = store
        self.window = window
        self.lock = threading.Lock()
        self.open: dict[tuple[int, int], dict[str, Any]] = {}
        self.thread: threading.Thread | None = None

    def add(self, org_id: int, key_id: int, details: dict[str, Any]) -> None:
        """Count one successful lookup of a key."""
        now = audit.utc_text(utcnow())
        with self.lock:
            entry = self.open.setdefault((org_id, key_id), {
                "status": 200, "outcome": "ok", "method": "POST", "summary": True,
                "requests": 0, "hashes": 0, "matched": 0, "first_at": now})
            entry["requests"] += 1
            entry["hashes"] += int(details.get("hashes", 0))
            entry["matched"] += int(details.get("matched", 0))
            entry["last_at"] = now
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="lookup-audit",
                                               daemon=True)
                self.thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.window)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - kept for the next try; logged
                logging.getLogger(__name__).exception("could not write lookup audit entries")

    def flush(self) -> None:
        """Write the summaries counted so far."""
        with self.lock:
            pending, self.open = self.open, {}
        try:
            for (org_id, key_id), details in pending.items():
                audit.record(self.store, action="lookup", org_id=org_id, key_id=key_id,
                             target_type="match", target_id=None, details=details)
        except Exception:
            with self.lock:  # put back what was not written, to try again
                for key, details in pending.items():
                    self.open.setdefault(key, details)
            raise


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
    batch = state().lookup_audit
    if (pending.action == "lookup" and outcome == "ok" and principal is not None
            and batch is not None):
        batch.add(principal.org_id, principal.key_id, pending.details)
        return response
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
