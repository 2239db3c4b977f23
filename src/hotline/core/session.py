"""CallSession: the pure core of one call. Events in, commands out; no I/O, no clock.

The runner feeds every event with `now_ms` (ms since the webhook arrived) and executes the
commands. The session dispatches each event to the part or flow that owns it; the call's
state (`CallState`) is made of small parts, each with one job and its own tests:

- `Phase` (phase.py): the call's phase; every change goes through its transition table.
- `Playback` (playback.py): agent audio sent, marks, what the caller heard.
- `ResponseQueue` (responses.py): responses wanted, the one in flight, those dropped.
- `CallerTurns` (turns.py): turns, the speech gate, noise, the echo cooldown.
- `ToolLedger` (tool_ledger.py), `Closing` (closing.py), `AmdWait` (amd.py),
  `SilenceTimers` (silence.py).

The flows over that state: speaking.py (greeting, cached audio, cutting the agent off),
tool_flow.py, ending.py (closing, hang-up, transfer), voicemail.py (answering machines),
engine_link.py (the engine dropping mid-call and the resume; engine errors), hold_line.py
(a canned "one moment" over the reconnect).
This module keeps the conversation itself: caller audio and turns, barge-in, responses and
the prompt upgrade after the first one, DTMF, timers.
"""

from __future__ import annotations

from hotline.core import ending, engine_down, engine_link, speaking, tool_flow, voicemail
from hotline.core.closing import Closing
from hotline.core.commands import (
    AddUserText,
    Command,
    DeleteItem,
    Record,
    SendToEngine,
    StartTimer,
    UpdateInstructions,
)
from hotline.core.events import (
    AmdVerdict,
    CallAborted,
    CallControlFailed,
    CallEvent,
    DrainDeadline,
    EngineAgentTranscript,
    EngineAgentTranscriptDelta,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineClosed,
    EngineError,
    EngineFunctionCall,
    EngineInputCommitted,
    EngineLost,
    EngineResponseCreated,
    EngineResponseDone,
    EngineResumed,
    EngineSessionUpdated,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineTruncated,
    EngineUnavailable,
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
from hotline.core.greeting import CACHED_GREETING_ITEM, CannedAudio
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage, TranscriptTurn
from hotline.core.responses import PREREQUESTED_GREETING_EVENT_ID, Purpose
from hotline.core.state import CallState
from hotline.core.stats import CallStats
from hotline.core.timers import TimerName
from hotline.core.turns import TurnVerdict
from hotline.plan import CallPlan
from hotline.prompts import (
    GOODBYE_INSTRUCTIONS,
    HANDOVER_INSTRUCTIONS,
    NUDGE_INSTRUCTIONS,
    SILENCE_GOODBYE_INSTRUCTIONS,
    TIME_LIMIT_INSTRUCTIONS,
)


class CallSession:
    def __init__(self, plan: CallPlan, greeting_frames: tuple[str, ...] | None = None,
                 voicemail_frames: tuple[str, ...] | None = None,
                 apology: CannedAudio | None = None,
                 hold: CannedAudio | None = None) -> None:
        self.plan = plan
        self._s = CallState.for_plan(plan, greeting_frames, voicemail_frames)
        self._s.apology = apology  # played if no engine can be had (engine_down.py)
        self._s.hold = hold  # played if the engine drops while the caller waits (hold_line.py)
        if plan.greeting_prerequested and not greeting_frames:
            # The warm session asked for the greeting with our event id: it is in flight.
            self._s.responses.assume_requested(Purpose.GREETING, PREREQUESTED_GREETING_EVENT_ID)

    @property
    def phase(self) -> CallPhase:
        return self._s.phase.current

    @property
    def outcome(self) -> Outcome | None:
        return self._s.outcome

    @property
    def stats(self) -> CallStats:
        return self._s.stats

    @property
    def stream_sid(self) -> str | None:
        return self._s.stream_sid

    @property
    def prompt_upgraded(self) -> bool:
        return self._s.prompt_upgraded

    @property
    def closing(self) -> bool:
        """The call is closing on our side (a last line, then a hang-up or transfer)."""
        return self._s.closing is not None

    @property
    def caller_turn_open(self) -> bool:
        return self._s.turns.open

    def stage_recorded_elsewhere(self, stage: str) -> None:
        """A stage the runner recorded itself (a warm session's `engine_configured`), so a
        later `session.updated` (the prompt upgrade's) is not mistaken for it."""
        self._s.seen.add(stage)

    # -- the one entry point ----------------------------------------------------------------
    def handle(self, event: CallEvent, now_ms: float) -> list[Command]:
        s = self._s
        if s.phase.is_(CallPhase.ENDED):
            return []
        if s.phase.is_(CallPhase.TAKING_MESSAGE):
            return engine_down.handle(s, event, now_ms)  # the engine is gone for good
        match event:
            case TwilioMedia():
                return self._on_media(event, now_ms)
            case EngineAudioDelta():
                return speaking.forward_audio(s, event, now_ms)
            case TwilioMark():
                return self._on_mark(event, now_ms)
            case TwilioStart():
                return self._on_start(event, now_ms)
            case EngineSpeechStarted():
                return self._on_speech_started(event, now_ms)
            case EngineSpeechStopped():
                s.turns.stopped(event.item_id, now_ms)
                return []
            case EngineInputCommitted():
                return self._on_committed(event, now_ms)
            case EngineResponseCreated():
                return self._on_response_created(event)
            case EngineResponseDone():
                return self._on_response_done(event, now_ms)
            case EngineAgentTranscript():
                item = s.playback.items.get(event.item_id)
                if item is not None:
                    item.transcript = event.transcript
                return []
            case EngineCallerTranscript():
                span = s.turns.transcribed(event.item_id, now_ms)
                if span is None:
                    return []  # a noise turn, deleted
                s.conversation.caller(event.transcript)
                return [Record(TranscriptTurn("caller", event.transcript, *span))]
            case EngineFunctionCall():
                return tool_flow.on_call(s, event, now_ms)
            case ToolFinished():
                return tool_flow.on_finished(s, event, now_ms)
            case EngineSessionUpdated():
                return s.stage_once("engine_configured", now_ms,
                                    f"instructions {event.instructions_chars} chars")
            case EngineTruncated() | TwilioConnected():
                return []
            case EngineError():
                return self._on_engine_error(event, now_ms)
            case EngineLost() | EngineResumed() | EngineAgentTranscriptDelta():
                return engine_link.handle(s, event, now_ms)
            case TwilioDtmf():
                return self._on_dtmf(event, now_ms)
            case TimerFired():
                return self._on_timer(event.timer, now_ms)
            case AmdVerdict():
                return voicemail.on_verdict(s, event.answered_by, now_ms)
            case CallControlFailed():
                return ending.control_failed(s, event, now_ms)
            case DrainDeadline():
                return ending.drain_deadline(s, now_ms)
            case TwilioStop() | TwilioClosed():
                return ending.end(s, ending.outcome_if_caller_leaves(s), "call ended by Twilio",
                                  now_ms)
            case EngineClosed():
                return ending.end(s, Outcome.FAILED, "engine connection closed", now_ms)
            case EngineUnavailable():
                return engine_down.on_unavailable(s, event, now_ms)
            case CallAborted():
                return ending.end(s, Outcome.FAILED, f"call failed: {event.detail}"[:300],
                                  now_ms)
        raise TypeError(f"not a call event: {event!r}")

    # -- Twilio side ------------------------------------------------------------------------
    def _on_start(self, event: TwilioStart, now_ms: float) -> list[Command]:
        s = self._s
        if not s.phase.is_(CallPhase.AWAITING_START):
            return []  # a second start is off-protocol; the first one stands
        s.stream_sid = event.stream_sid
        s.started_ms = now_ms
        commands: list[Command] = [Record(TimelineStage("stream_start", now_ms)),
                                   StartTimer(TimerName.MAX_DURATION, self.plan.max_duration_ms)]
        if s.engine_down:
            return commands + engine_down.apologise(s, now_ms)  # it was lost before start
        verdict = s.amd.verdict
        if self.plan.greets_after_amd and verdict is None:
            # An answering machine must not hear a greeting meant for a person.
            s.phase.move(CallPhase.AWAITING_AMD)
            cap_ms = self.plan.amd_cap_ms
            return [*commands, StartTimer(TimerName.AMD_CAP, cap_ms),
                    Record(TimelineStage("amd_waiting", now_ms,
                                         f"greeting held up to {cap_ms} ms"))]
        if verdict is not None and not verdict.is_human:
            return commands + voicemail.on_machine(s, verdict, now_ms)
        return commands + speaking.greet(s, now_ms)

    def _on_media(self, event: TwilioMedia, now_ms: float) -> list[Command]:
        s = self._s
        s.stats.media_in += 1
        if s.phase.is_(CallPhase.AWAITING_START):
            return []
        if s.phase.is_(CallPhase.AWAITING_AMD, CallPhase.AWAITING_BEEP):
            return voicemail.callee_frame(s, event.payload_b64, now_ms)
        if s.closing is not None:
            return []  # the caller over our goodbye: not a turn to answer
        if self.plan.guards_pickup and now_ms - s.started_ms < self.plan.warmup_ms:
            # The first moments after pickup are noise or a "Hello?", not a turn.
            s.stats.media_dropped_warmup += 1
            return []
        commands = self._caller_audio(event.payload_b64)
        s.recent_audio.add(now_ms, event.payload_b64, s.turns.pending)
        if s.engine_lost_ms is not None:
            engine_link.caller_frame(s, event.payload_b64)
        audible = s.agent_audible()
        if s.turns.hear(event.payload_b64, now_ms, audible):
            commands += s.silence.disarm()
            if audible and s.turns.open:
                # The engine's VAD and the gate agree: the caller is speaking over the agent.
                commands += self._barge_in(now_ms)
        return commands

    def _caller_audio(self, payload_b64: str) -> list[Command]:
        """The append a forwarded caller frame makes: at once, or held with the quiet audio
        (`quiet_audio_batch_ms`) to go in one append with the frames after it.

        Only the caller's audio waits: what else goes to the engine meanwhile (a key
        pressed, response.create, the prompt upgrade, a truncate) overtakes held quiet
        frames without a flush, as none of it depends on them: a quiet frame makes no turn
        (and while a turn is open nothing is held, so its end is heard at once), so the
        engine's conversation is the same either way. A drop sends the held frames on at
        once (engine_link.lost): they wait in the runner for the new session, in order."""
        s = self._s
        batch = s.quiet_audio
        if batch is None:
            payload: str | None = payload_b64
        elif s.turns.open or s.turns.voiced(payload_b64):
            payload = batch.flush(payload_b64)  # speech at once, its quiet lead-in with it
        else:
            payload = batch.hold(payload_b64)
        return s.caller_audio(payload)

    def _flush_quiet_audio(self) -> list[Command]:
        """A caller turn opened: what quiet audio is held goes now (nothing waits in a turn:
        its end, silence, is what the engine's VAD listens for)."""
        batch = self._s.quiet_audio
        return self._s.caller_audio(batch.flush() if batch is not None else None)

    def _on_mark(self, event: TwilioMark, now_ms: float) -> list[Command]:
        s = self._s
        echo = s.playback.on_mark(event.name, now_ms)
        if echo is None:
            return []  # duplicate, unknown, or flushed by our clear
        commands: list[Command] = []
        if (echo.item_id == CACHED_GREETING_ITEM and echo.item_finished
                and s.phase.is_(CallPhase.GREETING)):
            commands = speaking.finish_cached_greeting(s, now_ms, "cached audio played")
        if s.line_quiet():
            commands += self._playback_ended(now_ms)
        return commands

    def _on_dtmf(self, event: TwilioDtmf, now_ms: float) -> list[Command]:
        s = self._s
        if s.closing or s.phase.is_(CallPhase.AWAITING_START, CallPhase.AWAITING_AMD,
                                    CallPhase.AWAITING_BEEP):
            return []
        turn = TranscriptTurn("caller", f"[pressed {event.digit}]", int(now_ms), int(now_ms))
        commands: list[Command] = [Record(turn), *s.silence.disarm()]
        action = self.plan.dtmf_action(event.digit)
        key = f"key {event.digit}"
        if action == "transfer_to_human" and self.plan.transfer_number:
            closing = Closing(Outcome.TRANSFERRED, key, transfer_to=self.plan.transfer_number)
            return commands + ending.close(s, closing, HANDOVER_INSTRUCTIONS, now_ms)
        if action == "end_call":
            return commands + ending.close(s, Closing(Outcome.HUNG_UP_BY_AGENT, key),
                                           GOODBYE_INSTRUCTIONS, now_ms)
        pressed = f"The caller pressed the key {event.digit}."
        s.conversation.caller(pressed)
        commands.append(SendToEngine(AddUserText(pressed)))
        return commands + s.want(None, Purpose.REPLY)

    # -- caller turns -----------------------------------------------------------------------
    def _on_speech_started(self, event: EngineSpeechStarted, now_ms: float) -> list[Command]:
        s = self._s
        audible = s.agent_audible()
        commands = self._flush_quiet_audio()
        if s.turns.started(event.item_id, now_ms, audible) is TurnVerdict.UNDECIDED:
            if not audible:
                s.stats.barge_ins_ignored_cooldown += 1
            return commands  # the gate decides whether this is speech
        commands += s.silence.disarm()
        if audible:
            commands += self._barge_in(now_ms)  # the gate was first: now the turn is open
        return commands

    def _on_committed(self, event: EngineInputCommitted, now_ms: float) -> list[Command]:
        """The caller's turn is in the conversation: answer it, or drop it as noise."""
        s = self._s
        verdict = s.turns.committed(event.item_id)
        if s.closing is not None or s.phase.is_(CallPhase.AWAITING_AMD,
                                                CallPhase.AWAITING_BEEP):
            return []
        if verdict is TurnVerdict.SPEECH:
            return s.want(None, Purpose.REPLY)
        s.stats.noise_turns_ignored += 1
        s.turns.forget_noise(event.item_id)
        commands: list[Command] = [
            SendToEngine(DeleteItem(event.item_id)),
            Record(TimelineStage("noise_ignored", now_ms,
                                 "caller sound too short to be speech over the agent"))]
        if s.line_quiet():
            commands += s.arm_silence()
        return commands + s.next_response()

    def _barge_in(self, now_ms: float) -> list[Command]:
        if self._s.closing is not None:
            return []  # a goodbye plays out in full
        self._s.stats.barge_ins += 1
        return speaking.cut_agent(self._s, now_ms, "barge_in")

    # -- responses --------------------------------------------------------------------------
    def _on_response_created(self, event: EngineResponseCreated) -> list[Command]:
        s = self._s
        purpose = s.responses.created(event.response_id)
        if s.closing is not None and purpose is Purpose.CLOSING and not s.closing.acted:
            s.closing.line_created(event.response_id)
        elif (s.closing is not None or purpose is Purpose.DISCARDED
              or s.phase.is_(CallPhase.AWAITING_BEEP)):
            # Asked for before the call began to close (or after it hung up), no longer
            # wanted, or over a machine's message: only the last line may play now.
            return s.responses.cancel_active()
        if purpose is Purpose.NUDGE:
            return []  # the nudge itself is no answer from the caller
        return s.silence.disarm()

    def _on_response_done(self, event: EngineResponseDone, now_ms: float) -> list[Command]:
        s = self._s
        s.responses.done(event.response_id)
        commands = s.playback.mark()  # its audio is all sent: its end is marked
        commands += s.agent_turns(event.response_id)
        if not s.first_response_done:
            s.first_response_done = True
            commands += self._first_response_over(event.status, now_ms)
        commands += tool_flow.release_answers(s, event.response_id)
        if s.closing is not None:
            s.closing.line_done(event.response_id)
        commands += s.next_response()
        commands += ending.maybe_act(s, now_ms)
        if s.line_quiet():
            commands += self._playback_ended(now_ms)
        return commands

    def _first_response_over(self, status: str, now_ms: float) -> list[Command]:
        """The greeting (or first reply) is done: upgrade to the full prompt."""
        s = self._s
        commands: list[Command] = []
        if s.phase.is_(CallPhase.GREETING):
            commands += s.stage_once("greeting_done", now_ms, status)
        if self.plan.upgrades_prompt:
            full = self.plan.full_instructions
            commands += [SendToEngine(UpdateInstructions(full)),
                         Record(TimelineStage("prompt_upgraded", now_ms,
                                              f"full prompt {len(full)} chars"))]
            s.prompt_upgraded = True
        if s.phase.is_(CallPhase.GREETING, CallPhase.LISTENING):
            s.phase.move(CallPhase.CONVERSING)
        return commands

    def _playback_ended(self, now_ms: float) -> list[Command]:
        """The agent's audio has finished playing: its echo may still come back; the
        caller's silence starts counting."""
        self._s.turns.start_cooldown(now_ms, self.plan.echo_cooldown_ms)
        return ending.maybe_act(self._s, now_ms) + self._s.arm_silence()

    def _on_engine_error(self, event: EngineError, now_ms: float) -> list[Command]:
        s = self._s
        s.stats.engine_errors += 1
        commands = engine_link.error_stage(s, event, now_ms)  # a flood is only counted
        refused = s.responses.refused(event.event_id)
        if refused is None:
            return commands
        # Our response.create was refused: nothing is coming. Don't wait for it.
        if refused is Purpose.CLOSING and s.closing is not None:
            s.closing.line_refused()  # hang up without the last line
            return commands + ending.maybe_act(s, now_ms)
        if refused is Purpose.GREETING and s.phase.is_(CallPhase.GREETING):
            # No greeting is coming: the caller's first words get the first reply (whose
            # end still upgrades the prompt), and their silence is counted meanwhile.
            s.phase.move(CallPhase.CONVERSING)
            commands += s.arm_silence()
        return commands + s.next_response()

    # -- timers -----------------------------------------------------------------------------
    def _on_timer(self, timer: TimerName, now_ms: float) -> list[Command]:
        s = self._s
        silence_counts = s.silence.armed and s.closing is None
        match timer:
            case TimerName.AMD_CAP:
                return voicemail.cap_reached(s, now_ms)
            case TimerName.AMD_MESSAGE_CAP:
                return voicemail.message_cap_reached(s, now_ms)
            case TimerName.RESUME_TURN_WAIT:
                return engine_link.turn_wait_over(s, now_ms)
            case TimerName.GOODBYE_CAP:
                return ending.maybe_act(s, now_ms, force=True)
            case TimerName.MAX_DURATION:
                # (Over a machine's message: hung up without a line.)
                line = None if s.phase.is_(CallPhase.AWAITING_BEEP) else TIME_LIMIT_INSTRUCTIONS
                return ending.close(s, Closing(Outcome.HUNG_UP_BY_AGENT, "time limit"), line,
                                    now_ms)
            case TimerName.SILENCE_NUDGE if silence_counts:
                return [Record(TimelineStage("silence_nudge", now_ms)),
                        *s.want(NUDGE_INSTRUCTIONS, Purpose.NUDGE)]
            case TimerName.SILENCE_HANGUP if silence_counts:
                return ending.close(s, Closing(Outcome.HUNG_UP_BY_AGENT, "silence"),
                                    SILENCE_GOODBYE_INSTRUCTIONS, now_ms)
        return []
