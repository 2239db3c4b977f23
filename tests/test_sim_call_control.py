"""Call control through the simulated Twilio REST API, driven by the twilio SDK's async client.

What the server does to live calls: fetch and update inbound calls (`attach_phone`), end
them (`Status=completed`), move them to new TwiML (`Twiml`/`Url`, e.g. a `<Dial>` transfer),
and leave a voicemail once async AMD with `DetectMessageEnd` says the beep has ended.

A tiny product runs inside each test (Starlette under uvicorn, ephemeral port): its voice
webhook, status, AMD and "next TwiML" endpoints record what they get and check signatures
with the SDK's RequestValidator; its media stream records every frame with its arrival
time. Timing assertions compare recorded times with each other, never with a clock value.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from hotline.local_server import LocalServer
from hotline.sim import speech
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import Beep, CallScript, Silence
from hotline.sim.twilio_api import TwilioApiSimulator
from tests.twilio_fakes import Seen, seen_request

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

ACCOUNT_SID = "AC" + "3" * 32
AUTH_TOKEN = "call-control-token-0123456789"
AGENT_NUMBER = "+15558880000"
CALLER = "+15558880001"
CALLEE = "+15558880002"
VOICEMAIL = "+15558880003"
TRANSFER_TO = "+15558889999"
LONG_LINE = CallScript([Silence(20_000)])  # stays on the line until someone ends the call


StreamHandler = Callable[["FakeProduct", str], Awaitable[None]]


async def _just_listen(_product: FakeProduct, _stream_sid: str) -> None:
    pass


class FakeProduct:
    """Voice webhook (answers with a stream), next-TwiML URL, status and AMD callbacks."""

    def __init__(self) -> None:
        self.url = ""
        self.next_twiml = "<Response><Hangup/></Response>"
        self.answer_gate: asyncio.Event | None = None  # the webhook waits for it, if set
        self.on_stream: StreamHandler = _just_listen
        self.webhooks: list[Seen] = []
        self.next_requests: list[Seen] = []
        self.callbacks: list[Seen] = []
        self.amd: list[Seen] = []
        self.amd_received = asyncio.Event()
        self.webhook_received = asyncio.Event()
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.stream_started = asyncio.Event()
        self.stream_closed_at: float | None = None
        self.stream_ended = asyncio.Event()
        self._frame_arrived = asyncio.Event()
        self._ws: WebSocket | None = None
        self._validator = RequestValidator(AUTH_TOKEN)
        self.app = Starlette(routes=[
            Route("/twilio/voice", self._voice, methods=["POST"]),
            Route("/twilio/next", self._next, methods=["POST"]),
            Route("/twilio/status", self._status, methods=["POST"]),
            Route("/twilio/amd", self._amd, methods=["POST"]),
            WebSocketRoute("/media", self._media),
        ])

    async def _seen(self, request: Request) -> Seen:
        return await seen_request(request, self._validator)

    async def _voice(self, request: Request) -> Response:
        self.webhooks.append(await self._seen(request))
        self.webhook_received.set()
        if self.answer_gate is not None:
            await self.answer_gate.wait()
        response = VoiceResponse()
        response.connect().stream(url=self.url.replace("http://", "ws://") + "/media")
        return Response(str(response), media_type="application/xml")

    async def _next(self, request: Request) -> Response:
        self.next_requests.append(await self._seen(request))
        return Response(self.next_twiml, media_type="application/xml")

    async def _status(self, request: Request) -> Response:
        self.callbacks.append(await self._seen(request))
        return Response(status_code=204)

    async def _amd(self, request: Request) -> Response:
        self.amd.append(await self._seen(request))
        self.amd_received.set()
        return Response(status_code=204)

    async def _media(self, ws: WebSocket) -> None:
        await ws.accept()
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            await asyncio.wait_for(self.stream_started.wait(), 10)
            await self.on_stream(self, self.events("start")[0]["streamSid"])
            await reader
        finally:
            reader.cancel()
            self.stream_ended.set()

    async def _read(self, ws: WebSocket) -> None:
        try:
            while True:
                self.frames.append((time.monotonic(), json.loads(await ws.receive_text())))
                self._frame_arrived.set()
                if self.frames[-1][1]["event"] == "start":
                    self.stream_started.set()
        except WebSocketDisconnect:
            self.stream_closed_at = time.monotonic()

    async def send_audio(self, stream_sid: str, audio: bytes, mark: str) -> None:
        assert self._ws is not None
        for message in ({"event": "media", "streamSid": stream_sid,
                         "media": {"payload": base64.b64encode(audio).decode()}},
                        {"event": "mark", "streamSid": stream_sid, "mark": {"name": mark}}):
            await self._ws.send_text(json.dumps(message))

    async def wait_for_mark(self, name: str) -> None:
        async with asyncio.timeout(10):
            while not any(f["mark"]["name"] == name for f in self.events("mark")):
                self._frame_arrived.clear()
                await self._frame_arrived.wait()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [frame for _, frame in self.frames if frame["event"] == name]


@pytest.fixture
async def product() -> AsyncIterator[FakeProduct]:
    fake = FakeProduct()
    async with LocalServer(fake.app) as fake.url:
        yield fake


@asynccontextmanager
async def sdk(api: TwilioApiSimulator) -> AsyncIterator[Client]:
    """The client as the server builds it: async HTTP client, base URL on the simulator."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
    client.api.base_url = api.url
    try:
        yield client
    finally:
        await client.http_client.close()


@asynccontextmanager
async def linked(product: FakeProduct, **api_kwargs: Any,
                 ) -> AsyncIterator[tuple[TwilioApiSimulator, SimulatedPhone]]:
    """The REST API simulator with an attached phone that calls the product."""
    api = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, ring_ms=50,
                             **api_kwargs)
    async with api:
        phone = api.attach_phone(SimulatedPhone(
            server_url=product.url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID))
        yield api, phone


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    """Re-check a condition the simulator sets without an event, until it holds."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (the phone's records have no event)
            await asyncio.sleep(0.01)


def _dial_twiml(with_number_noun: bool) -> str:
    response = VoiceResponse()
    if with_number_noun:
        response.dial().number(TRANSFER_TO)
    else:
        response.dial(TRANSFER_TO)
    return str(response)


# -- inbound calls through the REST API ------------------------------------------------------
async def test_inbound_call_is_fetched_and_completed_through_the_api(
        product: FakeProduct) -> None:
    async with linked(product) as (api, phone), sdk(api) as client:
        call = phone.start_call(to=AGENT_NUMBER, from_=CALLER, script=LONG_LINE,
                                status_callback=f"{product.url}/twilio/status")
        await asyncio.wait_for(product.stream_started.wait(), 10)
        fetched = await client.calls(call.call_sid).fetch_async()
        assert (fetched.sid, fetched.direction, fetched.status) == (
            call.call_sid, "inbound", "in-progress")
        assert (fetched._from, fetched.to) == (CALLER, AGENT_NUMBER)
        listed = await client.calls.list_async(limit=5)
        assert [c.sid for c in listed] == [call.call_sid]

        before = time.monotonic()
        updated = await client.calls(call.call_sid).update_async(status="completed")
        after = time.monotonic()
        assert updated.sid == call.call_sid
        result = await api.wait_for_call(call.call_sid, timeout=10)
        assert result is call.result
        fetched = await client.calls(call.call_sid).fetch_async()

    update = api.updates[0]
    assert (update.call_sid, update.params, update.http_status) == (
        call.call_sid, {"Status": "completed"}, 200)
    assert before <= update.at <= after
    # Twilio's side ends the stream: `stop`, then it closes the socket
    assert result.ended_by == "api" and result.closed_by == "phone"
    assert result.stop_sent_at is not None and update.at <= result.stop_sent_at
    await asyncio.wait_for(product.stream_ended.wait(), 5)
    assert product.frames[-1][1]["event"] == "stop"
    assert product.frames[-1][1]["stop"] == {"accountSid": ACCOUNT_SID,
                                             "callSid": call.call_sid}
    assert result.frames_sent < 20_000 // 20 // 2  # ended long before the script would
    assert result.final_status == "completed" and fetched.status == "completed"
    assert fetched.duration is not None and fetched.start_time is not None
    assert [(c.params["CallStatus"], c.signature_valid) for c in product.callbacks] == [
        ("completed", True)]


async def test_inbound_call_cannot_be_redirected_before_it_is_answered(
        product: FakeProduct) -> None:
    product.answer_gate = asyncio.Event()
    async with linked(product) as (api, phone), sdk(api) as client:
        call = phone.start_call(to=AGENT_NUMBER, from_=CALLER, script=LONG_LINE)
        await asyncio.wait_for(product.webhook_received.wait(), 10)
        ringing = await client.calls(call.call_sid).fetch_async()
        assert ringing.status == "ringing"
        with pytest.raises(TwilioRestException) as caught:
            await client.calls(call.call_sid).update_async(twiml=_dial_twiml(False))
        assert (caught.value.status, caught.value.code) == (400, 21220)
        product.answer_gate.set()
        await asyncio.wait_for(product.stream_started.wait(), 10)
        await client.calls(call.call_sid).update_async(status="completed")
        result = await api.wait_for_call(call.call_sid, timeout=10)
        with pytest.raises(TwilioRestException) as caught:
            await client.calls(call.call_sid).update_async(url=f"{product.url}/twilio/next")
        assert (caught.value.status, caught.value.code) == (400, 21220)
    assert [u.http_status for u in api.updates] == [400, 200, 400]
    assert result.twiml_updates == [] and result.dials == []


def test_a_phone_from_another_account_cannot_be_attached() -> None:
    api = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    other = SimulatedPhone(server_url="http://127.0.0.1:9", auth_token=AUTH_TOKEN,
                           account_sid="AC" + "4" * 32)
    with pytest.raises(ValueError):
        api.attach_phone(other)


# -- moving a live call to new TwiML ---------------------------------------------------------
@pytest.mark.parametrize("with_number_noun", [False, True], ids=["dial-text", "dial-number"])
async def test_twiml_update_ends_the_stream_and_dials(product: FakeProduct,
                                                      with_number_noun: bool) -> None:
    async with linked(product) as (api, phone), sdk(api) as client:
        call = phone.start_call(to=AGENT_NUMBER, from_=CALLER, script=LONG_LINE,
                                status_callback=f"{product.url}/twilio/status")
        await asyncio.wait_for(product.stream_started.wait(), 10)
        await client.calls(call.call_sid).update_async(twiml=_dial_twiml(with_number_noun))
        result = await api.wait_for_call(call.call_sid, timeout=10)

    await asyncio.wait_for(product.stream_ended.wait(), 5)
    assert product.frames[-1][1]["event"] == "stop"  # the stream got `stop`, then closed
    assert result.closed_by == "phone" and result.stop_sent_at is not None
    assert result.dial_numbers == [TRANSFER_TO]
    [dial] = result.dials
    assert dial.number == TRANSFER_TO and dial.ended_at is not None
    assert api.updates[0].at <= result.stop_sent_at <= dial.at <= dial.ended_at
    assert result.ended_at is not None and dial.ended_at <= result.ended_at
    [update] = result.twiml_updates
    assert (update.source, update.url, update.twiml) == ("api", None,
                                                         _dial_twiml(with_number_noun))
    assert result.ended_by == "server"  # the far end hung up and the TwiML ran out
    assert result.final_status == "completed" and result.application_error is None
    assert [c.params["CallStatus"] for c in product.callbacks] == ["completed"]


async def test_url_update_is_fetched_signed_and_runs(product: FakeProduct) -> None:
    response = VoiceResponse()
    response.say("Transferring you now")
    response.dial(TRANSFER_TO)
    product.next_twiml = str(response)
    async with linked(product) as (api, _), sdk(api) as client:
        created = await client.calls.create_async(
            to=CALLEE, from_=AGENT_NUMBER, url=f"{product.url}/twilio/voice",
            status_callback=f"{product.url}/twilio/status")
        await asyncio.wait_for(product.stream_started.wait(), 10)
        await client.calls(created.sid).update_async(url=f"{product.url}/twilio/next")
        result = await api.wait_for_call(created.sid or "", timeout=20)

    [fetch] = product.next_requests
    assert fetch.signature_valid
    assert {k: fetch.params[k] for k in ("CallSid", "CallStatus", "Direction", "To")} == {
        "CallSid": created.sid, "CallStatus": "in-progress", "Direction": "outbound-api",
        "To": CALLEE}
    assert result.twiml_updates[0].url == f"{product.url}/twilio/next"
    assert result.twiml_updates[0].twiml == product.next_twiml
    assert result.say_texts == ["Transferring you now"]
    assert result.stop_sent_at is not None and result.stop_sent_at <= fetch.at
    [dial] = result.dials
    said = speech.synthesize("Transferring you now", "en", "")
    assert (dial.at - fetch.at) * 1000 >= len(said) / 8  # the <Say> played first
    assert result.final_status == "completed"
    assert product.callbacks[-1].params["CallStatus"] == "completed"


async def test_completing_during_a_dial_ends_the_bridged_leg(product: FakeProduct) -> None:
    async with linked(product, dial_leg_ms=30_000, callee_scripts={CALLEE: LONG_LINE},
                      ) as (api, _), sdk(api) as client:
        created = await client.calls.create_async(
            to=CALLEE, from_=AGENT_NUMBER, url=f"{product.url}/twilio/voice")
        await asyncio.wait_for(product.stream_started.wait(), 10)
        sid = created.sid or ""
        await client.calls(sid).update_async(twiml=_dial_twiml(False))
        phone_call = api.calls[sid].phone_call
        assert phone_call is not None
        await wait_for(lambda: bool(phone_call.result.dials))
        await client.calls(sid).update_async(status="completed")
        result = await api.wait_for_call(sid, timeout=10)
    [dial] = result.dials
    assert dial.ended_at is not None and result.ended_by == "api"
    assert dial.ended_at - dial.at < 30  # cut short, well before the 30 s leg ended
    assert api.updates[-1].at <= dial.ended_at


# -- answering machines ------------------------------------------------------------------------
async def test_voicemail_is_left_after_the_beep_with_detect_message_end(
        product: FakeProduct) -> None:
    greeting = "Hi, you've reached Dana. Please leave a message after the tone."
    machine = CallScript.answering_machine(greeting)
    message = speech.voiced_tone(600)
    hung_up: list[float] = []

    async def leave_voicemail(fake: FakeProduct, stream_sid: str) -> None:
        await asyncio.wait_for(fake.amd_received.wait(), 30)  # silent until the verdict
        await fake.send_audio(stream_sid, message, "voicemail-done")
        await fake.wait_for_mark("voicemail-done")
        call_sid = fake.events("start")[0]["start"]["callSid"]
        async with sdk(api) as client:
            hung_up.append(time.monotonic())
            await client.calls(call_sid).update_async(status="completed")

    product.on_stream = leave_voicemail
    async with linked(product, callee_scripts={VOICEMAIL: machine},
                      answered_by={VOICEMAIL: "machine_end_beep"}) as (api, _):
        async with sdk(api) as client:
            created = await client.calls.create_async(
                to=VOICEMAIL, from_=AGENT_NUMBER, url=f"{product.url}/twilio/voice",
                machine_detection="DetectMessageEnd", async_amd="true",
                async_amd_status_callback=f"{product.url}/twilio/amd")
        sid = created.sid or ""
        result = await api.wait_for_call(sid, timeout=30)

    assert "AnsweredBy" not in product.webhooks[0].params  # async: not on the webhook
    [amd] = product.amd
    assert amd.signature_valid
    assert (amd.params["CallSid"], amd.params["AnsweredBy"]) == (sid, "machine_end_beep")
    assert result.beep_ended_at is not None and result.amd_callback_at is not None
    assert result.beep_ended_at <= result.amd_callback_at <= amd.at
    assert result.amd_answered_by == "machine_end_beep"
    # the verdict took the whole greeting and the beep: DetectMessageEnd
    assert int(amd.params["MachineDetectionDuration"]) == result.amd_detection_ms
    greeting_ms = len(speech.synthesize(greeting, "en", "")) / 8
    assert result.amd_detection_ms is not None
    assert result.amd_detection_ms >= greeting_ms + 400
    beep_step = next(r for r in result.script_log if r.step.startswith("Beep("))
    assert beep_step.ended_ms == result.beep_ended_at * 1000
    # no agent audio before the beep had ended; the voicemail after it, all played
    assert result.media_received and all(
        m.at >= result.beep_ended_at for m in result.media_received)
    assert result.played_ms == len(message) / 8
    assert result.ended_by == "api" and hung_up[0] <= (result.ended_at or 0)
    assert result.final_status == "completed"


@pytest.mark.parametrize(("mode", "configured", "script", "expected", "waits_for_beep"), [
    ("DetectMessageEnd", "human", CallScript.answering_machine(), "human", False),
    ("DetectMessageEnd", "machine_end_silence", CallScript([Silence(300), Beep(100),
                                                            Silence(20_000)]),
     "machine_end_silence", True),
    ("DetectMessageEnd", "machine_end_beep", LONG_LINE, "unknown", False),  # no beep: timeout
    ("Enable", "machine_end_beep", CallScript.answering_machine(), "machine_start", False),
], ids=["human", "end-silence", "no-beep-times-out", "enable-mode"])
async def test_async_amd_verdict_timing(product: FakeProduct, mode: str, configured: str,
                                        script: CallScript, expected: str,
                                        waits_for_beep: bool) -> None:
    async with linked(product, callee_scripts={VOICEMAIL: script}, amd_ms=100,
                      answered_by={VOICEMAIL: configured}) as (api, _), sdk(api) as client:
        created = await client.calls.create_async(
            to=VOICEMAIL, from_=AGENT_NUMBER, url=f"{product.url}/twilio/voice",
            machine_detection=mode, async_amd="true", machine_detection_timeout=1,
            async_amd_status_callback=f"{product.url}/twilio/amd")
        sid = created.sid or ""
        await asyncio.wait_for(product.amd_received.wait(), 10)
        fetched = await client.calls(sid).fetch_async()
        await client.calls(sid).update_async(status="completed")
        result: PhoneCallResult = await api.wait_for_call(sid, timeout=10)

    [amd] = product.amd
    assert amd.params["AnsweredBy"] == expected == result.amd_answered_by
    assert fetched.answered_by == expected
    duration_ms = int(amd.params["MachineDetectionDuration"])
    if waits_for_beep:
        assert result.beep_ended_at is not None and result.amd_callback_at is not None
        assert result.beep_ended_at <= result.amd_callback_at
        assert duration_ms >= 300 + 100
    elif expected == "unknown":
        assert duration_ms == 1000  # MachineDetectionTimeout, in ms
    else:
        assert duration_ms == 100  # amd_ms after the answer, long before the beep
        assert result.beep_ended_at is None
