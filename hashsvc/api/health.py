"""Liveness and readiness probes, and the public keys that sign deletion reports; no key
needed, nothing audited."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from hashsvc.api import state
from hashsvc.api.errors import error_response

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Any:
    """The process is up and answering."""
    return {"status": "ok"}


def _check_database() -> str | None:
    """Why the database is unusable, or None when a query goes through."""
    try:
        with state().store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver failure means not ready; the reason is reported
        return f"database: {type(exc).__name__}"
    return None


def _check_redis() -> str | None:
    """Why Redis is unusable, or None when it answers a PING (or is not configured)."""
    url = state().settings.redis_url
    if not url:
        return None
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # connection refused, timeout, auth, missing client library
        return f"redis: {type(exc).__name__}"
    return None


@bp.get("/ready")
def ready() -> Any:
    """Ready when the database (and Redis, when configured) answer; 503 otherwise."""
    problems = [p for p in (_check_database(), _check_redis()) if p]
    if problems:
        return error_response(503, "unavailable", "not ready: " + "; ".join(problems))
    return jsonify({"status": "ready", "database": "ok",
                    "redis": "ok" if state().settings.redis_url else "not configured"})


@bp.get("/keys")
def signing_keys() -> Any:
    """The Ed25519 public keys that deletion reports of this deployment are signed with
    (current and retired), for anyone checking a report (``hashsvc report verify``)."""
    from hashsvc.signing import public_keys_json

    return jsonify(public_keys_json(state().settings))
