"""The floor relay: the leanest Python relay of the capacity benchmark's traffic, to learn
what a call-second costs Python at best (`hotline bench capacity --floor`).

Not Hotline and not a product: a measuring instrument. It is run like `hotline serve`
(same environment, `--port`) so the lean phones and the lean engine cannot tell it from
Hotline by what they measure, and it does on the media path what Hotline does:

- HTTP/1.1 (keep-alive) on one port: `GET /healthz` → 200; `POST /twilio/voice` →
  `<Connect><Stream>` TwiML to this server. Signatures are NOT checked (neither the
  webhook's nor the stream's): this is the floor of the media path, not of the call set-up.
- `/twilio/media`, a WebSocket: on its opening, an engine session
  (HOTLINE_OPENAI_REALTIME_URL + `/realtime`), `session.update` (pcmu both ways, server
  VAD that creates and interrupts nothing) and `response.create` for the greeting.
- each caller frame forwarded at once as one `input_audio_buffer.append` (its base64
  sliced out, untouched); each `response.output_audio.delta` forwarded at once as a Twilio
  `media` (its base64 untouched), with a mark after the first audio of an item, after each
  further ~100 ms and after the item's last audio (as Hotline's playback does).
- a barge-in (`speech_started` while a response is under way): `clear` and
  `conversation.item.truncate` at the last echoed mark if agent audio is queued, and
  `response.cancel`; the caller's transcribed turn gets a `response.create`.

Leanest means: asyncio protocols on uvloop, the benchmark's own RFC 6455 layer
(`capacity_wire`), pre-framed writes (a media frame and its mark in one write), media and
appends never JSON-parsed (the fields are sliced out), no logging, no store. What a real
relay cannot skip, it does not: every frame to the engine is masked with a fresh random
key (RFC 6455 §5.3; the harness's own clients use the all-zero key, which a relay to the
real API may not).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import deque
from urllib.parse import urlsplit

import orjson

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.benchmarks.capacity_wire import (
    TEXT,
    WsClient,
    WsServerConnection,
    frame,
    random_masked_frame,
)

MARK_EVERY_MS = 100  # as Hotline's playback: at most this much audio without a mark
_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
_DELTA_HEAD = b'{"type":"response.output_audio.delta"'
_MEDIA_EVENT = b'{"event":"media"'
_MARK_EVENT = b'{"event":"mark"'


def _session_update() -> bytes:
    return orjson.dumps({"type": "session.update", "session": {
        "type": "realtime", "model": "gpt-realtime",
        "instructions": "You answer the phone for a small business.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcmu"},
                      "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                         "prefix_padding_ms": 300, "silence_duration_ms": 500,
                                         "create_response": False,
                                         "interrupt_response": False},
                      "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}})


class Config:
    def __init__(self, port: int, engine_url: str, api_key: str) -> None:
        self.port = port
        url = urlsplit(engine_url)
        self.engine_host = url.hostname or "127.0.0.1"
        self.engine_port = url.port or 80
        self.engine_path = url.path.rstrip("/") + "/realtime?model=gpt-realtime"
        self.engine_headers = {"Authorization": f"Bearer {api_key}"}
        self.twiml = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="'
                      b"ws://127.0.0.1:" + str(port).encode()
                      + b'/twilio/media"/></Connect></Response>')
        self.session_update = _session_update()


def _http_response(status: bytes, body: bytes, content_type: bytes = b"text/plain") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _content_length(lower_head: bytes) -> int:
    at = lower_head.find(b"content-length:")
    if at < 0:
        return 0
    end = lower_head.find(b"\r\n", at)
    return int(lower_head[at + 15:end if end > 0 else None])


class EngineSide(WsClient):
    """The call's realtime session: its events go to the call."""

    def __init__(self, host: str, path: str, headers: dict[str, str], call: TwilioSide) -> None:
        super().__init__(host, path, headers)
        self.call = call
        self.on_message = call.engine_message

    def send_text(self, text: bytes) -> None:
        self.send(random_masked_frame(text))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.call.engine_lost()


class TwilioSide(WsServerConnection):
    """One connection to the HTTP port: webhooks and health checks until it asks for the
    media stream's upgrade, then the call (both its sockets' messages)."""

    path_prefix = "/twilio/media"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self._http = b""
        self.upgraded = False
        self.engine: EngineSide | None = None
        self._to_engine: list[bytes] = []  # appends before the engine's socket is up
        self._media_head = b""
        self._mark_head = b""
        self._clear = b""
        # Playback: the current item, its audio sent (ms), what went without a mark.
        self._item = b""
        self._item_sent_ms = 0
        self._unmarked_ms = 0
        self._marks: deque[tuple[bytes, bytes, int]] = deque()  # (name, item, sent_ms)
        self._mark_seq = 0
        self._heard: tuple[bytes, int] | None = None  # (item, ms) at the last echo
        self._responding = False  # a response.create sent, its response.done not yet seen
        self.on_message = self._twilio_message

    # -- HTTP -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            super().data_received(data)
            return
        self._http += data
        while not self.upgraded:
            head_end = self._http.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._http[:head_end]
            lower = head.lower()
            length = _content_length(lower)
            if len(self._http) < head_end + 4 + length:
                return
            rest = self._http[head_end + 4 + length:]
            self._http = rest
            if b"upgrade: websocket" in lower:
                self.upgraded = True
                self._http = b""
                # The inherited handshake answers the upgrade (or 404s another path).
                super().data_received(head + b"\r\n\r\n" + rest)
                return
            self._request(head)

    def _request(self, head: bytes) -> None:
        assert self.transport is not None
        line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
        if line.startswith(b"GET /healthz"):
            self.transport.write(_http_response(b"200 OK", b'{"status":"ok"}',
                                                b"application/json"))
        elif line.startswith(b"POST /twilio/voice"):
            self.transport.write(_http_response(b"200 OK", self.config.twiml,
                                                b"application/xml"))
        else:
            self.transport.write(_http_response(b"404 Not Found", b""))

    # -- the call ---------------------------------------------------------------------------
    def opened(self, path: str, headers: dict[bytes, bytes]) -> None:
        asyncio.get_running_loop().create_task(self._connect_engine())

    async def _connect_engine(self) -> None:
        config = self.config
        host = f"{config.engine_host}:{config.engine_port}"
        try:
            _, engine = await asyncio.get_running_loop().create_connection(
                lambda: EngineSide(host, config.engine_path, config.engine_headers, self),
                config.engine_host, config.engine_port)
            if not await engine.upgraded:
                raise ConnectionError("the engine refused the upgrade")
        except OSError:
            self.close(1011)
            return
        if not self.open:  # the caller hung up meanwhile
            engine.close()
            return
        self.engine = engine
        engine.send_text(config.session_update)
        engine.send_text(b'{"type":"response.create"}')
        self._responding = True
        for message in self._to_engine:
            engine.send(message)
        self._to_engine = []

    def _to_engine_frame(self, message: bytes) -> None:
        engine = self.engine
        if engine is not None:
            engine.send(message)
        else:
            self._to_engine.append(message)

    def _twilio_message(self, opcode: int, payload: bytes) -> None:
        if payload.startswith(_MEDIA_EVENT):
            start = payload.find(b'"payload":"') + 11
            if start > 10:
                end = payload.find(b'"', start)
                self._to_engine_frame(random_masked_frame(
                    _APPEND_HEAD + payload[start:end] + b'"}'))
                return
        if payload.startswith(_MARK_EVENT):
            start = payload.find(b'"name":"') + 8
            if start > 7:
                self._mark_echoed(payload[start:payload.find(b'"', start)])
                return
        event = orjson.loads(payload)
        kind = event.get("event")
        if kind == "start":
            sid = str(event["start"]["streamSid"]).encode()
            self._media_head = b'{"event":"media","streamSid":"' + sid + b'","media":{"payload":"'
            self._mark_head = b'{"event":"mark","streamSid":"' + sid + b'","mark":{"name":"'
            self._clear = frame(b'{"event":"clear","streamSid":"' + sid + b'"}', TEXT)
        elif kind == "stop":
            self.close()
        elif kind == "media":  # another key order
            self._to_engine_frame(random_masked_frame(
                _APPEND_HEAD + str(event["media"]["payload"]).encode() + b'"}'))
        elif kind == "mark":
            self._mark_echoed(str(event["mark"]["name"]).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.engine is not None:
            self.engine.close()

    def engine_lost(self) -> None:
        self.close(1011)

    # -- playback ---------------------------------------------------------------------------
    def _mark(self) -> bytes:
        """A mark after the audio sent so far: its frame."""
        self._unmarked_ms = 0
        self._mark_seq += 1
        name = b"m" + str(self._mark_seq).encode()
        self._marks.append((name, self._item, self._item_sent_ms))
        return frame(self._mark_head + name + b'"}}', TEXT)

    def _mark_echoed(self, name: bytes) -> None:
        marks = self._marks
        if not any(m[0] == name for m in marks):
            return  # flushed by a clear, or unknown
        while marks:  # marks come back in order: all before it have played
            mark_name, item, sent_ms = marks.popleft()
            if mark_name == name:
                self._heard = (item, sent_ms)
                return

    def _audio(self, item: bytes, audio_b64: bytes) -> None:
        out = b""
        if item != self._item:
            if self._unmarked_ms:
                out = self._mark()  # the other item's last audio
            self._item, self._item_sent_ms = item, 0
        first = self._item_sent_ms == 0
        n = len(audio_b64)
        ms = (n * 3 // 4 - audio_b64.count(b"=", n - 2)) // BYTES_PER_MS
        self._item_sent_ms += ms
        self._unmarked_ms += ms
        out += frame(self._media_head + audio_b64 + b'"}}', TEXT)
        if first or self._unmarked_ms >= MARK_EVERY_MS:
            out += self._mark()
        self.send(out)

    def engine_message(self, opcode: int, payload: bytes) -> None:
        if payload.startswith(_DELTA_HEAD):
            at = payload.find(b'"item_id":"') + 11
            start = payload.find(b'"delta":"') + 9
            if at > 10 and start > 8:
                end = payload.find(b'"', start)
                self._audio(payload[at:payload.find(b'"', at)], payload[start:end])
                return
        event = orjson.loads(payload)
        kind = event.get("type")
        if kind == "response.output_audio.delta":  # another key order
            self._audio(str(event["item_id"]).encode(), str(event["delta"]).encode())
        elif kind == "response.done":
            self._responding = False
            if self._unmarked_ms:
                self.send(self._mark())  # after the item's last audio
        elif kind == "input_audio_buffer.speech_started":
            self._barge_in()
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._answer()

    def _answer(self) -> None:
        """The caller's turn, transcribed: a reply (unless one is still under way)."""
        if not self._responding and self.engine is not None:
            self.engine.send_text(b'{"type":"response.create"}')
            self._responding = True

    def _barge_in(self) -> None:
        engine = self.engine
        if engine is None:
            return
        if self._marks or self._unmarked_ms:  # agent audio is queued at Twilio
            self.send(self._clear)
            heard = self._heard
            end_ms = heard[1] if heard is not None and heard[0] == self._item else 0
            engine.send_text(b'{"type":"conversation.item.truncate","item_id":"' + self._item
                             + b'","content_index":0,"audio_end_ms":'
                             + str(end_ms).encode() + b"}")
            self._marks.clear()  # the flushed ones come back: ignored
            self._unmarked_ms = 0
        if self._responding:
            engine.send_text(b'{"type":"response.cancel"}')


async def serve(config: Config) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TwilioSide(config), "127.0.0.1", config.port,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


def floor_main() -> None:
    """`python -c ... --port N`, with HOTLINE_OPENAI_REALTIME_URL and HOTLINE_OPENAI_API_KEY
    as `hotline serve` has them."""
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = Config(args.port, os.environ["HOTLINE_OPENAI_REALTIME_URL"],
                    os.environ.get("HOTLINE_OPENAI_API_KEY", ""))
    uvloop.run(serve(config))
