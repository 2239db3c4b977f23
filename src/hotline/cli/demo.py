"""`hotline demo`: the server and both simulators, five calls, transcripts and waterfalls."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
from rich.console import Console

from hotline.cli import app
from hotline.demo import DemoCall, prepare_output_dir, print_demo, run_demo, save_recordings
from hotline.logs import configure_logging
from hotline.sim.engine import LatencyProfile

PROFILES = {"modeled": LatencyProfile.modeled, "zero": LatencyProfile.zero}


@app.command()
def demo(
    output: Path = typer.Option(Path("demo-output"), help="Where WAVs, timings and the demo "
                                "database go (emptied first)."),
    profile: str = typer.Option("modeled", help="Simulated engine latency: modeled | zero."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the server's log."),
    serve: bool = typer.Option(False, "--serve", help="After the calls, keep the server and "
                               "its dashboard up until Ctrl-C."),
    port: int = typer.Option(0, help="The server's port (0: any free one)."),
) -> None:
    """Run the whole product offline: inbound and outbound calls, a transfer, a voicemail;
    the dashboard is served meanwhile (and after, with --serve)."""
    if profile not in PROFILES:
        raise typer.BadParameter(f"choose one of {', '.join(PROFILES)}", param_hint="--profile")
    configure_logging("INFO" if verbose else "WARNING")
    if not verbose:
        logging.getLogger("hotline.sim").setLevel(logging.ERROR)
    console = Console()
    prepare_output_dir(output)

    def report(calls: list[DemoCall]) -> None:
        save_recordings(calls, output)
        print_demo(calls, console, output)

    async def keep_serving(calls: list[DemoCall]) -> None:
        report(calls)
        console.print("[bold]Serving the dashboard until Ctrl-C[/bold] (its URL and keys are "
                      "above).")
        await asyncio.Event().wait()

    try:
        calls = asyncio.run(run_demo(output, profile=PROFILES[profile](), console=console,
                                     port=port, then=keep_serving if serve else None))
    except KeyboardInterrupt:
        console.print("stopped.")
        return
    report(calls)
    console.print("[dim]The dashboard closed with the demo: `hotline demo --serve` (or `make demo "
                  "SERVE=1`) keeps it up after the calls.[/dim]")
