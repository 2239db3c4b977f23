"""No engine can be had: the core's apology, the caller's message and the hang-up, event by
event with chosen clocks (no sockets, no sleeps)."""

from __future__ import annotations

import base64
import fnmatch
import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.audio.mulaw import rms
from hotline.audio.tone import TONE_FRAMES
from hotline.canned import BUILT_IN_LANGUAGES, built_in_frames, canned_audio
from hotline.core.closing import ControlAction
from hotline.core.commands import (
    Command,
    EndCall,
    HangUpCall,
    KeepMessageAudio,
    Record,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TwilioClear,
    TwilioMarkOut,
    TwilioMediaOut,
)
from hotline.core.events import (
    CallControlFailed,
    DrainDeadline,
    EngineAudioDelta,
    EngineClosed,
    EngineResponseCreated,
    EngineUnavailable,
    TimerFired,
    ToolFinished,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from hotline.core.greeting import CannedAudio, CannedSource
from hotline.core.message_recording import MessageRecording, RecordingEnd
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import LeadMessage, TimelineStage, TranscriptTurn
from hotline.core.session import CallSession
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import ToolEffect
from hotline.prompts import CannedLine, apology_text
from tests.factories import make_plan

START = TwilioStart("MZ" + "a" * 32, "CA" + "1" * 32, "AC" + "0" * 32, {"token": "t"})
APOLOGY_FRAMES = tuple(base64.b64encode(bytes([0x20 + i]) * 800).decode() for i in range(5))
APOLOGY = CannedAudio(APOLOGY_FRAMES, CannedSource.RENDERED)  # 500 ms
LOUD = base64.b64encode(bytes([0x10]) * 160).decode()  # 20 ms of loud sound
QUIET = base64.b64encode(bytes([0xFF]) * 160).decode()  # 20 ms of silence
DOWN = EngineUnavailable("connection refused")
ROOT = Path(__file__).resolve().parent.parent


def sent_media(cmds: list[Command]) -> list[str]:
    return [c.message.payload_b64 for c in cmds
            if isinstance(c, SendToTwilio) and isinstance(c.message, TwilioMediaOut)]


def sent_marks(cmds: list[Command]) -> list[str]:
    return [c.message.name for c in cmds
            if isinstance(c, SendToTwilio) and isinstance(c.message, TwilioMarkOut)]


def stages(cmds: list[Command]) -> dict[str, str]:
    return {c.item.stage: c.item.detail for c in cmds
            if isinstance(c, Record) and isinstance(c.item, TimelineStage)}


def messages(cmds: list[Command]) -> list[LeadMessage]:
    return [c.item for c in cmds if isinstance(c, Record) and isinstance(c.item, LeadMessage)]


def audio_kept(cmds: list[Command]) -> list[KeepMessageAudio]:
    return [c for c in cmds if isinstance(c, KeepMessageAudio)]


class Call:
    def __init__(self, apology: CannedAudio | None = APOLOGY, **plan: object) -> None:
        plan.setdefault("message_max_ms", 10_000)
        plan.setdefault("message_end_silence_ms", 1_000)
        self.session = CallSession(make_plan(**plan), apology=apology)
        self.log: list[Command] = []
        self.now = 0.0

    def __call__(self, event: object, now_ms: float | None = None) -> list[Command]:
        if now_ms is not None:
            self.now = now_ms
        cmds = self.session.handle(event, self.now)  # type: ignore[arg-type]
        self.log += cmds
        return cmds

    def frames(self, frame: str, ms: int) -> list[Command]:
        cmds: list[Command] = []
        for _ in range(ms // 20):
            self.now += 20
            cmds += self(TwilioMedia(frame, 0))
            if self.session.phase is CallPhase.ENDED or any(
                    isinstance(c, HangUpCall) for c in cmds):
                break
        return cmds

    def play_out(self, cmds: list[Command]) -> list[Command]:
        """Twilio echoes every mark: the apology and the tone have played."""
        out: list[Command] = []
        for name in sent_marks(cmds):
            self.now += 100
            out += self(TwilioMark(name))
        return out


def apologised(call: Call) -> list[Command]:
    call(START, 1000)
    return call(DOWN, 1010)


class TestApology:
    def test_apology_and_tone_go_out_at_once_when_the_engine_is_lost(self) -> None:
        call = Call()
        cmds = apologised(call)
        assert sent_media(cmds) == [*APOLOGY_FRAMES, *TONE_FRAMES]
        assert len(sent_marks(cmds)) == len(APOLOGY_FRAMES) + len(TONE_FRAMES)
        assert call.session.phase is CallPhase.TAKING_MESSAGE
        found = stages(cmds)
        assert found["engine_unavailable"] == "connection refused"
        assert found["apology_started"].startswith("rendered, 900 ms")
        assert not [c for c in cmds if isinstance(c, SendToEngine)]  # the engine is gone
        assert StartTimer(TimerName.MESSAGE_CAP, 900 + 10_000) in cmds

    def test_an_event_before_start_plays_the_apology_at_start(self) -> None:
        call = Call()
        early = call(DOWN, 500)
        assert sent_media(early) == [] and "engine_unavailable" in stages(early)
        cmds = call(START, 1000)
        assert sent_media(cmds)[:len(APOLOGY_FRAMES)] == list(APOLOGY_FRAMES)
        assert not [c for c in cmds if isinstance(c, SendToEngine)]  # no greeting asked for
        assert call.session.phase is CallPhase.TAKING_MESSAGE

    def test_a_caller_gone_before_start_is_engine_unavailable(self) -> None:
        call = Call()
        call(DOWN, 500)
        call(TwilioStop(), 600)
        assert call.session.outcome is Outcome.ENGINE_UNAVAILABLE

    def test_without_a_rendered_apology_the_built_in_one_plays(self) -> None:
        built_in = CannedAudio(APOLOGY_FRAMES[:2], CannedSource.BUILT_IN)
        call = Call(apology=built_in)
        cmds = apologised(call)
        assert sent_media(cmds) == [*APOLOGY_FRAMES[:2], *TONE_FRAMES]
        assert stages(cmds)["apology_started"].startswith("built-in")

    def test_agent_audio_playing_is_cleared_first(self) -> None:
        call = Call()
        call(START, 1000)
        call(EngineResponseCreated("r1"), 1010)
        call(EngineAudioDelta("r1", "i1", base64.b64encode(bytes(8000)).decode()), 1020)
        cmds = call(DOWN, 1500)
        first_media = next(i for i, c in enumerate(cmds) if isinstance(c, SendToTwilio)
                           and isinstance(c.message, TwilioMediaOut))
        clear = cmds.index(SendToTwilio(TwilioClear()))
        assert clear < first_media
        assert "agent_cut" in stages(cmds)
        # Engine events that still arrive are ignored; nothing goes to the engine.
        assert call(EngineAudioDelta("r1", "i1", LOUD), 1600) == []
        assert call(EngineClosed(), 1700) == []
        assert call.session.phase is CallPhase.TAKING_MESSAGE

    def test_the_apology_transcript_is_in_the_business_language(self) -> None:
        call = Call(language="he")
        cmds = apologised(call)
        cmds += call.play_out(cmds)
        agent = [c.item for c in cmds if isinstance(c, Record)
                 and isinstance(c.item, TranscriptTurn)]
        assert agent[-1].text == apology_text("he") != apology_text("en")


class TestMessage:
    def test_speech_then_silence_records_a_message_and_hangs_up(self) -> None:
        call = Call()
        cmds = apologised(call)
        started = call.play_out(cmds)
        assert "message_recording" in stages(started)
        assert StartTimer(TimerName.MESSAGE_CAP, 10_000) in started
        call.frames(LOUD, 2000)
        cmds = call.frames(QUIET, 5000)
        [kept] = audio_kept(cmds)
        [message] = messages(cmds)
        assert message.phone == "+15550001111" and message.name == ""
        assert message.message_id == f"{START.call_sid}-1"
        assert message.audio_file == f"messages/{START.call_sid}-1.wav" == kept.audio_file
        # 2 s of speech and up to half a second of the silence that ended it.
        assert 2000 <= message.audio_ms <= 2500  # type: ignore[operator]
        assert kept.payloads_b64[0] == LOUD and len(kept.payloads_b64) <= 125
        assert "ended by silence" in stages(cmds)["message_recorded"]
        assert HangUpCall() in cmds and "hang_up_requested" in stages(cmds)
        # Twilio ends the call: the outcome is engine_unavailable.
        end = call(TwilioStop())
        assert EndCall(Outcome.ENGINE_UNAVAILABLE) in end
        assert call.session.outcome is Outcome.ENGINE_UNAVAILABLE

    def test_silence_ends_only_after_the_configured_quiet(self) -> None:
        call = Call(message_end_silence_ms=3000)
        call.play_out(apologised(call))
        call.frames(LOUD, 400)
        assert not any(isinstance(c, HangUpCall) for c in call.frames(QUIET, 2900))
        assert HangUpCall() in call.frames(QUIET, 200)

    def test_sound_over_the_apology_is_not_the_message(self) -> None:
        call = Call()
        cmds = apologised(call)
        assert call.frames(LOUD, 1000) == []  # the tone has not played yet
        call.play_out(cmds)
        cmds = call.frames(QUIET, 2000)
        assert messages(cmds) == [] and "no_message" in stages(cmds)
        assert HangUpCall() in cmds

    def test_the_recording_is_bounded_by_its_max_length(self) -> None:
        call = Call(message_max_ms=1000, message_end_silence_ms=5000)
        call.play_out(apologised(call))
        cmds = call.frames(LOUD, 3000)
        [message] = messages(cmds)
        assert message.audio_ms == 1000
        assert len(audio_kept(cmds)[0].payloads_b64) == 50
        assert "ended by max length" in stages(cmds)["message_recorded"]
        assert HangUpCall() in cmds
        recording = call.session._s.message
        assert recording is not None and recording.ms == 1000  # nothing kept past the cap

    def test_the_hash_key_ends_the_message(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        call.frames(LOUD, 600)
        cmds = call(TwilioDtmf("#"))
        assert messages(cmds) and "ended by # key" in stages(cmds)["message_recorded"]
        assert HangUpCall() in cmds

    def test_the_hash_key_over_the_apology_hangs_up_once_its_audio_has_played(self) -> None:
        call = Call()
        apology = apologised(call)
        assert HangUpCall() not in call(TwilioDtmf("#"))  # the apology still plays
        echoes = call.play_out(apology)
        # The last mark back: hung up at once, not at the goodbye cap.
        assert echoes.count(HangUpCall()) == 1

    def test_the_drain_deadline_keeps_the_message_and_hangs_up(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        call.frames(LOUD, 600)
        cmds = call(DrainDeadline())
        assert len(messages(cmds)) == 1
        assert "ended by server shutting down" in stages(cmds)["message_recorded"]
        assert HangUpCall() in cmds

    def test_other_keys_do_not(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        assert call(TwilioDtmf("1")) == []

    def test_the_caller_hanging_up_keeps_what_they_said(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        call.frames(LOUD, 800)
        cmds = call(TwilioStop())
        [message] = messages(cmds)
        assert 800 <= message.audio_ms <= 820  # type: ignore[operator]
        assert "ended by caller hung up" in stages(cmds)["message_recorded"]
        assert EndCall(Outcome.ENGINE_UNAVAILABLE) in cmds
        assert not any(isinstance(c, HangUpCall) for c in cmds)

    def test_the_cap_timer_ends_a_recording_whose_media_stopped(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        call.frames(LOUD, 400)
        cmds = call(TimerFired(TimerName.MESSAGE_CAP))
        assert messages(cmds) and HangUpCall() in cmds

    def test_marks_that_never_come_back_still_end_the_call(self) -> None:
        call = Call()
        apologised(call)
        cmds = call(TimerFired(TimerName.MESSAGE_CAP), 20_000)
        assert "apology never finished" in stages(cmds)["no_message"]
        assert HangUpCall() in cmds

    def test_the_call_time_limit_ends_the_message(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        call.frames(LOUD, 400)
        cmds = call(TimerFired(TimerName.MAX_DURATION))
        assert "ended by call time limit" in stages(cmds)["message_recorded"]

    def test_a_failed_hang_up_closes_the_stream_with_the_outcome(self) -> None:
        call = Call()
        call.play_out(apologised(call))
        call.frames(LOUD, 400)
        call(TwilioDtmf("#"))
        assert call(CallControlFailed(ControlAction.TRANSFER, "HTTP 500")) == []  # not ours
        cmds = call(CallControlFailed(ControlAction.HANG_UP, "HTTP 500"))
        assert EndCall(Outcome.ENGINE_UNAVAILABLE) in cmds

    def test_a_message_taken_by_the_agent_first_numbers_the_voice_message_second(self) -> None:
        call = Call()
        call(START, 1000)
        call(ToolFinished("c1", "take_message", '{"ok": true}', ToolEffect.NONE,
                          message=LeadMessage("Dana", "+1555", "call back", 1100)), 1100)
        call.play_out(call(DOWN, 1200))
        call.frames(LOUD, 400)
        [message] = messages(call(TwilioDtmf("#")))
        assert message.message_id == f"{START.call_sid}-2"

    def test_a_second_unavailable_event_changes_nothing(self) -> None:
        call = Call()
        apologised(call)
        assert call(DOWN, 2000) == []

    def test_engine_lost_while_hanging_up_does_not_apologise(self) -> None:
        call = Call()
        call(START, 1000)
        call(TimerFired(TimerName.MAX_DURATION), 2000)  # a goodbye is asked of the engine
        cmds = call(DOWN, 2100)
        # The goodbye will never come: apologise and take the message instead.
        assert sent_media(cmds) and call.session.phase is CallPhase.TAKING_MESSAGE


def test_recording_trims_the_silence_that_ended_it() -> None:
    recording = MessageRecording(10_000, 1000, 200, 0.5)
    for _ in range(50):
        assert recording.add(LOUD) is None
    ends = [recording.add(QUIET) for _ in range(50)]
    assert ends[-1] is RecordingEnd.SILENCE and ends[:-1] == [None] * 49
    assert recording.heard_speech and recording.kept_ms() == 1000 + 500


def test_a_short_sound_is_not_speech() -> None:
    recording = MessageRecording(10_000, 1000, 200, 0.5)
    recording.add(LOUD)
    recording.add(LOUD)
    for _ in range(5):
        recording.add(QUIET)
    assert not recording.heard_speech


def test_the_tone_is_a_loud_beep() -> None:
    audio = b"".join(base64.b64decode(f) for f in TONE_FRAMES)
    assert len(audio) == 400 * 8 and rms(audio) > 3000


def test_built_in_apologies_ship_with_the_package() -> None:
    for language in BUILT_IN_LANGUAGES:
        frames = built_in_frames(CannedLine.APOLOGY, language)
        audio = b"".join(base64.b64decode(f) for f in frames)
        assert 3000 <= len(audio) / 8 <= 10_000 and rms(audio) > 1000, language
    english = built_in_frames(CannedLine.APOLOGY, "en")
    assert built_in_frames(CannedLine.APOLOGY, "fr") == english  # no French one: English
    assert built_in_frames(CannedLine.APOLOGY, "he") != english
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["hotline"]
    for path in (ROOT / "src" / "hotline" / "data").iterdir():
        assert any(fnmatch.fnmatch(f"data/{path.name}", g) for g in globs), path.name


def test_the_rendered_apology_is_preferred_to_the_built_in_one() -> None:
    assert canned_audio(CannedLine.APOLOGY, APOLOGY_FRAMES, "he") == APOLOGY
    fallback = canned_audio(CannedLine.APOLOGY, None, "he")
    assert fallback.source is CannedSource.BUILT_IN
    assert fallback.frames == built_in_frames(CannedLine.APOLOGY, "he")


_any_event = st.one_of(
    st.builds(TwilioMedia, st.sampled_from([LOUD, QUIET, "AAAA", "not base64"]),
              st.just(0)),
    st.builds(TwilioMark, st.sampled_from([f"m{i}" for i in range(1, 16)] + ["x"])),
    st.builds(EngineAudioDelta, st.just("r1"), st.just("i1"), st.just(LOUD)),
    st.builds(EngineResponseCreated, st.just("r1")),
    st.builds(TwilioDtmf, st.sampled_from(list("0123456789*#"))),
    st.just(START),
    st.just(DOWN),
    st.just(EngineClosed()),
    st.just(TwilioStop()),
    st.builds(TimerFired, st.sampled_from(list(TimerName))),
    st.builds(CallControlFailed, st.sampled_from(ControlAction), st.just("HTTP 500")),
    st.builds(ToolFinished, st.just("c1"), st.just("end_call"), st.just("{}"),
              st.sampled_from(ToolEffect)),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(_any_event, st.integers(0, 200)), max_size=80))
def test_once_the_engine_is_down_nothing_goes_to_it_and_everything_stays_bounded(
        steps: list[tuple[object, int]]) -> None:
    session = CallSession(make_plan(message_max_ms=1000, message_end_silence_ms=400),
                          apology=APOLOGY)
    now = 0.0
    down = ended = took_message = False
    messages_taken = 0
    for event, dt in steps:
        now += dt
        down = down or isinstance(event, EngineUnavailable)
        for cmd in session.handle(event, now):  # type: ignore[arg-type]
            assert not ended, f"{cmd} after the end"
            if down and session.phase in (CallPhase.TAKING_MESSAGE, CallPhase.ENDED):
                assert not isinstance(cmd, SendToEngine), cmd
            if isinstance(cmd, KeepMessageAudio):
                assert sum(len(base64.b64decode(p)) for p in cmd.payloads_b64) <= 1000 * 8
                messages_taken += 1
            if isinstance(cmd, EndCall):
                ended = True
        took_message = took_message or session.phase is CallPhase.TAKING_MESSAGE
    assert messages_taken <= 1
    if took_message and session.phase is CallPhase.ENDED:
        assert session.outcome is Outcome.ENGINE_UNAVAILABLE
