"""Service commands on the ``hashsvc`` group: ``serve`` (gunicorn) and ``admin`` (orgs, keys,
audit)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from hashsvc.cli import Context, _fail, main, pass_ctx
from hashsvc.errors import HashsvcError
from hashsvc.settings import Settings


def _gunicorn_app(settings: Settings, options: dict[str, Any]) -> Any:
    """A gunicorn application that builds the API in each worker (never in the master)."""
    from gunicorn.app.base import BaseApplication

    class HashsvcApplication(BaseApplication):  # type: ignore[misc]
        """gunicorn configured from our options instead of its own command line."""

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from hashsvc.api import create_app

            return create_app(settings)

    return HashsvcApplication()


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="gunicorn worker processes.")
@click.option("--timeout", type=click.IntRange(10, 3600), default=120, show_default=True,
              help="Seconds a worker may spend on one request (the first lookup loads the "
                   "bank's indexes).")
@click.option("--access-log", default=None, metavar="FILE",
              help="Write one line per request to FILE ('-' for standard error): time, worker "
                   "pid, client, request line, status, bytes, seconds. Never the "
                   "Authorization header or bodies.")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, timeout: int, access_log: str | None) -> None:
    """Serve the HTTP API with gunicorn (embedded store and in-process jobs without DB/Redis)."""
    from hashsvc.store import make_engine, migrate

    settings = ctx.settings
    # Migrate once here, so that workers starting together do not race to do it; the engine
    # is disposed before gunicorn forks, so no connection is shared between processes.
    engine = make_engine(settings.db_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    mode = "database " + engine.url.render_as_string(hide_password=True)
    mode += ", jobs on " + ("Redis" if settings.redis_url else "in-process threads")
    click.echo(f"hashsvc serving on {bind}: {mode}", err=True)
    options: dict[str, Any] = {"bind": bind, "workers": workers, "timeout": timeout,
                               "graceful_timeout": 30, "preload_app": False}
    if access_log:
        options.update(accesslog=access_log,
                       access_log_format='%(t)s pid=%(p)s %(h)s "%(r)s" %(s)s %(B)s %(L)s')
    _gunicorn_app(settings, options).run()


@main.group()
def admin() -> None:
    """Orgs, API keys and the audit log."""


@admin.command("create-org")
@click.argument("name")
@pass_ctx
def create_org(ctx: Context, name: str) -> None:
    """Create an org called NAME."""
    from hashsvc.accounts import Actor, create_org

    try:
        org_id = create_org(ctx.store, name, Actor(via="cli"))
    except HashsvcError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps({"org_id": org_id, "name": name.strip()}))


@admin.command("create-key")
@click.option("--org", "org_name", required=True, help="The org's name.")
@click.option("--role", required=True,
              type=click.Choice(["charity", "forensic", "platform", "admin"]))
@click.option("--label", default=None, help="A note to tell keys apart (who holds it).")
@pass_ctx
def create_key(ctx: Context, org_name: str, role: str, label: str | None) -> None:
    """Make an API key; it is printed once, here, and only its hash is kept."""
    from hashsvc.accounts import Actor, create_key

    try:
        new = create_key(ctx.store, org_name, role, label, Actor(via="cli"))
    except HashsvcError as exc:
        raise _fail(exc) from exc
    click.echo(f"key {new.prefix} (id {new.key_id}) for {org_name}, role {role}: store it now, "
               "it cannot be shown again", err=True)
    click.echo(new.key)


@admin.command("bank-sync")
@click.option("--org", "org_name", required=True, help="The platform's org name.")
@click.option("--revoke", is_flag=True, help="Take the grant back.")
@pass_ctx
def bank_sync(ctx: Context, org_name: str, revoke: bool) -> None:
    """Grant a platform's org bank sync (GET /v1/bank/changes), or take it back."""
    from hashsvc.accounts import Actor, set_bank_sync

    try:
        org_id = set_bank_sync(ctx.store, org_name, not revoke, Actor(via="cli"))
    except HashsvcError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps({"org_id": org_id, "name": org_name, "bank_sync": not revoke}))


@admin.command("verify-audit")
@click.option("--expect-head", default=None, metavar="SEQ:HASH",
              help="A head recorded earlier that must still be in the chain (catches removal "
                   "of the newest entries).")
@pass_ctx
def verify_audit(ctx: Context, expect_head: str | None) -> None:
    """Check the audit chain; exit status 1 if any entry was edited, removed or reordered."""
    from hashsvc import audit

    expected = None
    if expect_head is not None:
        seq, _, digest = expect_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise click.BadParameter("expected SEQ:HASH", param_hint="--expect-head")
        expected = audit.Head(int(seq), digest.lower())
    problems = audit.verify(ctx.store, expected)
    head = audit.head(ctx.store)
    if problems:
        for problem in problems:
            click.echo(f"BROKEN: {problem}", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: head {head.seq}:{head.entry_hash}" if head
               else "audit log intact: empty")
