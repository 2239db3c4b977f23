"""`hotline bench greeting`: how soon the caller hears the greeting, strategy by strategy.

One run plays N inbound calls (default 50) at concurrency C (default 10) against a fresh
Hotline server per strategy, for each engine latency profile, and reports, as the simulated
phone measured them from outside:

(a) webhook → TwiML          `PhoneCallResult.webhook_to_twiml_ms`
(b) stream `start` → first   `PhoneCallResult.start_to_first_media_ms`
    greeting frame
(c) our own overhead         (b) minus the engine's own time on the path, from the engine
                             simulator's records of that call's session (see
                             `engine_intervals`, `analyse`); (b) itself when the greeting
                             came from the greeting cache (no engine on the path).

Strategies (server settings, nothing else differs):

    naive         connect at `start`, full prompt, then ask for the greeting
    seed          compact prompt built in the webhook, connect at `start`, greet with the
                  compact prompt, upgrade to the full prompt after the greeting
    hotline-warm  the engine session is prepared by the webhook; live greeting (compact)
    hotline       warm session + the greeting pre-rendered and played from memory

The server (uvicorn on a free port) runs in this process; the realtime engine simulator and
the simulated phone run together in a child process (`ProcessSimulators`), or on the
same event loop as the server (`LocalSimulators`: the tests, `--same-process`). All traffic
goes over real loopback sockets. The phone paces its media at real time. Each call listens
to the first 300 ms of the greeting, then hangs up.

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

import asyncio
import contextlib
import dataclasses
import datetime
import gc
import itertools
import json
import logging
import math
import os
import platform
import re
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hotline.business import BusinessConfig
from hotline.prompts import compact_prompt, full_prompt
from hotline.server import RunningServer, start_server
from hotline.settings import Settings
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine import EngineSimulator, LatencyProfile, Received, SimulatedSession
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import CallScript, Hangup, WaitForAgentAudio
from hotline.store.database import Store

ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-auth-token"
OPENAI_KEY = "sk-bench"
LISTEN_MS = 300  # each call hears this much of the greeting, then hangs up
DEFAULT_CALLS = 50
DEFAULT_CONCURRENCY = 10
DEFAULT_RAMP_MS = 25.0  # the first C calls start 25 ms apart
DEFAULT_OUTPUT = Path("docs/benchmarks.md")
MACHINE_NOTE = "shared, noisy 2-core machine"


# -- strategies and profiles -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    warm_sessions: bool
    greeting_cache: bool
    greeting_prompt: str  # "compact" | "full"
    summary: str

    def settings(self) -> dict[str, Any]:
        return {"warm_sessions": self.warm_sessions, "greeting_cache": self.greeting_cache,
                "greeting_prompt": self.greeting_prompt}

    @property
    def live_greeting(self) -> bool:
        """The engine speaks the greeting on the call (no cached audio)."""
        return not self.greeting_cache


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("naive", False, False, "full",
             "connect at start, full prompt, then ask for the greeting"),
    Strategy("seed", False, False, "compact",
             "compact prompt built in the webhook; connect at start; greet; upgrade after"),
    Strategy("hotline-warm", True, False, "compact",
             "engine session prepared by the webhook; live greeting with the compact prompt"),
    Strategy("hotline", True, True, "compact",
             "warm session + greeting pre-rendered by the engine, played from memory"),
)}
BASELINE = "hotline"

PROFILES: dict[str, Callable[[], LatencyProfile]] = {
    "zero": LatencyProfile.zero,
    "modeled": LatencyProfile.modeled,
}


def describe_profile(profile: LatencyProfile) -> str:
    if not (profile.connect_ms or profile.session_update_ms or profile.first_audio_base_ms
            or profile.first_audio_per_1000_chars_ms):
        return "no delays"
    pacing = "real-time audio" if profile.realtime_factor == 1 else (
        f"audio at {profile.realtime_factor:g}× real time")
    return (f"connect {profile.connect_ms:g} ms, session.update {profile.session_update_ms:g} "
            f"ms, first audio {profile.first_audio_base_ms:g} ms + "
            f"{profile.first_audio_per_1000_chars_ms:g} ms per 1000 instruction chars, "
            f"{pacing}")


# -- the businesses: one per lane -------------------------------------------------------------
BRANCHES = ("Oakland", "Berkeley", "Alameda", "Fremont", "Hayward", "San Leandro",
            "Walnut Creek", "Concord", "Richmond", "Daly City", "San Mateo", "Redwood City",
            "Palo Alto", "Mountain View", "Sunnyvale", "San Jose")
_LANE_IN_INSTRUCTIONS = re.compile(r"at the (.+?) clinic of Bayside Family Dental")


def branch_name(lane: int) -> str:
    return BRANCHES[lane] if lane < len(BRANCHES) else f"Bay Area {lane + 1}"


def lane_number(lane: int) -> str:
    return f"+1510555{2000 + lane:04d}"


def bench_business(lane: int) -> BusinessConfig:
    """A realistic tenant: compact prompt ~850 chars, full prompt ~3500 chars."""
    branch = branch_name(lane)
    return BusinessConfig(
        slug=f"bayside-dental-{lane + 1}",
        name=f"Bayside Family Dental ({branch})",
        language="en",
        voice="marin",
        greeting=(f"Thank you for calling Bayside Family Dental in {branch}, this is Maya. "
                  "How can I help you today?"),
        role=(f"You are Maya, the front-desk receptionist at the {branch} clinic of Bayside "
              "Family Dental, a group of family dental practices in the San Francisco Bay "
              "Area. You answer the phone for patients and for people who want to become "
              "patients: you book, move and cancel appointments, answer questions about the "
              "clinic, and take messages for the dentists and the billing team."),
        tone=("warm, calm and brief; one question at a time; plain words, no dental jargon; "
              "repeat names, dates and times back to confirm them"),
        greeting_rules=("Say the greeting exactly once, word for word, then stop and listen. "
                        "If the caller speaks over you, stop at once and let them finish. "
                        "Never add a second question to the greeting."),
        knowledge=(
            f"The {branch} clinic is open Monday to Friday 8:00-18:00 and Saturday 9:00-14:00; "
            "closed on Sundays and public holidays. Three dentists work here: Dr. Elena Ruiz "
            "(general and family dentistry, Monday to Thursday), Dr. Sam Okafor (general "
            "dentistry and crowns, Tuesday to Saturday) and Dr. Priya Natarajan (children and "
            "teenagers, Monday, Wednesday and Friday). Two hygienists, Lena and Marco, do "
            "cleanings every weekday. Services: check-ups and cleanings (45 minutes), "
            "fillings, crowns and bridges, root canals on the first molars and simpler, "
            "whitening, night guards, children's dentistry from age two, and emergency "
            "appointments for pain, swelling or a broken tooth, kept free every morning at "
            "8:00 and 8:45. Implants, wisdom teeth and orthodontics are referred to partner "
            "specialists. New patients book a 60-minute first visit with X-rays. The clinic "
            "has free parking behind the building, step-free access and a lift. Prices: "
            "check-up and cleaning $145, filling from $180, whitening $390. Payment by card, "
            "cash or HSA card; monthly plans for treatments over $1,000."),
        policies=(
            "Never give medical or dental advice and never say a problem is or is not serious: "
            "offer the earliest appointment, and for heavy bleeding, swelling that affects "
            "breathing or swallowing, or a high fever, tell the caller to call 911 or go to "
            "the emergency room now. Cancellations and changes need 24 hours' notice; later "
            "ones, and missed appointments, cost $50, waived once a year. Children under 16 "
            "come with a parent or guardian. Never read out or confirm a patient's records, "
            "balance or insurance details on the phone: the billing team calls back after "
            "checking identity. Take a message (name, number, best time to call, the reason "
            "in one sentence) for anything you cannot settle, and say when the team will "
            "call back: the same day for messages before 15:00, otherwise the next working "
            "day. Do not promise prices for treatments that need an examination first."),
        faq=(
            "Q: Do you take my insurance? A: Most PPO plans, Delta Dental, MetLife, Cigna and "
            "Aetna; bring the card to the first visit, and the front desk checks the cover "
            "before treatment. HMO plans are not accepted. "
            "Q: Can I get an appointment today? A: Emergency slots are kept every morning; "
            "otherwise the next free check-up is usually within a week. "
            "Q: Do you see children? A: Yes, from age two, with Dr. Natarajan. "
            "Q: Can I come in with a toothache? A: Yes: offer the next emergency slot. "
            "Q: How long is a cleaning? A: About 45 minutes; a first visit takes an hour. "
            "Q: Do you do sedation? A: Nitrous oxide for anxious patients; no general "
            "anaesthesia at this clinic. "
            "Q: Where do I park? A: Free parking behind the building, entrance on the side "
            "street. Q: Can I pay in instalments? A: Yes, for treatments over $1,000."),
        phone_numbers=(lane_number(lane),),
        bot_speaks_first=True,
        timezone="America/Los_Angeles",
    )


def lane_of(instructions: str) -> int | None:
    """The lane whose business these instructions are for (None: not a lane's, e.g. the
    server's greeting-render sessions)."""
    match = _LANE_IN_INSTRUCTIONS.search(instructions)
    if match is None:
        return None
    branch = match.group(1)
    if branch in BRANCHES:
        return BRANCHES.index(branch)
    number = re.fullmatch(r"Bay Area (\d+)", branch)
    return int(number.group(1)) - 1 if number else None


def prompt_sizes(business: BusinessConfig) -> tuple[int, int]:
    """(compact, full) prompt lengths in characters, as the server builds them."""
    return (len(compact_prompt(business, business.greeting)), len(full_prompt(business)))


# -- engine records of one session ------------------------------------------------------------
_PAYLOAD_KEYS = ("audio", "delta")
# Streams of events the analysis does not need (only the first audio delta matters): left
# out, so that the benchmark's own records stay small in the server's process.
_STREAMED = frozenset({"input_audio_buffer.append", "response.output_audio.delta",
                       "response.output_audio_transcript.delta"})


@dataclass(slots=True)
class SessionRecord:
    """What the engine simulator recorded about one session, without its connection (so it
    crosses processes), without audio payloads (replaced by their length) and without the
    event streams (caller audio appends; every output delta but the first)."""

    id: str
    received: list[Received]
    sent: list[Received]
    instructions_history: list[tuple[float, str]]

    @classmethod
    def of(cls, session: SimulatedSession) -> SessionRecord:
        return cls(session.id, _essential(session.received), _essential(session.sent),
                   list(session.instructions_history))


def _essential(records: Iterable[Received]) -> list[Received]:
    kept: list[Received] = []
    seen: set[str] = set()
    for record in records:
        if record.type in _STREAMED:
            if record.type in seen:
                continue
            seen.add(record.type)
        kept.append(_without_audio(record))
    return kept


def _without_audio(record: Received) -> Received:
    event = record.event
    if not any(isinstance(event.get(key), str) for key in _PAYLOAD_KEYS):
        return record
    slim = {key: (f"<{len(value)} base64 chars>" if key in _PAYLOAD_KEYS
                  and isinstance(value, str) else value) for key, value in event.items()}
    return Received(record.at, record.type, slim)


def first_instructions(session: SessionRecord) -> str | None:
    return session.instructions_history[0][1] if session.instructions_history else None


def created_at(session: SessionRecord) -> float | None:
    """When the simulator accepted the connection (its `session.created`)."""
    for event in session.sent:
        if event.type == "session.created":
            return event.at
    return None


def connect_started_at(session: SessionRecord, profile: LatencyProfile) -> float | None:
    """When the connection began: the simulator holds each handshake for the profile's
    connect time before accepting it (it records no earlier moment)."""
    created = created_at(session)
    return None if created is None else created - profile.connect_ms / 1000


def first_received(session: SessionRecord, type_: str, *, after: float = -math.inf,
                   before: float = math.inf) -> float | None:
    for event in session.received:
        if event.type == type_ and after <= event.at <= before:
            return event.at
    return None


def first_sent(session: SessionRecord, type_: str, *, after: float = -math.inf) -> float | None:
    for event in session.sent:
        if event.type == type_ and event.at >= after:
            return event.at
    return None


def engine_intervals(session: SessionRecord, profile: LatencyProfile,
                     greeting_requested_at: float) -> list[tuple[float, float]]:
    """The spans in which the engine itself held up the greeting: connecting (the profile's
    connect time, ending at `session.created`), applying each `session.update` (received →
    its `session.updated`), and producing the greeting (`response.create` received → first
    `response.output_audio.delta` sent)."""
    spans: list[tuple[float, float]] = []
    created, began = created_at(session), connect_started_at(session, profile)
    if created is not None and began is not None:
        spans.append((began, created))
    updated = [e.at for e in session.sent if e.type == "session.updated"]
    used = 0
    for event in session.received:
        if event.type != "session.update":
            continue
        while used < len(updated) and updated[used] < event.at:
            used += 1
        if used < len(updated):
            spans.append((event.at, updated[used]))
            used += 1
    first_delta = first_sent(session, "response.output_audio.delta", after=greeting_requested_at)
    if first_delta is not None:
        spans.append((greeting_requested_at, first_delta))
    return spans


def covered_ms(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Milliseconds of [start, end] covered by the union of `spans`."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in spans if b > start and a < end)
    total = 0.0
    current_start = current_end = None
    for a, b in clipped:
        if current_end is None or a > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total * 1000


# -- one call ---------------------------------------------------------------------------------
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

    @property
    def ok(self) -> list[CallSample]:
        return [s for s in self.samples if s.ok]

    @property
    def failed(self) -> list[CallSample]:
        return [s for s in self.samples if not s.ok]

    @property
    def engine_first_audio_ms(self) -> float:
        """The engine's modeled time to first audio with the compact greeting prompt."""
        return self.profile.first_audio_ms(self.compact_chars)


def _missing_settings(strategy: Strategy) -> list[str]:
    return [name for name in strategy.settings() if name not in Settings.model_fields]


def server_settings(strategy: Strategy, *, workdir: Path, database_url: str,
                    engine_url: str) -> Settings:
    missing = _missing_settings(strategy)
    if missing:
        raise RuntimeError(f"this Hotline has no setting {', '.join(missing)}: strategy "
                           f"{strategy.name!r} cannot be configured")
    values: dict[str, Any] = {
        "database_url": database_url, "openai_api_key": OPENAI_KEY,
        "openai_realtime_url": engine_url, "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN, "spool_path": str(workdir / "spool.jsonl"),
        "api_token": None, "redis_url": None, "log_level": "WARNING",
        **strategy.settings(),
    }
    values["greeting_cache_dir"] = str(workdir / "greeting-cache")
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def _greetings_ready(server: RunningServer, businesses: Sequence[BusinessConfig],
                           timeout_s: float = 120) -> None:
    """Until the server's greeting cache holds every lane's greeting."""
    try:
        await server.services.greetings.wait_ready(list(businesses), timeout_s)
    except TimeoutError:
        raise RuntimeError("the server's greeting cache was not ready in "
                           f"{timeout_s:.0f} s") from None


class TwilioStreamGap(httpx.AsyncBaseTransport):
    """The phone's HTTP transport. With a gap, each webhook answer is held that long after it
    has arrived, before the phone acts on it: Twilio's own time between fetching the TwiML
    and opening the media stream, which the simulated phone does not take. When each answer
    arrived is kept by CallSid, so (a) does not include the gap."""

    def __init__(self, gap_ms: float) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._gap_s = gap_ms / 1000
        self.arrived: dict[str, float] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self._gap_s > 0:
            await response.aread()
            arrived = time.monotonic()
            form = parse_qs((await request.aread()).decode())
            self.arrived[form.get("CallSid", [""])[0]] = arrived
            await asyncio.sleep(self._gap_s)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """Calls for the simulated phone to place: `calls` calls, `concurrency` at a time, one
    lane (business number) per call in flight; `warmup`: one call per lane, untimed."""

    server_url: str
    numbers: tuple[str, ...]  # lane i's business number
    calls: int
    concurrency: int
    warmup: bool = False
    listen_ms: int = LISTEN_MS
    stream_gap_ms: float = 0.0
    ramp_ms: float = 0.0  # the first `concurrency` calls start this far apart


@dataclass(slots=True)
class PlayedCall:
    index: int  # -1: a warm-up call
    lane: int
    phone: PhoneCallResult
    twiml_arrived_at: float | None = None


class Simulators(Protocol):
    """The outside world of one strategy run: the realtime engine and the phone."""

    async def start(self, profile: LatencyProfile) -> str: ...  # the engine's URL
    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]: ...
    async def sessions(self) -> list[SessionRecord]: ...
    async def stop(self) -> None: ...


class LocalSimulators:
    """The engine simulator and the simulated phone on this process's event loop."""

    def __init__(self) -> None:
        self._engine: EngineSimulator | None = None

    async def start(self, profile: LatencyProfile) -> str:
        self._engine = EngineSimulator(profile, api_key=OPENAI_KEY)
        await self._engine.start()
        return self._engine.url

    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]:
        script = CallScript([WaitForAgentAudio(played_ms=request.listen_ms, timeout_ms=20_000),
                             Hangup()])
        lanes = len(request.numbers)
        transport = TwilioStreamGap(request.stream_gap_ms)
        async with httpx.AsyncClient(trust_env=False, transport=transport) as http:
            phone = SimulatedPhone(server_url=request.server_url, auth_token=AUTH_TOKEN,
                                   account_sid=ACCOUNT_SID, http=http)

            async def place(index: int, lane: int) -> PlayedCall:
                result = await phone.call(to=request.numbers[lane],
                                          from_=f"+1415555{(index + 1) % 10_000:04d}",
                                          script=script)
                # Audio and per-frame logs are not analysed: keep results small.
                result.heard_segments.clear()
                result.caller_audio.clear()
                del result.media_received[1:]
                result.marks_echoed.clear()
                return PlayedCall(index, lane, result, transport.arrived.pop(result.call_sid,
                                                                             None))

            if request.warmup:
                return list(await asyncio.gather(*(place(-1, lane) for lane in range(lanes))))

            semaphore = asyncio.Semaphore(request.concurrency)
            free_lanes = list(range(lanes))
            admitted = itertools.count()

            async def measured(index: int) -> PlayedCall:
                async with semaphore:
                    # A ramp, so that the lanes do not run in lockstep (C webhooks at once).
                    order = next(admitted)
                    if order < request.concurrency and request.ramp_ms:
                        await asyncio.sleep(order * request.ramp_ms / 1000)
                    lane = free_lanes.pop()  # a lane carries one call at a time
                    try:
                        return await place(index, lane)
                    finally:
                        free_lanes.append(lane)
                        if on_call is not None:
                            on_call()

            return list(await asyncio.gather(*(measured(i) for i in range(request.calls))))

    async def sessions(self) -> list[SessionRecord]:
        return [SessionRecord.of(s) for s in self._engine.sessions] if self._engine else []

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.stop()


class ProcessSimulators:
    """`LocalSimulators` in a child Python process, so that the server has this process and
    its event loop to itself, as in production. Times stay comparable: both processes read
    the same monotonic clock (CLOCK_MONOTONIC), and only the phone's and the engine's times
    (both in the child) are compared. Requests and replies are pickled over a local
    `multiprocessing.connection` (the child is a plain `python -c`, so it never re-imports
    the parent's `__main__`). Use as `async with ProcessSimulators() as sims`."""

    START_TIMEOUT_S = 60.0

    def __init__(self, loop: str = "uvloop") -> None:
        self._loop = loop
        self._conn: Connection | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ProcessSimulators:
        authkey = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=authkey)
        host, port = listener.address
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from hotline.bench_greeting import simulators_main; "
            "simulators_main()", host, str(port), self._loop, stdin=asyncio.subprocess.PIPE)
        assert self._process.stdin is not None
        self._process.stdin.write(authkey.hex().encode() + b"\n")
        await self._process.stdin.drain()
        self._process.stdin.close()
        accepting = asyncio.get_running_loop().run_in_executor(None, listener.accept)
        try:
            self._conn = await asyncio.wait_for(asyncio.shield(accepting),
                                                self.START_TIMEOUT_S)
        except TimeoutError:
            self._process.kill()
            raise RuntimeError("the simulators process did not start (exit code "
                               f"{self._process.returncode})") from None
        finally:
            listener.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        process, conn = self._process, self._conn
        if conn is not None:
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                await self._request("exit")
            conn.close()
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def start(self, profile: LatencyProfile) -> str:
        return await self._request("start", profile)  # type: ignore[no-any-return]

    async def play(self, request: PlayRequest,
                   on_call: Callable[[], None] | None = None) -> list[PlayedCall]:
        return await self._request("play", request, on_tick=on_call)  # type: ignore[no-any-return]

    async def sessions(self) -> list[SessionRecord]:
        return await self._request("sessions")  # type: ignore[no-any-return]

    async def stop(self) -> None:
        await self._request("stop")

    async def _request(self, command: str, argument: object = None, *,
                       on_tick: Callable[[], None] | None = None) -> object:
        conn = self._conn
        assert conn is not None, "use ProcessSimulators as an async context manager"
        conn.send((command, argument))
        while True:
            try:
                kind, value = await asyncio.to_thread(conn.recv)
            except EOFError:
                raise RuntimeError("the simulators process exited") from None
            if kind == "tick":
                if on_tick is not None:
                    on_tick()
                continue
            if kind == "error":
                raise RuntimeError(f"simulators process: {value}")
            return value


def simulators_main() -> None:
    """The child of `ProcessSimulators`: `python -c ... HOST PORT LOOP`, the connection's
    key on stdin. Serves requests until `exit`."""
    host, port, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    logging.basicConfig(level=logging.ERROR)
    conn = Client((host, port), authkey=authkey)
    try:
        run_with_loop(lambda: _serve_simulators(conn), loop=loop)
    finally:
        conn.close()


async def _serve_simulators(conn: Connection) -> None:
    local = LocalSimulators()
    while True:
        command, argument = await asyncio.to_thread(conn.recv)
        try:
            if command == "start":
                reply: object = await local.start(argument)
                # The simulators are not what is measured: keep full collections of their
                # long-lived objects (imports, the engine) from stalling the phone's clock.
                gc.collect()
                gc.freeze()
            elif command == "play":
                reply = await local.play(argument, on_call=lambda: conn.send(("tick", None)))
            elif command == "sessions":
                reply = await local.sessions()
            elif command == "stop":
                reply = await local.stop()
            elif command == "exit":
                await local.stop()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown request {command!r}")
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("ok", reply))


async def run_strategy(strategy: Strategy, profile_name: str, *, calls: int, concurrency: int,
                       workdir: Path, profile: LatencyProfile | None = None,
                       listen_ms: int = LISTEN_MS, stream_gap_ms: float = 0.0,
                       ramp_ms: float = 0.0, simulators: Simulators | None = None,
                       on_call: Callable[[], None] | None = None) -> StrategyRun:
    """A fresh server (fresh SQLite store, fresh greeting cache) for this strategy: one
    untimed warm-up call per lane, then `calls` measured calls, `concurrency` at a time.

    `simulators`: where the engine and the phone run (default: on this event loop).
    `ramp_ms`: the first `concurrency` measured calls start this far apart, so that the
    lanes (whose calls all last about as long) do not stay in lockstep.
    `stream_gap_ms`: Twilio's time between the TwiML and the stream (`TwilioStreamGap`);
    0 (the simulated phone's own behaviour: it opens the stream at once) unless asked."""
    profile = profile or PROFILES[profile_name]()
    sims: Simulators = simulators or LocalSimulators()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    lanes = max(1, min(concurrency, calls))
    businesses = [bench_business(lane) for lane in range(lanes)]
    numbers = tuple(b.phone_numbers[0] for b in businesses)
    database_url = f"sqlite+aiosqlite:///{workdir / 'hotline.db'}"
    store = Store(database_url)
    await store.upgrade()
    for business in businesses:
        await store.save_business(business)
    await store.close()

    engine_url = await sims.start(profile)
    server: RunningServer | None = None
    began = time.monotonic()
    try:
        server = await start_server(server_settings(strategy, workdir=workdir,
                                                    database_url=database_url,
                                                    engine_url=engine_url))
        if strategy.greeting_cache:
            await _greetings_ready(server, businesses)
        request = PlayRequest(server.url, numbers, calls=lanes, concurrency=lanes, warmup=True,
                              listen_ms=listen_ms, stream_gap_ms=stream_gap_ms)
        warmup_calls = await sims.play(request)
        played = await sims.play(dataclasses.replace(request, calls=calls,
                                                     concurrency=concurrency, warmup=False,
                                                     ramp_ms=ramp_ms), on_call)
    finally:
        if server is not None:
            await server.stop()
        sessions = await sims.sessions()
        await sims.stop()
    wall_s = time.monotonic() - began
    warmups = [CallSample(c.index, c.lane, c.phone, twiml_arrived_at=c.twiml_arrived_at)
               for c in warmup_calls]
    samples = [CallSample(c.index, c.lane, c.phone, twiml_arrived_at=c.twiml_arrived_at)
               for c in played]
    match_sessions([*warmups, *samples], sessions, profile)
    for sample in [*warmups, *samples]:
        analyse(sample, profile, strategy)
    compact_chars, full_chars = prompt_sizes(businesses[0])
    return StrategyRun(strategy, profile_name, profile, samples, warmups, sessions,
                       compact_chars, full_chars, wall_s)


# -- statistics and targets -------------------------------------------------------------------
PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(slots=True)
class Spread:
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(*(percentile(values, p) for p in PERCENTILES))

    def get(self, p: int) -> float | None:
        return {50: self.p50, 95: self.p95, 99: self.p99}[p]


@dataclass(slots=True)
class Summary:
    run: StrategyRun
    webhook_to_twiml: Spread
    start_to_first_frame: Spread
    overhead: Spread
    engine: Spread

    @classmethod
    def of(cls, run: StrategyRun) -> Summary:
        ok = run.ok
        return cls(run,
                   Spread.of([s.webhook_to_twiml_ms for s in ok
                              if s.webhook_to_twiml_ms is not None]),
                   Spread.of([s.start_to_first_media_ms for s in ok
                              if s.start_to_first_media_ms is not None]),
                   Spread.of([s.overhead_ms for s in ok if s.overhead_ms is not None]),
                   Spread.of([s.engine_ms for s in ok if s.engine_ms is not None]))


@dataclass(slots=True)
class TargetCheck:
    profile: str
    strategy: str
    description: str
    value: float | None
    limit: float

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value <= self.limit

    @property
    def mark(self) -> str:
        return "✓" if self.passed else "✗"


def targets_for(summary: Summary) -> list[TargetCheck]:
    """The issue's targets (benchmark targets, not timed tests)."""
    run = summary.run
    name, profile = run.strategy.name, run.profile_name
    checks: list[TargetCheck] = []

    def check(description: str, value: float | None, limit: float) -> None:
        checks.append(TargetCheck(profile, name, description, value, limit))

    if profile == "modeled" and name == "hotline":
        check("(b) p50", summary.start_to_first_frame.p50, 30)
        check("(b) p99", summary.start_to_first_frame.p99, 60)
    if profile == "modeled" and name == "hotline-warm":
        check("(b) p50 ≤ engine first audio + 15 ms", summary.start_to_first_frame.p50,
              round(run.engine_first_audio_ms + 15, 1))
    if profile == "zero" and name in ("hotline", "hotline-warm"):
        check("(c) p99", summary.overhead.p99, 5)
        check("(a) p99", summary.webhook_to_twiml.p99, 10)
    return checks


# -- the whole benchmark ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GcPause:
    """A full (generation 2) garbage collection in the server's process."""

    started_at: float  # time.monotonic()
    ms: float
    objects: int  # objects tracked by the collector afterwards

    def overlaps(self, start: float, end: float) -> bool:
        return self.started_at < end and self.started_at + self.ms / 1000 > start


class GcWatch:
    """Records full collections while installed (`with GcWatch() as watch`): the event
    loop, and every call on it, stops while one runs."""

    def __init__(self) -> None:
        self.pauses: list[GcPause] = []
        self._started = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.pauses.append(GcPause(self._started, (time.monotonic() - self._started) * 1000,
                                       len(gc.get_objects())))


@dataclass(slots=True)
class BenchResult:
    calls: int
    concurrency: int
    profiles: list[str]
    strategies: list[str]
    started: datetime.datetime
    runs: dict[tuple[str, str], StrategyRun] = field(default_factory=dict)
    wall_s: float = 0.0
    stream_gap_ms: float = 0.0
    same_process: bool = False  # the simulators shared the server's event loop
    server_errors: list[str] = field(default_factory=list)
    ramp_ms: float = DEFAULT_RAMP_MS
    gc_pauses: list[GcPause] = field(default_factory=list)  # in the server's process

    def summaries(self, profile: str) -> list[Summary]:
        return [Summary.of(self.runs[(profile, name)]) for name in self.strategies
                if (profile, name) in self.runs]

    def checks(self) -> list[TargetCheck]:
        return [check for profile in self.profiles for summary in self.summaries(profile)
                for check in targets_for(summary)]


async def run_benchmark(*, calls: int = DEFAULT_CALLS, concurrency: int = DEFAULT_CONCURRENCY,
                        profiles: Sequence[str] = ("zero", "modeled"),
                        strategies: Sequence[str] = tuple(STRATEGIES),
                        workdir: Path | None = None, stream_gap_ms: float = 0.0,
                        ramp_ms: float = DEFAULT_RAMP_MS, same_process: bool = False,
                        loop: str = "uvloop",
                        progress: Progress | None = None) -> BenchResult:
    """Every strategy on every profile. The simulators run in a child process unless
    `same_process`."""
    result = BenchResult(calls, concurrency, list(profiles), list(strategies),
                         datetime.datetime.now(datetime.UTC), stream_gap_ms=stream_gap_ms,
                         same_process=same_process, ramp_ms=ramp_ms)
    began = time.monotonic()
    overall = None
    if progress is not None:
        overall = progress.add_task("greeting benchmark",
                                    total=calls * len(profiles) * len(strategies))

    def advance() -> None:
        if progress is not None and overall is not None:
            progress.advance(overall)

    async with contextlib.AsyncExitStack() as stack:
        result.gc_pauses = stack.enter_context(GcWatch()).pauses
        sims: Simulators = LocalSimulators()
        if not same_process:
            sims = await stack.enter_async_context(ProcessSimulators(loop))
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-bench-"))
        root = workdir or Path(scratch)
        for profile_name in profiles:
            for name in strategies:
                if progress is not None and overall is not None:
                    progress.update(overall, description=f"{profile_name:>7} · {name:<12}")
                result.runs[(profile_name, name)] = await run_strategy(
                    STRATEGIES[name], profile_name, calls=calls, concurrency=concurrency,
                    workdir=root / f"{profile_name}-{name}", stream_gap_ms=stream_gap_ms,
                    ramp_ms=ramp_ms, simulators=sims, on_call=advance)
    result.wall_s = time.monotonic() - began
    return result


# -- reporting --------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _spread(spread: Spread) -> str:
    return " / ".join(_ms(spread.get(p)) for p in PERCENTILES)


def _ratio(summary: Summary, baseline: Summary | None) -> str:
    ours = summary.start_to_first_frame.p50
    base = baseline.start_to_first_frame.p50 if baseline is not None else None
    if ours is None or base is None or base <= 0:
        return "—"
    return f"{ours / base:.1f}×"


def _targets_cell(checks: list[TargetCheck]) -> str:
    if not checks:
        return "—"
    passed = sum(1 for c in checks if c.passed)
    return f"{'✓' if passed == len(checks) else '✗'} {passed}/{len(checks)}"


def _row(summary: Summary, baseline: Summary | None) -> list[str]:
    run = summary.run
    return [run.strategy.name, f"{len(run.ok)}/{len(run.samples)}",
            _spread(summary.webhook_to_twiml), _spread(summary.start_to_first_frame),
            _spread(summary.overhead), _ratio(summary, baseline),
            _targets_cell(targets_for(summary))]


HEADERS = ("strategy", "ok calls", "(a) webhook → TwiML ms p50 / p95 / p99",
           "(b) start → first greeting frame ms p50 / p95 / p99",
           "(c) our overhead ms p50 / p95 / p99", "(b) p50 ÷ hotline", "targets met")
SHORT_HEADERS = ("strategy", "ok", "(a) p50/p95/p99", "(b) p50/p95/p99", "(c) p50/p95/p99",
                 "(b) ÷ hotline", "targets")
LEGEND = ("ms; (a) webhook → TwiML, (b) stream start → first greeting frame, (c) our overhead "
          "= (b) − the engine's own time; measured by the simulated phone")


def _baseline(summaries: list[Summary]) -> Summary | None:
    return next((s for s in summaries if s.run.strategy.name == BASELINE), None)


def rich_tables(result: BenchResult) -> list[Table]:
    tables = []
    for profile in result.profiles:
        summaries = result.summaries(profile)
        if not summaries:
            continue
        baseline = _baseline(summaries)
        table = Table(title=f"profile {profile}: {describe_profile(summaries[0].run.profile)}; "
                            f"{result.calls} calls, {result.concurrency} at a time",
                      caption=LEGEND)
        for index, header in enumerate(SHORT_HEADERS):
            table.add_column(header, justify="left" if index == 0 else "right",
                             no_wrap=index != 0)
        for summary in summaries:
            table.add_row(*_row(summary, baseline))
        tables.append(table)
    checks = result.checks()
    if checks:
        table = Table(title="targets (benchmark targets, not timed tests)")
        for header in ("profile", "strategy", "target", "measured ms", "limit ms", ""):
            table.add_column(header, justify="right" if "ms" in header else "left")
        for check in checks:
            table.add_row(check.profile, check.strategy, check.description, _ms(check.value),
                          f"{check.limit:g}",
                          f"[green]{check.mark}[/green]" if check.passed
                          else f"[red]{check.mark}[/red]")
        tables.append(table)
    return tables


_CALL_SID = re.compile(r"CA[0-9a-f]{32}")


class ErrorLog(logging.Handler):
    """Collects ERROR records (the server's failures while the benchmark runs), each
    summarised as logger: message: exception type, and where in Hotline it was raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.summaries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = _CALL_SID.sub("CA…", " ".join(record.getMessage().split()))
        summary = f"{record.name}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = traceback.extract_tb(record.exc_info[2])
            ours = [f for f in frames if f"{os.sep}hotline{os.sep}" in f.filename]
            summary += f" ({type(exc).__name__}"
            if ours:
                summary += f" from {Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}"
            summary += ")"
        self.summaries.append(summary)


def problems(result: BenchResult) -> list[str]:
    lines = []
    counted: dict[str, int] = {}
    for summary in result.server_errors:
        counted[summary] = counted.get(summary, 0) + 1
    for summary, count in sorted(counted.items(), key=lambda item: -item[1]):
        lines.append(f"the server logged {count} error(s): {summary}")
    for (profile, name), run in result.runs.items():
        reasons: dict[str, int] = {}
        for sample in run.failed:
            reasons[sample.problem or "no measurement"] = reasons.get(
                sample.problem or "no measurement", 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            lines.append(f"{profile} · {name}: {count} call(s): {reason}")
        unattributed: dict[str, int] = {}
        for sample in run.ok:
            if sample.unattributed:
                unattributed[sample.unattributed] = unattributed.get(sample.unattributed, 0) + 1
        for reason, count in sorted(unattributed.items(), key=lambda item: -item[1]):
            lines.append(f"{profile} · {name}: (c) unknown for {count} call(s): {reason}")
        for pause in result.gc_pauses:
            hit = [s for s in run.ok if s.phone.webhook_sent_at is not None
                   and s.phone.first_media_at is not None
                   and pause.overlaps(s.phone.webhook_sent_at, s.phone.first_media_at)]
            if hit:
                lines.append(f"{profile} · {name}: {len(hit)} call(s) were waiting on a full "
                             f"garbage collection in the server's process ({pause.ms:.0f} ms, "
                             f"{pause.objects} objects tracked): (b) of those calls "
                             + ", ".join(_ms(s.start_to_first_media_ms) for s in hit) + " ms")
        if not run.strategy.live_greeting:
            live = sum(1 for s in run.ok if s.live_greeting)
            if live:
                lines.append(f"{profile} · {name}: {live} call(s) greeted live (the greeting "
                             "cache did not have the greeting)")
    return lines


def print_report(result: BenchResult, console: Console) -> None:
    for table in rich_tables(result):
        console.print(table)
    for line in problems(result):
        console.print(f"[yellow]⚠ {line}[/yellow]")
    console.print(f"[dim]{result.wall_s:.0f} s in all[/dim]")


DEFINITIONS = """\
All times are measured by the simulated phone (the Twilio side) with `time.monotonic()`,
not reported by the server about itself.

- **(a) webhook → TwiML**: the phone sends the signed voice webhook → the TwiML answer
  has arrived (`PhoneCallResult.webhook_to_twiml_ms`).
- **(b) start → first greeting frame**: the phone sends the media stream's `start` → the
  first `media` message of the greeting has arrived (`start_to_first_media_ms`). This is
  the number the latency budget is about.
- **(c) our overhead**: (b) minus the engine's own time on the greeting's path, taken
  from the engine simulator's records of the call's session: the union, within
  [`start` sent, first frame received], of
  - connecting: the profile's connect time, ending when the simulator accepted the
    connection (`session.created`; the simulator holds each handshake for exactly that
    long and records no earlier moment),
  - each `session.update`: received → its `session.updated` sent,
  - producing the greeting: the first `response.create` received (before or after
    `start`: a warm session asks for the greeting as soon as it is configured) → the
    first `response.output_audio.delta` sent.

  Setup that finished before `start` (a warm session) falls outside the window and is
  not subtracted; setup still running at `start` is. When the greeting came from the
  greeting cache (the call's session got no `response.create` before the first frame),
  no engine is on the path and (c) = (b).
- Calls are matched to engine sessions without the CallSid (the engine cannot see it):
  each concurrency slot ("lane") has its own business (branches of one dental group,
  identical but for the branch name), a lane carries one call at a time, and a session
  belongs to the lane call whose interval [webhook sent, the lane's next webhook sent)
  holds its connect start.
- In the `zero` profile connecting takes no simulated time, so a connection made after
  `start` (loopback TCP + WebSocket handshake, the SDK) is all ours.
- (a) includes both HTTP stacks: the phone's (httpx, request signing) and the server's
  (uvicorn, form parsing, signature check), besides the webhook handler itself.
- Percentiles interpolate linearly between ranks; with {calls} calls, p99 is close to the
  slowest call.
- The ratio column is this strategy's (b) p50 divided by `hotline`'s.
"""


def webhook_to_start_ms(summaries: Sequence[Summary]) -> float | None:
    """Median time from the webhook to the stream's `start`, over every measured call."""
    gaps = [(s.phone.start_sent_at - s.phone.webhook_sent_at) * 1000
            for summary in summaries for s in summary.run.ok
            if s.phone.start_sent_at is not None and s.phone.webhook_sent_at is not None]
    return percentile(gaps, 50)


def render_markdown(result: BenchResult, *, command: str) -> str:
    first_run = next(iter(result.runs.values()), None)
    lines = [
        "# Benchmarks",
        "",
        "## `hotline bench greeting`: stream `start` → first greeting frame",
        "",
        "Generated by the benchmark (`hotline bench greeting`); do not edit by hand.",
        "",
        f"- Run: {result.started:%Y-%m-%d %H:%M} UTC, `{command}`, {result.wall_s:.0f} s",
        f"- Machine: {MACHINE_NOTE}; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}",
        ("- Processes: the server, the engine simulator and the simulated phone in one "
         "process, on one event loop" if result.same_process else
         "- Processes: the server alone in one process (its own event loop, as in "
         "production); the engine simulator and the simulated phone together in a second "
         "process; all traffic over loopback sockets"),
        f"- {result.calls} inbound calls per strategy and profile, {result.concurrency} at a "
        f"time (the first {result.concurrency} started {result.ramp_ms:g} ms apart, so that "
        "the concurrent calls do not stay in lockstep); one fresh server (fresh SQLite "
        "store, empty greeting cache) per strategy; one untimed warm-up call per business "
        "first",
        f"- Each call listens to the first {LISTEN_MS} ms of the greeting, then hangs up; "
        "the phone paces its media at real time",
        ("- The phone opens the media stream as soon as the TwiML arrives (no Twilio-side gap "
         "between the TwiML and the stream `start`)" if not result.stream_gap_ms else
         f"- The phone waits {result.stream_gap_ms:g} ms between the TwiML and opening the "
         "media stream (modelled Twilio gap; not part of (a))"),
    ]
    if first_run is not None:
        lines.append(
            f"- Businesses: {min(result.concurrency, result.calls)} branches of a dental group, "
            f"one per concurrent call; compact prompt {first_run.compact_chars} chars, full "
            f"prompt {first_run.full_chars} chars")
    lines += ["", "### Strategies", "", "| strategy | warm_sessions | greeting_cache | "
              "greeting_prompt | what it does |", "|---|---|---|---|---|"]
    for name in result.strategies:
        s = STRATEGIES[name]
        lines.append(f"| `{s.name}` | {s.warm_sessions} | {s.greeting_cache} | "
                     f"{s.greeting_prompt} | {s.summary} |")
    for profile in result.profiles:
        summaries = result.summaries(profile)
        if not summaries:
            continue
        run = summaries[0].run
        baseline = _baseline(summaries)
        lines += ["", f"### Profile `{profile}`: {describe_profile(run.profile)}", ""]
        if run.profile.first_audio_base_ms or run.profile.first_audio_per_1000_chars_ms:
            lines += [f"Engine time to first audio: {run.engine_first_audio_ms:.0f} ms with "
                      f"the compact prompt, {run.profile.first_audio_ms(run.full_chars):.0f} "
                      "ms with the full prompt.", ""]
        lead = webhook_to_start_ms(summaries)
        if lead is not None:
            setup = run.profile.connect_ms + run.profile.session_update_ms
            lines += [f"The phone sent the stream's `start` a median {lead:.1f} ms after the "
                      f"webhook; a warm session needs {setup:g} ms of engine time (connect + "
                      "`session.update`) plus our own to be ready.", ""]
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "---|" * len(HEADERS))
        for summary in summaries:
            cells = _row(summary, baseline)
            cells[0] = f"`{cells[0]}`"
            lines.append("| " + " | ".join(cells) + " |")
    checks = result.checks()
    if checks:
        lines += ["", "### Targets", "", "| profile | strategy | target | measured | limit | |",
                  "|---|---|---|---|---|---|"]
        for check in checks:
            lines.append(f"| {check.profile} | `{check.strategy}` | {check.description} | "
                         f"{_ms(check.value)} | {check.limit:g} | {check.mark} |")
    trouble = problems(result)
    if trouble:
        lines += ["", "### Problems seen", ""] + [f"- {line}" for line in trouble]
    lines += ["", "### Definitions", "", DEFINITIONS.format(calls=result.calls).rstrip(), ""]
    return "\n".join(lines)


def raw_samples(result: BenchResult) -> list[dict[str, Any]]:
    """One row per measured call: the phone's times (monotonic s) and the three numbers."""
    rows = []
    for (profile, name), run in result.runs.items():
        for sample in run.samples:
            phone = sample.phone
            rows.append({
                "profile": profile, "strategy": name, "index": sample.index,
                "lane": sample.lane, "call_sid": phone.call_sid,
                "engine_session": sample.session.id if sample.session else None,
                "webhook_sent_at": phone.webhook_sent_at,
                "twiml_received_at": sample.twiml_arrived_at or phone.twiml_received_at,
                "start_sent_at": phone.start_sent_at, "first_media_at": phone.first_media_at,
                "webhook_to_twiml_ms": sample.webhook_to_twiml_ms,
                "start_to_first_media_ms": sample.start_to_first_media_ms,
                "engine_ms": sample.engine_ms, "overhead_ms": sample.overhead_ms,
                "live_greeting": sample.live_greeting, "problem": sample.problem,
                "unattributed": sample.unattributed,
            })
    return rows


def make_progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("calls"), TimeElapsedColumn(), console=console,
                    refresh_per_second=4)


def run_with_loop(coroutine_factory: Callable[[], Any], *, loop: str = "uvloop") -> Any:
    """Run on uvloop (what `hotline serve` uses) when available."""
    factory = None
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover (uvicorn[standard] installs it)
            uvloop = None
        factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine_factory())


def bench_greeting(*, calls: int = DEFAULT_CALLS, concurrency: int = DEFAULT_CONCURRENCY,
                   profiles: Sequence[str] = ("zero", "modeled"),
                   strategies: Sequence[str] = tuple(STRATEGIES),
                   output: Path | None = DEFAULT_OUTPUT, console: Console | None = None,
                   stream_gap_ms: float = 0.0, ramp_ms: float = DEFAULT_RAMP_MS,
                   same_process: bool = False,
                   loop: str = "uvloop", command: str = "hotline bench greeting",
                   show_log: bool = False, raw_output: Path | None = None) -> BenchResult:
    """Run the benchmark with a progress bar, print the tables, write the markdown.

    Errors logged in this process (the server's) are counted in the report; `show_log`
    also leaves them, and the rest of the log, on the terminal."""
    console = console or Console()
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from "
                         f"{', '.join(STRATEGIES)}")
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile}; choose from {', '.join(PROFILES)}")
    for name in strategies:
        missing = _missing_settings(STRATEGIES[name])
        if missing:
            raise RuntimeError(f"this Hotline has no setting {', '.join(missing)}: strategy "
                               f"{name!r} cannot be configured")
    errors = ErrorLog()
    root = logging.getLogger()
    kept = list(root.handlers)
    if not show_log:
        for handler in kept:  # the progress bar owns the terminal; errors go in the report
            root.removeHandler(handler)
    root.addHandler(errors)
    try:
        with make_progress(console) as progress:
            result = run_with_loop(lambda: run_benchmark(
                calls=calls, concurrency=concurrency, profiles=profiles, strategies=strategies,
                stream_gap_ms=stream_gap_ms, ramp_ms=ramp_ms, same_process=same_process,
                loop=loop, progress=progress), loop=loop)
    finally:
        root.removeHandler(errors)
        for handler in kept:
            if handler not in root.handlers:
                root.addHandler(handler)
    result.server_errors = errors.summaries
    print_report(result, console)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_markdown(result, command=command), encoding="utf-8")
        console.print(f"written: {output}")
    if raw_output is not None:
        raw_output.parent.mkdir(parents=True, exist_ok=True)
        raw_output.write_text(json.dumps(raw_samples(result), indent=1) + "\n",
                              encoding="utf-8")
        console.print(f"written: {raw_output}")
    return result
