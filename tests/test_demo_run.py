"""`hotline demo` end to end on a compressed clock: the calls it shows say no prompt text."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from hotline.business_yaml import load_businesses_yaml
from hotline.demo import demo_businesses_path, run_demo
from hotline.prompts import (
    GOODBYE_INSTRUCTIONS,
    HANDOVER_INSTRUCTIONS,
    NUDGE_INSTRUCTIONS,
    SAY_EXACTLY_MARKER,
    SILENCE_GOODBYE_INSTRUCTIONS,
    TIME_LIMIT_INSTRUCTIONS,
)
from hotline.sim import speech
from hotline.sim.clock import SimClock
from hotline.sim.engine import LatencyProfile
from hotline.sim.engine_lines import Intent, line_for
from hotline.sim.engine_replies import DEFAULT_REPLIES_EN, DEFAULT_REPLIES_HE

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

# The demo's calls last ~2.5 minutes of call time; compressed, they take seconds.
DEMO_CLOCK = SimClock(float(os.environ.get("HOTLINE_DEMO_TEST_CLOCK_SPEED", "20")))
INSTRUCTIONS = (HANDOVER_INSTRUCTIONS, GOODBYE_INSTRUCTIONS, NUDGE_INSTRUCTIONS,
                SILENCE_GOODBYE_INSTRUCTIONS, TIME_LIMIT_INSTRUCTIONS, SAY_EXACTLY_MARKER)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def _warm_speech_cache() -> None:
    """Synthesize the engine's canned lines first: espeak takes wall-clock time, which on a
    20x clock would stretch the time to a reply's first audio twenty-fold."""
    for business in load_businesses_yaml(demo_businesses_path()):
        replies = DEFAULT_REPLIES_HE if business.language == "he" else DEFAULT_REPLIES_EN
        for line in (*replies, *(line_for(intent, business.language) for intent in Intent)):
            speech.synthesize(line, business.language, business.voice)


async def test_demo_transcripts_contain_no_instruction_text(tmp_path: Path) -> None:
    _warm_speech_cache()
    console = Console(file=io.StringIO(), width=200)
    calls = await run_demo(tmp_path, profile=LatencyProfile.zero(), console=console,
                           clock=DEMO_CLOCK)
    assert len(calls) == 5
    turns = [(call.label, turn) for call in calls for turn in call.record.transcript]
    agent_lines = [turn.text for _, turn in turns if turn.speaker == "agent"]
    assert agent_lines
    for label, turn in turns:
        for instructions in INSTRUCTIONS:
            assert _words(instructions) not in _words(turn.text), (label, turn)
    # The key-0 call's handover is the canned English line, said to the caller.
    handover = next(call for call in calls if call.label.startswith("key 0"))
    assert line_for(Intent.HANDOVER, "en") in [
        turn.text for turn in handover.record.transcript if turn.speaker == "agent"]
