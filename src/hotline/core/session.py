"""CallSession: the pure core of one call. Events in, commands out; no I/O, no clock.

The runner feeds every event with `now_ms` (ms since the webhook arrived) and executes the
commands. All call logic lives here so that a whole call can be replayed event by event:
greeting, prompt upgrade, warmup, barge-in (clear + truncate at the heard position),
echo cooldown, transcript and timeline; and call control: tools, goodbyes that hang up
once heard, transfers, DTMF actions, answering machines, silence and time limits.

Turns: server VAD only detects them (no auto response, no auto interrupt). A caller turn
that begins while the agent is audible, or in the echo cooldown after it, counts only if
the `SpeechGate` heard at least `barge_in_min_speech_ms` of speech in it; otherwise it is
noise (a cough, the agent's own echo) and is deleted unanswered. Speech that long while the
agent is audible is a barge-in.

Closing: a goodbye, handover or voicemail is a response (or cached audio) that plays in
full (no barge-in), and once its last mark is echoed the call is hung up or transferred
through Twilio's REST API; `goodbye_cap_ms` bounds the wait.

Playback bookkeeping: each engine audio delta is forwarded to Twilio whole, followed by a
mark named `m<n>`. Twilio echoes a mark once the audio before it has played, so an echoed
mark is a checkpoint "item X played up to Y ms". Between checkpoints the position is
extrapolated from the last one at real-time speed, never past the next un-echoed mark.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.audio.mulaw import BYTES_PER_MS, b64_decoded_len
from hotline.audio.speech_gate import SpeechGate
from hotline.core.commands import (
    AddAssistantText,
    AddFunctionOutput,
    AddUserText,
    AppendAudio,
    CancelResponse,
    CancelTimer,
    Command,
    CreateResponse,
    DeleteItem,
    EndCall,
    HangUpCall,
    Record,
    RunTool,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TransferCall,
    Truncate,
    TwilioClear,
    TwilioMarkOut,
    TwilioMediaOut,
    UpdateInstructions,
)
from hotline.core.events import (
    AmdVerdict,
    CallControlFailed,
    CallEvent,
    EngineAgentTranscript,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineClosed,
    EngineError,
    EngineFunctionCall,
    EngineInputCommitted,
    EngineResponseCreated,
    EngineResponseDone,
    EngineSessionUpdated,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineTruncated,
    TimerFired,
    TimerName,
    ToolFinished,
    TwilioClosed,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from hotline.core.outcomes import Outcome
from hotline.core.record import TimelineStage, TranscriptTurn
from hotline.plan import CallPlan
from hotline.prompts import (
    GOODBYE_INSTRUCTIONS,
    HANDOVER_INSTRUCTIONS,
    NUDGE_INSTRUCTIONS,
    SILENCE_GOODBYE_INSTRUCTIONS,
    TIME_LIMIT_INSTRUCTIONS,
    say_exactly,
)


class CallPhase(enum.Enum):
    AWAITING_START = "awaiting_start"
    # Outbound: the greeting waits for the answering-machine verdict, at most `amd_cap_ms`
    # while the callee is quiet (a person who said "Hello?"); a callee still talking past
    # the cap (a machine's message, nearly always) is not talked over.
    AWAITING_AMD = "awaiting_amd"
    GREETING = "greeting"  # bot speaks first: the greeting is requested or playing
    LISTENING = "listening"  # caller speaks first: waiting for the first turn
    CONVERSING = "conversing"  # the first response is done; full prompt in force
    ENDED = "ended"


class _Purpose(enum.Enum):
    """Why a response was asked for: it decides what may interrupt or replace it."""

    GREETING = "greeting"
    REPLY = "reply"  # to a caller turn, a key, or a tool's answer
    NUDGE = "nudge"  # "are you still there?"
    CLOSING = "closing"  # goodbye, handover line or voicemail


# A caller turn counts as speech if the gate heard speech this close to (or after) its start.
GATE_TURN_WINDOW_MS = 500

# Answering-machine verdicts (Twilio `AnsweredBy`, DetectMessageEnd mode).
MACHINE_VERDICTS = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
HUMAN_VERDICTS = frozenset({"human", "unknown"})


@dataclass(slots=True)
class _Closing:
    """The call is ending on our side: what to say first, then what to do."""

    outcome: str
    reason: str
    transfer_to: str | None = None  # None: hang up
    awaits_next_response: bool = False  # the line to say is a response not yet created
    response_id: str | None = None  # the response saying it
    response_done: bool = True
    acted: bool = False  # the hang-up / transfer has been asked of Twilio


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
    contested: bool = False  # began over the agent's audio or in the echo cooldown
    committed: bool = False  # in the conversation: the turn is over


@dataclass(slots=True)
class CallStats:
    media_in: int = 0
    media_dropped_warmup: int = 0
    deltas_out: int = 0
    deltas_dropped: int = 0
    barge_ins: int = 0
    barge_ins_ignored_cooldown: int = 0
    noise_turns_ignored: int = 0
    media_held_for_amd: int = 0
    tool_calls: int = 0
    engine_errors: int = 0
    protocol_errors: int = 0


# Our own ids for the cached greeting's conversation items (the engine did not make them).
CACHED_GREETING_ITEM = "hotline_greeting"
CACHED_GREETING_HEARD_ITEM = "hotline_greeting_heard"
_CACHED = "cached-greeting"  # stands for a response id: no engine response says it


class CallSession:
    def __init__(self, plan: CallPlan, greeting_frames: tuple[str, ...] | None = None,
                 voicemail_frames: tuple[str, ...] | None = None) -> None:
        self.plan = plan
        self._greeting_frames = greeting_frames
        self._voicemail_frames = voicemail_frames
        self.phase = CallPhase.AWAITING_START
        self.stream_sid: str | None = None
        self.stats = CallStats()
        self.prompt_upgraded = False
        self.outcome: str | None = None
        self._started_ms = 0.0
        self._first_response_done = False
        self._active_response_id: str | None = None
        self._active_purpose = _Purpose.REPLY
        # The one response.create sent and not yet created (the engine refuses a second one
        # while a response is going), with the event_id its error would carry.
        self._requested: _Purpose | None = None
        self._request_event_id: str | None = None
        self._request_seq = 0
        self._wanted: list[tuple[str | None, _Purpose]] = []  # responses to ask for, in order
        self._responses_with_audio: set[str] = set()
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
        self._noise_items: set[str] = set()
        self._gate = SpeechGate(plan.barge_in_min_speech_ms, plan.vad_threshold)
        self._heard_speech_ms = float("-inf")  # the gate last judged caller sound speech
        self._tool_calls: dict[str, str] = {}  # running: call_id -> the response that called
        # Tool answers held until every tool its response called has answered and the
        # response is done: response_id -> outputs, and whether a reply should follow.
        self._tool_outputs: dict[str, list[AddFunctionOutput]] = {}
        self._tool_reply: dict[str, bool] = {}
        self._closing: _Closing | None = None
        self._silence_armed = False
        self._nudged = False
        self._amd_verdict: str | None = None
        self._amd_cap_passed = False
        self._callee_voiced_ms = float("-inf")  # last loud frame while awaiting the verdict
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
            case EngineInputCommitted():
                return self._on_committed(event, now_ms)
            case EngineResponseCreated():
                return self._on_response_created(event, now_ms)
            case EngineResponseDone():
                return self._on_response_done(event, now_ms)
            case EngineAgentTranscript():
                item = self._items.get(event.item_id)
                if item is not None:
                    item.transcript = event.transcript
                return []
            case EngineCallerTranscript():
                return self._on_caller_transcript(event, now_ms)
            case EngineFunctionCall():
                return self._on_function_call(event, now_ms)
            case ToolFinished():
                return self._on_tool_finished(event, now_ms)
            case EngineSessionUpdated():
                return self._stage_once("engine_configured", now_ms,
                                        f"instructions {event.instructions_chars} chars")
            case EngineTruncated():
                return []
            case EngineError():
                return self._on_engine_error(event, now_ms)
            case TwilioDtmf():
                return self._on_dtmf(event, now_ms)
            case TimerFired():
                return self._on_timer(event.timer, now_ms)
            case AmdVerdict():
                return self._on_amd(event, now_ms)
            case CallControlFailed():
                return self._on_control_failed(event, now_ms)
            case TwilioStop() | TwilioClosed():
                return self._end(self._outcome_at_hangup(), "call ended by Twilio", now_ms)
            case EngineClosed():
                return self._end(Outcome.FAILED, "engine connection closed", now_ms)
            case TwilioConnected():
                return []
        raise TypeError(f"not a call event: {event!r}")

    # -- Twilio side ------------------------------------------------------------------------
    def _on_start(self, event: TwilioStart, now_ms: float) -> list[Command]:
        if self.phase is not CallPhase.AWAITING_START:
            return []  # a second start is off-protocol; the first one stands
        self.stream_sid = event.stream_sid
        self._started_ms = now_ms
        commands: list[Command] = [Record(TimelineStage("stream_start", now_ms)),
                                   StartTimer(TimerName.MAX_DURATION, self.plan.max_duration_ms)]
        if self.plan.amd and self._amd_verdict is None:
            # An answering machine must not hear a greeting meant for a person.
            self.phase = CallPhase.AWAITING_AMD
            commands.append(StartTimer(TimerName.AMD_CAP, self.plan.amd_cap_ms))
            commands.append(Record(TimelineStage("amd_waiting", now_ms,
                                                 f"greeting held up to {self.plan.amd_cap_ms} ms")))
            return commands
        if self._amd_verdict in MACHINE_VERDICTS:
            return commands + self._leave_voicemail(now_ms)
        if self._amd_verdict == "fax":
            self.phase = CallPhase.CONVERSING
            return commands + self._close(_Closing(Outcome.FAILED, "fax machine"), None, now_ms)
        return commands + self._greet(now_ms)

    def _greet(self, now_ms: float) -> list[Command]:
        if self._greeting_frames:
            self.phase = CallPhase.GREETING
            return self._play_cached_greeting(self._greeting_frames, now_ms)
        if self.plan.bot_speaks_first and self.plan.greeting_prerequested:
            self.phase = CallPhase.GREETING  # already asked for when the engine connected
            self._requested = _Purpose.GREETING
            return []
        if self.plan.bot_speaks_first:
            self.phase = CallPhase.GREETING
            self._seen.add("greeting_requested")
            return [*self._want(None, _Purpose.GREETING),
                    Record(TimelineStage("greeting_requested", now_ms,
                                         live_greeting_detail(self.plan)))]
        self.phase = CallPhase.LISTENING
        return self._arm_silence()

    def _play_cached_greeting(self, frames: tuple[str, ...], now_ms: float) -> list[Command]:
        """Every frame goes to Twilio at once (it buffers and plays in real time), each with
        a mark; the engine's conversation is told the assistant said the greeting."""
        commands = self._play_cached(CACHED_GREETING_ITEM, frames, self.plan.greeting, now_ms)
        commands.append(SendToEngine(AddAssistantText(CACHED_GREETING_ITEM, self.plan.greeting)))
        commands.append(Record(TimelineStage(
            "greeting_requested", now_ms,
            f"cached audio {int(self._items[CACHED_GREETING_ITEM].sent_ms)} ms")))
        commands += self._stage_once("first_audio_to_caller", now_ms)
        return commands

    def _play_cached(self, item_id: str, frames: tuple[str, ...], text: str,
                     now_ms: float) -> list[Command]:
        item = self._items[item_id] = _AgentItem(_CACHED, now_ms, transcript=text)
        self._current_item_id = item_id
        commands: list[Command] = []
        for frame in frames:
            commands += self._send_audio(item_id, item, frame, now_ms)
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
        if self.phase is CallPhase.AWAITING_AMD:
            return self._on_media_awaiting_amd(event, now_ms)
        if self._closing is not None:
            return []  # the caller over our goodbye: not a turn to answer
        if self.plan.guards_pickup and now_ms - self._started_ms < self.plan.warmup_ms:
            # The first moments after pickup are noise or a "Hello?", not a turn.
            self.stats.media_dropped_warmup += 1
            return []
        commands: list[Command] = [SendToEngine(AppendAudio(event.payload_b64))]
        if not self._gate_listening(now_ms):
            self._gate.reset()
            return commands
        if self._gate.feed(event.payload_b64):
            self._heard_speech_ms = now_ms
            commands += self._disarm_silence()
            if self._agent_audible() and self._turn_open():
                # The engine's VAD and the gate agree: the caller is speaking over the agent.
                commands += self._barge_in(now_ms)
        return commands

    def _turn_open(self) -> bool:
        return any(not t.committed for t in self._caller_turns.values())

    def _on_media_awaiting_amd(self, event: TwilioMedia, now_ms: float) -> list[Command]:
        """Callee audio before the verdict (a machine's message, or a "Hello?") is not sent
        to the engine; past the cap, the greeting goes once the callee is quiet."""
        self.stats.media_held_for_amd += 1
        if self._gate.voiced(event.payload_b64):
            self._callee_voiced_ms = now_ms
        if self._amd_cap_passed and self._callee_quiet(now_ms):
            return [Record(TimelineStage("amd_cap_reached", now_ms, "callee quiet")),
                    *self._greet(now_ms)]
        return []

    def _callee_quiet(self, now_ms: float) -> bool:
        return now_ms - self._callee_voiced_ms >= self.plan.vad_silence_ms

    def _gate_listening(self, now_ms: float) -> bool:
        """The gate judges caller sound only when it could be echo or an interruption."""
        return (self._agent_audible() or now_ms < self._cooldown_until_ms
                or any(t.contested and t.stopped_ms is None for t in self._caller_turns.values()))

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
        if not self._pending_marks and self._line_idle():
            commands += self._playback_ended(now_ms)
        return commands

    def _on_dtmf(self, event: TwilioDtmf, now_ms: float) -> list[Command]:
        if self.phase in (CallPhase.AWAITING_START, CallPhase.AWAITING_AMD) or self._closing:
            return []
        turn = TranscriptTurn("caller", f"[pressed {event.digit}]", int(now_ms), int(now_ms))
        commands: list[Command] = [Record(turn), *self._disarm_silence()]
        action = self.plan.dtmf_action(event.digit)
        if action == "transfer_to_human" and self.plan.transfer_number:
            return commands + self._close(
                _Closing(Outcome.TRANSFERRED, f"key {event.digit}",
                         transfer_to=self.plan.transfer_number),
                HANDOVER_INSTRUCTIONS, now_ms)
        if action == "end_call":
            return commands + self._close(_Closing(Outcome.HUNG_UP_BY_AGENT,
                                                   f"key {event.digit}"),
                                          GOODBYE_INSTRUCTIONS, now_ms)
        commands.append(SendToEngine(AddUserText(f"The caller pressed the key {event.digit}.")))
        return commands + self._want(None, _Purpose.REPLY)

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
            self._responses_with_audio.add(event.response_id)
            commands += self._stage_once("first_audio_from_engine", now_ms)
        commands += self._send_audio(event.item_id, item, event.delta_b64, now_ms)
        commands += self._stage_once("first_audio_to_caller", now_ms)
        if self._closing is not None:
            commands += self._goodbye_cap(now_ms)
        return commands

    def _goodbye_cap(self, now_ms: float) -> list[Command]:
        """The last line may take as long as its audio still queued at Twilio, plus the cap:
        the cap is for a line that never finishes, not a long one."""
        queued_ms = 0.0
        item_id = self._current_item_id
        if item_id is not None and self._pending_marks:
            queued_ms = self._items[item_id].sent_ms - self._heard_ms(now_ms)
        return [StartTimer(TimerName.GOODBYE_CAP, self.plan.goodbye_cap_ms + int(queued_ms))]

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
        audible = self._agent_audible()
        contested = audible or now_ms < self._cooldown_until_ms
        self._caller_turns[event.item_id] = _CallerTurn(now_ms, contested=contested)
        heard = self._gate_heard_since(now_ms)
        if contested and not heard:
            if not audible:
                self.stats.barge_ins_ignored_cooldown += 1
            return []  # the gate decides whether this is speech
        commands = self._disarm_silence()
        if audible and heard:
            commands += self._barge_in(now_ms)  # the gate was first: now the turn is open
        return commands

    def _gate_heard_since(self, started_ms: float) -> bool:
        return self._heard_speech_ms >= started_ms - GATE_TURN_WINDOW_MS

    def _on_committed(self, event: EngineInputCommitted, now_ms: float) -> list[Command]:
        """The caller's turn is in the conversation: answer it, or drop it as noise."""
        turn = self._caller_turns.get(event.item_id)
        if turn is not None:
            turn.committed = True
        heard = turn is not None and self._gate_heard_since(turn.started_ms)
        self._gate.reset()
        if self._closing is not None or self.phase is CallPhase.AWAITING_AMD:
            return []
        if turn is not None and turn.contested and not heard:
            self.stats.noise_turns_ignored += 1
            self._noise_items.add(event.item_id)
            self._caller_turns.pop(event.item_id, None)
            commands: list[Command] = [
                SendToEngine(DeleteItem(event.item_id)),
                Record(TimelineStage("noise_ignored", now_ms,
                                     "caller sound too short to be speech over the agent"))]
            if self._line_idle() and not self._pending_marks:
                commands += self._arm_silence()
            return commands + self._next_response()
        return self._want(None, _Purpose.REPLY)

    def _agent_audible(self) -> bool:
        """Agent audio is queued at Twilio, or the reply producing it is still going."""
        if self._pending_marks:
            return True
        item_id = self._current_item_id
        return (item_id is not None and self._active_response_id is not None
                and self._active_response_id not in self._dropped_responses
                and self._items[item_id].response_id == self._active_response_id)

    def _line_idle(self) -> bool:
        """No response is going or wanted: once the marks are in, nobody is speaking."""
        return self._active_response_id is None and self._requested is None and not self._wanted

    def _barge_in(self, now_ms: float) -> list[Command]:
        if self._closing is not None:
            return []  # a goodbye plays out in full
        self.stats.barge_ins += 1
        return self._cut_agent(now_ms, "barge_in")

    def _cut_agent(self, now_ms: float, stage: str) -> list[Command]:
        """Stop the agent's audio at once: clear Twilio's buffer, tell the engine how much
        was heard, cancel the response still producing it."""
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
                if item_id == CACHED_GREETING_ITEM:
                    commands += self._cut_cached_greeting(item, heard_ms, now_ms)
                commands += self._cancel_active()
                commands.append(Record(TimelineStage(
                    stage, now_ms, f"heard {heard_ms} of {int(item.sent_ms)} ms (cached)")))
                return commands
            still_going = self._active_response_id == item.response_id
            if heard_ms > 0 and (heard_ms < item.sent_ms or still_going):
                item.truncated_at_ms = heard_ms
                commands.append(SendToEngine(Truncate(item_id, heard_ms)))
            detail = f"heard {heard_ms} of {int(item.sent_ms)} ms"
        commands += self._cancel_active()
        commands.append(Record(TimelineStage(stage, now_ms, detail)))
        return commands

    def _cancel_active(self) -> list[Command]:
        """The response in progress (audible yet or not) must not play: late deltas of it
        are dropped and the engine is told to stop making them."""
        response_id = self._active_response_id
        if response_id is None or response_id in self._dropped_responses:
            return []
        self._dropped_responses.add(response_id)
        return [SendToEngine(CancelResponse())]

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

    def _on_response_created(self, event: EngineResponseCreated,
                             now_ms: float) -> list[Command]:
        self._active_response_id = event.response_id
        purpose = self._requested or _Purpose.REPLY
        self._active_purpose = purpose
        self._requested = self._request_event_id = None
        closing = self._closing
        if closing is not None and purpose is _Purpose.CLOSING and closing.awaits_next_response:
            closing.awaits_next_response = False
            closing.response_id = event.response_id
            closing.response_done = False
        elif closing is not None and purpose is not _Purpose.CLOSING:
            # Asked for before the call began to close: only the last line may play now.
            return self._cancel_active()
        if purpose is _Purpose.NUDGE:
            return []  # the nudge itself is no answer from the caller
        return self._disarm_silence()

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
            if self.phase is not CallPhase.AWAITING_AMD:
                self.phase = CallPhase.CONVERSING
        commands += self._release_outputs(event.response_id)
        closing = self._closing
        if closing is not None and closing.response_id == event.response_id:
            closing.response_done = True
        commands += self._next_response()
        commands += self._maybe_act(now_ms)
        if not self._pending_marks and self._line_idle():
            commands += self._playback_ended(now_ms)
        return commands

    def _playback_ended(self, now_ms: float) -> list[Command]:
        """The agent's audio has finished playing: its echo may still come back; the
        caller's silence starts counting."""
        self._cooldown_until_ms = now_ms + self.plan.echo_cooldown_ms
        return self._maybe_act(now_ms) + self._arm_silence()

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
        if event.item_id in self._noise_items:
            return []
        turn = self._caller_turns.pop(event.item_id, None)
        started = turn.started_ms if turn else now_ms
        stopped = turn.stopped_ms if turn and turn.stopped_ms is not None else now_ms
        return [Record(TranscriptTurn("caller", event.transcript, int(started), int(stopped)))]

    # -- responses we ask for -----------------------------------------------------------------
    def _want(self, instructions: str | None, purpose: _Purpose) -> list[Command]:
        """A response is wanted: asked for now, or as soon as the engine may take it."""
        closing = self._closing
        if closing is not None and (closing.acted or purpose is not _Purpose.CLOSING):
            return []  # the call is ending: only its last line is still wanted
        if purpose is _Purpose.REPLY and any(p is _Purpose.REPLY for _, p in self._wanted):
            return self._next_response()  # one reply answers everything so far
        self._wanted.append((instructions, purpose))
        return self._next_response()

    def _next_response(self) -> list[Command]:
        """Ask for the next wanted response if nothing is going or asked for (the engine
        refuses a second one), and, for a reply, once the caller has finished their turn."""
        if not self._wanted or self._active_response_id is not None or self._requested:
            return []
        instructions, purpose = self._wanted[0]
        if purpose is _Purpose.REPLY and self._turn_open():
            return []  # the caller is still talking: their turn's end asks again
        self._wanted.pop(0)
        self._requested = purpose
        self._request_seq += 1
        self._request_event_id = f"hotline_response_{self._request_seq}"
        return [SendToEngine(CreateResponse(instructions, event_id=self._request_event_id))]

    def _on_engine_error(self, event: EngineError, now_ms: float) -> list[Command]:
        self.stats.engine_errors += 1
        commands: list[Command] = [Record(TimelineStage(
            "engine_error", now_ms, f"{event.code}: {event.message}"[:300]))]
        if event.event_id is None or event.event_id != self._request_event_id:
            return commands
        # Our response.create was refused: nothing is coming. Don't wait for it.
        failed, self._requested, self._request_event_id = self._requested, None, None
        closing = self._closing
        if failed is _Purpose.CLOSING and closing is not None:
            closing.awaits_next_response = False  # hang up without the last line
            return commands + self._maybe_act(now_ms)
        return commands + self._next_response()

    # -- tools --------------------------------------------------------------------------------
    def _on_function_call(self, event: EngineFunctionCall, now_ms: float) -> list[Command]:
        self.stats.tool_calls += 1
        stage = Record(TimelineStage("tool_called", now_ms, event.name))
        self._tool_outputs.setdefault(event.response_id, [])
        if event.response_id in self._dropped_responses:
            # The caller cut this reply off: its tool does not run, the model is told why.
            self._tool_outputs[event.response_id].append(AddFunctionOutput(
                event.call_id, '{"error": "not done: the caller interrupted"}'))
            return [stage, *self._release_outputs(event.response_id)]
        self._tool_calls[event.call_id] = event.response_id
        return [RunTool(event.call_id, event.name, event.arguments), stage]

    def _on_tool_finished(self, event: ToolFinished, now_ms: float) -> list[Command]:
        response_id = self._tool_calls.pop(event.call_id, "")
        commands: list[Command] = [Record(TimelineStage(
            "tool_done", now_ms, f"{event.name}: {'error' if event.error else 'ok'}"))]
        if event.message is not None:
            commands.append(Record(event.message))
        self._tool_outputs.setdefault(response_id, []).append(
            AddFunctionOutput(event.call_id, event.output_json))
        interrupted = response_id in self._dropped_responses
        if event.effect in ("end_call", "transfer") and self._closing is None and not interrupted:
            transfer_to = self.plan.transfer_number if event.effect == "transfer" else None
            closing = _Closing(Outcome.TRANSFERRED if transfer_to else Outcome.HUNG_UP_BY_AGENT,
                               event.name, transfer_to=transfer_to)
            if response_id in self._responses_with_audio:
                # The reply that called the tool already said goodbye (or the handover
                # line): it only has to finish playing.
                closing.response_id = response_id
                closing.response_done = self._active_response_id != response_id
            else:
                closing.awaits_next_response = True  # the tool's answer asks for the line
            commands += self._start_closing(closing, now_ms)
        elif not interrupted and self._closing is None:
            self._tool_reply[response_id] = True
        return commands + self._release_outputs(response_id) + self._maybe_act(now_ms)

    def _release_outputs(self, response_id: str) -> list[Command]:
        """Tool answers go to the model once the response that called the tools is done and
        every one of its tools has answered; then one reply, or the closing line."""
        if (self._active_response_id == response_id or response_id not in self._tool_outputs
                or any(r == response_id for r in self._tool_calls.values())):
            return []
        commands: list[Command] = [SendToEngine(o) for o in self._tool_outputs.pop(response_id)]
        closing = self._closing
        if closing is not None and closing.awaits_next_response and not any(
                p is _Purpose.CLOSING for _, p in self._wanted):
            commands += self._want(None, _Purpose.CLOSING)
        elif self._tool_reply.pop(response_id, False):
            commands += self._want(None, _Purpose.REPLY)
        return commands

    # -- ending the call on our side ------------------------------------------------------------
    def _close(self, closing: _Closing, instructions: str | None,
               now_ms: float) -> list[Command]:
        """Say a last line (a response with `instructions`), then hang up or transfer."""
        if self._closing is not None:
            return []
        commands: list[Command] = []
        if self._agent_audible():
            commands += self._cut_agent(now_ms, "agent_cut")
        else:
            commands += self._cancel_active()  # a reply not heard yet must not start
        if instructions is not None:
            closing.awaits_next_response = True
        commands += self._start_closing(closing, now_ms)
        if instructions is not None:
            commands += self._want(instructions, _Purpose.CLOSING)
        return commands + self._maybe_act(now_ms)

    def _start_closing(self, closing: _Closing, now_ms: float) -> list[Command]:
        self._closing = closing
        self._wanted = [w for w in self._wanted if w[1] is _Purpose.CLOSING]
        what = f"transfer to {closing.transfer_to}" if closing.transfer_to else "hang up"
        return [*self._disarm_silence(),
                StartTimer(TimerName.GOODBYE_CAP, self.plan.goodbye_cap_ms),
                Record(TimelineStage("closing", now_ms, f"{closing.reason}: {what}"))]

    def _maybe_act(self, now_ms: float, *, force: bool = False) -> list[Command]:
        """Once the last line has played (every mark echoed), hang up or transfer."""
        closing = self._closing
        if closing is None or closing.acted:
            return []
        if not force and (closing.awaits_next_response or not closing.response_done
                          or self._pending_marks):
            return []
        closing.acted = True
        self._wanted.clear()
        stage = "transfer_requested" if closing.transfer_to else "hang_up_requested"
        command: Command = (TransferCall(closing.transfer_to) if closing.transfer_to
                            else HangUpCall())
        detail = closing.reason + (" (goodbye cap reached)" if force else "")
        return [command, Record(TimelineStage(stage, now_ms, detail))]

    def _on_control_failed(self, event: CallControlFailed, now_ms: float) -> list[Command]:
        """Twilio's REST API did not take the hang-up or transfer: closing the stream ends
        the `<Connect>` and with it the call."""
        outcome = Outcome.FAILED if event.action == "transfer" else self._outcome_at_hangup()
        return [Record(TimelineStage("call_control_failed", now_ms,
                                     f"{event.action}: {event.detail}"[:300])),
                *self._end(outcome, f"{event.action} through Twilio failed", now_ms)]

    def _outcome_at_hangup(self) -> str:
        closing = self._closing
        if closing is None:
            return Outcome.COMPLETED
        if closing.transfer_to and not closing.acted:
            return Outcome.COMPLETED  # the caller left before the transfer
        return closing.outcome

    # -- answering machines -----------------------------------------------------------------
    def _on_amd(self, event: AmdVerdict, now_ms: float) -> list[Command]:
        if self._amd_verdict is not None:
            return []
        self._amd_verdict = event.answered_by
        commands: list[Command] = [Record(TimelineStage("amd_verdict", now_ms,
                                                        event.answered_by))]
        if self.phase is CallPhase.AWAITING_START or self._closing is not None:
            return commands  # the stream's start acts on it / the call is ending anyway
        if event.answered_by in MACHINE_VERDICTS:
            return commands + self._leave_voicemail(now_ms)
        if event.answered_by == "fax":
            commands.append(CancelTimer(TimerName.AMD_CAP))
            self.phase = CallPhase.CONVERSING
            return commands + self._close(_Closing(Outcome.FAILED, "fax machine"), None, now_ms)
        if self.phase is CallPhase.AWAITING_AMD and event.answered_by in HUMAN_VERDICTS:
            commands.append(CancelTimer(TimerName.AMD_CAP))
            return commands + self._greet(now_ms)
        return commands  # machine_start: its beep verdict follows; the cap still holds

    def _leave_voicemail(self, now_ms: float) -> list[Command]:
        """The beep has sounded: stop whatever we were saying, leave the message, hang up."""
        commands: list[Command] = [CancelTimer(TimerName.AMD_CAP)]
        if self._agent_audible():
            commands += self._cut_agent(now_ms, "agent_cut")
        self.phase = CallPhase.CONVERSING
        closing = _Closing(Outcome.VOICEMAIL, "answering machine")
        if self._voicemail_frames:
            commands += self._start_closing(closing, now_ms)
            commands += self._play_cached("hotline_voicemail", self._voicemail_frames,
                                          self.plan.voicemail, now_ms)
            commands += self._goodbye_cap(now_ms)
            commands.append(Record(TimelineStage("voicemail_started", now_ms, "cached audio")))
            return commands + self._maybe_act(now_ms)
        if not self.plan.voicemail:
            return commands + self._close(closing, None, now_ms)
        commands.append(Record(TimelineStage("voicemail_started", now_ms, "live")))
        return commands + self._close(closing, say_exactly(self.plan.voicemail), now_ms)

    # -- timers ------------------------------------------------------------------------------
    def _on_timer(self, timer: TimerName, now_ms: float) -> list[Command]:
        if timer is TimerName.AMD_CAP:
            if self.phase is not CallPhase.AWAITING_AMD:
                return []
            self._amd_cap_passed = True
            if not self._callee_quiet(now_ms):
                return []  # never talk over the callee: a machine's message, most likely
            return [Record(TimelineStage("amd_cap_reached", now_ms)), *self._greet(now_ms)]
        if timer is TimerName.GOODBYE_CAP:
            return self._maybe_act(now_ms, force=True)
        if timer is TimerName.MAX_DURATION:
            return self._close(_Closing(Outcome.HUNG_UP_BY_AGENT, "time limit"),
                               TIME_LIMIT_INSTRUCTIONS, now_ms)
        if not self._silence_armed or self._closing is not None:
            return []
        if timer is TimerName.SILENCE_NUDGE:
            self._nudged = True
            return [Record(TimelineStage("silence_nudge", now_ms)),
                    *self._want(NUDGE_INSTRUCTIONS, _Purpose.NUDGE)]
        return self._close(_Closing(Outcome.HUNG_UP_BY_AGENT, "silence"),
                           SILENCE_GOODBYE_INSTRUCTIONS, now_ms)

    def _arm_silence(self) -> list[Command]:
        """The line is quiet: start counting the caller's silence (the nudge's own audio
        does not restart the count)."""
        if (self._closing is not None or self._silence_armed or self._tool_calls
                or self.phase not in (CallPhase.CONVERSING, CallPhase.LISTENING)
                or self._turn_open()):
            return []  # (a running tool's answer is on its way: that is no silence)
        self._silence_armed = True
        return [StartTimer(TimerName.SILENCE_NUDGE, self.plan.silence_nudge_ms),
                StartTimer(TimerName.SILENCE_HANGUP, self.plan.silence_hangup_ms)]

    def _disarm_silence(self) -> list[Command]:
        self._nudged = False
        if not self._silence_armed:
            return []
        self._silence_armed = False
        return [CancelTimer(TimerName.SILENCE_NUDGE), CancelTimer(TimerName.SILENCE_HANGUP)]

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
