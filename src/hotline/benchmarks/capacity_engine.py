"""The capacity benchmark's lean realtime engine: the OpenAI Realtime (GA) protocol as
Hotline uses it, over real WebSockets, at a few µs a message.

Per session: `session.created`, `session.updated` for each `session.update`; a
`response.create` starts a response that streams `response.output_audio.delta` in real time
(after `FIRST_AUDIO_MS`) until it is cancelled (`response.cancel` → `response.done`
cancelled) or runs `MAX_RESPONSE_MS`; a server VAD on the appended audio, heard 20 ms at a
time whatever an append's length (a frame is voiced when its first samples are not μ-law
silence), announces `speech_started`, then after
`silence_duration_ms` `speech_stopped`, `committed` and the transcription; a truncate is
answered `conversation.item.truncated`, or an error when it is past the audio sent (the
real API refuses it: a truncation must be exact). Each delta carries in its first 12
bytes when it was sent (µs, CLOCK_MONOTONIC), its response and its number, so the phone
measures the relay delay and sees lost, duplicated or reordered frames.
"""

from __future__ import annotations

import base64
import itertools
import struct
import time
from typing import Any

import orjson

from hotline.benchmarks.capacity_wire import TEXT, WsServerConnection, frame

FIRST_AUDIO_MS = 200  # a response's first audio, after response.create
MAX_RESPONSE_MS = 120_000
VOICED_FRAMES_TO_START = 3  # prefix padding: 60 ms of voice
SILENT_B64 = "////"  # μ-law 0xFF: silence (three samples)
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_B64_CHARS = 216  # its base64
TAG_BYTES = 12  # a magic byte, sent-at µs (5), response number (2), frame number (4)
TAG_MAGIC = 0xA5
_ids = itertools.count(1)


def tag(sent_us: int, response: int, seq: int) -> bytes:
    return struct.pack(">BIBHI", TAG_MAGIC, (sent_us >> 8) & 0xFFFFFFFF, sent_us & 0xFF,
                       response, seq)


def read_tag(audio_head: bytes) -> tuple[int, int, int] | None:
    """(sent-at µs mod 2^40, response, frame) from a delta's first 12 decoded bytes; None
    for audio the engine did not make (the server's own canned lines)."""
    magic, high, low, response, frame_no = struct.unpack(">BIBHI", audio_head[:TAG_BYTES])
    if magic != TAG_MAGIC:
        return None
    return high << 8 | low, response, frame_no


class DeltaAudio:
    """Pre-encoded delta audio: base64 of the 12-byte tag (16 chars, aligned) + a fixed
    tail, so one delta is a concatenation."""

    def __init__(self, delta_ms: int) -> None:
        self.delta_ms = delta_ms
        tail = bytes([0x7E, 0xFE]) * (delta_ms * 4 - TAG_BYTES // 2)  # a quiet tone
        self._b64 = base64.b64encode
        self.tail = base64.b64encode(tail).decode()

    def payload(self, response: int, seq: int) -> str:
        return (self._b64(tag(time.monotonic_ns() // 1000, response, seq)).decode()
                + self.tail)


class EngineStats:
    __slots__ = ("deltas_sent", "errors", "responses", "sessions", "truncates",
                 "truncates_past_audio", "turns")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.sessions = self.responses = self.deltas_sent = self.turns = 0
        self.truncates = self.truncates_past_audio = self.errors = 0


class EngineSession(WsServerConnection):
    """One realtime session; `tick()` (the generator's clock, every 20 ms) sends the deltas
    due."""

    path_prefix = "/v1/realtime"

    def __init__(self, sessions: set[EngineSession], audio: DeltaAudio,
                 stats: EngineStats) -> None:
        super().__init__()
        self._sessions = sessions
        self._audio = audio
        self._stats = stats
        self._instructions = ""
        self._silence_ms = 500
        self._response_id: str | None = None
        self._item_id = ""
        self._response_no = 0
        self._started_at = 0.0  # when the current response's audio starts (monotonic)
        self._sent = 0  # its deltas sent
        self._item_sent_ms: dict[str, int] = {}
        self._voiced = 0
        self._quiet_ms = 0
        self._turn_item: str | None = None
        self._input_ms = 0
        self._partial = b""  # the start of a 20 ms frame an append ended in
        self._previous_item: str | None = None
        self.on_message = self._on_message

    def opened(self, path: str, headers: dict[bytes, bytes]) -> None:
        self._sessions.add(self)
        self._stats.sessions += 1
        self._event({"type": "session.created", "session": self._session()})

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._sessions.discard(self)

    def _session(self) -> dict[str, Any]:
        return {"type": "realtime", "object": "realtime.session", "id": f"sess_{id(self)}",
                "model": "gpt-realtime", "instructions": self._instructions,
                "output_modalities": ["audio"]}

    def _event(self, event: dict[str, Any]) -> None:
        event["event_id"] = f"event_{next(_ids)}"
        self.send(frame(orjson.dumps(event), TEXT))

    # -- client events ----------------------------------------------------------------------
    def _on_message(self, opcode: int, payload: bytes) -> None:
        if payload.startswith(b'{"type":"input_audio_buffer.append","audio":"'):
            if (not self._partial
                    and payload[45 + FRAME_B64_CHARS:45 + FRAME_B64_CHARS + 1] == b'"'):
                self._hear(payload[45:49].decode() != SILENT_B64)  # one 20 ms frame
            else:
                self._hear_audio(payload[45:payload.index(b'"', 45)])
            return
        try:
            event = orjson.loads(payload)
            kind = event["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._error("invalid_request_error", "could not parse the event")
            return
        if kind == "input_audio_buffer.append":  # the same, in another key order
            self._hear_audio(str(event.get("audio", "")).encode())
        elif kind == "session.update":
            session = event.get("session") or {}
            self._instructions = session.get("instructions", self._instructions)
            vad = ((session.get("audio") or {}).get("input") or {}).get("turn_detection")
            if isinstance(vad, dict):
                self._silence_ms = int(vad.get("silence_duration_ms", self._silence_ms))
            self._event({"type": "session.updated", "session": self._session()})
        elif kind == "response.create":
            self._create_response()
        elif kind == "response.cancel":
            self._finish("cancelled")
        elif kind == "conversation.item.truncate":
            self._truncate(event)
        elif kind == "conversation.item.delete":
            self._event({"type": "conversation.item.deleted", "item_id": event.get("item_id")})
        elif kind == "conversation.item.create":
            item = dict(event.get("item") or {})
            item.setdefault("id", f"item_{next(_ids)}")
            self._event({"type": "conversation.item.added", "item": item})

    def _error(self, code: str, message: str) -> None:
        self._stats.errors += 1
        self._event({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                "message": message}})

    def _create_response(self) -> None:
        if self._response_id is not None:
            self._error("conversation_already_has_active_response",
                        "Conversation already has an active response in progress")
            return
        self._stats.responses += 1
        # Numbered by the clock all processes share (0.1 s, wrapping after ~109 min), so a
        # call's later sessions (a reconnect may land in another generator) number on.
        self._response_no = int(time.monotonic() * 10) & 0xFFFF
        self._response_id = f"resp_{next(_ids)}"
        self._item_id = f"item_{next(_ids)}"
        self._item_sent_ms[self._item_id] = 0
        self._sent = 0
        self._started_at = time.monotonic() + FIRST_AUDIO_MS / 1000
        self._event({"type": "response.created", "response": {
            "id": self._response_id, "object": "realtime.response", "status": "in_progress",
            "output": []}})
        self._event({"type": "response.output_item.added", "response_id": self._response_id,
                     "output_index": 0, "item": {"id": self._item_id, "type": "message",
                                                 "role": "assistant", "status": "in_progress"}})

    def _finish(self, status: str) -> None:
        response_id = self._response_id
        if response_id is None:
            return
        self._response_id = None
        if status == "completed":
            self._event({"type": "response.output_audio_transcript.done",
                         "response_id": response_id, "item_id": self._item_id,
                         "output_index": 0, "content_index": 0,
                         "transcript": "Let me tell you about our opening hours."})
        done: dict[str, Any] = {"id": response_id, "object": "realtime.response",
                                "status": status, "output": []}
        if status == "cancelled":
            done["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        self._event({"type": "response.done", "response": done})

    def _truncate(self, event: dict[str, Any]) -> None:
        self._stats.truncates += 1
        item_id = str(event.get("item_id"))
        end_ms = event.get("audio_end_ms")
        sent_ms = self._item_sent_ms.get(item_id)
        if sent_ms is None or not isinstance(end_ms, int) or end_ms > sent_ms:
            self._stats.truncates_past_audio += 1
            self._error("invalid_value", f"audio_end_ms {end_ms} is past the item's audio "
                                         f"({sent_ms} ms)")
            return
        self._event({"type": "conversation.item.truncated", "item_id": item_id,
                     "content_index": 0, "audio_end_ms": end_ms})

    def _hear_audio(self, audio_b64: bytes) -> None:
        """An append of any length (Hotline may send quiet audio in bigger appends): its
        audio heard 20 ms at a time, a frame it ends inside completed by the next append."""
        try:
            audio = self._partial + base64.b64decode(audio_b64, validate=True)
        except ValueError:
            self._error("invalid_value", "audio is not base64")
            return
        whole = len(audio) - len(audio) % FRAME_BYTES
        self._partial = audio[whole:]
        for at in range(0, whole, FRAME_BYTES):
            self._hear(audio[at:at + 3] != b"\xff\xff\xff")

    def _hear(self, voiced: bool) -> None:
        """Server VAD, one 20 ms frame at a time."""
        self._input_ms += 20
        if voiced:
            self._voiced += 1
            self._quiet_ms = 0
            if self._turn_item is None and self._voiced >= VOICED_FRAMES_TO_START:
                self._turn_item = f"item_{next(_ids)}"
                self._stats.turns += 1
                self._event({"type": "input_audio_buffer.speech_started",
                             "audio_start_ms": self._input_ms - 20 * VOICED_FRAMES_TO_START,
                             "item_id": self._turn_item})
            return
        self._voiced = 0
        if self._turn_item is None:
            return
        self._quiet_ms += 20
        if self._quiet_ms < self._silence_ms:
            return
        item, self._turn_item = self._turn_item, None
        self._event({"type": "input_audio_buffer.speech_stopped",
                     "audio_end_ms": self._input_ms - self._quiet_ms, "item_id": item})
        self._event({"type": "input_audio_buffer.committed", "item_id": item,
                     "previous_item_id": self._previous_item})
        self._previous_item = item
        self._event({"type": "conversation.item.input_audio_transcription.completed",
                     "item_id": item, "content_index": 0,
                     "transcript": "Sorry, when are you open on Saturday?"})

    # -- audio ------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Send the current response's deltas due by `now`, in real time."""
        if self._response_id is None or now < self._started_at:
            return
        delta_ms = self._audio.delta_ms
        due = int((now - self._started_at) * 1000 // delta_ms) + 1
        head = (b'{"type":"response.output_audio.delta","response_id":"'
                + self._response_id.encode() + b'","item_id":"' + self._item_id.encode()
                + b'","output_index":0,"content_index":0,"event_id":"event_')
        while self._sent < due:
            payload = self._audio.payload(self._response_no, self._sent)
            self.send(frame(head + str(next(_ids)).encode() + b'","delta":"'
                            + payload.encode() + b'"}', TEXT))
            self._sent += 1
            self._item_sent_ms[self._item_id] += delta_ms
            self._stats.deltas_sent += 1
        if self._sent * delta_ms >= MAX_RESPONSE_MS:
            self._event({"type": "response.output_audio.done", "response_id": self._response_id,
                         "item_id": self._item_id, "output_index": 0, "content_index": 0})
            self._finish("completed")
