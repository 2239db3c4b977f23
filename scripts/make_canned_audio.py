"""Regenerate the built-in canned lines (src/hotline/data/<line>-<lang>.ulaw) with espeak-ng.

    PYTHONPATH=src python scripts/make_canned_audio.py

They play when the engine cannot speak (the apology when no engine can be had, the hold
line while it reconnects after a drop) and no rendering by the engine in the business's
voice is cached yet. μ-law 8 kHz, mono, raw (what Twilio plays), without espeak-ng's
trailing silence past `KEEP_SILENCE_MS` (dead air the caller would wait through).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hotline.audio import mulaw
from hotline.audio.mulaw import BYTES_PER_MS
from hotline.canned import BUILT_IN_LANGUAGES, built_in_file
from hotline.prompts import CannedLine, canned_text
from hotline.sim import speech

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "hotline" / "data"
KEEP_SILENCE_MS = 100
QUIET_RMS = 50  # a 10 ms stretch quieter than this is silence


def trim_trailing_silence(audio: bytes) -> bytes:
    step = 10 * BYTES_PER_MS
    end = len(audio)
    while end > 0 and mulaw.rms(audio[max(0, end - step):end]) < QUIET_RMS:
        end -= step
    return audio[:min(len(audio), max(0, end) + KEEP_SILENCE_MS * BYTES_PER_MS)]


def main() -> int:
    if not speech.have_espeak():
        print("espeak-ng is not installed: nothing written", file=sys.stderr)
        return 1
    for line in CannedLine:
        for language in BUILT_IN_LANGUAGES:
            audio = trim_trailing_silence(speech.synthesize(canned_text(line, language), language))
            path = DATA_DIR / built_in_file(line, language)
            path.write_bytes(audio)
            print(f"{path}: {len(audio) / BYTES_PER_MS / 1000:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
