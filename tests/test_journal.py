"""The journal file (hotline.call.journal): durable before accepted, done marks, a torn last
line, compaction, replay in order; and the recorder's use of it off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from hotline.call import journal as journal_module
from hotline.call.jobs import Job, job_from_json, job_to_json
from hotline.call.journal import Journal
from hotline.call.recorder import CallRecorder
from hotline.store import Store
from tests.test_recorder import final_record, make_record, status


def jobs(n: int, prefix: str = "a") -> list[Job]:
    return [final_record("CA" + prefix * 28 + f"{i:04d}") for i in range(n)]


def file_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors os.fsync was called on (the real fsync still runs)."""
    calls: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(journal_module.os, "fsync", spy)
    return calls


def test_each_append_is_fsynced_before_it_returns(tmp_path: Path, fsyncs: list[int]) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.open() == []
    for expected, job in enumerate(jobs(3), start=1):
        before = len(fsyncs)
        (entry_id,) = journal.append([job])
        assert entry_id == expected
        # The file's own descriptor was synced, after the line was in it.
        assert journal._fd in fsyncs[before:]
        assert job_from_json(journal.path.read_bytes().splitlines()[-1]) == job
    assert len(journal.pending) == 3


def test_done_marks_and_replay_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.open()
    first, second, third, fourth = jobs(4)
    assert journal.append([first, second]) == [1, 2]
    assert journal.append([third], done=[1]) == [3]
    assert journal.append([fourth], done=[3]) == [4]
    assert {"done": 1} in file_lines(path) and {"done": 3} in file_lines(path)
    journal.close()

    # A new process: the jobs not marked done, in the order appended, with their ids.
    again = Journal(path)
    assert again.open() == [(2, second), (4, fourth)]
    assert [line.get("id") for line in file_lines(path)] == [2, 4]  # rewritten: no done lines
    assert again.append([first]) == [5]  # ids go on, never reused while the file holds them
    again.close()
    assert Journal(path).open() == [(2, second), (4, fourth), (5, first)]


def test_nothing_waiting_truncates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.open()
    journal.append(jobs(3))
    journal.append([], done=[1, 2])
    assert path.stat().st_size > 0
    journal.append([], done=[3])
    assert path.read_bytes() == b"" and journal.pending == set()
    journal.append(jobs(1, "b"))  # and appends go on in the emptied file
    assert [line["id"] for line in file_lines(path)] == [4]


def test_a_file_mostly_done_is_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_MIN_LINES", 20)
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.open()
    stuck = jobs(1, "s")[0]
    (stuck_id,) = journal.append([stuck])  # one the store never takes
    longest = 0
    for batch in range(10):
        ids = journal.append(jobs(3, str(batch)))
        journal.append([], done=ids)
        longest = max(longest, len(path.read_bytes().splitlines()))
    assert longest <= 20  # rewritten whenever it grew to the limit
    assert journal.pending == {stuck_id}
    journal.close()
    assert Journal(path).open() == [(stuck_id, stuck)]


def test_a_torn_last_line_is_set_aside_and_the_rest_replayed(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first, second = jobs(2)
    whole = job_to_json(first, entry_id=1) + b"\n" + job_to_json(second, entry_id=2) + b"\n"
    torn = job_to_json(jobs(1, "t")[0], entry_id=3)[:40]  # kill -9 in the middle of a write
    path.write_bytes(whole + b'{"done":1}\n' + torn)
    journal = Journal(path)
    assert journal.open() == [(2, second)]
    assert torn in (tmp_path / "journal.corrupt").read_bytes()
    # The file was rewritten: the next append starts a line of its own.
    journal.append([first])
    assert [job_from_json(line) for line in path.read_bytes().splitlines()] == [second, first]


def test_corrupt_lines_are_set_aside_the_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first, second = jobs(2)
    bad = [b"not json", b'{"id": 7, "kind": "call", "job": {"call_sid": "CA1"}}',
           b'{"id": 8, "kind": "fax", "job": {}}', b'{"id": "x", "kind": "status", "job": {}}']
    path.write_bytes(b"\n".join([job_to_json(first, entry_id=1), *bad,
                                 job_to_json(second, entry_id=9)]) + b"\n")
    assert Journal(path).open() == [(1, first), (9, second)]
    assert (tmp_path / "journal.corrupt").read_bytes() == b"".join(b + b"\n" for b in bad)


def test_the_old_spool_file_reads_as_waiting_jobs(tmp_path: Path) -> None:
    """Lines without an id (the spool file this journal replaced), mixed with journal lines,
    are replayed in file order and given fresh ids."""
    path = tmp_path / "journal.jsonl"
    old = [make_record("CA" + "1" * 32), status("CA" + "1" * 32, "completed")]
    new = jobs(1)[0]
    path.write_bytes(job_to_json(old[0]) + b"\n" + job_to_json(new, entry_id=4) + b"\n"
                     + job_to_json(old[1]) + b"\n")
    assert Journal(path).open() == [(5, old[0]), (4, new), (6, old[1])]
    assert Journal(path).open() == [(5, old[0]), (4, new), (6, old[1])]  # opening is stable


async def test_the_fsync_runs_off_the_event_loop_and_a_job_counts_once_synced(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk slow to sync never stalls the loop (other calls' media), and a job counts as
    journaled only once its fsync returned."""
    release = threading.Event()
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        release.wait(10)
        real(fd)

    recorder = CallRecorder(store, journal_path=tmp_path / "journal.jsonl")
    await recorder.start()
    monkeypatch.setattr(journal_module.os, "fsync", slow_fsync)
    try:
        recorder.submit(final_record("CA" + "f" * 32))
        # The loop keeps turning while the journal's thread waits on the disk.
        lags = []
        for _ in range(20):
            started = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - started)
        assert recorder.records_journaled == 0  # not durable yet
        assert recorder.records_waiting == 1
        assert await store.get_call("CA" + "f" * 32) is None  # nor sent to the store
        release.set()
        await recorder.flush()
        assert (recorder.records_waiting, recorder.records_journaled) == (0, 0)
        assert await store.get_call("CA" + "f" * 32) is not None
    finally:
        release.set()
        await recorder.stop()
    assert max(lags) < 0.5  # the blocked fsync took none of the loop's time (it waited 10 s)


async def test_a_journal_that_cannot_be_written_leaves_the_records_in_memory(
        store: Store, tmp_path: Path) -> None:
    """A real fault: the journal's directory is a file. Records still reach the store."""
    (tmp_path / "not-a-directory").write_bytes(b"")
    recorder = CallRecorder(store, journal_path=tmp_path / "not-a-directory" / "journal.jsonl")
    await recorder.start()
    try:
        assert not recorder.journal_ok
        record = final_record("CA" + "e" * 32)
        recorder.submit(record)
        await recorder.flush()
        assert await store.get_call(record.call_sid) is not None
    finally:
        await recorder.stop()
