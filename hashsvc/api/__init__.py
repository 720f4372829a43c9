"""The HTTP API: a Flask app factory with one blueprint per audience.

``create_app(settings)`` opens the store, registers the blueprints (health, cases, scans,
lookup, admin, openapi) and one JSON error handler; nothing happens at import time. Serve it
with ``hashsvc serve`` or ``gunicorn 'hashsvc.api:create_app()'``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from hashsvc.settings import Settings, load_settings
from hashsvc.store import Store

if TYPE_CHECKING:
    from hashsvc.api.lookup import LookupIndex

#: Version prefix of every route.
PREFIX = "/v1"


@dataclass
class ApiState:
    """What every request of one app shares: settings, store, rate limiter, lookup index."""

    settings: Settings
    store: Store
    limiter: Any = None  # flask-limiter's Limiter, made with the app
    lookup_audit: Any = None  # LookupAuditBatch, when lookups are audited in summaries
    lookup_index: "LookupIndex | None" = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def state() -> ApiState:
    """The current app's shared state."""
    return current_app.extensions["hashsvc"]  # type: ignore[no-any-return]


def create_app(settings: Settings | None = None) -> Flask:
    """A configured API app on the store that ``settings`` (default: the environment) names."""
    from hashsvc.api import admin, cases, health, intake, lookup, openapi, scans, victims
    from hashsvc.api.auth import address_key, make_limiter, record_audit
    from hashsvc.api.errors import register_error_handlers

    settings = settings if settings is not None else load_settings()
    app = Flask("hashsvc", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    shared = app.extensions["hashsvc"] = ApiState(settings, Store.open(settings))
    register_error_handlers(app)
    app.after_request(record_audit)
    shared.limiter = make_limiter(app, settings)
    if settings.audit_lookup_seconds > 0:
        from hashsvc.api.auth import LookupAuditBatch

        shared.lookup_audit = LookupAuditBatch(shared.store, settings.audit_lookup_seconds)
    # Health checks are never limited; the victims' endpoints (no key) are limited per address.
    shared.limiter.exempt(health.bp)
    if settings.status_rate_limit:
        shared.limiter.limit(settings.status_rate_limit, key_func=address_key)(victims.bp)
        shared.limiter.limit(settings.status_rate_limit, key_func=address_key)(intake.public_bp)
    for module in (health, cases, scans, lookup, admin, openapi, victims, intake):
        app.register_blueprint(module.bp, url_prefix=PREFIX)
    app.register_blueprint(intake.public_bp, url_prefix=PREFIX)
    from hashsvc.web import init_web  # the pages for people (docs/web.md)

    init_web(app)
    return app


__all__ = ["ApiState", "PREFIX", "create_app", "state"]
