"""The call core's parts, each on its own: no session, no sockets, chosen clocks."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from hotline.core.amd import AmdWait, AnsweredBy
from hotline.core.closing import Closing, ClosingStep, ControlAction
from hotline.core.commands import (
    AddFunctionOutput,
    CancelResponse,
    CancelTimer,
    CreateResponse,
    HangUpCall,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TransferCall,
    TwilioMarkOut,
    TwilioMediaOut,
)
from hotline.core.outcomes import Outcome
from hotline.core.phase import ALLOWED, CallPhase, InvalidPhaseChange, Phase
from hotline.core.playback import Playback
from hotline.core.responses import (
    PREREQUESTED_GREETING_EVENT_ID,
    Purpose,
    ResponseQueue,
    prerequested_greeting,
)
from hotline.core.silence import SilenceTimers
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import INTERRUPTED_OUTPUT, ToolLedger
from hotline.core.turns import GATE_TURN_WINDOW_MS, CallerTurns, TurnVerdict

LOUD = base64.b64encode(bytes([0x10]) * 160).decode()  # 20 ms of loud sound
QUIET = base64.b64encode(bytes([0xFF]) * 160).decode()


def audio_b64(ms: int) -> str:
    return base64.b64encode(bytes([0x7F]) * (ms * 8)).decode()


# -- phase ----------------------------------------------------------------------------------
class TestPhase:
    def test_every_phase_may_end_but_the_end_is_final(self) -> None:
        for phase, allowed in ALLOWED.items():
            assert (CallPhase.ENDED in allowed) is (phase is not CallPhase.ENDED)

    def test_a_change_the_table_does_not_list_raises_naming_both(self) -> None:
        phase = Phase()
        phase.move(CallPhase.GREETING)
        phase.move(CallPhase.CONVERSING)
        with pytest.raises(InvalidPhaseChange, match="conversing -> greeting"):
            phase.move(CallPhase.GREETING)
        phase.move(CallPhase.CONVERSING)  # staying is no change
        phase.move(CallPhase.ENDED)
        with pytest.raises(InvalidPhaseChange):
            phase.move(CallPhase.CONVERSING)

    def test_is_matches_any_of_the_phases_given(self) -> None:
        phase = Phase()
        assert phase.is_(CallPhase.AWAITING_START)
        assert not phase.is_(CallPhase.GREETING, CallPhase.LISTENING)


# -- playback -------------------------------------------------------------------------------
class TestPlayback:
    def test_each_chunk_is_sent_untouched_with_its_own_mark(self) -> None:
        playback = Playback()
        playback.start_item("i1", "r1", 0)
        chunk = audio_b64(100)
        sent = playback.send("i1", chunk, 0)
        assert sent == [SendToTwilio(TwilioMediaOut(chunk)), SendToTwilio(TwilioMarkOut("m1"))]
        assert playback.send("i1", chunk, 0)[1] == SendToTwilio(TwilioMarkOut("m2"))
        assert playback.items["i1"].sent_ms == 200 and playback.audible

    def test_heard_position_moves_with_time_but_never_past_the_next_mark(self) -> None:
        playback = Playback()
        playback.start_item("i1", "r1", 1000)
        playback.send("i1", audio_b64(100), 1000)
        playback.send("i1", audio_b64(100), 1000)
        assert playback.heard_ms(1050) == 50
        assert playback.heard_ms(1500) == 100  # m1 not echoed: at most its position
        echo = playback.on_mark("m1", 1110)
        assert echo is not None and echo.item_id == "i1" and not echo.item_finished
        assert playback.heard_ms(1160) == 150
        assert playback.queued_ms(1160) == 50

    def test_an_echo_confirms_every_earlier_mark_and_unknown_ones_are_ignored(self) -> None:
        playback = Playback()
        playback.start_item("i1", "r1", 0)
        for _ in range(3):  # a mark after each (100 ms each)
            playback.send("i1", audio_b64(100), 0)
        echo = playback.on_mark("m3", 300)
        assert echo is not None and echo.item_finished and not playback.audible
        assert playback.on_mark("m3", 61) is None  # a duplicate
        assert playback.on_mark("m9", 61) is None  # never sent

    def test_marks_flushed_by_a_clear_are_not_playback(self) -> None:
        playback = Playback()
        playback.start_item("i1", "r1", 0)
        playback.send("i1", audio_b64(100), 0)
        playback.clear()
        assert not playback.audible
        assert playback.on_mark("m1", 5) is None  # Twilio returns it because of the clear
        assert playback.items["i1"].played_ms == 0

    def test_the_next_item_starts_playing_when_the_previous_finishes(self) -> None:
        playback = Playback()
        playback.start_item("i1", "r1", 0)
        playback.send("i1", audio_b64(100), 0)
        playback.start_item("i2", "r2", 50)
        playback.send("i2", audio_b64(100), 50)
        assert playback.heard_ms(90) == 0  # i1 still plays
        playback.on_mark("m1", 100)
        assert playback.heard_ms(130) == 30

    def test_turns_are_recorded_once_with_the_heard_length(self) -> None:
        playback = Playback()
        item = playback.start_item("i1", "r1", 10, transcript="Hello there")
        playback.send("i1", audio_b64(300), 10)
        item.truncated_at_ms = 120
        [turn] = playback.turns("r1")
        assert (turn.text, turn.started_ms, turn.ended_ms, turn.interrupted) == (
            "Hello there", 10, 130, True)
        assert playback.turns(None) == []


# -- responses ------------------------------------------------------------------------------
class TestResponseQueue:
    def test_one_request_in_flight_each_with_its_own_event_id(self) -> None:
        queue = ResponseQueue()
        queue.want(None, Purpose.GREETING)
        [first] = queue.next(caller_talking=False)
        queue.want("Ask if they are there", Purpose.NUDGE)
        assert queue.next(caller_talking=False) == []  # one is asked for already
        queue.created("r1")
        assert queue.next(caller_talking=False) == []  # one is going
        queue.done("r1")
        [second] = queue.next(caller_talking=False)
        assert isinstance(first, SendToEngine) and isinstance(second, SendToEngine)
        assert isinstance(first.message, CreateResponse)
        assert isinstance(second.message, CreateResponse)
        assert second.message.instructions == "Ask if they are there"
        assert first.message.event_id != second.message.event_id

    def test_one_reply_answers_every_turn_so_far(self) -> None:
        queue = ResponseQueue()
        queue.created("r0")
        queue.want(None, Purpose.REPLY)
        queue.want(None, Purpose.REPLY)
        queue.done("r0")
        assert len(queue.next(caller_talking=False)) == 1
        queue.created("r1")
        queue.done("r1")
        assert queue.next(caller_talking=False) == [] and queue.idle

    def test_a_reply_waits_for_the_caller_to_finish(self) -> None:
        queue = ResponseQueue()
        queue.want(None, Purpose.REPLY)
        assert queue.next(caller_talking=True) == []
        assert len(queue.next(caller_talking=False)) == 1

    def test_a_refusal_is_known_by_its_event_id(self) -> None:
        queue = ResponseQueue()
        queue.want(None, Purpose.REPLY)
        [ask] = queue.next(caller_talking=False)
        assert isinstance(ask, SendToEngine) and isinstance(ask.message, CreateResponse)
        assert queue.refused("someone_else") is None and queue.requested is Purpose.REPLY
        assert queue.refused(ask.message.event_id) is Purpose.REPLY
        assert queue.requested is None and queue.idle

    def test_a_prerequested_greeting_is_refused_like_any_request(self) -> None:
        queue = ResponseQueue()
        queue.assume_requested(Purpose.GREETING, PREREQUESTED_GREETING_EVENT_ID)
        assert prerequested_greeting().event_id == PREREQUESTED_GREETING_EVENT_ID
        assert queue.refused(PREREQUESTED_GREETING_EVENT_ID) is Purpose.GREETING

    def test_a_cancelled_response_is_dropped_once(self) -> None:
        queue = ResponseQueue()
        queue.created("r1")
        assert queue.active_and_kept("r1")
        assert queue.cancel_active() == [SendToEngine(CancelResponse())]
        assert queue.cancel_active() == []
        assert queue.is_dropped("r1") and not queue.active_and_kept("r1")

    def test_a_discarded_request_still_holds_the_one_place_in_flight(self) -> None:
        queue = ResponseQueue()
        queue.want(None, Purpose.GREETING)
        queue.next(caller_talking=False)
        queue.want(None, Purpose.REPLY)
        queue.discard()
        assert queue.requested is Purpose.DISCARDED and not queue.wants(Purpose.REPLY)
        queue.want("Leave the voicemail", Purpose.CLOSING)
        assert queue.pending(Purpose.CLOSING) and queue.next(caller_talking=False) == []
        assert queue.created("r1") is Purpose.DISCARDED
        queue.done("r1")
        assert len(queue.next(caller_talking=False)) == 1
        assert queue.pending(Purpose.CLOSING) and not queue.wants(Purpose.CLOSING)

    def test_closing_keeps_only_the_closing_line_wanted(self) -> None:
        queue = ResponseQueue()
        queue.created("r0")
        queue.want(None, Purpose.REPLY)
        queue.want("Say goodbye", Purpose.CLOSING)
        queue.keep_only(Purpose.CLOSING)
        assert not queue.wants(Purpose.REPLY) and queue.wants(Purpose.CLOSING)


# -- caller turns ---------------------------------------------------------------------------
class TestCallerTurns:
    def test_a_turn_while_the_agent_is_quiet_is_speech(self) -> None:
        turns = CallerTurns(200, 0.5)
        assert turns.started("u1", 1000, agent_audible=False) is TurnVerdict.SPEECH
        assert turns.open
        assert turns.committed("u1") is TurnVerdict.SPEECH and not turns.open

    def test_a_contested_turn_without_speech_is_noise(self) -> None:
        turns = CallerTurns(200, 0.5)
        assert turns.started("u1", 1000, agent_audible=True) is TurnVerdict.UNDECIDED
        for i in range(5):  # 100 ms of sound: a cough
            turns.hear(LOUD, 1000 + 20 * i, agent_audible=True)
        assert turns.committed("u1") is TurnVerdict.NOISE
        turns.forget_noise("u1")
        assert turns.transcribed("u1", 1500) is None

    def test_speech_long_enough_decides_a_contested_turn(self) -> None:
        turns = CallerTurns(200, 0.5)
        turns.started("u1", 1000, agent_audible=True)
        heard = [turns.hear(LOUD, 1000 + 20 * i, agent_audible=True) for i in range(10)]
        assert heard[-1] and not heard[0]
        assert turns.committed("u1") is TurnVerdict.SPEECH

    def test_speech_just_before_the_turn_counts_for_it(self) -> None:
        turns = CallerTurns(200, 0.5)
        for i in range(10):
            turns.hear(LOUD, 1000 + 20 * i, agent_audible=True)
        start = 1180 + GATE_TURN_WINDOW_MS
        assert turns.started("u1", start, agent_audible=True) is TurnVerdict.SPEECH
        assert turns.started("u2", start + 1, agent_audible=True) is TurnVerdict.UNDECIDED

    def test_the_gate_listens_only_when_sound_could_be_echo_or_interruption(self) -> None:
        turns = CallerTurns(200, 0.5)
        assert not any(turns.hear(LOUD, 20 * i, agent_audible=False) for i in range(20))
        turns.start_cooldown(1000, 300)
        assert turns.in_cooldown(1299) and not turns.in_cooldown(1300)
        assert turns.started("u1", 1100, agent_audible=False) is TurnVerdict.UNDECIDED

    def test_quiet_frames_break_a_run(self) -> None:
        turns = CallerTurns(200, 0.5)
        for i in range(8):
            turns.hear(LOUD, 20 * i, agent_audible=True)
        for i in range(4):
            turns.hear(QUIET, 160 + 20 * i, agent_audible=True)
        assert not turns.hear(LOUD, 240, agent_audible=True)

    def test_a_transcribed_turn_keeps_its_span(self) -> None:
        turns = CallerTurns(200, 0.5)
        turns.started("u1", 1000, agent_audible=False)
        turns.stopped("u1", 1800)
        turns.committed("u1")
        assert turns.transcribed("u1", 2500) == (1000, 1800)


# -- tools ----------------------------------------------------------------------------------
class TestToolLedger:
    def test_answers_wait_for_the_response_and_every_tool_of_it(self) -> None:
        ledger = ToolLedger()
        ledger.called("r1", "c1")
        ledger.called("r1", "c2")
        assert ledger.busy
        assert ledger.finished("c1", '{"a":1}') == "r1"
        ledger.reply_after("r1")
        assert ledger.release("r1", active_id=None) is None  # c2 still runs
        ledger.finished("c2", '{"b":2}')
        assert ledger.release("r1", active_id="r1") is None  # r1 still going
        assert ledger.release("r1", active_id=None) == (
            [AddFunctionOutput("c1", '{"a":1}'), AddFunctionOutput("c2", '{"b":2}')], True)
        assert ledger.release("r1", active_id=None) is None and not ledger.busy

    def test_a_tool_of_an_interrupted_reply_is_answered_without_running(self) -> None:
        ledger = ToolLedger()
        ledger.refused("r1", "c1")
        assert not ledger.busy
        assert ledger.release("r1", None) == ([AddFunctionOutput("c1", INTERRUPTED_OUTPUT)],
                                              False)


# -- closing --------------------------------------------------------------------------------
class TestClosing:
    def test_a_line_to_say_goes_wanted_playing_sent_then_acted(self) -> None:
        closing = Closing(Outcome.HUNG_UP_BY_AGENT, "silence")
        closing.line_wanted()
        assert not closing.ready(audio_pending=False)
        closing.line_created("r0")
        assert closing.step is ClosingStep.LINE_PLAYING
        closing.line_done("other")
        assert closing.step is ClosingStep.LINE_PLAYING
        closing.line_done("r0")
        assert closing.step is ClosingStep.LINE_SENT
        assert not closing.ready(audio_pending=True) and closing.ready(audio_pending=False)
        assert closing.act() == HangUpCall() and closing.acted

    def test_a_refused_line_is_skipped(self) -> None:
        closing = Closing(Outcome.HUNG_UP_BY_AGENT, "time limit")
        closing.line_wanted()
        closing.line_refused()
        assert closing.ready(audio_pending=False)

    def test_a_transfer_and_the_outcome_if_the_caller_leaves_first(self) -> None:
        closing = Closing(Outcome.TRANSFERRED, "key 0", transfer_to="+15550009999")
        assert closing.action is ControlAction.TRANSFER
        assert closing.outcome_if_caller_leaves() is Outcome.COMPLETED
        assert closing.act() == TransferCall("+15550009999")
        assert closing.outcome_if_caller_leaves() is Outcome.TRANSFERRED

    def test_only_a_wanted_line_is_taken_by_a_created_response(self) -> None:
        closing = Closing(Outcome.VOICEMAIL, "answering machine")
        closing.line_created("r5")
        assert closing.step is ClosingStep.LINE_SENT and closing.response_id is None


# -- answering machines and silence --------------------------------------------------------
class TestAmd:
    def test_verdicts_parse_and_an_unknown_value_counts_as_unknown(self) -> None:
        assert AnsweredBy.parse("machine_end_beep").machine_message_ended
        assert AnsweredBy.parse("human").is_human
        assert AnsweredBy.parse("something_new") is AnsweredBy.UNKNOWN
        assert not AnsweredBy.MACHINE_START.machine_message_ended

    def test_the_first_verdict_stands(self) -> None:
        wait = AmdWait(quiet_ms=500)
        assert wait.take(AnsweredBy.HUMAN)
        assert not wait.take(AnsweredBy.MACHINE_END_BEEP)
        assert wait.verdict is AnsweredBy.HUMAN

    def test_a_machine_start_is_followed_by_its_message_end_and_nothing_else(self) -> None:
        wait = AmdWait(quiet_ms=500)
        assert wait.take(AnsweredBy.MACHINE_START)
        assert not wait.take(AnsweredBy.MACHINE_START)  # repeated
        assert not wait.take(AnsweredBy.HUMAN)  # a machine was heard already
        assert wait.take(AnsweredBy.MACHINE_END_OTHER)
        assert not wait.take(AnsweredBy.MACHINE_END_BEEP)
        fax = AmdWait(quiet_ms=500)
        assert fax.take(AnsweredBy.MACHINE_START) and fax.take(AnsweredBy.FAX)

    def test_the_callee_is_quiet_after_a_pause_in_its_audio(self) -> None:
        wait = AmdWait(quiet_ms=500)
        assert wait.callee_quiet  # nothing heard yet
        wait.heard(True, 20)
        assert not wait.callee_quiet
        for _ in range(24):
            wait.heard(False, 20)
        assert not wait.callee_quiet  # 480 ms of quiet audio, however late it came
        wait.heard(False, 20)
        assert wait.callee_quiet
        wait.heard(True, 20)
        assert not wait.callee_quiet


def test_silence_timers_arm_and_disarm_once() -> None:
    silence = SilenceTimers(8000, 20000)
    assert silence.arm() == [StartTimer(TimerName.SILENCE_NUDGE, 8000),
                             StartTimer(TimerName.SILENCE_HANGUP, 20000)]
    assert silence.arm() == []
    assert silence.disarm() == [CancelTimer(TimerName.SILENCE_NUDGE),
                                CancelTimer(TimerName.SILENCE_HANGUP)]
    assert silence.disarm() == []


def test_the_core_imports_nothing_that_does_io() -> None:
    """hotline.core is pure: importing all of it loads no event loop, socket, database,
    HTTP or SDK module."""
    code = (
        "import sys, pkgutil, importlib, hotline.core\n"
        "for m in pkgutil.iter_modules(hotline.core.__path__):\n"
        "    importlib.import_module('hotline.core.' + m.name)\n"
        "io = ('asyncio', 'socket', 'sqlalchemy', 'websockets', 'httpx', 'aiohttp', 'redis',\n"
        "      'uvicorn', 'starlette', 'fastapi', 'openai', 'twilio', 'pydantic_settings')\n"
        "print(','.join(m for m in io if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
