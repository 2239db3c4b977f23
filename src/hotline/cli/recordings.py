"""`hotline recordings …`: call recordings kept under HOTLINE_DATA_DIR."""

from __future__ import annotations

from pathlib import Path

import typer

from hotline.call.recording_retention import SweepResult, sweep_recordings
from hotline.cli import app
from hotline.cli.db import console, run_with_store
from hotline.settings import load_settings

recordings_app = typer.Typer(help="Call recordings: delete those past their retention.",
                             no_args_is_help=True)
app.add_typer(recordings_app, name="recordings")


@recordings_app.command("sweep")
def sweep() -> None:
    """Delete recordings older than their business's retention (what the server does
    every HOTLINE_RECORDING_SWEEP_INTERVAL_S), and note it in each call's record."""
    data_dir = Path(load_settings().data_dir)
    result: SweepResult = run_with_store(lambda store: sweep_recordings(store, data_dir))
    out = console()
    out.print(f"{len(result.deleted)} recordings deleted"
              + (f" ({len(result.missing)} files already gone)" if result.missing else ""))
    for call_sid in result.deleted:
        out.print(f"  {call_sid}")
    if result.failed:
        out.print(f"{len(result.failed)} could not be deleted (see the log): "
                  + ", ".join(result.failed))
