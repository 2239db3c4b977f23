"""Both wire codecs, each row a documented wire example and its event, both directions."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
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


# -- validation: wrong types, bad payloads, absurd values -----------------------------------
def _media(**media: object) -> str:
    body = {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "/////w==", **media}
    return orjson.dumps({"event": "media", "streamSid": SID, "media": body}).decode()


@pytest.mark.parametrize("bad", [
    _media(payload="not base64!"), _media(payload="AAA"), _media(payload=""),
    _media(payload="AA=A"), _media(payload="A==="), _media(payload="//8é"),
    _media(timestamp="-20"), _media(timestamp=True), _media(timestamp=1.5),
    _media(timestamp=str(10**12)), _media(timestamp=None),
    orjson.dumps({"event": "start", "start": {"streamSid": SID, "callSid": "", "accountSid": "AC"}}
                 ).decode(),
    orjson.dumps({"event": "start", "start": {"streamSid": SID, "callSid": "CA", "accountSid": "AC",
                                              "customParameters": {"token": 5}}}).decode(),
    orjson.dumps({"event": "mark", "streamSid": SID, "mark": {"name": ["m1"]}}).decode(),
])
def test_twilio_fields_are_checked(bad: str) -> None:
    with pytest.raises(TwilioProtocolError):
        parse_twilio(bad)


def test_a_message_for_another_stream_is_off_protocol() -> None:
    other = _media().replace(SID, "MZ" + "2" * 32)
    assert parse_twilio(other) == TwilioMedia("/////w==", 20)  # before the start: no stream yet
    with pytest.raises(TwilioProtocolError, match="another stream"):
        parse_twilio(other, SID)
    assert parse_twilio(_media(), SID) == TwilioMedia("/////w==", 20)
    # A message without a streamSid (Twilio always sends one) is not refused for it.
    assert parse_twilio('{"event": "stop"}', SID) == TwilioStop()


def _engine(type_: str, **fields: object) -> bytes:
    return orjson.dumps({"type": type_, "event_id": "e", **fields})


@pytest.mark.parametrize("bad", [
    _engine("response.output_audio.delta", response_id="r", item_id="i", delta="!!"),
    _engine("response.output_audio.delta", response_id="r", item_id="i", delta=5),
    _engine("response.output_audio.delta", response_id=None, item_id="i", delta="f39+"),
    _engine("input_audio_buffer.speech_started", audio_start_ms=-1, item_id="u"),
    _engine("input_audio_buffer.speech_started", audio_start_ms=True, item_id="u"),
    _engine("input_audio_buffer.speech_stopped", audio_end_ms=1.5, item_id="u"),
    _engine("conversation.item.truncated", item_id="i", audio_end_ms=10**12),
    _engine("response.created", response={"id": 7}),
    _engine("response.created", response="r1"),
    _engine("response.done", response={"id": "r1", "status": None}),
    _engine("response.function_call_arguments.done", response_id="r", item_id="i",
            call_id="c", name="end_call", arguments={"a": 1}),
    _engine("session.updated", session=[]),
    _engine("error", error="boom"),
    b'{"type": 5}', b"null", b"x" * (1024 * 1024 + 1),
])
def test_engine_fields_are_checked(bad: bytes) -> None:
    with pytest.raises(EngineProtocolError):
        parse_engine(bad)


def test_engine_optional_fields_of_the_wrong_type_are_ignored() -> None:
    """Fields the call only reports (an error's text, a done's reason) are not worth a
    skipped event: a wrong type reads as absent."""
    assert parse_engine(_engine("error", error={"code": 5, "type": "server_error",
                                                "message": None, "event_id": 3})) == EngineError(
        "server_error", "", None)
    assert parse_engine(_engine("response.done", response={
        "id": "r1", "status": "cancelled", "status_details": "x"})) == EngineResponseDone(
        "r1", "cancelled", None)
    assert parse_engine(_engine("session.updated", session={"instructions": 5})) == (
        EngineSessionUpdated(0))


# -- the hot messages' templates: the same JSON as orjson's, whatever the text -------------
_NO_CONTROL = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
_PAYLOADS = st.one_of(st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()),
                      _NO_CONTROL)  # base64 as the codecs let through, or any quotes, `\`


@settings(max_examples=300, deadline=None)
@given(payload=_PAYLOADS, sid=st.text(st.characters(blacklist_categories=("Cs",)),
                                      max_size=40))
def test_media_and_append_templates_render_what_orjson_would(payload: str, sid: str) -> None:
    """A stream id is escaped once per call, a payload with a quote or backslash falls back
    to orjson: nothing breaks the JSON or adds a field. (A control character in a payload
    would: the codecs and the cached audio only ever pass base64.)"""
    assert orjson.loads(render_twilio(sid, TwilioMediaOut(payload))) == {
        "event": "media", "streamSid": sid, "media": {"payload": payload}}
    assert orjson.loads(render_engine(AppendAudio(payload))) == {
        "type": "input_audio_buffer.append", "audio": payload}
