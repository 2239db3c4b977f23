"""`hotline fleet up`: N instances behind a private nginx on this machine, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from dotenv import dotenv_values

from hotline.cli import app
from hotline.cli.db import console, fail
from hotline.errors import HotlineError
from hotline.fleet.fleet import Fleet, FleetConfig
from hotline.settings import load_settings

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
# Settings the fleet gives each instance itself (from its options, or per instance).
FLEET_MANAGED = frozenset({
    "HOTLINE_DATABASE_URL", "HOTLINE_REDIS_URL", "HOTLINE_PUBLIC_URL", "HOTLINE_FAILOVER_URL",
    "HOTLINE_DRAIN_TIMEOUT_S", "HOTLINE_HOST", "HOTLINE_PORT", "HOTLINE_INSTANCE_ID",
    "HOTLINE_INSTANCE_URL", "HOTLINE_DATA_DIR", "HOTLINE_GREETING_CACHE_DIR"})

fleet_app = typer.Typer(help="Several instances behind nginx (README: Running in production).",
                        no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("up")
def up(
    instances: Annotated[int, typer.Option(help="How many `hotline serve` instances.")] = 2,
    port: Annotated[int, typer.Option(help="nginx's port: Twilio's (and your) way in.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface for nginx and the instances.")] = (
        "127.0.0.1"),
    database_url: Annotated[str | None, typer.Option(
        help="The shared store [default: HOTLINE_DATABASE_URL].")] = None,
    redis_url: Annotated[str | None, typer.Option(
        help=f"The shared Redis [default: HOTLINE_REDIS_URL, else {LOCAL_REDIS_URL}].")] = None,
    public_url: Annotated[str | None, typer.Option(
        help="Where Twilio reaches nginx [default: HOTLINE_PUBLIC_URL if set, else nginx's "
        "own URL].")] = None,
    pin_streams: Annotated[bool, typer.Option(
        help="Send each call's media stream to the instance that took its webhook "
        "(HOTLINE_INSTANCE_URL); --no-pin-streams: through nginx to any.")] = True,
    work_dir: Annotated[Path | None, typer.Option(
        help="nginx's config and logs, each instance's data and log [default: a temp "
        "dir].")] = None,
) -> None:
    """Start the instances and nginx (its own config, pid and logs: not the system's
    service), print the URLs, and run until Ctrl-C, which drains and stops them all."""
    settings = load_settings()
    if public_url is None and "public_url" in settings.model_fields_set:
        public_url = settings.public_url
    with tempfile.TemporaryDirectory(prefix="hotline-fleet-") as temp:
        config = FleetConfig(
            database_url=database_url or settings.database_url,
            redis_url=redis_url or settings.redis_url or LOCAL_REDIS_URL,
            work_dir=work_dir or Path(temp), instances=instances, host=host, port=port,
            public_url=public_url, pin_streams=pin_streams,
            drain_timeout_s=settings.drain_timeout_s,
            env=user_settings(os.environ, Path(".env")))
        try:
            asyncio.run(_run(config))
        except HotlineError as exc:
            fail(str(exc))


async def _run(config: FleetConfig) -> None:
    fleet = Fleet(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    out = console()
    out.print(f"[bold]fleet up[/bold]: nginx {fleet.url} (public URL {fleet.public_url})")
    out.print(f"  Twilio voice webhook: {fleet.public_url}/twilio/voice, status callback: "
              f"{fleet.public_url}/twilio/status")
    for instance in fleet.instances:
        out.print(f"  {instance.instance_id}: {instance.url}  (/readyz, /metrics; log "
                  f"{instance.log_path})")
    out.print(f"  nginx config {fleet.nginx.config_path}; store "
              f"{_without_password(fleet.database_url)}; redis "
              f"{_without_password(config.redis_url)}")
    out.print("Ctrl-C drains the instances (their calls run to their end) and stops all.")
    try:
        await stop.wait()
    finally:
        out.print("stopping: the instances drain…")
        await fleet.stop()
        out.print("fleet stopped")


def user_settings(environ: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """The user's HOTLINE_* settings (the environment's over the .env file's, as for
    `hotline serve`), for every instance: each runs in its own directory, where this .env
    is not, and the fleet starts it with no HOTLINE_* of its own. Without them the
    instances ran with the placeholder OpenAI key and Twilio token."""
    found = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if (
        env_file.is_file()) else {}
    found.update(environ)
    return {k.upper(): v for k, v in found.items()
            if k.upper().startswith("HOTLINE_") and k.upper() not in FLEET_MANAGED}


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
