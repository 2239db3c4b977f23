"""Outputs of the call core: what the runner must do. Plain slotted dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from hotline.core.outcomes import Outcome
from hotline.core.record import LeadMessage, TimelineStage, TranscriptTurn
from hotline.core.timers import TimerName


# -- to Twilio --------------------------------------------------------------------------
@dataclass(slots=True)
class TwilioMediaOut:
    payload_b64: str


@dataclass(slots=True)
class TwilioMarkOut:
    name: str


@dataclass(slots=True)
class TwilioClear:
    pass


TwilioMessage = TwilioMediaOut | TwilioMarkOut | TwilioClear


# -- to the engine ----------------------------------------------------------------------
@dataclass(slots=True)
class AppendAudio:
    audio_b64: str


@dataclass(slots=True)
class CreateResponse:
    instructions: str | None = None
    # Echoed in the `error` that refuses it, so the core knows no response is coming.
    event_id: str | None = field(default=None, compare=False)


@dataclass(slots=True)
class UpdateInstructions:
    instructions: str


@dataclass(slots=True)
class Truncate:
    item_id: str
    audio_end_ms: int


@dataclass(slots=True)
class CancelResponse:
    pass


@dataclass(slots=True)
class AddUserText:
    """A user text item in the conversation (e.g. the digits a caller pressed)."""

    text: str


@dataclass(slots=True)
class AddAssistantText:
    """An assistant message the agent said without the engine (a cached greeting)."""

    item_id: str
    text: str
    previous_item_id: str | None = None


@dataclass(slots=True)
class DeleteItem:
    item_id: str


@dataclass(slots=True)
class AddFunctionOutput:
    """A tool's answer to the model's function call."""

    call_id: str
    output: str  # JSON text


@dataclass(slots=True)
class AddFunctionCall:
    """A function call the model made, replayed into a new session after a drop."""

    call_id: str
    name: str
    arguments: str  # JSON text


EngineMessage = (
    AppendAudio | CreateResponse | UpdateInstructions | Truncate | CancelResponse | AddUserText
    | AddAssistantText | DeleteItem | AddFunctionOutput | AddFunctionCall
)


# -- to the runner ----------------------------------------------------------------------
@dataclass(slots=True)
class SendToTwilio:
    message: TwilioMessage


@dataclass(slots=True)
class SendToEngine:
    message: EngineMessage


@dataclass(slots=True)
class Record:
    item: TimelineStage | TranscriptTurn | LeadMessage


@dataclass(slots=True)
class RunTool:
    """Run the tool the model called, off the media loop; its answer comes back as
    `ToolFinished`."""

    call_id: str
    name: str
    arguments: str


@dataclass(slots=True)
class HangUpCall:
    """End the phone call through Twilio's REST API (the stream's `stop` follows)."""


@dataclass(slots=True)
class TransferCall:
    """Redirect the phone call to `<Dial>number</Dial>` through Twilio's REST API."""

    number: str


@dataclass(slots=True)
class KeepMessageAudio:
    """The caller's recorded message (base64 μ-law frames, as received): the runner keeps
    it, and after the call it is written as a WAV to `audio_file` (relative to the data
    directory), off the media loop."""

    audio_file: str
    payloads_b64: tuple[str, ...] = field(repr=False)


@dataclass(slots=True)
class StartTimer:
    timer: TimerName
    delay_ms: int


@dataclass(slots=True)
class CancelTimer:
    timer: TimerName


@dataclass(slots=True)
class EndCall:
    outcome: Outcome


Command = (
    SendToTwilio | SendToEngine | Record | StartTimer | CancelTimer | EndCall | RunTool
    | HangUpCall | TransferCall | KeepMessageAudio
)
