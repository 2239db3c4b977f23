"""Whole calls over real sockets: uvicorn, the simulated Twilio and the simulated engine.

These cover the live greeting path (greeting cache off, warm sessions on); the cached
greeting and the warm/cold paths have their own module, test_e2e_greeting.py.

Assertions are on what the simulators saw from outside (the phone's timings and what it
heard, the engine's received events), never on absolute durations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from hotline.business import BusinessConfig
from hotline.core.record import CallRecord
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.clock import REAL_TIME
from hotline.sim.engine import SimulatedSession
from hotline.sim.script import (
    CallScript,
    Hangup,
    Say,
    Silence,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from hotline.sim.twilio_requests import new_call_sid, send_twilio_request, twilio_signature
from tests.factories import TEST_NUMBER, make_business
from tests.services import reachable_redis_url
from tests.stack import ACCOUNT_SID, AUTH_TOKEN, Stack, running_stack

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

CALLER = "+15550001111"
LONG_GREETING = ("Hello and thank you for calling Acme Dental, the friendliest family dental "
                 "clinic in town. My name is Noa. How can I help you today?")
# 1.2 s of quiet (call time; 240 ms of wall time at 5x) ends the greeting: a loaded machine
# left gaps of a few hundred ms inside it, and a caller hanging up there cut it short.
LISTEN_THEN_HANG_UP = CallScript([WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000),
                                  Hangup()])


def two_businesses() -> list[BusinessConfig]:
    return [make_business(), make_business(
        slug="caller-first", name="Caller First Co", phone_numbers=("+15005550007",),
        bot_speaks_first=False, greeting="Caller First, hello.")]


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path, two_businesses(),
                             greeting_cache=False) as running:
        yield running


@pytest.fixture
async def real_time_stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """For checks of a few frames or ms: on compressed time they would be a few ms of wall
    clock, less than a loaded machine's scheduling jitter."""
    async with running_stack(database_url, tmp_path, two_businesses(), greeting_cache=False,
                             clock=REAL_TIME) as running:
        yield running


async def record_of(stack: Stack, call_sid: str) -> CallRecord:
    """The call's stored record, once the server has finished the call and written it."""
    return await stack.services.final_record(call_sid, timeout_s=20)


def received(session: SimulatedSession, type_: str) -> list[tuple[float, dict[str, object]]]:
    return [(r.at, r.event) for r in session.received if r.type == type_]


async def assert_nothing_leaked(stack: Stack) -> None:
    assert stack.services.active_calls == {}
    assert await stack.services.registry.count() == 0
    for session in stack.engine.sessions:
        await asyncio.wait_for(session.closed.wait(), 5)


async def test_inbound_bot_first_greets_upgrades_and_records(stack: Stack) -> None:
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)

    assert result.webhook_status == 200 and result.custom_parameters["token"]
    assert result.start_to_first_media_ms is not None and result.played_ms > 500
    session = await stack.engine.wait_for_session()
    assert len(stack.engine.sessions) == 1

    # Prompt upgrade: compact instructions before the greeting, the full prompt only after
    # the greeting's response.done.
    updates = received(session, "session.update")
    compact = updates[0][1]["session"]["instructions"]  # type: ignore[index]
    assert "Acme Dental" in compact and len(compact) <= 900
    [(greeting_at, _)] = received(session, "response.create")[:1]
    assert updates[0][0] <= greeting_at
    done_at = next(s.at for s in session.sent if s.type == "response.done")
    full_updates = [(at, e) for at, e in updates[1:]
                    if len(e["session"].get("instructions", "")) > 900]  # type: ignore[union-attr]
    assert len(full_updates) == 1 and full_updates[0][0] > done_at

    # The greeting went out compact, μ-law untouched: the phone heard the engine's bytes.
    assert session.config["audio"]["output"]["format"] == {"type": "audio/pcmu"}

    # No database access between the stream's start and its stop.
    assert result.start_sent_at is not None and result.stop_sent_at is not None
    assert stack.statements_between(result.start_sent_at, result.stop_sent_at) == []

    record = await record_of(stack, result.call_sid)
    assert record.direction == "inbound" and record.outcome == "completed"
    stages = [s.stage for s in record.timeline]
    for stage in ("webhook_received", "plan_ready", "twiml_sent", "stream_start",
                  "greeting_requested", "engine_connected", "engine_configured",
                  "first_audio_from_engine", "first_audio_to_caller", "greeting_done",
                  "prompt_upgraded"):
        assert stage in stages, stage
    agent_turns = [t for t in record.transcript if t.speaker == "agent"]
    assert agent_turns and "Acme Dental" in agent_turns[0].text
    await assert_nothing_leaked(stack)


async def test_inbound_caller_first_respects_the_warmup(real_time_stack: Stack) -> None:
    stack = real_time_stack
    script = CallScript([Say("Hello? Is this the caller first company?"),
                         WaitForAgentAudio(played_ms=300, timeout_ms=15_000),
                         WaitForAgentSilence(quiet_ms=500), Hangup()])
    result = await stack.phone.call(to="+15005550007", from_=CALLER, script=script)
    session = await stack.engine.wait_for_session()
    # The caller speaks first: the only response is the answer to their committed turn.
    [(asked_at, _)] = received(session, "response.create")
    committed_at = next(s.at for s in session.sent if s.type == "input_audio_buffer.committed")
    assert asked_at > committed_at
    appends = received(session, "input_audio_buffer.append")
    # 800 ms of pickup (40 frames of 20 ms) never reached the engine; the rest did.
    dropped = result.frames_sent - len(appends)
    assert 38 <= dropped <= 42, dropped
    assert result.played_ms > 0  # the agent answered the caller's turn
    record = await record_of(stack, result.call_sid)
    assert [t.speaker for t in record.transcript][:2] == ["caller", "agent"]
    assert "prompt_upgraded" in [s.stage for s in record.timeline]


async def test_outbound_call_greets_the_lead_by_name(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        response = await http.post("/api/calls", json={
            "business": "acme-dental", "to": "+15550002222", "template": "reminder",
            "variables": {"name": "Dana"}})
    assert response.status_code == 201, response.text
    call_sid = response.json()["call_sid"]
    result = await stack.twilio.wait_for_call(call_sid, timeout=30)
    assert result.played_ms > 0 and result.direction == "outbound-api"
    session = await stack.engine.wait_for_session()
    [(_, first_update)] = received(session, "session.update")[:1]
    assert "Dana" in first_update["session"]["instructions"]  # type: ignore[index]
    assert received(session, "response.create"), "outbound: the bot always speaks first"
    record = await record_of(stack, call_sid)
    assert record.direction == "outbound" and record.template_name == "reminder"
    assert record.variables == {"name": "Dana"}
    assert "Hi Dana" in record.transcript[0].text
    await assert_nothing_leaked(stack)


async def test_outbound_template_without_its_variable_is_refused(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        response = await http.post("/api/calls", json={
            "business": "acme-dental", "to": "+15550002222", "template": "reminder"})
    assert response.status_code == 422 and "name" in response.json()["detail"]
    assert stack.twilio.created == []


async def test_barge_in_clears_and_truncates_at_what_was_heard(
        database_url: str, tmp_path: Path) -> None:
    business = make_business(greeting=LONG_GREETING)
    # Real time: the 40 ms bound is on the call's clock, and compressed time would make it
    # a few ms of wall clock, less than a loaded machine's scheduling jitter.
    async with running_stack(database_url, tmp_path, [business], greeting_cache=False,
                             clock=REAL_TIME) as stack:
        script = CallScript([WaitForAgentAudio(played_ms=1500, timeout_ms=20_000),
                             Say("Sorry, can I just ask something?"),
                             WaitForAgentSilence(quiet_ms=500), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        session = await stack.engine.wait_for_session()
        assert result.clears, "no clear reached the phone"
        [truncation, *_] = session.truncations
        heard = result.clears[0].played_ms_at_clear  # the greeting is the call's first audio
        assert abs(truncation.audio_end_ms - heard) <= 40, (truncation, heard)
        assert truncation.audio_end_ms <= truncation.produced_ms
        assert session.errors_sent == []
        record = await record_of(stack, result.call_sid)
        greeting_turn = next(t for t in record.transcript if t.speaker == "agent")
        assert greeting_turn.interrupted
        assert "barge_in" in [s.stage for s in record.timeline]


async def test_forged_signature_is_refused(stack: Stack) -> None:
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP,
                                    forge_signature=True)
    assert result.webhook_status == 403
    assert result.stream_sid is None and stack.engine.connections_attempted == 0


async def test_unknown_number_gets_a_polite_goodbye(stack: Stack) -> None:
    result = await stack.phone.call(to="+15005550999", from_=CALLER, script=LISTEN_THEN_HANG_UP)
    assert result.webhook_status == 200 and result.hangup_verb
    assert result.say_texts and "not in service" in result.say_texts[0]


async def _webhook(stack: Stack, call_sid: str) -> dict[str, str]:
    """Post the voice webhook as Twilio would; return the stream's custom parameters."""
    async with httpx.AsyncClient() as http:
        response = await send_twilio_request(
            http, f"{stack.server.url}/twilio/voice",
            {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": CALLER, "To": TEST_NUMBER,
             "CallStatus": "ringing", "ApiVersion": "2010-04-01", "Direction": "inbound"},
            auth_token=AUTH_TOKEN)
    assert response.status_code == 200
    token = response.text.split('name="token" value="')[1].split('"')[0]
    return {"token": token}


def _start(call_sid: str, parameters: dict[str, str]) -> str:
    return orjson.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "5" * 32,
                         "start": {"accountSid": ACCOUNT_SID, "streamSid": "MZ" + "5" * 32,
                                   "callSid": call_sid, "tracks": ["inbound"],
                                   "customParameters": parameters,
                                   "mediaFormat": {"encoding": "audio/x-mulaw",
                                                   "sampleRate": 8000, "channels": 1}}}).decode()


def _media_url(stack: Stack) -> str:
    return stack.server.url.replace("http://", "ws://") + "/twilio/media"


def _open_stream(stack: Stack, *, signature: str | None = None) -> websockets.connect:
    """The media stream's upgrade, signed as Twilio signs it (a GET of the stream URL)."""
    if signature is None:
        signature = twilio_signature(AUTH_TOKEN, stack.server.settings.media_stream_url)
    return websockets.connect(_media_url(stack),
                              additional_headers={"X-Twilio-Signature": signature})


@pytest.mark.parametrize("signature", ["", "forged"])
async def test_unsigned_or_forged_stream_upgrade_is_refused(stack: Stack, signature: str) -> None:
    await _webhook(stack, new_call_sid())
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with _open_stream(stack, signature=signature):
            pass
    assert refused.value.response.status_code == 403  # refused at the handshake
    assert stack.services.active_calls == {}


async def test_bad_or_reused_token_closes_the_socket(stack: Stack) -> None:
    call_sid = new_call_sid()
    params = await _webhook(stack, call_sid)
    async with _open_stream(stack) as ws:
        await ws.send(_start(call_sid, {"token": "forged"}))
        await ws.wait_closed()
    assert ws.close_code == 1008
    # The right token still works after a wrong try; then it is spent.
    async with _open_stream(stack) as ws:
        await ws.send(_start(call_sid, params))
        await ws.recv()  # greeting audio: the call runs
        await ws.send(orjson.dumps({"event": "stop", "sequenceNumber": "2",
                                    "streamSid": "MZ" + "5" * 32, "stop": {}}).decode())
    async with _open_stream(stack) as ws:
        await ws.send(_start(call_sid, params))
        await ws.wait_closed()
    assert ws.close_code == 1008


async def test_malformed_media_messages_do_not_end_the_call(stack: Stack) -> None:
    call_sid = new_call_sid()
    params = await _webhook(stack, call_sid)
    async with _open_stream(stack) as ws:
        await ws.send(orjson.dumps({"event": "connected", "protocol": "Call",
                                    "version": "1.0.0"}).decode())
        await ws.send(_start(call_sid, params))
        for garbage in ["not json", "[1, 2]", '{"event": "media"}',
                        '{"event": "media", "media": {"payload": 5}}', b"\x00binary"]:
            await ws.send(garbage)
        await ws.send(orjson.dumps({"event": "media", "sequenceNumber": "3",
                                    "streamSid": "MZ" + "5" * 32,
                                    "media": {"track": "inbound", "chunk": "1",
                                              "timestamp": "20",
                                              "payload": "//////////8="}}).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["event"] == "media"  # the greeting still flows
        session = await stack.engine.wait_for_session()
        for _ in range(100):
            if received(session, "input_audio_buffer.append"):
                break
            await asyncio.sleep(0.02)
        assert [e["audio"] for _, e in received(session, "input_audio_buffer.append")] == [
            "//////////8="]
        await ws.send(orjson.dumps({"event": "stop", "sequenceNumber": "4",
                                    "streamSid": "MZ" + "5" * 32, "stop": {}}).decode())
    record = await record_of(stack, call_sid)
    assert record.outcome == "completed"


async def test_engine_dropping_mid_greeting_is_resumed_and_the_call_goes_on(
        stack: Stack) -> None:
    """(It used to end the call, `failed`; tests/test_e2e_engine_faults.py has the rest.)"""
    script = CallScript([WaitForAgentAudio(played_ms=300, timeout_ms=10_000),
                         Silence(6_000), Hangup()])
    call = stack.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=script)
    session = await stack.engine.wait_for_session()
    for _ in range(500):
        if any(s.type == "response.output_audio.delta" for s in session.sent):
            break
        await asyncio.sleep(0.02)
    await session.close()
    resumed = await stack.engine.wait_for_session(1)
    result: PhoneCallResult = await asyncio.wait_for(call.wait(), 20)
    assert result.closed_by == "phone"  # the caller hung up; the server kept the call
    assert any(s.type == "response.output_audio.delta" for s in resumed.sent)
    record = await record_of(stack, result.call_sid)
    assert record.outcome == "completed"
    stages = [s.stage for s in record.timeline]
    assert stages.index("engine_lost") < stages.index("engine_resumed")
    await assert_nothing_leaked(stack)


async def test_status_callbacks_are_recorded(stack: Stack) -> None:
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP,
                                    status_callback=f"{stack.server.url}/twilio/status")
    await stack.services.recorder.flush()
    statuses = [s for s, _ in await stack.services.store.call_statuses(result.call_sid)]
    assert statuses == ["completed"]


async def test_the_redis_registry_carries_the_call(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             redis_url=await reachable_redis_url(),
                             greeting_cache=False) as stack:
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=LISTEN_THEN_HANG_UP)
        assert result.played_ms > 0
        record = await record_of(stack, result.call_sid)
        assert record.outcome == "completed"
        await assert_nothing_leaked(stack)


async def test_caller_hanging_up_while_the_engine_connects_ends_the_call(
        database_url: str, tmp_path: Path) -> None:
    from hotline.sim.engine import LatencyProfile

    slow = LatencyProfile(connect_ms=60_000, session_update_ms=0, first_audio_base_ms=0,
                          first_audio_per_1000_chars_ms=0)
    async with running_stack(database_url, tmp_path, [make_business()], profile=slow,
                             greeting_cache=False, warm_sessions=False) as stack:
        script = CallScript([Silence(300), Hangup()])
        result = await asyncio.wait_for(
            stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script), 20)
        assert result.closed_by == "phone" and result.played_ms == 0
        record = await record_of(stack, result.call_sid)  # written although no engine came
        assert record.outcome == "completed"
        assert "engine_ready" not in [s.stage for s in record.timeline]
        await assert_nothing_leaked(stack)
