"""CallRecorder: write-behind persistence of call records and status callbacks.

The media loop and the webhooks only `submit()` (a `put_nowait`); one worker task writes to
the store. A store that is slow or down never stalls audio and never loses a record: the
worker retries with backoff, and whatever is still unwritten at shutdown goes to a spool
file (JSON lines) that the next start replays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.errors import HotlineError

log = logging.getLogger("hotline.recorder")


@dataclass(slots=True)
class CallStatusUpdate:
    call_sid: str
    status: str
    at: datetime
    sequence: int | None = None
    duration_s: int | None = None


Job = CallRecord | CallStatusUpdate


class RecordSink(Protocol):
    async def save_call(self, record: CallRecord) -> None: ...
    async def record_call_status(self, call_sid: str, status: str, *, at: datetime,
                                 sequence: int | None = None,
                                 duration_s: int | None = None) -> None: ...


def job_to_json(job: Job) -> bytes:
    kind = "call" if isinstance(job, CallRecord) else "status"
    return orjson.dumps({"kind": kind, "job": dataclasses.asdict(job)})


def job_from_json(line: bytes) -> Job:
    data: dict[str, Any] = orjson.loads(line)
    job = data["job"]
    for key in ("at", "started_at", "ended_at"):
        if isinstance(job.get(key), str):
            job[key] = datetime.fromisoformat(job[key])
    if data["kind"] == "status":
        return CallStatusUpdate(**job)
    job["transcript"] = [TranscriptTurn(**t) for t in job["transcript"]]
    job["timeline"] = [TimelineStage(**s) for s in job["timeline"]]
    # .get: spool files written before messages were recorded have no such key.
    job["messages"] = [LeadMessage(**m) for m in job.get("messages", [])]
    job["outcome"] = Outcome(job["outcome"]) if job.get("outcome") else None
    return CallRecord(**job)


class CallRecorder:
    def __init__(self, sink: RecordSink, *, spool_path: Path | None = None,
                 max_backoff_s: float = 30.0) -> None:
        self._sink = sink
        self._spool_path = spool_path
        self._max_backoff_s = max_backoff_s
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._in_flight: Job | None = None
        self.written = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, job: Job) -> None:
        self._idle.clear()
        self._queue.put_nowait(job)

    async def start(self) -> None:
        self._replay_spool()
        self._worker = asyncio.create_task(self._run(), name="call-recorder")

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    async def stop(self, timeout_s: float = 5.0) -> None:
        try:
            await self.flush(timeout_s)
        except TimeoutError:
            log.warning("store still unavailable at shutdown; spooling unwritten records")
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        self._spool_rest()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            self._in_flight = job
            await self._write_with_retry(job)
            self._in_flight = None
            self.written += 1
            if self._queue.empty():
                self._idle.set()

    async def _write_with_retry(self, job: Job) -> None:
        delay = 0.1
        while True:
            try:
                if isinstance(job, CallRecord):
                    await self._sink.save_call(job)
                else:
                    await self._sink.record_call_status(
                        job.call_sid, job.status, at=job.at, sequence=job.sequence,
                        duration_s=job.duration_s)
                return
            except (HotlineError, OSError) as exc:
                log.warning("could not write %s (%s); retrying in %.1f s",
                            _describe(job), exc, delay)
            except Exception:
                # Not an outage but a record the store refuses: retrying won't help.
                # Keep it in the spool file for a person to look at, and go on.
                log.exception("store refused %s; kept in the spool file", _describe(job))
                self._spool([job])
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)

    def _spool_rest(self) -> None:
        rest: list[Job] = [self._in_flight] if self._in_flight is not None else []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        self._in_flight = None
        self._spool(rest)

    def _spool(self, rest: list[Job]) -> None:
        if not rest:
            return
        if self._spool_path is None:
            log.error("%d call records lost: no spool file configured", len(rest))
            return
        try:
            with self._spool_path.open("ab") as spool:
                for job in rest:
                    spool.write(job_to_json(job) + b"\n")
        except OSError:
            log.exception("%d call records lost: spool file %s is not writable", len(rest),
                          self._spool_path)
            return
        log.warning("%d call records spooled to %s", len(rest), self._spool_path)

    def _replay_spool(self) -> None:
        if self._spool_path is None or not self._spool_path.exists():
            return
        jobs: list[Job] = []
        corrupt: list[bytes] = []
        for line in self._spool_path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                jobs.append(job_from_json(line))
            except (ValueError, KeyError, TypeError):
                corrupt.append(line)
        if corrupt:
            # Kept for a person to look at; the good lines are replayed all the same.
            aside = self._spool_path.with_suffix(".corrupt")
            with aside.open("ab") as out:
                out.write(b"".join(line + b"\n" for line in corrupt))
            log.error("%d unreadable spooled records moved to %s", len(corrupt), aside)
        self._spool_path.unlink()
        for job in jobs:
            self.submit(job)
        log.info("replaying %d spooled call records from %s", len(jobs), self._spool_path)


def _describe(job: Job) -> str:
    if isinstance(job, CallRecord):
        return f"call record {job.call_sid}"
    return f"status {job.status} of {job.call_sid}"
