"""Each measured call (`CallSample`), the engine session it is matched to, and the numbers
derived from the two; one strategy's run on one profile (`StrategyRun`).

Calls → engine sessions. The engine cannot see the CallSid, so the benchmark gives each
concurrency slot ("lane") its own business (branches of one dental group: same prompts but
for the branch name). A lane carries one call at a time, so its calls are strictly
sequential. A session belongs to the lane whose branch its first instructions name, and to
the lane's call k whose interval [webhook sent, next call's webhook sent) contains the
session's connect start (`session.created` minus the profile's connect time). A session is
opened either by the call's webhook (warm) or at its stream `start` (cold), so this interval
holds it and no other call's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hotline.benchmarks.engine_records import (
    SessionRecord,
    connect_started_at,
    covered_ms,
    created_at,
    engine_intervals,
    first_instructions,
    first_received,
)
from hotline.benchmarks.strategies import Strategy
from hotline.benchmarks.tenants import lane_of
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine import LatencyProfile


@dataclass(slots=True)
class CallSample:
    index: int  # -1 for a warm-up call
    lane: int
    phone: PhoneCallResult
    session: SessionRecord | None = None
    sessions_matched: int = 0
    # When the TwiML arrived, if the phone then held it (`stream_gap_ms`); else the phone's.
    twiml_arrived_at: float | None = None
    # Set by `analyse`:
    live_greeting: bool | None = None  # the engine produced the greeting during this call
    engine_ms: float | None = None
    overhead_ms: float | None = None
    problem: str | None = None  # the call failed: no (a)/(b)
    unattributed: str | None = None  # (a) and (b) stand, but (c) could not be computed
    # Voicemail calls: the voicemail's first frame (`calls.first_voicemail_frame_at`).
    voicemail_media_at: float | None = None

    @property
    def warmup(self) -> bool:
        return self.index < 0

    @property
    def webhook_to_twiml_ms(self) -> float | None:
        if self.twiml_arrived_at is not None and self.phone.webhook_sent_at is not None:
            return (self.twiml_arrived_at - self.phone.webhook_sent_at) * 1000
        return self.phone.webhook_to_twiml_ms

    @property
    def start_to_first_media_ms(self) -> float | None:
        return self.phone.start_to_first_media_ms

    @property
    def ok(self) -> bool:
        return self.problem is None and self.start_to_first_media_ms is not None

    @property
    def beep_to_voicemail_ms(self) -> float | None:
        """The machine's beep ended → the voicemail's first frame arrived."""
        beep = self.phone.beep_ended_at
        if beep is None or self.voicemail_media_at is None:
            return None
        return (self.voicemail_media_at - beep) * 1000

    @property
    def verdict_to_voicemail_ms(self) -> float | None:
        """The AMD verdict was sent → the voicemail's first frame arrived."""
        verdict = self.phone.amd_callback_at
        if verdict is None or self.voicemail_media_at is None:
            return None
        return (self.voicemail_media_at - verdict) * 1000


def voicemail_problem(sample: CallSample) -> str | None:
    result = sample.phone
    problem = call_problem(result)
    if problem is not None and result.start_sent_at is None:
        return problem
    if result.failure:
        return f"phone simulator failed: {result.failure}"
    if result.beep_ended_at is None:
        return "the machine never beeped"
    if result.amd_answered_by != "machine_end_beep":
        return f"AMD verdict {result.amd_answered_by!r}, not machine_end_beep"
    if sample.voicemail_media_at is None:
        return "no voicemail audio after the beep"
    return None


def call_problem(result: PhoneCallResult) -> str | None:
    if result.failure:
        return f"phone simulator failed: {result.failure}"
    if result.application_error:
        return f"application error {result.application_error_code}: {result.application_error}"
    if result.protocol_errors:
        return f"protocol error: {result.protocol_errors[0].message}"
    if result.start_sent_at is None:
        return "the media stream never started"
    if result.first_media_at is None:
        return f"no greeting audio (stream closed by {result.closed_by})"
    return None


def match_sessions(samples: Sequence[CallSample], sessions: Sequence[SessionRecord],
                   profile: LatencyProfile) -> None:
    """Give each call its engine session (see the module docstring)."""
    by_lane: dict[int, list[SessionRecord]] = {}
    for session in sessions:
        instructions = first_instructions(session)
        lane = lane_of(instructions) if instructions is not None else None
        created = created_at(session)
        if lane is not None and created is not None:
            by_lane.setdefault(lane, []).append(session)
    lanes: dict[int, list[CallSample]] = {}
    for sample in samples:
        lanes.setdefault(sample.lane, []).append(sample)
    for lane, calls in lanes.items():
        calls.sort(key=lambda s: s.phone.webhook_sent_at or math.inf)
        candidates = by_lane.get(lane, [])
        for k, sample in enumerate(calls):
            begin = sample.phone.webhook_sent_at
            if begin is None:
                continue
            end = calls[k + 1].phone.webhook_sent_at if k + 1 < len(calls) else math.inf
            end = end if end is not None else math.inf
            mine = [s for s in candidates
                    if begin <= (connect_started_at(s, profile) or -math.inf) < end]
            sample.sessions_matched = len(mine)
            if not mine:
                continue
            # A warm session that failed and was replaced by a cold one: the one that spoke.
            first_media = sample.phone.first_media_at or math.inf
            spoke = [s for s in mine
                     if first_received(s, "response.create", before=first_media)]
            sample.session = (spoke or mine)[-1]


def analyse(sample: CallSample, profile: LatencyProfile, strategy: Strategy) -> None:
    """The engine's time on this call's path and our overhead, from the session's records."""
    phone = sample.phone
    sample.problem = sample.problem or call_problem(phone)
    if sample.problem is not None:
        return
    assert phone.start_sent_at is not None and phone.first_media_at is not None
    b = (phone.first_media_at - phone.start_sent_at) * 1000
    session = sample.session
    requested = None
    if session is not None:
        # The greeting may have been asked for before `start` (a warm session does that);
        # only the engine's time inside [start, first frame] is taken off (b) below.
        requested = first_received(session, "response.create", before=phone.first_media_at)
    sample.live_greeting = requested is not None
    if requested is None:
        if strategy.live_greeting:
            sample.unattributed = ("no engine session found for this call" if session is None
                                   else "its engine session got no response.create before "
                                        "the first frame")
            return
        # Cached greeting: no engine on the path; everything from start to audio is ours.
        sample.engine_ms = 0.0
        sample.overhead_ms = b
        return
    assert session is not None
    spans = engine_intervals(session, profile, requested)
    sample.engine_ms = covered_ms(spans, phone.start_sent_at, phone.first_media_at)
    sample.overhead_ms = b - sample.engine_ms


# -- one strategy on one profile --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RenderWait:
    """Before measuring, a server with the greeting cache renders its greetings (the engine
    speaks each once) and the run waits for them: this server's renders and that wait."""

    greetings: int  # greetings the run waited for (in the cache when measuring began)
    rendered: int  # of those, rendered by the engine (the others came from disk)
    startup_s: float  # start_server() called → it returned (rendering already under way)
    waited_s: float  # it returned → every greeting was in the cache

    @property
    def total_s(self) -> float:
        """Server start → every greeting in the cache: how long the renders took."""
        return self.startup_s + self.waited_s


@dataclass(slots=True)
class StrategyRun:
    strategy: Strategy
    profile_name: str
    profile: LatencyProfile
    samples: list[CallSample]
    warmups: list[CallSample]
    sessions: list[SessionRecord]
    compact_chars: int
    full_chars: int
    wall_s: float
    direction: str = "inbound"  # "inbound" | "outbound" | "voicemail"
    render: RenderWait | None = None  # None: no greeting cache, nothing waited for

    @property
    def voicemail(self) -> bool:
        return self.direction == "voicemail"

    @property
    def ok(self) -> list[CallSample]:
        if self.voicemail:
            return [s for s in self.samples if s.problem is None
                    and s.beep_to_voicemail_ms is not None]
        return [s for s in self.samples if s.ok]

    @property
    def failed(self) -> list[CallSample]:
        ok = {id(s) for s in self.ok}
        return [s for s in self.samples if id(s) not in ok]

    @property
    def engine_first_audio_ms(self) -> float:
        """The engine's modeled time to first audio with the compact greeting prompt."""
        return self.profile.first_audio_ms(self.compact_chars)
