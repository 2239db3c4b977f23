"""What the recorder writes to the store: call records and status callbacks ("jobs"), and
their JSON form, one line each, as the journal keeps them.

Reading is tolerant, so a journal outlives the code that wrote it: keys a dataclass does
not have (written by a newer version) are dropped, and keys it lacks (an older version, or
the spool file the journal replaced) take the field's default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn

T = TypeVar("T")


@dataclass(slots=True)
class CallStatusUpdate:
    call_sid: str
    status: str
    at: datetime
    sequence: int | None = None
    duration_s: int | None = None


Job = CallRecord | CallStatusUpdate


def job_to_json(job: Job, *, entry_id: int | None = None) -> bytes:
    """One line (no newline in it); `entry_id` numbers it in the journal."""
    kind = "call" if isinstance(job, CallRecord) else "status"
    line: dict[str, Any] = {"kind": kind, "job": dataclasses.asdict(job)}
    if entry_id is not None:
        line = {"id": entry_id, **line}
    return orjson.dumps(line)


def job_from_json(line: bytes) -> Job:
    """Raises ValueError, KeyError or TypeError for a line that is not a job."""
    return job_from_dict(orjson.loads(line))


def job_from_dict(data: dict[str, Any]) -> Job:
    job = dict(data["job"])
    for key in ("at", "started_at", "ended_at", "recording_deleted_at"):
        if isinstance(job.get(key), str):
            job[key] = datetime.fromisoformat(job[key])
    if data["kind"] == "status":
        return _build(CallStatusUpdate, job)
    if data["kind"] != "call":
        raise ValueError(f"unknown job kind {data['kind']!r}")
    job["transcript"] = [_build(TranscriptTurn, t) for t in job.get("transcript", [])]
    job["timeline"] = [_build(TimelineStage, s) for s in job.get("timeline", [])]
    job["messages"] = [_build(LeadMessage, m) for m in job.get("messages", [])]
    job["outcome"] = Outcome(job["outcome"]) if job.get("outcome") else None
    return _build(CallRecord, job)


def _build(cls: type[T], values: dict[str, Any]) -> T:
    """`cls(**values)` without the keys `cls` has no field for."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: value for key, value in values.items() if key in names})


def describe(job: Job) -> str:
    if isinstance(job, CallRecord):
        return f"call record {job.call_sid}"
    return f"status {job.status} of {job.call_sid}"
