"""The journal: every job the recorder accepts, on disk before the store has it.

A JSON-lines file. A job is appended as `{"id": N, "kind": ..., "job": ...}` and fsync'd
before it counts as accepted; once the store has it, a `{"done": N}` line follows. When no
job is waiting the file is truncated to nothing; a file that is mostly done lines is
rewritten with only the waiting jobs. At start (`open`) the jobs not marked done are
returned, in the order they were appended, to be written again: the store's writes are
idempotent (by CallSid, and a status callback by its CallSid, status, sequence and time),
so a job whose done mark was lost in a crash is written twice but stored once.

Lines that cannot be read are moved to `<name>.corrupt` for a person to look at; a torn
last line (the process killed mid-write) was never accepted and joins them. Lines of the
spool file this journal replaced (no `id`) read as waiting jobs. Jobs the store refuses
(not an outage: retrying would not help) are moved to `<name>.rejected`.

Blocking file I/O: a `Journal` is used from one thread at a time, never the event loop's
(the recorder gives it a thread of its own).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from hotline.call.jobs import Job, job_from_dict, job_to_json

log = logging.getLogger("hotline.journal")

# A file of at least this many lines, four in five of them spent, is rewritten.
COMPACT_MIN_LINES = 1000


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.corrupt_path = path.with_suffix(".corrupt")
        self.rejected_path = path.with_suffix(".rejected")
        # The ids of the jobs in the file not marked done (their lines are not kept in
        # memory: the recorder holds the jobs themselves until they are written).
        self.pending: set[int] = set()
        self.lines = 0  # lines in the file
        self.syncs = 0  # fsyncs of the file (what tests check "durable" against)
        self._fd: int | None = None
        self._next_id = 1

    # -- start ----------------------------------------------------------------------------
    def open(self) -> list[tuple[int, Job]]:
        """Read what an earlier run left, keep only the jobs still waiting (rewritten into a
        fresh file), and return those, oldest first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        *lines, tail = data.split(b"\n")
        records: list[tuple[int | None, Job, bytes]] = []
        done: set[int] = set()
        corrupt: list[bytes] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                parsed: dict[str, Any] = orjson.loads(line)
                if "done" in parsed:
                    done.add(int(parsed["done"]))
                    continue
                entry_id = parsed.get("id")
                if entry_id is not None and not isinstance(entry_id, int):
                    raise TypeError(f"journal id {entry_id!r}")
                records.append((entry_id, job_from_dict(parsed), line))
            except (ValueError, KeyError, TypeError, AttributeError):
                corrupt.append(line)
        if tail.strip():
            log.warning("journal %s ends in a torn line (a write cut short): set aside in %s",
                        self.path, self.corrupt_path)
            corrupt.append(tail)
        if corrupt:
            self._set_aside(self.corrupt_path, corrupt)
            log.error("%d unreadable journal lines moved to %s", len(corrupt),
                      self.corrupt_path)
        self._next_id = 1 + max((i for i, _, _ in records if i is not None), default=0)
        waiting: list[tuple[int, Job]] = []
        kept: list[bytes] = []
        self.pending = set()
        for entry_id, job, line in records:
            if entry_id is not None and entry_id in done:
                continue
            if entry_id is None or entry_id in self.pending:  # a spool line, or a repeat
                entry_id = self._take_id()
                line = job_to_json(job, entry_id=entry_id)
            self.pending.add(entry_id)
            kept.append(line)
            waiting.append((entry_id, job))
        self._rewrite(kept)
        if waiting:
            log.info("journal %s: %d jobs waiting for the store from an earlier run",
                     self.path, len(waiting))
        return waiting

    # -- appending ------------------------------------------------------------------------
    def append(self, jobs: Sequence[Job], done: Sequence[int] = (),
               rejected: Sequence[Job] = ()) -> list[int]:
        """Append `jobs` (returning their ids, in order) and the done marks, and fsync: on
        return, every job given is durable. `rejected` jobs go to the rejected file first.
        Raises OSError when the disk refuses (the file is then as it was)."""
        if rejected:
            self._set_aside(self.rejected_path, [job_to_json(job) for job in rejected])
        fd = self._require_open()
        ids = [self._take_id() for _ in jobs]
        lines = [job_to_json(job, entry_id=i) for i, job in zip(ids, jobs, strict=True)]
        finished = [i for i in done if i in self.pending]
        if not jobs and not self.pending - set(finished):
            self.pending.clear()
            self._truncate()  # nothing waits: the done marks need not be written
            return []
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines)
                       + b"".join(b'{"done":%d}\n' % i for i in finished))
            os.fsync(fd)
        except OSError:
            _try_truncate(fd, size)
            raise
        self.syncs += 1
        self.lines += len(lines) + len(finished)
        self.pending.difference_update(finished)
        self.pending.update(ids)
        if not self.pending:
            self._truncate()
        elif self.lines >= COMPACT_MIN_LINES and self.lines >= 5 * len(self.pending):
            self._compact()
        return ids

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the file -------------------------------------------------------------------------
    def _take_id(self) -> int:
        entry_id = self._next_id
        self._next_id += 1
        return entry_id

    def _require_open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _truncate(self) -> None:
        fd = self._require_open()
        if self.lines:
            os.ftruncate(fd, 0)
            os.fsync(fd)
            self.syncs += 1
            self.lines = 0

    def _compact(self) -> None:
        """Rewrite the file with only the lines of the jobs still waiting."""
        kept = []
        for line in self.path.read_bytes().splitlines():
            entry_id = orjson.loads(line).get("id")  # this run's lines: all readable
            if entry_id in self.pending:
                kept.append(line)
        self._rewrite(kept)

    def _rewrite(self, lines: list[bytes]) -> None:
        """Replace the file, atomically, by one holding these lines."""
        self.close()
        fresh = self.path.with_suffix(".tmp")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fresh, self.path)
        _sync_directory(self.path.parent)
        self.syncs += 1
        self.lines = len(lines)
        self._require_open()

    def _set_aside(self, path: Path, lines: Sequence[bytes]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)


def append_late(path: Path, job: Job) -> None:
    """A job that came after the recorder stopped (a call cut by a forced shutdown), written
    by the caller's own thread: one line without an id, fsync'd, read at the next start as
    a waiting job (like a spool line)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        _write_all(fd, job_to_json(job) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _try_truncate(fd: int, size: int) -> None:
    """Cut a failed append off, so that the next one does not continue its torn line."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        log.exception("journal: could not cut off a failed append")


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
