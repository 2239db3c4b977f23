"""`hotline demo`: the server and both simulators, five calls, transcripts and waterfalls."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
from rich.console import Console

from hotline.cli import app
from hotline.demo import prepare_output_dir, print_demo, run_demo, save_recordings
from hotline.logs import configure_logging
from hotline.sim.engine import LatencyProfile

PROFILES = {"modeled": LatencyProfile.modeled, "zero": LatencyProfile.zero}


@app.command()
def demo(
    output: Path = typer.Option(Path("demo-output"), help="Where WAVs, timings and the demo "
                                "database go (emptied first)."),
    profile: str = typer.Option("modeled", help="Simulated engine latency: modeled | zero."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the server's log."),
) -> None:
    """Run the whole product offline: inbound and outbound calls, a transfer, a voicemail."""
    if profile not in PROFILES:
        raise typer.BadParameter(f"choose one of {', '.join(PROFILES)}", param_hint="--profile")
    configure_logging("INFO" if verbose else "WARNING")
    if not verbose:
        logging.getLogger("hotline.sim").setLevel(logging.ERROR)
    console = Console()
    prepare_output_dir(output)
    calls = asyncio.run(run_demo(output, profile=PROFILES[profile](), console=console))
    save_recordings(calls, output)
    print_demo(calls, console, output)
