"""Answering machines: the greeting held for the verdict, and the voicemail after the beep.

Outbound calls with async AMD hold the greeting until Twilio's verdict, at most
`amd_cap_ms` while the callee is quiet. A person (or `unknown`) is greeted; a machine whose
message has ended gets the template's voicemail (cached audio, or said live) and a
hang-up; a fax is hung up on.
"""

from __future__ import annotations

from hotline.core.amd import AnsweredBy
from hotline.core.closing import Closing
from hotline.core.commands import CancelTimer, Command, Record
from hotline.core.ending import close, maybe_act, start_closing
from hotline.core.greeting import CACHED_VOICEMAIL_ITEM
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage
from hotline.core.speaking import cut_agent, goodbye_cap, greet, play_cached
from hotline.core.state import CallState
from hotline.core.timers import TimerName
from hotline.prompts import say_exactly


def on_verdict(s: CallState, verdict: AnsweredBy, now_ms: float) -> list[Command]:
    if not s.amd.take(verdict):
        return []
    commands: list[Command] = [Record(TimelineStage("amd_verdict", now_ms, verdict.value))]
    if s.phase.is_(CallPhase.AWAITING_START) or s.closing is not None:
        return commands  # the stream's start acts on it / the call is ending anyway
    if verdict.is_human:
        if not s.phase.is_(CallPhase.AWAITING_AMD):
            return commands
        return [*commands, CancelTimer(TimerName.AMD_CAP), *greet(s, now_ms)]
    if verdict is AnsweredBy.MACHINE_START:
        return commands  # its message-end verdict follows; the cap still holds
    return commands + on_machine(s, verdict, now_ms)


def on_machine(s: CallState, verdict: AnsweredBy, now_ms: float) -> list[Command]:
    if verdict is AnsweredBy.FAX:
        s.phase.move(CallPhase.CONVERSING)
        return [CancelTimer(TimerName.AMD_CAP),
                *close(s, Closing(Outcome.FAILED, "fax machine"), None, now_ms)]
    return _leave_voicemail(s, now_ms)


def _leave_voicemail(s: CallState, now_ms: float) -> list[Command]:
    """The beep has sounded: stop whatever we were saying, leave the message, hang up."""
    commands: list[Command] = [CancelTimer(TimerName.AMD_CAP)]
    if s.agent_audible():
        commands += cut_agent(s, now_ms, "agent_cut")
    s.phase.move(CallPhase.CONVERSING)
    closing = Closing(Outcome.VOICEMAIL, "answering machine")
    if s.voicemail_frames:
        commands += start_closing(s, closing, now_ms)
        commands += play_cached(s, CACHED_VOICEMAIL_ITEM, s.voicemail_frames, s.plan.voicemail,
                                now_ms)
        commands += goodbye_cap(s, now_ms)
        commands.append(Record(TimelineStage("voicemail_started", now_ms, "cached audio")))
        return commands + maybe_act(s, now_ms)
    if not s.plan.voicemail:
        return commands + close(s, closing, None, now_ms)
    commands.append(Record(TimelineStage("voicemail_started", now_ms, "live")))
    return commands + close(s, closing, say_exactly(s.plan.voicemail), now_ms)


def callee_frame(s: CallState, payload_b64: str, now_ms: float) -> list[Command]:
    """Callee audio before the verdict (a machine's message, or a "Hello?") is not sent to
    the engine; past the cap, the greeting goes once the callee is quiet."""
    s.stats.media_held_for_amd += 1
    s.amd.heard(s.turns.voiced(payload_b64), now_ms)
    if s.amd.cap_passed and s.amd.callee_quiet(now_ms):
        return [Record(TimelineStage("amd_cap_reached", now_ms, "callee quiet")),
                *greet(s, now_ms)]
    return []


def cap_reached(s: CallState, now_ms: float) -> list[Command]:
    if not s.phase.is_(CallPhase.AWAITING_AMD):
        return []
    s.amd.cap_passed = True
    if not s.amd.callee_quiet(now_ms):
        return []  # never talk over the callee: a machine's message, most likely
    return [Record(TimelineStage("amd_cap_reached", now_ms)), *greet(s, now_ms)]
