"""`hotline demo` end to end on a compressed clock: the calls it shows say no prompt text."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from hotline.business_yaml import load_businesses_yaml
from hotline.demo import DemoCall, demo_businesses_path, run_demo
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
    output = io.StringIO()
    console = Console(file=output, width=400)
    seen: dict[str, int] = {}

    async def sign_in_to_the_dashboard(calls: list[DemoCall]) -> None:
        """What `hotline demo --serve` leaves up: the dashboard, with the keys it printed."""
        printed = re.search(r"Dashboard: (\S+)/ · sign in with the admin token (\S+), or as "
                            r"smile-dental-tlv's owner with the key (\S+)", output.getvalue())
        assert printed is not None
        url, *keys = printed.groups()
        for who, key in zip(("admin", "clinic"), keys, strict=True):
            async with httpx.AsyncClient(base_url=url) as client:
                form = await client.get("/signin")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert csrf is not None
                await client.post("/signin", data={"csrf": csrf[1], "key": key})
                page = await client.get("/calls")
                seen[who] = len({sid for sid in re.findall(r'href="/calls/(CA\w+)"', page.text)})

    calls = await run_demo(tmp_path, profile=LatencyProfile.zero(), console=console,
                           clock=DEMO_CLOCK, then=sign_in_to_the_dashboard)
    assert len(calls) == 5
    assert seen == {"admin": 5, "clinic": 1}  # the clinic's key: its own call only
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
