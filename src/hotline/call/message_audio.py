"""Recorded messages' audio on disk: WAV files under the data directory.

The call core hands the caller's frames over as `KeepMessageAudio` (base64 μ-law, as
received); after the call, off the media loop (`asyncio.to_thread`), they are decoded and
written as 16-bit PCM 8 kHz mono WAVs (they play everywhere; μ-law WAVs do not), atomically,
so a record written again finds the same file. Reading one back (the API) resolves its
relative path strictly inside the data directory.
"""

from __future__ import annotations

import base64
import binascii
import logging
from functools import partial
from pathlib import Path
from typing import BinaryIO

from hotline.audio.mulaw import write_wav
from hotline.call.data_files import resolve, write_atomically
from hotline.core.commands import KeepMessageAudio
from hotline.core.record import CallRecord

log = logging.getLogger("hotline.messages")


def write_message_audio(data_dir: Path, audio: list[KeepMessageAudio]) -> set[str]:
    """Write each message's WAV; the relative paths written (a failure is logged)."""
    written: set[str] = set()
    for item in audio:
        path = resolve(data_dir, item.audio_file)
        if path is None:
            log.error("message audio path %r refused: outside the data directory",
                      item.audio_file)
            continue
        mulaw = b"".join(_decoded(p) for p in item.payloads_b64)
        try:
            write_atomically(path, partial(_write_mono, mulaw))
        except OSError as exc:
            log.error("message audio %s not written: %r", item.audio_file, exc)
            continue
        written.add(item.audio_file)
    return written


def _write_mono(mulaw: bytes, out: BinaryIO) -> None:
    write_wav(out, mulaw)


def _decoded(payload_b64: str) -> bytes:
    """A frame's μ-law; a frame that is not base64 (Twilio never sends one) is left out."""
    try:
        return base64.b64decode(payload_b64, validate=True)
    except (binascii.Error, ValueError):
        return b""


def keep_written(record: CallRecord, written: set[str]) -> None:
    """A message whose audio could not be written is kept without it (its text remains)."""
    for message in record.messages:
        if message.audio_file is not None and message.audio_file not in written:
            message.audio_file = None
            message.audio_ms = None


__all__ = ["keep_written", "resolve", "write_message_audio"]
