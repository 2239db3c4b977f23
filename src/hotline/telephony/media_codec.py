"""Twilio Media Streams codec: wire text <-> call events. Knows nothing of the engine.

Validation happens once, here, at the edge: a size cap, one `orjson.loads`, direct key
access. Anything off-protocol raises `TwilioProtocolError`; the runner logs it and the call
goes on. Audio payloads stay base64 `str`, never decoded.
"""

from __future__ import annotations

from typing import Any

import orjson

from hotline.core.commands import TwilioClear, TwilioMarkOut, TwilioMediaOut, TwilioMessage
from hotline.core.events import (
    UNHANDLED,
    TwilioConnected,
    TwilioDtmf,
    TwilioEvent,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    Unhandled,
)
from hotline.errors import TwilioProtocolError

MAX_MESSAGE_BYTES = 64 * 1024
_DTMF_DIGITS = frozenset("0123456789*#")


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj[key]
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{key!r} must be an object")
    return value


def parse_twilio(text: str | bytes) -> TwilioEvent | Unhandled:
    """One Media Streams message -> an event; UNHANDLED for well-formed events we ignore."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise TwilioProtocolError(f"message of {len(text)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TwilioProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise TwilioProtocolError("message is not a JSON object")
    event = message.get("event")
    if not isinstance(event, str):
        raise TwilioProtocolError("'event' is missing or not a string")
    try:
        if event == "media":
            media = _obj(message, "media")
            payload = _str(media, "payload")
            try:
                timestamp_ms = int(media["timestamp"])
            except (KeyError, TypeError, ValueError):
                raise TwilioProtocolError("media.timestamp must be a number string") from None
            return TwilioMedia(payload, timestamp_ms)
        if event == "mark":
            return TwilioMark(_str(_obj(message, "mark"), "name"))
        if event == "start":
            start = _obj(message, "start")
            params = start.get("customParameters") or {}
            if not isinstance(params, dict):
                raise TwilioProtocolError("start.customParameters must be an object")
            return TwilioStart(
                stream_sid=_str(start, "streamSid"),
                call_sid=_str(start, "callSid"),
                account_sid=_str(start, "accountSid"),
                parameters={str(k): str(v) for k, v in params.items()},
            )
        if event == "dtmf":
            digit = _str(_obj(message, "dtmf"), "digit")
            if digit not in _DTMF_DIGITS:
                raise TwilioProtocolError(f"dtmf digit {digit!r} is not one of 0-9 * #")
            return TwilioDtmf(digit)
        if event == "stop":
            return TwilioStop()
        if event == "connected":
            return TwilioConnected(str(message.get("protocol", "")),
                                   str(message.get("version", "")))
    except KeyError as exc:
        raise TwilioProtocolError(f"{event!r} message lacks {exc.args[0]!r}") from None
    return UNHANDLED


# -- server -> Twilio -------------------------------------------------------------------
def render_media(stream_sid: str, payload_b64: str) -> str:
    return orjson.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": payload_b64}}
    ).decode()


def render_mark(stream_sid: str, name: str) -> str:
    return orjson.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).decode()


def render_clear(stream_sid: str) -> str:
    return orjson.dumps({"event": "clear", "streamSid": stream_sid}).decode()


def render_twilio(stream_sid: str, message: TwilioMessage) -> str:
    if isinstance(message, TwilioMediaOut):
        return render_media(stream_sid, message.payload_b64)
    if isinstance(message, TwilioMarkOut):
        return render_mark(stream_sid, message.name)
    if isinstance(message, TwilioClear):
        return render_clear(stream_sid)
    raise TypeError(f"not a Twilio message: {message!r}")

