"""The hold line: "One moment, please." when the engine drops while the caller waits on it.

A new engine session takes a few hundred ms to open and then its first audio, with the full
prompt, takes most of a second more: without a word the caller would hear over a second of
dead air. So at the drop, if the caller was waiting on the agent (the agent was speaking and
got cut, or a reply or greeting was asked for or wanted, or a tool was working on one), a
short canned line in the business's voice plays at once, as cached audio over the open
stream. The resumed reply's audio queues behind it at Twilio (not over it); a barge-in cuts
it like any agent audio; an apology (the reconnect failed) cuts it at once.

Nothing plays when the caller is talking, nobody waits on the agent, cached audio still
plays on (a greeting), or the call is closing; at most one per drop (`EngineLost` is
handled once per drop). The line is filler, not conversation: it is not replayed to the
engine nor kept in the transcript; the timeline has `hold_line` with where its audio came
from.
"""

from __future__ import annotations

from hotline.core.commands import Command, Record
from hotline.core.greeting import CACHED_HOLD_ITEM
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage
from hotline.core.responses import Purpose
from hotline.core.speaking import play_cached
from hotline.core.state import CallState
from hotline.prompts import hold_text


def caller_waits(s: CallState, agent_was_cut: bool) -> bool:
    """At the drop (after the cut line and the lost request are sorted out): is the caller
    waiting on the agent to speak?"""
    if s.closing is not None or s.playback.audible:
        return False  # the last line is going, or cached audio plays on without the engine
    if not s.phase.is_(CallPhase.GREETING, CallPhase.CONVERSING, CallPhase.LISTENING):
        return False  # before the start, an answering machine's turn, or a message taken
    return (agent_was_cut or s.tools.busy or s.responses.pending(Purpose.REPLY)
            or s.responses.pending(Purpose.GREETING))


def play(s: CallState, now_ms: float) -> list[Command]:
    """The hold line's frames to Twilio at once, and its timeline stage."""
    hold = s.hold
    if hold is None or not hold.frames:
        return []
    commands = play_cached(s, CACHED_HOLD_ITEM, hold.frames, hold_text(s.plan.language), now_ms)
    item = s.playback.items[CACHED_HOLD_ITEM]
    item.recorded = True  # filler: neither a transcript turn nor a conversation item
    return [*commands, Record(TimelineStage("hold_line", now_ms,
                                            f"{hold.source.value}, {int(item.sent_ms)} ms"))]
