"""Where each side lands in a call's recording (hotline.audio.recording_mix), without sockets:
the caller by Twilio's timestamps, the agent as Twilio plays it out (20 ms per 160 bytes, in
order, a clear dropping what was not played yet), and the WAV channels they make."""

from __future__ import annotations

import base64
import io
import time
import tracemalloc
import wave

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.audio import mulaw
from hotline.audio.recording_mix import (
    CallTape,
    Placed,
    Side,
    channels,
    place_agent,
    place_tape,
    recording_samples,
)
from hotline.call.runner import CallClock
from hotline.core.commands import TwilioClear, TwilioMarkOut, TwilioMediaOut
from hotline.core.events import TwilioMark, TwilioMedia, TwilioStart

FRAME = 160  # bytes (and samples) in a 20 ms μ-law frame


def frame_b64(code: int, n: int = FRAME) -> str:
    return base64.b64encode(bytes([code]) * n).decode()


def agent_at(placed: list[Placed]) -> list[tuple[int, int]]:
    return [(p.start, p.samples) for p in placed if p.side is Side.AGENT]


def test_agent_frames_sent_at_once_play_one_after_another() -> None:
    # A burst of five frames at 1000 ms: the queue plays them back to back from there.
    placed = place_agent([(1000.0, frame_b64(1))] * 5)
    assert agent_at(placed) == [(8000 + i * FRAME, FRAME) for i in range(5)]


def test_a_frame_sent_after_the_queue_ran_dry_starts_when_sent() -> None:
    placed = place_agent([(1000.0, frame_b64(1)), (1500.0, frame_b64(2, 320))])
    assert agent_at(placed) == [(8000, FRAME), (12_000, 320)]


def test_a_frame_sent_while_the_queue_plays_waits_for_it() -> None:
    # 10 frames (200 ms) at 0 ms, one more at 50 ms: it plays at 200 ms, not 50.
    placed = place_agent([(0.0, frame_b64(1))] * 10 + [(50.0, frame_b64(2))])
    assert agent_at(placed)[-1] == (1600, FRAME)


def test_a_clear_drops_the_unplayed_rest_and_cuts_the_frame_playing() -> None:
    # 10 frames queued at 0 ms; the caller barges in at 50 ms: 2 frames played whole, the
    # third for 10 ms (80 samples), the other seven never.
    placed = place_agent([(0.0, frame_b64(1))] * 10 + [(50.0, None)])
    assert agent_at(placed) == [(0, FRAME), (FRAME, FRAME), (2 * FRAME, 80)]


def test_after_a_clear_the_next_reply_plays_when_sent() -> None:
    sent: list[tuple[float, str | None]] = [(0.0, frame_b64(1))] * 10
    sent += [(50.0, None), (60.0, frame_b64(2))]
    placed = place_agent(sent)
    assert agent_at(placed)[-1] == (480, FRAME)  # at 60 ms, not after the dropped 200 ms


def test_a_clear_with_nothing_queued_changes_nothing() -> None:
    sent: list[tuple[float, str | None]] = [(0.0, frame_b64(1)), (100.0, None),
                                            (100.0, frame_b64(2))]
    assert agent_at(place_agent(sent)) == [(0, FRAME), (800, FRAME)]


def test_the_tape_places_the_caller_by_twilio_timestamps_from_the_stream_start() -> None:
    tape = CallTape()
    tape.heard(TwilioStart("MZ1", "CA1", {}), 700.0)
    tape.heard(TwilioMark("m"), 705.0)  # not audio: nothing kept
    # Delivered late and bunched (all at 900 ms), stamped 0, 20, 40 ms: placed by stamp.
    for stamp in (0, 20, 40):
        tape.heard(TwilioMedia(frame_b64(3), stamp), 900.0)
    tape.sent(TwilioMediaOut(frame_b64(4)), 800.0)
    tape.sent(TwilioMarkOut("m1"), 800.0)
    tape.sent(TwilioClear(), 810.0)
    placed = place_tape(tape, end_ms=5000)
    caller = [(p.start, p.samples) for p in placed if p.side is Side.CALLER]
    assert caller == [(5600, FRAME), (5760, FRAME), (5920, FRAME)]
    assert agent_at(placed) == [(6400, 80)]  # cut by the clear 10 ms in


def test_the_caller_is_placed_from_the_start_s_arrival_not_its_dispatch() -> None:
    """The media handler notes when the start arrived; the runner dispatches it after the
    plan's claim (a Redis round trip, long when Redis is slow): the earlier time holds."""
    clock = CallClock(time.time() * 1000 - 1000, speed=5)
    arrived = time.monotonic()
    assert abs(clock.ms_at(arrived) - clock.now_ms()) < 50 * 5
    assert clock.ms_at(arrived - 0.2) == pytest.approx(clock.ms_at(arrived) - 1000)
    tape = CallTape()
    tape.stream_started_ms = 700.0  # noted on arrival
    tape.heard(TwilioStart("MZ1", "CA1", {}), 1900.0)  # dispatched after a slow claim
    tape.heard(TwilioMedia(frame_b64(3), 0), 1900.0)
    [caller] = place_tape(tape, end_ms=5000)
    assert caller.start == 700 * 8


def test_the_tape_keeps_no_object_per_frame_beside_the_payload() -> None:
    """A call's tape is held for its whole length (hours at most): per frame, the payload
    string the loop already had, plus a number and a pointer; no tuple, no boxed time."""
    payloads = [frame_b64(i % 256) for i in range(5000)]
    frames = [TwilioMedia(p, 1000 + 20 * i) for i, p in enumerate(payloads)]
    sent = [TwilioMediaOut(p) for p in payloads]
    tape = CallTape()
    tracemalloc.start()
    try:
        for i, (frame, out) in enumerate(zip(frames, sent, strict=True)):
            tape.heard(frame, 1000.5 + 20 * i)
            tape.sent(out, 1010.5 + 20 * i)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept / (2 * len(payloads)) < 24  # bytes per frame (a tuple alone is 56)
    assert list(tape.caller)[1] == (1020, payloads[1])
    assert list(tape.agent)[1] == (1030.5, payloads[1])


def test_nothing_is_heard_after_the_call_ended() -> None:
    tape = CallTape()
    tape.heard(TwilioStart("MZ1", "CA1", {}), 0.0)
    tape.heard(TwilioMedia(frame_b64(3), 990), 990.0)
    tape.heard(TwilioMedia(frame_b64(3), 5000), 5000.0)  # a timestamp past the end
    for _ in range(10):  # 200 ms queued at 900 ms: only 100 ms of it played
        tape.sent(TwilioMediaOut(frame_b64(4)), 900.0)
    placed = place_tape(tape, end_ms=1000)
    assert recording_samples(placed) == 8000
    assert [(p.start, p.samples) for p in placed if p.side is Side.CALLER] == [(7920, 80)]
    assert sum(p.samples for p in placed if p.side is Side.AGENT) == 800


def test_channels_hold_the_caller_left_and_the_agent_right_with_silence_between() -> None:
    tape = CallTape()
    tape.heard(TwilioStart("MZ1", "CA1", {}), 0.0)
    tape.heard(TwilioMedia(frame_b64(0x10), 0), 0.0)
    tape.sent(TwilioMediaOut(frame_b64(0x20)), 40.0)
    placed = place_tape(tape, end_ms=100)
    caller, agent = channels(placed, recording_samples(placed))
    silence = bytes([mulaw.SILENCE_BYTE])
    assert caller == bytes([0x10]) * FRAME + silence * 2 * FRAME
    assert agent == silence * 2 * FRAME + bytes([0x20]) * FRAME

    out = io.BytesIO()
    mulaw.write_wav(out, caller, agent)
    with wave.open(io.BytesIO(out.getvalue()), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = wav.readframes(wav.getnframes())
    pcm = memoryview(frames).cast("h")
    assert list(pcm[0:2]) == [mulaw.DECODE_TABLE[0x10], 0]  # sample 0: caller left only
    assert list(pcm[2 * 2 * FRAME:2 * 2 * FRAME + 2]) == [0, mulaw.DECODE_TABLE[0x20]]


def test_a_payload_that_is_not_base64_is_left_out() -> None:
    tape = CallTape()
    tape.heard(TwilioStart("MZ1", "CA1", {}), 0.0)
    tape.heard(TwilioMedia("not base64!", 0), 0.0)
    assert place_tape(tape, end_ms=100) == []


def test_pcm_decoding_matches_the_per_sample_decoder() -> None:
    codes = bytes(range(256))
    assert mulaw.pcm16_from_mulaw(codes) == mulaw.decode(codes).tobytes()


@given(st.lists(st.one_of(
    st.tuples(st.integers(0, 5000), st.integers(1, 4)),  # (ms, frames of audio)
    st.tuples(st.integers(0, 5000), st.just(0)),  # (ms, a clear)
), max_size=40))
def test_agent_frames_never_overlap_and_never_start_before_they_were_sent(
        events: list[tuple[int, int]]) -> None:
    sent: list[tuple[float, str | None]] = []
    for at, frames in sorted(events, key=lambda e: e[0]):
        sent.append((float(at), None if frames == 0 else frame_b64(1, frames * FRAME)))
    placed = place_agent(sent)
    end = 0
    for frame in placed:
        assert frame.start >= end and frame.samples > 0
        end = frame.start + frame.samples
    # Played no earlier than sent: each frame starts at or after the first send.
    if placed:
        assert placed[0].start >= 8 * next(at for at, payload in sent if payload is not None)
