"""What the owner's side reads of calls: a call with its derived facts, a page of a search,
a business's stats. Plain values and the pure logic behind them (cursors, tool calls read
from the timeline, percentiles, the per-day buckets); `Store` runs the queries.

Tool calls are not a table: the call core records them in the timeline, `tool_called`
(detail: the tool's name, then its arguments' JSON) and `tool_done` (detail: "name: ok" or
"name: error", then the answer's JSON). Timelines written before the JSON was added carry the
name and the verdict only; their arguments and answers read as None.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hotline.core.greeting_path import GreetingPath
from hotline.core.record import CallRecord, TimelineStage

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# The longest range `Store.business_stats` buckets per day (a year and a day).
MAX_STATS_DAYS = 366
# The outcome key of calls whose outcome is not known yet (ringing, in progress).
UNKNOWN_OUTCOME = "unknown"


class InvalidCursor(ValueError):
    """A paging cursor this server did not hand out (or one that was tampered with)."""


class CallDirection(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class CallQuery:
    """Filters of a call search; None: any. `started_from` is inclusive, `started_to` not."""

    business_slug: str | None = None
    direction: CallDirection | None = None
    outcome: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    text: str | None = None  # a case-insensitive substring of any transcript turn


@dataclass(frozen=True, slots=True)
class Recording:
    """A call's recording as the store knows it (written by the recorder, swept by the
    retention sweeper): `file` is None once `deleted_at` is set."""

    file: str | None  # a WAV, relative to HOTLINE_DATA_DIR
    ms: int | None
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str | None  # the JSON the model sent (cut short past a limit); None: unknown
    result: str | None  # the tool's answer (JSON); None: not known or the tool never ran
    error: bool | None  # None: the tool never answered (the reply calling it was cut off)
    at_ms: float  # when the model called it, ms since the webhook (as the timeline)
    at: datetime


@dataclass(frozen=True, slots=True)
class CallView:
    """A call with what is derived from its rows. From `Store.search_calls` the record has
    no transcript or timeline and `tool_calls` is empty; `Store.call_view` has them all."""

    record: CallRecord
    duration_s: float | None  # Twilio's CallDuration when known, else ended - started
    greeting_path: GreetingPath | None
    greeting_ms: float | None  # stream start -> the greeting's first frame to the caller
    recording: Recording | None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class CallPage:
    calls: list[CallView]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class GreetingLatency:
    path: GreetingPath
    calls: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class BusinessStats:
    """Calls that started in [start, end), days counted in the business's timezone."""

    business_slug: str
    timezone: str
    start: datetime
    end: datetime
    calls: int
    per_day: list[tuple[date, int]]  # every day of the range, in order, zeros included
    outcomes: dict[str, int]  # outcome value (or UNKNOWN_OUTCOME) -> calls
    greeting: list[GreetingLatency]  # one per path, in GreetingPath order
    average_duration_s: float | None  # of the calls that ended


# -- cursors ---------------------------------------------------------------------------------
def encode_cursor(started_at: datetime, call_id: int) -> str:
    """The keyset position after a call: (started_at, id), opaque to the client."""
    raw = json.dumps([started_at.astimezone(UTC).isoformat(), call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, call_id = json.loads(raw)
        at = datetime.fromisoformat(at_text)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor("not a cursor this server gave out") from None
    if (not isinstance(call_id, int) or isinstance(call_id, bool) or at.tzinfo is None
            or not -(2**63) <= call_id < 2**63):  # ids are BIGINT at most
        raise InvalidCursor("not a cursor this server gave out")
    try:  # the store compares in UTC: a moment at datetime's edge may not convert
        return at.astimezone(UTC), call_id
    except (OverflowError, ValueError):
        raise InvalidCursor("not a cursor this server gave out") from None


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit: {limit} is not from 1 to {MAX_PAGE_SIZE}")
    return limit


# -- derived facts ---------------------------------------------------------------------------
def duration_s(started_at: datetime, ended_at: datetime | None,
               twilio_duration_s: int | None) -> float | None:
    """Twilio's CallDuration when it came, else from the call's start to its end."""
    if twilio_duration_s is not None:
        return float(twilio_duration_s)
    if ended_at is None:
        return None
    return max(0.0, (ended_at - started_at).total_seconds())


def recording_of(file: str | None, ms: int | None, deleted_at: datetime | None
                 ) -> Recording | None:
    if file is None and deleted_at is None:
        return None
    return Recording(file=file, ms=ms, deleted_at=deleted_at)


_DONE_RE = re.compile(r"(?P<name>[^:\s]+): (?P<verdict>ok|error)(?: (?P<result>.*))?", re.DOTALL)


def tool_calls(record: CallRecord) -> tuple[ToolCall, ...]:
    """The tool calls in the record's timeline, in the order the model made them; each
    `tool_done` answers the oldest unanswered call of its tool."""
    stream_start = next((s.ms for s in record.timeline if s.stage == "stream_start"), 0.0)
    found: list[ToolCall] = []
    waiting: dict[str, deque[int]] = {}
    for stage in record.timeline:
        if stage.stage == "tool_called":
            name, _, arguments = stage.detail.partition(" ")
            at = record.started_at + timedelta(milliseconds=stage.ms - stream_start)
            waiting.setdefault(name, deque()).append(len(found))
            found.append(ToolCall(name, arguments or None, None, None, stage.ms, at))
        elif stage.stage == "tool_done":
            match = _DONE_RE.fullmatch(stage.detail)
            if match is None:
                continue
            pending = waiting.get(match["name"])
            if not pending:
                continue
            index = pending.popleft()
            found[index] = _answered(found[index], match["verdict"] == "error", match["result"])
    return tuple(found)


def _answered(call: ToolCall, error: bool, result: str | None) -> ToolCall:
    return ToolCall(call.name, call.arguments, result or None, error, call.at_ms, call.at)


# -- stats -----------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linearly interpolated between the closest ranks (as
    numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One call, as far as the stats need it."""

    started_at: datetime
    outcome: str
    duration_s: float | None
    greeting_path: GreetingPath | None
    greeting_ms: float | None


def check_stats_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("the range is empty: end must be after start")
    if end - start > timedelta(days=MAX_STATS_DAYS):
        raise ValueError(f"the range is longer than {MAX_STATS_DAYS} days")
    if start.year < 2 or end.year > 9998:  # days in any timezone stay within datetime's
        raise ValueError("the range is outside the years 2 to 9998")


def business_stats(slug: str, timezone: str, start: datetime, end: datetime,
                   rows: Iterable[StatsRow]) -> BusinessStats:
    """The stats of the calls that started in [start, end) (rows outside are ignored)."""
    check_stats_range(start, end)
    zone = ZoneInfo(timezone)
    rows = [row for row in rows if start <= row.started_at < end]
    per_day = Counter(row.started_at.astimezone(zone).date() for row in rows)
    first_day = start.astimezone(zone).date()
    last_day = (end - timedelta(microseconds=1)).astimezone(zone).date()
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    latencies: dict[GreetingPath, list[float]] = {path: [] for path in GreetingPath}
    for row in rows:
        if row.greeting_path is not None and row.greeting_ms is not None:
            latencies[row.greeting_path].append(row.greeting_ms)
    durations = [row.duration_s for row in rows if row.duration_s is not None]
    return BusinessStats(
        business_slug=slug, timezone=timezone, start=start, end=end, calls=len(rows),
        per_day=[(day, per_day.get(day, 0)) for day in days],
        outcomes=dict(Counter(row.outcome or UNKNOWN_OUTCOME for row in rows).most_common()),
        greeting=[GreetingLatency(path, len(values), percentile(values, 50),
                                  percentile(values, 95))
                  for path, values in latencies.items()],
        average_duration_s=sum(durations) / len(durations) if durations else None,
    )


def stages_by_call(rows: Iterable[tuple[int, str, float, str]]
                   ) -> dict[int, list[TimelineStage]]:
    """(call id, stage, ms, detail) rows, in position order, grouped per call."""
    out: dict[int, list[TimelineStage]] = {}
    for call_id, stage, ms, detail in rows:
        out.setdefault(call_id, []).append(TimelineStage(stage, ms, detail))
    return out
