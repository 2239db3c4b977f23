"""Prometheus metrics of one Hotline process, served at `GET /metrics`.

Each app has its own registry (so several apps in one process, as in the tests, never share
counters). Calls are counted when they end, from their record: nothing is done per frame.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from hotline.call.recorder import CallRecorder
from hotline.core.greeting_path import (
    GreetingPath,
    timeline_greeting_ms,
    timeline_greeting_path,
)
from hotline.core.record import CallRecord

# Greeting latency (stream start -> first frame to the caller) spans ms (cached) to seconds.
GREETING_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def greeting_path(record: CallRecord) -> GreetingPath | None:
    """The greeting's path from the call's timeline; None if it never greeted."""
    return timeline_greeting_path(record.timeline)


def greeting_latency_s(record: CallRecord) -> float | None:
    """Stream start -> first greeting frame sent to the caller, in seconds."""
    ms = timeline_greeting_ms(record.timeline)
    return None if ms is None else ms / 1000


class MessageSide(enum.StrEnum):
    """Which socket of a call a WebSocket message came from (a label value)."""

    TWILIO = "twilio"
    ENGINE = "engine"


# The CallStats counters of malformed messages, exported by side rather than as events.
MALFORMED_STATS = {"malformed_twilio": MessageSide.TWILIO, "malformed_engine": MessageSide.ENGINE}

# Named counters, each from one of the core's CallStats: the engine link and the tools.
NAMED_COUNTERS: dict[str, tuple[str, str]] = {
    "engine_connects": ("hotline_engine_connects", "Engine sessions opened for calls."),
    "engine_connect_failures": ("hotline_engine_connect_failures",
                                "Attempts to open an engine session that failed."),
    "engine_drops": ("hotline_engine_drops", "Engine sessions lost mid-call."),
    "engine_resumes": ("hotline_engine_resumes",
                       "Calls resumed on a new engine session after a drop."),
    "tool_calls": ("hotline_tool_calls", "Tool calls the model made."),
    "tool_errors": ("hotline_tool_errors", "Tool calls answered with an error."),
}


class CallMetrics:
    def __init__(self, active_calls: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        Gauge("hotline_active_calls", "Calls whose media stream is open on this instance.",
              registry=self.registry).set_function(active_calls)
        self._calls = Counter("hotline_calls", "Calls ended, by direction and outcome.",
                              ["direction", "outcome"], registry=self.registry)
        self._greeting = Histogram(
            "hotline_greeting_latency_seconds",
            "Stream start to the greeting's first frame sent to the caller, by path.",
            ["path"], buckets=GREETING_BUCKETS_S, registry=self.registry)
        self._events = Counter("hotline_call_events", "Events in ended calls (CallStats).",
                               ["event"], registry=self.registry)
        self._malformed = Counter(
            "hotline_ws_messages_malformed",
            "WebSocket messages of ended calls skipped as off-protocol, by side.",
            ["side"], registry=self.registry)
        for side in MessageSide:
            self._malformed.labels(side)  # shown at 0 from the start
        self._named = {stat: Counter(name, doc, registry=self.registry)
                       for stat, (name, doc) in NAMED_COUNTERS.items()}

    def watch_recorder(self, recorder: CallRecorder) -> None:
        """The recorder's state, read at each scrape."""
        gauges: list[tuple[str, str, Callable[[], float]]] = [
            ("hotline_records_waiting", "Call records and status callbacks not yet in the store.",
             lambda: recorder.records_waiting),
            ("hotline_records_journaled", "Of those, the ones in the journal file (safe from a "
             "crash).", lambda: recorder.records_journaled),
            ("hotline_store_reachable", "1 unless the last store write failed.",
             lambda: float(recorder.store_reachable)),
            ("hotline_journal_ok", "1 while the journal file takes appends.",
             lambda: float(recorder.journal_ok)),
        ]
        for name, documentation, read in gauges:
            Gauge(name, documentation, registry=self.registry).set_function(read)

    def watch_drain(self, draining: Callable[[], bool]) -> None:
        Gauge("hotline_draining", "1 once the instance is shutting down (SIGTERM): no new "
              "calls.", registry=self.registry).set_function(lambda: float(draining()))

    def watch_registry(self, shared: Callable[[], bool], configured: bool) -> None:
        """With HOTLINE_REDIS_URL set: 0 while Redis is down (the instance serves alone)."""
        if configured:
            Gauge("hotline_registry_shared", "1 while the Redis registry answers (calls may "
                  "cross instances); 0: degraded to this instance's own registry.",
                  registry=self.registry).set_function(lambda: float(shared()))

    def call_ended(self, record: CallRecord) -> None:
        self._calls.labels(record.direction, record.outcome or "unknown").inc()
        path, latency_s = greeting_path(record), greeting_latency_s(record)
        if path is not None and latency_s is not None:
            self._greeting.labels(path).observe(latency_s)
        for event, count in record.stats.items():
            side = MALFORMED_STATS.get(event)
            if side is not None:
                self._malformed.labels(side).inc(count)
            elif count:
                self._events.labels(event).inc(count)
        for stat, counter in self._named.items():
            counter.inc(record.stats.get(stat, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    call_metrics: CallMetrics = request.app.state.services.metrics
    return Response(call_metrics.render(), media_type=CONTENT_TYPE_LATEST)
