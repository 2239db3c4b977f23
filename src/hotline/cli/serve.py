"""`hotline serve`: the server, under uvicorn."""

from __future__ import annotations

import asyncio

import typer
import uvicorn

from hotline.app import create_app
from hotline.cli import app
from hotline.local_server import UVICORN_OPTIONS
from hotline.logs import configure_logging
from hotline.server import with_local_public_url
from hotline.settings import load_settings
from hotline.store.database import Store


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to listen on (default HOTLINE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default HOTLINE_PORT)."),
) -> None:
    """Run the Hotline server: Twilio webhooks, media streams, the API."""
    settings = load_settings()
    host = host or settings.host
    port = port if port is not None else settings.port
    settings = with_local_public_url(settings, host, port)
    configure_logging(settings.log_level)
    asyncio.run(_upgrade(settings.database_url))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        log_level=settings.log_level.lower(),
        **UVICORN_OPTIONS,
    )


async def _upgrade(url: str) -> None:
    store = Store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()
