"""The call's phase, and the one place that knows which changes of phase are allowed.

As in h11's `_state.py`, transitions are a table; a change it does not list is a bug in the
core and raises `InvalidPhaseChange` naming both phases.
"""

from __future__ import annotations

import enum

from hotline.errors import HotlineError


class CallPhase(enum.Enum):
    AWAITING_START = "awaiting_start"
    # Outbound: the greeting waits for the answering-machine verdict (see `AmdWait`).
    AWAITING_AMD = "awaiting_amd"
    # A machine answered (`machine_start`): nothing is said until its message ends.
    AWAITING_BEEP = "awaiting_beep"
    GREETING = "greeting"  # bot speaks first: the greeting is requested or playing
    LISTENING = "listening"  # caller speaks first: waiting for the first turn
    CONVERSING = "conversing"  # the greeting is over; full prompt in force
    # No engine session can be had: the apology plays, then the caller's message is
    # recorded, then the call is hung up (see engine_down.py). Nothing leads back.
    TAKING_MESSAGE = "taking_message"
    ENDED = "ended"


# A machine may be recognised at any time before the end, and a voicemail (CONVERSING,
# closing) may follow in any phase; so may the engine be lost for good (TAKING_MESSAGE).
_ANY_LIVE = frozenset({CallPhase.AWAITING_BEEP, CallPhase.CONVERSING, CallPhase.TAKING_MESSAGE,
                       CallPhase.ENDED})
ALLOWED: dict[CallPhase, frozenset[CallPhase]] = {
    CallPhase.AWAITING_START: _ANY_LIVE | {CallPhase.AWAITING_AMD, CallPhase.GREETING,
                                           CallPhase.LISTENING},
    CallPhase.AWAITING_AMD: _ANY_LIVE | {CallPhase.GREETING, CallPhase.LISTENING},
    CallPhase.AWAITING_BEEP: _ANY_LIVE,
    CallPhase.GREETING: _ANY_LIVE,
    CallPhase.LISTENING: _ANY_LIVE,
    CallPhase.CONVERSING: _ANY_LIVE,
    CallPhase.TAKING_MESSAGE: frozenset({CallPhase.ENDED}),
    CallPhase.ENDED: frozenset(),
}


class InvalidPhaseChange(HotlineError):
    """The call core tried a change of phase the table does not allow (a bug)."""


class Phase:
    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current = CallPhase.AWAITING_START

    def move(self, to: CallPhase) -> None:
        if to is not self.current and to not in ALLOWED[self.current]:
            raise InvalidPhaseChange(f"{self.current.value} -> {to.value}")
        self.current = to

    def is_(self, *phases: CallPhase) -> bool:
        return self.current in phases
