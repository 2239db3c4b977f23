"""What the engine simulator recorded about one session, kept small enough to cross
processes, and the engine's own time on a greeting's path computed from it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hotline.sim.engine import LatencyProfile, Received, SimulatedSession

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
