"""The caller's quiet audio in bigger appends (HOTLINE_QUIET_AUDIO_BATCH_MS), in the pure
core event by event: off, every frame goes as it came; on, quiet frames wait for
`batch_ms` and speech goes at once, the engine's audio the same bytes in the same order and
everything else the session does unchanged."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hotline.core.commands import AppendAudio, Command, SendToEngine, TwilioClear
from hotline.core.events import (
    CallEvent,
    EngineInputCommitted,
    EngineLost,
    EngineResponseDone,
    EngineResumed,
    EngineSpeechStarted,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
)
from hotline.core.quiet_audio import QuietAudioBatch
from hotline.core.session import CallSession
from hotline.plan import CallPlan, build_inbound_plan
from hotline.settings import Settings
from tests.factories import TEST_NUMBER, make_business, make_plan
from tests.test_call_session import (
    LOUD_FRAME,
    QUIET_FRAME,
    START,
    Call,
    _events,
    control_sent,
    engine_sent,
    stages,
    twilio_sent,
)


def frame(byte: int, ms: int = 20) -> str:
    return base64.b64encode(bytes([byte]) * (ms * 8)).decode()


# Quiet frames told apart by their bytes (all under the gate's threshold: μ-law 0xFE, 0xFD
# and 0x7E are ±8 and ±16 on the 16-bit scale).
Q1, Q2, Q3, Q4, Q5 = frame(0xFF), frame(0xFE), frame(0x7E), frame(0xFD), frame(0x7F)


def appends(cmds: list[Command]) -> list[str]:
    return [m.audio_b64 for m in engine_sent(cmds) if isinstance(m, AppendAudio)]


def joined(payloads: list[str]) -> bytes:
    return b"".join(base64.b64decode(p) for p in payloads)


def batching(batch_ms: int = 100, **overrides: object) -> Call:
    call = Call(quiet_audio_batch_ms=batch_ms, **overrides)
    call(START, 0)
    return call


def listening(call: Call) -> Call:
    """The greeting (r1, 100 ms) has played out: the caller listens, nothing is audible."""
    names = call.speak("r1", "i1", [100], 0)
    call(EngineResponseDone("r1", "completed"), 10)
    call(TwilioMark(names[0]), 100)
    return call


class TestTheSetting:
    @pytest.mark.parametrize("ms", [0, 40, 60, 100, 200])
    def test_off_or_a_multiple_of_20_from_40_to_200(self, ms: int) -> None:
        assert Settings(quiet_audio_batch_ms=ms).quiet_audio_batch_ms == ms

    @pytest.mark.parametrize("ms", [-20, 10, 20, 50, 210, 1000])
    def test_anything_else_is_refused_saying_what_is_allowed(self, ms: int) -> None:
        with pytest.raises(ValidationError, match="multiple of 20 from 40 to 200"):
            Settings(quiet_audio_batch_ms=ms)

    def test_off_by_default_and_carried_into_the_plan(self) -> None:
        assert Settings().quiet_audio_batch_ms == 0 and make_plan().quiet_audio_batch_ms == 0
        plan = make_plan()
        assert CallPlan.from_dict(plan.to_dict()).quiet_audio_batch_ms == 0
        data = plan.to_dict()
        del data["quiet_audio_batch_ms"]  # a plan from an instance that predates it
        assert CallPlan.from_dict(data).quiet_audio_batch_ms == 0

    def test_the_plan_takes_it_from_the_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HOTLINE_QUIET_AUDIO_BATCH_MS", "120")
        plan = build_inbound_plan(Settings(), make_business(), call_sid="CA1",
                                  from_number="+15550001111", to_number=TEST_NUMBER,
                                  webhook_received_epoch_ms=0.0)
        assert plan.quiet_audio_batch_ms == 120
        assert CallPlan.from_dict(plan.to_dict()).quiet_audio_batch_ms == 120


class TestQuietAudioBatch:
    def test_held_until_batch_ms_then_one_payload_of_the_bytes_joined(self) -> None:
        batch = QuietAudioBatch(100)
        assert [batch.hold(p) for p in (Q1, Q2, Q3, Q4)] == [None] * 4
        payload = batch.hold(Q5)
        assert payload is not None and batch.held_frames == 0
        assert base64.b64decode(payload) == joined([Q1, Q2, Q3, Q4, Q5])
        assert batch.flush() is None

    def test_a_frame_with_nothing_held_goes_as_the_string_it_came_as(self) -> None:
        batch = QuietAudioBatch(60)
        assert batch.flush(LOUD_FRAME) is LOUD_FRAME
        batch.hold(Q1)
        assert batch.flush() is Q1  # one frame held: not re-encoded either

    def test_held_time_is_the_audio_held_not_the_frames(self) -> None:
        batch = QuietAudioBatch(40)
        assert batch.hold(frame(0xFF, 10)) is None
        assert batch.hold(frame(0xFF, 20)) is None  # 30 ms
        assert batch.hold(frame(0xFF, 10)) == frame(0xFF, 40)

    def test_take_hands_over_what_is_held(self) -> None:
        batch = QuietAudioBatch(100)
        batch.hold(Q1)
        batch.hold(Q2)
        assert batch.take() == [Q1, Q2] and batch.take() == []
        assert batch.flush(Q3) is Q3


class TestOffByDefault:
    def test_every_frame_goes_as_it_came_one_append_each(self) -> None:
        call = Call()
        call(START, 0)
        listening(call)
        frames = [Q1, Q2, LOUD_FRAME, Q3, "AAAA"]
        for i, payload in enumerate(frames):
            cmds = call(TwilioMedia(payload, 0), 200 + 20 * i)
            assert [c for c in cmds if isinstance(c, SendToEngine)] == [
                SendToEngine(AppendAudio(payload))]
            assert appends(cmds)[0] is payload  # the very string: base64 untouched
        assert call.session.stats.audio_appends == len(frames)


class TestBatching:
    def test_quiet_frames_wait_and_go_in_one_append_at_batch_ms(self) -> None:
        call = listening(batching(100))
        sent = [appends(call(TwilioMedia(p, 0), 200 + 20 * i))
                for i, p in enumerate([Q1, Q2, Q3, Q4, Q5])]
        assert sent[:4] == [[], [], [], []]
        [payload] = sent[4]
        assert base64.b64decode(payload) == joined([Q1, Q2, Q3, Q4, Q5])
        stats = call.session.stats
        assert stats.media_in == 5 and stats.audio_appends == 1

    def test_a_loud_frame_takes_what_is_held_with_it_in_one_append_in_order(self) -> None:
        call = listening(batching(200))
        assert appends(call(TwilioMedia(Q1, 0), 200)) == []
        assert appends(call(TwilioMedia(Q2, 0), 220)) == []
        [payload] = appends(call(TwilioMedia(LOUD_FRAME, 0), 240))
        assert base64.b64decode(payload) == joined([Q1, Q2, LOUD_FRAME])
        # Nothing held: the next loud frame goes alone, untouched.
        assert appends(call(TwilioMedia(LOUD_FRAME, 0), 260)) == [LOUD_FRAME]

    def test_in_an_open_caller_turn_every_frame_goes_at_once(self) -> None:
        call = listening(batching(100))
        call(TwilioMedia(Q1, 0), 200)
        call(TwilioMedia(Q2, 0), 220)
        # The turn opens: what was held goes now, and nothing waits until it is committed.
        [payload] = appends(call(EngineSpeechStarted(0, "u1"), 230))
        assert base64.b64decode(payload) == joined([Q1, Q2])
        for i, p in enumerate([Q3, LOUD_FRAME, Q4, Q5]):
            assert appends(call(TwilioMedia(p, 0), 240 + 20 * i)) == [p]
        call(EngineInputCommitted("u1"), 400)
        assert appends(call(TwilioMedia(Q1, 0), 420)) == []  # listening again: held

    def test_frames_in_the_warmup_are_dropped_not_held(self) -> None:
        call = batching(40, bot_speaks_first=False)
        for i in range(5):
            assert call(TwilioMedia(Q1, 0), 100 + 20 * i) == []
        assert call.session.stats.media_dropped_warmup == 5
        assert appends(call(TwilioMedia(Q2, 0), 900)) == []
        [payload] = appends(call(TwilioMedia(Q3, 0), 920))
        assert base64.b64decode(payload) == joined([Q2, Q3])

    def test_a_barge_in_cuts_the_agent_on_the_same_frame_as_with_it_off(self) -> None:
        def barge_in(call: Call) -> tuple[int, list[Command]]:
            call(START, 0)
            call.speak("r1", "i1", [1000], 0)  # audible throughout
            for i in range(5):
                call(TwilioMedia(QUIET_FRAME, 0), 100 + 20 * i)
            call(EngineSpeechStarted(0, "u1"), 200)
            for i in range(20):
                cmds = call(TwilioMedia(LOUD_FRAME, 0), 220 + 20 * i)
                if TwilioClear() in twilio_sent(cmds):
                    return i, cmds
            raise AssertionError("no barge-in")

        off_frame, off_cmds = barge_in(Call())
        on_frame, on_cmds = barge_in(Call(quiet_audio_batch_ms=200))
        assert on_frame == off_frame == 9  # 200 ms of speech: the gate's minimum
        assert control_sent(on_cmds) == control_sent(off_cmds)
        assert stages(on_cmds) == stages(off_cmds) == ["barge_in"]


class TestEngineDrop:
    def test_quiet_frames_held_at_a_drop_go_on_at_once_ahead_of_the_later_audio(self) -> None:
        call = listening(batching(200))
        for i, p in enumerate([Q1, Q2, Q3]):
            call(TwilioMedia(p, 0), 200 + 20 * i)
        # Sent on at the drop: the runner keeps them for the new session, behind anything
        # that failed to send before the drop was seen (tests/test_runner_engine_link.py).
        assert joined(appends(call(EngineLost("1011"), 300))) == joined([Q1, Q2, Q3])
        # Meanwhile the caller's audio goes on (to the runner's backlog), batched as before.
        waited = [a for i in range(10) for a in appends(call(TwilioMedia(Q4, 0), 320 + 20 * i))]
        assert joined(waited) == joined([Q4] * 10)
        assert appends(call(EngineResumed(), 600)) == []  # nothing of it sent twice

    def test_a_turn_sent_again_after_a_drop_holds_the_held_frames_once(self) -> None:
        call = listening(batching(200))
        call(EngineSpeechStarted(0, "u1"), 200)
        turn = [LOUD_FRAME] * 10 + [Q5] * 2
        for i, p in enumerate(turn):
            call(TwilioMedia(p, 0), 220 + 20 * i)
        call(EngineInputCommitted("u1"), 500)  # not transcribed yet: sent again at a drop
        for i, p in enumerate([Q1, Q2]):
            assert appends(call(TwilioMedia(p, 0), 520 + 20 * i)) == []
        assert joined(appends(call(EngineLost("1011"), 600))) == joined([Q1, Q2])
        # The turn sent again goes ahead of what waits in the runner: the held frames are
        # already there, after it, and not in it a second time.
        assert appends(call(EngineResumed(), 800)) == turn

    def test_a_drop_while_closing_forgets_what_is_held(self) -> None:
        call = listening(batching(200, dtmf_actions=(("#", "end_call"),)))
        call(TwilioMedia(Q1, 0), 200)
        call(TwilioDtmf("#"), 220)  # the goodbye: the call is closing
        held = call.session._s.quiet_audio
        assert held is not None and held.held_frames == 1
        call(EngineLost("1011"), 300)
        assert held.held_frames == 0


# -- properties ------------------------------------------------------------------------------
_frames = st.sampled_from([Q1, Q2, Q3, QUIET_FRAME, LOUD_FRAME, frame(0xFF, 10), "AAAA"])
_media = st.builds(TwilioMedia, _frames, st.just(0))
_turns = st.one_of(st.builds(EngineSpeechStarted, st.just(0), st.sampled_from(["u1", "u2"])),
                   st.builds(EngineInputCommitted, st.sampled_from(["u1", "u2"])))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(_media, _media, _turns), st.integers(0, 40)),
                max_size=80),
       st.sampled_from([40, 60, 100, 200]))
def test_the_engine_gets_every_forwarded_frame_once_in_order_and_speech_at_once(
        steps: list[tuple[CallEvent, int]], batch_ms: int) -> None:
    session = CallSession(make_plan(quiet_audio_batch_ms=batch_ms))
    now = 0.0
    session.handle(START, now)
    forwarded: list[str] = []
    sent: list[str] = []
    for event, dt in steps:
        now += dt
        cmds = session.handle(event, now)
        sent += appends(cmds)
        if not isinstance(event, TwilioMedia):
            continue
        forwarded.append(event.payload_b64)
        held = session._s.quiet_audio
        assert held is not None
        if session.caller_turn_open or session._s.turns.voiced(event.payload_b64):
            assert held.held_frames == 0, "speech, or a frame in a turn, waited"
            assert appends(cmds), "speech, or a frame in a turn, went nowhere"
    held_frames = session._s.quiet_audio.take() if session._s.quiet_audio else []
    assert joined(sent) + joined(held_frames) == joined(forwarded)
    assert len(joined(held_frames)) < batch_ms * 8  # what may be dropped at the end: quiet
    assert session.stats.audio_appends == len(sent)
    assert all(not session._s.turns.voiced(p) for p in held_frames)


_quiet_media = st.builds(TwilioMedia, st.sampled_from([Q1, QUIET_FRAME]), st.just(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(_events, _quiet_media, _quiet_media), st.integers(0, 50)),
                max_size=60),
       st.booleans())
def test_only_the_appends_change_event_by_event(steps: list[tuple[CallEvent, int]],
                                                bot_first: bool) -> None:
    """Barge-ins, turns, responses, timers: with it on, the session does the same as with it
    off on every event; only how the caller's audio is packed into appends differs."""
    off = CallSession(make_plan(bot_speaks_first=bot_first))
    on = CallSession(make_plan(bot_speaks_first=bot_first, quiet_audio_batch_ms=100))
    now = 0.0
    off_audio: list[str] = []
    on_audio: list[str] = []
    for event, dt in [(START, 0), *steps]:
        now += dt
        off_cmds, on_cmds = off.handle(event, now), on.handle(event, now)

        def others(cmds: list[Command]) -> list[Command]:
            return [c for c in cmds
                    if not (isinstance(c, SendToEngine) and isinstance(c.message, AppendAudio))]

        assert others(on_cmds) == others(off_cmds), event
        off_audio += appends(off_cmds)
        on_audio += appends(on_cmds)
    assert off.phase is on.phase and off.outcome == on.outcome
    held = on._s.quiet_audio.take() if on._s.quiet_audio else []
    assert joined(on_audio) + joined(held) == joined(off_audio)
