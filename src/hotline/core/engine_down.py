"""No engine can be had (`EngineUnavailable`): apologise, take a message, hang up.

    EngineUnavailable ──▶ clear the agent's audio, play the apology + tone (cached frames)
      (before `start`: at `start`)        │ the tone's last mark echoed
                                          ▼
                          record the caller's frames (MessageRecording)
                                          │ silence after speech, max length, `#`,
                                          │ the call's time limit, or the caller hangs up
                                          ▼
                          the message (with its audio) is recorded; hang up
                          (`engine_unavailable`)

The apology starts the moment the event is handled, so the caller hears no more dead air
than the event took to come. In TAKING_MESSAGE the engine is gone: nothing is sent to it,
and whatever it or a tool might still report is ignored. The recording is bounded in the
core (frames up to `message_max_ms`) and by a timer (`MESSAGE_CAP`), for a stream whose
media stops. The audio leaves the core as `KeepMessageAudio`; the runner writes it after
the call.
"""

from __future__ import annotations

from hotline.audio.tone import TONE_FRAMES
from hotline.core.closing import Closing, ControlAction
from hotline.core.commands import (
    CancelTimer,
    Command,
    KeepMessageAudio,
    Record,
    SendToTwilio,
    StartTimer,
    TwilioClear,
)
from hotline.core.ending import control_failed, end, maybe_act, start_closing
from hotline.core.events import (
    CallAborted,
    CallControlFailed,
    CallEvent,
    DrainDeadline,
    EngineUnavailable,
    TimerFired,
    TwilioClosed,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStop,
)
from hotline.core.greeting import CACHED_APOLOGY_ITEM
from hotline.core.message_recording import MessageRecording, RecordingEnd
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import LeadMessage, TimelineStage
from hotline.core.speaking import play_cached
from hotline.core.state import CallState
from hotline.core.timers import TimerName
from hotline.prompts import apology_text

END_KEY = "#"
MESSAGES_DIR = "messages"  # under the data directory


def on_unavailable(s: CallState, event: EngineUnavailable, now_ms: float) -> list[Command]:
    """The engine cannot be had: apologise now (or at `start`, if it has not come yet)."""
    commands: list[Command] = [Record(TimelineStage("engine_unavailable", now_ms,
                                                    event.detail[:300]))]
    if s.phase.is_(CallPhase.AWAITING_START):
        s.engine_down = True
        return commands
    if s.closing is not None and not s.closing.needs_engine:
        # Hanging up or transferring, or about to once its last line (already sent, or
        # given up at a drop) has played: nothing more to say.
        return commands
    return commands + apologise(s, now_ms)


def apologise(s: CallState, now_ms: float) -> list[Command]:
    """Stop everything the call was doing, and play the apology and the tone at once."""
    s.engine_down = True
    commands: list[Command] = [*s.silence.disarm(), CancelTimer(TimerName.AMD_CAP),
                               CancelTimer(TimerName.AMD_MESSAGE_CAP),
                               CancelTimer(TimerName.GOODBYE_CAP)]
    commands += _silence_agent(s, now_ms)
    s.closing = None  # a goodbye that was to come from the engine never will
    s.responses.discard()
    s.phase.move(CallPhase.TAKING_MESSAGE)
    plan = s.plan
    s.message = MessageRecording(plan.message_max_ms, plan.message_end_silence_ms,
                                 plan.barge_in_min_speech_ms, plan.vad_threshold)
    apology = s.apology
    frames = apology.frames if apology is not None else ()
    commands += play_cached(s, CACHED_APOLOGY_ITEM, (*frames, *TONE_FRAMES),
                            apology_text(plan.language), now_ms)
    sent_ms = int(s.playback.items[CACHED_APOLOGY_ITEM].sent_ms)
    source = apology.source.value if apology is not None and frames else "tone only"
    # Bounds the whole thing even if the tone's marks never come back.
    commands.append(StartTimer(TimerName.MESSAGE_CAP, sent_ms + plan.message_max_ms))
    commands.append(Record(TimelineStage("apology_started", now_ms,
                                         f"{source}, {sent_ms} ms with the tone")))
    return commands


def _silence_agent(s: CallState, now_ms: float) -> list[Command]:
    """Whatever the agent was saying stops at once (the engine is gone: no truncate)."""
    if not s.playback.audible:
        return []
    item = s.playback.current()
    heard_ms = s.playback.heard_ms(now_ms)
    if item is not None and heard_ms < item.sent_ms:
        item.truncated_at_ms = heard_ms
    s.playback.clear()
    return [SendToTwilio(TwilioClear()),
            Record(TimelineStage("agent_cut", now_ms, f"heard {heard_ms} ms; engine unavailable"))]


def handle(s: CallState, event: CallEvent, now_ms: float) -> list[Command]:
    """Every event while the message is taken (phase TAKING_MESSAGE)."""
    match event:
        case TwilioMedia():
            s.stats.media_in += 1
            return _on_media(s, event.payload_b64, now_ms)
        case TwilioMark():
            return _on_mark(s, event.name, now_ms)
        case TwilioDtmf() if event.digit == END_KEY:
            return _finish_and_hang_up(s, RecordingEnd.KEY, now_ms)
        case TimerFired(timer=TimerName.MESSAGE_CAP):
            reason = RecordingEnd.MAX_LENGTH if _recording(s) else RecordingEnd.NO_TONE
            return _finish_and_hang_up(s, reason, now_ms)
        case TimerFired(timer=TimerName.MAX_DURATION):
            return _finish_and_hang_up(s, RecordingEnd.TIME_LIMIT, now_ms)
        case DrainDeadline():
            # The instance stops: what the caller said so far is kept, and they are hung up.
            return _finish_and_hang_up(s, RecordingEnd.SHUTDOWN, now_ms)
        case TimerFired(timer=TimerName.GOODBYE_CAP):
            return maybe_act(s, now_ms, force=True)
        case TwilioStop() | TwilioClosed():
            return [*_finish(s, RecordingEnd.HANG_UP, now_ms),
                    *end(s, Outcome.ENGINE_UNAVAILABLE, "call ended by Twilio", now_ms)]
        case CallControlFailed(action=ControlAction.HANG_UP) if (
                s.closing is not None and s.closing.acted):
            return control_failed(s, event, now_ms)  # ours failed: closing the stream ends it
        case CallAborted():
            return [*_finish(s, RecordingEnd.FAILURE, now_ms),
                    *end(s, Outcome.FAILED, f"call failed: {event.detail}"[:300], now_ms)]
    # The engine is gone (a late event from it, another EngineUnavailable), a tool's answer
    # has no one to go to, an AMD verdict changes nothing, a REST failure of something asked
    # before: ignored.
    return []


def _recording(s: CallState) -> bool:
    return s.message is not None and s.message.started and not s.message.finished


def _on_media(s: CallState, payload_b64: str, now_ms: float) -> list[Command]:
    if not _recording(s):
        return []  # over the apology: not the message yet
    assert s.message is not None
    ended = s.message.add(payload_b64)
    return [] if ended is None else _finish_and_hang_up(s, ended, now_ms)


def _on_mark(s: CallState, name: str, now_ms: float) -> list[Command]:
    echo = s.playback.on_mark(name, now_ms)
    if s.closing is not None:
        # Ended before the apology finished (a key, the time limit): the hang-up waits for
        # the audio queued at Twilio, no longer (not for the goodbye cap).
        return maybe_act(s, now_ms)
    message = s.message
    if (echo is None or echo.item_id != CACHED_APOLOGY_ITEM or not echo.item_finished
            or message is None or message.started or message.finished):
        return []
    message.started = True  # the tone has played: the caller speaks now
    return [*s.agent_turns(None), StartTimer(TimerName.MESSAGE_CAP, s.plan.message_max_ms),
            Record(TimelineStage("message_recording", now_ms,
                                 f"at most {s.plan.message_max_ms} ms"))]


def _finish_and_hang_up(s: CallState, reason: RecordingEnd, now_ms: float) -> list[Command]:
    if s.closing is not None:
        return []  # hanging up already
    commands = _finish(s, reason, now_ms)
    commands += start_closing(s, Closing(Outcome.ENGINE_UNAVAILABLE, "engine unavailable"),
                              now_ms)
    # Marks that never came back: the line is not waited for.
    return commands + maybe_act(s, now_ms, force=reason is RecordingEnd.NO_TONE)


def _finish(s: CallState, reason: RecordingEnd, now_ms: float) -> list[Command]:
    """End the recording: the message, if the caller said anything, with its audio."""
    message = s.message
    if message is None or message.finished:
        return []
    message.finished = True
    commands: list[Command] = [CancelTimer(TimerName.MESSAGE_CAP)]
    if not message.heard_speech:
        heard = "the apology was cut short" if not message.started else "nothing said"
        return [*commands, Record(TimelineStage("no_message", now_ms,
                                                f"{heard}; {reason.value}"))]
    s.messages_taken += 1
    plan = s.plan
    message_id = f"{plan.call_sid}-{s.messages_taken}"
    audio_file = f"{MESSAGES_DIR}/{message_id}.wav"
    frames = message.kept()
    audio_ms = message.kept_ms()
    caller = plan.from_number if plan.direction == "inbound" else plan.to_number
    lead = LeadMessage(name="", phone=caller,
                       message=f"Voice message ({audio_ms / 1000:.1f} s): the agent was "
                               "unavailable",
                       taken_ms=int(now_ms), message_id=message_id, audio_file=audio_file,
                       audio_ms=audio_ms)
    return [*commands, KeepMessageAudio(audio_file, frames), Record(lead),
            Record(TimelineStage("message_recorded", now_ms,
                                 f"{audio_ms} ms; ended by {reason.value}"))]
