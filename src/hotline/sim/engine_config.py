"""Session configuration of the engine simulator: GA defaults, validation, partial updates.

Pure functions over plain dicts shaped like the GA `session` object
(`openai/types/realtime/realtime_session_create_response.py`). A client mistake raises
`InvalidRequest`, which the simulator turns into an `error` event; it never leaves the simulator.
"""

from __future__ import annotations

import copy
import time
from typing import Any

JsonDict = dict[str, Any]

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI. "
    "Act like a human, but remember that you aren't a human."
)
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
SIMULATED_FORMAT = "audio/pcmu"  # the only audio format the simulator can produce and analyse
_FORMAT_TYPES = ("audio/pcm", "audio/pcmu", "audio/pcma")

# Top-level keys of a GA `session.update`; beta-only names are listed apart for a better message.
_SESSION_KEYS = frozenset({
    "type", "model", "instructions", "output_modalities", "audio", "include", "tracing",
    "truncation", "tools", "tool_choice", "max_output_tokens", "prompt", "reasoning",
    "parallel_tool_calls",
})
_BETA_SESSION_KEYS = {
    "input_audio_format": "session.audio.input.format",
    "output_audio_format": "session.audio.output.format",
    "voice": "session.audio.output.voice",
    "turn_detection": "session.audio.input.turn_detection",
    "input_audio_transcription": "session.audio.input.transcription",
    "input_audio_noise_reduction": "session.audio.input.noise_reduction",
    "modalities": "session.output_modalities",
    "max_response_output_tokens": "session.max_output_tokens",
    "temperature": None,
}
_AUDIO_INPUT_KEYS = frozenset({"format", "noise_reduction", "transcription", "turn_detection"})
_AUDIO_OUTPUT_KEYS = frozenset({"format", "voice", "speed"})
_SERVER_VAD_KEYS = frozenset({"type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                              "idle_timeout_ms", "create_response", "interrupt_response"})
_SEMANTIC_VAD_KEYS = frozenset({"type", "eagerness", "create_response", "interrupt_response"})
# semantic_vad has no silence setting; the energy VAD waits this long instead.
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 500}

_RESPONSE_KEYS = frozenset({
    "instructions", "output_modalities", "conversation", "input", "metadata", "tools",
    "tool_choice", "max_output_tokens", "audio", "prompt", "reasoning",
})
_BETA_RESPONSE_KEYS = {"modalities": "response.output_modalities",
                       "voice": "response.audio.output.voice",
                       "output_audio_format": "response.audio.output.format",
                       "temperature": None, "max_response_output_tokens": "max_output_tokens"}


class InvalidRequest(Exception):
    """A client event the real API would answer with an `error` event."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type


def default_session(session_id: str, model: str) -> JsonDict:
    """What `session.created` carries before any update (the real API's defaults)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": normalized_turn_detection({"type": "server_vad"}),
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                       "speed": 1.0},
        },
    }


def normalized_turn_detection(value: JsonDict) -> JsonDict:
    """Fill a turn_detection object's defaults the way the server reports them."""
    if value.get("type") == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": value.get("eagerness") or "auto",
                "create_response": value.get("create_response", True) is not False,
                "interrupt_response": value.get("interrupt_response", True) is not False}
    return {
        "type": "server_vad",
        "threshold": float(value.get("threshold", 0.5)),
        "prefix_padding_ms": int(value.get("prefix_padding_ms", 300)),
        "silence_duration_ms": int(value.get("silence_duration_ms", 500)),
        "idle_timeout_ms": value.get("idle_timeout_ms"),
        "create_response": value.get("create_response", True) is not False,
        "interrupt_response": value.get("interrupt_response", True) is not False,
    }


def apply_session_update(session: JsonDict, update: object, *, voice_locked: bool) -> None:
    """Validate `update` fully, then merge it into `session` (nothing changes on error)."""
    if not isinstance(update, dict):
        raise InvalidRequest("Invalid type for 'session': expected an object.",
                             code="invalid_type", param="session")
    if "type" not in update:
        raise InvalidRequest("Missing required parameter: 'session.type'.",
                             code="missing_required_parameter", param="session.type")
    if update["type"] != "realtime":
        raise InvalidRequest(
            f"Invalid value: {update['type']!r}. This simulator only serves 'realtime' sessions.",
            param="session.type")
    for key in update:
        if key in _BETA_SESSION_KEYS:
            ga = _BETA_SESSION_KEYS[key]
            hint = f" Use '{ga}' (GA shape)." if ga else " It was removed in the GA API."
            raise InvalidRequest(f"Unknown parameter: 'session.{key}'.{hint}",
                                 code="unknown_parameter", param=f"session.{key}")
        if key not in _SESSION_KEYS:
            raise InvalidRequest(f"Unknown parameter: 'session.{key}'.",
                                 code="unknown_parameter", param=f"session.{key}")
    merged = copy.deepcopy(session)
    if "model" in update:
        merged["model"] = _string(update["model"], "session.model")
    if "instructions" in update:
        merged["instructions"] = _string(update["instructions"], "session.instructions")
    if "output_modalities" in update:
        merged["output_modalities"] = check_output_modalities(update["output_modalities"],
                                                              "session.output_modalities")
    if "audio" in update:
        _merge_audio(merged["audio"], update["audio"], voice_locked=voice_locked)
    if "tools" in update:
        merged["tools"] = check_tools(update["tools"], "session.tools")
    if "tool_choice" in update:
        merged["tool_choice"] = check_tool_choice(update["tool_choice"], "session.tool_choice")
    if "max_output_tokens" in update:
        merged["max_output_tokens"] = check_max_output_tokens(update["max_output_tokens"],
                                                              "session.max_output_tokens")
    for key in ("include", "tracing", "truncation", "prompt", "reasoning", "parallel_tool_calls"):
        if key in update:
            merged[key] = update[key]
    session.clear()
    session.update(merged)


def check_response_params(params: object) -> JsonDict:
    """Validate `response.create`'s optional `response` object; returns it (or `{}`)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequest("Invalid type for 'response': expected an object.",
                             code="invalid_type", param="response")
    for key in params:
        if key in _BETA_RESPONSE_KEYS:
            ga = _BETA_RESPONSE_KEYS[key]
            hint = f" Use '{ga}' (GA shape)." if ga else " It was removed in the GA API."
            raise InvalidRequest(f"Unknown parameter: 'response.{key}'.{hint}",
                                 code="unknown_parameter", param=f"response.{key}")
        if key not in _RESPONSE_KEYS:
            raise InvalidRequest(f"Unknown parameter: 'response.{key}'.",
                                 code="unknown_parameter", param=f"response.{key}")
    if "instructions" in params:
        _string(params["instructions"], "response.instructions")
    if params.get("conversation", "auto") not in ("auto", "none"):
        raise InvalidRequest(
            f"Invalid value: {params['conversation']!r}. Supported values are: 'auto' and 'none'.",
            param="response.conversation")
    if "output_modalities" in params:
        check_output_modalities(params["output_modalities"], "response.output_modalities")
    if "tools" in params:
        check_tools(params["tools"], "response.tools")
    if "tool_choice" in params:
        check_tool_choice(params["tool_choice"], "response.tool_choice")
    if "max_output_tokens" in params:
        check_max_output_tokens(params["max_output_tokens"], "response.max_output_tokens")
    if "metadata" in params and params["metadata"] is not None and not isinstance(
            params["metadata"], dict):
        raise InvalidRequest("Invalid type for 'response.metadata': expected an object.",
                             code="invalid_type", param="response.metadata")
    audio = params.get("audio")
    if audio is not None:
        output = audio.get("output") if isinstance(audio, dict) else None
        if not isinstance(audio, dict) or set(audio) - {"output"} or not isinstance(
                output, dict | None):
            raise InvalidRequest("Invalid 'response.audio': expected {'output': {...}}.",
                                 param="response.audio")
        if output:
            if set(output) - {"format", "voice"}:
                extra = sorted(set(output) - {"format", "voice"})[0]
                raise InvalidRequest(f"Unknown parameter: 'response.audio.output.{extra}'.",
                                     code="unknown_parameter",
                                     param=f"response.audio.output.{extra}")
            if "format" in output:
                _check_format(output["format"], "response.audio.output.format")
            if "voice" in output:
                _string(output["voice"], "response.audio.output.voice")
    return params


def check_output_modalities(value: object, param: str) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise InvalidRequest(
            f"Invalid value for '{param}': expected ['audio'] or ['text'] (not both).",
            param=param)
    assert isinstance(value, list)
    return list(value)


def check_tools(value: object, param: str) -> list[JsonDict]:
    if not isinstance(value, list):
        raise InvalidRequest(f"Invalid type for '{param}': expected an array.",
                             code="invalid_type", param=param)
    for index, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"Invalid type for '{param}[{index}]': expected an object.",
                                 code="invalid_type", param=f"{param}[{index}]")
        if tool.get("type", "function") not in ("function", "mcp"):
            raise InvalidRequest(f"Invalid value for '{param}[{index}].type'.",
                                 param=f"{param}[{index}].type")
        if tool.get("type", "function") == "function" and not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"Missing required parameter: '{param}[{index}].name'.",
                                 code="missing_required_parameter", param=f"{param}[{index}].name")
    return copy.deepcopy(value)


def check_tool_choice(value: object, param: str) -> object:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") in ("function", "mcp"):
        return copy.deepcopy(value)
    raise InvalidRequest(
        f"Invalid value for '{param}': expected 'auto', 'none', 'required' or a function choice.",
        param=param)


def check_max_output_tokens(value: object, param: str) -> object:
    if value == "inf" or (isinstance(value, int) and not isinstance(value, bool)
                          and 1 <= value <= 4096):
        return value
    raise InvalidRequest(f"Invalid value for '{param}': expected 1-4096 or 'inf'.", param=param)


_CONTENT_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio"),
}


def check_item(item: object) -> JsonDict:
    """Validate a `conversation.item.create` item; returns a copy without audio payloads."""
    if not isinstance(item, dict):
        raise InvalidRequest("Invalid type for 'item': expected an object.",
                             code="invalid_type", param="item")
    kind = item.get("type")
    if kind is None:
        raise InvalidRequest("Missing required parameter: 'item.type'.",
                             code="missing_required_parameter", param="item.type")
    item = copy.deepcopy(item)
    if kind == "message":
        role = item.get("role")
        if role not in _CONTENT_TYPES:
            raise InvalidRequest(
                f"Invalid value: {role!r}. Supported values are: 'user', 'assistant' and "
                "'system'.", param="item.role")
        content = item.get("content")
        if not isinstance(content, list):
            raise InvalidRequest("Missing required parameter: 'item.content'.",
                                 code="missing_required_parameter", param="item.content")
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in _CONTENT_TYPES[role]:
                wanted = ", ".join(repr(t) for t in _CONTENT_TYPES[role])
                raise InvalidRequest(
                    f"Invalid value for 'item.content[{index}].type' of a {role} message: "
                    f"expected one of {wanted}.", param=f"item.content[{index}].type")
            part.pop("audio", None)  # kept out of the record; the transcript stays
    elif kind == "function_call_output":
        for name in ("call_id", "output"):
            if not isinstance(item.get(name), str):
                raise InvalidRequest(f"Missing required parameter: 'item.{name}'.",
                                     code="missing_required_parameter", param=f"item.{name}")
    elif kind == "function_call":
        for name in ("name", "arguments"):
            if not isinstance(item.get(name), str):
                raise InvalidRequest(f"Missing required parameter: 'item.{name}'.",
                                     code="missing_required_parameter", param=f"item.{name}")
    else:
        raise InvalidRequest(
            f"Invalid value: {kind!r}. Supported values are: 'message', 'function_call' and "
            "'function_call_output'.", param="item.type")
    return item


def _merge_audio(audio: JsonDict, update: object, *, voice_locked: bool) -> None:
    if not isinstance(update, dict):
        raise InvalidRequest("Invalid type for 'session.audio': expected an object.",
                             code="invalid_type", param="session.audio")
    for key in update:
        if key not in ("input", "output"):
            raise InvalidRequest(f"Unknown parameter: 'session.audio.{key}'.",
                                 code="unknown_parameter", param=f"session.audio.{key}")
    if "input" in update:
        _merge_audio_input(audio["input"], update["input"])
    if "output" in update:
        _merge_audio_output(audio["output"], update["output"], voice_locked=voice_locked)


def _merge_audio_input(current: JsonDict, update: object) -> None:
    param = "session.audio.input"
    if not isinstance(update, dict):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.",
                             code="invalid_type", param=param)
    _reject_unknown(update, _AUDIO_INPUT_KEYS, param)
    if "format" in update:
        current["format"] = _check_format(update["format"], f"{param}.format")
    if "noise_reduction" in update:
        value = update["noise_reduction"]
        if value is not None and (not isinstance(value, dict) or value.get("type") not in (
                "near_field", "far_field")):
            raise InvalidRequest(f"Invalid value for '{param}.noise_reduction'.",
                                 param=f"{param}.noise_reduction.type")
        current["noise_reduction"] = copy.deepcopy(value)
    if "transcription" in update:
        value = update["transcription"]
        if value is not None and not isinstance(value, dict):
            raise InvalidRequest(f"Invalid type for '{param}.transcription'.",
                                 code="invalid_type", param=f"{param}.transcription")
        current["transcription"] = copy.deepcopy(value)
    if "turn_detection" in update:
        current["turn_detection"] = _check_turn_detection(update["turn_detection"],
                                                          f"{param}.turn_detection")


def _merge_audio_output(current: JsonDict, update: object, *, voice_locked: bool) -> None:
    param = "session.audio.output"
    if not isinstance(update, dict):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.",
                             code="invalid_type", param=param)
    _reject_unknown(update, _AUDIO_OUTPUT_KEYS, param)
    if "format" in update:
        current["format"] = _check_format(update["format"], f"{param}.format")
    if "voice" in update:
        voice = _string(update["voice"], f"{param}.voice")
        if voice_locked and voice != current["voice"]:
            raise InvalidRequest(
                "Cannot update a conversation's voice if assistant audio is present.",
                code="cannot_update_voice", param=f"{param}.voice")
        current["voice"] = voice
    if "speed" in update:
        speed = update["speed"]
        if not isinstance(speed, int | float) or isinstance(speed, bool) or not (
                0.25 <= speed <= 1.5):
            raise InvalidRequest(f"Invalid value for '{param}.speed': expected 0.25-1.5.",
                                 param=f"{param}.speed")
        current["speed"] = float(speed)


def _check_format(value: object, param: str) -> JsonDict:
    if not isinstance(value, dict) or value.get("type") not in _FORMAT_TYPES:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected {{'type': 'audio/pcmu'}}, "
            "{'type': 'audio/pcma'} or {'type': 'audio/pcm', 'rate': 24000}.", param=param)
    if value["type"] != SIMULATED_FORMAT:
        raise InvalidRequest(
            f"Audio format {value['type']!r} is unsupported in simulator: use "
            f"{{'type': '{SIMULATED_FORMAT}'}}.", code="unsupported_in_simulator", param=param)
    return {"type": SIMULATED_FORMAT}


def _check_turn_detection(value: object, param: str) -> JsonDict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("server_vad", "semantic_vad"):
        raise InvalidRequest(
            f"Invalid value for '{param}.type': expected 'server_vad' or 'semantic_vad'.",
            param=f"{param}.type")
    keys = _SERVER_VAD_KEYS if value["type"] == "server_vad" else _SEMANTIC_VAD_KEYS
    _reject_unknown(value, keys, param)
    threshold = value.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not (
            0.0 <= threshold <= 1.0):
        raise InvalidRequest(f"Invalid value for '{param}.threshold': expected 0.0-1.0.",
                             param=f"{param}.threshold")
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        number = value.get(key, 0)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise InvalidRequest(f"Invalid value for '{param}.{key}': expected an integer >= 0.",
                                 param=f"{param}.{key}")
    if value.get("eagerness", "auto") not in SEMANTIC_SILENCE_MS:
        raise InvalidRequest(f"Invalid value for '{param}.eagerness'.",
                             param=f"{param}.eagerness")
    return normalized_turn_detection(value)


def _reject_unknown(value: JsonDict, allowed: frozenset[str], param: str) -> None:
    for key in value:
        if key not in allowed:
            raise InvalidRequest(f"Unknown parameter: '{param}.{key}'.",
                                 code="unknown_parameter", param=f"{param}.{key}")


def _string(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid type for '{param}': expected a string.",
                             code="invalid_type", param=param)
    return value
