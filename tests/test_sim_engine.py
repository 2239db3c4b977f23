"""The Realtime GA engine simulator, driven through real sockets by the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hotline.audio import mulaw
from hotline.business_yaml import load_businesses_yaml
from hotline.demo import demo_businesses_path
from hotline.prompts import (
    GOODBYE_INSTRUCTIONS,
    GREETING_MARKER,
    HANDOVER_INSTRUCTIONS,
    NUDGE_INSTRUCTIONS,
    SILENCE_GOODBYE_INSTRUCTIONS,
    TIME_LIMIT_INSTRUCTIONS,
    full_prompt,
    say_exactly,
)
from hotline.sim import speech
from hotline.sim.engine import (
    EngineSimulator,
    LatencyProfile,
    ScriptedToolCall,
    SimulatedSession,
)
from hotline.sim.engine_lines import Intent, line_for
from hotline.sim.engine_replies import DEFAULT_REPLIES_HE, mostly_hebrew
from hotline.sim.engine_vad import EnergyVad, VadSpeechStarted, VadSpeechStopped, rms_threshold

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

KEY = "sk-test-engine-sim"
FAST = LatencyProfile(connect_ms=0, session_update_ms=0, first_audio_base_ms=0,
                      first_audio_per_1000_chars_ms=0, realtime_factor=0)
PCMU_SESSION: dict[str, Any] = {
    "type": "realtime",
    "instructions": "You are a concise phone agent.",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"},
                  "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                     "prefix_padding_ms": 300, "silence_duration_ms": 500},
                  "transcription": {"model": "gpt-4o-mini-transcribe"}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}
REPLY = "Thanks for calling, how can I help?"
# One spoken answer, with the deltas collapsed (protocols.md 3.4).
ANSWER_ORDER = [
    "response.created", "response.output_item.added", "conversation.item.added",
    "response.content_part.added", "response.output_audio.delta",
    "response.output_audio.done", "response.output_audio_transcript.done",
    "response.content_part.done", "response.output_item.done", "conversation.item.done",
    "response.done", "rate_limits.updated",
]
DELTAS = ("response.output_audio.delta", "response.output_audio_transcript.delta")

Event = Any  # SDK events are parsed leniently; dispatch on .type


def with_turn_detection(turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    audio = PCMU_SESSION["audio"]
    return {**PCMU_SESSION, "audio": {
        "input": {**audio["input"], "turn_detection": turn_detection},
        "output": audio["output"]}}


def fast_profile(**changes: Any) -> LatencyProfile:
    profile = LatencyProfile(**vars(FAST))
    for name, value in changes.items():
        setattr(profile, name, value)
    return profile


@asynccontextmanager
async def running(profile: LatencyProfile | None = None,
                  **options: Any) -> AsyncIterator[EngineSimulator]:
    simulator = EngineSimulator(profile or fast_profile(), api_key=KEY, **options)
    async with simulator:
        yield simulator


@asynccontextmanager
async def engine(simulator: EngineSimulator, session: dict[str, Any] | None = PCMU_SESSION,
                 ) -> AsyncIterator[AsyncRealtimeConnection]:
    """An SDK connection, past session.created (and session.updated when `session` given)."""
    client = AsyncOpenAI(api_key=KEY, websocket_base_url=simulator.url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await recv(conn)).type == "session.created"
        if session is not None:
            await conn.session.update(session=session)
            assert (await recv(conn)).type == "session.updated"
        yield conn


async def recv(conn: AsyncRealtimeConnection) -> Event:
    async with asyncio.timeout(10):
        return await conn.recv()


async def until(conn: AsyncRealtimeConnection, last_type: str) -> list[Event]:
    """Events up to and including the first of `last_type`."""
    events: list[Event] = []
    async with asyncio.timeout(10):
        while True:
            event = await conn.recv()
            events.append(event)
            if event.type == last_type:
                return events


def collapsed(events: list[Event]) -> list[str]:
    types: list[str] = []
    for event in events:
        kind = "response.output_audio.delta" if event.type in DELTAS else event.type
        if not (types and types[-1] == kind == "response.output_audio.delta"):
            types.append(kind)
    return types


def audio_of(events: list[Event]) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in events
                    if e.type == "response.output_audio.delta")


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


async def append_audio(conn: AsyncRealtimeConnection, audio: bytes) -> None:
    for offset in range(0, len(audio), mulaw.FRAME_BYTES):
        await conn.input_audio_buffer.append(
            audio=base64.b64encode(audio[offset:offset + mulaw.FRAME_BYTES]).decode())


async def barrier(conn: AsyncRealtimeConnection) -> list[Event]:
    """Everything the engine sent before it handled a buffer clear sent now."""
    await conn.input_audio_buffer.clear()
    return await until(conn, "input_audio_buffer.cleared")


# ------------------------------------------------------------------------ session config


async def test_session_created_then_updated_reflects_update() -> None:
    async with running() as sim:
        client = AsyncOpenAI(api_key=KEY, websocket_base_url=sim.url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            created = await recv(conn)
            assert created.type == "session.created"
            assert created.session.type == "realtime"
            assert created.session.model == "gpt-realtime"
            await conn.session.update(session=PCMU_SESSION)
            updated = await recv(conn)
        session = sim.sessions[0]
    assert updated.type == "session.updated"
    assert updated.session.instructions == PCMU_SESSION["instructions"]
    assert updated.session.audio.output.voice == "marin"
    assert updated.session.audio.output.format.type == "audio/pcmu"
    assert updated.session.audio.input.format.type == "audio/pcmu"
    vad = updated.session.audio.input.turn_detection
    assert (vad.type, vad.threshold, vad.silence_duration_ms) == ("server_vad", 0.5, 500)
    assert vad.create_response is True and vad.interrupt_response is True
    assert updated.session.audio.input.transcription.model == "gpt-4o-mini-transcribe"
    assert session.model == "gpt-realtime"
    assert session.received_types() == ["session.update"]
    assert [text for _, text in session.instructions_history] == [PCMU_SESSION["instructions"]]
    event_ids = [s.event["event_id"] for s in session.sent]
    assert len(event_ids) == len(set(event_ids)) == 2


async def test_session_update_rejects_beta_and_unsupported_shapes() -> None:
    async with running() as sim, engine(sim, session=None) as conn:
        await conn.session.update(session={"type": "realtime", "voice": "alloy"})
        beta_voice = await recv(conn)
        await conn.send({"type": "session.update", "session": {"instructions": "x"}})
        no_type = await recv(conn)
        await conn.session.update(session={
            "type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm",
                                                                "rate": 24000}}}})
        pcm = await recv(conn)
        await conn.send({"type": "session.update",
                         "session": {"type": "realtime", "modalities": ["audio", "text"]}})
        modalities = await recv(conn)
        await conn.session.update(session={"type": "realtime", "instructions": "still fine"})
        ok = await recv(conn)
    assert (beta_voice.type, beta_voice.error.param) == ("error", "session.voice")
    assert beta_voice.error.type == "invalid_request_error"
    assert "session.audio.output.voice" in beta_voice.error.message
    assert (no_type.error.code, no_type.error.param) == ("missing_required_parameter",
                                                         "session.type")
    assert "unsupported in simulator" in pcm.error.message
    assert modalities.error.param == "session.modalities"
    assert ok.type == "session.updated" and ok.session.instructions == "still fine"


async def test_session_update_delay_is_applied_before_the_next_event() -> None:
    profile = fast_profile(session_update_ms=150)
    greeting = "Shalom and welcome to the bakery."
    async with running(profile) as sim, engine(sim, session=None) as conn:
        await conn.session.update(session={
            **PCMU_SESSION, "instructions": f'Be brief.\n{GREETING_MARKER} "{greeting}"'})
        await conn.response.create()
        events = await until(conn, "response.done")
    assert [e.type for e in events][:2] == ["session.updated", "response.created"]
    assert of_type(events, "response.output_audio_transcript.done")[0].transcript == greeting


# ------------------------------------------------------------------------ responses


async def test_response_create_yields_the_full_sequence_with_decodable_audio() -> None:
    async with running(replies=[REPLY]) as sim, engine(sim) as conn:
        await conn.response.create()
        events = await until(conn, "rate_limits.updated")
        session = sim.sessions[0]
    assert collapsed(events) == ANSWER_ORDER
    audio = audio_of(events)
    assert audio == speech.synthesize(REPLY, "en", "marin")
    assert len(of_type(events, "response.output_audio.delta")) == -(-len(audio) // 800)
    assert "".join(e.delta for e in of_type(events, "response.output_audio_transcript.delta")
                   ) == REPLY
    done = events[-2]
    assert done.response.status == "completed"
    assert done.response.usage.output_tokens > 0
    item_id = events[1].item.id
    assert {e.item_id for e in of_type(events, "response.output_audio.delta")} == {item_id}
    assert {e.response_id for e in of_type(events, "response.output_audio.delta")} == {
        events[0].response.id}
    assert session.conversation[-1]["id"] == item_id
    assert session.conversation[-1]["content"] == [{"type": "output_audio",
                                                    "transcript": REPLY}]


async def test_greeting_marker_is_said_first_then_replies() -> None:
    greeting = 'Hi, this is Noa from "Green Leaf". How can I help?'
    instructions = f'You answer calls.\n{GREETING_MARKER} "{greeting}"'
    async with running(replies=[REPLY]) as sim, engine(
            sim, {**PCMU_SESSION, "instructions": instructions}) as conn:
        transcripts = []
        for _ in range(2):
            await conn.response.create()
            events = await until(conn, "response.done")
            transcripts.append(
                of_type(events, "response.output_audio_transcript.done")[0].transcript)
    assert transcripts == [greeting, REPLY]


@pytest.mark.parametrize("instructions", ["את נציגת שירות של מאפייה. דברי בעברית.",
                                          "You answer a bakery's calls.\nAlways speak Hebrew."])
async def test_hebrew_instructions_get_hebrew_canned_replies(instructions: str) -> None:
    async with running() as sim, engine(sim, {**PCMU_SESSION, "instructions": instructions}
                                        ) as conn:
        await conn.response.create()
        events = await until(conn, "response.done")
    assert of_type(events, "response.output_audio_transcript.done")[0].transcript in (
        DEFAULT_REPLIES_HE)


async def test_response_instructions_out_of_band_are_not_said_aloud() -> None:
    async with running() as sim, engine(sim) as conn:
        await conn.response.create(response={"instructions": "Please hold on.",
                                             "conversation": "none",
                                             "metadata": {"purpose": "hold"}})
        events = await until(conn, "response.done")
        session = sim.sessions[0]
    assert of_type(events, "response.output_audio_transcript.done")[0].transcript == (
        line_for(Intent.GENERIC, "en"))
    assert not of_type(events, "conversation.item.added")
    assert events[-1].response.metadata == {"purpose": "hold"}
    assert session.conversation == []


def phrases(text: str, words: int = 5) -> set[tuple[str, ...]]:
    """Every run of `words` consecutive words, lowercased and without punctuation."""
    tokens = re.findall(r"[^\W_]+", text.lower())
    return {tuple(tokens[i:i + words]) for i in range(len(tokens) - words + 1)}


CLOSING_INSTRUCTIONS = {
    HANDOVER_INSTRUCTIONS: Intent.HANDOVER,
    GOODBYE_INSTRUCTIONS: Intent.GOODBYE,
    NUDGE_INSTRUCTIONS: Intent.NUDGE,
    SILENCE_GOODBYE_INSTRUCTIONS: Intent.SILENCE_GOODBYE,
    TIME_LIMIT_INSTRUCTIONS: Intent.TIME_LIMIT,
}
DEMO_BUSINESSES = {b.language: b for b in load_businesses_yaml(demo_businesses_path())}


@pytest.mark.parametrize("language", ["en", "he"])
@pytest.mark.parametrize("instructions", list(CLOSING_INSTRUCTIONS))
async def test_closing_instructions_get_a_line_in_the_session_language(
        instructions: str, language: str) -> None:
    """The call core's closing requests are answered with a plausible line, not read out."""
    session = {**PCMU_SESSION, "instructions": full_prompt(DEMO_BUSINESSES[language])}
    async with running() as sim, engine(sim, session) as conn:
        await conn.response.create(response={"instructions": instructions})
        events = await until(conn, "response.done")
    said = of_type(events, "response.output_audio_transcript.done")[0].transcript
    assert said == line_for(CLOSING_INSTRUCTIONS[instructions], language)
    assert mostly_hebrew(said) == (language == "he")
    assert not any(phrases(text) & phrases(said) for text in CLOSING_INSTRUCTIONS)


def test_each_closing_line_is_distinct_and_in_its_language() -> None:
    for language in ("en", "he"):
        lines = [line_for(intent, language) for intent in Intent]
        assert len(set(lines)) == len(lines)
        assert all(mostly_hebrew(line) == (language == "he") for line in lines)
    assert line_for(Intent.GOODBYE, "fr") == line_for(Intent.GOODBYE, "en")


@pytest.mark.parametrize("language", ["en", "he"])
async def test_say_exactly_is_said_verbatim_in_any_session(language: str) -> None:
    message = "Hi Dana, this is Bayside Plumbing. Please call us back at 415 555 0100. Bye!"
    session = {**PCMU_SESSION, "instructions": full_prompt(DEMO_BUSINESSES[language])}
    async with running() as sim, engine(sim, session) as conn:
        await conn.response.create(response={"instructions": say_exactly(message)})
        events = await until(conn, "response.done")
    assert of_type(events, "response.output_audio_transcript.done")[0].transcript == message


@pytest.mark.parametrize(("instructions", "session_language", "expected"), [
    ("Tell the caller the weather forecast.", "en", line_for(Intent.GENERIC, "en")),
    ("Tell the caller the weather forecast.", "he", line_for(Intent.GENERIC, "he")),
    ("Summarise the call. " * 20, "en", line_for(Intent.GENERIC, "en")),  # long: a task
    ("תגידי ללקוח להתראות.", "en", line_for(Intent.GOODBYE, "he")),
])
async def test_other_instructions_get_the_generic_or_recognised_line(
        instructions: str, session_language: str, expected: str) -> None:
    session = {**PCMU_SESSION, "instructions": full_prompt(DEMO_BUSINESSES[session_language])}
    async with running() as sim, engine(sim, session) as conn:
        await conn.response.create(response={"instructions": instructions})
        events = await until(conn, "response.done")
    said = of_type(events, "response.output_audio_transcript.done")[0].transcript
    assert said == expected
    assert instructions.strip() not in said


async def test_text_modality_streams_text_deltas() -> None:
    async with running(replies=[REPLY]) as sim, engine(sim) as conn:
        await conn.response.create(response={"output_modalities": ["text"]})
        events = await until(conn, "response.done")
    assert not of_type(events, "response.output_audio.delta")
    assert "".join(e.delta for e in of_type(events, "response.output_text.delta")) == REPLY
    assert of_type(events, "response.output_text.done")[0].text == REPLY


async def test_second_response_create_while_active_is_an_error() -> None:
    async with running(fast_profile(first_audio_base_ms=5000)) as sim, engine(sim) as conn:
        await conn.response.create()
        await conn.response.create(event_id="cli_2")
        events = await until(conn, "error")
        await conn.response.cancel()
        events += await until(conn, "response.done")
    assert [e.type for e in events] == ["response.created", "error", "response.done"]
    assert events[1].error.code == "conversation_already_has_active_response"
    assert events[1].error.event_id == "cli_2"
    assert events[-1].response.status == "cancelled"
    assert events[-1].response.output == []


async def test_response_cancel_by_client_and_cancel_without_response() -> None:
    async with running(fast_profile(realtime_factor=1.0)) as sim, engine(sim) as conn:
        await conn.response.create()
        first = await until(conn, "response.output_audio.delta")
        await conn.response.cancel()
        rest = await until(conn, "response.done")
        await asyncio.sleep(0.3)  # a producer still running would send more deltas by now
        await conn.response.cancel(event_id="cli_late")
        *between, late = await until(conn, "error")
    assert collapsed(rest)[-6:] == ANSWER_ORDER[5:11]
    done = rest[-1]
    assert done.response.status == "cancelled"
    assert done.response.status_details.reason == "client_cancelled"
    assert done.response.output[0].status == "incomplete"
    said = of_type(rest, "response.output_audio_transcript.done")[0].transcript
    streamed = "".join(e.delta for e in first + rest
                       if e.type == "response.output_audio_transcript.delta")
    assert said == streamed
    assert (late.error.code, late.error.event_id) == ("response_cancel_not_active", "cli_late")
    assert [e.type for e in between] == ["rate_limits.updated"]


async def test_first_audio_comes_later_for_long_instructions() -> None:
    profile = fast_profile(first_audio_per_1000_chars_ms=60)
    speech.synthesize(REPLY, "en", "marin")  # warm the synthesis cache for both sessions
    long_instructions = "Answer politely and briefly. " * 200  # ~5800 chars
    waits = {}
    async with running(profile, replies=[REPLY]) as sim:
        for name, instructions in (("short", "Be brief."), ("long", long_instructions)):
            async with engine(sim, {**PCMU_SESSION, "instructions": instructions}) as conn:
                loop = asyncio.get_running_loop()
                sent_at = loop.time()
                await conn.response.create()
                await until(conn, "response.output_audio.delta")
                waits[name] = loop.time() - sent_at
                await until(conn, "response.done")
        recorded = []
        for session in sim.sessions:
            asked = next(r.at for r in session.received if r.type == "response.create")
            first = next(s.at for s in session.sent if s.type == "response.output_audio.delta")
            recorded.append(first - asked)
    assert waits["long"] > waits["short"]
    assert recorded[1] > recorded[0]


async def test_latency_presets() -> None:
    zero, modeled = LatencyProfile.zero(), LatencyProfile.modeled()
    assert (zero.connect_ms, zero.session_update_ms, zero.first_audio_ms(5000)) == (0, 0, 0)
    assert zero.realtime_factor == modeled.realtime_factor == 1.0
    assert (modeled.connect_ms, modeled.session_update_ms) == (300, 100)
    assert modeled.first_audio_ms(0) == 350
    assert modeled.first_audio_ms(2000) == 650


# ------------------------------------------------------------------------ VAD


async def test_vad_turn_commits_transcribes_and_answers() -> None:
    caller = speech.voiced_tone(600)
    async with running(replies=[REPLY], caller_transcripts=["I want a cake"]) as sim, engine(
            sim) as conn:
        await append_audio(conn, mulaw.silence(400) + caller + mulaw.silence(800))
        events = await until(conn, "response.done")
        session = sim.sessions[0]
    types = [e.type for e in events]
    started, stopped, committed = (of_type(events, t)[0] for t in (
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed"))
    assert types.index("input_audio_buffer.speech_started") < types.index(
        "input_audio_buffer.speech_stopped") < types.index("input_audio_buffer.committed") < (
        types.index("response.created"))
    assert started.audio_start_ms == 400 - 300
    assert 1000 + 500 <= stopped.audio_end_ms <= 1000 + 500 + 100
    assert started.item_id == stopped.item_id == committed.item_id
    assert committed.previous_item_id is None
    transcript = of_type(events, "conversation.item.input_audio_transcription.completed")[0]
    assert (transcript.item_id, transcript.transcript) == (committed.item_id, "I want a cake")
    assert events[-1].response.status == "completed"
    assert session.conversation[0]["role"] == "user"
    assert session.conversation[0]["content"][0]["transcript"] == "I want a cake"
    assert session.conversation[1]["role"] == "assistant"
    event_ids = [sent.event["event_id"] for sent in session.sent]
    assert len(event_ids) == len(set(event_ids)) > 20


async def test_vad_ignores_digital_silence_and_low_noise() -> None:
    quiet = speech.voiced_tone(600, amplitude=350)  # RMS well under 200
    assert mulaw.rms(quiet) < 200
    async with running() as sim, engine(sim) as conn:
        await append_audio(conn, mulaw.silence(1000) + quiet + mulaw.silence(600))
        events = await barrier(conn)
    assert [e.type for e in events] == ["input_audio_buffer.cleared"]


async def test_vad_create_response_off_only_reports_the_turn() -> None:
    session = with_turn_detection({"type": "server_vad", "create_response": False,
                                   "silence_duration_ms": 300})
    async with running() as sim, engine(sim, session) as conn:
        await append_audio(conn, speech.voiced_tone(600) + mulaw.silence(400))
        events = await barrier(conn)
    types = [e.type for e in events]
    assert "input_audio_buffer.committed" in types
    assert "response.created" not in types


async def test_barge_in_cancels_the_response_in_progress() -> None:
    async with running(fast_profile(realtime_factor=1.0)) as sim, engine(sim) as conn:
        await conn.response.create()
        before = await until(conn, "response.output_audio.delta")
        await append_audio(conn, speech.voiced_tone(600))
        after = await until(conn, "response.done")
    response_id = before[0].response.id
    types = [e.type for e in after]
    start = types.index("input_audio_buffer.speech_started")
    assert "response.output_audio.delta" not in types[start:]
    assert collapsed(after[start + 1:]) == ANSWER_ORDER[5:11]
    done = after[-1]
    assert done.response.id == response_id
    assert done.response.status == "cancelled"
    assert done.response.status_details.type == "cancelled"
    assert done.response.status_details.reason == "turn_detected"
    assert of_type(after, "response.output_item.done")[0].item.status == "incomplete"


async def test_barge_in_without_interrupt_response_lets_the_answer_finish() -> None:
    session = with_turn_detection({"type": "server_vad", "interrupt_response": False,
                                   "create_response": False})
    async with running(fast_profile(realtime_factor=0.15), replies=[REPLY]) as sim, engine(
            sim, session) as conn:
        await conn.response.create()
        await until(conn, "response.output_audio.delta")
        await append_audio(conn, speech.voiced_tone(600))
        events = await until(conn, "response.done")
    assert of_type(events, "input_audio_buffer.speech_started")
    assert events[-1].response.status == "completed"


def test_energy_vad_detects_espeak_speech_and_places_it() -> None:
    words = speech.synthesize("Hello, I would like to order a birthday cake.", "en", "")
    vad = EnergyVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    events = vad.feed(mulaw.silence(1000)) + vad.feed(words) + vad.feed(mulaw.silence(700))
    assert [type(e) for e in events] == [VadSpeechStarted, VadSpeechStopped]
    started, stopped = events
    assert isinstance(started, VadSpeechStarted) and isinstance(stopped, VadSpeechStopped)
    assert 1000 <= started.speech_start_ms <= 1300
    assert started.audio_start_ms == started.speech_start_ms - 300
    assert stopped.audio_end_ms - stopped.speech_end_ms >= 500
    assert 200 < rms_threshold(0.5) < 2500
    assert rms_threshold(0.9) > rms_threshold(0.5) > rms_threshold(0.1)


def test_energy_vad_frames_split_across_appends() -> None:
    tone = speech.voiced_tone(400)
    vad = EnergyVad(prefix_padding_ms=0, silence_duration_ms=200)
    audio = mulaw.silence(110) + tone + mulaw.silence(300)
    events = [e for i in range(0, len(audio), 77) for e in vad.feed(audio[i:i + 77])]
    assert [type(e) for e in events] == [VadSpeechStarted, VadSpeechStopped]
    assert events[0].audio_start_ms in (100, 120)  # frames are 20 ms on the session clock


# ------------------------------------------------------------------------ input buffer


async def test_manual_commit_and_clear_without_turn_detection() -> None:
    session = with_turn_detection(None)
    async with running() as sim, engine(sim, session) as conn:
        await conn.input_audio_buffer.commit(event_id="cli_empty")
        empty = await recv(conn)
        await append_audio(conn, speech.voiced_tone(400))
        await conn.input_audio_buffer.commit()
        committed = await until(conn, "conversation.item.input_audio_transcription.completed")
        await append_audio(conn, speech.voiced_tone(400))
        cleared = await barrier(conn)
        await conn.input_audio_buffer.commit()
        after_clear = await recv(conn)
    assert (empty.error.code, empty.error.event_id) == ("input_audio_buffer_commit_empty",
                                                        "cli_empty")
    assert [e.type for e in committed][:2] == ["input_audio_buffer.committed",
                                               "conversation.item.added"]
    assert not of_type(committed, "input_audio_buffer.speech_started")
    assert of_type(committed, "conversation.item.done")[0].item.content[0].type == (
        "input_audio")
    assert [e.type for e in cleared] == ["input_audio_buffer.cleared"]
    assert after_clear.error.code == "input_audio_buffer_commit_empty"


# ------------------------------------------------------------------------ truncate, items


async def test_truncate_checks_the_audio_produced() -> None:
    async with running(replies=[REPLY]) as sim, engine(sim) as conn:
        await conn.response.create()
        events = await until(conn, "rate_limits.updated")
        item_id = events[1].item.id
        produced_ms = len(audio_of(events)) // mulaw.BYTES_PER_MS
        await conn.conversation.item.truncate(item_id=item_id, content_index=0,
                                              audio_end_ms=produced_ms + 5000)
        too_long = await recv(conn)
        await conn.conversation.item.truncate(item_id=item_id, content_index=0,
                                              audio_end_ms=produced_ms // 2)
        truncated = await recv(conn)
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hello"}]})
        user_item = (await until(conn, "conversation.item.done"))[-1].item
        await conn.conversation.item.truncate(item_id=user_item.id, content_index=0,
                                              audio_end_ms=10)
        not_audio = await recv(conn)
        await conn.conversation.item.truncate(item_id="item_nope", content_index=0,
                                              audio_end_ms=10)
        unknown = await recv(conn)
        session = sim.sessions[0]
    assert too_long.type == "error"
    assert too_long.error.type == "invalid_request_error"
    assert too_long.error.message == (
        f"Audio content of {produced_ms}ms is already shorter than {produced_ms + 5000}ms")
    assert truncated.type == "conversation.item.truncated"
    assert (truncated.item_id, truncated.audio_end_ms) == (item_id, produced_ms // 2)
    assert [(t.item_id, t.audio_end_ms, t.produced_ms) for t in session.truncations] == [
        (item_id, produced_ms // 2, produced_ms)]
    assert len(session.conversation[0]["content"][0]["transcript"]) < len(REPLY)
    assert not_audio.error.message == "Only model output audio messages can be truncated"
    assert unknown.type == "error" and unknown.error.param == "item_id"


async def test_truncate_of_the_item_being_generated_is_allowed() -> None:
    async with running(fast_profile(realtime_factor=1.0)) as sim, engine(sim) as conn:
        await conn.response.create()
        events = await until(conn, "response.output_audio.delta")
        await conn.conversation.item.truncate(item_id=events[-1].item_id, content_index=0,
                                              audio_end_ms=50)
        truncated = await until(conn, "conversation.item.truncated")
        await conn.response.cancel()
        await until(conn, "response.done")
        session = sim.sessions[0]
    assert truncated[-1].audio_end_ms == 50
    assert session.truncations[0].item_id == events[-1].item_id


async def test_conversation_items_create_retrieve_delete() -> None:
    text_item = {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "Caller pressed 5"}]}
    async with running() as sim, engine(sim) as conn:
        await conn.conversation.item.create(item=text_item)
        first = await until(conn, "conversation.item.done")
        await conn.conversation.item.create(item={**text_item, "id": "item_root"},
                                            previous_item_id="root")
        root = await until(conn, "conversation.item.done")
        await conn.send({"type": "conversation.item.create",
                         "item": {"type": "function_call_output", "call_id": "call_1",
                                  "output": '{"ok": true}'}})
        output = await until(conn, "conversation.item.done")
        await conn.send({"type": "conversation.item.retrieve", "item_id": "item_root"})
        retrieved = await recv(conn)
        await conn.conversation.item.delete(item_id="item_root")
        deleted = await recv(conn)
        await conn.conversation.item.delete(item_id="item_root", event_id="cli_del")
        missing = await recv(conn)
        await conn.send({"type": "conversation.item.create",
                         "item": {"type": "message", "role": "robot", "content": []}})
        bad_role = await recv(conn)
        await conn.send({"type": "conversation.item.create",
                         "item": {"type": "message", "role": "assistant",
                                  "content": [{"type": "input_text", "text": "x"}]}})
        bad_content = await recv(conn)
        session = sim.sessions[0]
    first_id = first[0].item.id
    assert [e.type for e in first] == ["conversation.item.added", "conversation.item.done"]
    assert first[0].previous_item_id is None
    assert root[0].previous_item_id is None
    assert output[0].previous_item_id == first_id
    assert retrieved.type == "conversation.item.retrieved" and retrieved.item.id == "item_root"
    assert deleted.type == "conversation.item.deleted" and deleted.item_id == "item_root"
    assert (missing.type, missing.error.event_id) == ("error", "cli_del")
    assert bad_role.error.param == "item.role"
    assert bad_content.error.param == "item.content[0].type"
    assert [item["id"] for item in session.conversation] == [first_id, output[0].item.id]
    assert session.conversation[1]["type"] == "function_call_output"


# ------------------------------------------------------------------------ bad input


async def test_bad_client_events_get_errors_and_the_session_stays_usable() -> None:
    async with running() as sim, engine(sim) as conn:
        await conn.send_raw("{this is not json")
        bad_json = await recv(conn)
        await conn.send({"type": "response.audio.delta", "event_id": "cli_beta"})
        unknown = await recv(conn)
        await conn.send({"type": "input_audio_buffer.append", "event_id": "cli_noaudio"})
        missing = await recv(conn)
        await conn.send_raw('{"event_id": "cli_notype"}')
        no_type = await recv(conn)
        await conn.send({"type": "conversation.item.truncate", "item_id": "x",
                         "content_index": 0})
        missing_ms = await recv(conn)
        await conn.response.create()
        answer = await until(conn, "response.done")
        session = sim.sessions[0]
        still_open = not session.closed.is_set()
    assert (bad_json.type, bad_json.error.type, bad_json.error.code) == (
        "error", "invalid_request_error", "invalid_json")
    assert (unknown.error.code, unknown.error.event_id) == ("invalid_value", "cli_beta")
    assert "response.audio.delta" in unknown.error.message
    assert (missing.error.code, missing.error.param, missing.error.event_id) == (
        "missing_required_parameter", "audio", "cli_noaudio")
    assert (no_type.error.param, no_type.error.event_id) == ("type", "cli_notype")
    assert missing_ms.error.param == "audio_end_ms"
    assert answer[-1].response.status == "completed"
    assert session.received_types()[:4] == ["session.update", "<invalid>",
                                            "response.audio.delta", "input_audio_buffer.append"]
    assert len(session.errors_sent) == 5
    assert still_open


async def test_append_before_pcmu_is_configured_is_refused() -> None:
    async with running() as sim, engine(sim, session=None) as conn:
        await append_audio(conn, mulaw.silence(20))
        refused = await recv(conn)
    assert refused.error.code == "unsupported_in_simulator"


# ------------------------------------------------------------------------ scripted tool calls


async def test_scripted_function_call_follows_the_caller_turn() -> None:
    script = [ScriptedToolCall(after_caller_turn=1, name="end_call",
                               arguments={"reason": "done"})]
    session_config = {**PCMU_SESSION, "tools": [{
        "type": "function", "name": "end_call", "description": "Hang up",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}]}
    async with running(replies=[REPLY], tool_script=script) as sim, engine(
            sim, session_config) as conn:
        await conn.response.create()
        greeting = await until(conn, "rate_limits.updated")
        await append_audio(conn, speech.voiced_tone(600) + mulaw.silence(600))
        turn = await until(conn, "response.done")
        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": of_type(
                turn, "response.function_call_arguments.done")[0].call_id,
            "output": '{"ok": true}'})
        await until(conn, "conversation.item.done")
        session = sim.sessions[0]
    assert not of_type(greeting, "response.function_call_arguments.done")
    added = [e.item for e in of_type(turn, "response.output_item.added")]
    assert [item.type for item in added] == ["message", "function_call"]
    call_done = of_type(turn, "response.function_call_arguments.done")[0]
    deltas = of_type(turn, "response.function_call_arguments.delta")
    assert "".join(d.delta for d in deltas) == call_done.arguments == '{"reason":"done"}'
    assert call_done.name == "end_call"
    assert {d.call_id for d in deltas} == {call_done.call_id}
    assert call_done.item_id == added[1].id and call_done.output_index == 1
    output = turn[-1].response.output
    assert [item.type for item in output] == ["message", "function_call"]
    assert output[1].arguments == '{"reason":"done"}'
    assert [item["type"] for item in session.conversation][-2:] == ["function_call",
                                                                    "function_call_output"]


async def test_scripted_function_call_without_speech() -> None:
    script = [ScriptedToolCall(after_caller_turn=0, name="transfer", speak_first=False)]
    async with running(tool_script=script) as sim, engine(sim) as conn:
        await conn.response.create()
        events = await until(conn, "response.done")
    assert not of_type(events, "response.output_audio.delta")
    assert [e.item.type for e in of_type(events, "response.output_item.added")] == [
        "function_call"]
    assert of_type(events, "response.function_call_arguments.done")[0].arguments == "{}"


async def test_concurrent_sessions_keep_their_own_state() -> None:
    async def one_call(sim: EngineSimulator, index: int) -> tuple[str, str]:
        async with engine(sim) as conn:
            await append_audio(conn, speech.voiced_tone(300 + 100 * index) + mulaw.silence(600))
            events = await until(conn, "response.done")
        heard = of_type(events, "conversation.item.input_audio_transcription.completed")
        said = of_type(events, "response.output_audio_transcript.done")
        return heard[0].transcript, said[0].transcript

    async with running(replies=[REPLY]) as sim:
        results = await asyncio.gather(*(one_call(sim, i) for i in range(4)))
        sessions = list(sim.sessions)
    assert sorted(heard for heard, _ in results) == [
        f"(caller speech {ms / 1000:.2f} s)" for ms in (300, 400, 500, 600)]
    assert {said for _, said in results} == {REPLY}
    assert len({s.model for s in sessions}) == 1 and len(sessions) == 4
    assert all(len(s.conversation) == 2 for s in sessions)


# ------------------------------------------------------------------------ handshake, lifecycle


async def test_wrong_bearer_is_refused_at_the_handshake() -> None:
    async with running() as sim:
        client = AsyncOpenAI(api_key="sk-wrong", websocket_base_url=sim.url)
        with pytest.raises(InvalidStatus) as refused:
            async with client.realtime.connect(model="gpt-realtime"):
                pass
        assert refused.value.response.status_code == 401
        assert (sim.connections_attempted, sim.sessions) == (1, [])


async def test_beta_header_is_refused_with_a_clear_message() -> None:
    async with running() as sim:
        client = AsyncOpenAI(api_key=KEY, websocket_base_url=sim.url)
        with pytest.raises(InvalidStatus) as refused:
            async with client.realtime.connect(model="gpt-realtime",
                                               extra_headers={"OpenAI-Beta": "realtime=v1"}):
                pass
    assert refused.value.response.status_code == 400
    assert b"realtime=v1" in refused.value.response.body


@pytest.mark.parametrize(("path", "status"), [("/v1/other?model=gpt-realtime", 404),
                                              ("/v1/realtime", 400)])
async def test_bad_route_or_missing_model_is_refused(path: str, status: int) -> None:
    async with running() as sim:
        origin = sim.url.removesuffix("/v1")
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(origin + path,
                                  additional_headers={"Authorization": f"Bearer {KEY}"}):
                pass
    assert refused.value.response.status_code == status


async def test_simulator_drops_the_connection() -> None:
    async with running() as sim, engine(sim) as conn:
        session: SimulatedSession = await sim.wait_for_session(0)
        await session.close(1011)
        with pytest.raises(ConnectionClosed) as dropped:
            await recv(conn)
        async with asyncio.timeout(5):
            await session.closed.wait()
    assert dropped.value.rcvd is not None and dropped.value.rcvd.code == 1011


async def test_stop_closes_sessions_and_frees_the_port() -> None:
    sim = EngineSimulator(fast_profile(), api_key=KEY)
    await sim.start()
    port = int(sim.url.rsplit(":", 1)[1].removesuffix("/v1"))
    async with engine(sim) as conn:
        session = await sim.wait_for_session()
        await sim.stop()
        async with asyncio.timeout(5):
            await session.closed.wait()
        with pytest.raises(ConnectionClosed):
            await recv(conn)
    again = EngineSimulator(fast_profile())
    await again.start(port=port)
    try:
        assert again.url == sim.url
    finally:
        await again.stop()
    with pytest.raises(TimeoutError):
        await sim.wait_for_session(1, timeout=0.05)


async def test_connect_delay_holds_the_handshake() -> None:
    async with running(fast_profile(connect_ms=150)) as sim:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with engine(sim, session=None):
            opened = loop.time() - started
    assert opened >= 0.14  # a lower bound: the delay is a sleep


def test_cli_serves_the_sdk() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "hotline.sim.engine", "--port", "0", "--profile", "zero"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split()[3]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/v1")

        async def handshake() -> str:
            client = AsyncOpenAI(api_key=KEY, websocket_base_url=url)
            async with client.realtime.connect(model="gpt-realtime") as conn:
                return str((await recv(conn)).type)

        assert asyncio.run(handshake()) == "session.created"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
