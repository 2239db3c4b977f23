"""`hotline messages …`: the messages the agent took for the businesses (`take_message`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from hotline.cli import app
from hotline.cli.db import console, run_with_store

messages_app = typer.Typer(
    help="Messages the agent took from callers: who, how to reach them, what about.",
    no_args_is_help=True,
)
app.add_typer(messages_app, name="messages")


@messages_app.command("list")
def list_(
    business: Annotated[str | None, typer.Option(help="Only this business's messages.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 50,
) -> None:
    """The latest messages, newest first."""
    messages = run_with_store(lambda store: store.list_messages(business, limit))
    table = Table(title=f"{len(messages)} messages", title_justify="left")
    for column in ("taken (UTC)", "business", "name", "phone"):
        table.add_column(column, overflow="fold")
    table.add_column("message", overflow="fold")
    table.add_column("call", overflow="fold")  # the sid `hotline calls show` takes
    for m in messages:
        table.add_row(
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            m.business_slug or "—",
            m.name or "—",
            m.phone or "—",
            m.message,
            m.call_sid,
        )
    console().print(table)
