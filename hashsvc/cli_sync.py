"""``hashsvc sync``: a platform's own copy of the bank, kept current from a service's feed.

A platform granted bank sync runs ``hashsvc sync --url URL --key KEY`` on a schedule; the copy
(a JSON file) holds match references and hash values only, never a case. ``hashsvc lookup
--synced FILE`` then matches on the platform's own machines and answers as ``POST /v1/lookup``
would, with the same references for takedown feedback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hashsvc.cli import Context, _fail, main, pass_ctx
from hashsvc.errors import HashsvcError, InputError


def default_bank_file(ctx: Context) -> Path:
    """Where the synced copy lives unless --bank says otherwise."""
    return ctx.settings.data_path / "synced-bank.json"


@main.command("sync")
@click.option("--url", required=True, help="The hashsvc service to sync from.")
@click.option("--key", envvar="HASHSVC_API_KEY", default=None,
              help="A platform API key of an org granted bank sync (or HASHSVC_API_KEY).")
@click.option("--bank", "bank_file", type=click.Path(dir_okay=False), default=None,
              help="The synced copy to bring up to date (default: synced-bank.json in the "
                   "data folder).")
@pass_ctx
def sync_cmd(ctx: Context, url: str, key: str | None, bank_file: str | None) -> None:
    """Apply the bank's additions and withdrawals since the last sync to the local copy."""
    import requests
    from tqdm import tqdm

    from hashsvc.bank_sync import LocalBank, sync

    if not key:
        raise _fail(InputError("--key (or HASHSVC_API_KEY) is required: a platform key"))
    path = Path(bank_file) if bank_file else default_bank_file(ctx)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"

    def fetch(cursor: int, limit: int) -> dict[str, Any]:
        try:
            response = session.get(url.rstrip("/") + "/v1/bank/changes",
                                   params={"cursor": cursor, "limit": limit}, timeout=120)
        except requests.RequestException as exc:
            raise InputError(f"the service did not answer: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise InputError(f"the service answered {response.status_code}: "
                             f"{response.text[:300]}")
        return response.json()  # type: ignore[no-any-return]

    try:
        bank = LocalBank.load(path)
        start = bank.cursor
        with tqdm(desc="changes", unit=" changes", disable=None) as bar:
            applied = sync(bank, fetch, progress=bar.update)
    except HashsvcError as exc:
        raise _fail(exc) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    bank.save(path)
    click.echo(json.dumps({"bank": str(path), "from_cursor": start, "cursor": bank.cursor,
                           "changes": applied, "entries": len(bank.entries)}))
