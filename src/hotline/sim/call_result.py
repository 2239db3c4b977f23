"""What one simulated call did: `PhoneCallResult` and the records it holds.

Times are `time.monotonic()` seconds (`*_at`), the server's clock too when both run in
one process.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotline.audio import mulaw
from hotline.sim.script import StepRecord


@dataclass(slots=True)
class MediaReceived:
    at: float
    bytes: int


@dataclass(slots=True)
class MarkEchoed:
    name: str
    received_at: float
    echoed_at: float
    flushed_by_clear: bool


@dataclass(slots=True)
class ClearRecord:
    at: float
    played_ms_at_clear: float
    dropped_ms: float
    marks_flushed: list[str]


@dataclass(slots=True)
class DtmfSent:
    at: float
    digit: str


@dataclass(slots=True)
class ProtocolErrorRecord:
    at: float
    code: int
    message: str
    frame: str  # the offending frame, cut to 200 characters


@dataclass(slots=True)
class CallbackRecord:
    """One status callback the simulator sent, and the answer (or transport error)."""

    at: float
    call_sid: str
    event: str  # initiated | ringing | answered | completed
    call_status: str
    sequence_number: int
    url: str
    http_status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class DialRecord:
    """One `<Dial>` the phone executed: the bridged leg ran from `at` to `ended_at`."""

    at: float
    number: str
    ended_at: float | None = None


@dataclass(slots=True)
class TwimlUpdate:
    """New TwiML the live call switched to: a REST update (`api`) or a `<Redirect>` verb."""

    at: float  # when the update reached the call
    source: str  # "api" | "redirect"
    url: str | None  # fetched from here; None for inline TwiML
    twiml: str | None  # the document that ran next; None when the fetch failed


_AUDIO_FIELDS = frozenset({"heard_segments", "caller_audio"})


@dataclass(slots=True)
class PhoneCallResult:
    """Everything that happened on one simulated call. Times: `time.monotonic()` seconds."""

    call_sid: str
    account_sid: str
    direction: str
    from_number: str
    to_number: str
    webhook_url: str | None = None
    webhook_method: str = "POST"
    webhook_params: dict[str, str] = field(default_factory=dict)
    signature_forged: bool = False
    webhook_status: int | None = None
    webhook_content_type: str | None = None
    twiml: str | None = None
    verbs: list[dict[str, object]] = field(default_factory=list)
    say_texts: list[str] = field(default_factory=list)
    hangup_verb: bool = False
    dial_numbers: list[str] = field(default_factory=list)  # in the TwiML (see `dials`)
    redirect_urls: list[str] = field(default_factory=list)
    dials: list[DialRecord] = field(default_factory=list)  # the <Dial>s executed
    twiml_updates: list[TwimlUpdate] = field(default_factory=list)
    unexecuted_verb: str | None = None  # the verb the simulation stopped at, if any
    application_error: str | None = None
    application_error_code: int | None = None
    stream_url: str | None = None
    stream_url_is_wss: bool | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    stream_sid: str | None = None
    webhook_sent_at: float | None = None
    twiml_received_at: float | None = None
    socket_open_at: float | None = None
    start_sent_at: float | None = None
    first_media_at: float | None = None
    stop_sent_at: float | None = None
    socket_closed_at: float | None = None
    ended_at: float | None = None
    closed_by: str | None = None  # the last stream's socket: "phone" (Twilio) | "server"
    ended_by: str | None = None  # "phone" | "api" | "server"; None: the simulator failed
    close_code: int | None = None
    close_reason: str | None = None
    media_received: list[MediaReceived] = field(default_factory=list)
    marks_echoed: list[MarkEchoed] = field(default_factory=list)
    clears: list[ClearRecord] = field(default_factory=list)
    dtmf_sent: list[DtmfSent] = field(default_factory=list)
    frames_sent: int = 0
    max_send_lag_ms: float = 0.0
    played_ms: float = 0.0
    unplayed_ms_at_end: float = 0.0
    protocol_errors: list[ProtocolErrorRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    script_log: list[StepRecord] = field(default_factory=list)  # times: monotonic ms
    status_callbacks: list[CallbackRecord] = field(default_factory=list)
    beep_ended_at: float | None = None  # the first `Beep` step of the script ended
    amd_callback_at: float | None = None  # the async AMD verdict was sent (API calls)
    amd_answered_by: str | None = None
    amd_detection_ms: int | None = None  # its MachineDetectionDuration
    final_status: str = "completed"
    failure: str | None = None  # an exception inside the simulator itself
    heard_origin_at: float | None = None
    heard_segments: list[tuple[float, bytes]] = field(default_factory=list, repr=False)
    caller_audio: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def start_to_first_media_ms(self) -> float | None:
        """Stream `start` sent → first agent audio received: the number we live for."""
        if self.start_sent_at is None or self.first_media_at is None:
            return None
        return (self.first_media_at - self.start_sent_at) * 1000

    @property
    def webhook_to_twiml_ms(self) -> float | None:
        if self.webhook_sent_at is None or self.twiml_received_at is None:
            return None
        return (self.twiml_received_at - self.webhook_sent_at) * 1000

    @property
    def duration_s(self) -> float:
        answered = self.twiml_received_at or self.webhook_sent_at
        if answered is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - answered)

    def heard_mulaw(self) -> bytes:
        """What the caller heard, μ-law, from `heard_origin_at` to the end of the call."""
        if self.heard_origin_at is None:
            return b""
        origin = self.heard_origin_at
        end = self.ended_at or origin
        for start, audio in self.heard_segments:
            end = max(end, start + len(audio) / (mulaw.BYTES_PER_MS * 1000))
        timeline = bytearray([mulaw.SILENCE_BYTE]) * int(
            (end - origin) * 1000 * mulaw.BYTES_PER_MS)
        for start, audio in self.heard_segments:
            offset = max(0, int((start - origin) * 1000 * mulaw.BYTES_PER_MS))
            timeline[offset:offset + len(audio)] = audio
        return bytes(timeline)

    def caller_mulaw(self) -> bytes:
        """What the microphone sent, on the same timeline as `heard_mulaw`."""
        if self.heard_origin_at is None or self.start_sent_at is None:
            return b""
        lead = int((self.start_sent_at - self.heard_origin_at) * 1000 * mulaw.BYTES_PER_MS)
        return bytes([mulaw.SILENCE_BYTE]) * max(0, lead) + bytes(self.caller_audio)

    def save_wav(self, path: str | Path, *, mix_caller: bool = False) -> None:
        """Write what the caller heard (16-bit PCM 8 kHz); `mix_caller` adds their own voice."""
        heard = self.heard_mulaw()
        if mix_caller:
            heard = _mix(heard, self.caller_mulaw())
        Path(path).write_bytes(mulaw.wav_bytes_from_mulaw(heard))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name in _AUDIO_FIELDS:
                continue
            data[item.name] = _jsonable(getattr(self, item.name))
        data["heard_segments"] = [
            {"at": start, "ms": len(audio) / mulaw.BYTES_PER_MS}
            for start, audio in self.heard_segments
        ]
        data["start_to_first_media_ms"] = self.start_to_first_media_ms
        data["webhook_to_twiml_ms"] = self.webhook_to_twiml_ms
        data["duration_s"] = self.duration_s
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save_timings(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, bytes | bytearray):
        return len(value)
    return value


def _mix(a: bytes, b: bytes) -> bytes:
    length = max(len(a), len(b))
    a_pcm = mulaw.decode(a + bytes([mulaw.SILENCE_BYTE]) * (length - len(a)))
    b_pcm = mulaw.decode(b + bytes([mulaw.SILENCE_BYTE]) * (length - len(b)))
    return mulaw.encode([x + y for x, y in zip(a_pcm, b_pcm, strict=True)])

