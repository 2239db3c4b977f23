"""LocalServer: uvicorn serving an ASGI app on the running event loop.

`hotline demo`, the simulators and the tests run several servers in one process, so no
signal handlers and no logging set-up are installed (uvicorn's `serve()` would take
SIGINT/SIGTERM away from the process). The uvicorn settings are the measured-fastest ones
here: httptools and the sans-I/O websockets protocol. That protocol (websockets'
`ServerProtocol`) enforces `ws_max_size` on every inbound message, fragmented or not, before
the app sees it: a bigger one closes the socket with 1009 (message too big) and the app gets
`websocket.disconnect`. Twilio's media-stream messages are well under the cap.
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import TypedDict

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import HTTPProtocolType, LifespanType, WSProtocolType

from hotline.telephony.media_codec import MAX_MESSAGE_BYTES


class UvicornOptions(TypedDict):
    """The protocol choices, typed so `**UVICORN_OPTIONS` checks against uvicorn's keywords."""
    http: HTTPProtocolType
    ws: WSProtocolType
    ws_max_size: int


UVICORN_OPTIONS: UvicornOptions = {"http": "httptools", "ws": "websockets-sansio",
                                   "ws_max_size": MAX_MESSAGE_BYTES}
GRACEFUL_SHUTDOWN_S = 5


class LocalServer:
    """uvicorn on an ephemeral port (by default) of this event loop."""

    def __init__(self, app: ASGIApp, *, lifespan: LifespanType = "off") -> None:
        self._app = app
        self._lifespan = lifespan
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._main_loop: asyncio.Task[None] | None = None
        self.url = ""
        self.port = 0

    @staticmethod
    def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return sock

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    sock: socket.socket | None = None) -> str:
        sock = sock or self.bind(host, port)
        config = uvicorn.Config(self._app, lifespan=self._lifespan, log_config=None,
                                access_log=False, log_level="warning",
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                                **UVICORN_OPTIONS)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        if server.should_exit:
            sock.close()
            raise RuntimeError("the server failed to start (see the log above)")
        self._server, self._socket = server, sock
        self._main_loop = asyncio.create_task(server.main_loop(), name="local-server")
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        server, sock, main_loop = self._server, self._socket, self._main_loop
        if server is None or sock is None or main_loop is None:
            return
        self._server = self._socket = self._main_loop = None
        server.should_exit = True
        main_loop.cancel()  # it only polls should_exit every 100 ms
        await asyncio.gather(main_loop, return_exceptions=True)
        await server.shutdown(sockets=[sock])
        sock.close()

    async def __aenter__(self) -> str:
        """`async with LocalServer(app) as url:` serves the app for the block's length."""
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
