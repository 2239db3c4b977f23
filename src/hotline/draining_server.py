"""DrainingServer: uvicorn, with SIGTERM/SIGINT turned into a drain (`hotline serve`).

uvicorn's own handling of the first signal stops the server at once: it closes the
listening socket and every WebSocket (1012), which would cut every call. Here the first
signal only starts the drain (`hotline.drain`), with the socket still open; uvicorn is
told to exit once the drain is over. A second signal forces the end: uvicorn's normal
shutdown, which closes the calls' streams (their records are still written, or kept in
the recorder's journal when the store cannot take them); a third skips even the wait for
connections. The process exits 0 either way (uvicorn's re-raising of the signal after its
shutdown, which would end the process with it, is not wanted here).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from hotline.drain import drain_calls
from hotline.services import Services

log = logging.getLogger("hotline.drain")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, services: Callable[[], Services | None]) -> None:
        super().__init__(config)
        self._services = services  # None until the lifespan has built them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._signals = 0

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The signal handler (uvicorn installs it for SIGINT and SIGTERM): no I/O here,
        not even a log line; the work is done on the loop."""
        self._signals += 1
        name = signal.Signals(sig).name
        services = self._services()
        if self._signals == 1 and services is not None and self._loop is not None:
            services.drain.begin(name)  # /readyz answers 503 from now on
            self._loop.call_soon_threadsafe(self._start_drain, services, name)
            return
        if self._signals > 2:
            self.force_exit = True  # not even the connections are waited for
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(
                log.warning, "%s: stopping now; calls still running are cut (their records "
                "are kept)", name)

    def _start_drain(self, services: Services, reason: str) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(
            services, reason), name="drain")

    async def _drain_then_exit(self, services: Services, reason: str) -> None:
        try:
            await drain_calls(services, reason)
        finally:
            self.should_exit = True  # uvicorn's shutdown, then the lifespan's
