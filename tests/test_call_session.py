"""The pure call core, event by event, with chosen clocks: no sockets, no sleeps."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.business import GreetingTiming
from hotline.core.amd import AnsweredBy
from hotline.core.closing import ControlAction
from hotline.core.commands import (
    AddAssistantText,
    AddFunctionOutput,
    AddUserText,
    AppendAudio,
    CancelResponse,
    CancelTimer,
    Command,
    CreateResponse,
    DeleteItem,
    EndCall,
    HangUpCall,
    Record,
    RunTool,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TransferCall,
    Truncate,
    TwilioClear,
    TwilioMarkOut,
    TwilioMediaOut,
    UpdateInstructions,
)
from hotline.core.events import (
    AmdVerdict,
    CallControlFailed,
    CallEvent,
    EngineAgentTranscript,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineClosed,
    EngineError,
    EngineFunctionCall,
    EngineInputCommitted,
    EngineLost,
    EngineResponseCreated,
    EngineResponseDone,
    EngineSessionUpdated,
    EngineSpeechStarted,
    EngineSpeechStopped,
    TimerFired,
    ToolFinished,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from hotline.core.greeting import CACHED_GREETING_HEARD_ITEM, CACHED_GREETING_ITEM, heard_part
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.playback import Playback
from hotline.core.record import LeadMessage, TimelineStage, TranscriptTurn
from hotline.core.session import CallSession
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import ToolEffect
from hotline.prompts import (
    GOODBYE_INSTRUCTIONS,
    HANDOVER_INSTRUCTIONS,
    NUDGE_INSTRUCTIONS,
    SILENCE_GOODBYE_INSTRUCTIONS,
    TIME_LIMIT_INSTRUCTIONS,
    say_exactly,
)
from tests.factories import make_plan

START = TwilioStart("MZ" + "a" * 32, "CA" + "1" * 32, "AC" + "0" * 32, {"token": "t"})


def audio_b64(ms: int) -> str:
    return base64.b64encode(bytes([0x7F]) * (ms * 8)).decode()


def engine_sent(cmds: list[Command]) -> list[object]:
    return [c.message for c in cmds if isinstance(c, SendToEngine)]


def twilio_sent(cmds: list[Command]) -> list[object]:
    return [c.message for c in cmds if isinstance(c, SendToTwilio)]


def stages(cmds: list[Command]) -> list[str]:
    return [c.item.stage for c in cmds if isinstance(c, Record)
            and isinstance(c.item, TimelineStage)]


def turns(cmds: list[Command]) -> list[TranscriptTurn]:
    return [c.item for c in cmds if isinstance(c, Record) and isinstance(c.item, TranscriptTurn)]


def marks(cmds: list[Command]) -> list[str]:
    return [m.name for m in twilio_sent(cmds) if isinstance(m, TwilioMarkOut)]


LOUD_FRAME = base64.b64encode(bytes([0x10]) * 160).decode()  # 20 ms of loud sound
QUIET_FRAME = base64.b64encode(bytes([0xFF]) * 160).decode()  # 20 ms of silence


def control_sent(cmds: list[Command]) -> list[object]:
    """What went to the engine other than the caller's audio."""
    return [m for m in engine_sent(cmds) if not isinstance(m, AppendAudio)]


class Call:
    """A session plus a log of every command, for scenario tests."""

    def __init__(self, **plan_overrides: object) -> None:
        self.session = CallSession(make_plan(**plan_overrides))
        self.log: list[Command] = []
        self.turns = 0

    def __call__(self, event: CallEvent, now_ms: float) -> list[Command]:
        cmds = self.session.handle(event, now_ms)
        self.log += cmds
        return cmds

    def speak(self, response_id: str, item_id: str, chunks_ms: list[int], at_ms: float,
              ) -> list[str]:
        self(EngineResponseCreated(response_id), at_ms)
        names: list[str] = []
        for ms in chunks_ms:
            names += marks(self(EngineAudioDelta(response_id, item_id, audio_b64(ms)), at_ms))
        return names

    def talk(self, until_ms: float, ms: int = 200, frame: str = LOUD_FRAME,
             turn: bool = True) -> list[Command]:
        """The caller makes sound for `ms`, 20 ms frames, the last one at `until_ms`; the
        engine's VAD opens a turn for it (unless one is open, or `turn` is False)."""
        cmds: list[Command] = []
        if turn and not self.session.caller_turn_open:
            self.turns += 1
            cmds += self(EngineSpeechStarted(0, f"u{self.turns}"), until_ms - ms + 20)
        for i in range(ms // 20):
            cmds += self(TwilioMedia(frame, 0), until_ms - ms + 20 * (i + 1))
        return cmds

    def quiet(self, until_ms: float, ms: int = 100) -> list[Command]:
        return self.talk(until_ms, ms, QUIET_FRAME, turn=False)


class TestGreeting:
    def test_bot_first_requests_the_greeting_at_start(self) -> None:
        call = Call()
        cmds = call(START, 1000)
        assert engine_sent(cmds) == [CreateResponse()]
        assert stages(cmds) == ["stream_start", "greeting_requested"]
        assert call.session.phase is CallPhase.GREETING

    def test_a_greeting_asked_for_by_the_engine_session_is_not_asked_again(self) -> None:
        call = Call(greeting_prerequested=True)
        cmds = call(START, 1000)
        assert engine_sent(cmds) == [] and stages(cmds) == ["stream_start"]
        assert call.session.phase is CallPhase.GREETING
        call.speak("r1", "i1", [100], 1001)  # the buffered greeting plays at once
        assert stages(call(EngineResponseDone("r1", "completed"), 1200)) == [
            "greeting_done", "prompt_upgraded"]

    def test_greeting_is_requested_once(self) -> None:
        call = Call()
        call(START, 1000)
        assert engine_sent(call(START, 1001)) == []

    def test_caller_first_waits_and_drops_pickup_noise(self) -> None:
        call = Call(bot_speaks_first=False, warmup_ms=800)
        assert engine_sent(call(START, 1000)) == []
        assert call.session.phase is CallPhase.LISTENING
        assert engine_sent(call(TwilioMedia("AAAA", 20), 1500)) == []
        payload = audio_b64(20)
        sent = engine_sent(call(TwilioMedia(payload, 820), 1800))
        assert sent == [AppendAudio(payload)]
        assert sent[0].audio_b64 is payload  # passed through, not re-encoded
        assert call.session.stats.media_dropped_warmup == 1

    def test_outbound_drops_the_pickup_hello_so_it_cannot_cut_the_greeting(self) -> None:
        call = Call(direction="outbound")
        assert engine_sent(call(START, 1000)) == [CreateResponse()]
        assert engine_sent(call(TwilioMedia("AAAA", 20), 1500)) == []
        assert engine_sent(call(TwilioMedia("AAAA", 820), 1801)) == [AppendAudio("AAAA")]

    def test_bot_first_forwards_caller_audio_at_once(self) -> None:
        call = Call()
        call(START, 1000)
        assert engine_sent(call(TwilioMedia("AAAA", 0), 1001)) == [AppendAudio("AAAA")]

    def test_engine_audio_goes_to_twilio_untouched_with_a_mark(self) -> None:
        call = Call()
        call(START, 1000)
        delta = audio_b64(100)
        cmds = call(EngineAudioDelta("r1", "i1", delta), 1300)
        sent = twilio_sent(cmds)
        assert sent[0] == TwilioMediaOut(delta) and sent[0].payload_b64 is delta
        assert isinstance(sent[1], TwilioMarkOut)
        assert stages(cmds) == ["first_audio_from_engine", "first_audio_to_caller"]
        assert stages(call(EngineAudioDelta("r1", "i1", delta), 1400)) == []


class TestMarksPerChunk:
    """20 ms deltas get a mark after the one that starts playback, then per 100 ms of
    audio, and one after an item's last audio; the truncation stays exact: extrapolated
    from the last echo, never past the next pending mark, and audio sent after Twilio's
    buffer ran dry plays from when it was sent."""

    def test_a_mark_per_100_ms_and_one_after_the_last_audio(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [20] * 12, 0)
        assert len(names) == 3  # after 20 (it starts playback), 120, 220 ms; 20 ms to go
        last = marks(call(EngineResponseDone("r1", "completed"), 10))
        assert len(last) == 1  # the item's last 20 ms
        for name in names:
            call(TwilioMark(name), 200)
        assert call.session._s.playback.audible  # the last 40 ms still play
        call(TwilioMark(last[0]), 240)
        assert not call.session._s.playback.audible

    def test_truncates_at_the_extrapolated_position_between_marks(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [20] * 15, 0)
        call(TwilioMark(names[1]), 120)  # 120 ms played at 120
        cmds = call.talk(until_ms=170)
        assert control_sent(cmds) == [Truncate("i1", 170), CancelResponse()]

    def test_never_past_an_unechoed_mark(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [20] * 15, 0)
        call(TwilioMark(names[1]), 120)
        cmds = call.talk(until_ms=900)  # the 220 ms mark never came back
        assert control_sent(cmds) == [Truncate("i1", 220), CancelResponse()]

    def test_audio_after_the_buffer_ran_dry_plays_from_when_it_was_sent(self) -> None:
        playback = Playback()
        playback.start_item("i1", "r1", 0)
        [first] = marks(playback.send("i1", audio_b64(20), 0))  # it starts playback
        for at_ms in (20, 40):  # 40 ms more, in time, no mark
            assert marks(playback.send("i1", audio_b64(20), at_ms)) == []
        assert playback.heard_ms(200) == 20  # not past the first chunk before its echo
        playback.on_mark(first, 20)
        assert playback.heard_ms(200) == 60  # all of it played
        # Late: Twilio played nothing in between; the chunk starts playback again.
        [again] = marks(playback.send("i1", audio_b64(20), 300))
        assert playback.heard_ms(310) == 70  # not 80: the new 20 ms began at 300
        playback.on_mark(again, 320)
        [last] = marks(playback.send("i1", audio_b64(40), 330))  # 20 ms ran dry at 320
        assert playback.heard_ms(350) == 100
        playback.on_mark(last, 370)  # echoed late: all 120 ms played by then
        assert playback.heard_ms(380) == 120

    def test_cached_audio_ends_with_a_mark(self) -> None:  # greeting, hold line, apology
        frames = tuple(audio_b64(20) for _ in range(7))
        session = CallSession(make_plan(greeting_prerequested=False), frames)
        cmds = session.handle(START, 0)
        assert len(marks(cmds)) == 3  # at 20 ms (it starts playback), 120, after the last 20


    def test_the_goodbye_in_20_ms_deltas_hangs_up_only_at_its_end_mark(self) -> None:
        call, names = goodbye_in_20_ms_deltas(8)
        assert len(names) == 2  # after 20 ms (it starts playback) and 120 ms; 40 ms to go
        [end] = marks(call(EngineResponseDone("r2", "completed"), 1001))
        for name in names:  # 120 of the 160 ms played: the goodbye is not over
            assert commands_of(call(TwilioMark(name), 1120), HangUpCall) == []
        assert commands_of(call(TwilioMark(end), 1160), HangUpCall) == [HangUpCall()]

    def test_marks_flushed_by_a_clear_change_nothing_and_the_next_line_starts_anew(
            self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [20] * 15, 0)  # marks at 20, 120, 220 ms
        call(TwilioMark(names[0]), 20)
        call(TwilioMark(names[1]), 120)
        cmds = call.talk(until_ms=150)
        assert TwilioClear() in twilio_sent(cmds)
        assert control_sent(cmds) == [Truncate("i1", 150), CancelResponse()]
        # Twilio returns the flushed mark at once: it is no longer pending.
        assert call(TwilioMark(names[2]), 151) == []
        call(EngineResponseDone("r1", "cancelled"), 160)
        assert not call.session._s.playback.audible
        call(EngineSpeechStopped(0, "u1"), 400)
        call(EngineInputCommitted("u1"), 400)
        later = call.speak("r2", "i2", [20] * 10, 1000)
        assert len(later) == 2  # its first chunk has a mark of its own again
        call(TwilioMark(later[0]), 1020)
        cmds = call.talk(until_ms=1090)
        assert control_sent(cmds) == [Truncate("i2", 90), CancelResponse()]

    def test_an_engine_drop_while_closing_marks_the_end_of_what_was_sent(self) -> None:
        call, names = goodbye_in_20_ms_deltas(4)
        cmds = call(EngineLost("1011"), 1010)
        [end] = marks(cmds)  # the 60 ms after the first chunk's mark, marked at the drop
        assert commands_of(cmds, HangUpCall) == []
        call(TwilioMark(names[0]), 1020)
        assert commands_of(call(TwilioMark(end), 1080), HangUpCall) == [HangUpCall()]


class TestPromptUpgrade:
    def test_full_prompt_after_the_greeting_is_done_and_only_then(self) -> None:
        call = Call()
        call(START, 1000)
        call.speak("r1", "i1", [100, 100], 1200)
        assert not any(isinstance(m, UpdateInstructions) for m in engine_sent(call.log))
        cmds = call(EngineResponseDone("r1", "completed"), 1300)
        assert engine_sent(cmds) == [UpdateInstructions(call.session.plan.full_instructions)]
        assert stages(cmds) == ["greeting_done", "prompt_upgraded"]
        assert call.session.phase is CallPhase.CONVERSING
        call.speak("r2", "i2", [100], 3000)
        assert engine_sent(call(EngineResponseDone("r2", "completed"), 3100)) == []

    def test_upgrade_also_follows_an_interrupted_greeting(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100], 10)
        call.talk(until_ms=250)
        cmds = call(EngineResponseDone("r1", "cancelled", "client_cancelled"), 260)
        assert any(isinstance(m, UpdateInstructions) for m in engine_sent(cmds))

    def test_caller_first_upgrades_after_the_first_reply(self) -> None:
        call = Call(bot_speaks_first=False)
        call(START, 0)
        call.speak("r1", "i1", [100], 2000)
        cmds = call(EngineResponseDone("r1", "completed"), 2100)
        assert stages(cmds) == ["prompt_upgraded"]


class TestBargeIn:
    """Barge-in is the gate's call: caller speech lasting `barge_in_min_speech_ms` (200) over
    the agent's audio. Server VAD's speech_started alone cuts nothing."""

    def test_clear_cancel_and_truncate_at_the_heard_position(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [100, 100, 100], 0)
        call(TwilioMark(names[0]), 100)
        call(TwilioMark(names[1]), 200)
        assert call(EngineSpeechStarted(1000, "u1"), 120) == []  # VAD alone: nothing
        cmds = call.talk(until_ms=250)
        assert twilio_sent(cmds) == [TwilioClear()]
        assert control_sent(cmds) == [Truncate("i1", 250), CancelResponse()]

    def test_a_short_burst_over_the_agent_cuts_nothing_and_gets_no_answer(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [1000], 0)
        call(EngineSpeechStarted(0, "u1"), 100)
        cmds = call.talk(until_ms=200, ms=100)  # a cough, or the agent's own echo
        cmds += call.quiet(until_ms=400)
        cmds += call(EngineInputCommitted("u1"), 900)
        assert twilio_sent(cmds) == []
        assert control_sent(cmds) == [DeleteItem("u1")]
        assert "noise_ignored" in stages(cmds)
        assert turns(call(EngineCallerTranscript("u1", "(cough)"), 950)) == []

    def test_speech_over_the_agent_is_answered_once_its_reply_is_done(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [1000], 0)
        call(EngineSpeechStarted(0, "u1"), 100)
        call.talk(until_ms=500, ms=400)
        assert control_sent(call(EngineInputCommitted("u1"), 1000)) == []  # r1 not done yet
        cmds = call(EngineResponseDone("r1", "cancelled", "client_cancelled"), 1010)
        assert CreateResponse() in engine_sent(cmds)

    def test_heard_position_never_passes_an_unechoed_mark(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [100, 100, 100], 0)
        call(TwilioMark(names[0]), 100)
        # Much later, but the second mark never came back: at most 200 ms were heard.
        cmds = call.talk(until_ms=900)
        assert control_sent(cmds) == [Truncate("i1", 200), CancelResponse()]

    def test_nothing_heard_means_clear_without_truncate(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 1)
        call(TwilioMark(names[0]), 300)  # echoed late: not played as far as we know
        call.speak("r2", "i2", [1000], 300)
        cmds = call.talk(until_ms=300)
        assert twilio_sent(cmds) == [TwilioClear()]
        assert control_sent(cmds) == [CancelResponse()]

    def test_after_all_audio_played_nothing_is_truncated(self) -> None:
        call = Call(echo_cooldown_ms=0)
        call(START, 0)
        names = call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioMark(names[0]), 100)
        cmds = call.talk(until_ms=600)
        assert twilio_sent(cmds) == [] and control_sent(cmds) == []

    def test_flushed_marks_are_not_playback(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [100, 100], 0)
        call.talk(until_ms=50)
        for name in names:  # Twilio returns every pending mark after a clear
            assert call(TwilioMark(name), 51) == []
        # Late deltas of the cancelled reply are not played.
        assert twilio_sent(call(EngineAudioDelta("r1", "i1", audio_b64(100)), 60)) == []
        assert call.session.stats.deltas_dropped == 1

    def test_second_item_is_timed_from_when_the_first_finished(self) -> None:
        call = Call()
        call(START, 0)
        first = call.speak("r1", "i1", [200], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        second = call.speak("r2", "i2", [300], 100)  # queued behind the first
        call(TwilioMark(first[0]), 200)  # first finished: second starts playing now
        cmds = call.talk(until_ms=320)
        assert control_sent(cmds) == [Truncate("i2", 120), CancelResponse()]
        assert second

    def test_echo_in_the_cooldown_is_noise_unless_it_lasts(self) -> None:
        call = Call(echo_cooldown_ms=400)
        call(START, 0)
        names = call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 20)
        call(TwilioMark(names[0]), 100)  # played out: cooldown until 500
        call(EngineSpeechStarted(0, "u1"), 150)  # the echo of the reply
        call.talk(until_ms=200, ms=80)
        call.quiet(until_ms=300)
        cmds = call(EngineInputCommitted("u1"), 700)
        assert control_sent(cmds) == [DeleteItem("u1")]
        assert call.session.stats.barge_ins_ignored_cooldown == 1

    def test_speech_when_nothing_plays_is_a_plain_turn(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioMark(names[0]), 100)
        call(EngineSpeechStarted(0, "u1"), 2000)
        call.talk(until_ms=2100, ms=100)  # a short "yes" is a turn on a quiet line
        assert engine_sent(call(EngineInputCommitted("u1"), 2600)) == [CreateResponse()]


class TestTranscriptAndEnd:
    def test_turns_are_recorded(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100, 100], 0)
        call(EngineAgentTranscript("r1", "i1", "Hi, Acme Dental"), 5)
        [agent] = turns(call(EngineResponseDone("r1", "completed"), 6))
        assert (agent.speaker, agent.text, agent.interrupted) == ("agent", "Hi, Acme Dental", False)
        assert agent.ended_ms - agent.started_ms == 200
        call(EngineSpeechStarted(0, "u1"), 1000)
        call(EngineSpeechStopped(900, "u1"), 1900)
        [caller] = turns(call(EngineCallerTranscript("u1", "I need a cleaning"), 2000))
        assert (caller.speaker, caller.text, caller.started_ms, caller.ended_ms) == (
            "caller", "I need a cleaning", 1000, 1900)

    def test_interrupted_turn_is_marked(self) -> None:
        call = Call()
        call(START, 0)
        names = call.speak("r1", "i1", [100, 100], 0)
        call(TwilioMark(names[0]), 100)
        call.talk(until_ms=150)
        call(EngineAgentTranscript("r1", "i1", "Hi, Acme"), 151)
        [agent] = turns(call(EngineResponseDone("r1", "cancelled", "client_cancelled"), 152))
        assert agent.interrupted and agent.ended_ms - agent.started_ms == 150

    def test_dtmf_reaches_the_model_and_the_transcript(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100], 1)
        call(EngineResponseDone("r1", "completed"), 2)
        cmds = call(TwilioDtmf("5"), 10)
        assert [t.text for t in turns(cmds)] == ["[pressed 5]"]
        assert engine_sent(cmds) == [AddUserText("The caller pressed the key 5."),
                                     CreateResponse()]

    def test_stop_ends_the_call_once(self) -> None:
        call = Call()
        call(START, 0)
        cmds = call(TwilioStop(), 500)
        assert [c for c in cmds if isinstance(c, EndCall)] == [EndCall(Outcome.COMPLETED)]
        assert call.session.phase is CallPhase.ENDED
        assert call(TwilioMedia("AAAA", 0), 501) == []

    def test_engine_closing_fails_the_call(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100], 0)
        cmds = call(EngineClosed(), 50)
        assert EndCall(Outcome.FAILED) in cmds
        assert [t.speaker for t in turns(cmds)] == ["agent"]  # the unfinished reply is kept

    def test_engine_configured_stage_once(self) -> None:
        call = Call()
        assert stages(call(EngineSessionUpdated(812), 5)) == ["engine_configured"]
        assert stages(call(EngineSessionUpdated(3300), 500)) == []


# -- properties over any sequence of events --------------------------------------------
_item = st.sampled_from(["i1", "i2", "i3"])
_resp = st.sampled_from(["r1", "r2", "r3"])
_events = st.one_of(
    st.builds(TwilioMedia, st.just("AAAA"), st.integers(0, 10_000)),
    st.builds(TwilioMark, st.sampled_from([f"m{i}" for i in range(1, 12)] + ["x"])),
    st.builds(EngineAudioDelta, _resp, _item, st.sampled_from([audio_b64(20), audio_b64(100)])),
    st.builds(EngineResponseCreated, _resp),
    st.builds(EngineResponseDone, _resp, st.sampled_from(["completed", "cancelled"])),
    st.builds(EngineSpeechStarted, st.integers(0, 5000), st.sampled_from(["u1", "u2"])),
    st.builds(EngineSpeechStopped, st.integers(0, 5000), st.sampled_from(["u1", "u2"])),
    st.builds(EngineAgentTranscript, _resp, _item, st.text(max_size=5)),
    st.builds(TwilioDtmf, st.sampled_from(list("0123456789*#"))),
    st.just(TwilioStart("MZ1", "CA1", "AC1", {})),
    st.builds(TwilioMedia, st.just(LOUD_FRAME), st.just(0)),
    st.builds(EngineInputCommitted, st.sampled_from(["u1", "u2"])),
    st.builds(TimerFired, st.sampled_from(list(TimerName))),
    st.builds(EngineFunctionCall, _resp, st.just("f1"), st.sampled_from(["c1", "c2"]),
              st.sampled_from(["end_call", "check_hours"]), st.just("{}")),
    st.builds(ToolFinished, st.sampled_from(["c1", "c2"]), st.just("end_call"), st.just("{}"),
              st.sampled_from(ToolEffect)),
    st.builds(AmdVerdict, st.sampled_from(AnsweredBy)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_events, st.integers(0, 50)), max_size=60), st.booleans())
def test_any_event_sequence_keeps_the_invariants(steps: list[tuple[CallEvent, int]],
                                                 bot_first: bool) -> None:
    session = CallSession(make_plan(bot_speaks_first=bot_first,  # greeting asked at start
                                    transfer_number="+15550009999",
                                    dtmf_actions=(("0", "transfer_to_human"),
                                                  ("#", "end_call"))))
    now = 0.0
    greetings = upgrades = 0
    sent_ms: dict[str, float] = {}
    asked = False  # a response.create is out and no response was created since
    acted = 0
    for event, dt in [(START, 0), *steps]:
        now += dt
        if isinstance(event, EngineResponseCreated):
            asked = False
        for cmd in session.handle(event, now):
            if isinstance(cmd, SendToEngine) and isinstance(cmd.message, CreateResponse):
                assert not asked, "a second response.create before the first was created"
                assert not acted, "a response asked for after the hang-up or transfer"
                asked = True
            if isinstance(cmd, HangUpCall | TransferCall):
                acted += 1
                assert acted == 1, "the call was hung up or transferred twice"
            if (isinstance(cmd, SendToEngine) and isinstance(cmd.message, CreateResponse)
                    and isinstance(event, TwilioStart)):
                greetings += 1
            if isinstance(cmd, SendToEngine) and isinstance(cmd.message, UpdateInstructions):
                upgrades += 1
            if isinstance(cmd, SendToTwilio) and isinstance(cmd.message, TwilioMediaOut):
                assert isinstance(event, EngineAudioDelta)
                sent_ms[event.item_id] = sent_ms.get(event.item_id, 0) + len(
                    base64.b64decode(cmd.message.payload_b64)) / 8
            if isinstance(cmd, SendToEngine) and isinstance(cmd.message, Truncate):
                # Never beyond the audio sent for that item, never before any audio.
                assert 0 < cmd.message.audio_end_ms <= sent_ms[cmd.message.item_id]
    assert greetings == (1 if bot_first else 0)
    assert upgrades <= 1 and session.prompt_upgraded == (upgrades == 1)


class TestCachedGreeting:
    FRAMES = tuple(audio_b64(100) for _ in range(5))  # 500 ms of greeting

    def test_frames_go_out_at_start_and_the_engine_is_told(self) -> None:
        call = Call(greeting_audio_key="k")
        call.session = CallSession(call.session.plan, self.FRAMES)
        cmds = call(START, 10)
        media = [m for m in twilio_sent(cmds) if isinstance(m, TwilioMediaOut)]
        assert [m.payload_b64 for m in media] == list(self.FRAMES)
        assert len(marks(cmds)) == 5
        [told] = engine_sent(cmds)
        assert told == AddAssistantText(CACHED_GREETING_ITEM, call.session.plan.greeting)
        assert stages(cmds) == ["stream_start", "greeting_requested", "first_audio_to_caller"]
        # Played out: the greeting is done, and no prompt upgrade follows any reply.
        for i, name in enumerate(marks(cmds)):
            last = call(TwilioMark(name), 110 + 100 * i)
        assert stages(last) == ["greeting_done"]
        call.speak("r1", "i1", [100], 1000)
        assert engine_sent(call(EngineResponseDone("r1", "completed"), 1100)) == []

    def test_barge_in_replaces_the_item_with_what_was_heard(self) -> None:
        call = Call(greeting_audio_key="k")
        call.session = CallSession(call.session.plan, self.FRAMES)
        names = marks(call(START, 0))
        call(TwilioMark(names[0]), 100)
        call(TwilioMark(names[1]), 200)
        cmds = call.talk(until_ms=250)  # heard 250 of 500 ms
        assert twilio_sent(cmds) == [TwilioClear()]
        greeting = call.session.plan.greeting
        assert control_sent(cmds) == [
            DeleteItem(CACHED_GREETING_ITEM),
            AddAssistantText(CACHED_GREETING_HEARD_ITEM, heard_part(greeting, 0.5), "root")]
        [turn] = turns(cmds)
        assert turn.interrupted and turn.text == heard_part(greeting, 0.5)


def test_heard_part_cuts_at_a_word() -> None:
    assert heard_part("Hello and welcome to Acme", 0.5) == "Hello and—"
    assert heard_part("Hello and welcome", 1.0) == "Hello and welcome"
    assert heard_part("Hello", 0.1) == ""


# -- call control ---------------------------------------------------------------------------
def commands_of(cmds: list[Command], kind: type) -> list[Command]:
    return [c for c in cmds if isinstance(c, kind)]


def timers_started(cmds: list[Command]) -> list[TimerName]:
    return [c.timer for c in cmds if isinstance(c, StartTimer)]


def conversing(**plan_overrides: object) -> tuple[Call, list[str]]:
    """A call whose greeting (r1) is done and whose audio is still playing."""
    call = Call(**plan_overrides)
    call(START, 0)
    names = call.speak("r1", "i1", [500], 0)
    call(EngineResponseDone("r1", "completed"), 10)
    return call, names


def goodbye_in_20_ms_deltas(count: int) -> tuple[Call, list[str]]:
    """A conversing call whose reply r2 sends `count` deltas of 20 ms at 1000 ms and calls
    end_call (answered); the marks those deltas got."""
    call, first = conversing()
    call(TwilioMark(first[0]), 500)
    call(EngineResponseCreated("r2"), 1000)
    names = [name for _ in range(count)
             for name in marks(call(EngineAudioDelta("r2", "i2", audio_b64(20)), 1000))]
    call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 1000)
    call(ToolFinished("c1", "end_call", "{}", ToolEffect.END_CALL), 1000)
    return call, names


class TestTools:
    def test_a_function_call_runs_the_tool_and_its_answer_asks_for_a_reply(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        cmds = call(EngineFunctionCall("r2", "f1", "c1", "check_hours", "{}"), 1001)
        assert commands_of(cmds, RunTool) == [RunTool("c1", "check_hours", "{}")]
        # Answered while r2 is still going: held until it is done (no second response).
        finished = ToolFinished("c1", "check_hours", '{"open_now":true}', ToolEffect.NONE)
        assert control_sent(call(finished, 1002)) == []
        cmds = call(EngineResponseDone("r2", "completed"), 1003)
        assert control_sent(cmds) == [AddFunctionOutput("c1", '{"open_now":true}'),
                                      CreateResponse()]

    def test_the_timeline_keeps_each_tool_calls_arguments_and_answer(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        called = call(EngineFunctionCall("r2", "f1", "c1", "check_hours", '{"day":"mon"}'), 1001)
        long_answer = '{"text":"' + "x" * 2000 + '"}'
        done = call(ToolFinished("c1", "check_hours", long_answer, ToolEffect.NONE), 1002)
        [called_detail] = [c.item.detail for c in commands_of(called, Record)
                           if isinstance(c.item, TimelineStage)]
        [done_detail] = [c.item.detail for c in commands_of(done, Record)
                         if isinstance(c.item, TimelineStage)]
        assert called_detail == 'check_hours {"day":"mon"}'
        assert done_detail.startswith('check_hours: ok {"text":"xxx')
        assert done_detail.endswith("x…") and len(done_detail) == len("check_hours: ok ") + 1001

    def test_a_failed_tool_still_answers_the_model_and_the_call_goes_on(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "lookup", "{}"), 1001)
        call(EngineResponseDone("r2", "completed"), 1002)
        cmds = call(ToolFinished("c1", "lookup", '{"error":"timed out"}', ToolEffect.NONE,
                                 error=True), 1500)
        assert control_sent(cmds) == [AddFunctionOutput("c1", '{"error":"timed out"}'),
                                      CreateResponse()]
        assert "tool_done" in stages(cmds) and call.session.phase is CallPhase.CONVERSING

    def test_take_message_keeps_the_message(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "take_message", "{}"), 1001)
        message = LeadMessage("Dana", "+15550001111", "Call me back", 1002)
        cmds = call(ToolFinished("c1", "take_message", '{"ok":true}', ToolEffect.NONE,
                                 message=message), 1002)
        assert Record(message) in cmds


class TestEndCallAndTransfer:
    def test_end_call_after_a_spoken_goodbye_hangs_up_once_it_has_played(self) -> None:
        call, first = conversing()
        call(TwilioMark(first[0]), 500)
        call(EngineResponseCreated("r2"), 1000)
        names = marks(call(EngineAudioDelta("r2", "i2", audio_b64(300)), 1000))
        call(EngineFunctionCall("r2", "f1", "c1", "end_call", '{"reason":"done"}'), 1001)
        cmds = call(ToolFinished("c1", "end_call", '{"ok":true}', ToolEffect.END_CALL), 1002)
        assert "closing" in stages(cmds) and commands_of(cmds, HangUpCall) == []
        cmds = call(EngineResponseDone("r2", "completed"), 1003)
        # The tool's answer goes in, but no new response: the goodbye was said.
        assert control_sent(cmds) == [AddFunctionOutput("c1", '{"ok":true}')]
        assert commands_of(cmds, HangUpCall) == []  # still playing
        cmds = call(TwilioMark(names[0]), 1300)
        assert commands_of(cmds, HangUpCall) == [HangUpCall()]
        assert "hang_up_requested" in stages(cmds)
        assert EndCall(Outcome.HUNG_UP_BY_AGENT) in call(TwilioStop(), 1400)

    def test_end_call_without_words_asks_for_the_goodbye_first(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 1001)
        call(EngineResponseDone("r2", "completed"), 1002)
        cmds = call(ToolFinished("c1", "end_call", '{"ok":true}', ToolEffect.END_CALL), 1003)
        assert control_sent(cmds) == [AddFunctionOutput("c1", '{"ok":true}'), CreateResponse()]
        assert TimerName.GOODBYE_CAP in timers_started(cmds)
        names = call.speak("r3", "i3", [200], 1100)
        assert commands_of(call(EngineResponseDone("r3", "completed"), 1101), HangUpCall) == []
        assert commands_of(call(TwilioMark(names[0]), 1400), HangUpCall) == [HangUpCall()]

    def test_the_goodbye_is_not_cut_by_the_caller(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        call.speak("r2", "i2", [1000], 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 1001)
        call(ToolFinished("c1", "end_call", "{}", ToolEffect.END_CALL), 1002)
        cmds = call.talk(until_ms=1500, ms=400)
        assert twilio_sent(cmds) == [] and engine_sent(cmds) == []  # not even forwarded

    def test_a_goodbye_that_never_plays_out_is_cut_short_by_the_cap(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 1001)
        call(ToolFinished("c1", "end_call", "{}", ToolEffect.END_CALL), 1002)
        cmds = call(TimerFired(TimerName.GOODBYE_CAP), 11_000)
        assert commands_of(cmds, HangUpCall) == [HangUpCall()]

    def test_transfer_redirects_after_the_handover_line(self) -> None:
        call, first = conversing(transfer_number="+15550009999")
        call(TwilioMark(first[0]), 500)
        call(EngineResponseCreated("r2"), 1000)
        names = marks(call(EngineAudioDelta("r2", "i2", audio_b64(200)), 1000))
        call(EngineFunctionCall("r2", "f1", "c1", "transfer_to_human", "{}"), 1001)
        call(ToolFinished("c1", "transfer_to_human", "{}", ToolEffect.TRANSFER), 1002)
        call(EngineResponseDone("r2", "completed"), 1003)
        cmds = call(TwilioMark(names[0]), 1200)
        assert commands_of(cmds, TransferCall) == [TransferCall("+15550009999")]
        assert EndCall(Outcome.TRANSFERRED) in call(TwilioStop(), 1300)

    def test_a_failed_rest_request_ends_the_call_on_our_side(self) -> None:
        call, first = conversing(transfer_number="+15550009999",
                                 dtmf_actions=(("0", "transfer_to_human"),))
        call(TwilioMark(first[0]), 500)
        call(TwilioDtmf("0"), 600)
        names = call.speak("r2", "i2", [100], 610)
        call(EngineResponseDone("r2", "completed"), 611)
        assert commands_of(call(TwilioMark(names[0]), 710), TransferCall)
        cmds = call(CallControlFailed(ControlAction.TRANSFER, "Twilio refused"), 800)
        assert EndCall(Outcome.FAILED) in cmds and "call_control_failed" in stages(cmds)


class TestDtmfActions:
    def test_a_mapped_key_transfers_without_asking_the_model(self) -> None:
        call, _ = conversing(transfer_number="+15550009999",
                             dtmf_actions=(("0", "transfer_to_human"),))
        cmds = call(TwilioDtmf("0"), 100)  # the greeting is still playing: cut it
        assert twilio_sent(cmds) == [TwilioClear()]
        assert [t.text for t in turns(cmds)] == ["[pressed 0]"]
        assert CreateResponse(HANDOVER_INSTRUCTIONS) in control_sent(cmds)
        names = call.speak("r2", "i2", [200], 200)
        call(EngineResponseDone("r2", "completed"), 201)
        assert commands_of(call(TwilioMark(names[0]), 400), TransferCall) == [
            TransferCall("+15550009999")]

    def test_an_unmapped_key_goes_to_the_model(self) -> None:
        call, _ = conversing(dtmf_actions=(("0", "transfer_to_human"),))
        assert AddUserText("The caller pressed the key 1.") in control_sent(
            call(TwilioDtmf("1"), 100))


class TestSilence:
    def idle_call(self) -> tuple[Call, list[Command]]:
        call, names = conversing(silence_nudge_ms=8000, silence_hangup_ms=20_000)
        return call, call(TwilioMark(names[0]), 500)

    def test_silence_is_timed_once_the_agent_has_finished(self) -> None:
        _, cmds = self.idle_call()
        assert timers_started(cmds) == [TimerName.SILENCE_NUDGE, TimerName.SILENCE_HANGUP]
        assert [c.delay_ms for c in commands_of(cmds, StartTimer)] == [8000, 20_000]

    def test_nudge_once_then_goodbye_and_hang_up(self) -> None:
        call, _ = self.idle_call()
        cmds = call(TimerFired(TimerName.SILENCE_NUDGE), 8500)
        assert control_sent(cmds) == [CreateResponse(NUDGE_INSTRUCTIONS)]
        names = call.speak("r2", "i2", [300], 8600)
        call(EngineResponseDone("r2", "completed"), 8601)
        cmds = call(TwilioMark(names[0]), 8900)
        assert timers_started(cmds) == []  # the nudge does not restart the count
        cmds = call(TimerFired(TimerName.SILENCE_HANGUP), 20_500)
        assert control_sent(cmds) == [CreateResponse(SILENCE_GOODBYE_INSTRUCTIONS)]
        names = call.speak("r3", "i3", [300], 20_600)
        call(EngineResponseDone("r3", "completed"), 20_601)
        assert commands_of(call(TwilioMark(names[0]), 20_900), HangUpCall) == [HangUpCall()]
        assert EndCall(Outcome.HUNG_UP_BY_AGENT) in call(TwilioStop(), 21_000)

    def test_the_caller_speaking_stops_the_count(self) -> None:
        call, _ = self.idle_call()
        cmds = call(EngineSpeechStarted(0, "u1"), 3000)
        assert [c.timer for c in commands_of(cmds, CancelTimer)] == [
            TimerName.SILENCE_NUDGE, TimerName.SILENCE_HANGUP]
        assert call(TimerFired(TimerName.SILENCE_NUDGE), 8500) == []  # a stale timer


class TestTimeLimit:
    def test_the_limit_ends_the_call_politely(self) -> None:
        call = Call(max_duration_ms=60_000)
        assert StartTimer(TimerName.MAX_DURATION, 60_000) in call(START, 0)
        call.speak("r1", "i1", [100], 10)
        call(EngineResponseDone("r1", "completed"), 20)
        cmds = call(TimerFired(TimerName.MAX_DURATION), 60_000)
        assert CreateResponse(TIME_LIMIT_INSTRUCTIONS) in control_sent(cmds)


VOICEMAIL = "Hi Dana, please call Acme Dental back."


def outbound(frames: tuple[str, ...] | None = None,
             timing: GreetingTiming = GreetingTiming.IMMEDIATE,
             greeting_frames: tuple[str, ...] | None = None, **plan: object) -> Call:
    call = Call(direction="outbound", amd=True, amd_cap_ms=1500, amd_message_cap_ms=30_000,
                voicemail=VOICEMAIL, greeting_timing=timing, **plan)
    call.session = CallSession(call.session.plan, greeting_frames, voicemail_frames=frames)
    return call


class TestAnsweringMachine:
    """`greeting_timing: after_amd`: the greeting waits for the verdict."""

    def outbound(self, frames: tuple[str, ...] | None = None) -> Call:
        return outbound(frames, GreetingTiming.AFTER_AMD)

    def test_the_greeting_waits_for_the_verdict_and_goes_for_a_human(self) -> None:
        call = self.outbound()
        cmds = call(START, 0)
        assert engine_sent(cmds) == [] and TimerName.AMD_CAP in timers_started(cmds)
        assert engine_sent(call(TwilioMedia(LOUD_FRAME, 0), 500)) == []  # held, not sent
        cmds = call(AmdVerdict(AnsweredBy.HUMAN), 900)
        assert engine_sent(cmds) == [CreateResponse()]

    def test_a_late_verdict_does_not_hold_the_greeting_past_the_cap(self) -> None:
        call = self.outbound()
        call(START, 0)
        cmds = call(TimerFired(TimerName.AMD_CAP), 1500)
        assert control_sent(cmds) == [CreateResponse()] and "amd_cap_reached" in stages(cmds)

    def test_a_machine_gets_the_voicemail_after_the_beep_then_a_hang_up(self) -> None:
        call = self.outbound()
        call(START, 0)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 9000)
        assert control_sent(cmds) == [CreateResponse(say_exactly(
            "Hi Dana, please call Acme Dental back."))]
        names = call.speak("r1", "i1", [400], 9100)
        call(EngineResponseDone("r1", "completed"), 9101)
        assert commands_of(call(TwilioMark(names[0]), 9500), HangUpCall) == [HangUpCall()]
        assert EndCall(Outcome.VOICEMAIL) in call(TwilioStop(), 9600)

    def test_a_machine_after_the_cap_cuts_the_greeting_and_plays_cached_voicemail(
            self) -> None:
        frames = (audio_b64(100), audio_b64(100))
        call = self.outbound(frames)
        call(START, 0)
        call(TimerFired(TimerName.AMD_CAP), 1500)
        call.speak("r1", "i1", [2000], 1600)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 4000)
        sent = twilio_sent(cmds)
        assert sent[0] == TwilioClear()
        assert [m.payload_b64 for m in sent if isinstance(m, TwilioMediaOut)] == list(frames)
        assert CancelResponse() in control_sent(cmds)
        names = [m.name for m in sent if isinstance(m, TwilioMarkOut)]
        call(EngineResponseDone("r1", "cancelled"), 4010)
        call(TwilioMark(names[0]), 4100)
        assert commands_of(call(TwilioMark(names[1]), 4200), HangUpCall) == [HangUpCall()]

    def test_past_the_cap_a_talking_callee_is_not_talked_over(self) -> None:
        call = self.outbound()
        call(START, 0)
        call.talk(until_ms=1500, ms=1400)  # a machine's message, still going at the cap
        assert engine_sent(call(TimerFired(TimerName.AMD_CAP), 1500)) == []
        call.talk(until_ms=2500, ms=1000)
        assert engine_sent(call.quiet(until_ms=2900, ms=400)) == []  # a pause, not the end
        cmds = call.quiet(until_ms=3100, ms=200)  # quiet for vad_silence_ms (500)
        assert control_sent(cmds) == [CreateResponse()] and "amd_cap_reached" in stages(cmds)


class TestResponseBookkeeping:
    """Regressions from review: one response at a time, the closing's own line, tools."""

    def test_a_goodbye_key_during_a_requested_reply_waits_for_its_own_line(self) -> None:
        call, first = conversing(dtmf_actions=(("#", "end_call"),))
        call(TwilioMark(first[0]), 500)
        call(EngineSpeechStarted(0, "u1"), 1000)
        call(EngineInputCommitted("u1"), 1500)  # a reply is asked for...
        call(TwilioDtmf("#"), 1510)  # ...and the caller presses the goodbye key
        # The reply asked for before is created: cancelled, it must not be the goodbye.
        cmds = call(EngineResponseCreated("r2"), 1520)
        assert control_sent(cmds) == [CancelResponse()]
        cmds = call(EngineResponseDone("r2", "cancelled"), 1530)
        assert control_sent(cmds) == [CreateResponse(GOODBYE_INSTRUCTIONS)]
        assert commands_of(cmds, HangUpCall) == []
        names = call.speak("r3", "i3", [200], 1600)
        assert commands_of(call(EngineResponseDone("r3", "completed"), 1601), HangUpCall) == []
        assert commands_of(call(TwilioMark(names[0]), 1800), HangUpCall) == [HangUpCall()]
        # Nothing is asked for after the hang-up.
        assert control_sent(call(TwilioDtmf("5"), 1900)) == []

    def test_a_refused_response_create_does_not_silence_the_call(self) -> None:
        call, first = conversing()
        call(TwilioMark(first[0]), 500)
        call(EngineSpeechStarted(0, "u1"), 1000)
        [create] = control_sent(call(EngineInputCommitted("u1"), 1500))
        assert isinstance(create, CreateResponse) and create.event_id
        cmds = call(EngineError("rate_limit_exceeded", "slow down", create.event_id), 1510)
        assert "engine_error" in stages(cmds)
        # Nothing is pending any more: the next turn is answered.
        call(EngineSpeechStarted(0, "u2"), 3000)
        assert control_sent(call(EngineInputCommitted("u2"), 3500)) == [CreateResponse()]

    def test_a_cut_also_cancels_a_newer_reply_not_heard_yet(self) -> None:
        call, _ = conversing()  # r1's audio is still playing
        call(EngineResponseCreated("r2"), 100)  # r2 started, no audio yet
        cmds = call.talk(until_ms=400)
        assert twilio_sent(cmds) == [TwilioClear()]
        assert CancelResponse() in control_sent(cmds)
        assert twilio_sent(call(EngineAudioDelta("r2", "i2", audio_b64(100)), 410)) == []

    def test_no_reply_starts_while_the_caller_is_still_talking(self) -> None:
        call, first = conversing()
        call(TwilioMark(first[0]), 500)
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "check_hours", "{}"), 1001)
        call(ToolFinished("c1", "check_hours", "{}", ToolEffect.NONE), 1002)
        call(EngineSpeechStarted(0, "u1"), 1003)  # the caller talks before r2 is done
        cmds = call(EngineResponseDone("r2", "completed"), 1010)
        assert control_sent(cmds) == [AddFunctionOutput("c1", "{}")]  # no reply yet
        assert control_sent(call(EngineInputCommitted("u1"), 1800)) == [CreateResponse()]

    def test_several_tool_calls_get_one_reply_once_all_have_answered(self) -> None:
        call, _ = conversing()
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "check_hours", "{}"), 1001)
        call(EngineFunctionCall("r2", "f2", "c2", "lookup", "{}"), 1002)
        call(EngineResponseDone("r2", "completed"), 1003)
        finished = ToolFinished("c1", "check_hours", "{}", ToolEffect.NONE)
        assert control_sent(call(finished, 1004)) == []
        cmds = call(ToolFinished("c2", "lookup", '{"x":1}', ToolEffect.NONE), 1500)
        assert control_sent(cmds) == [AddFunctionOutput("c1", "{}"),
                                      AddFunctionOutput("c2", '{"x":1}'), CreateResponse()]

    def test_a_tool_called_by_an_interrupted_reply_does_not_act(self) -> None:
        call, _ = conversing()
        call.speak("r2", "i2", [1000], 1000)
        call.talk(until_ms=1400)  # the caller cuts r2 off
        cmds = call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 1410)
        assert commands_of(cmds, RunTool) == []
        cmds = call(EngineResponseDone("r2", "cancelled"), 1420)
        [output] = control_sent(cmds)
        assert isinstance(output, AddFunctionOutput) and "interrupted" in output.output

    def test_silence_is_not_counted_while_a_tool_runs(self) -> None:
        call, first = conversing()
        call(EngineResponseCreated("r2"), 100)
        call(EngineFunctionCall("r2", "f1", "c1", "lookup", "{}"), 101)
        call(EngineResponseDone("r2", "completed"), 102)
        assert timers_started(call(TwilioMark(first[0]), 500)) == []

    def test_a_fax_is_hung_up_and_never_greeted(self) -> None:
        call = Call(direction="outbound", amd=True, amd_cap_ms=1500)
        call(START, 0)
        cmds = call(AmdVerdict(AnsweredBy.FAX), 800)
        assert commands_of(cmds, HangUpCall) == [HangUpCall()]
        assert call(TimerFired(TimerName.AMD_CAP), 1500) == []
        assert EndCall(Outcome.FAILED) in call(TwilioStop(), 2000)

    def test_a_long_last_line_is_not_cut_by_the_goodbye_cap(self) -> None:
        frames = tuple(audio_b64(1000) for _ in range(15))  # a 15 s voicemail
        call = TestAnsweringMachine().outbound(frames)
        call(START, 0)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 9000)
        caps = [c.delay_ms for c in commands_of(cmds, StartTimer)
                if c.timer is TimerName.GOODBYE_CAP]
        assert caps[-1] >= 15_000 + call.session.plan.goodbye_cap_ms


class TestCoverageFromMutations:
    """Behaviour a mutation of the core showed no test covered."""

    def test_one_reply_answers_a_burst_of_caller_turns(self) -> None:
        call, first = conversing()
        call(TwilioMark(first[0]), 500)  # the greeting has played
        call(EngineResponseCreated("r2"), 1000)  # a reply is going, nothing audible yet
        for n, at in ((1, 1100), (2, 1400), (3, 1700)):  # three short turns meanwhile
            call(EngineSpeechStarted(0, f"u{n}"), at)
            assert control_sent(call(EngineInputCommitted(f"u{n}"), at + 100)) == []
        # r2 ends: one reply for the three turns, not three.
        assert control_sent(call(EngineResponseDone("r2", "completed"), 2000)) == [
            CreateResponse()]
        call(EngineResponseCreated("r3"), 2010)
        assert control_sent(call(EngineResponseDone("r3", "completed"), 2500)) == []

    def test_the_caller_over_a_goodbye_does_not_cut_it(self) -> None:
        call, _ = conversing(dtmf_actions=(("#", "end_call"),))  # the greeting still plays
        call.talk(until_ms=300, turn=False)  # the gate hears speech over it, VAD not yet
        call(TwilioDtmf("#"), 320)  # the goodbye key: the greeting is cut for the goodbye
        call(EngineResponseCreated("r2"), 330)
        call(EngineAudioDelta("r2", "i2", audio_b64(300)), 340)
        # VAD's turn now opens over the goodbye, the gate's speech just before it: speech
        # over the agent, which would be a barge-in, but a goodbye plays in full.
        cmds = call(EngineSpeechStarted(0, "u1"), 350)
        assert twilio_sent(cmds) == [] and control_sent(cmds) == []
        assert "barge_in" not in stages(call.log)


class TestRefusedGreeting:
    """The engine refuses the greeting the warm session asked for (with the core's id)."""

    def test_the_refusal_reaches_the_core_and_the_next_turn_is_answered(self) -> None:
        from hotline.core.responses import prerequested_greeting

        call = Call(greeting_prerequested=True)
        call(START, 0)
        assert call.session.phase is CallPhase.GREETING
        event_id = prerequested_greeting().event_id
        cmds = call(EngineError("invalid_request_error", "refused", event_id), 30)
        assert "engine_error" in stages(cmds)
        assert call.session.phase is CallPhase.CONVERSING
        assert timers_started(cmds) == [TimerName.SILENCE_NUDGE, TimerName.SILENCE_HANGUP]
        # No greeting is coming: the caller's first turn gets a reply...
        call(EngineSpeechStarted(0, "u1"), 2000)
        assert control_sent(call(EngineInputCommitted("u1"), 2600)) == [CreateResponse()]
        # ...and the end of that first response still upgrades the prompt.
        call.speak("r1", "i1", [100], 2610)
        cmds = call(EngineResponseDone("r1", "completed"), 2700)
        assert UpdateInstructions(call.session.plan.full_instructions) in control_sent(cmds)

    def test_an_error_for_something_else_leaves_the_greeting_in_flight(self) -> None:
        call = Call(greeting_prerequested=True)
        call(START, 0)
        call(EngineError("invalid_request_error", "bad item", "evt_other"), 30)
        assert call.session.phase is CallPhase.GREETING
        call(EngineSpeechStarted(0, "u1"), 2000)
        # The greeting is still asked for: no second response.create while it is.
        assert control_sent(call(EngineInputCommitted("u1"), 2600)) == []


# -- responses in flight and replies per turn, over any sequence of events ----------------
_refusal = st.just(EngineError("invalid_request_error", "refused", "LAST_REQUEST"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(_events, _refusal), st.integers(0, 50)), max_size=60),
       st.booleans(), st.booleans())
def test_one_response_in_flight_and_at_most_one_reply_per_caller_turn(
        steps: list[tuple[CallEvent, int]], bot_first: bool, prerequested: bool) -> None:
    """The engine model here is coherent: a response is created only if one was asked for,
    and done only once created; refusals come for the last request."""
    session = CallSession(make_plan(bot_speaks_first=bot_first,
                                    greeting_prerequested=prerequested and bot_first,
                                    transfer_number="+15550009999",
                                    dtmf_actions=(("0", "transfer_to_human"),)))
    in_flight = 1 if prerequested and bot_first else 0  # asked for or going
    asked_ids: list[str | None] = ["hotline_greeting"] if in_flight else []
    going: str | None = None
    turns_committed = replies = 0
    now, seq = 0.0, 0
    for event, dt in [(START, 0), *steps]:
        now += dt
        # Keep the engine coherent: it creates only what was asked, finishes what it made.
        if isinstance(event, EngineResponseCreated):
            if not asked_ids or going is not None:
                continue
            seq += 1
            event = EngineResponseCreated(f"rr{seq}")
            asked_ids.pop()
            going = event.response_id
        elif isinstance(event, EngineResponseDone):
            if going is None:
                continue
            event = EngineResponseDone(going, event.status)
            going = None
            in_flight -= 1
        elif isinstance(event, EngineAudioDelta) and going is not None:
            event = EngineAudioDelta(going, event.item_id, event.delta_b64)
        elif isinstance(event, EngineInputCommitted):
            turns_committed += 1
        elif isinstance(event, EngineError):
            if not asked_ids:
                continue
            event = EngineError(event.code, event.message, asked_ids.pop())
            in_flight -= 1
        for cmd in session.handle(event, now):
            if isinstance(cmd, SendToEngine) and isinstance(cmd.message, CreateResponse):
                in_flight += 1
                asked_ids.append(cmd.message.event_id)
                if cmd.message.instructions is None and not isinstance(event, TwilioStart):
                    replies += 1
        assert in_flight <= 1, "more than one response asked for or going"
    assert replies <= turns_committed + sum(
        1 for e, _ in steps if isinstance(e, TwilioDtmf | ToolFinished))


def says_voicemail(cmds: list[Command]) -> bool:
    return CreateResponse(say_exactly(VOICEMAIL)) in control_sent(cmds)


def hang_up_after_voicemail(call: Call, at_ms: float) -> list[Command]:
    """The live voicemail is created, said and played; what the last mark echo does."""
    names = call.speak("rv", "iv", [400], at_ms)
    call(EngineResponseDone("rv", "completed"), at_ms + 1)
    return call(TwilioMark(names[-1]), at_ms + 400)


class TestAmdAlongsideTheGreeting:
    """The default: the outbound greeting starts at once; AMD's verdict runs alongside."""

    def test_the_greeting_goes_at_start_and_a_human_changes_nothing(self) -> None:
        call = outbound()
        cmds = call(START, 0)
        assert engine_sent(cmds) == [CreateResponse()]
        assert TimerName.AMD_CAP not in timers_started(cmds)
        call.speak("r1", "i1", [1000], 50)
        cmds = call(AmdVerdict(AnsweredBy.HUMAN), 1500)
        assert stages(cmds) == ["amd_verdict"] and len(cmds) == 1
        assert call.session.phase is CallPhase.GREETING

    def test_the_callees_hello_over_the_greeting_does_not_cut_it(self) -> None:
        call = outbound()
        call(START, 0)
        call.speak("r1", "i1", [1000], 50)
        cmds = call.talk(until_ms=500, ms=400)  # "Hello?" within the warmup
        assert twilio_sent(cmds) == [] and engine_sent(cmds) == []

    def test_machine_start_cuts_the_greeting_then_the_beep_gets_the_voicemail(self) -> None:
        call = outbound()
        call(START, 0)
        call.speak("r1", "i1", [2000], 50)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_START), 1050)
        assert twilio_sent(cmds) == [TwilioClear()]
        assert control_sent(cmds) == [Truncate("i1", 1000), CancelResponse()]
        assert call.session.phase is CallPhase.AWAITING_BEEP
        assert TimerName.AMD_MESSAGE_CAP in timers_started(cmds)
        call(EngineResponseDone("r1", "cancelled"), 1060)
        # The machine's message: not sent to the engine, its turns not answered.
        assert engine_sent(call.talk(until_ms=4000, ms=2000)) == []
        assert control_sent(call(EngineInputCommitted("u1"), 4100)) == []
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 6000)
        assert says_voicemail(cmds) and CancelTimer(TimerName.AMD_MESSAGE_CAP) in cmds
        assert commands_of(hang_up_after_voicemail(call, 6100), HangUpCall) == [HangUpCall()]
        assert EndCall(Outcome.VOICEMAIL) in call(TwilioStop(), 7000)

    def test_a_message_end_during_the_greeting_cuts_it_for_the_voicemail(self) -> None:
        call = outbound()
        call(START, 0)
        call.speak("r1", "i1", [3000], 50)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 2050)
        assert twilio_sent(cmds)[0] == TwilioClear()
        assert Truncate("i1", 2000) in control_sent(cmds)
        assert CancelResponse() in control_sent(cmds)
        cmds = call(EngineResponseDone("r1", "cancelled"), 2060)
        assert says_voicemail(cmds)  # once the cut greeting is done: one response at a time
        assert commands_of(hang_up_after_voicemail(call, 2100), HangUpCall) == [HangUpCall()]

    def test_a_message_end_after_the_greeting_gets_the_voicemail(self) -> None:
        call = outbound()
        call(START, 0)
        names = call.speak("r1", "i1", [1000], 50)
        call(EngineResponseDone("r1", "completed"), 60)
        call(TwilioMark(names[0]), 1050)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_SILENCE), 5000)
        assert twilio_sent(cmds) == [] and says_voicemail(cmds)
        assert commands_of(hang_up_after_voicemail(call, 5100), HangUpCall) == [HangUpCall()]

    def test_a_cached_greeting_cut_by_a_machine_keeps_only_what_was_heard(self) -> None:
        greeting = (audio_b64(1000), audio_b64(1000))
        call = outbound(greeting_frames=greeting)
        call(START, 0)
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_START), 500)
        assert twilio_sent(cmds) == [TwilioClear()]
        sent = control_sent(cmds)
        assert sent[0] == DeleteItem(CACHED_GREETING_ITEM)
        assert all(not isinstance(m, CreateResponse) for m in sent)
        assert call.session.phase is CallPhase.AWAITING_BEEP

    def test_a_greeting_asked_for_but_not_started_is_cancelled_by_a_machine(self) -> None:
        call = outbound(greeting_prerequested=True)  # the warm session asked for it
        call(START, 0)
        call(AmdVerdict(AnsweredBy.MACHINE_START), 100)
        assert control_sent(call(EngineResponseCreated("r1"), 150)) == [CancelResponse()]
        assert twilio_sent(call(EngineAudioDelta("r1", "i1", audio_b64(100)), 160)) == []

    def test_a_machine_whose_message_never_ends_is_hung_up_without_a_voicemail(self) -> None:
        call = outbound()
        call(START, 0)
        call(AmdVerdict(AnsweredBy.MACHINE_START), 100)
        cmds = call(TimerFired(TimerName.AMD_MESSAGE_CAP), 30_100)
        assert commands_of(cmds, HangUpCall) == [HangUpCall()]
        assert not says_voicemail(call.log)
        assert EndCall(Outcome.VOICEMAIL) in call(TwilioStop(), 31_000)

    def test_a_fax_during_the_greeting_is_hung_up_on(self) -> None:
        call = outbound()
        call(START, 0)
        call.speak("r1", "i1", [2000], 50)
        cmds = call(AmdVerdict(AnsweredBy.FAX), 800)
        assert twilio_sent(cmds)[0] == TwilioClear()
        assert commands_of(cmds, HangUpCall) == [HangUpCall()]
        assert EndCall(Outcome.FAILED) in call(TwilioStop(), 1000)


class TestAmdVerdictSequences:
    """Every order Twilio can send verdicts in, relative to the stream and to each other."""

    def test_a_message_end_before_the_stream_leaves_the_voicemail_at_start(self) -> None:
        call = outbound()
        assert stages(call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), -50)) == ["amd_verdict"]
        cmds = call(START, 0)
        assert says_voicemail(cmds) and CreateResponse() not in control_sent(cmds)

    def test_machine_start_before_the_stream_means_no_greeting(self) -> None:
        call = outbound()
        call(AmdVerdict(AnsweredBy.MACHINE_START), -50)
        cmds = call(START, 0)
        assert control_sent(cmds) == [] and call.session.phase is CallPhase.AWAITING_BEEP
        assert says_voicemail(call(AmdVerdict(AnsweredBy.MACHINE_END_OTHER), 4000))

    def test_a_human_before_the_stream_is_greeted_at_start(self) -> None:
        for timing in GreetingTiming:
            call = outbound(timing=timing)
            call(AmdVerdict(AnsweredBy.HUMAN), -50)
            assert engine_sent(call(START, 0)) == [CreateResponse()]

    def test_a_repeated_verdict_is_ignored(self) -> None:
        call = outbound()
        call(START, 0)
        call(AmdVerdict(AnsweredBy.HUMAN), 1500)
        assert call(AmdVerdict(AnsweredBy.HUMAN), 1600) == []
        assert call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 1700) == []  # a human stands
        machine = outbound()
        machine(START, 0)
        machine.speak("r1", "i1", [100], 50)
        machine(EngineResponseDone("r1", "completed"), 60)
        assert says_voicemail(machine(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 3000))
        assert machine(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 3100) == []

    def test_machine_start_then_its_message_end_whatever_the_greeting_mode(self) -> None:
        for timing in GreetingTiming:
            call = outbound(timing=timing)
            call(START, 0)
            call(AmdVerdict(AnsweredBy.MACHINE_START), 800)
            # A held greeting's cap passing with the machine recognised greets nobody.
            assert control_sent(call(TimerFired(TimerName.AMD_CAP), 1500)) == []
            assert call.session.phase is CallPhase.AWAITING_BEEP
            call(EngineResponseCreated("r1"), 1600)  # an immediate greeting, if one was asked
            call(EngineResponseDone("r1", "cancelled"), 1610)
            assert says_voicemail(call.log + call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP),
                                                  6000))
            assert commands_of(hang_up_after_voicemail(call, 6100), HangUpCall) == [
                HangUpCall()]

    def test_a_verdict_after_the_call_ended_does_nothing(self) -> None:
        call = outbound()
        call(START, 0)
        call(TwilioStop(), 900)
        assert call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 1500) == []


class TestAmdReviewRegressions:
    """Sequences a review found wrong once the greeting stopped waiting for the verdict."""

    def test_a_cached_voicemail_cancels_a_reply_not_heard_yet(self) -> None:
        call = outbound(frames=(audio_b64(200), audio_b64(200)))
        call(START, 0)
        call(EngineResponseCreated("r1"), 100)  # the greeting: created, no audio yet
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 150)
        assert CancelResponse() in control_sent(cmds)
        assert twilio_sent(call(EngineAudioDelta("r1", "i1", audio_b64(100)), 160)) == []

    def test_a_goodbye_to_a_machine_gives_way_to_the_voicemail(self) -> None:
        call = outbound()
        call(START, 0)
        names = call.speak("r1", "i1", [500], 10)
        call(EngineResponseDone("r1", "completed"), 20)
        call(TwilioMark(names[0]), 510)
        # The agent answered the machine's message and ended the call itself...
        call(EngineResponseCreated("r2"), 3000)
        call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 3001)
        call(EngineResponseDone("r2", "completed"), 3002)
        call(ToolFinished("c1", "end_call", "{}", ToolEffect.END_CALL), 3003)
        [goodbye] = [m for m in control_sent(call.log) if isinstance(m, CreateResponse)][-1:]
        assert goodbye == CreateResponse()  # the goodbye line, asked for by the tool's answer
        # ...when the beep verdict comes: the goodbye is dropped, the voicemail is left.
        cmds = call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 3100)
        assert "closing_replaced" in stages(cmds)
        assert control_sent(call(EngineResponseCreated("r3"), 3110)) == [CancelResponse()]
        assert says_voicemail(call(EngineResponseDone("r3", "cancelled"), 3120))
        assert commands_of(hang_up_after_voicemail(call, 3200), HangUpCall) == [HangUpCall()]
        assert EndCall(Outcome.VOICEMAIL) in call(TwilioStop(), 4000)

    def test_a_tool_answer_does_not_ask_for_a_second_closing_line(self) -> None:
        call = outbound()
        call(START, 0)
        names = call.speak("r1", "i1", [500], 10)
        call(EngineResponseDone("r1", "completed"), 20)
        call(TwilioMark(names[0]), 510)
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "check_hours", "{}"), 1001)
        call(EngineResponseDone("r2", "completed"), 1002)
        assert says_voicemail(call(AmdVerdict(AnsweredBy.MACHINE_END_BEEP), 1100))
        cmds = call(ToolFinished("c1", "check_hours", "{}", ToolEffect.NONE), 1200)
        assert not any(isinstance(m, CreateResponse) for m in control_sent(cmds))
        assert commands_of(hang_up_after_voicemail(call, 1300), HangUpCall) == [HangUpCall()]
        creates = [m for m in control_sent(call.log) if isinstance(m, CreateResponse)]
        assert len(creates) == 2  # the greeting and the voicemail, nothing after

    def test_over_a_machines_message_tools_and_limits_say_nothing(self) -> None:
        call = outbound()
        call(START, 0)
        call(EngineResponseCreated("r1"), 10)
        call(EngineFunctionCall("r1", "f1", "c1", "check_hours", "{}"), 11)
        call(EngineResponseDone("r1", "completed"), 12)
        call(AmdVerdict(AnsweredBy.MACHINE_START), 100)
        cmds = call(ToolFinished("c1", "check_hours", "{}", ToolEffect.NONE), 200)
        assert not any(isinstance(m, CreateResponse) for m in control_sent(cmds))
        cmds = call(TimerFired(TimerName.MAX_DURATION), 600_000)
        assert not any(isinstance(m, CreateResponse) for m in control_sent(cmds))
        assert commands_of(cmds, HangUpCall) == [HangUpCall()]

    def test_the_callee_hanging_up_on_a_machines_message_is_a_voicemail_outcome(self) -> None:
        call = outbound()
        call(START, 0)
        call(AmdVerdict(AnsweredBy.MACHINE_START), 100)
        assert EndCall(Outcome.VOICEMAIL) in call(TwilioStop(), 5000)
