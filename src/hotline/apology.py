"""The apology a caller hears when no engine session can be had, as audio.

The words (`hotline.prompts.APOLOGY_TEXTS`: "Sorry, we're having technical trouble. Please
leave your name, number and message after the tone.", in the business's language) are
rendered by the engine in the business's voice while it is healthy: the greeting cache keeps
them beside the greetings, keyed like them (text, voice, model). Until that exists, a
built-in recording shipped with the package plays instead: `data/apology-<lang>.ulaw`,
μ-law 8 kHz made with espeak-ng by `scripts/make_apology_audio.py`. Languages without one
use English.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources

from hotline.core.greeting import ApologyAudio, ApologySource
from hotline.greetings import split_frames
from hotline.prompts import APOLOGY_FALLBACK_LANGUAGE

log = logging.getLogger("hotline.apology")

# Languages with a built-in recording in hotline/data.
BUILT_IN_LANGUAGES = ("en", "he")


def built_in_file(language: str) -> str:
    return f"apology-{language}.ulaw"


@functools.cache
def built_in_frames(language: str) -> tuple[str, ...]:
    """The built-in recording's frames (English for a language without one). Read once per
    language; `load_built_in()` reads them all at start-up, so the media loop never does."""
    if language not in BUILT_IN_LANGUAGES:
        return built_in_frames(APOLOGY_FALLBACK_LANGUAGE)
    data = resources.files("hotline") / "data" / built_in_file(language)
    try:
        return split_frames(data.read_bytes())
    except OSError as exc:
        # A broken install: the tone alone still tells the caller to speak.
        log.error("built-in apology for %s missing (%r): the tone plays alone", language, exc)
        return ()


def load_built_in() -> None:
    for language in BUILT_IN_LANGUAGES:
        built_in_frames(language)


def apology_audio(rendered: tuple[str, ...] | None, language: str) -> ApologyAudio:
    """The engine's rendering when the cache has it, else the built-in recording."""
    if rendered:
        return ApologyAudio(rendered, ApologySource.RENDERED)
    return ApologyAudio(built_in_frames(language), ApologySource.BUILT_IN)
