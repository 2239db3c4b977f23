"""Twilio's playback buffer, as the simulated phone keeps it: the pure core of playout.

No clock, no I/O: every method takes `now_ms` (the caller's clock, in ms), so the
bookkeeping is tested without sockets. `PhoneStream` feeds it what the server sends and
asks it when marks are due.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from hotline.audio import mulaw


@dataclass(slots=True)
class PendingMark:
    name: str
    received_ms: float
    due_ms: float  # when the audio queued before it has played
    flushed: bool = False  # returned early by a clear


@dataclass(slots=True)
class ClearOutcome:
    played_ms: float  # played on the call so far (cumulative)
    dropped_ms: float  # queued audio discarded
    flushed: list[str]  # marks returned early, in order


@dataclass(slots=True)
class _Segment:
    start_ms: float
    audio: bytes

    @property
    def end_ms(self) -> float:
        return self.start_ms + len(self.audio) / mulaw.BYTES_PER_MS


class Playout:
    """Twilio's playback buffer: audio plays at 8 bytes/ms in arrival order, back to back.

    Audio that arrives while the line is idle starts at once; audio that arrives while
    something plays starts when that ends. A mark is due when the audio queued before it
    has played (at once if nothing is queued). Bookkeeping is in bytes, so played + dropped
    is exactly what arrived.
    """

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._finished = 0  # segments[:_finished] have played to their end
        self._finished_bytes = 0
        self._busy_until_ms = -math.inf
        self._marks: deque[PendingMark] = deque()

    def enqueue_audio(self, audio: bytes, now_ms: float) -> None:
        if not audio:
            return
        segment = _Segment(max(now_ms, self._busy_until_ms), audio)
        self._segments.append(segment)
        self._busy_until_ms = segment.end_ms

    def enqueue_mark(self, name: str, now_ms: float) -> PendingMark:
        mark = PendingMark(name, now_ms, max(now_ms, self._busy_until_ms))
        self._marks.append(mark)
        return mark

    def pop_due_marks(self, now_ms: float) -> list[PendingMark]:
        due: list[PendingMark] = []
        while self._marks and self._marks[0].due_ms <= now_ms:
            due.append(self._marks.popleft())
        return due

    def next_mark_due_ms(self) -> float | None:
        return self._marks[0].due_ms if self._marks else None

    def played_bytes(self, now_ms: float) -> int:
        self._advance(now_ms)
        played = self._finished_bytes
        if self._finished < len(self._segments):
            played += self._partial_bytes(self._segments[self._finished], now_ms)
        return played

    def played_ms(self, now_ms: float) -> float:
        return self.played_bytes(now_ms) / mulaw.BYTES_PER_MS

    def last_heard_ms(self, now_ms: float) -> float | None:
        """When agent audio last played: `now_ms` while playing, None if nothing has."""
        self._advance(now_ms)
        if (self._finished < len(self._segments)
                and self._segments[self._finished].start_ms < now_ms):
            return now_ms
        if self._finished:
            return self._segments[self._finished - 1].end_ms
        return None

    def clear(self, now_ms: float) -> ClearOutcome:
        """Drop the unplayed audio; every mark not yet due becomes due now (flushed)."""
        played = self.played_bytes(now_ms)
        dropped = self._truncate(now_ms)
        flushed: list[str] = []
        for mark in self._marks:
            if mark.due_ms > now_ms:
                mark.due_ms = now_ms
                mark.flushed = True
                flushed.append(mark.name)
        return ClearOutcome(played / mulaw.BYTES_PER_MS, dropped / mulaw.BYTES_PER_MS, flushed)

    def finish(self, now_ms: float) -> int:
        """The line went down: stop playing. Returns the bytes that never played."""
        self.played_bytes(now_ms)
        return self._truncate(now_ms)

    def heard(self) -> list[tuple[float, bytes]]:
        """(start_ms, audio) of everything queued; after `finish`, exactly what played."""
        return [(segment.start_ms, segment.audio) for segment in self._segments]

    def _advance(self, now_ms: float) -> None:
        segments = self._segments
        while self._finished < len(segments) and segments[self._finished].end_ms <= now_ms:
            self._finished_bytes += len(segments[self._finished].audio)
            self._finished += 1

    @staticmethod
    def _partial_bytes(segment: _Segment, now_ms: float) -> int:
        if now_ms <= segment.start_ms:
            return 0
        return min(len(segment.audio), int((now_ms - segment.start_ms) * mulaw.BYTES_PER_MS))

    def _truncate(self, now_ms: float) -> int:
        """Cut playback at `now_ms` (after `_advance(now_ms)`); returns the bytes dropped."""
        dropped = 0
        index = self._finished
        if index < len(self._segments):
            current = self._segments[index]
            keep = self._partial_bytes(current, now_ms)
            dropped += len(current.audio) - keep
            for later in self._segments[index + 1:]:
                dropped += len(later.audio)
            del self._segments[index + 1:]
            if keep:
                current.audio = current.audio[:keep]
                self._finished_bytes += keep
                self._finished += 1
            else:
                del self._segments[index]
        self._busy_until_ms = self._segments[-1].end_ms if self._segments else -math.inf
        return dropped

