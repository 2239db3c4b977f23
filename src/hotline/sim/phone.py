"""A simulated phone: plays one call against a Hotline server the way Twilio does.

The call, in Twilio's order:

1. Voice webhook: a form-encoded POST (or GET) of the call's parameters to the server,
   signed with `X-Twilio-Signature` over the exact URL and sorted params (the twilio SDK's
   `RequestValidator.compute_signature`). A non-2xx answer or TwiML Twilio would reject
   ends the call with an "application error" (recorded, never raised).
2. TwiML, verb by verb: `<Say>` is spoken into what the caller hears, `<Pause>` waits,
   `<Connect><Stream>` opens the media stream; `<Hangup>`/`<Reject>` end the call.
   `<Dial>` bridges the call to the number for `dial_leg_ms` (a simulated far end that
   hangs up at once by default), then the TwiML goes on. `<Redirect>` fetches its URL
   (signed, `CallStatus=in-progress`) and runs that TwiML instead. `action` URLs and
   other verbs are recorded and end the simulation there.
3. Media stream: a WebSocket to the `<Stream>` URL, its upgrade signed like a GET. The phone
   sends `connected`, `start`, a `media` frame every 20 ms (paced on the monotonic clock
   without drift: frame k goes at t0 + k·20 ms) carrying what the call script says, `dtmf`
   for key presses, and `stop` before it hangs up. What the server sends is played out at
   real time (`Playout`): marks come back when the audio before them has played, `clear`
   drops the unplayed audio and returns every pending mark at once.

Call control from outside, as Twilio's REST API does it (`TwilioApiSimulator` calls these):
`PhoneCall.complete()` ends the call (`Status=completed`): the stream gets `stop` and is
closed from Twilio's side. `PhoneCall.redirect(twiml=…)` / `redirect(url=…)` ends the verb
that is running (a stream gets `stop` and is closed the same way) and runs the new TwiML.
`PhoneCallResult.ended_by` says who ended the call: `phone` (the script or `hangup()`),
`api` (`complete()`) or `server` (its TwiML ran out or hung up).

`Playout` is the pure core of step 3 (no clock, no I/O: every method takes `now_ms`), so
its bookkeeping is tested without sockets. `PhoneCall` is the I/O around it: it owns the
HTTP client, the socket, the clock and two tasks (the socket reader and the mark echoer);
the microphone runs in the call's own task. All times in a `PhoneCallResult` are
`time.monotonic()` seconds (`*_at`), the server's clock too when both run in one process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime
import email.utils
import json
import logging
import math
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import orjson
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from hotline.audio import mulaw
from hotline.sim import speech
from hotline.sim.script import AgentAudio, CallScript, ScriptRunner, StepRecord
from hotline.sim.twiml import (
    Connect,
    Dial,
    Hangup,
    OtherVerb,
    Pause,
    Redirect,
    Reject,
    Say,
    StartStream,
    Stream,
    Twiml,
    TwimlError,
    parse_twiml,
)

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
WEBHOOK_TIMEOUT_S = 15.0  # Twilio waits 15 s for a webhook answer
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
STREAM_USER_AGENT = "Twilio.TmeWs/1.0"
FRAME_S = mulaw.FRAME_MS / 1000

# Twilio error codes the phone reports (https://www.twilio.com/docs/api/errors/NNNNN)
HTTP_RETRIEVAL_FAILURE = 11200
STREAM_HANDSHAKE_ERROR = 31920
STREAM_INVALID_SCHEME = 31922
STREAM_PROTOCOL_ERROR = 31924


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    return "MZ" + secrets.token_hex(16)


def rfc2822_now() -> str:
    """`Tue, 14 Oct 2025 16:07:21 +0000`, as Twilio writes timestamps."""
    return email.utils.format_datetime(datetime.datetime.now(datetime.UTC).replace(microsecond=0))


# -- playout: the pure core -----------------------------------------------------------------
@dataclass(slots=True)
class PendingMark:
    name: str
    received_ms: float
    due_ms: float  # when the audio queued before it has played
    flushed: bool = False  # returned early by a clear


@dataclass(slots=True)
class ClearOutcome:
    played_ms: float  # played on the call so far (cumulative)
    dropped_ms: float  # queued audio discarded
    flushed: list[str]  # marks returned early, in order


@dataclass(slots=True)
class _Segment:
    start_ms: float
    audio: bytes

    @property
    def end_ms(self) -> float:
        return self.start_ms + len(self.audio) / mulaw.BYTES_PER_MS


class Playout:
    """Twilio's playback buffer: audio plays at 8 bytes/ms in arrival order, back to back.

    Audio that arrives while the line is idle starts at once; audio that arrives while
    something plays starts when that ends. A mark is due when the audio queued before it
    has played (at once if nothing is queued). Bookkeeping is in bytes, so played + dropped
    is exactly what arrived.
    """

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._finished = 0  # segments[:_finished] have played to their end
        self._finished_bytes = 0
        self._busy_until_ms = -math.inf
        self._marks: deque[PendingMark] = deque()

    def enqueue_audio(self, audio: bytes, now_ms: float) -> None:
        if not audio:
            return
        segment = _Segment(max(now_ms, self._busy_until_ms), audio)
        self._segments.append(segment)
        self._busy_until_ms = segment.end_ms

    def enqueue_mark(self, name: str, now_ms: float) -> PendingMark:
        mark = PendingMark(name, now_ms, max(now_ms, self._busy_until_ms))
        self._marks.append(mark)
        return mark

    def pop_due_marks(self, now_ms: float) -> list[PendingMark]:
        due: list[PendingMark] = []
        while self._marks and self._marks[0].due_ms <= now_ms:
            due.append(self._marks.popleft())
        return due

    def next_mark_due_ms(self) -> float | None:
        return self._marks[0].due_ms if self._marks else None

    def played_bytes(self, now_ms: float) -> int:
        self._advance(now_ms)
        played = self._finished_bytes
        if self._finished < len(self._segments):
            played += self._partial_bytes(self._segments[self._finished], now_ms)
        return played

    def played_ms(self, now_ms: float) -> float:
        return self.played_bytes(now_ms) / mulaw.BYTES_PER_MS

    def last_heard_ms(self, now_ms: float) -> float | None:
        """When agent audio last played: `now_ms` while playing, None if nothing has."""
        self._advance(now_ms)
        if (self._finished < len(self._segments)
                and self._segments[self._finished].start_ms < now_ms):
            return now_ms
        if self._finished:
            return self._segments[self._finished - 1].end_ms
        return None

    def clear(self, now_ms: float) -> ClearOutcome:
        """Drop the unplayed audio; every mark not yet due becomes due now (flushed)."""
        played = self.played_bytes(now_ms)
        dropped = self._truncate(now_ms)
        flushed: list[str] = []
        for mark in self._marks:
            if mark.due_ms > now_ms:
                mark.due_ms = now_ms
                mark.flushed = True
                flushed.append(mark.name)
        return ClearOutcome(played / mulaw.BYTES_PER_MS, dropped / mulaw.BYTES_PER_MS, flushed)

    def finish(self, now_ms: float) -> int:
        """The line went down: stop playing. Returns the bytes that never played."""
        self.played_bytes(now_ms)
        return self._truncate(now_ms)

    def heard(self) -> list[tuple[float, bytes]]:
        """(start_ms, audio) of everything queued; after `finish`, exactly what played."""
        return [(segment.start_ms, segment.audio) for segment in self._segments]

    def _advance(self, now_ms: float) -> None:
        segments = self._segments
        while self._finished < len(segments) and segments[self._finished].end_ms <= now_ms:
            self._finished_bytes += len(segments[self._finished].audio)
            self._finished += 1

    @staticmethod
    def _partial_bytes(segment: _Segment, now_ms: float) -> int:
        if now_ms <= segment.start_ms:
            return 0
        return min(len(segment.audio), int((now_ms - segment.start_ms) * mulaw.BYTES_PER_MS))

    def _truncate(self, now_ms: float) -> int:
        """Cut playback at `now_ms` (after `_advance(now_ms)`); returns the bytes dropped."""
        dropped = 0
        index = self._finished
        if index < len(self._segments):
            current = self._segments[index]
            keep = self._partial_bytes(current, now_ms)
            dropped += len(current.audio) - keep
            for later in self._segments[index + 1:]:
                dropped += len(later.audio)
            del self._segments[index + 1:]
            if keep:
                current.audio = current.audio[:keep]
                self._finished_bytes += keep
                self._finished += 1
            else:
                del self._segments[index]
        self._busy_until_ms = self._segments[-1].end_ms if self._segments else -math.inf
        return dropped


# -- the result -----------------------------------------------------------------------------
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


# -- signed requests, as Twilio makes them ----------------------------------------------------
def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None, *,
                     forge: bool = False) -> str:
    """`X-Twilio-Signature` for `url` (+ POST params); `forge` signs with a wrong token."""
    token = auth_token + "-forged" if forge else auth_token
    return str(RequestValidator(token).compute_signature(url, params or {}))


def route(url: str, connect_to: str | None) -> str:
    """Where to actually send a request for `url`: `connect_to`'s scheme and host, if given.

    Twilio signs the URL it was given even when a TLS-terminating proxy sits in front of
    the server; routing keeps that URL for signing while reaching a local address.
    """
    if connect_to is None:
        return url
    target = urlsplit(connect_to)
    parts = urlsplit(url)
    scheme = target.scheme
    if parts.scheme in ("ws", "wss"):
        scheme = {"http": "ws", "https": "wss"}.get(target.scheme, target.scheme)
    return urlunsplit((scheme, target.netloc, parts.path, parts.query, parts.fragment))


async def send_twilio_request(
    http: httpx.AsyncClient, url: str, params: dict[str, str], *, auth_token: str,
    method: str = "POST", connect_to: str | None = None, forge: bool = False,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
) -> httpx.Response:
    """A webhook or status callback: form-encoded POST (GET: params in the query), signed.

    Raises `httpx.HTTPError` when the server can't be reached or doesn't answer in time.
    """
    headers = {
        "User-Agent": WEBHOOK_USER_AGENT,
        "Accept": "*/*",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "X-Home-Region": "us1",
    }
    if method.upper() == "GET":
        separator = "&" if urlsplit(url).query else "?"
        full_url = url + separator + urlencode(params) if params else url
        headers["X-Twilio-Signature"] = twilio_signature(auth_token, full_url, forge=forge)
        return await http.get(route(full_url, connect_to), headers=headers, timeout=timeout_s)
    headers["X-Twilio-Signature"] = twilio_signature(auth_token, url, params, forge=forge)
    return await http.post(route(url, connect_to), data=params, headers=headers,
                           timeout=timeout_s)


# -- the phone ------------------------------------------------------------------------------
class SimulatedPhone:
    """Places simulated calls to one server. Many calls may run at once.

    `connect_to` (`http://host:port`): send every request and stream connection there,
    whatever host the URLs name, while signing the URLs as given. `dial_leg_ms`: how long
    the far end of a `<Dial>` stays on the line before it hangs up. `call_listeners` are
    told of every call this phone starts (`TwilioApiSimulator.attach_phone` uses this to
    make the calls known to the REST API).
    """

    def __init__(self, *, server_url: str, auth_token: str, account_sid: str,
                 http: httpx.AsyncClient | None = None, connect_to: str | None = None,
                 dial_leg_ms: int = 0) -> None:
        self.server_url = server_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.connect_to = connect_to
        self.dial_leg_ms = dial_leg_ms
        self.call_listeners: list[Callable[[PhoneCall], None]] = []
        self._http = http

    async def call(self, *, to: str, from_: str, script: CallScript, direction: str = "inbound",
                   call_sid: str | None = None, webhook_url: str | None = None,
                   status_callback: str | None = None, forge_signature: bool = False,
                   extra_params: dict[str, str] | None = None) -> PhoneCallResult:
        """Play one call to the end and return what happened (never raises for the server)."""
        call = self.start_call(
            to=to, from_=from_, script=script, direction=direction, call_sid=call_sid,
            webhook_url=webhook_url, status_callback=status_callback,
            forge_signature=forge_signature, extra_params=extra_params)
        return await call.wait()

    def start_call(self, *, to: str, from_: str, script: CallScript,
                   direction: str = "inbound", call_sid: str | None = None,
                   webhook_url: str | None = None, webhook_method: str = "POST",
                   twiml: str | None = None, call_status: str | None = None,
                   status_callback: str | None = None, status_callback_method: str = "POST",
                   forge_signature: bool = False,
                   extra_params: dict[str, str] | None = None) -> PhoneCall:
        """Start a call as a task; the returned `PhoneCall` can be hung up or awaited.

        `twiml`: run this TwiML instead of fetching the webhook (Calls.create `Twiml=`).
        `call_status`: the webhook's `CallStatus` (default `ringing` inbound, else
        `in-progress`).
        """
        call = PhoneCall(
            phone=self, to=to, from_=from_, script=script, direction=direction,
            call_sid=call_sid or new_call_sid(),
            webhook_url=webhook_url or f"{self.server_url}/twilio/voice",
            webhook_method=webhook_method.upper(), twiml=twiml,
            call_status=call_status or ("ringing" if direction == "inbound" else "in-progress"),
            status_callback=status_callback, status_callback_method=status_callback_method,
            forge_signature=forge_signature, extra_params=dict(extra_params or {}))
        call.start()
        for listener in self.call_listeners:
            listener(call)
        return call


@dataclass(slots=True)
class _PendingUpdate:
    """TwiML the call switches to once the running verb has ended."""

    at: float
    source: str  # "api" | "redirect"
    twiml: str | None = None
    url: str | None = None
    method: str = "POST"


class PhoneCall:
    """One call in progress: `await wait()` for its result, or control it from outside.

    `hangup()`: the person on the phone hangs up. `complete()` and `redirect()`: what
    Twilio does on a REST update (`Status=completed`, `Twiml`/`Url`).
    """

    def __init__(self, *, phone: SimulatedPhone, to: str, from_: str, script: CallScript,
                 direction: str, call_sid: str, webhook_url: str, webhook_method: str,
                 twiml: str | None, call_status: str, status_callback: str | None,
                 status_callback_method: str, forge_signature: bool,
                 extra_params: dict[str, str]) -> None:
        self._phone = phone
        self._script = script
        self._twiml = twiml
        self._call_status = call_status
        self._status_callback = status_callback
        self._status_callback_method = status_callback_method
        self._forge = forge_signature
        self._extra_params = extra_params
        self.result = PhoneCallResult(
            call_sid=call_sid, account_sid=phone.account_sid, direction=direction,
            from_number=from_, to_number=to,
            webhook_url=None if twiml is not None else webhook_url,
            webhook_method=webhook_method, signature_forged=forge_signature)
        self._hangup = asyncio.Event()
        # Set with `_hangup` or a pending update: whatever verb is running ends now.
        self._interrupt = asyncio.Event()
        self._update: _PendingUpdate | None = None
        self._executing = False  # a TwiML document has started to run (call answered)
        self._beep_ended = asyncio.Event()
        self._playout = Playout()
        self._heard_taken = 0  # playout segments already copied into the result
        self._runner: ScriptRunner | None = None
        self._stream_sid = ""
        self._sequence = 0
        self._server_closed = False
        self._phone_closing = False
        self._marks_changed = asyncio.Event()
        self._task: asyncio.Task[PhoneCallResult] | None = None
        self._log = logging.LoggerAdapter(log, {"call_sid": call_sid})

    @property
    def call_sid(self) -> str:
        return self.result.call_sid

    @property
    def task(self) -> asyncio.Task[PhoneCallResult]:
        assert self._task is not None, "PhoneCall.start() not called"
        return self._task

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"phone-call-{self.call_sid}")

    def hangup(self) -> None:
        """The caller hangs up: the phone sends `stop` and closes the stream (if open)."""
        self._end("phone")

    def complete(self) -> None:
        """REST `Status=completed`: Twilio ends the call (`stop`, then it closes the stream)."""
        self._end("api")

    def redirect(self, *, twiml: str | None = None, url: str | None = None,
                 method: str = "POST") -> None:
        """REST `Twiml`/`Url` update: end the running verb, then run the new TwiML.

        `url` is fetched like the voice webhook (signed, `CallStatus=in-progress`); with
        both, `url` wins, as on Twilio. A later update replaces one not yet taken.
        """
        if twiml is None and url is None:
            raise ValueError("redirect needs twiml or url")
        self._update = _PendingUpdate(
            at=time.monotonic(), source="api", twiml=None if url else twiml, url=url,
            method=method.upper())
        self._interrupt.set()

    @property
    def in_progress(self) -> bool:
        """Answered (its TwiML is running) and not over: what Twilio calls `in-progress`."""
        return self._executing and not self._hangup.is_set() and not self.done()

    async def wait_beep_ended(self) -> float:
        """When the callee's first `Beep` step ended (waits for it; monotonic seconds)."""
        await self._beep_ended.wait()
        assert self.result.beep_ended_at is not None
        return self.result.beep_ended_at

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def _end(self, by: str) -> None:
        """End the call; the first to end it is who ended it."""
        if self.result.ended_by is None:
            self.result.ended_by = by
        self._hangup.set()
        self._interrupt.set()

    async def wait(self) -> PhoneCallResult:
        return await asyncio.shield(self.task)

    async def run(self) -> PhoneCallResult:
        result = self.result
        http = self._phone._http
        own_http = http is None
        if http is None:
            http = httpx.AsyncClient(trust_env=False)
        try:
            try:
                await self._run(http)
            except Exception as exc:  # the simulator's own bug: record it, end the call
                self._log.exception("simulated call failed")
                result.failure = f"{type(exc).__name__}: {exc}"
            finally:
                result.ended_at = time.monotonic()
                if result.ended_by is None and result.failure is None:
                    result.ended_by = "server"  # its TwiML ran out, or hung up
            if self._status_callback:
                await self._send_completed_callback(http)
        finally:
            if own_http:
                await http.aclose()
        return result

    # -- the call, verb by verb -------------------------------------------------------------
    async def _run(self, http: httpx.AsyncClient) -> None:
        result = self.result
        self._runner = await asyncio.to_thread(ScriptRunner, self._script)
        if self._twiml is not None:
            text: str | None = self._twiml
            result.twiml_received_at = time.monotonic()
        else:
            text = await self._fetch_twiml(http)
        if text is None:
            return
        result.twiml = text
        document = self._parse(text)
        if document is not None:
            result.heard_origin_at = result.twiml_received_at
            self._executing = True
        while document is not None:
            document = await self._execute(document, http)

    def _parse(self, text: str) -> Twiml | None:
        try:
            document = parse_twiml(text)
        except TwimlError as exc:
            self._application_error(exc.code, exc.message)
            return None
        result = self.result
        result.verbs.extend(document.describe())
        result.say_texts.extend(document.say_texts)
        result.hangup_verb = result.hangup_verb or document.has_hangup
        result.dial_numbers.extend(document.dial_numbers)
        result.redirect_urls.extend(document.redirect_urls)
        return document

    async def _execute(self, document: Twiml, http: httpx.AsyncClient) -> Twiml | None:
        """Run one document's verbs; returns the TwiML to run next, None when the call ends."""
        result = self.result
        for verb in document.verbs:
            if self._hangup.is_set():
                return None
            if self._update is not None:
                break
            match verb:
                case Say():
                    await self._say(verb)
                case Pause(length_s=length_s):
                    await self._wait_or_interrupt(length_s)
                case Connect(stream=Stream() as stream):
                    await self._stream(stream)
                    if self._interrupt.is_set():
                        continue  # hung up or updated: the loop's checks say which
                    if result.closed_by != "server":
                        return None  # the stream never opened: an application error
                    if verb.action:
                        result.unexecuted_verb = "Connect action"
                        result.warnings.append(f"<Connect action={verb.action!r}> not followed")
                        return None
                case Dial():
                    if not await self._dial(verb):
                        return None
                case Redirect(url=url, method=method):
                    self._update = _PendingUpdate(at=time.monotonic(), source="redirect",
                                                  url=url, method=method)
                    break
                case Hangup() | Reject():
                    return None
                case StartStream():
                    result.warnings.append("<Start><Stream> is not simulated; skipped")
                case Connect() | OtherVerb():
                    name = verb.name if isinstance(verb, OtherVerb) else type(verb).__name__
                    result.unexecuted_verb = name
                    return None
        return await self._take_update(http)

    async def _take_update(self, http: httpx.AsyncClient) -> Twiml | None:
        """The pending update's TwiML (fetched if it names a URL); None: the call ends."""
        while (update := self._update) is not None and not self._hangup.is_set():
            self._update = None
            self._interrupt.clear()  # not hung up (checked above): the new TwiML may run
            text = update.twiml
            if update.url is not None:
                text = await self._fetch_update(http, update.url, update.method)
            self.result.twiml_updates.append(TwimlUpdate(update.at, update.source, update.url,
                                                         text))
            if self._update is not None:
                continue  # replaced by a newer update while this one was fetched
            return self._parse(text) if text is not None else None
        return None

    async def _dial(self, verb: Dial) -> bool:
        """Bridge to the number for `dial_leg_ms`; False when the call ends here."""
        record = DialRecord(at=time.monotonic(), number=verb.number)
        self.result.dials.append(record)
        await self._wait_or_interrupt(self._phone.dial_leg_ms / 1000)
        record.ended_at = time.monotonic()
        action = verb.attributes.get("action")
        if action and not self._interrupt.is_set():
            self.result.unexecuted_verb = "Dial action"
            self.result.warnings.append(f"<Dial action={action!r}> not followed")
            return False
        return True

    async def _fetch_twiml(self, http: httpx.AsyncClient) -> str | None:
        result = self.result
        assert result.webhook_url is not None
        params = self._call_params(self._call_status)
        result.webhook_params = params
        result.webhook_sent_at = time.monotonic()
        try:
            response = await self._request_twiml(http, result.webhook_url,
                                                 result.webhook_method, params)
        except httpx.HTTPError as exc:
            self._application_error(HTTP_RETRIEVAL_FAILURE,
                                    f"webhook failed: {type(exc).__name__}: {exc}")
            return None
        result.twiml_received_at = time.monotonic()
        result.webhook_status = response.status_code
        result.webhook_content_type = response.headers.get("content-type")
        if not 200 <= response.status_code < 300:
            result.twiml = response.text
            self._application_error(HTTP_RETRIEVAL_FAILURE,
                                    f"webhook answered HTTP {response.status_code}")
            return None
        return response.text

    async def _fetch_update(self, http: httpx.AsyncClient, url: str, method: str) -> str | None:
        """TwiML from an update's or a `<Redirect>`'s URL; None (application error) if not."""
        try:
            response = await self._request_twiml(http, url, method,
                                                 self._call_params("in-progress"))
        except httpx.HTTPError as exc:
            self._application_error(HTTP_RETRIEVAL_FAILURE,
                                    f"{url} failed: {type(exc).__name__}: {exc}")
            return None
        if not 200 <= response.status_code < 300:
            self._application_error(HTTP_RETRIEVAL_FAILURE,
                                    f"{url} answered HTTP {response.status_code}")
            return None
        return response.text

    async def _request_twiml(self, http: httpx.AsyncClient, url: str, method: str,
                             params: dict[str, str]) -> httpx.Response:
        return await send_twilio_request(
            http, url, params, auth_token=self._phone.auth_token, method=method,
            connect_to=self._phone.connect_to, forge=self._forge)

    def _call_params(self, call_status: str) -> dict[str, str]:
        result = self.result
        params = {
            "AccountSid": result.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": result.call_sid,
            "CallStatus": call_status,
            "Called": result.to_number,
            "Caller": result.from_number,
            "Direction": result.direction,
            "From": result.from_number,
            "To": result.to_number,
        }
        params.update(self._extra_params)
        return params

    def _application_error(self, code: int, message: str) -> None:
        self.result.application_error = message
        self.result.application_error_code = code
        self._log.info("application error %d: %s", code, message)

    async def _say(self, verb: Say) -> None:
        language = (verb.language or "en").split("-")[0].lower()
        audio = await asyncio.to_thread(speech.synthesize, verb.text, language, verb.voice or "")
        audio *= max(1, verb.loop)
        if self._interrupt.is_set():
            return  # hung up or updated while the speech was being made
        started = time.monotonic()
        segments = self.result.heard_segments
        segments.append((started, audio))
        index = len(segments) - 1
        await self._wait_or_interrupt(len(audio) / (mulaw.BYTES_PER_MS * 1000))
        if self._interrupt.is_set():  # cut off: the caller heard only the start
            cut = int((time.monotonic() - started) * 1000 * mulaw.BYTES_PER_MS)
            segments[index] = (started, audio[:cut])

    async def _wait_or_interrupt(self, seconds: float) -> None:
        """A verb that takes time: it ends early on a hang-up or an update."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), timeout=seconds)

    async def _send_completed_callback(self, http: httpx.AsyncClient) -> None:
        assert self._status_callback is not None
        params = self._call_params("completed")
        params.update({
            "CallDuration": str(math.ceil(self.result.duration_s)),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
            "Timestamp": rfc2822_now(),
        })
        record = CallbackRecord(at=time.monotonic(), call_sid=self.call_sid, event="completed",
                                call_status="completed", sequence_number=0,
                                url=self._status_callback)
        try:
            response = await send_twilio_request(
                http, self._status_callback, params, auth_token=self._phone.auth_token,
                method=self._status_callback_method, connect_to=self._phone.connect_to)
            record.http_status = response.status_code
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        self.result.status_callbacks.append(record)

    # -- the media stream -------------------------------------------------------------------
    async def _stream(self, stream: Stream) -> None:
        result = self.result
        url = stream.url
        parts = urlsplit(url)
        result.stream_url = url
        result.stream_url_is_wss = parts.scheme == "wss"
        result.custom_parameters = dict(stream.parameters)
        if parts.scheme not in ("ws", "wss"):
            self._application_error(STREAM_INVALID_SCHEME, f"stream URL scheme is not wss: {url}")
            return
        if parts.scheme != "wss":
            result.warnings.append(f"{STREAM_INVALID_SCHEME}: stream URL is not wss:// ({url})")
        if parts.query:
            result.warnings.append(f"stream URL has a query string, which Twilio does not "
                                   f"support ({url}); use <Parameter>")
        signature = twilio_signature(self._phone.auth_token, url, forge=self._forge)
        try:
            ws = await websockets.connect(
                route(url, self._phone.connect_to),
                additional_headers={"X-Twilio-Signature": signature},
                user_agent_header=STREAM_USER_AGENT, compression=None, proxy=None,
                open_timeout=10, ping_interval=None, close_timeout=5)
        except (WebSocketException, OSError, TimeoutError) as exc:
            self._application_error(STREAM_HANDSHAKE_ERROR,
                                    f"stream handshake failed: {type(exc).__name__}: {exc}")
            return
        result.socket_open_at = time.monotonic()
        self._stream_sid = new_stream_sid()
        result.stream_sid = self._stream_sid
        self._sequence = 0
        self._server_closed = self._phone_closing = False
        reader = asyncio.create_task(self._read(ws), name=f"phone-read-{self.call_sid}")
        echoer = asyncio.create_task(self._echo_marks(ws), name=f"phone-marks-{self.call_sid}")
        try:
            await self._talk(ws)
            if not self._server_closed:
                with contextlib.suppress(ConnectionClosed):
                    await self._send(ws, "stop", {"stop": {
                        "accountSid": result.account_sid, "callSid": result.call_sid}})
                    result.stop_sent_at = time.monotonic()
                self._phone_closing = True
                await ws.close(code=1000)
            await asyncio.wait_for(asyncio.shield(reader), timeout=10)
        finally:
            for task in (echoer, reader):
                task.cancel()
            await asyncio.gather(echoer, reader, return_exceptions=True)
            if ws.state is not websockets.State.CLOSED:
                self._phone_closing = True
                await ws.close()
            # One playout for the whole call (the script counts agent audio per call);
            # audio still queued when a stream ends never plays.
            end = result.socket_closed_at or time.monotonic()
            unplayed = self._playout.finish(end * 1000)
            result.unplayed_ms_at_end += unplayed / mulaw.BYTES_PER_MS
            result.played_ms = self._playout.played_ms(end * 1000)
            heard = self._playout.heard()
            result.heard_segments.extend(
                (start_ms / 1000, audio) for start_ms, audio in heard[self._heard_taken:])
            self._heard_taken = len(heard)
            if self._runner is not None:
                result.script_log = self._runner.log

    async def _send(self, ws: ClientConnection, event: str, body: dict[str, object]) -> None:
        """Every message after `connected` carries the next sequenceNumber, as a string."""
        self._sequence += 1
        message = {"event": event, "sequenceNumber": str(self._sequence),
                   "streamSid": self._stream_sid, **body}
        await ws.send(orjson.dumps(message).decode())

    async def _talk(self, ws: ClientConnection) -> None:
        """`connected`, `start`, then a media frame every 20 ms until someone hangs up."""
        result = self.result
        runner = self._runner
        assert runner is not None
        try:
            await ws.send(orjson.dumps(
                {"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
            await self._send(ws, "start", {"start": {
                "accountSid": result.account_sid,
                "streamSid": self._stream_sid,
                "callSid": result.call_sid,
                "tracks": ["inbound"],
                "customParameters": result.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }})
            t0 = result.start_sent_at = time.monotonic()
            chunk = 1
            while True:
                due = t0 + chunk * FRAME_S
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._interrupt.is_set() or self._server_closed:
                    return
                now = time.monotonic()
                result.max_send_lag_ms = max(result.max_send_lag_ms, (now - due) * 1000)
                now_ms = now * 1000
                tick = runner.tick(now_ms, AgentAudio(self._playout.played_ms(now_ms),
                                                      self._playout.last_heard_ms(now_ms)))
                self._note_beep(runner)
                for digit in tick.digits:
                    await self._send(ws, "dtmf", {"dtmf": {"track": "inbound_track",
                                                           "digit": digit}})
                    result.dtmf_sent.append(DtmfSent(time.monotonic(), digit))
                if tick.hangup or tick.frame is None:
                    self._end("phone")
                    return
                await self._send(ws, "media", {"media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str((chunk - 1) * mulaw.FRAME_MS),
                    "payload": base64.b64encode(tick.frame).decode(),
                }})
                result.caller_audio += tick.frame
                result.frames_sent += 1
                chunk += 1
        except ConnectionClosed:
            self._server_closed = True

    def _note_beep(self, runner: ScriptRunner) -> None:
        """The callee's beep just ended: what DetectMessageEnd AMD is waiting for."""
        if runner.beep_ended_ms is not None and self.result.beep_ended_at is None:
            self.result.beep_ended_at = runner.beep_ended_ms / 1000
            self._beep_ended.set()

    async def _read(self, ws: ClientConnection) -> None:
        result = self.result
        try:
            async for message in ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            result.socket_closed_at = time.monotonic()
            if self._phone_closing and ws.protocol.close_rcvd_then_sent is not True:
                result.closed_by = "phone"
            else:
                result.closed_by = "server"
                self._server_closed = True
            result.close_code = ws.protocol.close_code
            result.close_reason = ws.protocol.close_reason
            self._log.debug("stream closed by %s (%s)", result.closed_by, result.close_code)

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        if isinstance(message, bytes):
            self._protocol_error(now, "binary frame; Twilio expects JSON text frames",
                                 repr(message[:60]))
            return
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError:
            self._protocol_error(now, "frame is not JSON", message)
            return
        if not isinstance(data, dict):
            self._protocol_error(now, "frame is not a JSON object", message)
            return
        event = data.get("event")
        if event not in ("media", "mark", "clear"):
            self._protocol_error(now, f"unexpected event {event!r}", message)
            return
        if data.get("streamSid") != self._stream_sid:
            self._protocol_error(now, f"streamSid {data.get('streamSid')!r} is not this "
                                      f"stream's ({self._stream_sid})", message)
            return
        now_ms = now * 1000
        if event == "media":
            media = data.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._protocol_error(now, "media without a media.payload string", message)
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except binascii.Error:
                self._protocol_error(now, "media.payload is not base64", message)
                return
            self.result.media_received.append(MediaReceived(now, len(audio)))
            if self.result.first_media_at is None:
                self.result.first_media_at = now
            self._playout.enqueue_audio(audio, now_ms)
        elif event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._protocol_error(now, "mark without a mark.name string", message)
                return
            self._playout.enqueue_mark(name, now_ms)
            self._marks_changed.set()
        else:
            outcome = self._playout.clear(now_ms)
            self.result.clears.append(ClearRecord(now, outcome.played_ms, outcome.dropped_ms,
                                                  outcome.flushed))
            self._marks_changed.set()

    def _protocol_error(self, now: float, message: str, frame: str) -> None:
        self.result.protocol_errors.append(
            ProtocolErrorRecord(now, STREAM_PROTOCOL_ERROR, message, frame[:200]))
        self._log.info("protocol error %d: %s", STREAM_PROTOCOL_ERROR, message)

    async def _echo_marks(self, ws: ClientConnection) -> None:
        """Send each mark back when it is due; the only task that echoes, so order holds."""
        changed = self._marks_changed
        while True:
            changed.clear()
            now = time.monotonic()
            for mark in self._playout.pop_due_marks(now * 1000):
                try:
                    await self._send(ws, "mark", {"mark": {"name": mark.name}})
                except ConnectionClosed:
                    return
                self.result.marks_echoed.append(MarkEchoed(
                    mark.name, mark.received_ms / 1000, time.monotonic(), mark.flushed))
            due_ms = self._playout.next_mark_due_ms()
            timeout = None if due_ms is None else max(0.0, due_ms / 1000 - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=timeout)
