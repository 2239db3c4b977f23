"""Running the app under uvicorn, in this process: `hotline serve`, the demo and the tests.

uvicorn settings are the measured-fastest ones here: uvloop, httptools, and the sans-I/O
websockets protocol.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from hotline.app import create_app
from hotline.services import Services
from hotline.settings import Settings

UVICORN_OPTIONS = {"http": "httptools", "ws": "websockets-sansio", "lifespan": "on"}


def with_local_public_url(settings: Settings, host: str, port: int) -> Settings:
    """Unless HOTLINE_PUBLIC_URL was set, Twilio reaches us where we listen."""
    if "public_url" in settings.model_fields_set:
        return settings
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return settings.model_copy(update={"public_url": f"http://{shown}:{port}", "host": host,
                                       "port": port})


@dataclass
class RunningServer:
    settings: Settings
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_server(settings: Settings, *, host: str = "127.0.0.1", port: int = 0,
                       log_level: str = "warning") -> RunningServer:
    """Bind first (port 0 = any free port), then start uvicorn on that very socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    settings = with_local_public_url(settings, host, port)
    app = create_app(settings)
    config = uvicorn.Config(app, log_level=log_level, **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.01)
    return RunningServer(settings, app, server, task)
