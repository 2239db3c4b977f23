"""CallSession: the pure core of one call. Events in, commands out; no I/O, no clock.

The runner feeds every event with `now_ms` (ms since the webhook arrived) and executes the
commands. All call logic lives here so that a whole call can be replayed event by event:
greeting, prompt upgrade, warmup, barge-in (clear + truncate at the heard position),
echo cooldown, transcript and timeline.

Playback bookkeeping: each engine audio delta is forwarded to Twilio whole, followed by a
mark named `m<n>`. Twilio echoes a mark once the audio before it has played, so an echoed
mark is a checkpoint "item X played up to Y ms". Between checkpoints the position is
extrapolated from the last one at real-time speed, never past the next un-echoed mark.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.audio.mulaw import BYTES_PER_MS, b64_decoded_len
from hotline.call.commands import (
    AddAssistantText,
    AddUserText,
    AppendAudio,
    Command,
    CreateResponse,
    DeleteItem,
    EndCall,
    Record,
    SendToEngine,
    SendToTwilio,
    Truncate,
    TwilioClear,
    TwilioMarkOut,
    TwilioMediaOut,
    UpdateInstructions,
)
from hotline.call.events import (
    CallEvent,
    EngineAgentTranscript,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineClosed,
    EngineError,
    EngineResponseCreated,
    EngineResponseDone,
    EngineSessionUpdated,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineTruncated,
    TimerFired,
    TwilioClosed,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from hotline.call.record import TimelineStage, TranscriptTurn
from hotline.plan import CallPlan


class CallPhase(enum.Enum):
    AWAITING_START = "awaiting_start"
    GREETING = "greeting"  # bot speaks first: the greeting is requested or playing
    LISTENING = "listening"  # caller speaks first: waiting for the first turn
    CONVERSING = "conversing"  # the first response is done; full prompt in force
    ENDED = "ended"


class Outcome:
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(slots=True)
class _AgentItem:
    response_id: str
    started_ms: float
    sent_ms: float = 0.0
    played_ms: float = 0.0
    transcript: str = ""
    truncated_at_ms: int | None = None
    recorded: bool = False


@dataclass(slots=True)
class _Playhead:
    """Last known playback position: `item_id` had played `played_ms` at `at_ms`."""

    item_id: str
    at_ms: float
    played_ms: float


@dataclass(slots=True)
class _CallerTurn:
    started_ms: float
    stopped_ms: float | None = None


@dataclass(slots=True)
class CallStats:
    media_in: int = 0
    media_dropped_warmup: int = 0
    deltas_out: int = 0
    deltas_dropped: int = 0
    barge_ins: int = 0
    barge_ins_ignored_cooldown: int = 0
    engine_errors: int = 0
    protocol_errors: int = 0


# Our own ids for the cached greeting's conversation items (the engine did not make them).
CACHED_GREETING_ITEM = "hotline_greeting"
CACHED_GREETING_HEARD_ITEM = "hotline_greeting_heard"
_CACHED = "cached-greeting"  # stands for a response id: no engine response says it


class CallSession:
    def __init__(self, plan: CallPlan, greeting_frames: tuple[str, ...] | None = None) -> None:
        self.plan = plan
        self._greeting_frames = greeting_frames
        self.phase = CallPhase.AWAITING_START
        self.stream_sid: str | None = None
        self.stats = CallStats()
        self.prompt_upgraded = False
        self.outcome: str | None = None
        self._started_ms = 0.0
        self._first_response_done = False
        self._active_response_id: str | None = None
        self._dropped_responses: set[str] = set()
        self._items: dict[str, _AgentItem] = {}
        self._current_item_id: str | None = None
        self._mark_seq = 0
        # name -> (item_id, item's sent_ms once the audio before the mark has played)
        self._pending_marks: dict[str, tuple[str, float]] = {}
        self._flushed_marks: set[str] = set()
        self._playhead: _Playhead | None = None
        self._cooldown_until_ms = float("-inf")
        self._caller_turns: dict[str, _CallerTurn] = {}
        self._seen: set[str] = set()  # timeline stages recorded once

    def stage_recorded_elsewhere(self, stage: str) -> None:
        """A stage the runner recorded itself (a warm session's `engine_configured`), so a
        later `session.updated` (the prompt upgrade's) is not mistaken for it."""
        self._seen.add(stage)

    # -- the one entry point ----------------------------------------------------------------
    def handle(self, event: CallEvent, now_ms: float) -> list[Command]:
        if self.phase is CallPhase.ENDED:
            return []
        match event:
            case TwilioMedia():
                return self._on_media(event, now_ms)
            case EngineAudioDelta():
                return self._on_audio_delta(event, now_ms)
            case TwilioMark():
                return self._on_mark(event, now_ms)
            case TwilioStart():
                return self._on_start(event, now_ms)
            case EngineSpeechStarted():
                return self._on_speech_started(event, now_ms)
            case EngineSpeechStopped():
                turn = self._caller_turns.get(event.item_id)
                if turn is not None:
                    turn.stopped_ms = now_ms
                return []
            case EngineResponseCreated():
                self._active_response_id = event.response_id
                return []
            case EngineResponseDone():
                return self._on_response_done(event, now_ms)
            case EngineAgentTranscript():
                item = self._items.get(event.item_id)
                if item is not None:
                    item.transcript = event.transcript
                return []
            case EngineCallerTranscript():
                return self._on_caller_transcript(event, now_ms)
            case EngineSessionUpdated():
                return self._stage_once("engine_configured", now_ms,
                                        f"instructions {event.instructions_chars} chars")
            case EngineTruncated():
                return []
            case EngineError():
                self.stats.engine_errors += 1
                return [Record(TimelineStage("engine_error", now_ms,
                                             f"{event.code}: {event.message}"[:300]))]
            case TwilioDtmf():
                return self._on_dtmf(event, now_ms)
            case TwilioStop() | TwilioClosed():
                return self._end(Outcome.COMPLETED, "caller hung up", now_ms)
            case EngineClosed():
                return self._end(Outcome.FAILED, "engine connection closed", now_ms)
            case TwilioConnected() | TimerFired():
                return []
        raise TypeError(f"not a call event: {event!r}")

    # -- Twilio side ------------------------------------------------------------------------
    def _on_start(self, event: TwilioStart, now_ms: float) -> list[Command]:
        if self.phase is not CallPhase.AWAITING_START:
            return []  # a second start is off-protocol; the first one stands
        self.stream_sid = event.stream_sid
        self._started_ms = now_ms
        commands: list[Command] = [Record(TimelineStage("stream_start", now_ms))]
        if self._greeting_frames:
            self.phase = CallPhase.GREETING
            return commands + self._play_cached_greeting(self._greeting_frames, now_ms)
        if self.plan.bot_speaks_first and self.plan.greeting_prerequested:
            self.phase = CallPhase.GREETING  # already asked for when the engine connected
        elif self.plan.bot_speaks_first:
            self.phase = CallPhase.GREETING
            commands.append(SendToEngine(CreateResponse()))
            commands.append(Record(TimelineStage("greeting_requested", now_ms,
                                                 live_greeting_detail(self.plan))))
            self._seen.add("greeting_requested")
        else:
            self.phase = CallPhase.LISTENING
        return commands

    def _play_cached_greeting(self, frames: tuple[str, ...], now_ms: float) -> list[Command]:
        """Every frame goes to Twilio at once (it buffers and plays in real time), each with
        a mark; the engine's conversation is told the assistant said the greeting."""
        item = self._items[CACHED_GREETING_ITEM] = _AgentItem(_CACHED, now_ms,
                                                              transcript=self.plan.greeting)
        self._current_item_id = CACHED_GREETING_ITEM
        commands: list[Command] = []
        for frame in frames:
            commands += self._send_audio(CACHED_GREETING_ITEM, item, frame, now_ms)
        commands.append(SendToEngine(AddAssistantText(CACHED_GREETING_ITEM, self.plan.greeting)))
        commands.append(Record(TimelineStage("greeting_requested", now_ms,
                                             f"cached audio {int(item.sent_ms)} ms")))
        commands += self._stage_once("first_audio_to_caller", now_ms)
        return commands

    def _finish_cached_greeting(self, now_ms: float, how: str) -> list[Command]:
        self.phase = CallPhase.CONVERSING
        self._first_response_done = True  # the engine's first response is a reply, not this
        return [*self._record_agent_turns(_CACHED), *self._stage_once("greeting_done", now_ms,
                                                                           how)]

    def _on_media(self, event: TwilioMedia, now_ms: float) -> list[Command]:
        self.stats.media_in += 1
        if self.phase is CallPhase.AWAITING_START:
            return []
        if self.plan.guards_pickup and now_ms - self._started_ms < self.plan.warmup_ms:
            # The first moments after pickup are noise or a "Hello?", not a turn.
            self.stats.media_dropped_warmup += 1
            return []
        return [SendToEngine(AppendAudio(event.payload_b64))]

    def _on_mark(self, event: TwilioMark, now_ms: float) -> list[Command]:
        name = event.name
        if name in self._flushed_marks:
            # Returned by Twilio because of our clear: not a playback confirmation.
            self._flushed_marks.discard(name)
            return []
        if name not in self._pending_marks:
            return []  # duplicate or unknown: ignore
        # Marks come back in order: everything up to this one has played.
        while True:
            first = next(iter(self._pending_marks))
            item_id, played_ms = self._pending_marks.pop(first)
            if first == name:
                break
        item = self._items.get(item_id)
        if item is not None:
            item.played_ms = max(item.played_ms, played_ms)
        current = self._current_item_id
        if item_id == current:
            self._playhead = _Playhead(item_id, now_ms, played_ms)
        elif current is not None and not any(i == item_id for i, _ in self._pending_marks.values()):
            # The previous item finished playing: the current one starts now.
            self._playhead = _Playhead(current, now_ms, 0.0)
        commands: list[Command] = []
        if item_id == CACHED_GREETING_ITEM and self.phase is CallPhase.GREETING and not any(
                i == CACHED_GREETING_ITEM for i, _ in self._pending_marks.values()):
            commands = self._finish_cached_greeting(now_ms, "cached audio played")
        if not self._pending_marks and self._active_response_id is None:
            # The agent's audio has finished playing: its echo may still come back.
            self._cooldown_until_ms = now_ms + self.plan.echo_cooldown_ms
        return commands

    def _on_dtmf(self, event: TwilioDtmf, now_ms: float) -> list[Command]:
        if self.phase is CallPhase.AWAITING_START:
            return []
        turn = TranscriptTurn("caller", f"[pressed {event.digit}]", int(now_ms), int(now_ms))
        return [SendToEngine(AddUserText(f"The caller pressed the key {event.digit}.")),
                Record(turn)]

    # -- engine side ------------------------------------------------------------------------
    def _on_audio_delta(self, event: EngineAudioDelta, now_ms: float) -> list[Command]:
        if event.response_id in self._dropped_responses or self.stream_sid is None:
            self.stats.deltas_dropped += 1
            return []
        commands: list[Command] = []
        item = self._items.get(event.item_id)
        if item is None:
            item = self._items[event.item_id] = _AgentItem(event.response_id, now_ms)
            self._current_item_id = event.item_id
            commands += self._stage_once("first_audio_from_engine", now_ms)
        commands += self._send_audio(event.item_id, item, event.delta_b64, now_ms)
        commands += self._stage_once("first_audio_to_caller", now_ms)
        return commands

    def _send_audio(self, item_id: str, item: _AgentItem, payload_b64: str,
                    now_ms: float) -> list[Command]:
        """One chunk of agent audio to Twilio, untouched, then a mark that comes back once
        it has played."""
        if not self._pending_marks:
            # The line is idle: this chunk starts playing now.
            self._playhead = _Playhead(item_id, now_ms, item.sent_ms)
        item.sent_ms += b64_decoded_len(payload_b64) / BYTES_PER_MS
        self._mark_seq += 1
        mark_name = f"m{self._mark_seq}"
        self._pending_marks[mark_name] = (item_id, item.sent_ms)
        self.stats.deltas_out += 1
        return [SendToTwilio(TwilioMediaOut(payload_b64)), SendToTwilio(TwilioMarkOut(mark_name))]

    def _on_speech_started(self, event: EngineSpeechStarted, now_ms: float) -> list[Command]:
        self._caller_turns[event.item_id] = _CallerTurn(now_ms)
        if not self._agent_audible():
            return []  # nothing is playing: an ordinary caller turn
        if now_ms < self._cooldown_until_ms:
            self.stats.barge_ins_ignored_cooldown += 1
            return []
        return self._barge_in(now_ms)

    def _agent_audible(self) -> bool:
        """Agent audio is queued at Twilio, or the reply producing it is still going."""
        if self._pending_marks:
            return True
        item_id = self._current_item_id
        return (item_id is not None and self._active_response_id is not None
                and self._active_response_id not in self._dropped_responses
                and self._items[item_id].response_id == self._active_response_id)

    def _barge_in(self, now_ms: float) -> list[Command]:
        self.stats.barge_ins += 1
        commands: list[Command] = [SendToTwilio(TwilioClear())]
        item_id = self._current_item_id
        heard_ms = self._heard_ms(now_ms)
        self._flushed_marks.update(self._pending_marks)
        self._pending_marks.clear()
        self._playhead = None
        detail = "nothing played yet"
        if item_id is not None:
            item = self._items[item_id]
            if item.response_id == _CACHED:
                commands += self._cut_cached_greeting(item, heard_ms, now_ms)
                commands.append(Record(TimelineStage(
                    "barge_in", now_ms, f"heard {heard_ms} of {int(item.sent_ms)} ms (cached)")))
                return commands
            still_going = self._active_response_id == item.response_id
            if still_going:
                # The engine cancels it (interrupt_response); late deltas must not play.
                self._dropped_responses.add(item.response_id)
            if heard_ms > 0 and (heard_ms < item.sent_ms or still_going):
                item.truncated_at_ms = heard_ms
                commands.append(SendToEngine(Truncate(item_id, heard_ms)))
            detail = f"heard {heard_ms} of {int(item.sent_ms)} ms"
        commands.append(Record(TimelineStage("barge_in", now_ms, detail)))
        return commands

    def _cut_cached_greeting(self, item: _AgentItem, heard_ms: int,
                             now_ms: float) -> list[Command]:
        """The engine did not make the cached greeting's item, so it can't truncate it:
        replace it with the part of the text the caller heard."""
        item.truncated_at_ms = heard_ms
        commands: list[Command] = [SendToEngine(DeleteItem(CACHED_GREETING_ITEM))]
        heard_text = heard_part(self.plan.greeting, heard_ms / item.sent_ms if item.sent_ms else 0)
        item.transcript = heard_text
        if heard_text:
            commands.append(SendToEngine(AddAssistantText(CACHED_GREETING_HEARD_ITEM,
                                                          heard_text, previous_item_id="root")))
        return commands + self._finish_cached_greeting(now_ms, "cut by the caller")

    def _heard_ms(self, now_ms: float) -> int:
        """How much of the current item the caller has heard, rounded down, never past what
        was sent (the engine rejects a truncate beyond its audio)."""
        item_id = self._current_item_id
        if item_id is None:
            return 0
        item = self._items[item_id]
        head = self._playhead
        if head is None or head.item_id != item_id:
            estimate = item.played_ms
        else:
            estimate = head.played_ms + max(0.0, now_ms - head.at_ms)
        ceiling = item.sent_ms
        for pending_item, played_ms in self._pending_marks.values():
            if pending_item == item_id:
                ceiling = min(ceiling, played_ms)
                break
        return int(max(0.0, min(estimate, ceiling)))

    def _on_response_done(self, event: EngineResponseDone, now_ms: float) -> list[Command]:
        if self._active_response_id == event.response_id:
            self._active_response_id = None
        commands: list[Command] = []
        commands += self._record_agent_turns(event.response_id)
        if not self._first_response_done:
            self._first_response_done = True
            if self.phase is CallPhase.GREETING:
                commands += self._stage_once("greeting_done", now_ms, event.status)
            if self.plan.upgrades_prompt:
                commands.append(SendToEngine(UpdateInstructions(self.plan.full_instructions)))
                commands.append(Record(TimelineStage(
                    "prompt_upgraded", now_ms,
                    f"full prompt {len(self.plan.full_instructions)} chars")))
                self.prompt_upgraded = True
            self.phase = CallPhase.CONVERSING
        if not self._pending_marks:
            self._cooldown_until_ms = now_ms + self.plan.echo_cooldown_ms
        return commands

    def _record_agent_turns(self, response_id: str | None) -> list[Command]:
        """Transcript turns of the agent items of one response (None: all left unrecorded)."""
        commands: list[Command] = []
        for item in self._items.values():
            if item.recorded or (response_id is not None and item.response_id != response_id):
                continue
            item.recorded = True
            interrupted = item.truncated_at_ms is not None
            heard = item.truncated_at_ms if item.truncated_at_ms is not None else item.sent_ms
            commands.append(Record(TranscriptTurn(
                "agent", item.transcript, int(item.started_ms), int(item.started_ms + heard),
                interrupted)))
        return commands

    def _on_caller_transcript(self, event: EngineCallerTranscript, now_ms: float) -> list[Command]:
        turn = self._caller_turns.pop(event.item_id, None)
        started = turn.started_ms if turn else now_ms
        stopped = turn.stopped_ms if turn and turn.stopped_ms is not None else now_ms
        return [Record(TranscriptTurn("caller", event.transcript, int(started), int(stopped)))]

    # -- shared -----------------------------------------------------------------------------
    def _stage_once(self, stage: str, now_ms: float, detail: str = "") -> list[Command]:
        if stage in self._seen:
            return []
        self._seen.add(stage)
        return [Record(TimelineStage(stage, now_ms, detail))]

    def _end(self, outcome: str, reason: str, now_ms: float) -> list[Command]:
        self.phase = CallPhase.ENDED
        self.outcome = outcome
        # Agent items whose response never finished still belong in the transcript.
        commands = self._record_agent_turns(None)
        commands.append(Record(TimelineStage("call_ended", now_ms, reason)))
        commands.append(EndCall(outcome))
        return commands


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
