"""OpenAI Realtime (GA) engine simulator: a WebSocket server speaking the GA protocol.

The official SDK connects to it with
`AsyncOpenAI(api_key=KEY, websocket_base_url=sim.url).realtime.connect(model="gpt-realtime")`,
which opens `ws://HOST:PORT/v1/realtime?model=...`. The server checks the handshake (route,
model, bearer key, no beta header), then hands each connection to a `SimulatedSession`.

Modules: `engine_session` (one connection's protocol state and record), `engine_config`
(session defaults and validation), `engine_vad` (energy VAD), `engine_replies` (what the
model says). The public names are re-exported here.

Faults, as a real engine shows them (for the tests of Hotline's retries and resume):
`refuse_next(n)` answers the next n handshakes with an HTTP error status (503), `hold_next(n)`
holds the next n handshakes without an answer (a connect that hangs), and `drop(session)`
closes a live session with close code 1011. A dropped session's conversation is gone; a new
session starts empty.

Run standalone: `python -m hotline.sim.engine --host 127.0.0.1 --port 8765 --profile modeled`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import secrets
from http import HTTPStatus
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from hotline.sim.clock import REAL_TIME, SimClock
from hotline.sim.engine_session import (
    LatencyProfile,
    Received,
    ScriptedToolCall,
    SimulatedSession,
    Truncation,
)

__all__ = ["EngineSimulator", "LatencyProfile", "Received", "ScriptedToolCall",
           "SimulatedSession", "Truncation", "main"]

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class EngineSimulator:
    """The server. `url` is what `AsyncOpenAI(websocket_base_url=...)` takes.

    `clock`: the simulated time the profile's latencies and the audio pacing run on, and
    of every `Received.at`.
    """

    def __init__(self, profile: LatencyProfile | None = None, *, api_key: str | None = None,
                 replies: list[str] | None = None, caller_transcripts: list[str] | None = None,
                 tool_script: list[ScriptedToolCall] | None = None,
                 clock: SimClock = REAL_TIME) -> None:
        self.clock = clock
        self.profile = profile if profile is not None else LatencyProfile.zero()
        self.api_key = api_key
        self.replies = replies
        self.caller_transcripts = caller_transcripts
        self.tool_script = list(tool_script or ())
        self.sessions: list[SimulatedSession] = []
        self.connections_attempted = 0
        self.handshakes_refused = 0
        self.handshakes_held = 0
        self.holding = asyncio.Event()  # set once a handshake is being held
        self._refuse: list[HTTPStatus] = []  # the next handshakes' answers, in order
        self._hold: list[float] = []  # the next handshakes held this long (wall s)
        self.url = ""
        self._server: Server | None = None
        self._session_added = asyncio.Condition()
        self._stopping = asyncio.Event()  # ends handshakes held for the connect delay

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._stopping.clear()
        self._server = await serve(self._handle, host, port, process_request=self._check_request,
                                   compression=None, max_size=MAX_MESSAGE_BYTES)
        sock = next(iter(self._server.sockets), None)
        bound_port = sock.getsockname()[1] if sock is not None else port
        self.url = f"ws://{host}:{bound_port}/v1"
        log.info("engine simulator listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> EngineSimulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def wait_for_session(
            self, index: int = 0,
            timeout: float = 10,  # noqa: ASYNC109 (the documented signature)
    ) -> SimulatedSession:
        async with asyncio.timeout(timeout), self._session_added:
            await self._session_added.wait_for(lambda: len(self.sessions) > index)
        return self.sessions[index]

    # -- faults ---------------------------------------------------------------------------
    def refuse_next(self, count: int = 1,
                    status: HTTPStatus = HTTPStatus.SERVICE_UNAVAILABLE) -> None:
        """Answer the next `count` handshakes with `status` (after the connect delay)."""
        self._refuse += [status] * count

    def hold_next(self, count: int = 1, seconds: float = 30.0) -> None:
        """Hold the next `count` handshakes unanswered for `seconds` of wall time (a
        connect that hangs); then they are refused with 503 if the client still waits."""
        self._hold += [seconds] * count

    async def drop(self, session: SimulatedSession, code: int = 1011) -> None:
        """Close a live session from the server's side, as an engine failure does."""
        await session.close(code)

    async def _check_request(self, connection: ServerConnection,
                             request: Request) -> Response | None:
        self.connections_attempted += 1
        if self._hold:
            self.handshakes_held += 1
            self.holding.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._hold.pop(0)):
                    await self._stopping.wait()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      "The engine did not answer in time.\n")
        if self.profile.connect_ms > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.clock.wall_s(self.profile.connect_ms / 1000)):
                    await self._stopping.wait()
        if self._stopping.is_set():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Simulator stopping.\n")
        if self._refuse:
            self.handshakes_refused += 1
            status = self._refuse.pop(0)
            return connection.respond(status, f"{status.phrase}: please retry.\n")
        url = urlsplit(request.path)
        if url.path != REALTIME_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND,
                                      f"No route for {url.path}; use {REALTIME_PATH}\n")
        if self.api_key is not None:
            expected = f"Bearer {self.api_key}"
            if not secrets.compare_digest(request.headers.get("Authorization", ""), expected):
                return connection.respond(HTTPStatus.UNAUTHORIZED,
                                          "Incorrect API key provided.\n")
        beta = request.headers.get("OpenAI-Beta", "")
        if "realtime=v1" in beta:
            return connection.respond(
                HTTPStatus.BAD_REQUEST,
                "The beta Realtime protocol (header 'OpenAI-Beta: realtime=v1') is not served "
                "here: this simulator speaks the GA protocol only. Drop the header and use "
                "client.realtime (not client.beta.realtime).\n")
        if not parse_qs(url.query).get("model"):
            return connection.respond(HTTPStatus.BAD_REQUEST,
                                      "Missing required query parameter: 'model'.\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handler runs after the handshake
        model = parse_qs(urlsplit(connection.request.path).query)["model"][0]
        session = SimulatedSession(connection, model, profile=lambda: self.profile,
                                   replies=self.replies,
                                   caller_transcripts=self.caller_transcripts,
                                   tool_script=self.tool_script, clock=self.clock)
        async with self._session_added:
            self.sessions.append(session)
            self._session_added.notify_all()
        log.info("engine sim session %s opened (model %s)", session.id, model)
        await session.run()


def _profile_named(name: str) -> LatencyProfile:
    presets = {"zero": LatencyProfile.zero, "modeled": LatencyProfile.modeled}
    return presets[name]()


async def _serve_forever(host: str, port: int, profile: LatencyProfile,
                         api_key: str | None) -> None:
    simulator = EngineSimulator(profile, api_key=api_key)
    await simulator.start(host, port)
    print(f"engine simulator on {simulator.url} (profile {dataclasses.asdict(profile)})",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hotline.sim.engine",
                                     description="OpenAI Realtime (GA) engine simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--profile", choices=("zero", "modeled"), default="modeled")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.host, args.port, _profile_named(args.profile),
                                   args.api_key))


if __name__ == "__main__":
    main()
