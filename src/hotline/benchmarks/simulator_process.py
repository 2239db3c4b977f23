"""The engine simulator and the simulated phone in a child process (`ProcessSimulators`),
so that the server under test has the benchmark's process and event loop to itself."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import sys
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, TypeVar, cast

from hotline.benchmarks.calls import LocalSimulators, PlayedCall, PlayRequest, SimulatorUrls
from hotline.benchmarks.engine_records import SessionRecord
from hotline.sim.engine import LatencyProfile

T = TypeVar("T")


class ProcessSimulators:
    """`LocalSimulators` in a child Python process, so that the server has this process and
    its event loop to itself, as in production. Times stay comparable: both processes read
    the same monotonic clock (CLOCK_MONOTONIC), and only the phone's and the engine's times
    (both in the child) are compared. Requests and replies are pickled over a local
    `multiprocessing.connection` (the child is a plain `python -c`, so it never re-imports
    the parent's `__main__`). Use as `async with ProcessSimulators() as sims`."""

    START_TIMEOUT_S = 60.0

    def __init__(self, loop: str = "uvloop") -> None:
        self._loop = loop
        self._conn: Connection | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ProcessSimulators:
        authkey = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=authkey)
        host, port = listener.address
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "from hotline.benchmarks.simulator_process import simulators_main; simulators_main()",
            host, str(port), self._loop, stdin=asyncio.subprocess.PIPE)
        assert self._process.stdin is not None
        self._process.stdin.write(authkey.hex().encode() + b"\n")
        await self._process.stdin.drain()
        self._process.stdin.close()
        accepting = asyncio.get_running_loop().run_in_executor(None, listener.accept)
        try:
            self._conn = await asyncio.wait_for(asyncio.shield(accepting),
                                                self.START_TIMEOUT_S)
        except TimeoutError:
            self._process.kill()
            raise RuntimeError("the simulators process did not start (exit code "
                               f"{self._process.returncode})") from None
        finally:
            listener.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        process, conn = self._process, self._conn
        if conn is not None:
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                await self._request("exit")
            conn.close()
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def start(self, profile: LatencyProfile) -> SimulatorUrls:
        return cast(SimulatorUrls, await self._request("start", profile))

    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]:
        return cast(list[PlayedCall], await self._request("play", request, on_tick=on_call))

    async def sessions(self) -> list[SessionRecord]:
        return cast(list[SessionRecord], await self._request("sessions"))

    async def stop(self) -> None:
        await self._request("stop")

    async def _request(self, command: str, argument: object = None, *,
                       on_tick: Callable[[], None] | None = None) -> object:
        conn = self._conn
        assert conn is not None, "use ProcessSimulators as an async context manager"
        conn.send((command, argument))
        while True:
            try:
                kind, value = await asyncio.to_thread(conn.recv)
            except EOFError:
                raise RuntimeError("the simulators process exited") from None
            if kind == "tick":
                if on_tick is not None:
                    on_tick()
                continue
            if kind == "error":
                raise RuntimeError(f"simulators process: {value}")
            return value


def simulators_main() -> None:
    """The child of `ProcessSimulators`: `python -c ... HOST PORT LOOP`, the connection's
    key on stdin. Serves requests until `exit`."""
    host, port, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    logging.basicConfig(level=logging.ERROR)
    conn = Client((host, port), authkey=authkey)
    try:
        run_with_loop(lambda: _serve_simulators(conn), loop=loop)
    finally:
        conn.close()


async def _serve_simulators(conn: Connection) -> None:
    local = LocalSimulators()
    while True:
        command, argument = await asyncio.to_thread(conn.recv)
        try:
            if command == "start":
                reply: object = await local.start(argument)
                # The simulators are not what is measured: keep full collections of their
                # long-lived objects (imports, the engine) from stalling the phone's clock.
                gc.collect()
                gc.freeze()
            elif command == "play":
                reply = await local.play(argument, on_call=lambda: conn.send(("tick", None)))
            elif command == "sessions":
                reply = await local.sessions()
            elif command == "stop":
                await local.stop()
                reply = None
            elif command == "exit":
                await local.stop()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown request {command!r}")
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("ok", reply))


def run_with_loop(coroutine_factory: Callable[[], Coroutine[Any, Any, T]], *,
                  loop: str = "uvloop") -> T:
    """Run on uvloop (what `hotline serve` uses) when available."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover (uvicorn[standard] installs it)
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine_factory())
