"""Alembic environment: runs on the connection that hashsvc.store hands it."""

from __future__ import annotations

from alembic import context

from hashsvc.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through hashsvc.store.migrate
    raise RuntimeError("run migrations through `hashsvc db upgrade`")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
