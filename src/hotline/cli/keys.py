"""`hotline keys …`: business API keys. A key sees its own business only through /api;
the admin token (HOTLINE_API_TOKEN) sees every business. Only a keyed hash of each key is
stored (HOTLINE_KEY_SECRET), so a key is shown once, when it is created."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hotline.cli import app
from hotline.cli.db import console, fail, run_with_store
from hotline.errors import HotlineError
from hotline.keys import new_key
from hotline.settings import load_settings

keys_app = typer.Typer(
    help="Business API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    business: Annotated[str, typer.Option(help="The business's slug the key may see.")],
    name: Annotated[str, typer.Option(help="What the key is for, e.g. 'front desk'.")] = "",
) -> None:
    """Issue a key for one business and print it (once)."""
    secret = load_settings().key_secret
    try:
        key = new_key(secret.get_secret_value() if secret else None)
    except HotlineError as exc:
        fail(str(exc))
    stored = run_with_store(
        lambda store: store.create_api_key(business, name, key.prefix, key.key_hash))
    out = console()
    out.print(Text.assemble("created key ", (stored.prefix, "bold"), " for business ",
                            (stored.business_slug, "bold")))
    out.print(key.key, soft_wrap=True)
    out.print(Text("Copy it now: it is not stored and will not be shown again.", "bold yellow"))


@keys_app.command("list")
def list_(
    business: Annotated[str | None, typer.Option(help="Only this business's keys.")] = None,
) -> None:
    """Every key by its prefix (never the key or its hash), revoked ones too."""
    keys = run_with_store(lambda store: store.list_api_keys(business))
    table = Table(title=f"{len(keys)} keys", title_justify="left")
    for column in ("prefix", "business", "name", "created (UTC)", "revoked (UTC)"):
        table.add_column(column, overflow="fold")
    for k in keys:
        table.add_row(k.prefix, k.business_slug, k.name or "—", _when(k.created_at),
                      _when(k.revoked_at))
    console().print(table)


@keys_app.command("revoke")
def revoke(prefix: Annotated[str, typer.Argument(help="The key's prefix (`keys list`).")]) -> None:
    """Refuse the key from now on (it stays listed, with the date)."""
    key = run_with_store(lambda store: store.revoke_api_key(prefix))
    console().print(Text.assemble("revoked key ", (key.prefix, "bold"), " of business ",
                                  (key.business_slug, "bold")))


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "—"
