"""`hotline db …`: the database's migrations; and how every store command opens the store.

Store commands go through `run_with_store`: it opens the database named by
`HOTLINE_DATABASE_URL`, brings its schema up to date first (so a new database never says
"no such table"), and turns any `HotlineError` into a one-line message and exit code 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from hotline.cli import app
from hotline.errors import HotlineError
from hotline.settings import load_settings
from hotline.store import Store
from hotline.store.migrate import head_revision

T = TypeVar("T")

db_app = typer.Typer(help="The database: schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def console() -> Console:
    """A console made per command, so its width follows the terminal (or $COLUMNS)."""
    return Console(highlight=False)


def fail(message: str) -> NoReturn:
    Console(stderr=True, highlight=False).print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(1)


def run_with_store(action: Callable[[Store], Awaitable[T]], *, upgrade: bool = True) -> T:
    """Run `action` on the configured store (migrated first, closed after)."""

    async def run() -> T:
        store = Store(load_settings().database_url)
        try:
            if upgrade:
                await store.upgrade()
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except HotlineError as exc:
        fail(str(exc))


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply the schema migrations up to the newest (safe to run again)."""

    async def migrate(store: Store) -> tuple[str, str | None]:
        before = await store.revision()
        await store.upgrade()
        return store.url, before

    url, before = run_with_store(migrate, upgrade=False)
    head = head_revision()
    out = console()
    out.print(Text.assemble("database ", (url, "bold")))
    if before == head:
        out.print(f"already at the newest revision, {head}")
    else:
        out.print(f"upgraded from {before or 'an empty database'} to revision {head}")
