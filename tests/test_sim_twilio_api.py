"""The simulated Twilio REST API, driven by the official twilio SDK (sync and async).

A tiny product runs inside each test (Starlette under uvicorn, ephemeral port): the voice
webhook and status callback endpoint check signatures with the SDK's RequestValidator, and
the media stream sends a short greeting and records what the callee's phone sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
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
from hotline.sim.script import CallScript, Hangup, Say, Silence, WaitForAgentSilence
from hotline.sim.twilio_api import TwilioApiSimulator
from tests.twilio_fakes import Seen, seen_request

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "api-sim-token-fedcba9876543210"
AGENT_NUMBER = "+15557770000"
CALLEE = "+15557770001"
BUSY_CALLEE = "+15557770002"
LONG_CALLEE = "+15557770003"
SID_RE = re.compile(r"^CA[0-9a-f]{32}$")
RFC2822_RE = re.compile(r"^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$")
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


class FakeProduct:
    """Voice webhook, status callbacks and a media stream that greets with 300 ms of audio."""

    def __init__(self) -> None:
        self.url = ""
        self.webhooks: list[Seen] = []
        self.callbacks: list[Seen] = []
        self.amd: list[Seen] = []
        self.stream_frames: list[dict[str, Any]] = []
        self.stream_started = asyncio.Event()
        self.stream_ended = asyncio.Event()
        self.validator = RequestValidator(AUTH_TOKEN)
        self.app = Starlette(routes=[
            Route("/twilio/voice", self._voice, methods=["POST"]),
            Route("/twilio/status", self._status, methods=["POST"]),
            Route("/twilio/amd", self._amd, methods=["POST"]),
            WebSocketRoute("/media", self._media),
        ])

    async def _seen(self, request: Request) -> Seen:
        return await seen_request(request, self.validator)

    async def _voice(self, request: Request) -> Response:
        self.webhooks.append(await self._seen(request))
        response = VoiceResponse()
        response.connect().stream(url=self.url.replace("http://", "ws://") + "/media")
        return Response(str(response), media_type="application/xml")

    async def _status(self, request: Request) -> Response:
        self.callbacks.append(await self._seen(request))
        return Response(status_code=204)

    async def _amd(self, request: Request) -> Response:
        self.amd.append(await self._seen(request))
        return Response(status_code=204)

    async def _media(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            for _ in range(2):
                self.stream_frames.append(json.loads(await ws.receive_text()))
            stream_sid = self.stream_frames[-1]["streamSid"]
            self.stream_started.set()
            await ws.send_text(json.dumps({"event": "media", "streamSid": stream_sid, "media": {
                "payload": base64.b64encode(speech.voiced_tone(300)).decode()}}))
            while True:
                self.stream_frames.append(json.loads(await ws.receive_text()))
        except WebSocketDisconnect:
            pass
        finally:
            self.stream_ended.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [frame for frame in self.stream_frames if frame["event"] == name]


@pytest.fixture
async def product() -> AsyncIterator[FakeProduct]:
    fake = FakeProduct()
    async with LocalServer(fake.app) as fake.url:
        yield fake


@pytest.fixture
async def sim() -> AsyncIterator[TwilioApiSimulator]:
    quick = CallScript([Say("Hello?"), WaitForAgentSilence(quiet_ms=200, timeout_ms=5000),
                        Hangup()])
    api = TwilioApiSimulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, ring_ms=100,
        callee_scripts={CALLEE: quick, LONG_CALLEE: CallScript([Silence(20_000)])},
        outcomes={BUSY_CALLEE: "busy"})
    async with api:
        yield api


def _sync_client(sim: TwilioApiSimulator, token: str = AUTH_TOKEN) -> Client:
    client = Client(ACCOUNT_SID, token)
    client.api.base_url = sim.url
    return client


def _by_sequence(callbacks: list[Seen]) -> list[Seen]:
    return sorted(callbacks, key=lambda seen: int(seen.params["SequenceNumber"]))


async def test_sync_sdk_places_a_call_the_callee_answers(sim: TwilioApiSimulator,
                                                         product: FakeProduct) -> None:
    client = _sync_client(sim)
    call = await asyncio.to_thread(
        client.calls.create, to=CALLEE, from_=AGENT_NUMBER, url=f"{product.url}/twilio/voice",
        status_callback=f"{product.url}/twilio/status", status_callback_event=ALL_EVENTS,
        timeout=20)
    assert SID_RE.match(call.sid or "")
    assert (call.status, call.direction, call.to, call._from) == (
        "queued", "outbound-api", CALLEE, AGENT_NUMBER)
    assert call.account_sid == ACCOUNT_SID and call.date_created is not None
    assert call.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"

    result = await sim.wait_for_call(call.sid or "", timeout=20)

    created = sim.created[0]
    assert created["StatusCallbackEvent"] == ALL_EVENTS and created["Timeout"] == "20"
    webhook = product.webhooks[0]
    assert webhook.signature_valid
    assert {k: webhook.params[k] for k in ("CallSid", "AccountSid", "From", "To", "CallStatus",
                                          "Direction", "ApiVersion")} == {
        "CallSid": call.sid, "AccountSid": ACCOUNT_SID, "From": AGENT_NUMBER, "To": CALLEE,
        "CallStatus": "in-progress", "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
    assert product.events("start")[0]["start"]["callSid"] == call.sid
    assert result.played_ms == 300.0 and result.closed_by == "phone"
    assert result.final_status == "completed"

    callbacks = product.callbacks
    assert callbacks == _by_sequence(callbacks)  # arrived in order
    assert [c.params["SequenceNumber"] for c in callbacks] == ["0", "1", "2", "3"]
    assert [c.params["CallStatus"] for c in callbacks] == [
        "initiated", "ringing", "in-progress", "completed"]
    assert all(c.signature_valid for c in callbacks)
    for seen in callbacks:
        assert seen.params["CallSid"] == call.sid
        assert seen.params["CallbackSource"] == "call-progress-events"
        assert RFC2822_RE.match(seen.params["Timestamp"])
        assert ("CallDuration" in seen.params) == (seen.params["CallStatus"] == "completed")
    assert callbacks[-1].params["CallDuration"].isdigit()
    assert callbacks[2].at <= product.webhooks[0].at + 1  # answered around the Url fetch
    assert [(r.event, r.http_status) for r in result.status_callbacks] == [
        (event, 204) for event in ALL_EVENTS]

    fetched = await asyncio.to_thread(client.calls(call.sid or "").fetch)
    assert fetched.status == "completed"
    assert fetched.duration is not None and fetched.start_time is not None
    listed = await asyncio.to_thread(client.calls.list, limit=5)
    assert [c.sid for c in listed] == [call.sid]


async def test_async_sdk_update_to_completed_hangs_up(sim: TwilioApiSimulator,
                                                      product: FakeProduct) -> None:
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
    client.api.base_url = sim.url
    try:
        call = await client.calls.create_async(
            to=LONG_CALLEE, from_=AGENT_NUMBER, url=f"{product.url}/twilio/voice",
            status_callback=f"{product.url}/twilio/status")
        assert call.status == "queued"
        await asyncio.wait_for(product.stream_started.wait(), 10)
        updated = await client.calls(call.sid or "").update_async(status="completed")
        assert updated.sid == call.sid
        result = await sim.wait_for_call(call.sid or "", timeout=10)
    finally:
        await client.http_client.close()

    assert [(u.call_sid, u.params, u.http_status) for u in sim.updates] == [
        (call.sid, {"Status": "completed"}, 200)]
    assert result.ended_by == "api"
    assert result.closed_by == "phone" and result.stop_sent_at is not None
    await asyncio.wait_for(product.stream_ended.wait(), 5)
    stop = product.events("stop")
    assert stop and stop[0]["stop"] == {"accountSid": ACCOUNT_SID, "callSid": call.sid}
    assert result.frames_sent < 20_000 // 20 // 2  # hung up long before the script ended
    # only `completed` was requested (the default)
    assert [c.params["CallStatus"] for c in product.callbacks] == ["completed"]
    assert product.callbacks[0].params["SequenceNumber"] == "0"
    assert product.callbacks[0].signature_valid


async def test_bad_credentials_get_twilio_401(sim: TwilioApiSimulator) -> None:
    client = _sync_client(sim, token="wrong")
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls.create, to=CALLEE, from_=AGENT_NUMBER,
                                url="http://127.0.0.1:9/voice")
    assert caught.value.status == 401 and caught.value.code == 20003
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sim.url}/2010-04-01/Accounts/{'AC' + '9' * 32}/Calls.json",
            auth=(ACCOUNT_SID, AUTH_TOKEN), data={"To": CALLEE})
    assert response.status_code == 401
    assert response.json() == {"code": 20003, "message": "Authenticate",
                               "more_info": "https://www.twilio.com/docs/errors/20003",
                               "status": 401}
    assert sim.calls == {}


@pytest.mark.parametrize(("data", "code"), [
    ({"From": AGENT_NUMBER, "Url": "http://x.test/v"}, 21201),
    ({"To": CALLEE, "Url": "http://x.test/v"}, 21213),
    ({"To": CALLEE, "From": AGENT_NUMBER}, 21205),
])
async def test_missing_parameters_get_twilio_400(sim: TwilioApiSimulator,
                                                 data: dict[str, str], code: int) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{sim.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
                                   auth=(ACCOUNT_SID, AUTH_TOKEN), data=data)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code and body["status"] == 400 and body["message"]
    assert sim.created == [data] and sim.calls == {}


async def test_sdk_sees_missing_to_and_unknown_calls_as_errors(sim: TwilioApiSimulator) -> None:
    client = _sync_client(sim)
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls.create, to="", from_=AGENT_NUMBER,
                                url="http://x.test/v")
    assert (caught.value.status, caught.value.code) == (400, 21201)
    unknown = "CA" + "0" * 32
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls(unknown).fetch)
    assert (caught.value.status, caught.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls(unknown).update, status="completed")
    assert (caught.value.status, caught.value.code) == (404, 20404)


async def test_busy_number_never_answers(sim: TwilioApiSimulator, product: FakeProduct) -> None:
    client = _sync_client(sim)
    call = await asyncio.to_thread(
        client.calls.create, to=BUSY_CALLEE, from_=AGENT_NUMBER,
        url=f"{product.url}/twilio/voice", status_callback=f"{product.url}/twilio/status",
        status_callback_event=ALL_EVENTS)
    result = await sim.wait_for_call(call.sid or "", timeout=10)
    assert product.webhooks == []
    assert result.final_status == "busy" and result.webhook_url is None
    assert [c.params["CallStatus"] for c in product.callbacks] == [
        "initiated", "ringing", "busy"]
    assert product.callbacks[-1].params["CallDuration"] == "0"
    fetched = await asyncio.to_thread(client.calls(call.sid or "").fetch)
    assert fetched.status == "busy"


async def test_inline_twiml_application_sid_and_machine_detection(sim: TwilioApiSimulator,
                                                  product: FakeProduct) -> None:
    client = _sync_client(sim)
    twiml = "<Response><Say>Hi</Say><Hangup/></Response>"
    inline = await asyncio.to_thread(client.calls.create, to=CALLEE, from_=AGENT_NUMBER,
                                     twiml=twiml)
    result = await sim.wait_for_call(inline.sid or "", timeout=10)
    assert result.twiml == twiml and result.say_texts == ["Hi"] and result.hangup_verb
    assert result.webhook_url is None and product.webhooks == []

    application_sid = "AP" + "3" * 32
    sim.application_urls[application_sid] = f"{product.url}/twilio/voice"
    detected = await asyncio.to_thread(
        client.calls.create, to=CALLEE, from_=AGENT_NUMBER, application_sid=application_sid,
        machine_detection="Enable")
    await sim.wait_for_call(detected.sid or "", timeout=10)
    assert product.webhooks[0].params["AnsweredBy"] == "human"
    assert product.webhooks[0].params["CallSid"] == detected.sid
    assert product.webhooks[0].signature_valid


async def test_async_amd_posts_the_verdict_separately(product: FakeProduct) -> None:
    api = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, ring_ms=50,
                             amd_ms=100, answered_by={CALLEE: "machine_start"},
                             callee_scripts={CALLEE: CallScript([Silence(400)])})
    async with api:
        client = _sync_client(api)
        call = await asyncio.to_thread(
            client.calls.create, to=CALLEE, from_=AGENT_NUMBER,
            url=f"{product.url}/twilio/voice", machine_detection="Enable", async_amd="true",
            async_amd_status_callback=f"{product.url}/twilio/amd")
        await api.wait_for_call(call.sid or "", timeout=10)
    assert "AnsweredBy" not in product.webhooks[0].params
    assert product.amd[0].signature_valid
    assert product.amd[0].params["AnsweredBy"] == "machine_start"
    assert product.amd[0].params["CallSid"] == call.sid


async def test_redirect_updates_are_recorded_and_refused_after_the_end(
        sim: TwilioApiSimulator, product: FakeProduct) -> None:
    client = _sync_client(sim)
    call = await asyncio.to_thread(client.calls.create, to=LONG_CALLEE, from_=AGENT_NUMBER,
                                   url=f"{product.url}/twilio/voice")
    sid = call.sid or ""
    await asyncio.wait_for(product.stream_started.wait(), 10)
    await asyncio.to_thread(client.calls(sid).update, twiml="<Response><Hangup/></Response>")
    update = sim.updates[-1]
    assert (update.call_sid, update.params) == (sid, {"Twiml": "<Response><Hangup/></Response>"})
    await asyncio.to_thread(client.calls(sid).update, status="completed")
    await sim.wait_for_call(sid, timeout=10)
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.calls(sid).update, url="http://x.test/next")
    assert (caught.value.status, caught.value.code) == (400, 21220)


async def test_cancel_while_ringing(product: FakeProduct) -> None:
    api = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, ring_ms=5000)
    async with api:
        client = _sync_client(api)
        call = await asyncio.to_thread(
            client.calls.create, to=CALLEE, from_=AGENT_NUMBER,
            url=f"{product.url}/twilio/voice", status_callback=f"{product.url}/twilio/status")
        await asyncio.to_thread(client.calls(call.sid or "").update, status="canceled")
        result = await api.wait_for_call(call.sid or "", timeout=3)
    assert result.final_status == "canceled" and product.webhooks == []
    assert [c.params["CallStatus"] for c in product.callbacks] == ["canceled"]
