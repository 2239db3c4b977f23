"""Silence timers: nudge a quiet caller, then say goodbye; both counted from one moment."""

from __future__ import annotations

from hotline.core.commands import CancelTimer, Command, StartTimer
from hotline.core.timers import TimerName


class SilenceTimers:
    __slots__ = ("_hangup_ms", "_nudge_ms", "armed")

    def __init__(self, nudge_ms: int, hangup_ms: int) -> None:
        self._nudge_ms = nudge_ms
        self._hangup_ms = hangup_ms
        self.armed = False

    def arm(self) -> list[Command]:
        if self.armed:
            return []
        self.armed = True
        return [StartTimer(TimerName.SILENCE_NUDGE, self._nudge_ms),
                StartTimer(TimerName.SILENCE_HANGUP, self._hangup_ms)]

    def disarm(self) -> list[Command]:
        if not self.armed:
            return []
        self.armed = False
        return [CancelTimer(TimerName.SILENCE_NUDGE), CancelTimer(TimerName.SILENCE_HANGUP)]
