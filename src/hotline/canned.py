"""Canned lines: what a caller hears when the engine cannot speak, as cached audio.

- the apology (`CannedLine.APOLOGY`) when no engine session can be had ("Sorry, we're
  having technical trouble. Please leave your name, number and message after the tone.");
- the hold line (`CannedLine.HOLD`) when the engine drops while the caller waits on it
  ("One moment, please."), covering the reconnect.

Their words (`hotline.prompts.CANNED_TEXTS`, in the business's language) are rendered by the
engine in the business's voice while it is healthy: the greeting cache keeps them beside the
greetings, keyed like them (text, voice, model). Until that exists, a built-in recording
shipped with the package plays instead: `data/<line>-<lang>.ulaw`, μ-law 8 kHz made with
espeak-ng by `scripts/make_canned_audio.py`. Languages without one use English.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources

from hotline.core.greeting import CannedAudio, CannedSource
from hotline.greetings import split_frames
from hotline.prompts import APOLOGY_FALLBACK_LANGUAGE, CannedLine

log = logging.getLogger("hotline.canned")

# Languages with a built-in recording of every line in hotline/data.
BUILT_IN_LANGUAGES = ("en", "he")


def built_in_file(line: CannedLine, language: str) -> str:
    return f"{line.value}-{language}.ulaw"


@functools.cache
def built_in_frames(line: CannedLine, language: str) -> tuple[str, ...]:
    """The built-in recording's frames (English for a language without one). Read once per
    line and language; `load_built_in()` reads them all at start-up, so the media loop
    never does."""
    if language not in BUILT_IN_LANGUAGES:
        return built_in_frames(line, APOLOGY_FALLBACK_LANGUAGE)
    data = resources.files("hotline") / "data" / built_in_file(line, language)
    try:
        return split_frames(data.read_bytes())
    except OSError as exc:
        # A broken install: the apology's tone alone still tells the caller to speak; a
        # missing hold line leaves the reconnect silent, as before there was one.
        log.error("built-in %s line for %s missing (%r): not played", line.value, language,
                  exc)
        return ()


def load_built_in() -> None:
    for line in CannedLine:
        for language in BUILT_IN_LANGUAGES:
            built_in_frames(line, language)


def canned_audio(line: CannedLine, rendered: tuple[str, ...] | None,
                 language: str) -> CannedAudio:
    """The engine's rendering when the cache has it, else the built-in recording."""
    if rendered:
        return CannedAudio(rendered, CannedSource.RENDERED)
    return CannedAudio(built_in_frames(line, language), CannedSource.BUILT_IN)
