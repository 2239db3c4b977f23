"""Both wire codecs, each row a documented wire example and its event, both directions."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.core.commands import (
    AddUserText,
    AppendAudio,
    CancelResponse,
    CreateResponse,
    Truncate,
    TwilioClear,
    TwilioMarkOut,
    TwilioMediaOut,
    UpdateInstructions,
)
from hotline.core.events import (
    UNHANDLED,
    EngineAgentTranscript,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineError,
    EngineResponseCreated,
    EngineResponseDone,
    EngineSessionUpdated,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineTruncated,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from hotline.engine.realtime_codec import parse_engine, render_engine
from hotline.errors import EngineProtocolError, TwilioProtocolError
from hotline.telephony.media_codec import parse_twilio, render_twilio

SID = "MZ11111111111111111111111111111111"

TWILIO_IN = [
    ({"event": "connected", "protocol": "Call", "version": "1.0.0"},
     TwilioConnected("Call", "1.0.0")),
    ({"event": "start", "sequenceNumber": "1", "streamSid": SID,
      "start": {"accountSid": "AC2", "streamSid": SID, "callSid": "CA3", "tracks": ["inbound"],
                "customParameters": {"token": "abc", "business": "acme"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
     TwilioStart(SID, "CA3", "AC2", {"token": "abc", "business": "acme"})),
    ({"event": "media", "sequenceNumber": "2", "streamSid": SID,
      "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "/////39/fn5+"}},
     TwilioMedia("/////39/fn5+", 5)),
    ({"event": "dtmf", "sequenceNumber": "40", "streamSid": SID,
      "dtmf": {"track": "inbound_track", "digit": "5"}}, TwilioDtmf("5")),
    ({"event": "mark", "sequenceNumber": "41", "streamSid": SID, "mark": {"name": "m12"}},
     TwilioMark("m12")),
    ({"event": "stop", "sequenceNumber": "42", "streamSid": SID,
      "stop": {"accountSid": "AC2", "callSid": "CA3"}}, TwilioStop()),
]


@pytest.mark.parametrize(("wire", "event"), TWILIO_IN)
def test_twilio_messages_parse(wire: dict[str, object], event: object) -> None:
    assert parse_twilio(orjson.dumps(wire).decode()) == event


@pytest.mark.parametrize(("message", "wire"), [
    (TwilioMediaOut("f39+fX18"), {"event": "media", "streamSid": SID,
                                  "media": {"payload": "f39+fX18"}}),
    (TwilioMarkOut("m3"), {"event": "mark", "streamSid": SID, "mark": {"name": "m3"}}),
    (TwilioClear(), {"event": "clear", "streamSid": SID}),
])
def test_twilio_messages_render(message: object, wire: dict[str, object]) -> None:
    assert orjson.loads(render_twilio(SID, message)) == wire  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    "not json", "[]", '{"no_event": 1}', '{"event": "media"}',
    '{"event": "media", "media": {"payload": 5, "timestamp": "1"}}',
    '{"event": "media", "media": {"payload": "AA", "timestamp": "soon"}}',
    '{"event": "start", "start": {"streamSid": "MZ"}}',
    '{"event": "dtmf", "dtmf": {"digit": "A"}}', '{"event": 7}',
    "x" * 70_000,
])
def test_malformed_twilio_messages_raise_the_documented_error(bad: str) -> None:
    with pytest.raises(TwilioProtocolError):
        parse_twilio(bad)


def test_unknown_twilio_event_is_unhandled() -> None:
    assert parse_twilio('{"event": "something-new"}') is UNHANDLED


@given(st.text(max_size=300))
def test_any_text_is_an_event_or_the_documented_error(text: str) -> None:
    try:
        result = parse_twilio(text)
    except TwilioProtocolError:
        return
    assert result is UNHANDLED or type(result).__name__.startswith("Twilio")


ENGINE_IN = [
    ({"type": "response.output_audio.delta", "event_id": "e1", "response_id": "r1",
      "item_id": "i1", "output_index": 0, "content_index": 0, "delta": "f39+"},
     EngineAudioDelta("r1", "i1", "f39+")),
    ({"type": "input_audio_buffer.speech_started", "event_id": "e2", "audio_start_ms": 10320,
      "item_id": "u7"}, EngineSpeechStarted(10320, "u7")),
    ({"type": "input_audio_buffer.speech_stopped", "event_id": "e3", "audio_end_ms": 11000,
      "item_id": "u7"}, EngineSpeechStopped(11000, "u7")),
    ({"type": "response.created", "event_id": "e4",
      "response": {"id": "r1", "status": "in_progress"}}, EngineResponseCreated("r1")),
    ({"type": "response.done", "event_id": "e5", "response": {
        "object": "realtime.response", "id": "r1", "status": "cancelled",
        "status_details": {"type": "cancelled", "reason": "turn_detected"}, "output": []}},
     EngineResponseDone("r1", "cancelled", "turn_detected")),
    ({"type": "response.output_audio_transcript.done", "event_id": "e6", "response_id": "r1",
      "item_id": "i1", "output_index": 0, "content_index": 0, "transcript": "Hello"},
     EngineAgentTranscript("r1", "i1", "Hello")),
    ({"type": "conversation.item.input_audio_transcription.completed", "event_id": "e7",
      "item_id": "u7", "content_index": 0, "transcript": "Hi there"},
     EngineCallerTranscript("u7", "Hi there")),
    ({"type": "conversation.item.truncated", "event_id": "e8", "item_id": "i1",
      "content_index": 0, "audio_end_ms": 1840}, EngineTruncated("i1", 1840)),
    ({"type": "session.updated", "event_id": "e9",
      "session": {"type": "realtime", "instructions": "abc"}}, EngineSessionUpdated(3)),
    ({"type": "error", "event_id": "e10", "error": {
        "type": "invalid_request_error", "code": "invalid_value", "message": "bad",
        "param": None, "event_id": "cli_42"}}, EngineError("invalid_value", "bad", "cli_42")),
]


@pytest.mark.parametrize(("wire", "event"), ENGINE_IN)
def test_engine_events_parse(wire: dict[str, object], event: object) -> None:
    assert parse_engine(orjson.dumps(wire)) == event


def test_engine_events_we_do_not_use_are_unhandled() -> None:
    assert parse_engine(b'{"type": "rate_limits.updated", "rate_limits": []}') is UNHANDLED


@pytest.mark.parametrize("bad", [b"nope", b'{"type": "response.output_audio.delta"}', b"[1]"])
def test_malformed_engine_events_raise(bad: bytes) -> None:
    with pytest.raises(EngineProtocolError):
        parse_engine(bad)


@pytest.mark.parametrize(("message", "wire"), [
    (AppendAudio("/////w=="), {"type": "input_audio_buffer.append", "audio": "/////w=="}),
    (CreateResponse(), {"type": "response.create"}),
    (CreateResponse("Say hi"), {"type": "response.create",
                                "response": {"instructions": "Say hi"}}),
    (UpdateInstructions("full"), {"type": "session.update",
                                  "session": {"type": "realtime", "instructions": "full"}}),
    (Truncate("i1", 1840), {"type": "conversation.item.truncate", "item_id": "i1",
                            "content_index": 0, "audio_end_ms": 1840}),
    (CancelResponse(), {"type": "response.cancel"}),
    (AddUserText("pressed 5"), {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "pressed 5"}]}}),
])
def test_engine_messages_render(message: object, wire: dict[str, object]) -> None:
    assert orjson.loads(render_engine(message)) == wire  # type: ignore[arg-type]


def test_a_hostile_payload_cannot_inject_engine_fields() -> None:
    rendered = orjson.loads(render_engine(AppendAudio('x", "type": "response.cancel')))
    assert rendered["type"] == "input_audio_buffer.append"
