"""OpenAI Realtime (GA) codec: wire text <-> call events. Knows nothing of Twilio.

The SDK connects, authenticates and configures; audio moves through here with orjson
(the SDK's typed parse costs ~64 µs a delta, orjson ~1 µs). Dispatch is on the `type`
string, as the protocol reference advises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from hotline.audio.wire_b64 import is_audio_b64
from hotline.core.commands import (
    AddAssistantText,
    AddFunctionCall,
    AddFunctionOutput,
    AddUserText,
    AppendAudio,
    CancelResponse,
    CreateResponse,
    DeleteItem,
    EngineMessage,
    Truncate,
    UpdateInstructions,
)
from hotline.core.events import (
    UNHANDLED,
    EngineAgentTranscript,
    EngineAgentTranscriptDelta,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineError,
    EngineEvent,
    EngineFunctionCall,
    EngineInputCommitted,
    EngineResponseCreated,
    EngineResponseDone,
    EngineSessionUpdated,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineTruncated,
    Unhandled,
)
from hotline.errors import EngineProtocolError

Parser = Callable[[dict[str, Any]], EngineEvent]

# The real Realtime API sends events far larger than Twilio's: `session.created` and
# `session.updated` echo the whole instructions and tool schemas, `response.done` carries the
# response's output items with their transcripts. Their bound is the model's context (128k
# tokens, ~0.5 MB of text), so 1 MiB (websockets' default, now explicit) lets every event the
# API can send through and still refuses a runaway one (`conversation.item.retrieved` with a
# whole item's audio is never asked for here). The SDK's socket enforces it (`max_size`).
MAX_MESSAGE_BYTES = 1024 * 1024
# Audio positions are ms within the session (60 minutes at most at OpenAI).
MAX_AUDIO_MS = 24 * 3600 * 1000


def _s(m: dict[str, Any], key: str) -> str:
    value = m[key]
    if not isinstance(value, str):
        raise EngineProtocolError(f"{m.get('type')}: {key!r} must be a string")
    return value


def _ms(m: dict[str, Any], key: str) -> int:
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AUDIO_MS:
        raise EngineProtocolError(f"{m.get('type')}: {key!r} must be ms in range")
    return value


def _o(m: dict[str, Any], key: str) -> dict[str, Any]:
    value = m[key]
    if not isinstance(value, dict):
        raise EngineProtocolError(f"{m.get('type')}: {key!r} must be an object")
    return value


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _audio_delta(m: dict[str, Any]) -> EngineEvent:
    delta = _s(m, "delta")
    if not is_audio_b64(delta):
        raise EngineProtocolError("response.output_audio.delta: 'delta' is not base64 audio")
    return EngineAudioDelta(_s(m, "response_id"), _s(m, "item_id"), delta)


def _session_updated(m: dict[str, Any]) -> EngineEvent:
    instructions = _o(m, "session").get("instructions")
    return EngineSessionUpdated(len(instructions) if isinstance(instructions, str) else 0)


def _response_done(m: dict[str, Any]) -> EngineEvent:
    response = _o(m, "response")
    details = response.get("status_details")
    reason = _opt_str(details.get("reason")) if isinstance(details, dict) else None
    return EngineResponseDone(_s(response, "id"), _s(response, "status"), reason)


def _error(m: dict[str, Any]) -> EngineEvent:
    error = _o(m, "error")
    code = _opt_str(error.get("code")) or _opt_str(error.get("type")) or "error"
    return EngineError(code, _opt_str(error.get("message")) or "",
                       _opt_str(error.get("event_id")))


_PARSERS: dict[str, Parser] = {
    "response.output_audio.delta": _audio_delta,
    "input_audio_buffer.speech_started":
        lambda m: EngineSpeechStarted(_ms(m, "audio_start_ms"), _s(m, "item_id")),
    "input_audio_buffer.speech_stopped":
        lambda m: EngineSpeechStopped(_ms(m, "audio_end_ms"), _s(m, "item_id")),
    "response.created": lambda m: EngineResponseCreated(_s(_o(m, "response"), "id")),
    "response.done": _response_done,
    "response.output_audio_transcript.done": lambda m: EngineAgentTranscript(
        _s(m, "response_id"), _s(m, "item_id"), _s(m, "transcript")),
    "response.output_audio_transcript.delta":
        lambda m: EngineAgentTranscriptDelta(_s(m, "item_id"), _s(m, "delta")),
    "conversation.item.input_audio_transcription.completed":
        lambda m: EngineCallerTranscript(_s(m, "item_id"), _s(m, "transcript")),
    "conversation.item.truncated":
        lambda m: EngineTruncated(_s(m, "item_id"), _ms(m, "audio_end_ms")),
    "input_audio_buffer.committed": lambda m: EngineInputCommitted(_s(m, "item_id")),
    "response.function_call_arguments.done": lambda m: EngineFunctionCall(
        _s(m, "response_id"), _s(m, "item_id"), _s(m, "call_id"), _s(m, "name"),
        _s(m, "arguments")),
    "session.updated": _session_updated,
    "error": _error,
}


def parse_engine(data: str | bytes) -> EngineEvent | Unhandled:
    """One Realtime server event -> an event; UNHANDLED for well-formed events we ignore.
    Anything off-protocol raises `EngineProtocolError`, and nothing else does."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise EngineProtocolError(f"event of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EngineProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise EngineProtocolError("event is not a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise EngineProtocolError("'type' is missing or not a string")
    parser = _PARSERS.get(kind)
    if parser is None:
        return UNHANDLED
    try:
        return parser(message)
    except KeyError as exc:
        raise EngineProtocolError(f"{kind!r} event lacks {exc.args[0]!r}") from None


def render_engine(message: EngineMessage) -> str:
    event: dict[str, Any]
    if isinstance(message, AppendAudio):
        # The hottest message, from a template when nothing in the payload needs escaping
        # (the Twilio codec lets only base64 through; the check is ~0.1 µs, a third of
        # orjson's dict); otherwise orjson escapes it, so a hostile "payload" cannot inject
        # fields into the engine's JSON.
        audio = message.audio_b64
        if '"' not in audio and "\\" not in audio:
            return '{"type":"input_audio_buffer.append","audio":"' + audio + '"}'
        return orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode()
    if isinstance(message, CreateResponse):
        event = {"type": "response.create"}
        if message.event_id is not None:
            event["event_id"] = message.event_id
        if message.instructions is not None:
            event["response"] = {"instructions": message.instructions}
    elif isinstance(message, UpdateInstructions):
        event = {"type": "session.update",
                 "session": {"type": "realtime", "instructions": message.instructions}}
    elif isinstance(message, Truncate):
        event = {"type": "conversation.item.truncate", "item_id": message.item_id,
                 "content_index": 0, "audio_end_ms": message.audio_end_ms}
    elif isinstance(message, CancelResponse):
        event = {"type": "response.cancel"}
    elif isinstance(message, AddUserText):
        event = {"type": "conversation.item.create",
                 "item": {"type": "message", "role": "user",
                          "content": [{"type": "input_text", "text": message.text}]}}
    elif isinstance(message, AddAssistantText):
        event = {"type": "conversation.item.create",
                 "item": {"id": message.item_id, "type": "message", "role": "assistant",
                          "content": [{"type": "output_text", "text": message.text}]}}
        if message.previous_item_id is not None:
            event["previous_item_id"] = message.previous_item_id
    elif isinstance(message, DeleteItem):
        event = {"type": "conversation.item.delete", "item_id": message.item_id}
    elif isinstance(message, AddFunctionOutput):
        event = {"type": "conversation.item.create",
                 "item": {"type": "function_call_output", "call_id": message.call_id,
                          "output": message.output}}
    elif isinstance(message, AddFunctionCall):
        event = {"type": "conversation.item.create",
                 "item": {"type": "function_call", "call_id": message.call_id,
                          "name": message.name, "arguments": message.arguments}}
    else:
        raise TypeError(f"not an engine message: {message!r}")
    return orjson.dumps(event).decode()
