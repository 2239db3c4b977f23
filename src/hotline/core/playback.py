"""Playback bookkeeping: what agent audio went to Twilio, and how much the caller heard.

Each chunk of agent audio is forwarded to Twilio whole; a mark named `m<n>` follows once
`MARK_EVERY_MS` of an item's audio has gone without one, and after the item's last audio
(`mark()`: its response is done, another item starts, a cached line is all sent). Twilio
echoes a mark once the audio before it has played, so an echoed mark is a checkpoint "item
X played up to Y ms". Between checkpoints the position is extrapolated from the last one
at real-time speed, never past the next un-echoed mark nor past what was sent; and when
audio is sent after Twilio's buffer has (by that estimate) run dry, it plays from now.
The chunk that starts playback (from quiet, or after the buffer ran dry) has a mark of
its own: it takes time to reach Twilio, and until its echo the guess may lead what
played by no more than that chunk, as when every chunk had a mark.
That keeps the truncation position exact with a mark per ~100 ms rather than per delta
(half the messages to Twilio and a fifth of the echoes, at 20 ms deltas). After a
`clear`, Twilio returns the marks it flushed: they are no longer pending, so they are
ignored like unknown ones. (The phone simulator's `Playout` is the other side of this
bookkeeping.)
"""

from __future__ import annotations

from dataclasses import dataclass

from hotline.audio.mulaw import BYTES_PER_MS, b64_decoded_len
from hotline.core.commands import Command, SendToTwilio, TwilioMarkOut, TwilioMediaOut
from hotline.core.greeting import heard_part
from hotline.core.record import TranscriptTurn

MARK_EVERY_MS = 100.0  # at most this much of an item's audio goes without a mark


@dataclass(slots=True)
class AgentItem:
    """One assistant item whose audio we forwarded (or cached audio we played ourselves)."""

    response_id: str
    started_ms: float
    sent_ms: float = 0.0
    played_ms: float = 0.0
    transcript: str = ""
    partial: str = ""  # the transcript's deltas so far (the words of a line still going)
    truncated_at_ms: int | None = None
    recorded: bool = False
    engine_gone: bool = False  # made by an engine session since lost: it can't truncate it


@dataclass(slots=True)
class _Playhead:
    """Last known playback position: `item_id` had played `played_ms` at `at_ms`."""

    item_id: str
    at_ms: float
    played_ms: float


@dataclass(slots=True)
class MarkEcho:
    """A pending mark came back: `item_id` played up to it; `item_finished` once none of
    that item's marks are pending any more."""

    item_id: str
    item_finished: bool


class Playback:
    def __init__(self) -> None:
        self.items: dict[str, AgentItem] = {}
        self.current_item_id: str | None = None
        self._mark_seq = 0
        # name -> (item_id, the item's sent_ms once the audio before the mark has played)
        self._pending_marks: dict[str, tuple[str, float]] = {}
        self._playhead: _Playhead | None = None
        self._unmarked: str | None = None  # the item whose last audio has no mark yet
        self._unmarked_ms = 0.0  # how much of it
        self._last_sent: str | None = None  # the item of the last audio sent

    @property
    def audible(self) -> bool:
        """Agent audio is queued at Twilio (some mark has not come back, or is still to be
        sent after the audio of an item under way)."""
        return bool(self._pending_marks) or self._unmarked is not None

    def current(self) -> AgentItem | None:
        item_id = self.current_item_id
        return None if item_id is None else self.items[item_id]

    def start_item(self, item_id: str, response_id: str, now_ms: float,
                   transcript: str = "") -> AgentItem:
        item = self.items[item_id] = AgentItem(response_id, now_ms, transcript=transcript)
        self.current_item_id = item_id
        return item

    def send(self, item_id: str, payload_b64: str, now_ms: float) -> list[Command]:
        """One chunk of the item's audio to Twilio, untouched; a mark after it when
        `MARK_EVERY_MS` of the item went without one (it comes back once played)."""
        item = self.items[item_id]
        commands: list[Command] = []
        if self._unmarked is not None and self._unmarked != item_id:
            commands = self.mark()  # the other item's last audio is marked first
        head = self._playhead
        starts = not self.audible or (
            head is not None and head.item_id == self._last_sent
            and head.played_ms + (now_ms - head.at_ms) > self.items[head.item_id].sent_ms)
        if starts:
            # Nothing plays, or Twilio's buffer has run dry (by the estimate: all the audio
            # sent has played): this plays from now, or from when it reaches Twilio. Its
            # own mark bounds the guess to this chunk until the echo says when it played.
            self._playhead = _Playhead(item_id, now_ms, item.sent_ms)
        self._last_sent = item_id
        ms = b64_decoded_len(payload_b64) / BYTES_PER_MS
        item.sent_ms += ms
        self._unmarked = item_id
        self._unmarked_ms += ms
        commands.append(SendToTwilio(TwilioMediaOut(payload_b64)))
        if starts or self._unmarked_ms >= MARK_EVERY_MS:
            commands += self.mark()
        return commands

    def mark(self) -> list[Command]:
        """A mark after the audio sent so far (none if it all has one): the item's last
        audio, or a cached line all sent."""
        item_id = self._unmarked
        if item_id is None:
            return []
        self._unmarked = None
        self._unmarked_ms = 0.0
        self._mark_seq += 1
        mark_name = f"m{self._mark_seq}"
        self._pending_marks[mark_name] = (item_id, self.items[item_id].sent_ms)
        return [SendToTwilio(TwilioMarkOut(mark_name))]

    def on_mark(self, name: str, now_ms: float) -> MarkEcho | None:
        """Twilio echoed a mark; None if it is not pending (duplicate, unknown, flushed)."""
        if name not in self._pending_marks:
            return None
        # Marks come back in order: everything up to this one has played.
        while True:
            first = next(iter(self._pending_marks))
            item_id, played_ms = self._pending_marks.pop(first)
            if first == name:
                break
        item = self.items.get(item_id)
        if item is not None:
            item.played_ms = max(item.played_ms, played_ms)
        finished = not self.has_pending(item_id)
        if item_id == self.current_item_id:
            self._playhead = _Playhead(item_id, now_ms, played_ms)
        elif finished:
            # The item queued next starts now: the current one, or one still before it.
            following = next(iter(self._pending_marks.values()), (self._unmarked, 0.0))[0]
            if following is not None:
                self._playhead = _Playhead(following, now_ms, self.items[following].played_ms)
        return MarkEcho(item_id, finished)

    def has_pending(self, item_id: str) -> bool:
        return self._unmarked == item_id or any(
            i == item_id for i, _ in self._pending_marks.values())

    def heard_ms(self, now_ms: float) -> int:
        """How much of the current item the caller has heard, rounded down, never past what
        was sent (the engine rejects a truncate beyond its audio)."""
        item = self.current()
        if item is None:
            return 0
        head = self._playhead
        if head is None or head.item_id != self.current_item_id:
            estimate = item.played_ms
        else:
            estimate = head.played_ms + max(0.0, now_ms - head.at_ms)
        ceiling = item.sent_ms
        for pending_item, played_ms in self._pending_marks.values():
            if pending_item == self.current_item_id:
                ceiling = min(ceiling, played_ms)
                break
        return int(max(0.0, min(estimate, ceiling)))

    def queued_ms(self, now_ms: float) -> float:
        """Audio of the current item still waiting to be played at Twilio."""
        item = self.current()
        if item is None or not self.audible:
            return 0.0
        return item.sent_ms - self.heard_ms(now_ms)

    def clear(self) -> None:
        """Twilio's buffer was cleared: nothing is pending, nothing plays."""
        self._pending_marks.clear()
        self._playhead = None
        self._unmarked = None
        self._unmarked_ms = 0.0
        self._last_sent = None

    def turns(self, response_id: str | None) -> list[TranscriptTurn]:
        """Transcript turns of one response's items (None: every item not yet recorded)."""
        return [turn for turn, _ in self.take_turns(response_id)]

    def take_turns(self, response_id: str | None) -> list[tuple[TranscriptTurn, str]]:
        """As `turns`, each with the words the caller heard (a cut line up to its cut)."""
        turns: list[tuple[TranscriptTurn, str]] = []
        for item in self.items.values():
            if item.recorded or (response_id is not None and item.response_id != response_id):
                continue
            item.recorded = True
            interrupted = item.truncated_at_ms is not None
            heard = item.truncated_at_ms if item.truncated_at_ms is not None else item.sent_ms
            text = item.transcript or item.partial
            heard_text = text
            if item.truncated_at_ms is not None and item.sent_ms > 0:
                heard_text = heard_part(text, item.truncated_at_ms / item.sent_ms)
            turns.append((TranscriptTurn("agent", text, int(item.started_ms),
                                         int(item.started_ms + heard), interrupted), heard_text))
        return turns
