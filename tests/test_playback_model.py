"""`Playback`'s idea of what the caller heard, against Twilio's buffer as the simulated
phone keeps it (`hotline.sim.playout.Playout`), over random streams of agent audio.

Marks go out per ~100 ms of audio, not per chunk, so the position between them is
computed. Whatever the pacing (bursts, real time, late chunks that find the buffer dry),
the items, the `mark()` at an item's end and the clears, the position is never past what
was sent; with messages that reach Twilio at once and echoes that come back at once it is
exact (to the ms it is rounded down to); echoes that take `up` ms make it lag by no more;
audio that takes `down` ms to reach Twilio makes it lead by no more than the chunk that
started the playback (a mark follows that chunk), as when every chunk had its mark.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.core.commands import Command, SendToTwilio, TwilioMarkOut, TwilioMediaOut
from hotline.core.playback import Playback
from hotline.sim.playout import Playout

_CLEAR = object()


@dataclass
class _Line:
    """One call's playback: the core's bookkeeping, and Twilio's buffer `down` ms away
    whose echoes take `up` ms to come back."""

    down: float
    up: float
    playback: Playback = field(default_factory=Playback)
    playout: Playout = field(default_factory=Playout)
    now_ms: float = 0.0
    items: int = 0
    in_flight: list[tuple[float, str, object]] = field(default_factory=list)
    starts: dict[str, float] = field(default_factory=dict)  # item -> start in played audio
    queued_total: float = 0.0  # audio that reached the buffer, minus what clears dropped
    since_clear: set[str] = field(default_factory=set)  # marks sent after the last clear

    def advance(self, ms: float) -> None:
        """Time passes: messages reach Twilio, echoes reach the core, in time order."""
        target = self.now_ms + ms
        while True:
            arrival = self.in_flight[0][0] if self.in_flight else math.inf
            due = self.playout.next_mark_due_ms()
            echo_at = math.inf if due is None else due + self.up
            if min(arrival, echo_at) > target:
                break
            if arrival <= echo_at:
                self._arrive(*self.in_flight.pop(0))
            else:
                for mark in self.playout.pop_due_marks(due):  # type: ignore[arg-type]
                    echo = self.playback.on_mark(mark.name, echo_at)
                    if mark.name in self.since_clear and not mark.flushed:
                        assert echo is not None, mark.name  # still pending
                    if mark.flushed:
                        assert echo is None  # no longer pending after our clear
        self.now_ms = target

    def _arrive(self, at: float, item_id: str, message: object) -> None:
        if message is _CLEAR:
            outcome = self.playout.clear(at)
            self.queued_total -= outcome.dropped_ms
        elif isinstance(message, TwilioMediaOut):
            audio = base64.b64decode(message.payload_b64)
            self.starts.setdefault(item_id, self.queued_total)
            self.playout.enqueue_audio(audio, at)
            self.queued_total += len(audio) / BYTES_PER_MS
        else:
            assert isinstance(message, TwilioMarkOut)
            self.playout.enqueue_mark(message.name, at)

    def run(self, commands: list[Command]) -> None:
        item_id = self.playback.current_item_id or ""
        for command in commands:
            assert isinstance(command, SendToTwilio)
            if isinstance(command.message, TwilioMarkOut):
                self.since_clear.add(command.message.name)
            self.in_flight.append((self.now_ms + self.down, item_id, command.message))

    def new_item(self) -> None:
        self.items += 1
        self.playback.start_item(f"i{self.items}", f"r{self.items}", self.now_ms)

    def send(self, ms: int) -> None:
        item_id = self.playback.current_item_id
        assert item_id is not None
        self.run(self.playback.send(item_id, base64.b64encode(b"\xff" * (ms * 8)).decode(),
                                    self.now_ms))

    def clear(self) -> None:
        self.playback.clear()
        self.since_clear.clear()
        self.in_flight.append((self.now_ms + self.down, "", _CLEAR))

    def check(self, lead_ms: float) -> None:
        """The position is within `lead_ms` ahead of what played, and lags by less than an
        echo's trip (plus the ms it is rounded down by)."""
        item_id, item = self.playback.current_item_id, self.playback.current()
        assert item_id is not None and item is not None
        heard = self.playback.heard_ms(self.now_ms)
        start = self.starts.get(item_id)
        played = 0.0 if start is None else self.playout.played_ms(self.now_ms) - start
        truth = min(item.sent_ms, max(0.0, played))
        assert heard <= item.sent_ms  # the engine refuses a truncation past its audio
        assert heard <= truth + lead_ms + 1e-6, (heard, truth)
        assert truth - heard < self.up + self.down + 1, (heard, truth)


_STEP = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([20, 20, 20, 40, 60, 100, 240, 600])),
    st.tuples(st.just("wait"), st.integers(0, 150)),
    st.tuples(st.just("item"), st.just(0)),  # the next item (the last one's end is marked)
    st.tuples(st.just("done"), st.just(0)),  # the response is done: its end is marked
    st.tuples(st.just("clear"), st.just(0)),
)


def _play(line: _Line, steps: list[tuple[str, int]], lead_ms: float) -> None:
    line.new_item()
    for kind, value in steps:
        if kind == "send":
            line.send(value)
        elif kind == "wait":
            line.advance(value)
        elif kind == "item":
            line.new_item()
        elif kind == "done":
            line.run(line.playback.mark())
        else:
            line.check(lead_ms)  # a barge-in reads the position, then clears
            line.clear()
            line.new_item()  # the cut item gets no more audio
        line.check(lead_ms)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=80), up=st.sampled_from([0, 0, 7, 40]))
# Three items queued: the first one's last echo starts the second, not the current one.
@example(steps=[("send", 20), ("item", 0), ("send", 20), ("item", 0), ("send", 20),
                ("wait", 21)], up=0)
def test_exact_when_twilio_is_no_distance_away(steps: list[tuple[str, int]],
                                               up: int) -> None:
    _play(_Line(down=0, up=up), steps, lead_ms=0)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=80), down=st.sampled_from([15, 50, 120]),
       up=st.sampled_from([0, 30]))
# The next item's audio, sent after the last one's had all played (by the estimate) but
# before its echo came back, plays from when it reaches Twilio.
@example(steps=[("send", 20), ("item", 0), ("wait", 81), ("send", 20), ("send", 20),
                ("wait", 80)], down=120, up=0)
def test_never_ahead_of_twilio_by_more_than_the_chunk_that_started_it(
        steps: list[tuple[str, int]], down: int, up: int) -> None:
    """Audio takes `down` ms to reach Twilio: until an echo says where playback is, the
    position may lead it by that, but never by more than the chunk that (re)started the
    playback, which has its own mark."""
    steps = [("send", min(value, 20)) if kind == "send" else (kind, value)
             for kind, value in steps]  # the engine's 20 ms deltas
    _play(_Line(down=down, up=up), steps, lead_ms=min(down, 20))


def test_real_time_deltas_with_jitter_stay_exact() -> None:
    """The benchmark's worst case: 20 ms deltas at 50 a second, some a little late (the
    buffer runs dry for a moment), some early; a mark only every 100 ms."""
    line = _Line(down=0, up=0)
    line.new_item()
    for gap in [20, 25, 15, 20, 31, 9, 20, 20, 45, 0, 20, 22, 18] * 8:
        line.advance(gap)
        line.send(20)
        for _ in range(4):
            line.advance(gap / 4)
            line.check(0)
