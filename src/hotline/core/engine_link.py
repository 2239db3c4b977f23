"""The engine link: the engine dropping mid-call, the resume after it, and engine errors.

When the engine's socket closes while the call goes on (`EngineLost`), the line the engine
was still making stops as for a barge-in (Twilio `clear`; the line is recorded as
interrupted, with the words heard) but the dead engine is told nothing; what it was making
or asked for is forgotten and wanted again, with its instructions; no response is asked
for until a new session is there. A finished reply's audio still queued plays out, like
cached audio: it needs no engine. The caller's turn the dead engine never transcribed
(open at the drop, or committed without its transcript) is taken from their recent audio
(caller_audio.py). The runner reconnects with the full prompt and reports `EngineResumed`:
the conversation so far is replayed into the new session (items made after the loss reach
it live, after the replay), then that turn's audio is sent again (ahead of the audio that
waited in the runner), then what is wanted is asked for, unless the caller spoke (in that
turn or while the call was between sessions): the new session's VAD makes their words a
turn and the reply answers it (the cut line is in the replay); if it makes none within
`RESUME_TURN_WAIT_MS`, the reply is asked for anyway. A drop while the call is closing
does not stop it: the last line's audio already sent plays out and the hang-up or
transfer follows (no engine needed). If the caller was waiting on the agent, the hold line
covers the reconnect (hold_line.py).

Engine `error`s that do not end the session go on the timeline, the first
`MAX_ERRORS_ON_TIMELINE` of them; after that they are only counted.
"""

from __future__ import annotations

from hotline.audio.mulaw import BYTES_PER_MS, b64_decoded_len
from hotline.core import ending, hold_line, tool_flow
from hotline.core.closing import Closing
from hotline.core.commands import (
    AddAssistantText,
    AppendAudio,
    Command,
    Record,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TwilioClear,
)
from hotline.core.events import (
    EngineAgentTranscriptDelta,
    EngineError,
    EngineLost,
    EngineResumed,
)
from hotline.core.greeting import CACHED, CACHED_GREETING_ITEM
from hotline.core.record import TimelineStage
from hotline.core.responses import Purpose
from hotline.core.state import CallState
from hotline.core.timers import TimerName
from hotline.prompts import say_exactly

MAX_ERRORS_ON_TIMELINE = 10
# Resumed while the caller spoke: how long (call time) the new session has to make a turn
# of it before the wanted reply is asked for anyway.
RESUME_TURN_WAIT_MS = 1500
_WANTED_AGAIN = (Purpose.GREETING, Purpose.REPLY, Purpose.NUDGE)


def handle(s: CallState, event: EngineLost | EngineResumed | EngineAgentTranscriptDelta,
           now_ms: float) -> list[Command]:
    match event:
        case EngineAgentTranscriptDelta():
            item = s.playback.items.get(event.item_id)
            if item is not None:
                item.partial += event.delta
            return []
        case EngineLost():
            return lost(s, event.detail, now_ms)
        case EngineResumed():
            return resumed(s, now_ms)


def lost(s: CallState, detail: str, now_ms: float) -> list[Command]:
    if s.engine_lost_ms is not None:
        return []  # already reconnecting
    s.stats.engine_drops += 1
    s.engine_lost_ms = now_ms
    if s.closing is not None:
        return _lost_while_closing(s, s.closing, detail, now_ms)
    caller_talking = s.turns.open
    commands: list[Command] = [Record(TimelineStage("engine_lost", now_ms, detail[:300]))]
    item = s.playback.current()
    cut_response = None
    if item is not None and item.response_id != CACHED:
        if s.responses.active_and_kept(item.response_id):
            # The line still being made: the rest of it will never come.
            commands += _cut_engine_line(s, now_ms)
            cut_response = item.response_id
        else:
            # A finished reply's audio plays out (it needs no engine); the new session
            # has its words in the replay, under another id. Its end is marked.
            item.engine_gone = True
            commands += s.playback.mark()
    wanted = s.responses.lost()
    if wanted is not None and wanted.purpose in _WANTED_AGAIN:
        # The new session says it (its cut line replayed), as it was asked for.
        instructions = wanted.instructions
        if wanted.purpose is Purpose.GREETING and instructions is None and cut_response is None:
            # Nothing of it was heard, and the new session's full prompt says it was said.
            instructions = say_exactly(s.plan.greeting)
        s.responses.want(instructions, wanted.purpose)
    # The caller's turn the dead engine never transcribed goes to the new session again.
    s.resend_audio = s.recent_audio.since(s.turns.abandon())
    commands += _held_quiet_audio(s)
    voiced = [p for p in s.resend_audio if s.turns.voiced(p)]
    s.voiced_while_lost_ms = sum(b64_decoded_len(p) for p in voiced) / BYTES_PER_MS
    if cut_response is not None:
        commands += s.agent_turns(cut_response)  # the heard words join the conversation
    # What the conversation holds now is replayed; what joins it from here (a tool's answer,
    # a key pressed) goes to the engine the usual way, held until the new session is there.
    s.replay_before = s.conversation.next_seq
    if cut_response is not None:
        commands += tool_flow.release_answers(s, cut_response)
    if not caller_talking and hold_line.caller_waits(s, agent_was_cut=cut_response is not None):
        commands += hold_line.play(s, now_ms)
    return commands


def _held_quiet_audio(s: CallState) -> list[Command]:
    """Quiet frames held back (quiet_audio.py) never reached the dead engine. They go as
    any engine message does now: the runner keeps it for the new session behind what
    failed to send before the drop was seen (a batch sent as the socket was closing), so
    the caller's audio stays in order; the resend goes ahead of all that, so they are not
    in it. They are the latest frames forwarded and the resend is the latest ones too
    (recent_audio keeps every frame forwarded): the held ones are cut off its end."""
    batch = s.quiet_audio
    if batch is None or not batch.held_frames:
        return []
    held = batch.held_frames
    del s.resend_audio[max(0, len(s.resend_audio) - held):]
    return s.caller_audio(batch.flush())


def _lost_while_closing(s: CallState, closing: Closing, detail: str,
                        now_ms: float) -> list[Command]:
    """Hanging up or transferring needs no engine: the last line's audio already sent plays
    out (if any was made), then the closing acts as it would have."""
    s.responses.lost()  # the rest of the line never comes
    s.turns.abandon()
    s.recent_audio.since(None)
    if s.quiet_audio is not None:
        s.quiet_audio.take()  # silence, and the call is ending
    closing.line_lost()
    return [*s.playback.mark(),  # the end of what was sent of the line plays out
            Record(TimelineStage("engine_lost", now_ms,
                                 f"{detail[:250]}; closing without the engine")),
            *ending.maybe_act(s, now_ms)]


def _cut_engine_line(s: CallState, now_ms: float) -> list[Command]:
    item = s.playback.current()
    assert item is not None
    heard_ms = s.playback.heard_ms(now_ms)
    s.playback.clear()
    item.truncated_at_ms = heard_ms
    return [SendToTwilio(TwilioClear()),
            Record(TimelineStage("agent_cut", now_ms,
                                 f"engine lost: heard {heard_ms} of {int(item.sent_ms)} ms"))]


def caller_frame(s: CallState, payload_b64: str) -> None:
    """A caller frame while the engine is lost (it waits for the new session)."""
    if s.turns.voiced(payload_b64):
        s.voiced_while_lost_ms += b64_decoded_len(payload_b64) / BYTES_PER_MS


def resumed(s: CallState, now_ms: float) -> list[Command]:
    if s.engine_lost_ms is None:
        return []
    gap_ms = now_ms - s.engine_lost_ms
    s.engine_lost_ms = None
    s.stats.engine_resumes += 1
    replay = s.conversation.replay(before=s.replay_before)
    greeting = s.playback.items.get(CACHED_GREETING_ITEM)
    if greeting is not None and not greeting.recorded:
        # The cached greeting plays on (no engine needed): the new session is told it is
        # said, under its own id, so that a barge-in can still replace it with what was heard.
        replay.append(AddAssistantText(CACHED_GREETING_ITEM, s.plan.greeting))
    commands: list[Command] = [SendToEngine(message) for message in replay]
    detail = f"gap {gap_ms:.0f} ms, {len(replay)} items replayed"
    if s.resend_audio:
        # The caller's turn cut by the drop, ahead of the audio that waited in the runner.
        commands += [SendToEngine(AppendAudio(payload)) for payload in s.resend_audio]
        detail += f", {len(s.resend_audio)} caller frames sent again"
        s.resend_audio = []
    if s.voiced_while_lost_ms >= s.plan.barge_in_min_speech_ms:
        # The caller spoke (before the drop, unanswered, or meanwhile): their turn, in the
        # audio sent again and the audio that waited, comes first; if the new session makes
        # no turn of it, the wanted reply is asked for after `RESUME_TURN_WAIT_MS`.
        return [*commands, Record(TimelineStage(
            "engine_resumed", now_ms, f"{detail}; the caller spoke meanwhile")),
            StartTimer(TimerName.RESUME_TURN_WAIT, RESUME_TURN_WAIT_MS)]
    commands.append(Record(TimelineStage("engine_resumed", now_ms, detail)))
    return commands + s.next_response()


def turn_wait_over(s: CallState, now_ms: float) -> list[Command]:
    """The resume's wait for the caller's turn is over: if none is open, what is wanted
    (the cut line's reply) is asked for now (nothing, if it was already)."""
    if s.engine_lost_ms is not None or s.closing is not None or s.turns.open:
        return []  # lost again (the next resume sees to it), closing, or the turn is going
    commands = s.next_response()
    if commands:
        commands.append(Record(TimelineStage("resume_turn_wait_over", now_ms,
                                             "no caller turn after the resume: replying")))
    return commands


def error_stage(s: CallState, event: EngineError, now_ms: float) -> list[Command]:
    """The timeline entry for one engine error (counted in `stats.engine_errors` first)."""
    count = s.stats.engine_errors
    if count <= MAX_ERRORS_ON_TIMELINE:
        return [Record(TimelineStage("engine_error", now_ms,
                                     f"{event.code}: {event.message}"[:300]))]
    if count == MAX_ERRORS_ON_TIMELINE + 1:
        return [Record(TimelineStage(
            "engine_errors_counted", now_ms,
            f"more than {MAX_ERRORS_ON_TIMELINE} engine errors: further ones are counted only"))]
    return []
