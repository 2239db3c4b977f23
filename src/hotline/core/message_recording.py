"""MessageRecording: the caller's voice message, frame by frame, bounded.

Frames are kept as received (base64 μ-law: decoded only off the media loop, when the WAV is
written) up to `max_ms`. Each frame's energy is measured as the speech gate measures it: a
run of voiced frames `min_speech_ms` long means the caller spoke; `end_silence_ms` of quiet
(after speech, or since the tone if nobody speaks) ends the message. What is kept stops
`TAIL_MS` after the last voiced frame, so a message that ended on silence does not carry it.
"""

from __future__ import annotations

import enum

from hotline.audio.mulaw import BYTES_PER_MS, b64_decoded_len
from hotline.audio.speech_gate import GAP_MS, frame_power, level_for_threshold

TAIL_MS = 500  # quiet kept after the last voiced frame


class RecordingEnd(enum.Enum):
    SILENCE = "silence"
    MAX_LENGTH = "max length"
    KEY = "# key"
    HANG_UP = "caller hung up"
    TIME_LIMIT = "call time limit"
    NO_TONE = "apology never finished playing"
    FAILURE = "call failed"
    SHUTDOWN = "server shutting down"  # the instance's drain deadline passed


class MessageRecording:
    __slots__ = ("_end_silence_ms", "_gap_ms", "_max_ms", "_min_speech_ms", "_power_threshold",
                 "_run_ms", "_tail_end", "_tail_ms", "finished", "frames",
                 "heard_speech", "ms", "silence_ms", "started")

    def __init__(self, max_ms: int, end_silence_ms: int, min_speech_ms: int,
                 vad_threshold: float) -> None:
        self._max_ms = max_ms
        self._end_silence_ms = end_silence_ms
        self._min_speech_ms = min_speech_ms
        self._power_threshold = level_for_threshold(vad_threshold) ** 2
        self.frames: list[str] = []
        self.ms = 0.0  # audio kept so far
        self.silence_ms = 0.0  # quiet since the last voiced frame (or the start)
        self.heard_speech = False
        self.started = False  # the tone has played: frames are the message
        self.finished = False
        self._run_ms = 0.0  # voiced audio in the current run (gaps under GAP_MS bridged)
        self._gap_ms = 0.0
        self._tail_end = 0  # frames up to the last voiced one, plus TAIL_MS of quiet
        self._tail_ms = 0.0

    def add(self, payload_b64: str) -> RecordingEnd | None:
        """Keep one caller frame; the reason to end the message, if it is over."""
        ms = b64_decoded_len(payload_b64) / BYTES_PER_MS
        if self.ms + ms > self._max_ms:
            return RecordingEnd.MAX_LENGTH
        self.frames.append(payload_b64)
        self.ms += ms
        if frame_power(payload_b64)[0] > self._power_threshold:
            self._run_ms += ms
            self._gap_ms = 0.0
            self.silence_ms = 0.0
            if self._run_ms >= self._min_speech_ms:
                self.heard_speech = True
            self._tail_end = len(self.frames)
            self._tail_ms = 0.0
        else:
            self.silence_ms += ms
            self._gap_ms += ms
            if self._gap_ms >= GAP_MS:
                self._run_ms = 0.0
            if self._tail_ms < TAIL_MS:
                self._tail_ms += ms
                self._tail_end = len(self.frames)
        if self.silence_ms >= self._end_silence_ms:
            return RecordingEnd.SILENCE
        if self.ms >= self._max_ms:
            return RecordingEnd.MAX_LENGTH
        return None

    def kept(self) -> tuple[str, ...]:
        """The message's frames, up to `TAIL_MS` after the last voiced one."""
        return tuple(self.frames[:self._tail_end])

    def kept_ms(self) -> int:
        return int(sum(b64_decoded_len(f) for f in self.frames[:self._tail_end]) / BYTES_PER_MS)
