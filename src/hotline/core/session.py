"""CallSession: the pure core of one call. Events in, commands out; no I/O, no clock.

The runner feeds every event with `now_ms` (ms since the webhook arrived) and executes the
commands. The session coordinates small parts, each with one job and its own tests:

- `Phase` (phase.py): the call's phase; every change goes through its transition table.
- `Playback` (playback.py): agent audio sent, marks, what the caller heard.
- `ResponseQueue` (responses.py): responses wanted, the one in flight, those dropped.
- `CallerTurns` (turns.py): turns, the speech gate, noise, the echo cooldown.
- `ToolLedger` (tool_ledger.py): running tools and their held answers.
- `Closing` (closing.py): the last line, then a hang-up or transfer.
- `AmdWait` (amd.py) and `SilenceTimers` (silence.py).

What the session itself decides: the greeting (cached, live, or prerequested by the warm
session), the prompt upgrade after the first response, the warmup after pickup, barge-in
(clear + truncate at the heard position), DTMF actions, and when to close.
"""

from __future__ import annotations

from hotline.core.amd import AmdWait, AnsweredBy
from hotline.core.closing import Closing, ClosingStep, ControlAction
from hotline.core.commands import (
    AddAssistantText,
    AddUserText,
    AppendAudio,
    CancelTimer,
    Command,
    DeleteItem,
    EndCall,
    Record,
    RunTool,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    Truncate,
    TwilioClear,
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
    ToolFinished,
    TwilioClosed,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from hotline.core.greeting import (
    CACHED,
    CACHED_GREETING_HEARD_ITEM,
    CACHED_GREETING_ITEM,
    CACHED_VOICEMAIL_ITEM,
    heard_part,
    live_greeting_detail,
)
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase, Phase
from hotline.core.playback import AgentItem, Playback
from hotline.core.record import TimelineStage, TranscriptTurn
from hotline.core.responses import PREREQUESTED_GREETING_EVENT_ID, Purpose, ResponseQueue
from hotline.core.silence import SilenceTimers
from hotline.core.stats import CallStats
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import ToolEffect, ToolLedger
from hotline.core.turns import CallerTurns, TurnVerdict
from hotline.plan import CallPlan
from hotline.prompts import (
    GOODBYE_INSTRUCTIONS,
    HANDOVER_INSTRUCTIONS,
    NUDGE_INSTRUCTIONS,
    SILENCE_GOODBYE_INSTRUCTIONS,
    TIME_LIMIT_INSTRUCTIONS,
    say_exactly,
)


class CallSession:
    def __init__(self, plan: CallPlan, greeting_frames: tuple[str, ...] | None = None,
                 voicemail_frames: tuple[str, ...] | None = None) -> None:
        self.plan = plan
        self._greeting_frames = greeting_frames
        self._voicemail_frames = voicemail_frames
        self._phase = Phase()
        self.stream_sid: str | None = None
        self.stats = CallStats()
        self.prompt_upgraded = False
        self.outcome: Outcome | None = None
        self._started_ms = 0.0
        self._first_response_done = False
        self._playback = Playback()
        self._responses = ResponseQueue()
        self._turns = CallerTurns(plan.barge_in_min_speech_ms, plan.vad_threshold)
        self._tools = ToolLedger()
        self._silence = SilenceTimers(plan.silence_nudge_ms, plan.silence_hangup_ms)
        self._amd = AmdWait(plan.vad_silence_ms)
        self._closing: Closing | None = None
        self._seen: set[str] = set()  # timeline stages recorded once
        if plan.greeting_prerequested and not greeting_frames:
            # The warm session asked for the greeting with our event id: it is in flight.
            self._responses.assume_requested(Purpose.GREETING, PREREQUESTED_GREETING_EVENT_ID)

    @property
    def phase(self) -> CallPhase:
        return self._phase.current

    @property
    def caller_turn_open(self) -> bool:
        return self._turns.open

    def stage_recorded_elsewhere(self, stage: str) -> None:
        """A stage the runner recorded itself (a warm session's `engine_configured`), so a
        later `session.updated` (the prompt upgrade's) is not mistaken for it."""
        self._seen.add(stage)

    # -- the one entry point ----------------------------------------------------------------
    def handle(self, event: CallEvent, now_ms: float) -> list[Command]:
        if self._phase.is_(CallPhase.ENDED):
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
                self._turns.stopped(event.item_id, now_ms)
                return []
            case EngineInputCommitted():
                return self._on_committed(event, now_ms)
            case EngineResponseCreated():
                return self._on_response_created(event)
            case EngineResponseDone():
                return self._on_response_done(event, now_ms)
            case EngineAgentTranscript():
                item = self._playback.items.get(event.item_id)
                if item is not None:
                    item.transcript = event.transcript
                return []
            case EngineCallerTranscript():
                span = self._turns.transcribed(event.item_id, now_ms)
                return [] if span is None else [Record(TranscriptTurn("caller", event.transcript,
                                                                      *span))]
            case EngineFunctionCall():
                return self._on_function_call(event, now_ms)
            case ToolFinished():
                return self._on_tool_finished(event, now_ms)
            case EngineSessionUpdated():
                return self._stage_once("engine_configured", now_ms,
                                        f"instructions {event.instructions_chars} chars")
            case EngineTruncated() | TwilioConnected():
                return []
            case EngineError():
                return self._on_engine_error(event, now_ms)
            case TwilioDtmf():
                return self._on_dtmf(event, now_ms)
            case TimerFired():
                return self._on_timer(event.timer, now_ms)
            case AmdVerdict():
                return self._on_amd(event.answered_by, now_ms)
            case CallControlFailed():
                return self._on_control_failed(event, now_ms)
            case TwilioStop() | TwilioClosed():
                return self._end(self._outcome_if_caller_leaves(), "call ended by Twilio",
                                 now_ms)
            case EngineClosed():
                return self._end(Outcome.FAILED, "engine connection closed", now_ms)
        raise TypeError(f"not a call event: {event!r}")

    # -- the start and the greeting ---------------------------------------------------------
    def _on_start(self, event: TwilioStart, now_ms: float) -> list[Command]:
        if not self._phase.is_(CallPhase.AWAITING_START):
            return []  # a second start is off-protocol; the first one stands
        self.stream_sid = event.stream_sid
        self._started_ms = now_ms
        commands: list[Command] = [Record(TimelineStage("stream_start", now_ms)),
                                   StartTimer(TimerName.MAX_DURATION, self.plan.max_duration_ms)]
        verdict = self._amd.verdict
        if self.plan.amd and verdict is None:
            # An answering machine must not hear a greeting meant for a person.
            self._phase.move(CallPhase.AWAITING_AMD)
            return [*commands, StartTimer(TimerName.AMD_CAP, self.plan.amd_cap_ms),
                    Record(TimelineStage("amd_waiting", now_ms,
                                         f"greeting held up to {self.plan.amd_cap_ms} ms"))]
        if verdict is not None and not verdict.is_human and verdict is not AnsweredBy.MACHINE_START:
            return commands + self._on_machine(verdict, now_ms)
        return commands + self._greet(now_ms)

    def _greet(self, now_ms: float) -> list[Command]:
        if self._greeting_frames:
            self._phase.move(CallPhase.GREETING)
            return self._play_cached_greeting(self._greeting_frames, now_ms)
        if not self.plan.bot_speaks_first:
            self._phase.move(CallPhase.LISTENING)
            return self._arm_silence()
        self._phase.move(CallPhase.GREETING)
        if self.plan.greeting_prerequested:
            return []  # asked for when the engine connected (see __init__)
        self._seen.add("greeting_requested")
        return [*self._want(None, Purpose.GREETING),
                Record(TimelineStage("greeting_requested", now_ms,
                                     live_greeting_detail(self.plan)))]

    def _play_cached_greeting(self, frames: tuple[str, ...], now_ms: float) -> list[Command]:
        """Every frame goes to Twilio at once (it buffers and plays in real time), each with
        a mark; the engine's conversation is told the assistant said the greeting."""
        commands = self._play_cached(CACHED_GREETING_ITEM, frames, self.plan.greeting, now_ms)
        commands.append(SendToEngine(AddAssistantText(CACHED_GREETING_ITEM, self.plan.greeting)))
        sent_ms = int(self._playback.items[CACHED_GREETING_ITEM].sent_ms)
        commands.append(Record(TimelineStage("greeting_requested", now_ms,
                                             f"cached audio {sent_ms} ms")))
        return commands + self._stage_once("first_audio_to_caller", now_ms)

    def _play_cached(self, item_id: str, frames: tuple[str, ...], text: str,
                     now_ms: float) -> list[Command]:
        self._playback.start_item(item_id, CACHED, now_ms, transcript=text)
        commands: list[Command] = []
        for frame in frames:
            commands += self._playback.send(item_id, frame, now_ms)
            self.stats.deltas_out += 1
        return commands

    def _finish_cached_greeting(self, now_ms: float, how: str) -> list[Command]:
        self._phase.move(CallPhase.CONVERSING)
        self._first_response_done = True  # the engine's first response is a reply, not this
        return [*self._agent_turns(CACHED), *self._stage_once("greeting_done", now_ms, how)]

    # -- caller audio -----------------------------------------------------------------------
    def _on_media(self, event: TwilioMedia, now_ms: float) -> list[Command]:
        self.stats.media_in += 1
        if self._phase.is_(CallPhase.AWAITING_START):
            return []
        if self._phase.is_(CallPhase.AWAITING_AMD):
            return self._on_media_awaiting_amd(event, now_ms)
        if self._closing is not None:
            return []  # the caller over our goodbye: not a turn to answer
        if self.plan.guards_pickup and now_ms - self._started_ms < self.plan.warmup_ms:
            # The first moments after pickup are noise or a "Hello?", not a turn.
            self.stats.media_dropped_warmup += 1
            return []
        commands: list[Command] = [SendToEngine(AppendAudio(event.payload_b64))]
        audible = self._agent_audible()
        if self._turns.hear(event.payload_b64, now_ms, audible):
            commands += self._silence.disarm()
            if audible and self._turns.open:
                # The engine's VAD and the gate agree: the caller is speaking over the agent.
                commands += self._barge_in(now_ms)
        return commands

    def _on_media_awaiting_amd(self, event: TwilioMedia, now_ms: float) -> list[Command]:
        """Callee audio before the verdict (a machine's message, or a "Hello?") is not sent
        to the engine; past the cap, the greeting goes once the callee is quiet."""
        self.stats.media_held_for_amd += 1
        self._amd.heard(self._turns.voiced(event.payload_b64), now_ms)
        if self._amd.cap_passed and self._amd.callee_quiet(now_ms):
            return [Record(TimelineStage("amd_cap_reached", now_ms, "callee quiet")),
                    *self._greet(now_ms)]
        return []

    def _on_mark(self, event: TwilioMark, now_ms: float) -> list[Command]:
        echo = self._playback.on_mark(event.name, now_ms)
        if echo is None:
            return []  # duplicate, unknown, or flushed by our clear
        commands: list[Command] = []
        if (echo.item_id == CACHED_GREETING_ITEM and echo.item_finished
                and self._phase.is_(CallPhase.GREETING)):
            commands = self._finish_cached_greeting(now_ms, "cached audio played")
        if not self._playback.audible and self._responses.idle:
            commands += self._playback_ended(now_ms)
        return commands

    def _on_dtmf(self, event: TwilioDtmf, now_ms: float) -> list[Command]:
        if self._phase.is_(CallPhase.AWAITING_START, CallPhase.AWAITING_AMD) or self._closing:
            return []
        turn = TranscriptTurn("caller", f"[pressed {event.digit}]", int(now_ms), int(now_ms))
        commands: list[Command] = [Record(turn), *self._silence.disarm()]
        action = self.plan.dtmf_action(event.digit)
        if action == "transfer_to_human" and self.plan.transfer_number:
            return commands + self._close(
                Closing(Outcome.TRANSFERRED, f"key {event.digit}",
                        transfer_to=self.plan.transfer_number), HANDOVER_INSTRUCTIONS, now_ms)
        if action == "end_call":
            return commands + self._close(Closing(Outcome.HUNG_UP_BY_AGENT, f"key {event.digit}"),
                                          GOODBYE_INSTRUCTIONS, now_ms)
        commands.append(SendToEngine(AddUserText(f"The caller pressed the key {event.digit}.")))
        return commands + self._want(None, Purpose.REPLY)

    # -- caller turns -----------------------------------------------------------------------
    def _on_speech_started(self, event: EngineSpeechStarted, now_ms: float) -> list[Command]:
        audible = self._agent_audible()
        verdict = self._turns.started(event.item_id, now_ms, audible)
        if verdict is TurnVerdict.UNDECIDED:
            if not audible:
                self.stats.barge_ins_ignored_cooldown += 1
            return []  # the gate decides whether this is speech
        commands = self._silence.disarm()
        if audible:
            commands += self._barge_in(now_ms)  # the gate was first: now the turn is open
        return commands

    def _on_committed(self, event: EngineInputCommitted, now_ms: float) -> list[Command]:
        """The caller's turn is in the conversation: answer it, or drop it as noise."""
        verdict = self._turns.committed(event.item_id)
        if self._closing is not None or self._phase.is_(CallPhase.AWAITING_AMD):
            return []
        if verdict is TurnVerdict.SPEECH:
            return self._want(None, Purpose.REPLY)
        self.stats.noise_turns_ignored += 1
        self._turns.forget_noise(event.item_id)
        commands: list[Command] = [
            SendToEngine(DeleteItem(event.item_id)),
            Record(TimelineStage("noise_ignored", now_ms,
                                 "caller sound too short to be speech over the agent"))]
        if self._responses.idle and not self._playback.audible:
            commands += self._arm_silence()
        return commands + self._next_response()

    def _agent_audible(self) -> bool:
        """Agent audio is queued at Twilio, or the reply producing it is still going."""
        if self._playback.audible:
            return True
        item = self._playback.current()
        return item is not None and self._responses.active_and_kept(item.response_id)

    def _barge_in(self, now_ms: float) -> list[Command]:
        if self._closing is not None:
            return []  # a goodbye plays out in full
        self.stats.barge_ins += 1
        return self._cut_agent(now_ms, "barge_in")

    def _cut_agent(self, now_ms: float, stage: str) -> list[Command]:
        """Stop the agent's audio at once: clear Twilio's buffer, tell the engine how much
        was heard, cancel the response still producing it."""
        commands: list[Command] = [SendToTwilio(TwilioClear())]
        item_id, item = self._playback.current_item_id, self._playback.current()
        heard_ms = self._playback.heard_ms(now_ms)
        self._playback.clear()
        detail = "nothing played yet"
        if item_id is not None and item is not None:
            detail = f"heard {heard_ms} of {int(item.sent_ms)} ms"
            if item.response_id == CACHED:
                detail += " (cached)"
                if item_id == CACHED_GREETING_ITEM:
                    commands += self._cut_cached_greeting(item, heard_ms, now_ms)
            elif heard_ms > 0 and (heard_ms < item.sent_ms
                                   or self._responses.active_id == item.response_id):
                item.truncated_at_ms = heard_ms
                commands.append(SendToEngine(Truncate(item_id, heard_ms)))
        commands += self._responses.cancel_active()
        commands.append(Record(TimelineStage(stage, now_ms, detail)))
        return commands

    def _cut_cached_greeting(self, item: AgentItem, heard_ms: int,
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

    # -- engine audio and responses ---------------------------------------------------------
    def _on_audio_delta(self, event: EngineAudioDelta, now_ms: float) -> list[Command]:
        if self._responses.is_dropped(event.response_id) or self.stream_sid is None:
            self.stats.deltas_dropped += 1
            return []
        commands: list[Command] = []
        if event.item_id not in self._playback.items:
            self._playback.start_item(event.item_id, event.response_id, now_ms)
            self._responses.had_audio(event.response_id)
            commands += self._stage_once("first_audio_from_engine", now_ms)
        commands += self._playback.send(event.item_id, event.delta_b64, now_ms)
        self.stats.deltas_out += 1
        commands += self._stage_once("first_audio_to_caller", now_ms)
        if self._closing is not None:
            commands += self._goodbye_cap(now_ms)
        return commands

    def _goodbye_cap(self, now_ms: float) -> list[Command]:
        """The last line may take as long as its audio still queued at Twilio, plus the cap:
        the cap is for a line that never finishes, not a long one."""
        queued_ms = self._playback.queued_ms(now_ms)
        return [StartTimer(TimerName.GOODBYE_CAP, self.plan.goodbye_cap_ms + int(queued_ms))]

    def _want(self, instructions: str | None, purpose: Purpose) -> list[Command]:
        """A response is wanted: asked for now, or as soon as the engine may take it."""
        closing = self._closing
        if closing is not None and (closing.acted or purpose is not Purpose.CLOSING):
            return []  # the call is ending: only its last line is still wanted
        self._responses.want(instructions, purpose)
        return self._next_response()

    def _next_response(self) -> list[Command]:
        return self._responses.next(caller_talking=self._turns.open)

    def _on_response_created(self, event: EngineResponseCreated) -> list[Command]:
        purpose = self._responses.created(event.response_id)
        closing = self._closing
        if closing is not None and purpose is Purpose.CLOSING:
            closing.line_created(event.response_id)
        elif closing is not None:
            # Asked for before the call began to close: only the last line may play now.
            return self._responses.cancel_active()
        if purpose is Purpose.NUDGE:
            return []  # the nudge itself is no answer from the caller
        return self._silence.disarm()

    def _on_response_done(self, event: EngineResponseDone, now_ms: float) -> list[Command]:
        self._responses.done(event.response_id)
        commands = self._agent_turns(event.response_id)
        if not self._first_response_done:
            self._first_response_done = True
            commands += self._first_response_over(event.status, now_ms)
        commands += self._release_tool_answers(event.response_id)
        if self._closing is not None:
            self._closing.line_done(event.response_id)
        commands += self._next_response()
        commands += self._maybe_act(now_ms)
        if not self._playback.audible and self._responses.idle:
            commands += self._playback_ended(now_ms)
        return commands

    def _first_response_over(self, status: str, now_ms: float) -> list[Command]:
        """The greeting (or first reply) is done: upgrade to the full prompt."""
        commands: list[Command] = []
        if self._phase.is_(CallPhase.GREETING):
            commands += self._stage_once("greeting_done", now_ms, status)
        if self.plan.upgrades_prompt:
            full = self.plan.full_instructions
            commands += [SendToEngine(UpdateInstructions(full)),
                         Record(TimelineStage("prompt_upgraded", now_ms,
                                              f"full prompt {len(full)} chars"))]
            self.prompt_upgraded = True
        if self._phase.is_(CallPhase.GREETING, CallPhase.LISTENING):
            self._phase.move(CallPhase.CONVERSING)
        return commands

    def _playback_ended(self, now_ms: float) -> list[Command]:
        """The agent's audio has finished playing: its echo may still come back; the
        caller's silence starts counting."""
        self._turns.start_cooldown(now_ms, self.plan.echo_cooldown_ms)
        return self._maybe_act(now_ms) + self._arm_silence()

    def _agent_turns(self, response_id: str | None) -> list[Command]:
        return [Record(turn) for turn in self._playback.turns(response_id)]

    def _on_engine_error(self, event: EngineError, now_ms: float) -> list[Command]:
        self.stats.engine_errors += 1
        commands: list[Command] = [Record(TimelineStage(
            "engine_error", now_ms, f"{event.code}: {event.message}"[:300]))]
        refused = self._responses.refused(event.event_id)
        if refused is None:
            return commands
        # Our response.create was refused: nothing is coming. Don't wait for it.
        if refused is Purpose.CLOSING and self._closing is not None:
            self._closing.line_refused()  # hang up without the last line
            return commands + self._maybe_act(now_ms)
        if refused is Purpose.GREETING and self._phase.is_(CallPhase.GREETING):
            # No greeting is coming: the caller's first words get the first reply (whose
            # end still upgrades the prompt), and their silence is counted meanwhile.
            self._phase.move(CallPhase.CONVERSING)
            commands += self._arm_silence()
        return commands + self._next_response()

    # -- tools ------------------------------------------------------------------------------
    def _on_function_call(self, event: EngineFunctionCall, now_ms: float) -> list[Command]:
        self.stats.tool_calls += 1
        stage = Record(TimelineStage("tool_called", now_ms, event.name))
        if self._responses.is_dropped(event.response_id):
            # The caller cut this reply off: its tool does not run, the model is told why.
            self._tools.refused(event.response_id, event.call_id)
            return [stage, *self._release_tool_answers(event.response_id)]
        self._tools.called(event.response_id, event.call_id)
        return [RunTool(event.call_id, event.name, event.arguments), stage]

    def _on_tool_finished(self, event: ToolFinished, now_ms: float) -> list[Command]:
        response_id = self._tools.finished(event.call_id, event.output_json)
        commands: list[Command] = [Record(TimelineStage(
            "tool_done", now_ms, f"{event.name}: {'error' if event.error else 'ok'}"))]
        if event.message is not None:
            commands.append(Record(event.message))
        interrupted = self._responses.is_dropped(response_id)
        if event.effect is not ToolEffect.NONE and self._closing is None and not interrupted:
            commands += self._start_closing(self._tool_closing(event, response_id), now_ms)
        elif not interrupted and self._closing is None:
            self._tools.reply_after(response_id)
        return commands + self._release_tool_answers(response_id) + self._maybe_act(now_ms)

    def _tool_closing(self, event: ToolFinished, response_id: str) -> Closing:
        transfer_to = self.plan.transfer_number if event.effect is ToolEffect.TRANSFER else None
        closing = Closing(Outcome.TRANSFERRED if transfer_to else Outcome.HUNG_UP_BY_AGENT,
                          event.name, transfer_to=transfer_to)
        if self._responses.has_audio(response_id):
            # The reply that called the tool already said goodbye (or the handover line):
            # it only has to finish playing.
            closing.line_playing(response_id, done=self._responses.active_id != response_id)
        else:
            closing.line_wanted()  # the tool's answer asks for the line
        return closing

    def _release_tool_answers(self, response_id: str) -> list[Command]:
        """Tool answers go to the model once the response that called the tools is done and
        every one of its tools has answered; then one reply, or the closing line."""
        released = self._tools.release(response_id, self._responses.active_id)
        if released is None:
            return []
        outputs, wants_reply = released
        commands: list[Command] = [SendToEngine(o) for o in outputs]
        closing = self._closing
        if closing is not None and closing.step is ClosingStep.LINE_WANTED and not (
                self._responses.wants(Purpose.CLOSING)):
            commands += self._want(None, Purpose.CLOSING)
        elif wants_reply:
            commands += self._want(None, Purpose.REPLY)
        return commands

    # -- ending the call on our side --------------------------------------------------------
    def _close(self, closing: Closing, instructions: str | None,
               now_ms: float) -> list[Command]:
        """Say a last line (a response with `instructions`), then hang up or transfer."""
        if self._closing is not None:
            return []
        commands: list[Command] = []
        if self._agent_audible():
            commands += self._cut_agent(now_ms, "agent_cut")
        else:
            commands += self._responses.cancel_active()  # a reply not heard yet must not start
        if instructions is not None:
            closing.line_wanted()
        commands += self._start_closing(closing, now_ms)
        if instructions is not None:
            commands += self._want(instructions, Purpose.CLOSING)
        return commands + self._maybe_act(now_ms)

    def _start_closing(self, closing: Closing, now_ms: float) -> list[Command]:
        self._closing = closing
        self._responses.keep_only(Purpose.CLOSING)
        what = f"transfer to {closing.transfer_to}" if closing.transfer_to else "hang up"
        return [*self._silence.disarm(),
                StartTimer(TimerName.GOODBYE_CAP, self.plan.goodbye_cap_ms),
                Record(TimelineStage("closing", now_ms, f"{closing.reason}: {what}"))]

    def _maybe_act(self, now_ms: float, *, force: bool = False) -> list[Command]:
        """Once the last line has played (every mark echoed), hang up or transfer."""
        closing = self._closing
        if closing is None or closing.acted:
            return []
        if not force and not closing.ready(self._playback.audible):
            return []
        self._responses.forget_wanted()
        stage = ("transfer_requested" if closing.action is ControlAction.TRANSFER
                 else "hang_up_requested")
        detail = closing.reason + (" (goodbye cap reached)" if force else "")
        return [closing.act(), Record(TimelineStage(stage, now_ms, detail))]

    def _on_control_failed(self, event: CallControlFailed, now_ms: float) -> list[Command]:
        """Twilio's REST API did not take the hang-up or transfer: closing the stream ends
        the `<Connect>` and with it the call."""
        outcome = (Outcome.FAILED if event.action is ControlAction.TRANSFER
                   else self._outcome_if_caller_leaves())
        return [Record(TimelineStage("call_control_failed", now_ms,
                                     f"{event.action}: {event.detail}"[:300])),
                *self._end(outcome, f"{event.action} through Twilio failed", now_ms)]

    def _outcome_if_caller_leaves(self) -> Outcome:
        closing = self._closing
        return Outcome.COMPLETED if closing is None else closing.outcome_if_caller_leaves()

    # -- answering machines -----------------------------------------------------------------
    def _on_amd(self, verdict: AnsweredBy, now_ms: float) -> list[Command]:
        if not self._amd.take(verdict):
            return []
        commands: list[Command] = [Record(TimelineStage("amd_verdict", now_ms, verdict.value))]
        if self._phase.is_(CallPhase.AWAITING_START) or self._closing is not None:
            return commands  # the stream's start acts on it / the call is ending anyway
        if verdict.is_human:
            if not self._phase.is_(CallPhase.AWAITING_AMD):
                return commands
            return [*commands, CancelTimer(TimerName.AMD_CAP), *self._greet(now_ms)]
        if verdict is AnsweredBy.MACHINE_START:
            return commands  # its message-end verdict follows; the cap still holds
        return commands + self._on_machine(verdict, now_ms)

    def _on_machine(self, verdict: AnsweredBy, now_ms: float) -> list[Command]:
        if verdict is AnsweredBy.FAX:
            self._phase.move(CallPhase.CONVERSING)
            return [CancelTimer(TimerName.AMD_CAP),
                    *self._close(Closing(Outcome.FAILED, "fax machine"), None, now_ms)]
        return self._leave_voicemail(now_ms)

    def _leave_voicemail(self, now_ms: float) -> list[Command]:
        """The beep has sounded: stop whatever we were saying, leave the message, hang up."""
        commands: list[Command] = [CancelTimer(TimerName.AMD_CAP)]
        if self._agent_audible():
            commands += self._cut_agent(now_ms, "agent_cut")
        self._phase.move(CallPhase.CONVERSING)
        closing = Closing(Outcome.VOICEMAIL, "answering machine")
        if self._voicemail_frames:
            commands += self._start_closing(closing, now_ms)
            commands += self._play_cached(CACHED_VOICEMAIL_ITEM, self._voicemail_frames,
                                          self.plan.voicemail, now_ms)
            commands += self._goodbye_cap(now_ms)
            commands.append(Record(TimelineStage("voicemail_started", now_ms, "cached audio")))
            return commands + self._maybe_act(now_ms)
        if not self.plan.voicemail:
            return commands + self._close(closing, None, now_ms)
        commands.append(Record(TimelineStage("voicemail_started", now_ms, "live")))
        return commands + self._close(closing, say_exactly(self.plan.voicemail), now_ms)

    # -- timers -----------------------------------------------------------------------------
    def _on_timer(self, timer: TimerName, now_ms: float) -> list[Command]:
        match timer:
            case TimerName.AMD_CAP:
                if not self._phase.is_(CallPhase.AWAITING_AMD):
                    return []
                self._amd.cap_passed = True
                if not self._amd.callee_quiet(now_ms):
                    return []  # never talk over the callee: a machine's message, most likely
                return [Record(TimelineStage("amd_cap_reached", now_ms)), *self._greet(now_ms)]
            case TimerName.GOODBYE_CAP:
                return self._maybe_act(now_ms, force=True)
            case TimerName.MAX_DURATION:
                return self._close(Closing(Outcome.HUNG_UP_BY_AGENT, "time limit"),
                                   TIME_LIMIT_INSTRUCTIONS, now_ms)
            case TimerName.SILENCE_NUDGE if self._silence.armed and self._closing is None:
                return [Record(TimelineStage("silence_nudge", now_ms)),
                        *self._want(NUDGE_INSTRUCTIONS, Purpose.NUDGE)]
            case TimerName.SILENCE_HANGUP if self._silence.armed and self._closing is None:
                return self._close(Closing(Outcome.HUNG_UP_BY_AGENT, "silence"),
                                   SILENCE_GOODBYE_INSTRUCTIONS, now_ms)
        return []

    def _arm_silence(self) -> list[Command]:
        """The line is quiet: start counting the caller's silence (not while a tool's answer
        is on its way; the nudge's own audio does not restart the count)."""
        if (self._closing is not None or self._tools.busy or self._turns.open
                or not self._phase.is_(CallPhase.CONVERSING, CallPhase.LISTENING)):
            return []
        return self._silence.arm()

    # -- shared -----------------------------------------------------------------------------
    def _stage_once(self, stage: str, now_ms: float, detail: str = "") -> list[Command]:
        if stage in self._seen:
            return []
        self._seen.add(stage)
        return [Record(TimelineStage(stage, now_ms, detail))]

    def _end(self, outcome: Outcome, reason: str, now_ms: float) -> list[Command]:
        self._phase.move(CallPhase.ENDED)
        self.outcome = outcome
        # Agent items whose response never finished still belong in the transcript.
        return [*self._agent_turns(None), Record(TimelineStage("call_ended", now_ms, reason)),
                EndCall(outcome)]
