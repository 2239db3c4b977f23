"""The engine cannot be had at all, over real sockets: the caller hears the apology within a
second of `start`, leaves a message after the tone, and is hung up; the message is stored
with its audio (a WAV under the data directory). The fault is real: the server's engine URL
points at a port that refuses connections, or the engine simulator has stopped."""

from __future__ import annotations

import asyncio
import base64
import socket
import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.canned import built_in_frames
from hotline.core.outcomes import Outcome
from hotline.prompts import CannedLine, apology_text
from hotline.sim import speech
from hotline.sim.script import CallScript, Hangup, Say, Silence, WaitForAgentSilence
from tests.factories import TEST_NUMBER, make_business
from tests.server_process import port_held
from tests.stack import TEST_CLOCK, Stack, running_stack
from tests.test_e2e_calls import CALLER, record_of

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

APOLOGY_BUDGET_MS = 1000  # the caller never hears more than a second of dead air
SPOKEN = "Hi, this is Dana Levi. Please call me back at five five five, one two three four."
LEAVE_A_MESSAGE = CallScript([
    WaitForAgentSilence(quiet_ms=300, timeout_ms=20_000),  # the apology and the tone
    Say(SPOKEN),
    Silence(8_000),  # the server hangs up on the silence after the message
    Hangup(),
])


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A port that is bound but not listening: every connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/v1"


def spoken_ms() -> float:
    return len(speech.synthesize(SPOKEN)) / BYTES_PER_MS


async def test_engine_down_apology_message_with_audio_and_hang_up(
        database_url: str, tmp_path: Path, refusing_url: str) -> None:
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             openai_realtime_url=refusing_url,
                             message_end_silence_s=1.5) as stack:
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LEAVE_A_MESSAGE)
        record = await record_of(stack, result.call_sid)
        stored = await stack.services.store.list_messages()
    # The apology came within the budget. No timer lies on that path (the refusal is learnt
    # at once), only processing, which the compressed test clock would multiply: compare
    # the wall time it took, as production (clock speed 1) would see it.
    assert result.start_to_first_media_ms is not None
    assert result.start_to_first_media_ms / TEST_CLOCK.speed < APOLOGY_BUDGET_MS
    # ... and it is the apology: the built-in English recording, byte for byte.
    first_heard = result.heard_segments[0][1]
    expected = base64.b64decode(built_in_frames(CannedLine.APOLOGY, "en")[0])
    assert first_heard[:len(expected)] == expected
    apology = b"".join(base64.b64decode(f) for f in built_in_frames(CannedLine.APOLOGY, "en"))
    assert result.played_ms >= len(apology) / BYTES_PER_MS
    # The server hung up (through Twilio's REST API) on the silence after the message.
    assert result.ended_by == "api", (result.ended_by, result.script_log)
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    stages = [s.stage for s in record.timeline]
    for stage in ("stream_start", "engine_failed", "engine_unavailable", "apology_started",
                  "message_recording", "message_recorded", "hang_up_requested", "call_ended"):
        assert stage in stages, stage
    assert stages.index("apology_started") < stages.index("message_recording")
    detail = record.timeline[stages.index("apology_started")].detail
    assert detail.startswith("built-in")
    assert [t.text for t in record.transcript if t.speaker == "agent"] == [apology_text("en")]
    # The message: the caller's number, no name, its WAV on disk holding what they said.
    [message] = stored
    assert (message.phone, message.name, message.call_sid) == (CALLER, "", result.call_sid)
    assert message.message_id == f"{result.call_sid}-1"
    assert message.audio_file == f"messages/{result.call_sid}-1.wav"
    path = tmp_path / "data" / message.audio_file
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        wav_ms = wav.getnframes() / 8
    assert message.audio_ms is not None and abs(wav_ms - message.audio_ms) <= 1
    # About what was said: the speech, the short pause before it, up to half a second after.
    said = spoken_ms()
    assert said * 0.9 <= wav_ms <= said + 1500, (said, wav_ms)


async def test_a_caller_who_hangs_up_after_the_tone_leaves_no_empty_message(
        database_url: str, tmp_path: Path, refusing_url: str) -> None:
    script = CallScript([WaitForAgentSilence(quiet_ms=200, timeout_ms=20_000), Hangup()])
    async with running_stack(database_url, tmp_path, [make_business()], greeting_cache=False,
                             openai_realtime_url=refusing_url) as stack:
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        record = await record_of(stack, result.call_sid)
        assert await stack.services.store.list_messages() == []
    assert result.ended_by == "phone"
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    assert "no_message" in [s.stage for s in record.timeline]
    assert not (tmp_path / "data" / "messages").exists()


async def test_the_apology_rendered_in_the_business_voice_is_used_once_cached(
        database_url: str, tmp_path: Path) -> None:
    business = make_business(language="he")
    async with running_stack(database_url, tmp_path, [business]) as stack:
        cache = stack.services.greetings
        key = cache.key(apology_text("he"), business.voice)
        await cache.wait_ready([business], timeout_s=15)
        await _until_cached(stack, key)
        rendered = cache.frames(key)
        assert rendered and rendered != built_in_frames(CannedLine.APOLOGY, "he")
        await stack.engine.stop()  # the engine is gone: connecting is refused
        with port_held(urlsplit(stack.engine.url).port or 0):
            result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                            script=LEAVE_A_MESSAGE)
            record = await record_of(stack, result.call_sid)
    stages = [s.stage for s in record.timeline]
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    assert record.timeline[stages.index("apology_started")].detail.startswith("rendered")
    # The engine rendered the Hebrew apology's words, in the business's voice.
    renders = [r.event for s in stack.engine.sessions for r in s.received
               if r.type == "response.create" and apology_text("he") in str(r.event)]
    assert len(renders) == 1
    # The caller heard the rendered apology, not the built-in one.
    heard = result.heard_mulaw()
    assert base64.b64decode(rendered[1]) in heard
    assert base64.b64decode(built_in_frames(CannedLine.APOLOGY, "he")[1]) not in heard


async def _until_cached(stack: Stack, key: str) -> None:
    async with asyncio.timeout(15):
        while not stack.services.greetings.has(key):  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.01)
