"""Placing the benchmark's calls: the simulated phone (with Twilio's gap between the TwiML
and the stream, if asked), the simulated Twilio REST API and the engine simulator on one
event loop (`LocalSimulators`), calls `concurrency` at a time, one lane per call in flight.

Inbound: the phone calls the lane's business number. Outbound: the operator's request
(`POST /api/calls`, the lane's business and its outbound template) makes the server place
the call through the simulated Twilio REST API, which rings the callee and answers with
`SimulatedPhone`; async AMD (`DetectMessageEnd`) posts its verdict to the server's
`/twilio/amd`: `human` `amd_ms` after the answer, or, for an answering machine
(`voicemail`), `machine_end_beep` when its beep ends."""

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
from hotline.benchmarks.tenants import ACCOUNT_SID, AUTH_TOKEN, OPENAI_KEY, OUTBOUND_TEMPLATE
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import Beep, CallScript, Hangup, Say, Silence, WaitForAgentAudio
from hotline.sim.twilio_api import TwilioApiSimulator

LISTEN_MS = 300  # each call hears this much of the greeting, then hangs up

INBOUND, OUTBOUND, VOICEMAIL = "inbound", "outbound", "voicemail"
DIRECTIONS = (INBOUND, OUTBOUND, VOICEMAIL)  # voicemail: outbound, a machine answers
DEFAULT_AMD_MS = 1500  # the human verdict comes this long after the callee picks up
RING_MS = 300  # the callee's phone rings this long before it is picked up
CALLEE_HELLO = "Hello?"  # what a person says on picking up, before the agent speaks
MACHINE_GREETING = "Hi, you've reached Dana. Please leave a message after the tone."
MACHINE_BEEP_MS = 400
VOICEMAIL_LISTEN_MS = 3000  # the machine records this long after its beep, then hangs up


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
    direction: str = INBOUND  # INBOUND | OUTBOUND | VOICEMAIL
    slugs: tuple[str, ...] = ()  # lane i's business (outbound calls name it)
    amd_ms: int = DEFAULT_AMD_MS


@dataclass(frozen=True, slots=True)
class SimulatorUrls:
    engine: str  # the realtime engine's WebSocket URL
    twilio: str  # the Twilio REST API's base URL


@dataclass(slots=True)
class PlayedCall:
    index: int  # -1: a warm-up call
    lane: int
    phone: PhoneCallResult
    twiml_arrived_at: float | None = None
    # Voicemail: the first frame of the voicemail (see `first_voicemail_frame_at`).
    voicemail_media_at: float | None = None


def first_voicemail_frame_at(result: PhoneCallResult) -> float | None:
    """The first agent frame of the voicemail: after the machine's beep ended and the AMD
    verdict was sent (the server can know no earlier), and after the `clear` that cut a
    greeting still playing then, if there was one."""
    if result.beep_ended_at is None:
        return None
    since = max(result.beep_ended_at, result.amd_callback_at or result.beep_ended_at)
    clears = [c.at for c in result.clears if c.at >= since]
    if clears:
        since = clears[0]
    return next((m.at for m in result.media_received if m.at >= since), None)


def callee_script(direction: str, listen_ms: int) -> CallScript:
    if direction == VOICEMAIL:
        return CallScript([Say(MACHINE_GREETING), Beep(MACHINE_BEEP_MS),
                           Silence(VOICEMAIL_LISTEN_MS), Hangup()])
    return CallScript([Say(CALLEE_HELLO),
                       WaitForAgentAudio(played_ms=listen_ms, timeout_ms=20_000), Hangup()])


def _slim(result: PhoneCallResult) -> None:
    """Audio and per-frame logs are not analysed: keep results small."""
    result.heard_segments.clear()
    result.caller_audio.clear()
    del result.media_received[1:]
    result.marks_echoed.clear()


class Simulators(Protocol):
    """The outside world of one strategy run: the realtime engine and the phone."""

    async def start(self, profile: LatencyProfile) -> SimulatorUrls: ...
    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]: ...
    async def sessions(self) -> list[SessionRecord]: ...
    async def stop(self) -> None: ...


class LocalSimulators:
    """The engine simulator, the simulated Twilio REST API and the simulated phone on this
    process's event loop."""

    def __init__(self) -> None:
        self._engine: EngineSimulator | None = None
        self._twilio: TwilioApiSimulator | None = None
        self._callees = itertools.count(1)

    async def start(self, profile: LatencyProfile) -> SimulatorUrls:
        self._engine = EngineSimulator(profile, api_key=OPENAI_KEY)
        await self._engine.start()
        self._twilio = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                          ring_ms=RING_MS)
        await self._twilio.start()
        return SimulatorUrls(self._engine.url, self._twilio.url)

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
                if request.direction != INBOUND:
                    return await self._outbound(http, request, index, lane)
                result = await phone.call(to=request.numbers[lane],
                                          from_=f"+1415555{(index + 1) % 10_000:04d}",
                                          script=script)
                _slim(result)
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

    async def _outbound(self, http: httpx.AsyncClient, request: PlayRequest, index: int,
                        lane: int) -> PlayedCall:
        """As an operator would: ask the server to place the call, then follow it in the
        Twilio simulator until it ends."""
        twilio = self._twilio
        assert twilio is not None, "start the simulators first"
        twilio.amd_ms = request.amd_ms
        to = f"+1650555{next(self._callees) % 10_000:04d}"
        twilio.callee_scripts[to] = callee_script(request.direction, request.listen_ms)
        twilio.answered_by[to] = "machine_end_beep" if request.direction == VOICEMAIL else "human"
        response = await http.post(f"{request.server_url}/api/calls", json={
            "business": request.slugs[lane], "to": to, "template": OUTBOUND_TEMPLATE})
        if response.status_code != 201:
            failed = PhoneCallResult(call_sid="", account_sid=ACCOUNT_SID,
                                     direction="outbound-api", from_number="", to_number=to)
            failed.failure = f"POST /api/calls answered {response.status_code}: {response.text}"
            return PlayedCall(index, lane, failed)
        call_sid = str(response.json()["call_sid"])
        try:
            result = await twilio.wait_for_call(call_sid, timeout=60)
        except TimeoutError:
            result = PhoneCallResult(call_sid=call_sid, account_sid=ACCOUNT_SID,
                                     direction="outbound-api", from_number="", to_number=to)
            result.failure = "the call did not end within 60 s"
        voicemail_at = first_voicemail_frame_at(result) if request.direction == VOICEMAIL else None
        _slim(result)
        result.clears.clear()
        result.status_callbacks.clear()
        result.script_log.clear()
        return PlayedCall(index, lane, result, voicemail_media_at=voicemail_at)

    async def sessions(self) -> list[SessionRecord]:
        return [SessionRecord.of(s) for s in self._engine.sessions] if self._engine else []

    async def stop(self) -> None:
        if self._twilio is not None:
            await self._twilio.stop()
            self._twilio = None
        if self._engine is not None:
            await self._engine.stop()
