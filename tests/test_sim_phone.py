"""The simulated phone: its pure cores (playout, TwiML, scripts) and whole calls over sockets.

Socket tests run a tiny "product" inside the test (Starlette under uvicorn on an ephemeral
port): a voice webhook that checks the signature with the twilio SDK's RequestValidator and
answers TwiML built with the SDK's VoiceResponse, and a media-stream WebSocket that each
test scripts. Timing assertions are ratios or lower bounds, never absolute durations.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from hotline.audio import mulaw
from hotline.local_server import LocalServer
from hotline.sim import speech
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.phone import SimulatedPhone
from hotline.sim.playout import Playout
from hotline.sim.script import (
    AgentAudio,
    Audio,
    Beep,
    CallScript,
    Dtmf,
    Hangup,
    Say,
    ScriptRunner,
    Silence,
    Tone,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from hotline.sim.twilio_requests import route
from hotline.sim.twiml import Connect, Dial, Pause, Redirect, TwimlError, parse_twiml
from hotline.sim.twiml import Hangup as HangupVerb
from hotline.sim.twiml import Say as SayVerb

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
CALLER = "+15551230001"
NUMBER = "+15551230002"
SID_RE = re.compile(r"^CA[0-9a-f]{32}$")
STREAM_SID_RE = re.compile(r"^MZ[0-9a-f]{32}$")


# -- pure cores ----------------------------------------------------------------------------
def test_playout_marks_come_due_when_the_audio_before_them_has_played() -> None:
    playout = Playout()
    assert playout.enqueue_mark("idle", 100.0).due_ms == 100.0  # nothing queued: at once
    playout.enqueue_audio(mulaw.silence(400), 1000.0)
    playout.enqueue_audio(mulaw.silence(100), 1200.0)  # arrives mid-play: queued behind
    mark = playout.enqueue_mark("end", 1250.0)
    assert mark.due_ms == 1500.0
    assert [m.name for m in playout.pop_due_marks(1000.0)] == ["idle"]
    assert playout.pop_due_marks(1499.0) == []
    assert playout.next_mark_due_ms() == 1500.0
    assert playout.played_ms(1250.0) == 250.0
    assert playout.last_heard_ms(1250.0) == 1250.0  # playing now
    assert [m.name for m in playout.pop_due_marks(1500.0)] == ["end"]
    assert playout.played_ms(2000.0) == 500.0
    assert playout.last_heard_ms(2000.0) == 1500.0
    playout.enqueue_audio(mulaw.silence(20), 3000.0)  # idle line: plays on arrival
    assert playout.played_ms(3010.0) == 510.0


def test_playout_clear_drops_unplayed_audio_and_flushes_pending_marks() -> None:
    playout = Playout()
    playout.enqueue_audio(mulaw.silence(500), 0.0)
    playout.enqueue_mark("a", 0.0)  # due 500
    playout.enqueue_audio(mulaw.silence(500), 0.0)
    playout.enqueue_mark("b", 0.0)  # due 1000
    assert playout.pop_due_marks(499.0) == []
    outcome = playout.clear(250.5)
    assert outcome.played_ms == 250.5
    assert outcome.dropped_ms == 749.5
    assert outcome.played_ms + outcome.dropped_ms == 1000.0
    assert outcome.flushed == ["a", "b"]
    flushed = playout.pop_due_marks(250.5)
    assert [(m.name, m.flushed) for m in flushed] == [("a", True), ("b", True)]
    assert playout.played_ms(10_000.0) == 250.5  # nothing more plays
    assert playout.last_heard_ms(10_000.0) == 250.5
    playout.enqueue_audio(mulaw.silence(100), 300.0)  # after a clear: plays at once
    assert playout.enqueue_mark("c", 300.0).due_ms == 400.0
    assert playout.clear(300.0).played_ms == 250.5
    assert [s for s, _ in playout.heard()] == [0.0]


def test_playout_finish_reports_what_never_played() -> None:
    playout = Playout()
    playout.enqueue_audio(mulaw.silence(300), 0.0)
    assert playout.finish(100.0) == 200 * mulaw.BYTES_PER_MS
    assert playout.played_ms(1000.0) == 100.0
    assert [len(audio) for _, audio in playout.heard()] == [100 * mulaw.BYTES_PER_MS]


def test_twiml_parses_the_verbs_the_phone_needs() -> None:
    response = VoiceResponse()
    response.say("Hello there", language="en-US", voice="alice")
    response.pause(length=2)
    stream = response.connect(action="https://x.test/after").stream(url="wss://x.test/media")
    stream.parameter(name="tenant", value="acme")
    stream.parameter(name="lead_id", value="42")
    response.dial("+15550001111")
    response.redirect("https://x.test/next", method="GET")
    response.hangup()
    twiml = parse_twiml(str(response))
    assert [type(verb) for verb in twiml.verbs] == [SayVerb, Pause, Connect, Dial, Redirect,
                                                    HangupVerb]
    assert twiml.say_texts == ["Hello there"]
    assert twiml.verbs[0] == SayVerb("Hello there", "en-US", "alice")
    assert twiml.verbs[1] == Pause(2)
    assert twiml.stream is not None and twiml.stream.url == "wss://x.test/media"
    assert twiml.stream.parameters == {"tenant": "acme", "lead_id": "42"}
    connect = twiml.verbs[2]
    assert isinstance(connect, Connect) and connect.action == "https://x.test/after"
    assert twiml.dial_numbers == ["+15550001111"]
    assert twiml.redirect_urls == ["https://x.test/next"]
    assert twiml.has_hangup
    json.dumps(twiml.describe())  # JSON-ready


@pytest.mark.parametrize(("text", "code"), [
    ("this is not xml", 12100),
    ("<Html><Body/></Html>", 12100),
    ("<Response><Connect><Stream/></Connect></Response>", 12200),
    ("<Response><Pause length='soon'/></Response>", 12200),
])
def test_twiml_errors_carry_twilio_codes(text: str, code: int) -> None:
    with pytest.raises(TwimlError) as caught:
        parse_twiml(text)
    assert caught.value.code == code


def _agent(played_ms: float = 0.0, last_heard_ms: float | None = None) -> AgentAudio:
    return AgentAudio(played_ms=played_ms, last_heard_ms=last_heard_ms)


def test_script_runner_steps_through_frames_waits_and_hangup() -> None:
    tone = speech.voiced_tone(30)  # 240 bytes: two frames, the second padded
    runner = ScriptRunner(CallScript([
        Silence(40), Dtmf("5"), Audio(tone), WaitForAgentAudio(played_ms=100, timeout_ms=1000),
        WaitForAgentSilence(quiet_ms=60, timeout_ms=1000), Hangup(), Silence(1000),
    ]))
    silent = mulaw.silence(20)
    ticks = [runner.tick(t, _agent()) for t in (20.0, 40.0)]
    assert [tick.frame for tick in ticks] == [silent, silent]
    tick = runner.tick(60.0, _agent())  # silence done, dtmf, first tone frame
    assert tick.digits == ["5"] and tick.frame == tone[:160]
    tick = runner.tick(80.0, _agent())
    assert tick.frame == tone[160:] + bytes([0xFF]) * 80
    assert runner.tick(100.0, _agent(played_ms=50)).frame == silent  # waiting for 100 ms
    # 100 ms played: the agent-audio wait ends; the silence wait starts and waits
    assert runner.tick(120.0, _agent(played_ms=100, last_heard_ms=120.0)).frame == silent
    assert runner.tick(160.0, _agent(played_ms=140, last_heard_ms=150.0)).frame == silent
    tick = runner.tick(220.0, _agent(played_ms=140, last_heard_ms=150.0))  # quiet 70 ms
    assert tick.hangup and tick.frame is None
    assert runner.finished
    assert [record.timed_out for record in runner.log] == [False] * 6
    assert runner.log[4].started_ms == 120.0 and runner.log[4].ended_ms == 220.0


def test_agent_silence_counts_only_audio_since_the_caller_last_spoke() -> None:
    runner = ScriptRunner(CallScript([
        WaitForAgentSilence(quiet_ms=100, timeout_ms=1000),
        Tone(20), WaitForAgentSilence(quiet_ms=100, timeout_ms=60),
        Tone(20), WaitForAgentSilence(quiet_ms=100, timeout_ms=1000),
    ]))
    assert runner.tick(0.0, _agent()).frame == mulaw.silence(20)  # heard nothing yet
    # the greeting played before any caller speech counts; 100 ms quiet since: tone starts
    assert runner.tick(120.0, _agent(played_ms=15, last_heard_ms=20.0)).frame != \
        mulaw.silence(20)
    # audio heard before the caller spoke doesn't answer them: the wait times out
    assert runner.tick(140.0, _agent(played_ms=15, last_heard_ms=20.0)).frame is not None
    assert runner.tick(200.0, _agent(played_ms=15, last_heard_ms=20.0)).frame is not None
    assert runner.log[2].timed_out
    # the agent talks over the caller's second tone: that counts as an answer
    runner.tick(220.0, _agent(played_ms=30, last_heard_ms=220.0))
    assert runner.tick(300.0, _agent(played_ms=30, last_heard_ms=230.0)).frame is not None
    tick = runner.tick(340.0, _agent(played_ms=30, last_heard_ms=230.0))
    assert tick.hangup  # the script ran out: hang up
    assert [record.timed_out for record in runner.log] == [False, False, True, False, False]


def test_beep_is_a_1khz_tone_and_the_runner_notes_when_it_ended() -> None:
    runner = ScriptRunner(CallScript([Silence(20), Beep(ms=100), Silence(40)]))
    frames = [runner.tick(20.0 * k, _agent()).frame for k in range(1, 7)]
    assert frames[0] == mulaw.silence(20)
    beep = b"".join(frame or b"" for frame in frames[1:])
    assert len(beep) == 100 * mulaw.BYTES_PER_MS and mulaw.rms(beep) > 3000
    samples = mulaw.decode(beep)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    assert 180 <= crossings <= 220  # 1 kHz: two zero crossings per ms
    assert runner.beep_ended_ms is None  # its last frame was just sent
    assert runner.tick(140.0, _agent()).frame == mulaw.silence(20)
    assert runner.beep_ended_ms == 140.0  # the tick after its last frame: the beep is over
    assert runner.log[1].step.startswith("Beep(") and runner.log[1].ended_ms == 140.0
    with pytest.raises(ValueError):
        Beep(ms=0)


def test_answering_machine_greets_beeps_and_records_the_message() -> None:
    script = CallScript.answering_machine("Leave a message.", beep_ms=300,
                                          message_quiet_ms=1500, then=[Hangup()])
    steps = script.steps
    assert steps[:2] == [Say("Leave a message."), Beep(300)]
    assert isinstance(steps[2], WaitForAgentAudio) and isinstance(steps[3], WaitForAgentSilence)
    assert steps[3].quiet_ms == 1500 and steps[4:] == [Hangup()]
    assert isinstance(CallScript.answering_machine().steps[-1], Silence)  # stays on the line

    runner = ScriptRunner(CallScript.answering_machine("Hi.", then=[]))
    now = 0.0
    while runner.beep_ended_ms is None:  # the greeting, then the beep: no agent audio yet
        now += 20.0
        assert runner.tick(now, _agent()).frame is not None
    beep_end = runner.beep_ended_ms
    # the agent leaves 2 s of message after the beep; 3 s of quiet later the machine is done
    assert runner.tick(beep_end + 20, _agent(20.0, beep_end + 20)).frame is not None
    assert runner.tick(beep_end + 2000, _agent(2000.0, beep_end + 2000)).frame is not None
    assert runner.tick(beep_end + 4000, _agent(2000.0, beep_end + 2000)).frame is not None
    assert runner.tick(beep_end + 5000, _agent(2000.0, beep_end + 2000)).hangup
    assert not any(record.timed_out for record in runner.log)


def test_script_steps_validate_and_wav_scripts_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Dtmf("x")
    with pytest.raises(ValueError):
        Silence(-1)
    tone = speech.voiced_tone(200)
    path = tmp_path / "caller.wav"
    path.write_bytes(mulaw.wav_bytes_from_mulaw(tone))
    script = CallScript.from_wav(path, then=[Hangup()])
    audio = script.steps[0]
    assert isinstance(audio, Audio) and len(audio.mulaw) == len(tone)
    assert isinstance(script.steps[1], Hangup)


def test_route_keeps_the_path_and_swaps_the_origin() -> None:
    local = "http://127.0.0.1:8123"
    assert route("https://pub.example/twilio/voice?x=1", local) == \
        "http://127.0.0.1:8123/twilio/voice?x=1"
    assert route("wss://pub.example/media", local) == "ws://127.0.0.1:8123/media"
    assert route("wss://pub.example/media", None) == "wss://pub.example/media"


# -- a tiny product to call ----------------------------------------------------------------
@dataclass
class Seen:
    """One webhook or status callback the product received."""

    at: float
    url: str
    method: str
    params: dict[str, str]
    headers: dict[str, str]
    signature_valid: bool


class ServerStream:
    """The product's side of one media stream: what it received, and helpers to send."""

    def __init__(self, ws: WebSocket, signature_valid: bool) -> None:
        self.ws = ws
        self.signature_valid = signature_valid
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.stream_sid = ""
        self.closed_at: float | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        for _ in range(2):
            self._record(await self.ws.receive_text())
        self.stream_sid = self.frames[1][1]["streamSid"]
        self._reader = asyncio.create_task(self._read())

    def _record(self, text: str) -> None:
        self.frames.append((time.monotonic(), json.loads(text)))
        self._changed.set()

    async def _read(self) -> None:
        try:
            while True:
                self._record(await self.ws.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            self.closed_at = time.monotonic()
            self._changed.set()

    async def send(self, message: dict[str, Any] | str | bytes) -> float:
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_text(message if isinstance(message, str) else json.dumps(message))
        return time.monotonic()

    async def media(self, audio: bytes) -> float:
        return await self.send({"event": "media", "streamSid": self.stream_sid,
                                "media": {"payload": base64.b64encode(audio).decode()}})

    async def mark(self, name: str) -> float:
        return await self.send({"event": "mark", "streamSid": self.stream_sid,
                                "mark": {"name": name}})

    async def clear(self) -> float:
        return await self.send({"event": "clear", "streamSid": self.stream_sid})

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, frame) for at, frame in self.frames if frame["event"] == name]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_mark(self, name: str) -> float:
        await self.wait_until(lambda: any(f["mark"]["name"] == name
                                          for _, f in self.events("mark")))
        return next(at for at, f in self.events("mark") if f["mark"]["name"] == name)

    async def wait_closed(self) -> None:
        await self.wait_until(lambda: self.closed_at is not None)


StreamHandler = Callable[[ServerStream], Awaitable[None]]


async def _until_phone_hangs_up(stream: ServerStream) -> None:
    await stream.wait_closed()


class FakeProduct:
    """Voice webhook + media stream + status callback endpoint, configured per test."""

    def __init__(self) -> None:
        self.url = ""
        self.public_url: str | None = None  # the base URL signatures cover, if not `url`
        self.twiml: Callable[[FakeProduct], str] = FakeProduct.connect_twiml
        self.webhook_status = 200
        self.on_stream: StreamHandler = _until_phone_hangs_up
        self.webhooks: list[Seen] = []
        self.callbacks: list[Seen] = []
        self.streams: list[ServerStream] = []
        self.stream_done = asyncio.Event()
        self.validator = RequestValidator(AUTH_TOKEN)
        self.app = Starlette(routes=[
            Route("/twilio/voice", self._voice, methods=["GET", "POST"]),
            Route("/twilio/status", self._status, methods=["GET", "POST"]),
            WebSocketRoute("/media", self._media),
        ])

    @property
    def base(self) -> str:
        return self.public_url or self.url

    def stream_url(self) -> str:
        base = self.base.replace("https://", "wss://").replace("http://", "ws://")
        return f"{base}/media"

    @staticmethod
    def connect_twiml(product: FakeProduct) -> str:
        response = VoiceResponse()
        stream = response.connect().stream(url=product.stream_url())
        stream.parameter(name="tenant", value="acme")
        stream.parameter(name="lead_id", value="42")
        return str(response)

    async def _seen(self, request: Request) -> Seen:
        body = (await request.body()).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        url = self.base + request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
        signature = request.headers.get("x-twilio-signature", "")
        return Seen(time.monotonic(), url, request.method, params, dict(request.headers),
                    self.validator.validate(url, params, signature))

    async def _voice(self, request: Request) -> Response:
        seen = await self._seen(request)
        self.webhooks.append(seen)
        if not seen.signature_valid:
            return PlainTextResponse("bad signature", status_code=403)
        if self.webhook_status != 200:
            return PlainTextResponse("boom", status_code=self.webhook_status)
        return Response(self.twiml(self), media_type="application/xml")

    async def _status(self, request: Request) -> Response:
        self.callbacks.append(await self._seen(request))
        return Response(status_code=204)

    async def _media(self, ws: WebSocket) -> None:
        signature = ws.headers.get("x-twilio-signature", "")
        valid = self.validator.validate(self.stream_url(), {}, signature)
        if not valid:
            await ws.close(code=1008)
            return
        await ws.accept()
        stream = ServerStream(ws, valid)
        self.streams.append(stream)
        try:
            await stream.begin()
            await self.on_stream(stream)
        finally:
            self.stream_done.set()


@pytest.fixture
async def product() -> AsyncIterator[FakeProduct]:
    fake = FakeProduct()
    async with LocalServer(fake.app) as fake.url:
        yield fake


def _phone(product: FakeProduct, **kwargs: Any) -> SimulatedPhone:
    return SimulatedPhone(server_url=product.url, auth_token=AUTH_TOKEN,
                          account_sid=ACCOUNT_SID, **kwargs)


async def _call(product: FakeProduct, script: CallScript, **kwargs: Any) -> PhoneCallResult:
    phone = _phone(product)
    async with asyncio.timeout(30):
        return await phone.call(to=NUMBER, from_=CALLER, script=script, **kwargs)


# -- whole calls ---------------------------------------------------------------------------
@pytest.mark.sockets
async def test_call_speaks_the_webhook_and_media_stream_protocol(product: FakeProduct) -> None:
    async def on_stream(stream: ServerStream) -> None:
        await stream.media(speech.voiced_tone(200))
        await stream.mark("m1")
        await stream.wait_closed()

    product.on_stream = on_stream
    result = await _call(product, CallScript([Silence(100), Dtmf("5"), Silence(400), Hangup()]))

    assert result.application_error is None and result.failure is None
    webhook = product.webhooks[0]
    assert webhook.signature_valid and webhook.method == "POST"
    assert SID_RE.match(webhook.params["CallSid"])
    assert webhook.params["CallSid"] == result.call_sid
    assert {k: webhook.params[k] for k in ("AccountSid", "From", "To", "CallStatus",
                                          "ApiVersion", "Direction")} == {
        "AccountSid": ACCOUNT_SID, "From": CALLER, "To": NUMBER, "CallStatus": "ringing",
        "ApiVersion": "2010-04-01", "Direction": "inbound"}
    stream = product.streams[0]
    assert stream.signature_valid
    frames = [frame for _, frame in stream.frames]
    assert frames[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = frames[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert STREAM_SID_RE.match(start["streamSid"]) and start["streamSid"] == result.stream_sid
    assert start["start"] == {
        "accountSid": ACCOUNT_SID, "streamSid": result.stream_sid, "callSid": result.call_sid,
        "tracks": ["inbound"], "customParameters": {"tenant": "acme", "lead_id": "42"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    # every message after `connected` carries the next sequence number, as a string
    sequence = [frame["sequenceNumber"] for frame in frames[1:]]
    assert all(isinstance(n, str) for n in sequence)
    assert [int(n) for n in sequence] == list(range(1, len(sequence) + 1))
    assert all(frame["streamSid"] == result.stream_sid for frame in frames[1:])
    media = [frame for frame in frames if frame["event"] == "media"]
    assert len(media) == 25  # 500 ms of script, 20 ms a frame
    for index, frame in enumerate(media, start=1):
        body = frame["media"]
        assert set(body) == {"track", "chunk", "timestamp", "payload"}
        assert body["track"] == "inbound"
        assert body["chunk"] == str(index)
        assert body["timestamp"] == str((index - 1) * 20)
        assert len(base64.b64decode(body["payload"])) == mulaw.FRAME_BYTES
    dtmf = [frame for frame in frames if frame["event"] == "dtmf"]
    assert [frame["dtmf"] for frame in dtmf] == [{"track": "inbound_track", "digit": "5"}]
    assert frames.index(dtmf[0]) == frames.index(media[4]) + 1  # after 100 ms of silence
    echoed = [frame for frame in frames if frame["event"] == "mark"]
    assert [frame["mark"] for frame in echoed] == [{"name": "m1"}]
    assert frames[-1] == {"event": "stop", "sequenceNumber": sequence[-1],
                          "streamSid": result.stream_sid,
                          "stop": {"accountSid": ACCOUNT_SID, "callSid": result.call_sid}}
    # paced at 20 ms: the span of arrivals is about 24 frame periods (a ratio, not a time)
    arrivals = [at for at, frame in stream.frames if frame["event"] == "media"]
    span_ms = (arrivals[-1] - arrivals[0]) * 1000
    assert 0.7 < span_ms / (24 * 20) < 1.6
    assert result.closed_by == "phone" and result.close_code == 1000
    assert result.played_ms == 200.0 and result.unplayed_ms_at_end == 0.0
    assert result.frames_sent == 25 and [d.digit for d in result.dtmf_sent] == ["5"]
    assert result.custom_parameters == {"tenant": "acme", "lead_id": "42"}
    assert result.stream_url_is_wss is False
    assert any("31922" in warning for warning in result.warnings)
    assert result.start_to_first_media_ms is not None and result.start_to_first_media_ms > 0
    assert result.webhook_sent_at is not None and result.twiml_received_at is not None
    assert result.start_sent_at is not None and result.stop_sent_at is not None
    assert result.webhook_sent_at <= result.twiml_received_at <= result.start_sent_at
    assert result.start_sent_at <= result.stop_sent_at <= (result.socket_closed_at or 0)


@pytest.mark.sockets
async def test_marks_come_back_only_after_their_audio_has_played(product: FakeProduct) -> None:
    sent: dict[str, float] = {}
    echoed: dict[str, float] = {}

    async def on_stream(stream: ServerStream) -> None:
        sent["idle"] = await stream.mark("idle")  # nothing queued: comes back at once
        echoed["idle"] = await stream.wait_for_mark("idle")
        sent["audio"] = time.monotonic()
        for _ in range(3):
            await stream.media(speech.voiced_tone(200))
        sent["end"] = await stream.mark("end")
        echoed["end"] = await stream.wait_for_mark("end")
        await stream.wait_closed()

    product.on_stream = on_stream
    result = await _call(product, CallScript([WaitForAgentSilence(quiet_ms=100,
                                                                  timeout_ms=5000)]))
    playout_ms = (echoed["end"] - sent["audio"]) * 1000
    assert playout_ms >= 600  # never before the 600 ms queued ahead of it played
    assert playout_ms < 600 * 2.0
    idle_ms = (echoed["idle"] - sent["idle"]) * 1000
    assert idle_ms < playout_ms / 4
    assert [(m.name, m.flushed_by_clear) for m in result.marks_echoed] == [
        ("idle", False), ("end", False)]
    end = result.marks_echoed[1]
    assert result.first_media_at is not None
    assert (end.echoed_at - result.first_media_at) * 1000 >= 599.99
    assert result.played_ms == 600.0
    assert [m.bytes for m in result.media_received] == [1600, 1600, 1600]
    assert not result.script_log[0].timed_out


@pytest.mark.sockets
async def test_clear_drops_queued_audio_and_returns_pending_marks_at_once(
        product: FakeProduct, tmp_path: Path) -> None:
    times: dict[str, float] = {}

    async def on_stream(stream: ServerStream) -> None:
        for index in range(10):  # 2 s of audio, a mark after every 200 ms
            await stream.media(speech.voiced_tone(200))
            await stream.mark(f"c{index}")
        await stream.wait_for_mark("c1")  # 400 ms have played
        times["clear"] = await stream.clear()
        times["flushed"] = await stream.wait_for_mark("c9")
        await stream.wait_closed()

    product.on_stream = on_stream
    result = await _call(product, CallScript([Silence(100), WaitForAgentSilence(
        quiet_ms=200, timeout_ms=5000), Hangup()]))

    assert len(result.clears) == 1
    clear = result.clears[0]
    assert clear.played_ms_at_clear + clear.dropped_ms == 2000.0
    assert clear.played_ms_at_clear >= 400.0
    assert result.first_media_at is not None
    # the line never idled before the clear, so played = time since the first audio arrived
    assert clear.played_ms_at_clear == pytest.approx((clear.at - result.first_media_at) * 1000,
                                                     abs=0.5)
    names = [m.name for m in result.marks_echoed]
    assert names == [f"c{i}" for i in range(10)]
    played_marks = int(clear.played_ms_at_clear // 200)
    assert [m.flushed_by_clear for m in result.marks_echoed] == (
        [False] * played_marks + [True] * (10 - played_marks))
    assert clear.marks_flushed == names[played_marks:]
    flush_ms = (times["flushed"] - times["clear"]) * 1000
    assert flush_ms < clear.dropped_ms / 4  # at once, not after the dropped audio
    assert result.played_ms == clear.played_ms_at_clear  # nothing played after the clear
    assert result.unplayed_ms_at_end == 0.0

    wav_path, json_path = tmp_path / "heard.wav", tmp_path / "timings.json"
    result.save_wav(wav_path)
    result.save_timings(json_path)
    with wave.open(str(wav_path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        heard_ms = wav.getnframes() / 8
    assert result.ended_at is not None and result.heard_origin_at is not None
    assert heard_ms == pytest.approx((result.ended_at - result.heard_origin_at) * 1000, abs=2)
    heard = result.heard_mulaw()
    assert sum(1 for b in heard if b != mulaw.SILENCE_BYTE) > clear.played_ms_at_clear * 4
    timings = json.loads(json_path.read_text())
    assert timings["call_sid"] == result.call_sid
    assert timings["clears"][0]["dropped_ms"] == clear.dropped_ms
    assert timings["start_to_first_media_ms"] == result.start_to_first_media_ms
    result.save_wav(tmp_path / "both.wav", mix_caller=True)


@pytest.mark.sockets
async def test_caller_barges_in_only_after_enough_agent_audio_played(
        product: FakeProduct) -> None:
    sent_at: list[float] = []

    async def on_stream(stream: ServerStream) -> None:
        sent_at.append(await stream.media(speech.voiced_tone(1000)))
        await stream.wait_closed()

    product.on_stream = on_stream
    script = CallScript([WaitForAgentAudio(played_ms=300, timeout_ms=5000), Tone(200), Hangup()])
    result = await _call(product, script)

    stream = product.streams[0]
    loud = [at for at, frame in stream.events("media")
            if mulaw.rms(base64.b64decode(frame["media"]["payload"])) > 500]
    assert len(loud) == 10
    assert (loud[0] - sent_at[0]) * 1000 >= 300  # not before 300 ms could have played
    assert result.script_log[0].timed_out is False
    assert result.played_ms < 1000.0  # hung up mid-greeting
    assert result.unplayed_ms_at_end == 1000.0 - result.played_ms


@pytest.mark.sockets
async def test_forged_webhook_signature_is_rejected(product: FakeProduct) -> None:
    result = await _call(product, CallScript([Hangup()]), forge_signature=True)
    assert product.webhooks[0].signature_valid is False
    assert result.signature_forged
    assert result.webhook_status == 403
    assert result.application_error_code == 11200
    assert result.stream_sid is None and product.streams == []


@pytest.mark.sockets
async def test_forged_stream_signature_fails_the_handshake(product: FakeProduct) -> None:
    phone = _phone(product)
    twiml = FakeProduct.connect_twiml(product)
    call = phone.start_call(to=NUMBER, from_=CALLER, script=CallScript([Hangup()]),
                            twiml=twiml, forge_signature=True)
    result = await asyncio.wait_for(call.wait(), 10)
    assert product.webhooks == []  # inline TwiML: no webhook
    assert result.application_error_code == 31920
    assert result.socket_open_at is None and product.streams == []


@pytest.mark.sockets
async def test_say_and_hangup_twiml(product: FakeProduct) -> None:
    def twiml(_: FakeProduct) -> str:
        response = VoiceResponse()
        response.say("Goodbye", language="en-US")
        response.hangup()
        return str(response)

    product.twiml = twiml
    result = await _call(product, CallScript([Silence(1000)]))
    assert result.say_texts == ["Goodbye"]
    assert result.hangup_verb
    assert result.stream_url is None and product.streams == []
    assert result.application_error is None
    said = speech.synthesize("Goodbye", "en", "")
    assert result.ended_at is not None and result.twiml_received_at is not None
    assert (result.ended_at - result.twiml_received_at) * 8000 >= len(said)  # it was spoken
    assert said in result.heard_mulaw()


@pytest.mark.sockets
async def test_server_closing_the_socket_ends_the_stream_and_twiml_continues(
        product: FakeProduct) -> None:
    def twiml(p: FakeProduct) -> str:
        response = VoiceResponse()
        response.connect().stream(url=p.stream_url())
        response.say("Bye")
        response.hangup()
        return str(response)

    async def on_stream(stream: ServerStream) -> None:
        await stream.media(speech.voiced_tone(100))
        await stream.wait_until(lambda: len(stream.events("media")) >= 10)
        await stream.ws.close(code=1000)

    product.twiml, product.on_stream = twiml, on_stream
    result = await _call(product, CallScript([Silence(10_000)]))
    assert result.closed_by == "server" and result.close_code == 1000
    assert result.stop_sent_at is None
    assert product.streams[0].events("stop") == []
    assert result.say_texts == ["Bye"]
    assert result.played_ms == 100.0
    assert result.frames_sent < 100  # stopped long before the script's 10 s
    after = speech.synthesize("Bye", "en", "")
    assert result.heard_segments[-1][1] == after


@pytest.mark.sockets
async def test_redirect_verb_fetches_its_url_and_runs_that_twiml(product: FakeProduct) -> None:
    def twiml(p: FakeProduct) -> str:
        response = VoiceResponse()
        if len(p.webhooks) == 1:
            response.redirect(f"{p.base}/twilio/voice?step=2")
            response.say("never reached")
        else:
            response.say("Second document")
            response.hangup()
        return str(response)

    product.twiml = twiml
    result = await _call(product, CallScript([Silence(1000)]))
    first, second = product.webhooks
    assert second.signature_valid and second.url.endswith("/twilio/voice?step=2")
    assert second.params["CallStatus"] == "in-progress"
    assert second.params["CallSid"] == first.params["CallSid"] == result.call_sid
    [update] = result.twiml_updates
    assert (update.source, update.url) == ("redirect", f"{product.url}/twilio/voice?step=2")
    assert result.say_texts == ["never reached", "Second document"]  # both documents' text
    assert result.heard_segments[-1][1] == speech.synthesize("Second document", "en", "")
    assert len(result.heard_segments) == 1  # the verb after <Redirect> never ran
    assert result.hangup_verb and result.ended_by == "server"
    assert result.application_error is None and result.unexecuted_verb is None


@pytest.mark.sockets
async def test_redirect_cuts_a_say_short_and_hangup_wins(product: FakeProduct) -> None:
    def twiml(_: FakeProduct) -> str:
        response = VoiceResponse()
        response.say("This is a very long announcement that nobody will hear to the end")
        return str(response)

    product.twiml = twiml
    call = _phone(product, dial_leg_ms=60_000).start_call(
        to=NUMBER, from_=CALLER, script=CallScript([Hangup()]))
    await asyncio.wait_for(_until(lambda: bool(call.result.heard_segments)), 10)
    assert call.in_progress
    call.redirect(twiml="<Response><Dial>+15550001111</Dial><Say>after</Say></Response>")
    await asyncio.wait_for(_until(lambda: bool(call.result.dials)), 10)
    call.complete()
    result = await asyncio.wait_for(call.wait(), 10)
    full = speech.synthesize(
        "This is a very long announcement that nobody will hear to the end", "en", "")
    assert 0 < len(result.heard_segments[0][1]) < len(full)  # cut off by the update
    assert [d.number for d in result.dials] == ["+15550001111"]
    assert result.dials[0].ended_at is not None
    assert result.ended_by == "api" and "after" in result.say_texts
    assert len(result.heard_segments) == 1  # the <Say> after the <Dial> never ran


async def _until(predicate: Callable[[], bool]) -> None:
    """Re-check a condition the phone sets without an event, until it holds."""
    while not predicate():  # noqa: ASYNC110 (the phone's records have no event)
        await asyncio.sleep(0.01)


@pytest.mark.sockets
async def test_off_protocol_frames_are_recorded_not_fatal(product: FakeProduct) -> None:
    async def on_stream(stream: ServerStream) -> None:
        sid = stream.stream_sid
        await stream.send("not json")
        await stream.send(b"\x00\x01")
        await stream.send({"event": "bogus", "streamSid": sid})
        await stream.send({"event": "media", "streamSid": "MZ" + "0" * 32,
                           "media": {"payload": "//8="}})
        await stream.send({"event": "media", "streamSid": sid, "media": {"payload": "%%%"}})
        await stream.send({"event": "mark", "streamSid": sid, "mark": {}})
        await stream.send([1, 2])  # type: ignore[arg-type]
        await stream.mark("still-alive")
        await stream.wait_for_mark("still-alive")
        await stream.wait_closed()

    product.on_stream = on_stream
    result = await _call(product, CallScript([WaitForAgentSilence(quiet_ms=100,
                                                                  timeout_ms=400)]))
    assert len(result.protocol_errors) == 7
    assert {error.code for error in result.protocol_errors} == {31924}
    assert [m.name for m in result.marks_echoed] == ["still-alive"]
    assert result.failure is None and result.closed_by == "phone"


@pytest.mark.sockets
async def test_webhook_failures_are_application_errors(product: FakeProduct) -> None:
    product.webhook_status = 500
    result = await _call(product, CallScript([Hangup()]))
    assert result.webhook_status == 500 and result.application_error_code == 11200

    product.webhook_status = 200
    product.twiml = lambda _: "<Response><Say>unclosed"
    result = await _call(product, CallScript([Hangup()]))
    assert result.application_error_code == 12100
    assert result.twiml == "<Response><Say>unclosed"

    unreachable = SimulatedPhone(server_url="http://127.0.0.1:9", auth_token=AUTH_TOKEN,
                                 account_sid=ACCOUNT_SID)
    result = await unreachable.call(to=NUMBER, from_=CALLER, script=CallScript([]))
    assert result.application_error_code == 11200 and result.webhook_status is None
    assert result.failure is None


@pytest.mark.sockets
async def test_query_string_webhook_and_status_callback_are_signed(
        product: FakeProduct) -> None:
    result = await _call(product, CallScript([Silence(60)]),
                         webhook_url=f"{product.url}/twilio/voice?tenant=acme&x=a+b",
                         status_callback=f"{product.url}/twilio/status",
                         extra_params={"CallerName": "Dana"})
    webhook = product.webhooks[0]
    assert webhook.url.endswith("/twilio/voice?tenant=acme&x=a+b")
    assert webhook.signature_valid and webhook.params["CallerName"] == "Dana"
    callback = product.callbacks[0]
    assert callback.signature_valid
    assert callback.params["CallStatus"] == "completed"
    assert callback.params["CallSid"] == result.call_sid
    assert callback.params["CallbackSource"] == "call-progress-events"
    assert callback.params["SequenceNumber"] == "0"
    assert callback.params["CallDuration"].isdigit()
    assert re.match(r"^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$",
                    callback.params["Timestamp"])
    assert [(r.event, r.http_status) for r in result.status_callbacks] == [("completed", 204)]


@pytest.mark.sockets
async def test_get_webhook_is_signed_over_the_full_url(product: FakeProduct) -> None:
    phone = _phone(product)
    call = phone.start_call(to=NUMBER, from_=CALLER, script=CallScript([Hangup()]),
                            webhook_method="GET")
    result = await asyncio.wait_for(call.wait(), 10)
    webhook = product.webhooks[0]
    assert webhook.method == "GET" and webhook.params == {}
    assert "CallSid=" + result.call_sid in webhook.url
    assert webhook.signature_valid


@pytest.mark.sockets
async def test_hangup_from_outside_stops_the_stream(product: FakeProduct) -> None:
    started = asyncio.Event()

    async def on_stream(stream: ServerStream) -> None:
        await stream.wait_until(lambda: len(stream.events("media")) >= 5)
        started.set()
        await stream.wait_closed()

    product.on_stream = on_stream
    call = _phone(product).start_call(to=NUMBER, from_=CALLER,
                                      script=CallScript([Silence(20_000)]))
    await asyncio.wait_for(started.wait(), 10)
    call.hangup()
    result = await asyncio.wait_for(call.wait(), 10)
    assert result.closed_by == "phone" and result.stop_sent_at is not None
    assert product.streams[0].events("stop")
    assert result.frames_sent < 20_000 // 20 // 2


@pytest.mark.sockets
async def test_connect_to_reaches_a_server_behind_a_proxy(product: FakeProduct) -> None:
    product.public_url = "https://hotline.example.com"
    phone = _phone(product, connect_to=product.url)
    result = await phone.call(to=NUMBER, from_=CALLER, script=CallScript([Silence(60)]),
                              webhook_url="https://hotline.example.com/twilio/voice")
    assert product.webhooks[0].signature_valid
    assert product.streams[0].signature_valid
    assert result.stream_url == "wss://hotline.example.com/media"
    assert result.stream_url_is_wss is True and result.warnings == []
    assert result.frames_sent == 3


@pytest.mark.sockets
async def test_concurrent_calls_keep_their_own_state(product: FakeProduct) -> None:
    async def on_stream(stream: ServerStream) -> None:
        await stream.media(speech.voiced_tone(100))
        await stream.wait_closed()

    product.on_stream = on_stream
    phone = _phone(product)
    script = CallScript([Say("One two"), Hangup()])
    results = await asyncio.wait_for(asyncio.gather(*(
        phone.call(to=NUMBER, from_=f"+1555000000{i}", script=script) for i in range(3))), 20)
    assert len({r.call_sid for r in results}) == 3
    assert len({r.stream_sid for r in results}) == 3
    assert all(r.played_ms == 100.0 and r.closed_by == "phone" for r in results)
    assert sorted(s.frames[1][1]["start"]["callSid"] for s in product.streams) == sorted(
        r.call_sid for r in results)
