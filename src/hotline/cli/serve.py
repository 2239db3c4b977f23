"""`hotline serve`: the server, under uvicorn, draining on SIGTERM."""

from __future__ import annotations

import asyncio

import typer
import uvicorn
from fastapi import FastAPI

from hotline.app import create_app
from hotline.cli import app
from hotline.draining_server import DrainingServer
from hotline.local_server import UVICORN_OPTIONS
from hotline.logs import configure_logging, configured_secrets
from hotline.server import with_local_public_url
from hotline.services import Services
from hotline.settings import load_settings
from hotline.store.database import Store

# Once uvicorn is told to exit (after the drain, or on a second signal): how long the
# streams still open may take to close before their tasks are cancelled.
SHUTDOWN_GRACE_S = 10


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to listen on (default HOTLINE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default HOTLINE_PORT)."),
) -> None:
    """Run the Hotline server: Twilio webhooks, media streams, the API. SIGTERM drains it
    (README: "Running in production"); a second SIGTERM or SIGINT stops it at once."""
    settings = load_settings()
    host = host or settings.host
    port = port if port is not None else settings.port
    settings = with_local_public_url(settings, host, port)
    configure_logging(settings.log_level, settings.log_format, configured_secrets(settings))
    asyncio.run(_upgrade(settings.database_url))
    application = create_app(settings)
    config = uvicorn.Config(
        application, host=host, port=port, loop="uvloop",
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through Hotline's handler: format, redaction
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        **UVICORN_OPTIONS,
    )
    server = DrainingServer(config, lambda: _services(application))
    server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's exit status for a server that failed to start


def _services(application: FastAPI) -> Services | None:
    services: Services | None = getattr(application.state, "services", None)
    return services


async def _upgrade(url: str) -> None:
    store = Store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()
