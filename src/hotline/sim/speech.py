"""Audio for the simulators: speech from espeak-ng when installed, else a voiced tone.

Results are μ-law 8 kHz bytes, cached per (text, language, voice) for the process.
"""

from __future__ import annotations

import array
import functools
import math
import shutil
import subprocess

from hotline.audio import mulaw

ESPEAK = shutil.which("espeak-ng") or shutil.which("espeak")
# espeak voice per language code; espeak falls back to English for unknown ones.
_ESPEAK_VOICES = {"he": "he", "en": "en-us", "ar": "ar", "ru": "ru", "es": "es", "fr": "fr"}
_CHARS_PER_SECOND = 14.0  # speaking rate of the tone fallback, close to espeak's default


def have_espeak() -> bool:
    return ESPEAK is not None


@functools.lru_cache(maxsize=256)
def synthesize(text: str, language: str = "en", voice: str = "") -> bytes:
    """Speak `text` as μ-law 8 kHz audio (voice: the engine's voice name, varies the pitch)."""
    if ESPEAK is not None and text.strip():
        pitch = 30 + (sum(voice.encode()) % 40) if voice else 50
        try:
            wav = subprocess.run(
                [ESPEAK, "-v", _ESPEAK_VOICES.get(language, "en-us"), "-p", str(pitch),
                 "-s", "165", "--stdout", text],
                check=True, capture_output=True, timeout=30,
            ).stdout
            return mulaw.mulaw_from_wav_bytes(_fix_streamed_wav_header(wav))
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return voiced_tone(max(300, int(len(text) / _CHARS_PER_SECOND * 1000)))


def _fix_streamed_wav_header(wav: bytes) -> bytes:
    """espeak --stdout writes 0x7ffff… sizes (it streams); set the real ones."""
    if len(wav) < 44 or wav[:4] != b"RIFF":
        return wav
    data_size = len(wav) - 44
    return (wav[:4] + (36 + data_size).to_bytes(4, "little") + wav[8:40]
            + data_size.to_bytes(4, "little") + wav[44:])


def voiced_tone(ms: int, frequency_hz: float = 180.0, amplitude: int = 9000) -> bytes:
    """A buzzy tone with a slow syllable-like envelope: loud enough for energy VAD."""
    n = ms * mulaw.BYTES_PER_MS
    rate = mulaw.SAMPLE_RATE
    samples = array.array("h", bytes(2 * n))
    for i in range(n):
        t = i / rate
        envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 4.0 * t)
        wave = math.sin(2 * math.pi * frequency_hz * t) + 0.4 * math.sin(
            2 * math.pi * 2 * frequency_hz * t)
        samples[i] = int(amplitude * envelope * wave / 1.4)
    return mulaw.encode(samples)
