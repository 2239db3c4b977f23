"""`hotline messages …`: the messages taken for the businesses: by the agent
(`take_message`), or recorded from the caller's voice when the engine could not be had
(their WAV is under HOTLINE_DATA_DIR)."""

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
    table.add_column("audio", overflow="fold")  # a voice message's WAV, in the data directory
    table.add_column("id", overflow="fold")  # GET /api/messages/{id}/audio
    for m in messages:
        table.add_row(
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            m.business_slug or "—",
            m.name or "—",
            m.phone or "—",
            m.message,
            _audio(m.audio_file, m.audio_ms),
            m.message_id,
        )
    console().print(table)


def _audio(audio_file: str | None, audio_ms: int | None) -> str:
    if audio_file is None:
        return "—"
    length = f" ({audio_ms / 1000:.1f} s)" if audio_ms is not None else ""
    return f"{audio_file}{length}"
