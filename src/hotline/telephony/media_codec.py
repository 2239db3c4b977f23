"""Twilio Media Streams codec: wire text <-> call events. Knows nothing of the engine.

Validation happens once, here, at the edge: a size cap, one `orjson.loads`, direct key
access, a type and range check of every field used. Anything off-protocol raises
`TwilioProtocolError` (and nothing else does); the runner counts it, logs the first one of
the call and goes on. Audio payloads stay base64 `str`, never decoded: they are checked to
be base64 (any byte is a valid μ-law sample) so no garbage is forwarded to the engine.

A message naming another stream than the call's (`streamSid`) is off-protocol too: one
WebSocket carries one stream, so it is skipped like any malformed message, not acted on.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from hotline.audio.wire_b64 import is_audio_b64
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

# Twilio's messages are small: a 20 ms media frame is ~300 bytes, a `start` with its custom
# parameters ~1 kB. uvicorn refuses bigger frames before they are read (`ws_max_size`).
MAX_MESSAGE_BYTES = 64 * 1024
# A media timestamp is ms since the stream started; a call lasts at most 24 h at Twilio.
MAX_TIMESTAMP_MS = 24 * 3600 * 1000
_DTMF_DIGITS = frozenset("0123456789*#")


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _sid(obj: dict[str, Any], key: str) -> str:
    value = _str(obj, key)
    if not value:
        raise TwilioProtocolError(f"{key!r} is empty")
    return value


def _timestamp_ms(media: dict[str, Any]) -> int:
    raw = media["timestamp"]
    try:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise TypeError
        value = int(raw)
    except (TypeError, ValueError):
        raise TwilioProtocolError("media.timestamp must be a number string") from None
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise TwilioProtocolError(f"media.timestamp {value} is out of range")
    return value


def _parameters(start: dict[str, Any]) -> dict[str, str]:
    params = start.get("customParameters") or {}
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise TwilioProtocolError("start.customParameters must be an object of strings")
    return params


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj[key]
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{key!r} must be an object")
    return value


def parse_twilio(text: str | bytes, stream_sid: str | None = None) -> TwilioEvent | Unhandled:
    """One Media Streams message -> an event; UNHANDLED for well-formed events we ignore.

    With `stream_sid` (the call's, once started), a message naming another stream raises."""
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
    if stream_sid is not None:
        sid = message.get("streamSid")
        if sid is not None and sid != stream_sid:
            raise TwilioProtocolError(f"{event!r} message for another stream")
    try:
        if event == "media":
            media = _obj(message, "media")
            payload = _str(media, "payload")
            if not is_audio_b64(payload):
                raise TwilioProtocolError("media.payload is not base64 audio")
            return TwilioMedia(payload, _timestamp_ms(media))
        if event == "mark":
            return TwilioMark(_str(_obj(message, "mark"), "name"))
        if event == "start":
            start = _obj(message, "start")
            return TwilioStart(
                stream_sid=_sid(start, "streamSid"),
                call_sid=_sid(start, "callSid"),
                account_sid=_sid(start, "accountSid"),
                parameters=dict(_parameters(start)),
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
@functools.lru_cache(maxsize=4096)
def _media_head(stream_sid: str) -> str:
    return '{"event":"media","streamSid":' + orjson.dumps(stream_sid).decode() + \
        ',"media":{"payload":"'


def render_media(stream_sid: str, payload_b64: str) -> str:
    """The hottest message out, from a template when nothing in the payload needs escaping
    (it is base64: the engine's, checked by its codec, or our own recordings); the stream
    id is escaped once per call. A third of `orjson.dumps` on a dict."""
    if '"' in payload_b64 or "\\" in payload_b64:
        return orjson.dumps({"event": "media", "streamSid": stream_sid,
                             "media": {"payload": payload_b64}}).decode()
    return _media_head(stream_sid) + payload_b64 + '"}}'


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

