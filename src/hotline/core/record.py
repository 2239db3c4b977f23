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
    """A message taken for the business: by the agent (the `take_message` tool), or recorded
    from the caller's voice when the engine could not be had (with its audio)."""

    name: str
    phone: str
    message: str
    taken_ms: int  # ms since the webhook arrived
    # Stable across re-writes of the record: f"{call_sid}-{n}", n counting the call's
    # messages from 1. Empty: the store gives it from the message's position.
    message_id: str = ""
    # The recorded audio: a WAV path relative to HOTLINE_DATA_DIR, and its length.
    audio_file: str | None = None
    audio_ms: int | None = None


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
    # Both sides as a WAV (the business records calls): its path relative to
    # HOTLINE_DATA_DIR and its length. Its time 0 is the call's (the webhook), so a turn's
    # `started_ms` is its place in the recording. Once the retention sweeper deleted it,
    # the path is None and `recording_deleted_at` says when.
    recording_file: str | None = None
    recording_ms: int | None = None
    recording_deleted_at: datetime | None = None
