"""OpenAI Realtime (GA) codec: wire text <-> call events. Knows nothing of Twilio.

The SDK connects, authenticates and configures; audio moves through here with orjson
(the SDK's typed parse costs ~64 µs a delta, orjson ~1 µs). Dispatch is on the `type`
string, as the protocol reference advises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from hotline.core.commands import (
    AddAssistantText,
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


def _audio_delta(m: dict[str, Any]) -> EngineEvent:
    return EngineAudioDelta(m["response_id"], m["item_id"], m["delta"])


def _session_updated(m: dict[str, Any]) -> EngineEvent:
    return EngineSessionUpdated(len(m["session"].get("instructions") or ""))


def _response_done(m: dict[str, Any]) -> EngineEvent:
    response = m["response"]
    details = response.get("status_details") or {}
    return EngineResponseDone(response["id"], response["status"], details.get("reason"))


def _error(m: dict[str, Any]) -> EngineEvent:
    error = m["error"]
    return EngineError(str(error.get("code") or error.get("type") or "error"),
                       str(error.get("message", "")), error.get("event_id"))


_PARSERS: dict[str, Parser] = {
    "response.output_audio.delta": _audio_delta,
    "input_audio_buffer.speech_started":
        lambda m: EngineSpeechStarted(m["audio_start_ms"], m["item_id"]),
    "input_audio_buffer.speech_stopped":
        lambda m: EngineSpeechStopped(m["audio_end_ms"], m["item_id"]),
    "response.created": lambda m: EngineResponseCreated(m["response"]["id"]),
    "response.done": _response_done,
    "response.output_audio_transcript.done":
        lambda m: EngineAgentTranscript(m["response_id"], m["item_id"], m["transcript"]),
    "conversation.item.input_audio_transcription.completed":
        lambda m: EngineCallerTranscript(m["item_id"], m["transcript"]),
    "conversation.item.truncated": lambda m: EngineTruncated(m["item_id"], m["audio_end_ms"]),
    "input_audio_buffer.committed": lambda m: EngineInputCommitted(m["item_id"]),
    "response.function_call_arguments.done": lambda m: EngineFunctionCall(
        m["response_id"], m["item_id"], m["call_id"], m["name"], m["arguments"]),
    "session.updated": _session_updated,
    "error": _error,
}


def parse_engine(data: str | bytes) -> EngineEvent | Unhandled:
    try:
        message = orjson.loads(data)
        parser = _PARSERS.get(message["type"])
        if parser is None:
            return UNHANDLED
        return parser(message)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EngineProtocolError(f"malformed engine event: {exc!r}") from None


def render_engine(message: EngineMessage) -> str:
    event: dict[str, Any]
    if isinstance(message, AppendAudio):
        # The hottest message. orjson escapes the payload (~1 µs), so a hostile "payload"
        # from the Twilio side cannot inject fields into the engine's JSON.
        event = {"type": "input_audio_buffer.append", "audio": message.audio_b64}
        return orjson.dumps(event).decode()
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
    else:
        raise TypeError(f"not an engine message: {message!r}")
    return orjson.dumps(event).decode()
