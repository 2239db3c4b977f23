"""Placing the benchmark's calls: the simulated phone (with Twilio's gap between the TwiML
and the stream, if asked) and the engine simulator on one event loop (`LocalSimulators`),
calls `concurrency` at a time, one lane per call in flight."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs

import httpx

from hotline.benchmarks.engine_records import SessionRecord
from hotline.benchmarks.tenants import ACCOUNT_SID, AUTH_TOKEN, OPENAI_KEY
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import CallScript, Hangup, WaitForAgentAudio

LISTEN_MS = 300  # each call hears this much of the greeting, then hangs up


DEFAULT_RAMP_MS = 25.0  # the first C calls start 25 ms apart


class TwilioStreamGap(httpx.AsyncBaseTransport):
    """The phone's HTTP transport. With a gap, each webhook answer is held that long after it
    has arrived, before the phone acts on it: Twilio's own time between fetching the TwiML
    and opening the media stream, which the simulated phone does not take. When each answer
    arrived is kept by CallSid, so (a) does not include the gap."""

    def __init__(self, gap_ms: float) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._gap_s = gap_ms / 1000
        self.arrived: dict[str, float] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self._gap_s > 0:
            await response.aread()
            arrived = time.monotonic()
            form = parse_qs((await request.aread()).decode())
            self.arrived[form.get("CallSid", [""])[0]] = arrived
            await asyncio.sleep(self._gap_s)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """Calls for the simulated phone to place: `calls` calls, `concurrency` at a time, one
    lane (business number) per call in flight; `warmup`: one call per lane, untimed."""

    server_url: str
    numbers: tuple[str, ...]  # lane i's business number
    calls: int
    concurrency: int
    warmup: bool = False
    listen_ms: int = LISTEN_MS
    stream_gap_ms: float = 0.0
    ramp_ms: float = 0.0  # the first `concurrency` calls start this far apart


@dataclass(slots=True)
class PlayedCall:
    index: int  # -1: a warm-up call
    lane: int
    phone: PhoneCallResult
    twiml_arrived_at: float | None = None


class Simulators(Protocol):
    """The outside world of one strategy run: the realtime engine and the phone."""

    async def start(self, profile: LatencyProfile) -> str: ...  # the engine's URL
    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]: ...
    async def sessions(self) -> list[SessionRecord]: ...
    async def stop(self) -> None: ...


class LocalSimulators:
    """The engine simulator and the simulated phone on this process's event loop."""

    def __init__(self) -> None:
        self._engine: EngineSimulator | None = None

    async def start(self, profile: LatencyProfile) -> str:
        self._engine = EngineSimulator(profile, api_key=OPENAI_KEY)
        await self._engine.start()
        return self._engine.url

    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]:
        script = CallScript([WaitForAgentAudio(played_ms=request.listen_ms, timeout_ms=20_000),
                             Hangup()])
        lanes = len(request.numbers)
        transport = TwilioStreamGap(request.stream_gap_ms)
        async with httpx.AsyncClient(trust_env=False, transport=transport) as http:
            phone = SimulatedPhone(server_url=request.server_url, auth_token=AUTH_TOKEN,
                                   account_sid=ACCOUNT_SID, http=http)

            async def place(index: int, lane: int) -> PlayedCall:
                result = await phone.call(to=request.numbers[lane],
                                          from_=f"+1415555{(index + 1) % 10_000:04d}",
                                          script=script)
                # Audio and per-frame logs are not analysed: keep results small.
                result.heard_segments.clear()
                result.caller_audio.clear()
                del result.media_received[1:]
                result.marks_echoed.clear()
                return PlayedCall(index, lane, result, transport.arrived.pop(result.call_sid,
                                                                             None))

            if request.warmup:
                return list(await asyncio.gather(*(place(-1, lane) for lane in range(lanes))))

            semaphore = asyncio.Semaphore(request.concurrency)
            free_lanes = list(range(lanes))
            admitted = itertools.count()

            async def measured(index: int) -> PlayedCall:
                async with semaphore:
                    # A ramp, so that the lanes do not run in lockstep (C webhooks at once).
                    order = next(admitted)
                    if order < request.concurrency and request.ramp_ms:
                        await asyncio.sleep(order * request.ramp_ms / 1000)
                    lane = free_lanes.pop()  # a lane carries one call at a time
                    try:
                        return await place(index, lane)
                    finally:
                        free_lanes.append(lane)
                        if on_call is not None:
                            on_call()

            return list(await asyncio.gather(*(measured(i) for i in range(request.calls))))

    async def sessions(self) -> list[SessionRecord]:
        return [SessionRecord.of(s) for s in self._engine.sessions] if self._engine else []

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.stop()
