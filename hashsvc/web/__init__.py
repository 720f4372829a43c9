"""Web pages for people, served by the API's app (``hashsvc serve``): server-rendered with
Flask and Jinja, a little plain JavaScript from this package, nothing from any third party.

- ``/`` links to every audience's pages;
- ``/intake`` (no sign-in: a one-time code) hashes a victim's photos in the browser and sends
  the hashes only; ``/status`` (no sign-in: the case reference and secret) shows a case's status
  and withdraws it after a confirmation;
- ``/charity/...`` (caseworkers), ``/analyst/...`` (forensic analysts) and ``/admin/...`` (the
  operator) sit behind a sign-in with an API key of that role.

Security: a strict Content-Security-Policy (no inline script or style), nosniff, no referrer,
no-store; a signed session cookie (HttpOnly, SameSite=Strict, Secure over https) holding only
the key's id, re-checked on every request (a revoked key is signed out); a per-session CSRF
token on every POST; every page that reads or changes records leaves the API's audit entry
(``details.via = "web"``) through the same internal functions as the API's views. See
docs/web.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta
from functools import wraps
from typing import Any, Callable, TypeVar, cast
from urllib.parse import urlsplit

from flask import (Blueprint, Flask, Response, current_app, g, jsonify, redirect,
                   render_template, request, session, url_for)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import Forbidden, HTTPException

from hashsvc.accounts import Principal
from hashsvc.api import state
from hashsvc.api.auth import PendingAudit, address_key
from hashsvc.errors import HashsvcError

F = TypeVar("F", bound=Callable[..., Any])

#: Pages, their templates and static files (hashing.js, intake.js, ...).
bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")
#: The POSTs that take a secret from someone not signed in (sign-in, the victim's status and
#: withdrawal): limited per client address like the API's victims' endpoints.
public_bp = Blueprint("web_public", __name__)

#: Sent with every page: scripts, styles, images and requests from this server only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
#: A sign-in lasts this long at most, however active.
SESSION_HOURS = 12
#: Which pages each role signs in to.
HOMES = {"charity": "web.cases", "forensic": "web.scans", "admin": "web.orgs"}
ROLE_NAMES = {"charity": "caseworker", "forensic": "analyst", "admin": "operator"}


class _Sessions(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) or bool(app.config.get("SESSION_COOKIE_SECURE"))


def session_secret(settings: Any) -> bytes:
    """The key that signs session cookies: derived from the server secret (``api_secret``, or
    the file made once in the data folder), so every process of a deployment agrees."""
    from hashsvc.api.lookup import match_secret

    return hmac.new(match_secret(settings), b"hashsvc web session cookies",
                    hashlib.sha256).digest()


def init_web(app: Flask) -> None:
    """Serve the pages from ``app`` (after create_app has set up the store and limiter)."""
    from hashsvc.web import admin, analyst, caseworker, victim  # noqa: F401 (routes)

    shared = app.extensions["hashsvc"]
    app.secret_key = session_secret(shared.settings)
    app.session_interface = _Sessions()
    app.config.update(SESSION_COOKIE_NAME="hashsvc_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS))
    if shared.settings.status_rate_limit:
        shared.limiter.limit(shared.settings.status_rate_limit, key_func=address_key)(public_bp)
    app.register_blueprint(bp)
    app.register_blueprint(public_bp)


# -- CSRF, headers, errors ---------------------------------------------------------------------

def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _same_origin() -> bool:
    """No Origin header, an opaque one, or one naming this server. Under Referrer-Policy
    no-referrer browsers send "Origin: null" with forms, so only a named other site is
    refused here; the CSRF token and the SameSite=Strict cookie do the rest."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.host


def _check_csrf() -> None:
    """Refuse a POST without this session's token (form field or X-CSRF-Token header)."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    if not _same_origin():
        raise Forbidden("this form was sent from another web site")
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    token = session.get("csrf")
    if not isinstance(token, str) or not sent or not hmac.compare_digest(
            sent.encode(), token.encode()):
        raise Forbidden("the form's security token is missing or out of date: reload the "
                        "page and try again")
    return None


def _headers(response: Response) -> Response:
    """Security headers on every page; nothing a page shows is kept by caches."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "web.static":
        response.headers["Cache-Control"] = "no-store"
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def wants_json() -> bool:
    """Whether this request is one of the pages' JSON routes (answered with JSON errors)."""
    return request.path.endswith(".json")


def _error_page(exc: Exception) -> Any:
    """An error as a page (or JSON for the JSON routes), with the status it calls for."""
    from hashsvc.api.errors import HTTP_CODES, STATUSES, loggable

    if isinstance(exc, HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
    elif isinstance(exc, HashsvcError):
        status = next((s for cls, s in STATUSES if isinstance(exc, cls)), 400)
        message = str(exc)
    else:
        status, message = 500, "internal error"
    if status >= 500:
        current_app.logger.error("unhandled error in a page", exc_info=loggable(exc))
        message = "Something went wrong on the server. It has been logged."
    if wants_json():
        response = jsonify({"error": HTTP_CODES.get(status, "error"), "message": message})
        response.status_code = status
        return response
    return render_template("web/error.html", status=status, message=message), status


for _blueprint in (bp, public_bp):
    _blueprint.before_request(_check_csrf)
    _blueprint.after_request(_headers)
    _blueprint.register_error_handler(HTTPException, _error_page)
    _blueprint.register_error_handler(HashsvcError, _error_page)
    _blueprint.register_error_handler(Exception, _error_page)


@bp.app_template_global()
def signed_in_principal() -> Principal | None:
    """Who is signed in, for the page's header (None: nobody)."""
    return web_principal()


bp.add_app_template_global(csrf_token, "csrf_token")
bp.add_app_template_global(ROLE_NAMES, "ROLE_NAMES")


# -- sign-in -----------------------------------------------------------------------------------

def principal_by_key_id(key_id: int) -> Principal | None:
    """The principal of an unrevoked key, by its id."""
    from sqlalchemy import select

    from hashsvc.store.models import ApiKey, Org

    with state().store.sessions() as db:
        row = db.execute(select(ApiKey, Org.name).join(Org, Org.id == ApiKey.org_id)
                         .where(ApiKey.id == key_id)).first()
    if row is None or row[0].revoked_at is not None:
        return None
    key, org_name = row
    return Principal(key.id, key.org_id, org_name, key.role, key.prefix)


def web_principal() -> Principal | None:
    """The signed-in caller, checked again now: a revoked key or an old sign-in signs out."""
    if "web_principal" in g:
        return cast("Principal | None", g.web_principal)
    principal = None
    key_id, at = session.get("key_id"), session.get("at")
    if isinstance(key_id, int) and isinstance(at, (int, float)):
        if time.time() - at < SESSION_HOURS * 3600:
            principal = principal_by_key_id(key_id)
        if principal is None:
            session.pop("key_id", None)
            session.pop("at", None)
            g.signed_out = True
    g.web_principal = principal
    return principal


def sign_in(principal: Principal) -> None:
    """Start a fresh session for the principal (a new CSRF token too)."""
    session.clear()
    session["key_id"] = principal.key_id
    session["at"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(32)
    g.web_principal = principal


def page(role: str, action: str | None = None, target: str | None = None
         ) -> Callable[[F], F]:
    """Admit only a signed-in key of ``role``; with ``action``, leave the API's audit entry
    for the request (the view's first URL argument is the target unless it sets another)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(**kwargs: Any) -> Any:
            principal = web_principal()
            if principal is None:
                if wants_json():
                    response = jsonify({"error": "unauthorized", "message": "sign in again"})
                    response.status_code = 401
                    return response
                target_url = request.full_path if request.method == "GET" else request.path
                return redirect(url_for("web.signin", next=target_url.rstrip("?"),
                                        expired=1 if g.get("signed_out") else None), 303)
            g.principal = principal
            if action is not None:
                first = next(iter(kwargs.values()), None)
                g.audit = PendingAudit(action, target, None if first is None else str(first),
                                       {"via": "web"})
            if principal.role != role:
                raise Forbidden(f"a {ROLE_NAMES.get(principal.role, principal.role)} cannot "
                                "use these pages")
            return view(**kwargs)

        guarded.web_role = role  # type: ignore[attr-defined]
        guarded.audit_action = action  # type: ignore[attr-defined]
        return cast(F, guarded)

    return decorate


def safe_next(value: str | None) -> str | None:
    """A same-site path to go back to after signing in, else None."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    return value


@bp.get("/")
def landing() -> Any:
    """Links to every audience's pages."""
    return render_template("web/landing.html")


@bp.get("/signin")
def signin() -> Any:
    """The sign-in form (an API key of a caseworker, analyst or operator)."""
    principal = web_principal()
    if principal is not None and principal.role in HOMES and not request.args.get("next"):
        return redirect(url_for(HOMES[principal.role]), 303)
    return render_template("web/signin.html", next=safe_next(request.args.get("next")),
                           expired=bool(request.args.get("expired")))


@public_bp.post("/signin")
def signin_post() -> Any:
    """Check the key; keep only its id in the session. Every attempt is audited."""
    from hashsvc.accounts import authenticate, split_key

    key = request.form.get("key", "").strip()
    nxt = safe_next(request.form.get("next"))
    g.audit = PendingAudit("web.signin", "key", None, {"via": "web"})
    principal = authenticate(state().store, key) if key else None
    if principal is None:
        parts = split_key(key) if key else None
        if parts is not None:
            g.audit.details["key_prefix"] = parts[0][:16]
        return render_template("web/signin.html", next=nxt,
                               error="That key is not valid, or it was revoked."), 401
    g.principal = principal
    g.audit.target_id = str(principal.key_id)
    if principal.role not in HOMES:
        return render_template("web/signin.html", next=nxt,
                               error="Platform keys have no pages: platforms use the API."), 403
    sign_in(principal)
    return redirect(nxt or url_for(HOMES[principal.role]), 303)


@bp.post("/signout")
def signout() -> Any:
    """End the session."""
    principal = web_principal()
    if principal is not None:
        g.principal = principal
        g.audit = PendingAudit("web.signout", "key", str(principal.key_id), {"via": "web"})
    session.clear()
    return redirect(url_for("web.landing"), 303)


def home_for(principal: Principal | None) -> str | None:
    """The first page of a principal's role."""
    if principal is None or principal.role not in HOMES:
        return None
    return url_for(HOMES[principal.role])


bp.add_app_template_global(home_for, "home_for")


__all__ = ["CSP", "bp", "csrf_token", "init_web", "page", "public_bp", "web_principal"]
