"""The speech gate's quiet-frame shortcut judges every frame as the full sum would."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.audio import speech_gate
from hotline.audio.speech_gate import SpeechGate, frame_power

THRESHOLDS = (0.0, 0.3, 0.5, 0.8, 1.0)


@settings(max_examples=300, deadline=None)
@given(audio=st.binary(min_size=0, max_size=320), threshold=st.sampled_from(THRESHOLDS))
def test_voiced_as_the_full_sum_says(audio: bytes, threshold: float) -> None:
    payload = base64.b64encode(audio).decode()
    gate = SpeechGate(200, threshold)
    assert gate.voiced(payload) == (frame_power(payload)[0] > gate._power_threshold)


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.sampled_from([b"\xff" * 160, b"\x80\x00" * 80, b"\x7e\xfe" * 80,
                                        b"\xff" * 159 + b"\x00"]), max_size=30))
def test_runs_of_speech_as_before(frames: list[bytes]) -> None:
    """A run of voiced frames becomes speech after `min_speech_ms`, quiet or not."""
    gate = SpeechGate(60, 0.5)
    voiced_ms = gap_ms = 0.0
    for frame in frames:
        payload = base64.b64encode(frame).decode()
        power, ms = frame_power(payload)
        if power > gate._power_threshold:
            voiced_ms, gap_ms = voiced_ms + ms, 0.0
        elif voiced_ms:
            gap_ms += ms
            if gap_ms >= 60:
                voiced_ms = gap_ms = 0.0
        assert gate.feed(payload) == (voiced_ms >= 60)


def test_a_frame_asked_about_twice_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[str] = []

    def counting(payload_b64: str, quiet_codes: bytes | None = None) -> tuple[float, float]:
        measured.append(payload_b64)
        return frame_power(payload_b64, quiet_codes)

    monkeypatch.setattr(speech_gate, "frame_power", counting)
    gate = SpeechGate(200, 0.5)
    loud = base64.b64encode(b"\x80\x00" * 80).decode()
    assert gate.voiced(loud) and not gate.feed(loud)  # voiced, not yet a run of speech
    again = base64.b64encode(b"\x80\x00" * 80).decode()  # the same audio, a new frame
    assert gate.voiced(again)
    assert len(measured) == 2
