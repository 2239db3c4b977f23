"""The call core at the drain's deadline (`DrainDeadline`), event by event, no sockets."""

from __future__ import annotations

from hotline.core.commands import CreateResponse, EndCall, HangUpCall, Record
from hotline.core.events import (
    DrainDeadline,
    EngineResponseCreated,
    EngineResponseDone,
    TimerFired,
    TwilioMark,
    TwilioStop,
)
from hotline.core.outcomes import Outcome
from hotline.core.record import TimelineStage
from hotline.core.timers import TimerName
from hotline.prompts import DRAIN_GOODBYE_INSTRUCTIONS
from hotline.sim.engine_lines import Intent, intent_of
from tests.test_call_session import (
    commands_of,
    control_sent,
    conversing,
    stages,
    timers_started,
)


def test_the_deadline_asks_for_a_goodbye_then_hangs_up_once_it_has_played() -> None:
    call, first = conversing()
    call(TwilioMark(first[0]), 500)
    cmds = call(DrainDeadline(), 1000)
    assert control_sent(cmds) == [CreateResponse(DRAIN_GOODBYE_INSTRUCTIONS)]
    assert TimerName.GOODBYE_CAP in timers_started(cmds)
    details = [c.item.detail for c in cmds
               if isinstance(c, Record) and isinstance(c.item, TimelineStage)
               and c.item.stage == "closing"]
    assert details == ["shutting down: hang up"]
    names = call.speak("r2", "i2", [300], 1100)
    assert commands_of(call(EngineResponseDone("r2", "completed"), 1101), HangUpCall) == []
    cmds = call(TwilioMark(names[0]), 1400)
    assert commands_of(cmds, HangUpCall) == [HangUpCall()]
    assert EndCall(Outcome.HUNG_UP_BY_AGENT) in call(TwilioStop(), 1500)


def test_a_goodbye_that_never_plays_still_hangs_up_at_the_cap() -> None:
    call, _ = conversing()
    call(DrainDeadline(), 1000)
    call(EngineResponseCreated("r2"), 1001)
    cmds = call(TimerFired(TimerName.GOODBYE_CAP), 11_000)
    assert commands_of(cmds, HangUpCall) == [HangUpCall()]
    assert "hang_up_requested" in stages(cmds)


def test_a_call_already_closing_keeps_its_own_closing() -> None:
    call, _ = conversing()
    call(TimerFired(TimerName.MAX_DURATION), 5000)
    assert call(DrainDeadline(), 5001) == []


def test_the_simulated_engine_hears_a_goodbye_in_the_instructions() -> None:
    assert intent_of(DRAIN_GOODBYE_INSTRUCTIONS) is Intent.GOODBYE
