"""Inputs of the call core: what happened, on either socket or on the clock.

Plain slotted dataclasses (built per audio frame: no validation, no freezing). The codecs
build them from wire text; the runner adds the socket-closed and timer events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hotline.core.amd import AnsweredBy
from hotline.core.closing import ControlAction
from hotline.core.record import LeadMessage
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import ToolEffect


# -- Twilio Media Streams ---------------------------------------------------------------
@dataclass(slots=True)
class TwilioConnected:
    protocol: str
    version: str


@dataclass(slots=True)
class TwilioStart:
    stream_sid: str
    call_sid: str
    account_sid: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class TwilioMedia:
    payload_b64: str
    timestamp_ms: int


@dataclass(slots=True)
class TwilioMark:
    name: str


@dataclass(slots=True)
class TwilioDtmf:
    digit: str


@dataclass(slots=True)
class TwilioStop:
    pass


@dataclass(slots=True)
class TwilioClosed:
    """The Twilio socket closed (with or without a stop)."""


# -- Realtime engine --------------------------------------------------------------------
@dataclass(slots=True)
class EngineSessionUpdated:
    instructions_chars: int


@dataclass(slots=True)
class EngineResponseCreated:
    response_id: str


@dataclass(slots=True)
class EngineAudioDelta:
    response_id: str
    item_id: str
    delta_b64: str


@dataclass(slots=True)
class EngineAgentTranscript:
    response_id: str
    item_id: str
    transcript: str


@dataclass(slots=True)
class EngineCallerTranscript:
    item_id: str
    transcript: str


@dataclass(slots=True)
class EngineSpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(slots=True)
class EngineSpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(slots=True)
class EngineResponseDone:
    response_id: str
    status: str
    reason: str | None = None


@dataclass(slots=True)
class EngineTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(slots=True)
class EngineError:
    code: str
    message: str
    event_id: str | None = None


@dataclass(slots=True)
class EngineInputCommitted:
    """The caller's turn became a conversation item (server VAD committed the buffer)."""

    item_id: str


@dataclass(slots=True)
class EngineFunctionCall:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(slots=True)
class EngineClosed:
    """The engine socket closed."""


@dataclass(slots=True)
class EngineUnavailable:
    """No engine session can be had for this call: connecting failed after its retries
    (at the start, or while reconnecting after a drop)."""

    detail: str


# -- the engine link (issue 10): a drop mid-call and the resume after it ------------------
@dataclass(slots=True)
class EngineLost:
    """The engine socket closed while the call goes on: the runner reconnects."""

    detail: str  # the close code and reason


@dataclass(slots=True)
class EngineResumed:
    """A new engine session (full prompt, empty conversation) replaced the lost one."""


@dataclass(slots=True)
class EngineAgentTranscriptDelta:
    """Part of the agent's words as it speaks them (what a cut line said so far)."""

    item_id: str
    delta: str


@dataclass(slots=True)
class TimerFired:
    timer: TimerName


# -- what the runner's side tasks report back -------------------------------------------
@dataclass(slots=True)
class ToolFinished:
    """A tool the model called has its answer (see hotline.tools.ToolOutcome)."""

    call_id: str
    name: str
    output_json: str
    effect: ToolEffect
    error: bool = False
    message: LeadMessage | None = None


@dataclass(slots=True)
class AmdVerdict:
    """Twilio's asynchronous answering-machine verdict (`AnsweredBy`)."""

    answered_by: AnsweredBy


@dataclass(slots=True)
class CallAborted:
    """The runner ended the call on a failure of its own (a pump or side task raised)."""

    detail: str


@dataclass(slots=True)
class CallControlFailed:
    """A hang-up or transfer through Twilio's REST API did not go through."""

    action: ControlAction
    detail: str


@dataclass(slots=True)
class DrainDeadline:
    """The instance is shutting down and this call outlived its drain: time to say goodbye."""


TwilioEvent = (
    TwilioConnected | TwilioStart | TwilioMedia | TwilioMark | TwilioDtmf | TwilioStop
    | TwilioClosed
)
EngineEvent = (
    EngineSessionUpdated | EngineResponseCreated | EngineAudioDelta | EngineAgentTranscript
    | EngineCallerTranscript | EngineSpeechStarted | EngineSpeechStopped | EngineResponseDone
    | EngineTruncated | EngineError | EngineClosed | EngineInputCommitted | EngineFunctionCall
    | EngineUnavailable | EngineLost | EngineResumed | EngineAgentTranscriptDelta
)
SideEvent = (TimerFired | ToolFinished | AmdVerdict | CallControlFailed | CallAborted
             | DrainDeadline)
CallEvent = TwilioEvent | EngineEvent | SideEvent


class Unhandled:
    """A well-formed message the core has no use for (like h11's NEED_DATA: a named value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNHANDLED"


UNHANDLED = Unhandled()
