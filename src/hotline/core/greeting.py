"""Greeting helpers: the cached greeting's conversation items, and the words a caller heard."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.plan import CallPlan

# Our own ids for cached audio's conversation items (the engine did not make them).
CACHED_GREETING_ITEM = "hotline_greeting"
CACHED_GREETING_HEARD_ITEM = "hotline_greeting_heard"
CACHED_VOICEMAIL_ITEM = "hotline_voicemail"
CACHED_APOLOGY_ITEM = "hotline_apology"  # the apology and its tone (engine unavailable)
CACHED_HOLD_ITEM = "hotline_hold"  # "one moment, please" while the engine reconnects
CACHED = "cached-greeting"  # stands for a response id: no engine response says it
# How the timeline details say audio came from the cache (the metrics read it back).
CACHED_AUDIO = "cached audio"


def live_greeting_detail(plan: CallPlan) -> str:
    """How a live greeting was asked for, for the timeline: which prompt, how long."""
    prompt = "compact" if plan.upgrades_prompt else "full"
    return f"live, {prompt} prompt {len(plan.initial_instructions)} chars"


def heard_part(text: str, fraction: float) -> str:
    """The words of `text` a caller heard when cut off at `fraction` of its audio."""
    if fraction >= 1:
        return text
    cut = int(len(text) * max(0.0, fraction))
    words = text[:cut].rsplit(" ", 1)[0] if " " in text[:cut] else ""
    return f"{words}—" if words else ""


class CannedSource(enum.Enum):
    RENDERED = "rendered"  # by the engine, in the business's voice (the greeting cache)
    BUILT_IN = "built-in"  # the package's espeak-ng recording


@dataclass(frozen=True, slots=True)
class CannedAudio:
    """A canned line (the apology, the hold line) as base64 μ-law frames, and their origin."""

    frames: tuple[str, ...]
    source: CannedSource
