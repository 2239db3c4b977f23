"""CallRecorder: write-behind persistence of call records and status callbacks.

The media loop and the webhooks only `submit()` (no I/O, no await). Each job then goes
through two stages, each one task:

1. the journal (`hotline.call.journal`): appended and fsync'd on the recorder's own
   thread, never the event loop's, several jobs to one fsync when they come together. From
   then on a `kill -9` loses nothing: the next start replays it.
2. the store: one job at a time, in the order submitted. A store that is down, or so slow
   that a write takes longer than `write_timeout_s`, is retried with backoff, as long as
   it takes; the jobs wait in memory meanwhile. Once written, the job is marked done in the
   journal. A job the store refuses (not an outage: retrying would not help) is moved to
   the journal's rejected file for a person to look at.

`store_reachable`, `journal_ok`, `records_waiting` and `records_journaled` tell readiness
checks and the metrics how things stand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from hotline.call.jobs import CallStatusUpdate, Job, describe, job_from_json, job_to_json
from hotline.call.journal import Journal, append_late
from hotline.core.record import CallRecord
from hotline.errors import HotlineError

__all__ = ["CallRecorder", "CallStatusUpdate", "Job", "RecordSink", "job_from_json",
           "job_to_json"]

log = logging.getLogger("hotline.recorder")
R = TypeVar("R")

# A store write taking longer than this counts as failed, and is tried again.
WRITE_TIMEOUT_S = 15.0
# Retries back off up to this: a store back from an outage has its records within seconds.
MAX_BACKOFF_S = 5.0


class RecordSink(Protocol):
    async def save_call(self, record: CallRecord) -> None: ...
    async def record_call_status(self, call_sid: str, status: str, *, at: datetime,
                                 sequence: int | None = None,
                                 duration_s: int | None = None) -> None: ...


@dataclass(slots=True)
class _Entry:
    job: Job
    journal_id: int | None = None  # set once the journal holds it


class CallRecorder:
    def __init__(self, sink: RecordSink, *, journal_path: Path | None = None,
                 max_backoff_s: float = MAX_BACKOFF_S,
                 write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self._sink = sink
        self._journal = Journal(journal_path) if journal_path is not None else None
        self._max_backoff_s = max_backoff_s
        self._write_timeout_s = write_timeout_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        # Stage 1: waiting to be journaled (and done marks, rejects, waiting to be noted).
        self._to_journal: list[_Entry] = []
        self._done: list[int] = []
        self._rejected: list[Job] = []
        self._journal_wake = asyncio.Event()
        self._journal_idle = asyncio.Event()
        self._journal_idle.set()
        self._closing = False
        self._stopped = False
        # Stage 2: waiting for the store.
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._journal_ok = self._journal is not None
        self._failing_since: float | None = None
        self.written = 0
        self.rejected = 0

    # -- what readiness and the metrics read --------------------------------------------
    @property
    def records_waiting(self) -> int:
        """Jobs submitted (or replayed) that the store does not have yet."""
        return self._waiting

    @property
    def records_journaled(self) -> int:
        """Jobs in the journal file not yet marked done."""
        return len(self._journal.pending) if self._journal is not None else 0

    @property
    def store_reachable(self) -> bool:
        """False from a failed store write until the next one that succeeds."""
        return self._failing_since is None

    @property
    def store_failing_since(self) -> float | None:
        """The wall-clock time (`time.time()`) of the first failed write of this outage."""
        return self._failing_since

    @property
    def journal_ok(self) -> bool:
        """A journal is configured and its last append (or the start's read) worked."""
        return self._journal_ok

    @property
    def journal_path(self) -> Path | None:
        return self._journal.path if self._journal is not None else None

    # -- the interface --------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if self._stopped:
            self._submit_late(job)
            return
        self._waiting += 1
        self._idle.clear()
        entry = _Entry(job)
        if self._journal is None:
            self._queue.put_nowait(entry)
            return
        self._to_journal.append(entry)
        self._wake_journal()

    def _submit_late(self, job: Job) -> None:
        """After `stop()` (a call cut by a forced shutdown finishing last): straight to the
        journal file, on this thread. Blocking, but the process is stopping: no call runs."""
        if self._journal is None:
            log.error("%s submitted after the recorder stopped, with no journal: lost",
                      describe(job))
            return
        try:
            append_late(self._journal.path, job)
        except OSError:
            log.exception("%s submitted after the recorder stopped: the journal refused it, "
                          "lost", describe(job))
            return
        log.warning("%s came after the recorder stopped: journaled for the next start",
                    describe(job))

    async def start(self) -> None:
        if self._journal is not None:
            try:
                replay = await self._in_thread(self._journal.open)
            except OSError:
                log.exception("journal %s cannot be used: records wait in memory only",
                              self._journal.path)
                self._journal_ok = False
                replay = []
            for journal_id, job in replay:
                self._waiting += 1
                self._idle.clear()
                self._queue.put_nowait(_Entry(job, journal_id))
        self._tasks = [asyncio.create_task(self._journal_loop(), name="recorder-journal"),
                       asyncio.create_task(self._store_loop(), name="recorder-store")]

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything submitted so far is in the store and marked done in the
        journal (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()
            await self._journal_idle.wait()

    async def stop(self, timeout_s: float = 5.0) -> None:
        try:
            await self.flush(timeout_s)
        except TimeoutError:
            if self._journal is not None and self._journal_ok:
                log.warning("store still unavailable at shutdown: %d records stay in the "
                            "journal %s for the next start", self._waiting, self._journal.path)
            else:
                log.error("store still unavailable at shutdown and no working journal: "
                          "%d call records lost", self._waiting)
        journal_task, store_task = self._tasks or (None, None)
        if store_task is not None:
            # A write cut short here stays in the journal: the next start writes it again.
            store_task.cancel()
            await asyncio.gather(store_task, return_exceptions=True)
        if journal_task is not None:
            self._closing = True  # note what was submitted, then end
            self._wake_journal()
            await asyncio.gather(journal_task, return_exceptions=True)
        self._tasks = []
        if self._journal is not None:
            await self._in_thread(self._journal.close)
        self._thread.shutdown(wait=True)
        self._stopped = True

    # -- stage 1: the journal -------------------------------------------------------------
    def _wake_journal(self) -> None:
        self._journal_idle.clear()
        self._journal_wake.set()

    async def _journal_loop(self) -> None:
        while True:
            await self._journal_wake.wait()
            self._journal_wake.clear()
            entries, self._to_journal = self._to_journal, []
            done, self._done = self._done, []
            rejected, self._rejected = self._rejected, []
            if self._journal is not None and (entries or done or rejected):
                journal = self._journal
                try:
                    ids = await self._in_thread(
                        journal.append, [e.job for e in entries], done, rejected)
                except Exception:  # OSError (a full disk, say), or a job orjson refuses
                    log.exception("journal %s: append failed; %d records wait in memory "
                                  "only", journal.path, len(entries))
                    self._journal_ok = False
                    self._done[:0] = done  # noted with the next append that works
                    if self._closing:
                        # No next append: jobs the store has stay waiting in the journal,
                        # written again (stored once) at the next start.
                        self._journal_idle.set()
                        return
                else:
                    self._journal_ok = True
                    for entry, journal_id in zip(entries, ids, strict=True):
                        entry.journal_id = journal_id
            for entry in entries:
                self._queue.put_nowait(entry)
            if not (self._to_journal or self._done or self._rejected):
                self._journal_idle.set()
                if self._closing:
                    return

    # -- stage 2: the store ---------------------------------------------------------------
    async def _store_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            if await self._write_with_retry(entry.job):
                self.written += 1
            else:
                self.rejected += 1
                self._rejected.append(entry.job)
            if entry.journal_id is not None:
                self._done.append(entry.journal_id)
            if self._rejected or entry.journal_id is not None:
                self._wake_journal()
            self._waiting -= 1
            if self._waiting == 0:
                self._idle.set()

    async def _write_with_retry(self, job: Job) -> bool:
        """True once written; False if the store refuses it."""
        delay = 0.1
        while True:
            try:
                async with asyncio.timeout(self._write_timeout_s):
                    await self._write(job)
            except (HotlineError, OSError, TimeoutError) as exc:
                if self._failing_since is None:
                    self._failing_since = time.time()
                log.warning("could not write %s (%s); retrying in %.1f s, %d records waiting",
                            describe(job), str(exc) or type(exc).__name__, delay, self._waiting)
            except Exception:
                # Not an outage but a record the store refuses: retrying won't help.
                log.exception("store refused %s; kept in %s", describe(job),
                              self._journal.rejected_path if self._journal else "no file")
                return False
            else:
                if self._failing_since is not None:
                    log.info("store reachable again after %.1f s",
                             time.time() - self._failing_since)
                    self._failing_since = None
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff_s)

    async def _write(self, job: Job) -> None:
        if isinstance(job, CallRecord):
            await self._sink.save_call(job)
        else:
            await self._sink.record_call_status(
                job.call_sid, job.status, at=job.at, sequence=job.sequence,
                duration_s=job.duration_s)

    async def _in_thread(self, function: Callable[..., R], *args: object) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
