"""G.711 μ-law <-> 16-bit PCM, and 8 kHz timing arithmetic. Pure Python, table driven.

The call path never decodes audio (payloads pass through as base64); this is for the
simulators (synthesising speech, energy-based VAD) and for writing WAV files.
"""

from __future__ import annotations

import array
import io
import math
import wave
from typing import BinaryIO

SAMPLE_RATE = 8000
BYTES_PER_MS = 8  # 8000 samples/s, one byte each
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 160: one Twilio media frame

_BIAS = 0x84
_CLIP = 32635
SILENCE_BYTE = 0xFF  # μ-law code of 0


def _decode_byte(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    sample = ((mantissa << 3) + _BIAS) << exponent
    sample -= _BIAS
    return -sample if sign else sample


def _encode_sample(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    if sign:
        sample = -sample
    sample = min(sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


DECODE_TABLE: tuple[int, ...] = tuple(_decode_byte(c) for c in range(256))
# The little-endian bytes of each code's 16-bit sample: decoding a whole recording is two
# `bytes.translate` calls and a slice assignment (C speed), not a Python loop per sample.
_PCM_LOW = bytes(s & 0xFF for s in DECODE_TABLE)
_PCM_HIGH = bytes((s >> 8) & 0xFF for s in DECODE_TABLE)
# Encoding through a 16-bit lookup (65536 entries, built once) keeps synthesis fast.
_ENCODE_TABLE = bytes(_encode_sample(s - 32768) for s in range(65536))


def decode(mulaw: bytes) -> array.array[int]:
    """μ-law bytes -> signed 16-bit samples."""
    table = DECODE_TABLE
    return array.array("h", [table[b] for b in mulaw])


def encode(samples: array.array[int] | list[int]) -> bytes:
    """Signed 16-bit samples -> μ-law bytes."""
    table = _ENCODE_TABLE
    return bytes(table[max(-32768, min(32767, s)) + 32768] for s in samples)


def duration_ms(n_bytes: int) -> float:
    return n_bytes / BYTES_PER_MS


def b64_decoded_len(payload_b64: str) -> int:
    """Bytes a base64 string decodes to, without decoding it."""
    n = len(payload_b64)
    if n == 0:
        return 0
    padding = 2 if payload_b64.endswith("==") else 1 if payload_b64.endswith("=") else 0
    return n * 3 // 4 - padding


def rms(mulaw: bytes) -> float:
    """Root mean square of the decoded samples (0..32768)."""
    if not mulaw:
        return 0.0
    table = DECODE_TABLE
    total = 0
    for b in mulaw:
        s = table[b]
        total += s * s
    return math.sqrt(total / len(mulaw))


def silence(ms: int) -> bytes:
    return bytes([SILENCE_BYTE]) * (ms * BYTES_PER_MS)


def resample_linear(samples: array.array[int], from_rate: int, to_rate: int) -> array.array[int]:
    if from_rate == to_rate or not samples:
        return array.array("h", samples)
    n_out = int(len(samples) * to_rate / from_rate)
    step = from_rate / to_rate
    last = len(samples) - 1
    out = array.array("h", bytes(2 * n_out))
    for i in range(n_out):
        pos = i * step
        j = int(pos)
        frac = pos - j
        a = samples[j]
        b = samples[j + 1] if j < last else a
        out[i] = int(a + (b - a) * frac)
    return out


def pcm16_from_mulaw(*channels: bytes | bytearray) -> bytes:
    """Little-endian 16-bit PCM of μ-law channels of one length, interleaved (one channel:
    plain decoding; two: stereo, the first on the left)."""
    count = len(channels)
    length = len(channels[0])
    if any(len(channel) != length for channel in channels):
        raise ValueError("channels of different lengths")
    out = bytearray(2 * count * length)
    for i, channel in enumerate(channels):
        out[2 * i::2 * count] = channel.translate(_PCM_LOW)
        out[2 * i + 1::2 * count] = channel.translate(_PCM_HIGH)
    return bytes(out)


def write_wav(out: BinaryIO, *channels: bytes | bytearray,
              chunk_samples: int = 10 * SAMPLE_RATE) -> None:
    """A 16-bit PCM 8 kHz WAV (plays everywhere, unlike μ-law WAVs) of μ-law channels of
    one length, decoded 10 s at a time: an hour's call is not held twice as PCM, and no
    step holds the GIL for more than a ms or two (a writer thread beside the event loop)."""
    with wave.open(out, "wb") as wav:
        wav.setnchannels(len(channels))
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        for at in range(0, len(channels[0]), chunk_samples):
            wav.writeframes(pcm16_from_mulaw(*(c[at:at + chunk_samples] for c in channels)))


def wav_bytes_from_mulaw(mulaw: bytes) -> bytes:
    """A 16-bit PCM 8 kHz mono WAV of μ-law audio."""
    buffer = io.BytesIO()
    write_wav(buffer, mulaw)
    return buffer.getvalue()


def mulaw_from_wav_bytes(data: bytes) -> bytes:
    """Any mono/stereo 16-bit PCM WAV -> μ-law 8 kHz."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV files are supported")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    if channels > 1:
        samples = array.array("h", samples[::channels])
    return encode(resample_linear(samples, rate, SAMPLE_RATE))
