"""The retention sweeper: deletes call recordings older than their business's
`recording_retention_days`, and notes it in the call's record (`recording_deleted_at`; the
path is cleared).

The file goes first, then the mark: a store that fails in between leaves a mark to make
at the next sweep (a file already gone is not an error), never a file the record calls
deleted. Running it twice, or on two instances at once, deletes and marks each once.
The server runs it every `HOTLINE_RECORDING_SWEEP_INTERVAL_S`; `hotline recordings sweep`
runs it once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hotline.business import DEFAULT_RECORDING_RETENTION_DAYS
from hotline.call.data_files import resolve
from hotline.errors import HotlineError
from hotline.store.database import ExpiredRecording, Store

log = logging.getLogger("hotline.recordings")

BATCH = 500  # recordings looked up per round trip
FIRST_SWEEP_AFTER_S = 60.0


@dataclass(slots=True)
class SweepResult:
    deleted: list[str] = field(default_factory=list)  # CallSids whose recording went
    missing: list[str] = field(default_factory=list)  # of those, the file was gone already
    failed: list[str] = field(default_factory=list)  # not deletable (logged): left as they are


async def sweep_recordings(store: Store, data_dir: Path,
                           now: datetime | None = None) -> SweepResult:
    """Delete every recording past its retention at `now` (default: the wall clock)."""
    now = now or datetime.now(UTC)
    result = SweepResult()
    while True:
        expired = await store.expired_recordings(
            now, orphan_retention_days=DEFAULT_RECORDING_RETENTION_DAYS, limit=BATCH)
        progress = False
        for recording in expired:
            if recording.call_sid in result.failed:
                continue
            try:
                gone = await asyncio.to_thread(_delete_file, data_dir, recording)
            except OSError as exc:
                # One file that cannot go (a directory in its place, its permissions) must
                # not stop the sweep: oldest first, it would hold back every other one.
                log.error("recording %s of %s not deleted: %r", recording.recording_file,
                          recording.call_sid, exc)
                result.failed.append(recording.call_sid)
                continue
            if gone:
                result.missing.append(recording.call_sid)
            await store.mark_recording_deleted(recording.call_sid, now)
            result.deleted.append(recording.call_sid)
            progress = True
        if len(expired) < BATCH or not progress:  # a batch of failures only: no more
            break
    if result.deleted:
        log.info("retention: %d recordings deleted (%d already gone)", len(result.deleted),
                 len(result.missing))
    if result.failed:
        log.warning("retention: %d recordings could not be deleted (next sweep tries again)",
                    len(result.failed))
    return result


def _delete_file(data_dir: Path, recording: ExpiredRecording) -> bool:
    """Delete the recording's file; True if it was not there."""
    path = resolve(data_dir, recording.recording_file)
    if path is None:  # never written by us: nothing of ours to delete
        log.error("recording path %r of %s refused: outside the data directory",
                  recording.recording_file, recording.call_sid)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return True
    return False


async def sweep_periodically(store: Store, data_dir: Path, interval_s: float) -> None:
    """The server's sweeper: every `interval_s` (wall clock), the first soon after start
    (at most `FIRST_SWEEP_AFTER_S`: a server restarted more often than the interval still
    sweeps, and not while it starts up). A failed sweep (the store away, a disk error) is
    logged and tried at the next one."""
    await asyncio.sleep(min(interval_s, FIRST_SWEEP_AFTER_S))
    while True:
        try:
            await sweep_recordings(store, data_dir)
        except (HotlineError, OSError) as exc:
            log.warning("recording retention sweep failed (next in %.0f s): %s", interval_s,
                        exc)
        except Exception:  # a bug must not end the sweeping for the process's life
            log.exception("recording retention sweep failed (next in %.0f s)", interval_s)
        await asyncio.sleep(interval_s)
