"""CallState: everything one call's core knows, as its parts, plus the few helpers every
flow of the call uses. The flows (speaking, tools, ending) are functions over it; the
`CallSession` dispatches events to them. Nothing here does I/O or reads a clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from hotline.core.amd import AmdWait
from hotline.core.caller_audio import RecentCallerAudio
from hotline.core.closing import Closing
from hotline.core.commands import AppendAudio, Command, Record, SendToEngine
from hotline.core.conversation import Conversation
from hotline.core.greeting import CannedAudio
from hotline.core.message_recording import MessageRecording
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase, Phase
from hotline.core.playback import Playback
from hotline.core.quiet_audio import QuietAudioBatch
from hotline.core.record import TimelineStage
from hotline.core.responses import Purpose, ResponseQueue
from hotline.core.silence import SilenceTimers
from hotline.core.stats import CallStats
from hotline.core.tool_ledger import ToolLedger
from hotline.core.turns import CallerTurns
from hotline.plan import CallPlan


@dataclass(slots=True)
class CallState:
    plan: CallPlan
    greeting_frames: tuple[str, ...] | None
    voicemail_frames: tuple[str, ...] | None
    playback: Playback
    responses: ResponseQueue
    turns: CallerTurns
    tools: ToolLedger
    silence: SilenceTimers
    amd: AmdWait
    phase: Phase = field(default_factory=Phase)
    stats: CallStats = field(default_factory=CallStats)
    closing: Closing | None = None
    stream_sid: str | None = None
    started_ms: float = 0.0
    first_response_done: bool = False
    prompt_upgraded: bool = False
    outcome: Outcome | None = None
    seen: set[str] = field(default_factory=set)  # timeline stages recorded once
    # No engine can be had (engine_down.py): what to play, and the caller's message.
    apology: CannedAudio | None = None
    # The engine dropped while the caller waited on it: what to play meanwhile (hold_line.py).
    hold: CannedAudio | None = None
    engine_down: bool = False
    message: MessageRecording | None = None
    messages_taken: int = 0  # messages recorded on this call (each gets the next id)
    # The engine link (engine_link.py): the conversation kept for a resume, and since when
    # the engine has been lost (None: connected, or connecting for the first time).
    conversation: Conversation = field(default_factory=Conversation)
    engine_lost_ms: float | None = None
    replay_before: int = 0  # conversation entries made after the loss went to it live
    voiced_while_lost_ms: float = 0.0  # the caller's voice in the audio held meanwhile
    # The caller's recent frames (references), and those of a turn the dead engine never
    # transcribed, taken at the drop to be sent to the new session again (caller_audio.py).
    recent_audio: RecentCallerAudio = field(default_factory=RecentCallerAudio)
    resend_audio: list[str] = field(default_factory=list)
    # The caller's quiet frames held to go to the engine in one append (quiet_audio.py);
    # None: each frame goes as it came (`quiet_audio_batch_ms` 0).
    quiet_audio: QuietAudioBatch | None = None

    @classmethod
    def for_plan(cls, plan: CallPlan, greeting_frames: tuple[str, ...] | None,
                 voicemail_frames: tuple[str, ...] | None) -> CallState:
        quiet_audio = (QuietAudioBatch(plan.quiet_audio_batch_ms)
                       if plan.quiet_audio_batch_ms else None)
        return cls(plan, greeting_frames, voicemail_frames, Playback(), ResponseQueue(),
                   CallerTurns(plan.barge_in_min_speech_ms, plan.vad_threshold), ToolLedger(),
                   SilenceTimers(plan.silence_nudge_ms, plan.silence_hangup_ms),
                   AmdWait(plan.vad_silence_ms), quiet_audio=quiet_audio)

    def stage_once(self, stage: str, now_ms: float, detail: str = "") -> list[Command]:
        if stage in self.seen:
            return []
        self.seen.add(stage)
        return [Record(TimelineStage(stage, now_ms, detail))]

    def agent_audible(self) -> bool:
        """Agent audio is queued at Twilio, or the reply producing it is still going."""
        if self.playback.audible:
            return True
        item = self.playback.current()
        return item is not None and self.responses.active_and_kept(item.response_id)

    def line_quiet(self) -> bool:
        """Nobody speaks: no agent audio queued, no response going, asked for or wanted."""
        return not self.playback.audible and self.responses.idle

    def want(self, instructions: str | None, purpose: Purpose) -> list[Command]:
        """A response is wanted: asked for now, or as soon as the engine may take it."""
        closing = self.closing
        if closing is not None and (closing.acted or purpose is not Purpose.CLOSING):
            return []  # the call is ending: only its last line is still wanted
        if purpose is not Purpose.CLOSING and self.phase.is_(CallPhase.AWAITING_BEEP):
            return []  # nothing is said over a machine's message
        self.responses.want(instructions, purpose)
        return self.next_response()

    def next_response(self) -> list[Command]:
        if self.engine_lost_ms is not None:
            return []  # asked for once the engine is back (engine_link.resumed)
        return self.responses.next(caller_talking=self.turns.open)

    def arm_silence(self) -> list[Command]:
        """The line is quiet: start counting the caller's silence (not while a tool's answer
        is on its way; the nudge's own audio does not restart the count)."""
        if (self.closing is not None or self.tools.busy or self.turns.open
                or not self.phase.is_(CallPhase.CONVERSING, CallPhase.LISTENING)):
            return []
        return self.silence.arm()

    def caller_audio(self, payload_b64: str | None) -> list[Command]:
        """The append of caller audio ready to go to the engine (None: nothing is), counted."""
        if payload_b64 is None:
            return []
        self.stats.audio_appends += 1
        return [SendToEngine(AppendAudio(payload_b64))]

    def agent_turns(self, response_id: str | None) -> list[Command]:
        """Transcript turns of one response's agent items (None: all not yet recorded)."""
        commands: list[Command] = []
        for turn, heard_text in self.playback.take_turns(response_id):
            self.conversation.agent(heard_text)
            commands.append(Record(turn))
        return commands
