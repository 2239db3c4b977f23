"""Statistics over the runs: percentiles, each run's summary, the targets they are checked
against, and the whole benchmark's result they are computed from."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hotline.benchmarks.calls import DEFAULT_AMD_MS, DEFAULT_RAMP_MS, INBOUND, OUTBOUND
from hotline.benchmarks.samples import RenderWait, StrategyRun
from hotline.benchmarks.server import GcPause

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
    beep_to_voicemail: Spread  # voicemail runs only
    verdict_to_voicemail: Spread  # voicemail runs only

    @classmethod
    def of(cls, run: StrategyRun) -> Summary:
        ok = run.ok
        return cls(run,
                   Spread.of([s.webhook_to_twiml_ms for s in ok
                              if s.webhook_to_twiml_ms is not None]),
                   Spread.of([s.start_to_first_media_ms for s in ok
                              if s.start_to_first_media_ms is not None]),
                   Spread.of([s.overhead_ms for s in ok if s.overhead_ms is not None]),
                   Spread.of([s.engine_ms for s in ok if s.engine_ms is not None]),
                   Spread.of([s.beep_to_voicemail_ms for s in ok
                              if s.beep_to_voicemail_ms is not None]),
                   Spread.of([s.verdict_to_voicemail_ms for s in ok
                              if s.verdict_to_voicemail_ms is not None]))


@dataclass(slots=True)
class TargetCheck:
    profile: str
    strategy: str
    description: str
    value: float | None
    limit: float
    direction: str = INBOUND

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
        checks.append(TargetCheck(profile, name, description, value, limit, run.direction))

    if run.direction == OUTBOUND:  # the same budget as inbound, from the callee's side
        if profile == "modeled" and name == "hotline":
            check("(b) p50", summary.start_to_first_frame.p50, 30)
            check("(b) p99", summary.start_to_first_frame.p99, 60)
        return checks
    if run.direction != INBOUND:
        return checks
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


@dataclass(slots=True)
class BenchResult:
    calls: int
    concurrency: int
    profiles: list[str]
    strategies: list[str]
    started: datetime.datetime
    # (profile, strategy, direction) → the run
    runs: dict[tuple[str, str, str], StrategyRun] = field(default_factory=dict)
    wall_s: float = 0.0
    stream_gap_ms: float = 0.0
    same_process: bool = False  # the simulators shared the server's event loop
    server_errors: list[str] = field(default_factory=list)
    ramp_ms: float = DEFAULT_RAMP_MS
    gc_pauses: list[GcPause] = field(default_factory=list)  # in the server's process
    directions: list[str] = field(default_factory=lambda: [INBOUND])
    voicemail_calls: int = 0
    amd_ms: int = DEFAULT_AMD_MS
    # (profile, strategy) → what its server rendered and the run waited for before measuring
    renders: dict[tuple[str, str], RenderWait] = field(default_factory=dict)

    def summaries(self, profile: str, direction: str = INBOUND) -> list[Summary]:
        return [Summary.of(self.runs[(profile, name, direction)]) for name in self.strategies
                if (profile, name, direction) in self.runs]

    def checks(self) -> list[TargetCheck]:
        return [check for profile in self.profiles for direction in self.directions
                for summary in self.summaries(profile, direction)
                for check in targets_for(summary)]
