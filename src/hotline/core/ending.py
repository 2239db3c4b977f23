"""Ending the call: our last line then a hang-up or transfer, or the end Twilio reports.

The steps of our own closing live in `Closing`; these functions start it (cutting off what
the agent was saying, keeping only the closing line wanted), act once the line has played,
and end the call's core with its outcome.
"""

from __future__ import annotations

from hotline.core.closing import Closing, ControlAction
from hotline.core.commands import Command, EndCall, Record, StartTimer
from hotline.core.events import CallControlFailed
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage
from hotline.core.responses import Purpose
from hotline.core.speaking import stop_agent
from hotline.core.state import CallState
from hotline.core.timers import TimerName
from hotline.prompts import DRAIN_GOODBYE_INSTRUCTIONS


def close(s: CallState, closing: Closing, instructions: str | None,
          now_ms: float) -> list[Command]:
    """Say a last line (a response with `instructions`), then hang up or transfer."""
    if s.closing is not None:
        return []
    commands = stop_agent(s, now_ms)  # a reply not heard yet must not start either
    if instructions is not None:
        closing.line_wanted()
    commands += start_closing(s, closing, now_ms)
    if instructions is not None:
        commands += s.want(instructions, Purpose.CLOSING)
    return commands + maybe_act(s, now_ms)


def start_closing(s: CallState, closing: Closing, now_ms: float) -> list[Command]:
    s.closing = closing
    s.responses.keep_only(Purpose.CLOSING)
    what = f"transfer to {closing.transfer_to}" if closing.transfer_to else "hang up"
    return [*s.silence.disarm(), StartTimer(TimerName.GOODBYE_CAP, s.plan.goodbye_cap_ms),
            Record(TimelineStage("closing", now_ms, f"{closing.reason}: {what}"))]


def maybe_act(s: CallState, now_ms: float, *, force: bool = False) -> list[Command]:
    """Once the last line has played (every mark echoed), hang up or transfer; `force`
    when the goodbye cap has passed."""
    closing = s.closing
    if closing is None or closing.acted:
        return []
    if not force and not closing.ready(s.playback.audible):
        return []
    s.responses.forget_wanted()
    stage = ("transfer_requested" if closing.action is ControlAction.TRANSFER
             else "hang_up_requested")
    detail = closing.reason + (" (goodbye cap reached)" if force else "")
    return [closing.act(), Record(TimelineStage(stage, now_ms, detail))]


def drain_deadline(s: CallState, now_ms: float) -> list[Command]:
    """The instance is shutting down and its drain is over: a goodbye, then the hang-up (the
    goodbye cap makes sure of it). Over a machine's message: hung up without a line."""
    line = None if s.phase.is_(CallPhase.AWAITING_BEEP) else DRAIN_GOODBYE_INSTRUCTIONS
    return close(s, Closing(Outcome.HUNG_UP_BY_AGENT, "shutting down"), line, now_ms)


def control_failed(s: CallState, event: CallControlFailed, now_ms: float) -> list[Command]:
    """Twilio's REST API did not take the hang-up or transfer: closing the stream ends the
    `<Connect>` and with it the call."""
    outcome = (Outcome.FAILED if event.action is ControlAction.TRANSFER
               else outcome_if_caller_leaves(s))
    return [Record(TimelineStage("call_control_failed", now_ms,
                                 f"{event.action}: {event.detail}"[:300])),
            *end(s, outcome, f"{event.action} through Twilio failed", now_ms)]


def outcome_if_caller_leaves(s: CallState) -> Outcome:
    if s.closing is not None:
        return s.closing.outcome_if_caller_leaves()
    if s.engine_down:
        return Outcome.ENGINE_UNAVAILABLE  # gone before the apology could play
    if s.phase.is_(CallPhase.AWAITING_BEEP):
        return Outcome.VOICEMAIL  # a machine answered
    return Outcome.COMPLETED


def end(s: CallState, outcome: Outcome, reason: str, now_ms: float) -> list[Command]:
    s.phase.move(CallPhase.ENDED)
    s.outcome = outcome
    # Agent items whose response never finished still belong in the transcript.
    return [*s.agent_turns(None), Record(TimelineStage("call_ended", now_ms, reason)),
            EndCall(outcome)]
