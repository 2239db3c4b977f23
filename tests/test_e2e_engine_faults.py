"""Engine faults over real sockets (uvicorn, the simulated phone, the simulated engine):
a session dropped mid-call with 1011 and resumed on a new one with the conversation
replayed, the hold line covering the reconnect; a handshake refused with 503 then retried;
an engine refused on every attempt.
Assertions are on what the simulators saw and the stored record, then on /metrics."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.canned import built_in_frames
from hotline.prompts import CannedLine, hold_text
from hotline.sim.engine import SimulatedSession
from hotline.sim.script import CallScript, Hangup, Say, Silence, WaitForAgentSilence
from tests.factories import TEST_NUMBER, make_business
from tests.stack import TEST_CLOCK, running_stack
from tests.test_e2e_calls import CALLER, LISTEN_THEN_HANG_UP, record_of
from tests.test_metrics import samples

pytestmark = pytest.mark.sockets

GREETING = "Hi, Acme Dental, how can I help?"
FIRST_ASK = "I would like to book a cleaning."
SECOND_ASK = "Is Tuesday at nine fine?"


def items_created(session: SimulatedSession) -> list[dict[str, Any]]:
    return [r.event["item"] for r in session.received if r.type == "conversation.item.create"]


def engine_metrics(text: str) -> dict[str, float]:
    scraped = samples(text)
    return {name: scraped[(f"hotline_engine_{name}_total", ())]
            for name in ("connects", "connect_failures", "drops", "resumes")}


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    return response.text


async def drop_during_the_first_reply(session: SimulatedSession) -> None:
    """Drop the session with 1011 once the reply to the caller's first turn is under way
    (its third audio chunk made)."""
    async with asyncio.timeout(30):
        await _until_the_reply_is_under_way(session)
    await session.close(1011)


# The caller waits this long after the agent's audio stops before speaking (call time): a
# loaded machine can leave a gap of a few hundred ms inside the greeting (at 5x, 400 ms of
# call time is 80 ms of wall time), and a caller speaking into it would cut the greeting.
QUIET_MS = 1200
LISTEN_TO_THE_END = CallScript([WaitForAgentSilence(quiet_ms=QUIET_MS, timeout_ms=20_000),
                                Hangup()])

async def _until_the_reply_is_under_way(session: SimulatedSession) -> None:
    while True:
        responses = [s.event["response"]["id"] for s in session.sent
                     if s.type == "response.created"]
        if len(responses) >= 2:
            chunks = [s for s in session.sent if s.type == "response.output_audio.delta"
                      and s.event["response_id"] == responses[1]]
            if len(chunks) >= 3:
                return
        await asyncio.sleep(0.002)


async def test_an_engine_drop_mid_call_is_resumed_with_the_conversation_replayed(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             engine_connect_budget_ms=10_000) as stack:
        stack.engine.caller_transcripts = [FIRST_ASK]
        script = CallScript([WaitForAgentSilence(quiet_ms=QUIET_MS), Say(FIRST_ASK),
                             Silence(ms=2500),  # the reply starts; the engine drops in it
                             Say(SECOND_ASK),  # said while the call reconnects: buffered
                             Silence(ms=4000),  # the reconnect, then the answer
                             WaitForAgentSilence(quiet_ms=600), Hangup()])
        call = stack.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=script)
        first = await stack.engine.wait_for_session(0)
        # The next session: a new transcript, and a slow connect (4 s of call time), so the
        # caller's second question is spoken while the call is between sessions.
        stack.engine.caller_transcripts = [SECOND_ASK]
        stack.engine.profile.connect_ms = 4000
        await drop_during_the_first_reply(first)
        result = await call.wait()
        record = await record_of(stack, result.call_sid)
        metrics = await scrape(stack.server.url)

    assert record.outcome == "completed"
    stages = [s.stage for s in record.timeline]
    assert stages.index("engine_lost") < stages.index("engine_resumed")
    lost = record.timeline[stages.index("engine_lost")]
    resumed = record.timeline[stages.index("engine_resumed")]
    assert "1011" in lost.detail and resumed.detail.startswith("gap ")
    assert resumed.ms - lost.ms >= 3000  # the modeled reconnect (4 s) is in the gap

    # The reply being said was cut at Twilio as for a barge-in, and recorded as interrupted.
    assert len(result.clears) >= 1
    agent_turns = [t for t in record.transcript if t.speaker == "agent"]
    assert agent_turns[0].text == GREETING and agent_turns[1].interrupted

    # The new session received the conversation so far as items, before the caller's audio.
    assert len(stack.engine.sessions) == 2
    second = stack.engine.sessions[1]
    # the full prompt from the start: the one the first session was upgraded to
    assert second.instructions_history[0][1] == first.instructions_history[-1][1]
    items = [{k: v for k, v in i.items() if k != "id"} for i in items_created(second)]
    assert items[0] == {"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": GREETING}]}
    assert items[1] == {"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": FIRST_ASK}]}
    types = second.received_types()
    first_append = types.index("input_audio_buffer.append")
    last_item = max(i for i, t in enumerate(types) if t == "conversation.item.create")
    assert last_item < first_append

    # Nothing the caller said was lost: every frame reached one session or the other.
    appended = sum(s.received_types().count("input_audio_buffer.append")
                   for s in stack.engine.sessions)
    assert appended >= result.frames_sent - 5

    # The caller's next turn was answered by the new session, with the context replayed.
    caller_turns = [t.text for t in record.transcript if t.speaker == "caller"]
    assert caller_turns == [FIRST_ASK, SECOND_ASK]
    last_caller = next(t for t in reversed(record.transcript) if t.speaker == "caller")
    assert any(t.speaker == "agent" and t.started_ms > last_caller.started_ms
               for t in record.transcript)
    roles = [i.get("role") for i in second.conversation if i["type"] == "message"]
    assert roles[:2] == ["assistant", "user"] and roles.count("user") >= 2

    assert engine_metrics(metrics) == {"connects": 2, "connect_failures": 0, "drops": 1,
                                       "resumes": 1}


async def test_a_refused_handshake_is_retried_and_the_call_goes_on(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        stack.engine.refuse_next(1)  # the warm session's handshake: HTTP 503
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=LISTEN_TO_THE_END)
        record = await record_of(stack, result.call_sid)
        metrics = await scrape(stack.server.url)
    assert stack.engine.handshakes_refused == 1 and len(stack.engine.sessions) == 1
    assert record.outcome == "completed"
    assert result.played_ms > 500  # the greeting was heard
    details = {s.stage: s.detail for s in record.timeline}
    assert "503" in details["engine_connect_failed"] and details["engine_ready"] == "cold"
    assert next(t.text for t in record.transcript if t.speaker == "agent") == GREETING
    assert engine_metrics(metrics) == {"connects": 1, "connect_failures": 1, "drops": 0,
                                       "resumes": 0}


async def test_an_engine_refused_on_every_attempt_is_unavailable(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        stack.engine.refuse_next(10)
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=LISTEN_THEN_HANG_UP)
        record = await record_of(stack, result.call_sid)
        metrics = await scrape(stack.server.url)
    assert stack.engine.handshakes_refused == 3  # the warm session, then two retries
    assert stack.engine.sessions == []
    assert record.outcome == "engine_unavailable"
    stages = [s.stage for s in record.timeline]
    assert stages.count("engine_connect_failed") == 3 and "engine_failed" in stages
    assert engine_metrics(metrics) == {"connects": 0, "connect_failures": 3, "drops": 0,
                                       "resumes": 0}


async def test_the_cached_greeting_plays_while_the_engine_connect_is_retried(
        database_url: str, tmp_path: Path) -> None:
    business = make_business()
    async with running_stack(database_url, tmp_path, [business]) as stack:
        await stack.services.greetings.wait_ready([business], timeout_s=15)
        stack.engine.refuse_next(2)  # the warm session and the first retry: 503
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=LISTEN_THEN_HANG_UP)
        record = await record_of(stack, result.call_sid)
    assert stack.engine.handshakes_refused == 2
    assert record.outcome == "completed" and result.played_ms > 500
    at = {s.stage: s.ms for s in record.timeline}
    details = {s.stage: s.detail for s in record.timeline}
    assert details["greeting_requested"].startswith("cached audio")
    # The greeting went out at `start`, before the engine was there (third attempt).
    assert at["first_audio_to_caller"] <= at["engine_ready"]
    assert [s.stage for s in record.timeline].count("engine_connect_failed") == 2


async def test_a_hanging_handshake_is_cut_at_the_connect_budget(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             warm_sessions=False, engine_connect_budget_ms=400) as stack:
        stack.engine.hold_next(5, seconds=30)  # every handshake hangs
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=LISTEN_THEN_HANG_UP)
        record = await record_of(stack, result.call_sid)
    assert stack.engine.handshakes_held == 1  # the budget went to the first: no retry
    assert record.outcome == "engine_unavailable"
    at = {s.stage: s.ms for s in record.timeline}
    details = {s.stage: s.detail for s in record.timeline}
    assert "no session within 400 ms" in details["engine_failed"]
    # cut near the budget: 400 ms of wall time, on the call's (compressed) clock
    waited_ms = (at["engine_failed"] - at["stream_start"]) / TEST_CLOCK.speed
    assert 300 < waited_ms < 3000


async def test_a_drop_mid_reply_plays_the_hold_line_then_the_resumed_reply(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             engine_connect_budget_ms=10_000) as stack:
        stack.engine.caller_transcripts = [FIRST_ASK]
        script = CallScript([WaitForAgentSilence(quiet_ms=QUIET_MS), Say(FIRST_ASK),
                             Silence(ms=6000),  # the reply, the drop, the hold line, the resume
                             WaitForAgentSilence(quiet_ms=600), Hangup()])
        call = stack.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=script)
        first = await stack.engine.wait_for_session(0)
        await drop_during_the_first_reply(first)
        result = await call.wait()
        record = await record_of(stack, result.call_sid)

    assert record.outcome == "completed" and len(stack.engine.sessions) == 2
    stages = [s.stage for s in record.timeline]
    assert stages.index("engine_lost") < stages.index("hold_line") < stages.index(
        "engine_resumed")
    assert record.timeline[stages.index("hold_line")].detail.startswith("built-in")

    # At the phone: the drop's clear, then at once the hold line (the built-in English
    # recording, byte for byte), then the resumed reply queued behind it, not over it.
    hold = b"".join(base64.b64decode(f) for f in built_in_frames(CannedLine.HOLD, "en"))
    hold_s = len(hold) / BYTES_PER_MS / 1000
    [clear] = result.clears
    after = [(start, audio) for start, audio in result.heard_segments if start >= clear.at]
    heard_after = b"".join(audio for _, audio in after)
    assert heard_after.startswith(hold), "the hold line is the first audio after the clear"
    hold_start = after[0][0]
    assert hold_start - clear.at < hold_s / 4  # no dead air worth the name before it
    in_hold = 0
    reply = []
    for start, audio in after:
        if in_hold < len(hold):
            in_hold += len(audio)
        else:
            reply.append((start, audio))
    assert reply, "the resumed reply followed the hold line"
    assert reply[0][0] >= hold_start + hold_s - 0.001  # after it, not over it
    assert sum(len(a) for _, a in reply) > 500 * BYTES_PER_MS
    # The second session made that reply; the hold line is no turn of the conversation.
    second_responses = [s for s in stack.engine.sessions[1].sent
                        if s.type == "response.output_audio.delta"]
    assert second_responses
    assert all("moment" not in t.text for t in record.transcript)


async def test_the_hold_line_rendered_in_the_business_voice_plays_once_cached(
        database_url: str, tmp_path: Path) -> None:
    business = make_business(language="he")
    async with running_stack(database_url, tmp_path, [business],
                             engine_connect_budget_ms=10_000) as stack:
        cache = stack.services.greetings
        key = cache.key(hold_text("he"), business.voice)
        await cache.wait_ready([business], timeout_s=15)
        async with asyncio.timeout(15):
            await _until(lambda: cache.has(key))
        rendered = cache.frames(key)
        assert rendered and rendered != built_in_frames(CannedLine.HOLD, "he")
        # The engine rendered the Hebrew hold line's words, in the business's voice, once.
        renders = [r for s in stack.engine.sessions for r in s.received
                   if r.type == "response.create" and hold_text("he") in str(r.event)]
        assert len(renders) == 1
        stack.engine.caller_transcripts = [FIRST_ASK]
        script = CallScript([WaitForAgentSilence(quiet_ms=QUIET_MS), Say(FIRST_ASK),
                             Silence(ms=6000), WaitForAgentSilence(quiet_ms=600), Hangup()])
        sessions_before = len(stack.engine.sessions)
        call = stack.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=script)
        session = await stack.engine.wait_for_session(sessions_before)
        async with asyncio.timeout(30):  # the cached greeting: the first response is the reply
            await _until(lambda: sum(1 for s in session.sent
                                     if s.type == "response.output_audio.delta") >= 3)
        await session.close(1011)
        result = await call.wait()
        record = await record_of(stack, result.call_sid)
    stages = [s.stage for s in record.timeline]
    assert record.outcome == "completed" and "engine_resumed" in stages
    assert record.timeline[stages.index("hold_line")].detail.startswith("rendered")
    heard = result.heard_mulaw()
    assert b"".join(base64.b64decode(f) for f in rendered) in heard
    assert base64.b64decode(built_in_frames(CannedLine.HOLD, "he")[1]) not in heard


async def _until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.002)


LONG_ASK = ("I would like to book a cleaning for my whole family next week, "
            "ideally in the morning before school starts, if you have the time.")


def _appended(session: SimulatedSession) -> list[str]:
    return [r.event["audio"] for r in session.received if r.type == "input_audio_buffer.append"]


def _voiced(payload_b64: str) -> bool:
    return any(b not in (0xFF, 0x7F) for b in base64.b64decode(payload_b64))


async def test_a_drop_while_the_caller_speaks_sends_their_turn_to_the_new_session(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             engine_connect_budget_ms=10_000) as stack:
        script = CallScript([WaitForAgentSilence(quiet_ms=400), Say(LONG_ASK),
                             Silence(ms=1500), WaitForAgentSilence(quiet_ms=600), Hangup()])
        call = stack.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=script)
        first = await stack.engine.wait_for_session(0)
        stack.engine.caller_transcripts = [LONG_ASK]  # what the new session hears

        async def _mid_sentence() -> None:  # the caller has spoken ~0.6 s of their turn
            while True:
                if sum(_voiced(a) for a in _appended(first)) >= 30:
                    return
                await asyncio.sleep(0.002)
        async with asyncio.timeout(30):
            await _mid_sentence()
        await first.close(1011)
        result = await call.wait()
        record = await record_of(stack, result.call_sid)

    sent_before = _appended(first)
    spoke_from = next(i for i, a in enumerate(sent_before) if _voiced(a))
    said_before_drop = sent_before[spoke_from:]  # the phone's frames since it began to speak
    assert len(said_before_drop) >= 30
    second = stack.engine.sessions[1]
    received = _appended(second)
    assert len(received) >= len(said_before_drop)
    # They reached the new session first (after the replayed items), in order, whole.
    start = received.index(said_before_drop[0])
    assert start <= 40  # at most the short lead of quiet frames before them
    assert received[start:start + len(said_before_drop)] == said_before_drop
    types = second.received_types()
    last_item = max(i for i, t in enumerate(types) if t == "conversation.item.create")
    assert last_item < types.index("input_audio_buffer.append")

    # The call goes on: the new session made the whole sentence a turn, and answered it.
    assert record.outcome == "completed"
    caller_turns = [t for t in record.transcript if t.speaker == "caller"]
    assert [t.text for t in caller_turns] == [LONG_ASK]
    assert any(t.speaker == "agent" and t.started_ms > caller_turns[0].started_ms
               for t in record.transcript)
    resumed = next(s for s in record.timeline if s.stage == "engine_resumed")
    assert "caller frames sent again" in resumed.detail
