"""Tools in the call: run what the model calls, hold the answers, then reply or close.

`end_call` and `transfer_to_human` close the call: the reply that called the tool may
already have said the last line (it only has to finish playing), or the tool's answer asks
for it.
"""

from __future__ import annotations

from hotline.core.closing import Closing, ClosingStep
from hotline.core.commands import Command, Record, RunTool, SendToEngine
from hotline.core.ending import maybe_act, start_closing
from hotline.core.events import EngineFunctionCall, ToolFinished
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage
from hotline.core.responses import Purpose
from hotline.core.state import CallState
from hotline.core.tool_ledger import ToolEffect

# The timeline keeps each tool call's arguments and answer (the owner's API shows them), cut
# to this many characters: a tool's answer may be a whole page.
MAX_TOOL_JSON_CHARS = 1000


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_TOOL_JSON_CHARS else text[:MAX_TOOL_JSON_CHARS] + "…"


def on_call(s: CallState, event: EngineFunctionCall, now_ms: float) -> list[Command]:
    s.stats.tool_calls += 1
    s.conversation.tool_call(event.call_id, event.name, event.arguments)
    stage = Record(TimelineStage("tool_called", now_ms,
                                 f"{event.name} {_clipped(event.arguments)}".rstrip()))
    if s.responses.is_dropped(event.response_id):
        # The caller cut this reply off: its tool does not run, the model is told why.
        s.tools.refused(event.response_id, event.call_id)
        return [stage, *release_answers(s, event.response_id)]
    s.tools.called(event.response_id, event.call_id)
    return [RunTool(event.call_id, event.name, event.arguments), stage]


def on_finished(s: CallState, event: ToolFinished, now_ms: float) -> list[Command]:
    response_id = s.tools.finished(event.call_id, event.output_json)
    if event.error:
        s.stats.tool_errors += 1
    verdict = "error" if event.error else "ok"
    commands: list[Command] = [Record(TimelineStage(
        "tool_done", now_ms, f"{event.name}: {verdict} {_clipped(event.output_json)}".rstrip()))]
    if event.message is not None:
        s.messages_taken += 1
        commands.append(Record(event.message))
    # A reply the caller cut off takes its decision with it; one the engine took down
    # with it (a drop) does not: its end_call or transfer still happens.
    interrupted = s.responses.was_cut_off(response_id)
    over_a_machine = s.phase.is_(CallPhase.AWAITING_BEEP)  # the voicemail path ends it
    if (event.effect is not ToolEffect.NONE and s.closing is None and not interrupted
            and not over_a_machine):
        commands += start_closing(s, _closing_for(s, event, response_id), now_ms)
    elif not interrupted and s.closing is None:
        s.tools.reply_after(response_id)
    return commands + release_answers(s, response_id) + maybe_act(s, now_ms)


def _closing_for(s: CallState, event: ToolFinished, response_id: str) -> Closing:
    transfer_to = s.plan.transfer_number if event.effect is ToolEffect.TRANSFER else None
    closing = Closing(Outcome.TRANSFERRED if transfer_to else Outcome.HUNG_UP_BY_AGENT,
                      event.name, transfer_to=transfer_to)
    if s.responses.has_audio(response_id):
        # The reply that called the tool already said goodbye (or the handover line): it
        # only has to finish playing.
        closing.line_playing(response_id, done=s.responses.active_id != response_id)
    else:
        closing.line_wanted()  # the tool's answer asks for the line
    return closing


def release_answers(s: CallState, response_id: str) -> list[Command]:
    """Tool answers go to the model once the response that called the tools is done and
    every one of its tools has answered; then one reply, or the closing line."""
    released = s.tools.release(response_id, s.responses.active_id)
    if released is None:
        return []
    outputs, wants_reply = released
    for output in outputs:
        s.conversation.tool_output(output.call_id, output.output)
    commands: list[Command] = [SendToEngine(o) for o in outputs]
    closing = s.closing
    if (closing is not None and closing.step is ClosingStep.LINE_WANTED
            and not s.responses.pending(Purpose.CLOSING)):
        commands += s.want(None, Purpose.CLOSING)
    elif wants_reply:
        commands += s.want(None, Purpose.REPLY)
    return commands
