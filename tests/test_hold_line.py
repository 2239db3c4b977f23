"""The hold line in the pure core, event by event: "One moment, please." at a drop while the
caller waits on the agent, the resumed reply queued behind it, a barge-in or the apology
cutting it, and the drops where nothing plays. No sockets, no sleeps."""

from __future__ import annotations

import base64

from hotline.canned import BUILT_IN_LANGUAGES, built_in_frames, canned_audio
from hotline.core.commands import (
    CreateResponse,
    HangUpCall,
    TwilioClear,
    TwilioMarkOut,
    TwilioMediaOut,
)
from hotline.core.events import (
    EngineAudioDelta,
    EngineInputCommitted,
    EngineLost,
    EngineResponseCreated,
    EngineResponseDone,
    EngineResumed,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineUnavailable,
    TwilioDtmf,
    TwilioMark,
)
from hotline.core.greeting import CannedAudio, CannedSource
from hotline.core.session import CallSession
from hotline.prompts import CannedLine, hold_text
from tests.factories import make_plan
from tests.test_call_session import (
    START,
    Call,
    audio_b64,
    engine_sent,
    marks,
    stages,
    turns,
    twilio_sent,
)
from tests.test_engine_down import rms
from tests.test_engine_link import greeted_and_asked

HOLD_FRAMES = (audio_b64(100), audio_b64(100), audio_b64(100))
HOLD = CannedAudio(HOLD_FRAMES, CannedSource.RENDERED)  # 300 ms
APOLOGY = CannedAudio((audio_b64(100),), CannedSource.BUILT_IN)


def media(cmds: list[object]) -> list[str]:
    return [m.payload_b64 for m in twilio_sent(cmds)  # type: ignore[arg-type]
            if isinstance(m, TwilioMediaOut)]


def stage_detail(cmds: list[object], name: str) -> str:
    from hotline.core.commands import Record
    from hotline.core.record import TimelineStage
    return next(c.item.detail for c in cmds if isinstance(c, Record)
                and isinstance(c.item, TimelineStage) and c.item.stage == name)


class TestAtTheDrop:
    def test_the_cut_reply_is_followed_at_once_by_the_hold_line(self) -> None:
        call = greeted_and_asked(HOLD)
        cmds = call(EngineLost("1011"), 2100)
        sent = twilio_sent(cmds)
        assert sent[0] == TwilioClear()
        assert media(cmds) == list(HOLD_FRAMES)  # right after the clear, each with a mark
        assert [type(m) for m in sent[1:]] == [TwilioMediaOut, TwilioMarkOut] * 3
        assert stages(cmds) == ["engine_lost", "agent_cut", "hold_line"]
        assert stage_detail(cmds, "hold_line") == "rendered, 300 ms"
        # Filler: the cut reply is the only agent turn, and the dead engine hears nothing.
        assert [t.interrupted for t in turns(cmds)] == [True]
        assert engine_sent(cmds) == []

    def test_a_reply_wanted_but_not_yet_heard_gets_the_hold_line(self) -> None:
        call = Call()
        call.session = CallSession(make_plan(), hold=HOLD)
        call(START, 0)
        names = call.speak("r1", "i1", [200], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioMark(names[0]), 200)
        call(EngineSpeechStarted(0, "u1"), 1000)
        call(EngineSpeechStopped(0, "u1"), 1500)
        asked = call(EngineInputCommitted("u1"), 1500)
        assert any(isinstance(m, CreateResponse) for m in engine_sent(asked))
        cmds = call(EngineLost("1011"), 1600)  # the reply was asked for, not yet created
        assert TwilioClear() not in twilio_sent(cmds)  # nothing to cut
        assert media(cmds) == list(HOLD_FRAMES) and "hold_line" in stages(cmds)

    def test_a_tool_at_work_for_the_caller_gets_the_hold_line(self) -> None:
        call = Call()
        call.session = CallSession(make_plan(), hold=HOLD)
        call(START, 0)
        call(TwilioDtmf("5"), 100)  # a reply is wanted
        cmds = call(EngineLost("1011"), 150)
        assert "hold_line" in stages(cmds)


class TestNothingPlays:
    def test_while_the_caller_is_talking(self) -> None:
        call = Call()
        call.session = CallSession(make_plan(), hold=HOLD)
        call(START, 0)
        names = call.speak("r1", "i1", [200], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioMark(names[0]), 200)
        call(EngineSpeechStarted(0, "u1"), 1000)
        call(EngineSpeechStopped(0, "u1"), 1500)
        call(EngineInputCommitted("u1"), 1500)
        call(EngineResponseCreated("r2"), 1550)  # the reply is going, nothing heard yet...
        call.talk(until_ms=1900)  # ...and the caller goes on talking: a new turn is open
        assert call.session.caller_turn_open
        cmds = call(EngineLost("1011"), 1900)
        assert media(cmds) == [] and "hold_line" not in stages(cmds)

    def test_when_nobody_waits_on_the_agent(self) -> None:
        call = Call()
        call.session = CallSession(make_plan(), hold=HOLD)
        call(START, 0)
        names = call.speak("r1", "i1", [200], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioMark(names[0]), 200)  # the greeting played; the caller says nothing
        cmds = call(EngineLost("1011"), 3000)
        assert twilio_sent(cmds) == [] and stages(cmds) == ["engine_lost"]

    def test_over_a_cached_greeting_that_plays_on(self) -> None:
        session = CallSession(make_plan(), greeting_frames=(audio_b64(200),), hold=HOLD)
        session.handle(START, 0)
        cmds = session.handle(EngineLost("1011"), 100)
        assert twilio_sent(cmds) == [] and stages(cmds) == ["engine_lost"]

    def test_while_closing(self) -> None:
        call = Call(dtmf_actions=(("#", "end_call"),))
        call.session = CallSession(make_plan(dtmf_actions=(("#", "end_call"),)), hold=HOLD)
        call(START, 0)
        call(TwilioDtmf("#"), 500)  # the goodbye is asked for
        cmds = call(EngineLost("1011"), 600)  # the goodbye never came: hung up without it
        assert HangUpCall() in cmds and media(cmds) == []

    def test_without_hold_audio(self) -> None:
        call = greeted_and_asked(CannedAudio((), CannedSource.BUILT_IN))
        cmds = call(EngineLost("1011"), 2100)
        assert media(cmds) == [] and "hold_line" not in stages(cmds)

    def test_twice_for_one_drop_but_again_for_the_next(self) -> None:
        call = greeted_and_asked(HOLD)
        call(EngineLost("1011"), 2100)
        assert call(EngineLost("1011"), 2150) == []  # the same drop, told twice
        resumed = call(EngineResumed(), 2400)
        assert CreateResponse() in [
            CreateResponse(m.instructions) for m in engine_sent(resumed)
            if isinstance(m, CreateResponse)]
        hold_marks = [m.name for m in twilio_sent(call.log) if isinstance(m, TwilioMarkOut)][-3:]
        for name in hold_marks:
            call(TwilioMark(name), 2400)  # the hold line has played
        call(EngineResponseCreated("r3"), 2450)
        call(EngineAudioDelta("r3", "i3", audio_b64(100)), 2450)
        again = call(EngineLost("1011"), 2500)
        assert stages(again).count("hold_line") == 1 and media(again) == list(HOLD_FRAMES)


class TestAfterIt:
    def test_the_resumed_reply_queues_behind_the_hold_line(self) -> None:
        call = greeted_and_asked(HOLD)
        lost = call(EngineLost("1011"), 2100)  # the hold line: 300 ms, playing from 2100
        hold_marks = marks(lost)
        call(EngineResumed(), 2400)
        call(EngineResponseCreated("r3"), 2450)
        reply = call(EngineAudioDelta("r3", "i3", audio_b64(500)), 2500)
        assert TwilioClear() not in twilio_sent(reply)  # after it, not over it
        assert len(media(reply)) == 1
        for name in hold_marks:
            call(TwilioMark(name), 2400)  # the hold line ends at 2400: the reply plays
        cut = call.talk(until_ms=2700)  # a barge-in 300 ms into the reply
        assert TwilioClear() in twilio_sent(cut)
        assert stage_detail(cut, "barge_in").startswith("heard 300 of 500 ms")

    def test_a_barge_in_cuts_the_hold_line(self) -> None:
        call = greeted_and_asked(HOLD)
        call(EngineLost("1011"), 2100)
        call(EngineResumed(), 2150)  # the new session's VAD hears the caller
        cmds = call.talk(until_ms=2300)
        assert TwilioClear() in twilio_sent(cmds)
        assert stage_detail(cmds, "barge_in").endswith(" of 300 ms (cached)")
        assert call.session.stats.barge_ins == 1

    def test_the_apology_cuts_the_hold_line_when_the_reconnect_fails(self) -> None:
        call = greeted_and_asked(HOLD)
        call.session._s.apology = APOLOGY
        call(EngineLost("1011"), 2100)
        cmds = call(EngineUnavailable("503 on every attempt"), 2300)
        sent = twilio_sent(cmds)
        assert sent[0] == TwilioClear()
        assert media(cmds)[0] == APOLOGY.frames[0]
        assert stages(cmds)[:3] == ["engine_unavailable", "agent_cut", "apology_started"]
        assert "hold_line" not in stages(cmds)


def test_built_in_hold_lines_ship_with_the_package() -> None:
    for language in BUILT_IN_LANGUAGES:
        frames = built_in_frames(CannedLine.HOLD, language)
        audio = b"".join(base64.b64decode(f) for f in frames)
        # short (it covers a reconnect), spoken, no long silence at its end
        assert 600 <= len(audio) / 8 <= 2000 and rms(audio) > 300, language
        assert rms(audio[-200 * 8:]) > 0, language
    assert built_in_frames(CannedLine.HOLD, "fr") == built_in_frames(CannedLine.HOLD, "en")
    assert built_in_frames(CannedLine.HOLD, "he") != built_in_frames(CannedLine.HOLD, "en")
    assert built_in_frames(CannedLine.HOLD, "en") != built_in_frames(CannedLine.APOLOGY, "en")
    assert hold_text("he") == "רק רגע, בבקשה." and hold_text("fr") == "One moment, please."
    rendered = canned_audio(CannedLine.HOLD, HOLD_FRAMES, "he")
    assert rendered == HOLD
    fallback = canned_audio(CannedLine.HOLD, None, "he")
    assert fallback.source is CannedSource.BUILT_IN
    assert fallback.frames == built_in_frames(CannedLine.HOLD, "he")
