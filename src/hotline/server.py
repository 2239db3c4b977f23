"""Hotline's own server in this process (the demo, the tests, the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from hotline.app import create_app
from hotline.local_server import LocalServer
from hotline.services import Services
from hotline.settings import Settings


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
    local: LocalServer

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def url(self) -> str:
        return self.local.url

    async def stop(self) -> None:
        await self.local.stop()


async def start_server(settings: Settings, *, host: str = "127.0.0.1",
                       port: int = 0) -> RunningServer:
    """Hotline itself: bind first (port 0 = any free port) so that the public URL, which the
    TwiML and the signatures use, names the real port."""
    sock = LocalServer.bind(host, port)
    settings = with_local_public_url(settings, host, sock.getsockname()[1])
    app = create_app(settings)
    local = LocalServer(app, lifespan="on")
    await local.start(host, sock=sock)
    return RunningServer(settings, app, local)
