"""The engine link in the pure core, event by event: a drop mid-call, the resume with the
conversation replayed, and a flood of engine errors. No sockets, no sleeps."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.core.caller_audio import LEAD_MS, MAX_KEPT_MS
from hotline.core.commands import (
    AddAssistantText,
    AddFunctionCall,
    AddFunctionOutput,
    AddUserText,
    AppendAudio,
    CreateResponse,
    EndCall,
    HangUpCall,
    Record,
    SendToEngine,
    StartTimer,
    TransferCall,
    Truncate,
    TwilioClear,
)
from hotline.core.conversation import REPLAY_ITEM_PREFIX, Conversation
from hotline.core.engine_link import MAX_ERRORS_ON_TIMELINE, RESUME_TURN_WAIT_MS
from hotline.core.events import (
    EngineAgentTranscript,
    EngineAgentTranscriptDelta,
    EngineAudioDelta,
    EngineCallerTranscript,
    EngineError,
    EngineFunctionCall,
    EngineInputCommitted,
    EngineLost,
    EngineResponseCreated,
    EngineResponseDone,
    EngineResumed,
    EngineSpeechStarted,
    EngineSpeechStopped,
    EngineUnavailable,
    TimerFired,
    ToolFinished,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStop,
)
from hotline.core.greeting import CACHED_GREETING_ITEM, CannedAudio, CannedSource, heard_part
from hotline.core.outcomes import Outcome
from hotline.core.phase import CallPhase
from hotline.core.record import TimelineStage
from hotline.core.session import CallSession
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import ToolEffect
from hotline.prompts import NUDGE_INSTRUCTIONS, say_exactly
from tests.factories import make_plan
from tests.test_call_session import (
    LOUD_FRAME,
    START,
    Call,
    _events,
    audio_b64,
    control_sent,
    engine_sent,
    stages,
    turns,
    twilio_sent,
)

GREETING_TEXT = "Hi, Acme Dental, how can I help?"
REPLY_TEXT = "Sure, we open at nine tomorrow morning."


def greet_and_hear_a_question(call: Call) -> None:
    """The greeting (r1, item i1, 500 ms) has played; the caller asked (u1) and their
    words are transcribed, at 1600 ms."""
    call(START, 0)
    names = call.speak("r1", "i1", [500], 0)
    call(EngineAgentTranscript("r1", "i1", GREETING_TEXT), 10)
    call(EngineResponseDone("r1", "completed"), 20)
    call(TwilioMark(names[0]), 500)
    call(EngineSpeechStarted(0, "u1"), 1000)
    call(EngineSpeechStopped(0, "u1"), 1500)
    call(EngineInputCommitted("u1"), 1500)
    call(EngineCallerTranscript("u1", "When do you open?"), 1600)


def greeted_and_asked(hold: CannedAudio | None = None) -> Call:
    """The greeting (r1) has played; the caller asked something (u1); the reply (r2, item
    i2) is being said: 300 ms sent, 100 ms heard (the first mark echoed at 2100). `hold`:
    the hold line the session has for a drop."""
    call = Call()
    if hold is not None:
        call.session = CallSession(make_plan(), hold=hold)
    greet_and_hear_a_question(call)
    names = call.speak("r2", "i2", [100, 100, 100], 2000)
    call(EngineAgentTranscriptDelta("i2", REPLY_TEXT[:20]), 2000)
    call(EngineAgentTranscriptDelta("i2", REPLY_TEXT[20:]), 2000)
    call(TwilioMark(names[0]), 2100)
    return call


class TestEngineLost:
    def test_the_line_being_said_is_cut_at_twilio_and_the_dead_engine_is_told_nothing(
            self) -> None:
        call = greeted_and_asked()
        cmds = call(EngineLost("1011 internal error"), 2100)
        assert twilio_sent(cmds) == [TwilioClear()]
        assert engine_sent(cmds) == []  # no truncate, no cancel: that engine is gone
        assert stages(cmds) == ["engine_lost", "agent_cut"]
        [agent] = turns(cmds)
        assert agent.interrupted and agent.text == REPLY_TEXT
        assert agent.ended_ms - agent.started_ms == 100
        assert call.session.stats.engine_drops == 1
        assert call.session.phase is CallPhase.CONVERSING

    def test_no_response_is_asked_for_until_the_engine_is_back(self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        cmds = call(TwilioDtmf("5"), 2200)  # wants a reply: held
        assert engine_sent(cmds) == [AddUserText("The caller pressed the key 5.")]
        frames = call.talk(until_ms=2400, turn=False)  # the caller's audio still flows
        assert [m for m in engine_sent(frames) if not isinstance(m, AppendAudio)] == []
        assert len(engine_sent(frames)) == 10

    def test_a_drop_before_the_goodbye_was_made_hangs_up_without_it(self) -> None:
        call = Call(dtmf_actions=(("#", "end_call"),))
        call(START, 0)
        call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioDtmf("#"), 500)
        cmds = call(EngineLost("1011"), 600)
        assert HangUpCall() in cmds and not any(isinstance(c, EndCall) for c in cmds)
        assert stages(cmds) == ["engine_lost", "hang_up_requested"]
        assert engine_sent(cmds) == []
        assert call.session.phase is not CallPhase.ENDED  # Twilio's stop ends it
        call(TwilioStop(), 700)
        assert call.session.outcome is Outcome.HUNG_UP_BY_AGENT

    def test_a_drop_while_the_handover_line_plays_lets_it_play_out_then_transfers(
            self) -> None:
        call = Call(dtmf_actions=(("0", "transfer_to_human"),), transfer_number="+15550001")
        call(START, 0)
        call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioDtmf("0"), 500)
        names = call.speak("r2", "i2", [200, 200], 600)  # the handover line, unfinished
        cmds = call(EngineLost("1011"), 650)
        assert twilio_sent(cmds) == [] and stages(cmds) == ["engine_lost"]  # not cut
        assert call.session.phase is not CallPhase.ENDED
        assert call(TwilioMark(names[0]), 800) == []
        # (A reconnect that failed meanwhile starts no apology over the closing call.)
        cmds = call(EngineUnavailable("503"), 700)
        assert stages(cmds) == ["engine_unavailable"] and twilio_sent(cmds) == []
        cmds = call(TwilioMark(names[1]), 1000)  # what was sent of it has played
        assert TransferCall("+15550001") in cmds
        call(TwilioStop(), 1100)
        assert call.session.outcome is Outcome.TRANSFERRED

    def test_a_cached_greeting_plays_on_through_a_drop_and_the_new_session_knows_it(
            self) -> None:
        session = CallSession(make_plan(), greeting_frames=(audio_b64(200), audio_b64(200)))
        session.handle(START, 0)
        cmds = session.handle(EngineLost("1011"), 100)
        assert twilio_sent(cmds) == [] and stages(cmds) == ["engine_lost"]
        replayed = engine_sent(session.handle(EngineResumed(), 300))
        assert replayed == [AddAssistantText(CACHED_GREETING_ITEM, session.plan.greeting)]


class TestEngineResumed:
    def test_the_conversation_is_replayed_in_order_then_the_cut_reply_is_asked_again(
            self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        cmds = call(EngineResumed(), 2500)
        heard = heard_part(REPLY_TEXT, 100 / 300)
        assert heard  # some words of the reply were heard
        assert engine_sent(cmds) == [
            AddAssistantText(f"{REPLAY_ITEM_PREFIX}0", GREETING_TEXT),
            AddUserText("When do you open?"),
            AddAssistantText(f"{REPLAY_ITEM_PREFIX}2", heard),
            CreateResponse(),
        ]
        [stage] = [c.item for c in cmds if hasattr(c, "item") and
                   getattr(c.item, "stage", "") == "engine_resumed"]
        assert stage.detail == "gap 400 ms, 3 items replayed"
        assert call.session.stats.engine_resumes == 1

    def test_what_was_sent_live_while_lost_is_not_replayed_again(self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        call(TwilioDtmf("5"), 2200)
        replayed = engine_sent(call(EngineResumed(), 2500))
        assert AddUserText("The caller pressed the key 5.") not in replayed
        assert replayed[-1] == CreateResponse()
        assert sum(isinstance(m, CreateResponse) for m in replayed) == 1

    def test_a_request_lost_with_the_engine_is_asked_again(self) -> None:
        call = Call()
        assert engine_sent(call(START, 0)) == [CreateResponse()]  # the live greeting
        call(EngineLost("1011"), 50)
        assert engine_sent(call(EngineResumed(), 400)) == [
            CreateResponse(say_exactly(call.session.plan.greeting))]  # see TestInstructionsKept

    def test_an_open_caller_turn_of_the_dead_engine_does_not_hold_the_reply(self) -> None:
        call = greeted_and_asked()
        call(EngineSpeechStarted(0, "u9"), 2050)  # never committed: that engine is gone
        call(EngineLost("1011"), 2100)
        assert engine_sent(call(EngineResumed(), 2500))[-1] == CreateResponse()

    def test_tool_calls_and_their_answers_are_replayed(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "check_hours", '{"day":"mon"}'), 1001)
        call(EngineResponseDone("r2", "completed"), 1002)
        call(ToolFinished("c1", "check_hours", '{"open":true}', ToolEffect.NONE), 1003)
        call(EngineLost("1011"), 1100)
        replayed = engine_sent(call(EngineResumed(), 1500))
        assert AddFunctionCall("c1", "check_hours", '{"day":"mon"}') in replayed
        assert replayed.index(AddFunctionCall("c1", "check_hours", '{"day":"mon"}')) < (
            replayed.index(AddFunctionOutput("c1", '{"open":true}')))

    def test_a_tool_answer_arriving_while_lost_goes_after_the_replay(self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "check_hours", "{}"), 1001)
        call(EngineLost("1011"), 1100)  # r2 never finishes
        cmds = call(ToolFinished("c1", "check_hours", '{"open":true}', ToolEffect.NONE), 1200)
        assert control_sent(cmds) == [AddFunctionOutput("c1", '{"open":true}')]  # held by
        # the runner with the caller's audio until the new session is there
        replayed = engine_sent(call(EngineResumed(), 1500))
        assert replayed == [AddFunctionCall("c1", "check_hours", "{}"), CreateResponse()]

    def test_a_tool_that_ends_the_call_still_does_when_the_engine_drops_before_done(
            self) -> None:
        call = Call()
        call(START, 0)
        call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(EngineResponseCreated("r2"), 1000)
        call(EngineFunctionCall("r2", "f1", "c1", "end_call", "{}"), 1001)
        call(EngineLost("1011"), 1100)  # r2 never finishes
        cmds = call(ToolFinished("c1", "end_call", '{"ok":true}', ToolEffect.END_CALL), 1200)
        assert "closing" in stages(cmds)  # the decision holds: the call is closing
        # The new session says the goodbye (none was heard), then the call is hung up.
        resumed = engine_sent(call(EngineResumed(), 1500))
        assert any(isinstance(c, CreateResponse) for c in resumed)
        names = call.speak("r3", "i3", [100], 1600)
        call(EngineResponseDone("r3", "completed"), 1700)
        cmds = call(TwilioMark(names[-1]), 1800)  # the goodbye has played
        assert HangUpCall() in cmds

    def test_if_the_caller_spoke_meanwhile_their_turn_is_answered_not_the_cut_line(
            self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        call.talk(until_ms=2700, ms=400, turn=False)  # their words wait with the audio
        cmds = call(EngineResumed(), 2800)
        assert not any(isinstance(m, CreateResponse) for m in engine_sent(cmds))
        [resumed] = [c.item for c in cmds if isinstance(c, Record)
                     and isinstance(c.item, TimelineStage) and c.item.stage == "engine_resumed"]
        assert "the caller spoke meanwhile" in resumed.detail
        # The new session's VAD finds the turn in the audio that waited: it is answered.
        call(EngineSpeechStarted(0, "n1"), 2810)
        call(EngineSpeechStopped(0, "n1"), 2820)
        assert engine_sent(call(EngineInputCommitted("n1"), 2830)) == [CreateResponse()]

    def test_a_resume_without_a_loss_does_nothing(self) -> None:
        call = greeted_and_asked()
        assert call(EngineResumed(), 3000) == []


class TestEngineErrors:
    def test_a_flood_of_errors_is_counted_not_kept(self) -> None:
        call = greeted_and_asked()
        recorded: list[str] = []
        for n in range(5000):
            recorded += stages(call(EngineError("server_error", f"oops {n}"), 3000 + n))
        assert recorded == ["engine_error"] * MAX_ERRORS_ON_TIMELINE + ["engine_errors_counted"]
        assert call.session.stats.engine_errors == 5000
        assert call.session.phase is CallPhase.CONVERSING
        # the call goes on: the caller's audio still reaches the engine
        assert engine_sent(call(TwilioMedia(audio_b64(20), 0), 9000)) == [
            AppendAudio(audio_b64(20))]


class TestConversation:
    def test_it_keeps_the_most_recent_entries_within_its_bounds(self) -> None:
        conversation = Conversation(max_entries=3, max_chars=1000)
        for n in range(10):
            conversation.caller(f"turn {n}")
        assert conversation.replay() == [AddUserText("turn 7"), AddUserText("turn 8"),
                                         AddUserText("turn 9")]
        assert conversation.forgotten == 7

    def test_it_is_bounded_by_text_too(self) -> None:
        conversation = Conversation(max_entries=100, max_chars=25)
        for n in range(10):
            conversation.agent(f"line number {n}")  # 13 chars each
        assert len(conversation) == 1

    def test_replay_stops_where_asked_and_skips_empty_words(self) -> None:
        conversation = Conversation()
        conversation.caller("hello")
        conversation.agent("")  # nothing heard: nothing said
        mark = conversation.next_seq
        conversation.caller("later")
        assert conversation.replay(before=mark) == [AddUserText("hello")]

    def test_an_answer_whose_call_was_forgotten_is_not_replayed(self) -> None:
        conversation = Conversation(max_entries=2)
        conversation.tool_call("c1", "f", "{}")
        conversation.caller("x")
        conversation.tool_output("c1", "{}")
        assert conversation.replay() == [AddUserText("x")]


def test_the_codec_speaks_the_new_items_and_deltas() -> None:
    import orjson

    from hotline.engine.realtime_codec import parse_engine, render_engine

    item = orjson.loads(render_engine(AddFunctionCall("c1", "check_hours", "{}")))
    assert item == {"type": "conversation.item.create",
                    "item": {"type": "function_call", "call_id": "c1", "name": "check_hours",
                             "arguments": "{}"}}
    delta = parse_engine(orjson.dumps({
        "type": "response.output_audio_transcript.delta", "response_id": "r1",
        "item_id": "i1", "output_index": 0, "content_index": 0, "delta": "Hi"}))
    assert delta == EngineAgentTranscriptDelta("i1", "Hi")


# -- properties: any event sequence with drops and resumes ---------------------------------
_link_events = st.one_of(
    _events, st.builds(EngineLost, st.just("close code 1011")), st.just(EngineResumed()),
    st.builds(EngineAgentTranscriptDelta, st.sampled_from(["i1", "i2"]), st.text(max_size=8)),
    st.builds(EngineCallerTranscript, st.sampled_from(["u1", "u2"]), st.text(max_size=8)))

# What may go to the engine while it is lost: the caller's audio and what joins the
# conversation (held by the runner for the new session); never a request, truncate or cancel.
_WHILE_LOST = (AppendAudio, AddUserText, AddFunctionOutput)
_FROM_THE_ENGINE_SOCKET = (
    EngineAudioDelta, EngineResponseCreated, EngineResponseDone, EngineSpeechStarted,
    EngineSpeechStopped, EngineAgentTranscript, EngineAgentTranscriptDelta,
    EngineCallerTranscript, EngineInputCommitted, EngineFunctionCall, EngineError)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_link_events, st.integers(0, 50)), max_size=60))
def test_drops_and_resumes_keep_the_invariants(steps: list[tuple[object, int]]) -> None:
    session = CallSession(make_plan(), hold=CannedAudio((audio_b64(100),) * 3,
                                                        CannedSource.RENDERED))
    now, lost, asked, ended, holds = 0.0, False, False, False, 0
    for event, dt in [(START, 0), *steps]:
        now += dt
        if lost and isinstance(event, _FROM_THE_ENGINE_SOCKET):
            continue  # the lost socket says nothing more; the runner reads none meanwhile
        if isinstance(event, EngineResponseCreated):
            asked = False
        cmds = session.handle(event, now)  # type: ignore[arg-type]
        if ended:
            assert cmds == []
        hold_lines = stages(cmds).count("hold_line")
        assert hold_lines == 0 or isinstance(event, EngineLost)  # only at a drop, once
        holds += hold_lines
        if isinstance(event, EngineLost) and session.phase is not CallPhase.ENDED:
            lost, asked = True, False  # what was asked of the dead engine never comes
        for cmd in cmds:
            if not isinstance(cmd, SendToEngine):
                continue
            message = cmd.message
            if lost and not isinstance(event, EngineResumed):
                assert isinstance(message, _WHILE_LOST), message
            if isinstance(message, CreateResponse):
                assert not asked, "a second response.create before the first was created"
                asked = True
        if isinstance(event, EngineResumed):
            lost = False
        ended = ended or session.phase is CallPhase.ENDED
    assert session.stats.engine_resumes <= session.stats.engine_drops
    assert holds <= session.stats.engine_drops


# -- the reviewer's defects (each test failed before its fix) ------------------------------
def spoken_reply_finished() -> tuple[Call, list[str]]:
    """As `greeted_and_asked`, but the engine has finished the reply (r2, 300 ms): its audio
    is still queued at Twilio (100 ms of it heard). The marks of r2."""
    call = Call()
    greet_and_hear_a_question(call)
    names = call.speak("r2", "i2", [100, 100, 100], 2000)
    call(EngineAgentTranscript("r2", "i2", REPLY_TEXT), 2000)
    call(EngineResponseDone("r2", "completed"), 2001)
    call(TwilioMark(names[0]), 2100)
    return call, names


class TestFinishedReplyPlaysOut:
    def test_a_finished_reply_is_not_cut_nor_asked_again(self) -> None:
        call, names = spoken_reply_finished()
        cmds = call(EngineLost("1011"), 2150)
        assert twilio_sent(cmds) == [] and "agent_cut" not in stages(cmds)
        assert stages(cmds) == ["engine_lost"]  # no hold line: the caller hears the agent
        assert call(TwilioMark(names[1]), 2200) == []
        call(TwilioMark(names[2]), 2300)  # it played out in full
        resumed = engine_sent(call(EngineResumed(), 2400))
        assert AddAssistantText(f"{REPLAY_ITEM_PREFIX}2", REPLY_TEXT) in resumed
        assert not any(isinstance(m, CreateResponse) for m in resumed)

    def test_a_barge_in_over_it_while_lost_tells_the_dead_engine_nothing(self) -> None:
        call, _ = spoken_reply_finished()
        call(EngineLost("1011"), 2150)
        cmds = call.talk(until_ms=2300, ms=140, turn=False)
        cmds += call(EngineResumed(), 2310)
        call(EngineSpeechStarted(0, "n1"), 2320)  # the new session's VAD: a barge-in
        cmds += call.talk(until_ms=2400, ms=80, turn=False)
        assert TwilioClear() in twilio_sent(cmds)
        assert not any(isinstance(m, Truncate) for m in engine_sent(cmds))  # not its item

    def test_the_line_still_being_made_is_cut_while_a_finished_one_is_kept(self) -> None:
        call = greeted_and_asked()  # r2 still going
        cmds = call(EngineLost("1011"), 2100)
        assert TwilioClear() in twilio_sent(cmds)


class TestInstructionsKept:
    def test_a_nudge_lost_with_the_engine_is_asked_again_as_a_nudge(self) -> None:
        call = Call(silence_nudge_ms=8000, silence_hangup_ms=20_000)
        call(START, 0)
        names = call.speak("r1", "i1", [100], 0)
        call(EngineResponseDone("r1", "completed"), 10)
        call(TwilioMark(names[0]), 100)
        assert control_sent(call(TimerFired(TimerName.SILENCE_NUDGE), 8100)) == [
            CreateResponse(NUDGE_INSTRUCTIONS)]
        call(EngineResponseCreated("r2"), 8150)  # created, no audio yet
        call(EngineLost("1011"), 8200)
        assert control_sent(call(EngineResumed(), 8500)) == [
            CreateResponse(NUDGE_INSTRUCTIONS)]

    def test_a_live_greeting_lost_before_it_was_heard_is_said_as_the_greeting(self) -> None:
        call = Call()
        call(START, 0)
        call(EngineLost("1011"), 50)
        [create] = control_sent(call(EngineResumed(), 400))
        assert create == CreateResponse(say_exactly(call.session.plan.greeting))


def caller_mid_sentence() -> tuple[Call, list[str]]:
    """After the greeting, the caller talks from 1000 ms; the engine's VAD opened turn u1
    at 1300 ms; the frames the phone sent since 1000 ms (the last at 2000 ms)."""
    call = Call()
    call(START, 0)
    names = call.speak("r1", "i1", [100], 0)
    call(EngineResponseDone("r1", "completed"), 10)
    call(TwilioMark(names[0]), 100)
    call.quiet(until_ms=980, ms=100)  # before they speak
    frames: list[str] = []
    for n in range(50):  # 1000 .. 1980 ms
        frame = base64.b64encode(bytes([0x10 + n % 3]) * 160).decode()
        frames.append(frame)
        call(TwilioMedia(frame, 0), 1000 + 20 * n)
        if n == 15:
            call(EngineSpeechStarted(0, "u1"), 1300)
    return call, frames


class TestCallerTurnSentAgain:
    def test_the_open_turn_s_audio_goes_to_the_new_session_after_the_replay(self) -> None:
        call, frames = caller_mid_sentence()
        cmds = call(EngineLost("1011"), 2000)
        assert "hold_line" not in stages(cmds)
        resumed = engine_sent(call(EngineResumed(), 2300))
        audio = [m.audio_b64 for m in resumed if isinstance(m, AppendAudio)]
        assert audio[-len(frames):] == frames  # every frame since they began to speak
        assert len(audio) <= len(frames) + LEAD_MS // 20 + 1
        assert all(isinstance(m, AppendAudio) for m in resumed[resumed.index(
            AppendAudio(audio[0])):])  # after the replay items
        assert not any(isinstance(m, CreateResponse) for m in resumed)  # their turn first

    def test_a_committed_turn_not_transcribed_is_sent_again_and_answered(self) -> None:
        call, frames = caller_mid_sentence()
        call(EngineSpeechStopped(0, "u1"), 1990)
        assert control_sent(call(EngineInputCommitted("u1"), 1995)) == [CreateResponse()]
        call(EngineLost("1011"), 2000)  # before the transcript and the reply
        resumed = engine_sent(call(EngineResumed(), 2300))
        audio = [m.audio_b64 for m in resumed if isinstance(m, AppendAudio)]
        assert audio[-len(frames):] == frames
        assert not any(isinstance(m, CreateResponse) for m in resumed)
        call(EngineSpeechStarted(0, "n1"), 2310)  # the new session's VAD finds it
        call(EngineSpeechStopped(0, "n1"), 2320)
        assert control_sent(call(EngineInputCommitted("n1"), 2330)) == [CreateResponse()]

    def test_nothing_is_sent_again_without_such_a_turn_and_little_is_kept(self) -> None:
        call = greeted_and_asked()  # u1 transcribed
        call.quiet(until_ms=2100, ms=2000)
        assert len(call.session._s.recent_audio) <= LEAD_MS // 20 + 1
        call(EngineLost("1011"), 2100)
        resumed = engine_sent(call(EngineResumed(), 2400))
        assert not any(isinstance(m, AppendAudio) for m in resumed)
        assert resumed[-1] == CreateResponse()

    def test_kept_audio_is_bounded_in_a_long_turn(self) -> None:
        call = Call()
        call(START, 0)
        call(EngineSpeechStarted(0, "u1"), 1000)
        for n in range(2000):  # 40 s of talk in one turn
            call(TwilioMedia(LOUD_FRAME, 0), 1000 + 20 * n)
        assert len(call.session._s.recent_audio) <= MAX_KEPT_MS // 20 + 1


class TestResumeTurnWait:
    def test_if_the_new_session_makes_no_turn_the_reply_is_asked_anyway(self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        call.talk(until_ms=2700, ms=400, turn=False)
        cmds = call(EngineResumed(), 2800)
        assert StartTimer(TimerName.RESUME_TURN_WAIT, RESUME_TURN_WAIT_MS) in cmds
        cmds = call(TimerFired(TimerName.RESUME_TURN_WAIT), 2800 + RESUME_TURN_WAIT_MS)
        assert control_sent(cmds) == [CreateResponse()]

    def test_a_turn_open_when_it_fires_is_waited_for(self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        call.talk(until_ms=2700, ms=400, turn=False)
        call(EngineResumed(), 2800)
        call(EngineSpeechStarted(0, "n1"), 2900)
        assert call(TimerFired(TimerName.RESUME_TURN_WAIT), 4300) == []
        call(EngineSpeechStopped(0, "n1"), 4400)
        assert control_sent(call(EngineInputCommitted("n1"), 4400)) == [CreateResponse()]

    def test_a_reply_already_asked_is_not_asked_twice(self) -> None:
        call = greeted_and_asked()
        call(EngineLost("1011"), 2100)
        call.talk(until_ms=2700, ms=400, turn=False)
        call(EngineResumed(), 2800)
        call(EngineSpeechStarted(0, "n1"), 2810)
        call(EngineSpeechStopped(0, "n1"), 2820)
        assert control_sent(call(EngineInputCommitted("n1"), 2830)) == [CreateResponse()]
        assert call(TimerFired(TimerName.RESUME_TURN_WAIT), 4300) == []
