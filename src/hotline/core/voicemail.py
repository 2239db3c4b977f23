"""Answering machines: Twilio's verdicts, whenever they come, and the voicemail.

Outbound calls with async AMD greet at once by default; the verdict runs alongside. With
`greeting_timing: after_amd` the greeting waits for it instead, at most `amd_cap_ms` while
the callee is quiet. Whatever the phase when a verdict comes:
- `human` / `unknown`: a held greeting goes; otherwise nothing changes.
- `machine_start`: a machine, its message still playing. Whatever the agent was saying is
  cut (the engine keeps only what was heard) and nothing more is said until the message
  ends; `amd_message_cap_ms` bounds the wait, then the call is hung up.
- `machine_end_*`: the message has ended: leave the voicemail (cached audio, or said
  live), then hang up.
- `fax`: hang up.
A verdict before the stream starts is acted on at the start; a repeated or late one is
ignored, except a machine's message end after its `machine_start`.
"""

from __future__ import annotations

from hotline.audio.mulaw import BYTES_PER_MS, b64_decoded_len
from hotline.core.amd import AnsweredBy
from hotline.core.closing import Closing
from hotline.core.commands import CancelTimer, Command, Record, StartTimer
from hotline.core.ending import close, maybe_act, start_closing
from hotline.core.greeting import CACHED_AUDIO, CACHED_VOICEMAIL_ITEM
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage
from hotline.core.speaking import goodbye_cap, greet, play_cached, stop_agent
from hotline.core.state import CallState
from hotline.core.timers import TimerName
from hotline.prompts import say_exactly


def on_verdict(s: CallState, verdict: AnsweredBy, now_ms: float) -> list[Command]:
    if not s.amd.take(verdict):
        return []
    commands: list[Command] = [Record(TimelineStage("amd_verdict", now_ms, verdict.value))]
    if s.phase.is_(CallPhase.AWAITING_START):
        return commands  # the stream's start acts on it
    closing = s.closing
    if closing is not None:
        if (closing.acted or closing.outcome is Outcome.VOICEMAIL
                or not verdict.machine_message_ended):
            return commands  # the call is ending anyway
        # A goodbye to a machine (the agent answered its message): the voicemail instead.
        s.closing = None
        s.responses.discard()
        commands.append(Record(TimelineStage("closing_replaced", now_ms, closing.reason)))
    if verdict.is_human:
        if not s.phase.is_(CallPhase.AWAITING_AMD):
            return commands
        return [*commands, CancelTimer(TimerName.AMD_CAP), *greet(s, now_ms)]
    return commands + on_machine(s, verdict, now_ms)


def on_machine(s: CallState, verdict: AnsweredBy, now_ms: float) -> list[Command]:
    if verdict is AnsweredBy.MACHINE_START:
        return _await_message_end(s, now_ms)
    if verdict is AnsweredBy.FAX:
        s.phase.move(CallPhase.CONVERSING)
        return [CancelTimer(TimerName.AMD_CAP),
                *close(s, Closing(Outcome.FAILED, "fax machine"), None, now_ms)]
    return _leave_voicemail(s, now_ms)


def _await_message_end(s: CallState, now_ms: float) -> list[Command]:
    """A machine answered and its message plays: stop talking, say nothing until it ends."""
    # The engine keeps what was heard; a greeting asked for and not started is dropped.
    commands: list[Command] = [CancelTimer(TimerName.AMD_CAP), *stop_agent(s, now_ms)]
    s.responses.discard()
    s.phase.move(CallPhase.AWAITING_BEEP)
    cap_ms = s.plan.amd_message_cap_ms
    return [*commands, *s.silence.disarm(), StartTimer(TimerName.AMD_MESSAGE_CAP, cap_ms),
            Record(TimelineStage("machine_answered", now_ms,
                                 f"silent until its message ends, at most {cap_ms} ms"))]


def message_cap_reached(s: CallState, now_ms: float) -> list[Command]:
    if not s.phase.is_(CallPhase.AWAITING_BEEP):
        return []
    s.phase.move(CallPhase.CONVERSING)
    closing = Closing(Outcome.VOICEMAIL, "machine message never ended")
    return close(s, closing, None, now_ms)


def _leave_voicemail(s: CallState, now_ms: float) -> list[Command]:
    """The beep has sounded: stop whatever we were saying, leave the message, hang up."""
    commands: list[Command] = [CancelTimer(TimerName.AMD_CAP),
                               CancelTimer(TimerName.AMD_MESSAGE_CAP), *stop_agent(s, now_ms)]
    s.phase.move(CallPhase.CONVERSING)
    closing = Closing(Outcome.VOICEMAIL, "answering machine")
    if s.voicemail_frames:
        commands += start_closing(s, closing, now_ms)
        commands += play_cached(s, CACHED_VOICEMAIL_ITEM, s.voicemail_frames, s.plan.voicemail,
                                now_ms)
        commands += goodbye_cap(s, now_ms)
        commands.append(Record(TimelineStage("voicemail_started", now_ms, CACHED_AUDIO)))
        return commands + maybe_act(s, now_ms)
    if not s.plan.voicemail:
        return commands + close(s, closing, None, now_ms)
    commands.append(Record(TimelineStage("voicemail_started", now_ms, "live")))
    return commands + close(s, closing, say_exactly(s.plan.voicemail), now_ms)


def callee_frame(s: CallState, payload_b64: str, now_ms: float) -> list[Command]:
    """Callee audio before the verdict, or a machine's message, is not sent to the engine;
    past the cap, a held greeting goes once the callee is quiet."""
    s.stats.media_held_for_amd += 1
    if s.phase.is_(CallPhase.AWAITING_BEEP):
        return []
    s.amd.heard(s.turns.voiced(payload_b64), b64_decoded_len(payload_b64) / BYTES_PER_MS)
    if s.amd.cap_passed and s.amd.callee_quiet:
        return [Record(TimelineStage("amd_cap_reached", now_ms, "callee quiet")),
                *greet(s, now_ms)]
    return []


def cap_reached(s: CallState, now_ms: float) -> list[Command]:
    if not s.phase.is_(CallPhase.AWAITING_AMD):
        return []
    s.amd.cap_passed = True
    if not s.amd.callee_quiet:
        return []  # never talk over the callee: a machine's message, most likely
    return [Record(TimelineStage("amd_cap_reached", now_ms)), *greet(s, now_ms)]
