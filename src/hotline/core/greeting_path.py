"""How a call's greeting was made and how long the caller waited for it, read back from the
call's timeline (the metrics, the stats API and the dashboard all use these)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TypeVar

from hotline.core.greeting import CACHED_AUDIO
from hotline.core.record import TimelineStage


class GreetingPath(enum.StrEnum):
    """How a call's greeting was made."""

    CACHED = "cached"  # pre-rendered audio played from memory
    WARM = "warm"  # said live by the engine session the webhook prepared
    COLD = "cold"  # said live by an engine session connected at the stream's start


# The stages these read: a store may fetch only these rows of a timeline.
GREETING_STAGES = ("stream_start", "greeting_requested", "engine_ready", "first_audio_to_caller")


def timeline_greeting_path(timeline: Sequence[TimelineStage]) -> GreetingPath | None:
    """The greeting's path; None if the call never greeted."""
    details = _first(timeline, lambda stage: stage.detail)
    requested = details.get("greeting_requested")
    if requested is None:
        return None
    if requested.startswith(CACHED_AUDIO):
        return GreetingPath.CACHED
    warm = details.get("engine_ready") == GreetingPath.WARM  # the runner's engine path
    return GreetingPath.WARM if warm else GreetingPath.COLD


def timeline_greeting_ms(timeline: Sequence[TimelineStage]) -> float | None:
    """Stream start -> the greeting's first frame sent to the caller, in ms."""
    ms = _first(timeline, lambda stage: stage.ms)
    if "stream_start" not in ms or "first_audio_to_caller" not in ms:
        return None
    return max(0.0, ms["first_audio_to_caller"] - ms["stream_start"])


_T = TypeVar("_T")


def _first(timeline: Sequence[TimelineStage],
           value: Callable[[TimelineStage], _T]) -> dict[str, _T]:
    """Each stage's value at its first occurrence (a resumed call may repeat a stage)."""
    out: dict[str, _T] = {}
    for stage in timeline:
        out.setdefault(stage.stage, value(stage))
    return out
