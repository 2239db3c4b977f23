"""The greeting strategies the benchmark compares (server settings, nothing else differs)
and the engine latency profiles it runs them on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hotline.settings import Settings
from hotline.sim.engine import LatencyProfile


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    warm_sessions: bool
    greeting_cache: bool
    greeting_prompt: str  # "compact" | "full"
    summary: str
    # The full prompt carries the greeting (naive: one prompt, which must itself greet).
    greeting_in_full_prompt: bool = False

    def settings(self) -> dict[str, Any]:
        return {"warm_sessions": self.warm_sessions, "greeting_cache": self.greeting_cache,
                "greeting_prompt": self.greeting_prompt,
                "greeting_in_full_prompt": self.greeting_in_full_prompt}

    @property
    def live_greeting(self) -> bool:
        """The engine speaks the greeting on the call (no cached audio)."""
        return not self.greeting_cache


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("naive", False, False, "full",
             "connect at start, full prompt (which carries the greeting), then ask for the "
             "greeting", greeting_in_full_prompt=True),
    Strategy("seed", False, False, "compact",
             "compact prompt built in the webhook; connect at start; greet; upgrade after"),
    Strategy("hotline-warm", True, False, "compact",
             "engine session prepared by the webhook; live greeting with the compact prompt"),
    Strategy("hotline", True, True, "compact",
             "warm session + greeting pre-rendered by the engine, played from memory"),
)}
BASELINE = "hotline"

PROFILES: dict[str, Callable[[], LatencyProfile]] = {
    "zero": LatencyProfile.zero,
    "modeled": LatencyProfile.modeled,
}


def describe_profile(profile: LatencyProfile) -> str:
    if not (profile.connect_ms or profile.session_update_ms or profile.first_audio_base_ms
            or profile.first_audio_per_1000_chars_ms):
        return "no delays"
    pacing = "real-time audio" if profile.realtime_factor == 1 else (
        f"audio at {profile.realtime_factor:g}× real time")
    return (f"connect {profile.connect_ms:g} ms, session.update {profile.session_update_ms:g} "
            f"ms, first audio {profile.first_audio_base_ms:g} ms + "
            f"{profile.first_audio_per_1000_chars_ms:g} ms per 1000 instruction chars, "
            f"{pacing}")


def missing_settings(strategy: Strategy) -> list[str]:
    return [name for name in strategy.settings() if name not in Settings.model_fields]
