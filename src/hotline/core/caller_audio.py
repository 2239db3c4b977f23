"""The caller's recent audio, kept (by reference) to be sent again after an engine drop.

The audio of a caller turn the dead engine never transcribed (still open at the drop, or
committed and its transcript not come) is lost with it: the new session would hear only
what the caller says after the drop. So the core keeps references to the caller's recent
frames (no copies: the payloads the runner already holds), ~15 s while some turn is not
transcribed yet and a short lead otherwise, and at the drop takes those since that turn
began; the resume sends them again ahead of the audio that waited.
"""

from __future__ import annotations

from collections import deque

# While a caller turn is not transcribed yet: at most this much of their audio is kept.
MAX_KEPT_MS = 15_000
# Otherwise only this much: the engine's VAD announces a turn a few hundred ms after its
# speech began (its prefix padding), and a turn's frames start this long before it.
LEAD_MS = 600


class RecentCallerAudio:
    def __init__(self) -> None:
        self._frames: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, now_ms: float, payload_b64: str, turn_pending: bool) -> None:
        """One caller frame (as sent to the engine); `turn_pending`: a caller turn is not
        transcribed yet (keep up to `MAX_KEPT_MS`, else `LEAD_MS`)."""
        frames = self._frames
        frames.append((now_ms, payload_b64))
        oldest = now_ms - (MAX_KEPT_MS if turn_pending else LEAD_MS)
        while frames[0][0] < oldest:
            frames.popleft()

    def since(self, start_ms: float | None) -> list[str]:
        """The frames from `LEAD_MS` before `start_ms` on (none for None), and forget them
        all: they go to the next engine session once."""
        frames, self._frames = self._frames, deque()
        if start_ms is None:
            return []
        first = start_ms - LEAD_MS
        return [payload for at_ms, payload in frames if at_ms >= first]
