"""Closing a call on our side, as an explicit sequence of steps.

A goodbye, handover line or voicemail plays in full (no barge-in); once its last mark is
echoed the call is hung up or transferred through Twilio's REST API:

    LINE_WANTED ──created──▶ LINE_PLAYING ──done──▶ LINE_SENT ──marks echoed──▶ ACTED
         └────────refused (hang up without it)──────────▲

A closing with nothing more to say starts at LINE_SENT. `goodbye_cap_ms` (the runner's
timer) forces ACTED for a line that never finishes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hotline.core.commands import HangUpCall, TransferCall
from hotline.core.outcomes import Outcome


class ClosingStep(enum.Enum):
    LINE_WANTED = "line_wanted"  # the last line is a response not created yet
    LINE_PLAYING = "line_playing"  # the response saying it is going
    LINE_SENT = "line_sent"  # all of it sent (or nothing to say): waiting for it to play
    ACTED = "acted"  # the hang-up / transfer has been asked of Twilio


class ControlAction(enum.StrEnum):
    """What the call core asks of Twilio's REST API."""

    HANG_UP = "hang_up"
    TRANSFER = "transfer"


@dataclass(slots=True)
class Closing:
    outcome: Outcome
    reason: str
    transfer_to: str | None = None  # None: hang up
    step: ClosingStep = ClosingStep.LINE_SENT
    response_id: str | None = None  # the response saying the last line

    @property
    def action(self) -> ControlAction:
        return ControlAction.TRANSFER if self.transfer_to else ControlAction.HANG_UP

    @property
    def needs_engine(self) -> bool:
        """The last line is still to come from the engine."""
        return self.step in (ClosingStep.LINE_WANTED, ClosingStep.LINE_PLAYING)

    @property
    def acted(self) -> bool:
        return self.step is ClosingStep.ACTED

    def line_wanted(self) -> None:
        self.step = ClosingStep.LINE_WANTED

    def line_playing(self, response_id: str, done: bool = False) -> None:
        """The line is this response (still going, or `done` already)."""
        self.response_id = response_id
        self.step = ClosingStep.LINE_SENT if done else ClosingStep.LINE_PLAYING

    def line_created(self, response_id: str) -> None:
        """A closing response was created: the line, if one was wanted."""
        if self.step is ClosingStep.LINE_WANTED:
            self.line_playing(response_id)

    def line_done(self, response_id: str) -> None:
        if self.step is ClosingStep.LINE_PLAYING and self.response_id == response_id:
            self.step = ClosingStep.LINE_SENT

    def line_refused(self) -> None:
        """The engine refused the line: hang up without it."""
        if self.step is ClosingStep.LINE_WANTED:
            self.step = ClosingStep.LINE_SENT

    def line_lost(self) -> None:
        """The engine dropped: the line is what of it was sent (maybe nothing); no more
        comes."""
        if self.needs_engine:
            self.step = ClosingStep.LINE_SENT

    def ready(self, audio_pending: bool) -> bool:
        """The last line has been said and heard: time to act."""
        return self.step is ClosingStep.LINE_SENT and not audio_pending

    def act(self) -> HangUpCall | TransferCall:
        self.step = ClosingStep.ACTED
        return TransferCall(self.transfer_to) if self.transfer_to else HangUpCall()

    def outcome_if_caller_leaves(self) -> Outcome:
        if self.transfer_to and not self.acted:
            return Outcome.COMPLETED  # the caller left before the transfer
        return self.outcome
