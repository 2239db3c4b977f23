"""The agent's voice: the greeting, cached audio, engine audio forwarded, and cutting it off.

A cached greeting's frames all go to Twilio at once (it buffers and plays in real time),
each with a mark, and the engine's conversation is told the assistant said it. A cut clears
Twilio's buffer, tells the engine how much was heard (`truncate`, or for cached audio the
heard words in place of the item) and cancels the response still producing audio.
"""

from __future__ import annotations

from hotline.core.commands import (
    AddAssistantText,
    Command,
    DeleteItem,
    Record,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    Truncate,
    TwilioClear,
)
from hotline.core.events import EngineAudioDelta
from hotline.core.greeting import (
    CACHED,
    CACHED_AUDIO,
    CACHED_GREETING_HEARD_ITEM,
    CACHED_GREETING_ITEM,
    heard_part,
    live_greeting_detail,
)
from hotline.core.phase import CallPhase
from hotline.core.playback import AgentItem
from hotline.core.record import TimelineStage
from hotline.core.responses import Purpose
from hotline.core.state import CallState
from hotline.core.timers import TimerName


def greet(s: CallState, now_ms: float) -> list[Command]:
    """The call is on (and not an answering machine): greet, or listen first."""
    if s.greeting_frames:
        s.phase.move(CallPhase.GREETING)
        return play_cached_greeting(s, s.greeting_frames, now_ms)
    if not s.plan.bot_speaks_first:
        s.phase.move(CallPhase.LISTENING)
        return s.arm_silence()
    s.phase.move(CallPhase.GREETING)
    if s.plan.greeting_prerequested:
        return []  # the warm session asked for it with our event id (see CallSession)
    s.seen.add("greeting_requested")
    return [*s.want(None, Purpose.GREETING),
            Record(TimelineStage("greeting_requested", now_ms, live_greeting_detail(s.plan)))]


def play_cached_greeting(s: CallState, frames: tuple[str, ...], now_ms: float) -> list[Command]:
    greeting = s.plan.greeting
    commands = play_cached(s, CACHED_GREETING_ITEM, frames, greeting, now_ms)
    commands.append(SendToEngine(AddAssistantText(CACHED_GREETING_ITEM, greeting)))
    sent_ms = int(s.playback.items[CACHED_GREETING_ITEM].sent_ms)
    commands.append(Record(TimelineStage("greeting_requested", now_ms,
                                         f"{CACHED_AUDIO} {sent_ms} ms")))
    return commands + s.stage_once("first_audio_to_caller", now_ms)


def play_cached(s: CallState, item_id: str, frames: tuple[str, ...], text: str,
                now_ms: float) -> list[Command]:
    s.playback.start_item(item_id, CACHED, now_ms, transcript=text)
    commands: list[Command] = []
    for frame in frames:
        commands += s.playback.send(item_id, frame, now_ms)
    s.stats.deltas_out += len(frames)
    return commands + s.playback.mark()  # all of it is sent: its end is marked


def finish_cached_greeting(s: CallState, now_ms: float, how: str) -> list[Command]:
    s.phase.move(CallPhase.CONVERSING)
    s.first_response_done = True  # the engine's first response is a reply, not this
    return [*s.agent_turns(CACHED), *s.stage_once("greeting_done", now_ms, how)]


def forward_audio(s: CallState, event: EngineAudioDelta, now_ms: float) -> list[Command]:
    """Engine audio to Twilio, untouched, unless its response was dropped."""
    if s.responses.is_dropped(event.response_id) or s.stream_sid is None:
        s.stats.deltas_dropped += 1
        return []
    commands: list[Command] = []
    if event.item_id not in s.playback.items:
        s.playback.start_item(event.item_id, event.response_id, now_ms)
        s.responses.had_audio(event.response_id)
        commands += s.stage_once("first_audio_from_engine", now_ms)
    commands += s.playback.send(event.item_id, event.delta_b64, now_ms)
    s.stats.deltas_out += 1
    commands += s.stage_once("first_audio_to_caller", now_ms)
    if s.closing is not None:
        commands += goodbye_cap(s, now_ms)
    return commands


def goodbye_cap(s: CallState, now_ms: float) -> list[Command]:
    """The last line may take as long as its audio still queued at Twilio, plus the cap:
    the cap is for a line that never finishes, not a long one."""
    queued_ms = int(s.playback.queued_ms(now_ms))
    return [StartTimer(TimerName.GOODBYE_CAP, s.plan.goodbye_cap_ms + queued_ms)]


def stop_agent(s: CallState, now_ms: float) -> list[Command]:
    """Nothing the agent is saying or about to say may go on: cut what is audible, cancel a
    response not heard yet."""
    if s.agent_audible():
        return cut_agent(s, now_ms, "agent_cut")
    return s.responses.cancel_active()


def cut_agent(s: CallState, now_ms: float, stage: str) -> list[Command]:
    """Stop the agent's audio at once: clear Twilio's buffer, tell the engine how much was
    heard, cancel the response still producing it."""
    commands: list[Command] = [SendToTwilio(TwilioClear())]
    item_id, item = s.playback.current_item_id, s.playback.current()
    heard_ms = s.playback.heard_ms(now_ms)
    s.playback.clear()
    detail = "nothing played yet"
    if item_id is not None and item is not None:
        detail = f"heard {heard_ms} of {int(item.sent_ms)} ms"
        if item.response_id == CACHED:
            detail += " (cached)"
            if item_id == CACHED_GREETING_ITEM:
                commands += _cut_cached_greeting(s, item, heard_ms, now_ms, stage)
        elif not item.engine_gone and heard_ms > 0 and (heard_ms < item.sent_ms
                               or s.responses.active_id == item.response_id):
            item.truncated_at_ms = heard_ms
            commands.append(SendToEngine(Truncate(item_id, heard_ms)))
    commands += s.responses.cancel_active()
    commands.append(Record(TimelineStage(stage, now_ms, detail)))
    return commands


def _cut_cached_greeting(s: CallState, item: AgentItem, heard_ms: int, now_ms: float,
                         stage: str) -> list[Command]:
    """The engine did not make the cached greeting's item, so it can't truncate it: replace
    it with the part of the text the caller heard."""
    item.truncated_at_ms = heard_ms
    commands: list[Command] = [SendToEngine(DeleteItem(CACHED_GREETING_ITEM))]
    heard_text = heard_part(s.plan.greeting, heard_ms / item.sent_ms if item.sent_ms else 0)
    item.transcript = heard_text
    if heard_text:
        commands.append(SendToEngine(AddAssistantText(CACHED_GREETING_HEARD_ITEM, heard_text,
                                                      previous_item_id="root")))
    how = "cut by the caller" if stage == "barge_in" else f"cut ({stage})"
    return commands + finish_cached_greeting(s, now_ms, how)
