"""Recorded messages' WAVs on disk: written whole, idempotent, never outside the data dir."""

from __future__ import annotations

import base64
import wave
from datetime import UTC, datetime
from pathlib import Path

import orjson

from hotline.call.message_audio import keep_written, resolve, write_message_audio
from hotline.call.recorder import job_from_json, job_to_json
from hotline.core.commands import KeepMessageAudio
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage

FRAME = base64.b64encode(bytes([0x10]) * 160).decode()  # 20 ms


def test_a_message_is_written_as_a_16_bit_8_khz_mono_wav(tmp_path: Path) -> None:
    item = KeepMessageAudio("messages/CA1-1.wav", (FRAME,) * 100)
    assert write_message_audio(tmp_path, [item]) == {"messages/CA1-1.wav"}
    assert write_message_audio(tmp_path, [item]) == {"messages/CA1-1.wav"}  # again: the same
    with wave.open(str(tmp_path / "messages" / "CA1-1.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() == 100 * 160
    assert sorted(p.name for p in (tmp_path / "messages").iterdir()) == ["CA1-1.wav"]


def test_a_frame_that_is_not_base64_is_left_out(tmp_path: Path) -> None:
    item = KeepMessageAudio("messages/CA1-1.wav", (FRAME, "not base64!", FRAME))
    assert write_message_audio(tmp_path, [item]) == {"messages/CA1-1.wav"}
    with wave.open(str(tmp_path / "messages" / "CA1-1.wav"), "rb") as wav:
        assert wav.getnframes() == 2 * 160


def test_paths_outside_the_data_directory_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for bad in ("../x.wav", "/etc/passwd", "messages/../../x.wav", "", "."):
        assert resolve(data, bad) is None, bad
    assert write_message_audio(data, [KeepMessageAudio("../x.wav", (FRAME,))]) == set()
    assert not (tmp_path / "x.wav").exists()
    assert resolve(data, "messages/a.wav") == (data / "messages" / "a.wav").resolve()


def test_a_message_whose_audio_was_not_written_is_kept_without_it(tmp_path: Path) -> None:
    (tmp_path / "messages").write_text("a file where the directory should be")
    item = KeepMessageAudio("messages/CA1-1.wav", (FRAME,))
    written = write_message_audio(tmp_path, [item])
    assert written == set()
    record = CallRecord("CA1", "acme", "inbound", "+1", "+2", "completed",
                        Outcome.ENGINE_UNAVAILABLE, datetime.now(UTC), None,
                        messages=[LeadMessage("", "+1", "voice", 10, "CA1-1",
                                              "messages/CA1-1.wav", 20)])
    keep_written(record, written)
    assert (record.messages[0].audio_file, record.messages[0].audio_ms) == (None, None)


def test_journal_lines_carry_the_audio_fields_and_old_lines_still_read() -> None:
    record = CallRecord("CA1", "acme", "inbound", "+1", "+2", "completed",
                        Outcome.ENGINE_UNAVAILABLE, datetime.now(UTC), None,
                        messages=[LeadMessage("", "+1", "voice", 10, "CA1-1",
                                              "messages/CA1-1.wav", 20)])
    again = job_from_json(job_to_json(record))
    assert isinstance(again, CallRecord) and again.messages == record.messages
    old = orjson.loads(job_to_json(record))
    for message in old["job"]["messages"]:
        for key in ("message_id", "audio_file", "audio_ms"):
            del message[key]
    read = job_from_json(orjson.dumps(old))
    assert isinstance(read, CallRecord)
    assert read.messages == [LeadMessage("", "+1", "voice", 10)]
