"""Where each side of a call lands in its recording: what the media loop saw in, sample
positions out. Pure: no sockets, no clock, no files.

During the call the runner only appends to a `CallTape` (base64 strings as they crossed
the wire and call-clock ms; nothing is decoded). After the call `place_tape` says where
each frame goes in a recording whose time 0 is the call's (the webhook), so a transcript
turn's `started_ms` is also its place in the recording:

- the caller: at the stream's start plus Twilio's media `timestamp` (ms since the stream
  started), so a late or bunched delivery does not move the caller's words;
- the agent: where the caller heard it. Twilio plays what it is sent in order, in real
  time (a 160-byte frame takes 20 ms), so a frame starts playing at the later of when it
  was sent and when the frame before it ends. A `clear` (barge-in) drops what was queued
  but not played yet: frames that had not started, and the rest of the one playing.

Nothing plays after the call ended: what lies past `end_ms` is cut off.
"""

from __future__ import annotations

import array
import base64
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hotline.audio.mulaw import BYTES_PER_MS, SILENCE_BYTE, b64_decoded_len
from hotline.audio.wire_b64 import is_audio_b64
from hotline.core.commands import TwilioClear, TwilioMediaOut, TwilioMessage
from hotline.core.events import CallEvent, TwilioMedia, TwilioStart

SAMPLES_PER_MS = BYTES_PER_MS  # μ-law 8 kHz: one byte per sample


class Side(enum.Enum):
    CALLER = "caller"
    AGENT = "agent"


@dataclass(slots=True)
class Placed:
    """One frame's μ-law (still base64) and where it starts in the recording; only its
    first `samples` samples are heard (a frame cut by a clear or the call's end)."""

    side: Side
    start: int  # sample (8 kHz) from the recording's time 0
    payload_b64: str
    samples: int


class CallTape:
    """Appended to on the media loop, read after the call: one append per frame.

    Times and payloads in parallel (an array of numbers beside a list of the strings), not
    a tuple per frame: a 20 ms caller frame costs 281 bytes, not 361 (a 10-minute call's
    caller side 8.4 MB, not 10.8), for no more work on the loop."""

    __slots__ = ("_agent_at", "_agent_payloads", "_caller_payloads", "_caller_stamps",
                 "stream_started_ms")

    def __init__(self) -> None:
        self.stream_started_ms: float | None = None
        self._caller_stamps = array.array("q")  # Twilio's media timestamps (ms)
        self._caller_payloads: list[str] = []
        self._agent_at = array.array("d")  # call ms when sent
        self._agent_payloads: list[str | None] = []  # None: a clear

    @property
    def caller(self) -> Iterator[tuple[int, str]]:
        """(Twilio's media timestamp, payload) per frame the caller sent."""
        return zip(self._caller_stamps, self._caller_payloads, strict=True)

    @property
    def agent(self) -> Iterator[tuple[float, str | None]]:
        """(call ms when sent, payload; None: a clear) per message sent to Twilio."""
        return zip(self._agent_at, self._agent_payloads, strict=True)

    def heard(self, event: CallEvent, now_ms: float) -> None:
        """An event from Twilio: the caller's audio (and the stream's start)."""
        if type(event) is TwilioMedia:
            self._caller_stamps.append(event.timestamp_ms)
            self._caller_payloads.append(event.payload_b64)
        elif type(event) is TwilioStart and self.stream_started_ms is None:
            self.stream_started_ms = now_ms  # unless its arrival was noted before

    def sent(self, message: TwilioMessage, now_ms: float) -> None:
        """A message to Twilio: the agent's audio, or a clear of what is queued."""
        if type(message) is TwilioMediaOut:
            self._agent_at.append(now_ms)
            self._agent_payloads.append(message.payload_b64)
        elif type(message) is TwilioClear:
            self._agent_at.append(now_ms)
            self._agent_payloads.append(None)


def place_tape(tape: CallTape, end_ms: float) -> list[Placed]:
    """Every frame heard in the call, placed, caller's first; nothing past `end_ms`."""
    return place_frames(tape.stream_started_ms, tape.caller, tape.agent, end_ms)


def place_frames(stream_started_ms: float | None, caller: Iterable[tuple[int, str]],
                 agent: Iterable[tuple[float, str | None]], end_ms: float) -> list[Placed]:
    """`place_tape` of a tape's parts (iterables: the writer paces its reading)."""
    end = _sample(end_ms)
    origin = stream_started_ms or 0.0
    placed = [_cut(Placed(Side.CALLER, _sample(origin + stamp_ms), payload,
                          _samples_in(payload)), end)
              for stamp_ms, payload in caller]
    placed.extend(_cut(frame, end) for frame in place_agent(agent))
    return [p for p in placed if p.samples > 0]


def place_agent(sent: Iterable[tuple[float, str | None]]) -> list[Placed]:
    """The agent's frames as Twilio played them (see the module's docstring)."""
    played: list[Placed] = []
    queue_end = 0  # the sample where the last frame queued ends
    for at_ms, payload in sent:
        at = _sample(at_ms)
        if payload is None:  # clear: what had not played by now never will
            while played and played[-1].start >= at:
                played.pop()
            if played and played[-1].start + played[-1].samples > at:
                played[-1].samples = at - played[-1].start
            queue_end = min(queue_end, at)
            continue
        start = max(at, queue_end)
        frame = Placed(Side.AGENT, start, payload, _samples_in(payload))
        played.append(frame)
        queue_end = start + frame.samples
    return played


def recording_samples(placed: list[Placed]) -> int:
    """The recording's length: to the end of its last frame."""
    return max((p.start + p.samples for p in placed), default=0)


def _cut(frame: Placed, end: int) -> Placed:
    frame.start = max(0, frame.start)
    frame.samples = max(0, min(frame.samples, end - frame.start))
    return frame


def channels(placed: Iterable[Placed], samples: int) -> tuple[bytearray, bytearray]:
    """The caller's and the agent's μ-law, `samples` long each, silence between frames."""
    caller = bytearray([SILENCE_BYTE]) * samples
    agent = bytearray([SILENCE_BYTE]) * samples
    for frame in placed:
        mulaw = base64.b64decode(frame.payload_b64)[:frame.samples]
        track = caller if frame.side is Side.CALLER else agent
        track[frame.start:frame.start + len(mulaw)] = mulaw[:samples - frame.start]
    return caller, agent


def _samples_in(payload_b64: str) -> int:
    """What a frame holds, without decoding it; a payload that is not base64 holds none
    (the codec refuses those already; the tape keeps what it is given)."""
    return b64_decoded_len(payload_b64) if is_audio_b64(payload_b64) else 0


def _sample(ms: float) -> int:
    return round(ms * SAMPLES_PER_MS)
