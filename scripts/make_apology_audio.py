"""Regenerate the built-in apologies (src/hotline/data/apology-<lang>.ulaw) with espeak-ng.

    PYTHONPATH=src python scripts/make_apology_audio.py

They play when the engine cannot be had and no apology rendered by the engine in the
business's voice is cached yet. μ-law 8 kHz, mono, raw (what Twilio plays).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hotline.apology import BUILT_IN_LANGUAGES, built_in_file
from hotline.audio.mulaw import BYTES_PER_MS
from hotline.prompts import APOLOGY_TEXTS
from hotline.sim import speech

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "hotline" / "data"


def main() -> int:
    if not speech.have_espeak():
        print("espeak-ng is not installed: nothing written", file=sys.stderr)
        return 1
    for language in BUILT_IN_LANGUAGES:
        audio = speech.synthesize(APOLOGY_TEXTS[language], language)
        path = DATA_DIR / built_in_file(language)
        path.write_bytes(audio)
        print(f"{path}: {len(audio) / BYTES_PER_MS / 1000:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
