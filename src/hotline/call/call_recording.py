"""A call's recording on disk: both sides in one WAV, 16-bit PCM 8 kHz stereo, the caller
on the left and the agent on the right, at `recordings/<business>/<CallSid>.wav` under the
data directory.

Written after the call, off the media loop (`asyncio.to_thread`), from the `CallTape` the
runner filled (`hotline.audio.recording_mix` places the frames); atomically, so a file is
there whole or not at all. Its path and length then go with the call's record through the
recorder (journaled first), so a store outage never loses them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from hotline.audio.mulaw import write_wav
from hotline.audio.recording_mix import (
    SAMPLES_PER_MS,
    CallTape,
    channels,
    place_frames,
    recording_samples,
)
from hotline.call.data_files import resolve, write_atomically
from hotline.core.record import CallRecord

log = logging.getLogger("hotline.recordings")
T = TypeVar("T")
# This runs in a thread beside the event loop, in Python loops: left alone it would keep
# the GIL for the interpreter's switch interval (5 ms) each time the loop wants it back.
# Handing it over every few hundred frames keeps the loop's wake-ups within ~0.1 ms
# (measured: a 10-minute call's writing took the loop's median lag from 5 ms to 0.1 ms).
PACE_FRAMES = 256

RECORDINGS_DIR = "recordings"
# What may name a file: Twilio's CallSids (CA + 32 hex) and slugs are well inside this.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def _paced(items: Iterable[T]) -> Iterator[T]:
    for i, item in enumerate(items):
        if i % PACE_FRAMES == PACE_FRAMES - 1:
            time.sleep(0)  # releases the GIL: the event loop takes it if it waits
        yield item


def recording_file(business_slug: str, call_sid: str) -> str | None:
    """Where the call's recording goes, relative to the data directory (None: a name that
    cannot be a file name)."""
    if not (_SAFE_NAME.fullmatch(business_slug) and _SAFE_NAME.fullmatch(call_sid)):
        return None
    return f"{RECORDINGS_DIR}/{business_slug}/{call_sid}.wav"


def write_recording(data_dir: Path, record: CallRecord, tape: CallTape,
                    end_ms: float) -> tuple[str, int] | None:
    """Write the call's WAV: its path (relative to `data_dir`) and length in ms, for the
    caller to put in the record on the event loop (this runs in a thread: a record it set
    itself could be journaled half set). None: a call with no audio, or a file that cannot
    be written (logged)."""
    relative = recording_file(record.business_slug, record.call_sid)
    path = resolve(data_dir, relative) if relative is not None else None
    if relative is None or path is None:
        log.error("call %r of %r: no recording (not a safe file name)", record.call_sid,
                  record.business_slug)
        return None
    placed = place_frames(tape.stream_started_ms, _paced(tape.caller), _paced(tape.agent),
                          end_ms)
    samples = recording_samples(placed)
    if samples == 0:
        return None
    caller, agent = channels(_paced(placed), samples)
    try:
        write_atomically(path, lambda out: write_wav(out, caller, agent))
    except OSError as exc:
        log.error("recording %s not written: %r", relative, exc)
        return None
    return relative, round(samples / SAMPLES_PER_MS)
