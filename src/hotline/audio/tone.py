"""The tone after the apology ("…after the tone"): a short sine beep as μ-law, pure code.

Built once at import (a few ms) and kept as base64 frames, so playing it costs the media
loop nothing but string forwarding, like cached greetings.
"""

from __future__ import annotations

import array
import base64
import math

from hotline.audio.mulaw import BYTES_PER_MS, SAMPLE_RATE, encode

TONE_MS = 400
TONE_HZ = 1000.0
TONE_FRAME_MS = 100  # the size of cached greeting frames: one media message + mark each
_AMPLITUDE = 8000  # about -12 dBFS: clearly audible, never clipped
_RAMP_MS = 10  # fade in and out, so the beep does not click


def tone_mulaw(ms: int = TONE_MS, frequency_hz: float = TONE_HZ) -> bytes:
    """A sine beep of `ms` at `frequency_hz`, faded in and out, as μ-law 8 kHz."""
    n = ms * BYTES_PER_MS
    ramp = _RAMP_MS * BYTES_PER_MS
    samples = array.array("h", bytes(2 * n))
    for i in range(n):
        fade = min(1.0, i / ramp, (n - 1 - i) / ramp) if ramp else 1.0
        samples[i] = int(_AMPLITUDE * fade * math.sin(2 * math.pi * frequency_hz * i
                                                     / SAMPLE_RATE))
    return encode(samples)


def tone_frames(ms: int = TONE_MS, frame_ms: int = TONE_FRAME_MS) -> tuple[str, ...]:
    audio = tone_mulaw(ms)
    size = frame_ms * BYTES_PER_MS
    return tuple(base64.b64encode(audio[i:i + size]).decode() for i in range(0, len(audio), size))


TONE_FRAMES: tuple[str, ...] = tone_frames()
