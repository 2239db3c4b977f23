"""A TCP proxy a test puts between Hotline and PostgreSQL, to cut and restore the store.

`cut()`: every connection through it is closed and new ones are refused (nothing listens
on the port). `stall()`: connections are accepted but nothing is forwarded either way (a
store that stopped answering). `restore()`: forwarding again, on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum


class ProxyMode(enum.Enum):
    FORWARD = "forward"
    CUT = "cut"
    STALL = "stall"


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = ProxyMode.FORWARD
        self.connections = 0  # accepted, ever
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.mode = ProxyMode.CUT
        await self._stop_listening()
        await self._drop_connections()

    async def stall(self) -> None:
        """Accept, forward nothing; the connections already open go silent too."""
        self.mode = ProxyMode.STALL
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is None:
            await self.start()

    async def restore(self) -> None:
        if self.mode is ProxyMode.STALL:
            await self._drop_connections()  # what was said into the silence is lost
        self.mode = ProxyMode.FORWARD
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self._stop_listening()
        await self._drop_connections()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _drop_connections(self) -> None:
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_writer)
        if self.mode is not ProxyMode.FORWARD:
            return  # stalled: held open, silent, until restore() or close()
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.add(server_writer)
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        if self.mode is ProxyMode.FORWARD:
            writer.transport.abort()  # one side closed: close the other
