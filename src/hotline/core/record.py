"""What is kept of a call once it ends: transcript, timeline, outcome. Plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hotline.core.outcomes import Outcome


@dataclass(slots=True)
class TranscriptTurn:
    speaker: str  # "caller" | "agent"
    text: str
    started_ms: int  # ms since the webhook arrived
    ended_ms: int
    interrupted: bool = False


@dataclass(slots=True)
class TimelineStage:
    stage: str
    ms: float  # ms since the webhook arrived
    detail: str = ""


@dataclass(slots=True)
class LeadMessage:
    """A message the agent took for the business (the `take_message` tool)."""

    name: str
    phone: str
    message: str
    taken_ms: int  # ms since the webhook arrived


@dataclass(slots=True)
class CallRecord:
    call_sid: str
    business_slug: str
    direction: str  # "inbound" | "outbound"
    from_number: str
    to_number: str
    status: str
    outcome: Outcome | None  # None: not known yet (ringing, in progress)
    started_at: datetime
    ended_at: datetime | None
    template_name: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    transcript: list[TranscriptTurn] = field(default_factory=list)
    timeline: list[TimelineStage] = field(default_factory=list)
    messages: list[LeadMessage] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)  # the core's CallStats, not stored
