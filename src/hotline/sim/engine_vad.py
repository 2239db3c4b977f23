"""Energy-based voice activity detection for the engine simulator (no asyncio, no clock).

The real server VAD is a model; this one only compares the RMS of each 20 ms frame of μ-law
audio with a threshold derived from the session's `threshold` (0.0-1.0). It keeps the
Realtime API's clock: positions are milliseconds of all audio appended this session.

Feed audio with `EnergyVad.feed(mulaw)`; it returns what happened inside that audio, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from hotline.audio import mulaw
from hotline.audio.speech_gate import level_for_threshold as rms_threshold

FRAME_BYTES = mulaw.FRAME_BYTES
FRAME_MS = mulaw.FRAME_MS
MIN_SPEECH_MS = 60  # a run of speech frames this long starts a turn


@dataclass(slots=True)
class VadSpeechStarted:
    audio_start_ms: int  # speech start minus prefix padding, floored at 0
    speech_start_ms: int  # first frame of the speech run


@dataclass(slots=True)
class VadSpeechStopped:
    audio_end_ms: int  # end of the silence that ended the turn
    speech_end_ms: int  # end of the last speech frame


VadEvent = VadSpeechStarted | VadSpeechStopped


class EnergyVad:
    """Speech start after `MIN_SPEECH_MS` of loud frames; stop after `silence_duration_ms` quiet."""

    __slots__ = ("_min_speech_frames", "_partial", "_position_bytes", "_rms_threshold",
                 "_run_frames", "_run_start_ms", "_silence_frames", "_silence_frames_needed",
                 "_speech_end_ms", "in_speech", "prefix_padding_ms")

    def __init__(self, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500, min_speech_ms: int = MIN_SPEECH_MS) -> None:
        self._rms_threshold = rms_threshold(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self._silence_frames_needed = max(1, -(-silence_duration_ms // FRAME_MS))
        self._min_speech_frames = max(1, -(-min_speech_ms // FRAME_MS))
        self._position_bytes = 0  # complete frames analysed so far
        self._partial = b""
        self.in_speech = False
        self._run_frames = 0
        self._run_start_ms = 0
        self._silence_frames = 0
        self._speech_end_ms = 0

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio analysed (whole frames) since the session started."""
        return self._position_bytes // mulaw.BYTES_PER_MS

    def start_at(self, position_bytes: int) -> None:
        """Continue the session clock (a VAD configured mid-session starts where audio is)."""
        self._position_bytes = position_bytes
        self._partial = b""

    def reset_turn(self) -> None:
        """Forget any speech in progress (after a manual commit or a buffer clear)."""
        self.in_speech = False
        self._run_frames = 0
        self._silence_frames = 0

    def feed(self, audio: bytes) -> list[VadEvent]:
        if self._partial:
            audio = self._partial + audio
        whole = len(audio) - len(audio) % FRAME_BYTES
        self._partial = audio[whole:]
        events: list[VadEvent] = []
        for offset in range(0, whole, FRAME_BYTES):
            event = self._frame(mulaw.rms(audio[offset:offset + FRAME_BYTES]) > self._rms_threshold)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, loud: bool) -> VadEvent | None:
        start_ms = self._position_bytes // mulaw.BYTES_PER_MS
        self._position_bytes += FRAME_BYTES
        end_ms = start_ms + FRAME_MS
        if not self.in_speech:
            if not loud:
                self._run_frames = 0
                return None
            if self._run_frames == 0:
                self._run_start_ms = start_ms
            self._run_frames += 1
            if self._run_frames < self._min_speech_frames:
                return None
            self.in_speech = True
            self._silence_frames = 0
            self._speech_end_ms = end_ms
            return VadSpeechStarted(max(0, self._run_start_ms - self.prefix_padding_ms),
                                    self._run_start_ms)
        if loud:
            self._silence_frames = 0
            self._speech_end_ms = end_ms
            return None
        self._silence_frames += 1
        if self._silence_frames < self._silence_frames_needed:
            return None
        self.in_speech = False
        self._run_frames = 0
        return VadSpeechStopped(end_ms, self._speech_end_ms)
