"""The capacity benchmark's lean phone: Twilio's side of a call (a signed webhook, then a
Media Streams WebSocket) at a few µs a message.

It sends a caller frame every 20 ms (pre-encoded μ-law silence, or loud frames during a
caller turn: `TURN_MS` every `turn_every_s`), echoes each mark once the audio before it
has played (its playout clock, like Twilio's), and on a `clear` drops what is queued and
echoes the flushed marks at once. Each agent frame it receives is read back to the tag
the engine put in it: its relay delay (engine sent → phone received), and whether a frame
of the response was lost, duplicated or reordered.
"""

from __future__ import annotations

import base64
import random
import secrets
import time
from collections import deque
from urllib.parse import urlsplit

import httpx
import orjson

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.benchmarks.capacity_engine import read_tag
from hotline.benchmarks.capacity_wire import WsClient, connect
from hotline.sim.twilio_requests import send_twilio_request, twilio_signature
from hotline.sim.twiml import Connect, Stream, parse_twiml

FRAME_MS = 20
TURN_MS = 600  # a caller turn's voiced audio (the gate needs 200 ms)
FIRST_TURN_AFTER_S = 1.5  # the greeting starts first
GAP_MS = 40  # a stall this much longer than a delta is a gap the caller hears
DELAY_BUCKET_MS = 0.1
DELAY_BUCKETS = 50_000  # up to 5 s; beyond goes in the last bucket
_SILENT = base64.b64encode(b"\xff" * 160).decode()
_LOUD = base64.b64encode(b"\x80\x00" * 80).decode()
_MASK40 = (1 << 40) - 1


class PhoneStats:
    """One load generator's counts since the last reset."""

    def __init__(self) -> None:
        self.delays = [0] * DELAY_BUCKETS
        self.delay_max_ms = 0.0
        self.frames = self.lost = self.duplicated = self.reordered = self.gaps = 0
        self.max_gap_ms = 0.0
        self.marks_echoed = self.clears = self.frames_sent = self.untagged = 0
        self.failures: list[str] = []

    def delay(self, ms: float) -> None:
        self.frames += 1
        index = int(ms / DELAY_BUCKET_MS)
        self.delays[index if index < DELAY_BUCKETS else DELAY_BUCKETS - 1] += 1
        if ms > self.delay_max_ms:
            self.delay_max_ms = ms


class PhoneCall(WsClient):
    """One call's media stream; `tick()` every 20 ms from the generator's clock."""

    def __init__(self, host: str, path: str, headers: dict[str, str], stats: PhoneStats,
                 call_sid: str, account_sid: str, turn_every_s: float) -> None:
        super().__init__(host, path, headers)
        self.stats = stats
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self._seq = 0
        self._chunk = 0
        self._started = 0.0
        self.placed_at = time.monotonic()
        # Calls placed together do not all end together (a soak's calls are replaced).
        self.length_factor = random.uniform(0.75, 1.25)
        self._turn_every = turn_every_s
        self._turn_offset = random.uniform(0, turn_every_s)
        self._playout_end = 0.0
        self._marks: deque[tuple[float, bytes]] = deque()
        self._last: tuple[int, int] | None = None  # (response, frame) last received
        self._last_at = 0.0
        self.hung_up = False
        sid = self.stream_sid.encode()
        self._media_head = b'{"event":"media","streamSid":"' + sid + b'","sequenceNumber":"'
        self._mark_head = b'{"event":"mark","streamSid":"' + sid + b'","sequenceNumber":"'
        self.on_message = self._on_message

    def _json(self, event: dict[str, object]) -> None:
        self._seq += 1
        event["sequenceNumber"] = str(self._seq)
        self.send_text(orjson.dumps(event))

    def begin(self, parameters: dict[str, str]) -> None:
        self._json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._json({"event": "start", "streamSid": self.stream_sid, "start": {
            "accountSid": self.account_sid, "streamSid": self.stream_sid,
            "callSid": self.call_sid, "tracks": ["inbound"], "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self._started = time.monotonic()

    def hang_up(self) -> None:
        if self.open and not self.hung_up:
            self.hung_up = True
            self._json({"event": "stop", "streamSid": self.stream_sid,
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
            self.close()

    def tick(self, now: float) -> None:
        if not self.open or self.hung_up:
            return
        since = now - self._started
        voiced = (since > FIRST_TURN_AFTER_S
                  and (since + self._turn_offset) % self._turn_every < TURN_MS / 1000)
        self._seq += 1
        self._chunk += 1
        self.send_text(self._media_head + str(self._seq).encode()
                       + b'","media":{"track":"inbound","chunk":"' + str(self._chunk).encode()
                       + b'","timestamp":"' + str(self._chunk * FRAME_MS).encode()
                       + b'","payload":"' + (_LOUD if voiced else _SILENT).encode() + b'"}}')
        self.stats.frames_sent += 1
        marks = self._marks
        while marks and marks[0][0] <= now:
            self._echo(marks.popleft()[1])

    def _echo(self, name: bytes) -> None:
        self._seq += 1
        self.send_text(self._mark_head + str(self._seq).encode() + b'","mark":{"name":"'
                       + name + b'"}}')
        self.stats.marks_echoed += 1

    def _on_message(self, opcode: int, payload: bytes) -> None:
        now = time.monotonic()
        start = payload.find(b'"payload":"')
        if payload.startswith(b'{"event":"media"') and start > 0:
            self._media(payload, start + 11, now)
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.stats.failures.append("a message that is not JSON")
            return
        event = message.get("event")
        if event == "media":  # another key order
            audio = message["media"]["payload"].encode()
            self._media(b'"' + audio + b'"', 1, now)
        elif event == "mark":
            name = str(message["mark"]["name"]).encode()
            self._marks.append((max(now, self._playout_end), name))
        elif event == "clear":
            self.stats.clears += 1
            self._playout_end = now
            while self._marks:  # Twilio echoes the marks it flushed
                self._echo(self._marks.popleft()[1])

    def _media(self, payload: bytes, start: int, now: float) -> None:
        end = payload.index(b'"', start)
        tagged = read_tag(base64.b64decode(payload[start:start + 16]))
        stats = self.stats
        if tagged is None:
            stats.untagged += 1  # the server's canned audio (an apology, a hold line)
            return
        sent_us, response, frame_no = tagged
        stats.delay(((time.monotonic_ns() // 1000 - sent_us) & _MASK40) / 1000)
        length = end - start
        audio_ms = (length * 3 // 4 - payload.count(b"=", end - 2, end)) / BYTES_PER_MS
        self._playout_end = max(now, self._playout_end) + audio_ms / 1000
        if self._last is None:
            self._last = (response, frame_no)
            self._last_at = now
            stats.lost += frame_no
            return
        last_response, last_frame = self._last
        ahead = (response - last_response) & 0xFFFF  # response numbers wrap
        if ahead == 0:
            if frame_no == last_frame + 1:
                gap_ms = (now - self._last_at) * 1000
                if gap_ms > stats.max_gap_ms:
                    stats.max_gap_ms = gap_ms
                if gap_ms > audio_ms + GAP_MS:
                    stats.gaps += 1
            elif frame_no > last_frame:
                stats.lost += frame_no - last_frame - 1
            elif frame_no == last_frame:
                stats.duplicated += 1
                return
            else:
                stats.reordered += 1
                return
        elif ahead < 0x8000:
            stats.lost += frame_no  # a response's first frames never came
        else:
            stats.reordered += 1
            return
        self._last = (response, frame_no)
        self._last_at = now


async def place_call(http: httpx.AsyncClient, server_url: str, auth_token: str,
                     account_sid: str, to: str, from_: str, stats: PhoneStats,
                     turn_every_s: float) -> PhoneCall:
    """Twilio's inbound call: the signed voice webhook, then the TwiML's `<Stream>`."""
    call_sid = "CA" + secrets.token_hex(16)
    params = {"AccountSid": account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid,
              "CallStatus": "ringing", "Called": to, "Caller": from_, "Direction": "inbound",
              "From": from_, "To": to}
    response = await send_twilio_request(http, f"{server_url}/twilio/voice", params,
                                         auth_token=auth_token)
    response.raise_for_status()
    stream = next((v.stream for v in parse_twiml(response.text).verbs
                   if isinstance(v, Connect) and isinstance(v.stream, Stream)), None)
    if stream is None:
        raise RuntimeError(f"no <Connect><Stream> in the TwiML: {response.text[:200]}")
    url = urlsplit(stream.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, stream.url),
               "User-Agent": "Twilio.TmeWs/1.0"}
    call = await connect(host, port, url.path, headers, lambda: PhoneCall(
        f"{host}:{port}", url.path, headers, stats, call_sid, account_sid, turn_every_s))
    assert isinstance(call, PhoneCall)
    call.begin(dict(stream.parameters))
    return call
