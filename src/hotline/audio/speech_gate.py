"""SpeechGate: does the caller's sound last long enough to be speech?

Server VAD tells us a turn *started* (after ~60 ms of sound, prefix padding included) and
*stopped* (`silence_duration_ms` after the sound ended), so it cannot tell a 100 ms cough,
or the agent's own echo on a speakerphone, from a caller who means to interrupt. The gate
judges the caller's frames themselves: energy per 20 ms frame on a decoded copy (the
original base64 is forwarded untouched), and a run of voiced frames that lasts
`min_speech_ms` is speech. Short gaps (`GAP_MS`) inside a run are bridged, as syllables
have them.
"""

from __future__ import annotations

import base64
import binascii
import math

from hotline.audio.mulaw import BYTES_PER_MS, DECODE_TABLE

GAP_MS = 60  # quiet this long ends a run of speech
_SQUARES = tuple(s * s for s in DECODE_TABLE)


def level_for_threshold(threshold: float) -> float:
    """A VAD `threshold` (0.0-1.0) as RMS on the 16-bit scale: 0.0 -> -70 dBFS, 0.5 -> -40,
    1.0 -> -10 (the mapping the simulated engine's VAD uses too)."""
    level_dbfs = -70.0 + 60.0 * min(1.0, max(0.0, threshold))
    return 32768.0 * math.pow(10.0, level_dbfs / 20.0)


def frame_power(payload_b64: str, quiet_codes: bytes | None = None) -> tuple[float, float]:
    """(mean square of the samples, duration in ms) of one base64 μ-law frame.

    With `quiet_codes` (`_quiet_codes(threshold)`), a frame made only of those codes (most
    of a listening caller's) costs a decode and a `translate` (~1 µs), not a sum (~13 µs):
    its power reads 0, which is at or under the threshold like its true power."""
    try:
        audio = base64.b64decode(payload_b64)
    except (binascii.Error, ValueError):
        return 0.0, 0.0
    if not audio:
        return 0.0, 0.0
    if quiet_codes is not None and not audio.translate(None, quiet_codes):
        return 0.0, len(audio) / BYTES_PER_MS
    # Every sample (~13 µs a frame): striding aliases with pure tones (a beep at 1 kHz
    # sampled every 4th sample can read as silence).
    return sum(map(_SQUARES.__getitem__, audio)) / len(audio), len(audio) / BYTES_PER_MS


def _quiet_codes(power_threshold: float) -> bytes:
    """The μ-law codes no louder than the threshold: a frame made only of these has a mean
    square at or under it, so it is not voiced without summing anything."""
    return bytes(code for code in range(256) if _SQUARES[code] <= power_threshold)


class SpeechGate:
    __slots__ = ("_gap_ms", "_last", "_min_speech_ms", "_power_threshold", "_quiet",
                 "voiced_ms")

    def __init__(self, min_speech_ms: int, threshold: float) -> None:
        self._min_speech_ms = min_speech_ms
        self._power_threshold = level_for_threshold(threshold) ** 2
        self._quiet = _quiet_codes(self._power_threshold)
        self.voiced_ms = 0.0  # voiced audio in the current run
        self._gap_ms = 0.0
        # The last frame measured and its power: one frame may be asked about twice (is it
        # quiet enough to hold back, then is it speech over the agent), measured once.
        self._last: tuple[str, tuple[float, float]] | None = None

    def _power(self, payload_b64: str) -> tuple[float, float]:
        last = self._last
        if last is not None and last[0] is payload_b64:
            return last[1]
        power = frame_power(payload_b64, self._quiet)
        self._last = (payload_b64, power)
        return power

    def voiced(self, payload_b64: str) -> bool:
        """One frame loud enough to be voice (no run kept: for a caller we only listen to)."""
        return self._power(payload_b64)[0] > self._power_threshold

    def feed(self, payload_b64: str) -> bool:
        """Take one caller frame; True once the current run is long enough to be speech."""
        power, ms = self._power(payload_b64)
        if power > self._power_threshold:
            self.voiced_ms += ms
            self._gap_ms = 0.0
        elif self.voiced_ms:
            self._gap_ms += ms
            if self._gap_ms >= GAP_MS:
                self.reset()
        return self.is_speech

    @property
    def is_speech(self) -> bool:
        return self.voiced_ms >= self._min_speech_ms

    def reset(self) -> None:
        self.voiced_ms = 0.0
        self._gap_ms = 0.0
