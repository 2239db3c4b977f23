"""The greeting's critical path over real sockets: warm engine sessions (handed over,
missing, expired) and greetings pre-rendered by the engine and played from memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from hotline.business import BusinessConfig
from hotline.core.greeting import CACHED_GREETING_HEARD_ITEM, CACHED_GREETING_ITEM
from hotline.sim.engine import SimulatedSession
from hotline.sim.script import CallScript, Hangup, Say, WaitForAgentAudio, WaitForAgentSilence
from hotline.sim.twilio_requests import new_call_sid, send_twilio_request
from hotline.store.database import Store
from tests.factories import TEST_NUMBER, make_business
from tests.stack import ACCOUNT_SID, AUTH_TOKEN, Stack, running_stack
from tests.test_e2e_calls import (
    CALLER,
    LISTEN_THEN_HANG_UP,
    LONG_GREETING,
    _open_stream,
    _start,
    _webhook,
    record_of,
)

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets


def call_sessions(stack: Stack) -> list[SimulatedSession]:
    """The engine sessions of calls (not those that rendered greetings)."""
    return [s for s in stack.engine.sessions
            if any(r.type == "session.update" and "Acme" in str(r.event) for r in s.received)
            and not any(r.type == "response.create" and "word for word" in str(r.event)
                        for r in s.received)]


async def greeting_ready(stack: Stack, business: BusinessConfig) -> None:
    await stack.services.greetings.wait_ready([business], timeout_s=15)


async def test_warm_session_is_handed_over_one_connection_per_call(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
        assert result.played_ms > 0
        # The webhook's connection is the call's: none opened at `start` (on loopback with no
        # engine delay the stream may even start first; the call then waits for it).
        assert stack.engine.connections_attempted == 1 and len(stack.engine.sessions) == 1
        record = await record_of(stack, result.call_sid)
        assert ("engine_ready", "warm") in [(s.stage, s.detail) for s in record.timeline]
        # The live greeting was asked for by the warm session, once, not again at `start`.
        requested = [s.detail for s in record.timeline if s.stage == "greeting_requested"]
        assert len(requested) == 1 and requested[0].endswith("asked by the warm session")
        assert stack.engine.sessions[0].received_types().count("response.create") == 1
        assert stack.services.warm.count() == 0


async def test_missing_warm_session_falls_back_to_a_cold_connection(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        call_sid = new_call_sid()
        params = await _webhook(stack, call_sid)
        await stack.services.warm.discard(call_sid)  # as if the stream landed elsewhere
        async with _open_stream(stack) as ws:
            await ws.send(_start(call_sid, params))
            assert '"media"' in str(await asyncio.wait_for(ws.recv(), 10))
            await ws.send('{"event": "stop", "sequenceNumber": "2", "stop": {}}')
        record = await record_of(stack, call_sid)
        assert ("engine_ready", "cold") in [(s.stage, s.detail) for s in record.timeline]
        assert stack.engine.sessions[-1].received_types()[:2] == ["session.update",
                                                                   "response.create"]


async def test_unclaimed_warm_session_expires_and_failed_calls_close_theirs(
        database_url: str, tmp_path: Path) -> None:
    # On the compressed clock the engine streams more of the greeting into the unread
    # session than its client queues: its close must not wait behind it (the close timeout).
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             warm_session_ttl_s=0.5) as stack:
        await _webhook(stack, new_call_sid())  # Twilio never opens the stream
        session = await stack.engine.wait_for_session(0)
        await asyncio.wait_for(session.closed.wait(), 10)
        assert stack.services.warm.expired == 1 and stack.services.warm.count() == 0

        # A status callback saying the call failed closes its session at once.
        stack.services.warm._ttl_s = 300
        call_sid = new_call_sid()
        await _webhook(stack, call_sid)
        second = await stack.engine.wait_for_session(1)
        async with httpx.AsyncClient() as http:
            response = await send_twilio_request(
                http, f"{stack.server.url}/twilio/status",
                {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": "failed",
                 "From": CALLER, "To": TEST_NUMBER, "ApiVersion": "2010-04-01",
                 "Direction": "inbound"}, auth_token=AUTH_TOKEN)
        assert response.status_code == 204
        await asyncio.wait_for(second.closed.wait(), 10)
        assert stack.services.warm.count() == 0 and stack.services.warm.expired == 1


async def test_cached_greeting_plays_at_start_and_enters_the_conversation(
        database_url: str, tmp_path: Path) -> None:
    business = make_business()
    async with running_stack(database_url, tmp_path, [business]) as stack:
        await greeting_ready(stack, business)
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
        [session] = call_sessions(stack)
        assert "response.create" not in session.received_types()  # no engine on the path
        texts = {item.get("id"): str(item.get("content")) for item in session.conversation}
        assert business.greeting in texts[CACHED_GREETING_ITEM]
        # The full prompt from the start: the engine's first response is a real reply.
        first = next(r.event for r in session.received if r.type == "session.update")
        assert len(first["session"]["instructions"]) > 900  # type: ignore[index]
        rendered_ms = len(stack.services.greetings.frames(  # type: ignore[union-attr]
            stack.services.greetings.key(business.greeting, business.voice))) * 100
        assert result.played_ms >= rendered_ms - 100
        record = await record_of(stack, result.call_sid)
        stages = {s.stage: s.detail for s in record.timeline}
        assert stages["greeting_requested"].startswith("cached audio")
        assert stages["greeting_done"] == "cached audio played"
        assert "prompt_upgraded" not in stages
        assert record.transcript[0].text == business.greeting


async def test_barge_in_during_the_cached_greeting_keeps_only_what_was_heard(
        database_url: str, tmp_path: Path) -> None:
    business = make_business(greeting=LONG_GREETING)
    async with running_stack(database_url, tmp_path, [business]) as stack:
        await greeting_ready(stack, business)
        script = CallScript([WaitForAgentAudio(played_ms=1500, timeout_ms=20_000),
                             Say("Sorry, can I just ask something?"),
                             WaitForAgentSilence(quiet_ms=500), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        assert result.clears, "no clear reached the phone"
        [session] = call_sessions(stack)
        ids = [item.get("id") for item in session.conversation]
        assert CACHED_GREETING_ITEM not in ids and CACHED_GREETING_HEARD_ITEM in ids
        heard_item = next(i for i in session.conversation
                          if i.get("id") == CACHED_GREETING_HEARD_ITEM)
        heard_text = heard_item["content"][0]["text"].rstrip("—")
        assert LONG_GREETING.startswith(heard_text) and len(heard_text) < len(LONG_GREETING)
        total_ms = len(stack.services.greetings.frames(  # type: ignore[arg-type]
            stack.services.greetings.key(business.greeting, business.voice))) * 100
        heard_fraction = result.clears[0].played_ms_at_clear / total_ms
        assert abs(len(heard_text) / len(LONG_GREETING) - heard_fraction) < 0.2
        record = await record_of(stack, result.call_sid)
        assert record.transcript[0].interrupted


async def test_greeting_cache_follows_a_changed_greeting(database_url: str,
                                                         tmp_path: Path) -> None:
    business = make_business()
    async with running_stack(database_url, tmp_path, [business],
                             config_refresh_s=0.1) as stack:
        greetings = stack.services.greetings
        await greeting_ready(stack, business)
        old_key = greetings.key(business.greeting, business.voice)
        assert (tmp_path / "greetings" / f"{old_key}.ulaw").exists()
        changed = make_business(greeting="Acme Dental, good day! What can we do for you?")
        store = Store(database_url)
        await store.save_business(changed)
        await store.close()
        await greeting_ready(stack, changed)
        assert not greetings.has(old_key)
        assert not (tmp_path / "greetings" / f"{old_key}.ulaw").exists()
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
        record = await record_of(stack, result.call_sid)
        assert record.transcript[0].text == changed.greeting
