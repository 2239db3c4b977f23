"""`hotline calls …`: the calls Hotline took or placed, their transcripts and latency."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hotline.cli import app
from hotline.cli.db import console, fail, run_with_store
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord
from hotline.store import Store
from hotline.waterfall import render_transcript, render_waterfall

calls_app = typer.Typer(help="Calls taken and placed: list them, show one.", no_args_is_help=True)
app.add_typer(calls_app, name="calls")


@calls_app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 50,
    business: Annotated[str | None, typer.Option(help="Only this business's calls.")] = None,
    outcome: Annotated[
        str | None,
        typer.Option(help=f"Only calls that ended so: {', '.join(Outcome)}."),
    ] = None,
) -> None:
    """The latest calls, newest first, with how each ended."""
    calls = run_with_store(
        lambda store: store.list_calls(limit=limit, business_slug=business, outcome=outcome)
    )
    table = Table(title=f"{len(calls)} calls", title_justify="left")
    # Folded, never cut with "…": the sid is what `calls show` needs.
    for column in ("started (UTC)", "sid", "business", "direction", "from", "to", "status"):
        table.add_column(column, overflow="fold")
    table.add_column("outcome", overflow="fold")
    table.add_column("duration", justify="right", overflow="fold")
    for call in calls:
        table.add_row(
            _when(call.started_at),
            call.call_sid,
            call.business_slug or "—",
            call.direction or "—",
            call.from_number or "—",
            call.to_number or "—",
            call.status,
            call.outcome or "—",
            _duration(call),
        )
    console().print(table)


@calls_app.command("show")
def show(sid: Annotated[str, typer.Argument(help="The call's CallSid (CA…).")]) -> None:
    """One call: who, when, how it ended, its transcript and its latency waterfall."""

    async def load(store: Store) -> tuple[CallRecord, list[tuple[str, datetime]]] | None:
        call = await store.get_call(sid)
        return None if call is None else (call, await store.call_statuses(sid))

    found = run_with_store(load)
    if found is None:
        fail(f"no call {sid!r}; `hotline calls list` shows the latest")
    call, statuses = found
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold", no_wrap=True)
    header.add_column(overflow="fold")
    rows = [
        ("call", call.call_sid),
        ("business", call.business_slug or "— (not matched)"),
        ("direction", call.direction or "—"),
        ("from → to", f"{call.from_number or '—'} → {call.to_number or '—'}"),
        ("status", call.status),
        ("outcome", call.outcome or "—"),
        ("started", _when(call.started_at) + " UTC"),
        ("ended", _when(call.ended_at) + " UTC" if call.ended_at else "—"),
        ("duration", _duration(call)),
    ]
    if call.template_name:
        variables = ", ".join(f"{k}={v}" for k, v in call.variables.items())
        rows.append(("template", f"{call.template_name} ({variables or 'no variables'})"))
    recording = _recording(call)
    if recording is not None:
        rows.append(("recording", recording))
    if statuses:
        rows.append(("callbacks", " → ".join(f"{s} {_when(at)[11:]}" for s, at in statuses)))
    for label, value in rows:
        header.add_row(label, Text(value))
    out = console()
    out.print(header)
    out.print(render_transcript(call.transcript, title="transcript"))
    out.print(render_waterfall(call.timeline, title="latency (ms since the webhook)"))


def _recording(call: CallRecord) -> str | None:
    """The call's recording: where it is, or when the retention sweeper deleted it."""
    if call.recording_file is not None:
        length = f"{(call.recording_ms or 0) / 1000:.1f} s"
        return (f"{call.recording_file} ({length}; caller left, agent right) under "
                "HOTLINE_DATA_DIR; GET /api/v1/calls/{sid}/recording".replace(
                    "{sid}", call.call_sid))
    if call.recording_deleted_at is not None:
        return f"deleted {_when(call.recording_deleted_at)} UTC (past its retention)"
    return None


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _duration(call: CallRecord) -> str:
    if call.ended_at is None:
        return "—"
    seconds = max(0, round((call.ended_at - call.started_at).total_seconds()))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
