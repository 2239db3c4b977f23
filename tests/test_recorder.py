"""CallRecorder against the real store: write-behind in order, retry through an outage,
the journal replayed at the next start, dead letters for records the store refuses.

(The journal file itself: tests/test_journal.py; real PostgreSQL outages:
tests/test_store_faults.py.)

The only double is `DownStore`: the real `Store`, "down" (raising what the real one raises
when its database is unreachable) for its first N writes, since an outage that ends on cue
cannot be produced with the real database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from hotline.call import journal as journal_module
from hotline.call.recorder import CallRecorder, CallStatusUpdate, Job, job_from_json, job_to_json
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.errors import StoreUnavailable
from hotline.store import Store
from tests.factories import TEST_NUMBER, make_business

CALLER = "+15550001111"
T0 = datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)
FAST_BACKOFF_S = 0.01


class DownStore:
    """The real store, unreachable for its first `failures` writes (then itself again)."""

    def __init__(self, store: Store, failures: int,
                 error: type[Exception] = StoreUnavailable) -> None:
        self._store = store
        self._failures = failures
        self._error = error
        self.attempts = 0

    def _maybe_fail(self) -> None:
        self.attempts += 1
        if self.attempts <= self._failures:
            raise self._error(f"database is unavailable (simulated, attempt {self.attempts})")

    async def save_call(self, record: CallRecord) -> None:
        self._maybe_fail()
        await self._store.save_call(record)

    async def record_call_status(self, call_sid: str, status: str, *, at: datetime,
                                 sequence: int | None = None,
                                 duration_s: int | None = None) -> None:
        self._maybe_fail()
        await self._store.record_call_status(call_sid, status, at=at, sequence=sequence,
                                             duration_s=duration_s)


def make_record(call_sid: str, **overrides: object) -> CallRecord:
    values: dict[str, object] = {
        "call_sid": call_sid, "business_slug": "acme-dental", "direction": "inbound",
        "from_number": CALLER, "to_number": TEST_NUMBER, "status": "in-progress",
        "outcome": None, "started_at": T0, "ended_at": None,
    }
    values.update(overrides)
    return CallRecord(**values)  # type: ignore[arg-type]


def final_record(call_sid: str) -> CallRecord:
    return make_record(
        call_sid, outcome=Outcome.COMPLETED, ended_at=T0 + timedelta(seconds=42),
        transcript=[TranscriptTurn("agent", "Hi, Acme Dental, how can I help?", 0, 1800),
                    TranscriptTurn("caller", "I'd like to book a cleaning.", 2100, 3900),
                    TranscriptTurn("agent", "Sure, which day suits you?", 4200, 5600, True)],
        timeline=[TimelineStage("webhook_received", 0.0),
                  TimelineStage("stream_start", 212.5, "MZ123"),
                  TimelineStage("call_ended", 42_000.25, "caller hung up")])


def status(call_sid: str, name: str, **overrides: object) -> CallStatusUpdate:
    # Same `at`, no sequence: the store orders such callbacks by insertion, i.e. write order.
    values: dict[str, object] = {"call_sid": call_sid, "status": name, "at": T0}
    values.update(overrides)
    return CallStatusUpdate(**values)  # type: ignore[arg-type]


@pytest.fixture
async def sink(store: Store) -> Store:
    await store.save_business(make_business())
    return store


def spooled(path: Path) -> list[Job]:
    """The jobs in a JSON-lines file (the journal's waiting ones: none is marked done)."""
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    assert not any(b'"done"' in line for line in lines)
    return [job_from_json(line) for line in lines]


def spool_files(directory: Path) -> bytes:
    """Everything in the journal and any file set aside next to it."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("journal*")) if p.is_file())


async def assert_written(store: Store, record: CallRecord, statuses: list[str]) -> None:
    stored = await store.get_call(record.call_sid)
    assert stored is not None
    assert stored.transcript == record.transcript and stored.timeline == record.timeline
    assert (stored.outcome, stored.ended_at, stored.business_slug) == (
        record.outcome, record.ended_at, record.business_slug)
    assert [s for s, _ in await store.call_statuses(record.call_sid)] == statuses


# -- writing in order -----------------------------------------------------------------------
async def test_records_and_statuses_are_written_in_the_order_submitted(sink: Store) -> None:
    recorder = CallRecorder(sink, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    try:
        call_sid = "CA" + "a" * 32
        early = make_record(call_sid, status="queued",
                            transcript=[TranscriptTurn("agent", "Hi", 0, 300)])
        final = final_record(call_sid)
        jobs: list[Job] = [early, status(call_sid, "ringing"), status(call_sid, "in-progress"),
                           status(call_sid, "completed", duration_s=42), final]
        for job in jobs:
            recorder.submit(job)
        await recorder.flush()
        # The later save replaced the earlier one (written in the other order, the early
        # record would win), and the callbacks kept their submission order.
        await assert_written(sink, final, ["ringing", "in-progress", "completed"])
        stored = await sink.get_call(call_sid)
        assert stored is not None and stored.status == "completed"  # callbacks are the authority
        assert recorder.written == len(jobs)
    finally:
        await recorder.stop()


# -- an outage --------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [StoreUnavailable, ConnectionRefusedError, TimeoutError])
async def test_an_outage_delays_writes_but_loses_nothing(sink: Store, tmp_path: Path,
                                                         error: type[Exception]) -> None:
    down = DownStore(sink, failures=4, error=error)
    journal = tmp_path / "journal.jsonl"
    recorder = CallRecorder(down, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    try:
        assert recorder.store_reachable and recorder.journal_ok
        call_sid = "CA" + "b" * 32
        recorder.submit(make_record(call_sid, status="queued"))
        recorder.submit(status(call_sid, "ringing"))
        recorder.submit(status(call_sid, "in-progress"))
        recorder.submit(final_record(call_sid))
        recorder.submit(status(call_sid, "completed"))
        assert recorder.records_waiting == 5
        await recorder.flush()
        assert recorder.store_reachable  # again, after the failures
        assert (recorder.records_waiting, recorder.records_journaled) == (0, 0)
    finally:
        await recorder.stop()
    # Every job was retried until written: 4 failed attempts, then each job once.
    assert down.attempts == 4 + 5
    assert recorder.written == 5
    await assert_written(sink, final_record(call_sid), ["ringing", "in-progress", "completed"])
    assert journal.read_bytes() == b""  # all done: nothing kept


async def test_a_write_slower_than_the_timeout_is_tried_again(sink: Store, tmp_path: Path
                                                               ) -> None:
    class SlowOnce:
        """The real store, whose first write hangs (a store that stopped answering)."""

        def __init__(self) -> None:
            self.attempts = 0

        async def save_call(self, record: CallRecord) -> None:
            self.attempts += 1
            if self.attempts == 1:
                await asyncio.Event().wait()  # never answers; cut by the write timeout
            await sink.save_call(record)

        async def record_call_status(self, *args: Any, **kwargs: Any) -> None:
            await sink.record_call_status(*args, **kwargs)

    slow = SlowOnce()
    recorder = CallRecorder(slow, journal_path=tmp_path / "journal.jsonl",
                            max_backoff_s=FAST_BACKOFF_S, write_timeout_s=0.2)
    await recorder.start()
    try:
        record = final_record("CA" + "9" * 32)
        recorder.submit(record)
        await recorder.flush()
    finally:
        await recorder.stop()
    assert slow.attempts == 2
    await assert_written(sink, record, [])


async def test_shutdown_during_an_outage_keeps_the_journal_and_the_next_start_replays(
        sink: Store, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    call_sid = "CA" + "c" * 32
    jobs: list[Job] = [make_record(call_sid, status="queued"), status(call_sid, "ringing"),
                       status(call_sid, "in-progress"), final_record(call_sid),
                       status(call_sid, "completed", sequence=None, duration_s=42)]
    down = DownStore(sink, failures=10**9)
    recorder = CallRecorder(down, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    for job in jobs:
        recorder.submit(job)
    await recorder.stop(timeout_s=0.3)

    assert down.attempts >= 1  # the first job was in flight, being retried
    assert not recorder.store_reachable and recorder.store_failing_since is not None
    assert spooled(journal) == jobs  # in the order submitted
    assert await sink.get_call(call_sid) is None

    # The next instance, on a working store, replays the journal at start.
    replaying = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await replaying.start()
    try:
        await replaying.flush()
        assert replaying.written == len(jobs)
        await assert_written(sink, final_record(call_sid), ["ringing", "in-progress", "completed"])
    finally:
        await replaying.stop()
    assert journal.read_bytes() == b""  # replayed once, not kept to replay again


async def test_a_corrupt_journal_line_loses_nothing_else(sink: Store, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    good = final_record("CA" + "4" * 32)
    torn = job_to_json(status(good.call_sid, "completed"))[:25]  # cut off mid-write
    journal.write_bytes(job_to_json(good) + b"\n" + torn + b"\n")
    recorder = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    try:
        await recorder.flush()
    finally:
        await recorder.stop()
    await assert_written(sink, good, [])
    assert journal.read_bytes() == b""  # the good line was replayed, not left to replay again
    assert torn in spool_files(tmp_path)  # the unreadable line is kept aside for a person


# -- records the store refuses ------------------------------------------------------------
REFUSED = {
    # The store refuses naive datetimes (ValueError) ...
    "naive datetime": make_record("CA" + "d" * 32, started_at=datetime(2025, 3, 1, 9, 30)),
    # ... and the database a transcript turn without text (NOT NULL).
    "NOT NULL violated": make_record(
        "CA" + "d" * 32, transcript=[TranscriptTurn("agent", None, 0, 10)]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("refused", REFUSED.values(), ids=REFUSED.keys())
async def test_a_refused_record_is_dead_lettered_and_later_jobs_still_written(
        sink: Store, tmp_path: Path, refused: CallRecord) -> None:
    journal = tmp_path / "journal.jsonl"
    rejected = tmp_path / "journal.rejected"
    recorder = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    good = final_record("CA" + "e" * 32)
    try:
        recorder.submit(refused)
        recorder.submit(good)
        recorder.submit(status(good.call_sid, "completed"))
        await recorder.flush()
        # Kept for a person to look at, not retried forever, and not blocking what follows.
        assert spooled(rejected) == [refused]
        assert recorder.rejected == 1 and recorder.store_reachable  # not an outage
        await assert_written(sink, good, ["completed"])
        assert await sink.get_call(refused.call_sid) is None
    finally:
        await recorder.stop()
    assert journal.read_bytes() == b""  # set aside, so done in the journal
    assert spooled(rejected) == [refused]  # once

    # The next start does not try it again.
    again = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await again.start()
    try:
        await again.flush()
    finally:
        await again.stop()
    assert again.written == again.rejected == 0
    assert spooled(rejected) == [refused]


# -- the journal's line format ------------------------------------------------------------
ROUND_TRIPS: dict[str, Job] = {
    "final record": dataclasses.replace(
        final_record("CA" + "f" * 32), direction="outbound", template_name="reminder",
        variables={"name": "Dana Lévy", "when": "tomorrow\n10:00"},
        started_at=datetime(2025, 3, 1, 11, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))),
    "record still open": make_record("CA" + "1" * 32),
    "record with messages": dataclasses.replace(
        final_record("CA" + "5" * 32),
        messages=[LeadMessage("Dana Lévy", "+972 50-123-4567", "Call back\nafter 5 pm", 9_500),
                  LeadMessage("", "", "שלום, תחזרו אליי", 20_000)]),
    "status with sequence": status("CA" + "2" * 32, "completed", sequence=7, duration_s=61,
                                   at=T0 + timedelta(microseconds=1)),
    "status without": status("CA" + "3" * 32, "ringing"),
}


@pytest.mark.parametrize("job", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_job_json_round_trip(job: Job) -> None:
    line = job_to_json(job)
    assert b"\n" not in line  # one job, one line
    back = job_from_json(line)
    assert type(back) is type(job) and back == job
    for name in ("at", "started_at", "ended_at"):
        value = getattr(job, name, None)
        if value is not None:
            assert getattr(back, name).utcoffset() == value.utcoffset(), name
    if isinstance(job, CallRecord):
        assert isinstance(back, CallRecord)
        assert all(isinstance(t, TranscriptTurn) for t in back.transcript)
        assert all(isinstance(s, TimelineStage) for s in back.timeline)
        assert all(isinstance(m, LeadMessage) for m in back.messages)


def test_a_record_journaled_before_messages_existed_still_reads() -> None:
    record = final_record("CA" + "6" * 32)
    line = orjson.loads(job_to_json(record))
    del line["job"]["messages"]  # as written by a version without them
    assert job_from_json(orjson.dumps(line)) == record


def test_keys_a_newer_version_wrote_are_dropped_and_missing_ones_default() -> None:
    record = dataclasses.replace(final_record("CA" + "8" * 32),
                                 messages=[LeadMessage("Dana", "+15550001111", "Call me", 4_000)])
    line = orjson.loads(job_to_json(record))
    line["job"]["messages"][0].update(language="he", id="m-1", duration_ms=900)  # not fields
    line["job"]["coming_soon"] = {"a": 1}
    line["job"]["transcript"][0]["confidence"] = 0.9
    del line["job"]["stats"], line["job"]["variables"]  # fields with defaults
    assert job_from_json(orjson.dumps(line)) == record
    update = orjson.loads(job_to_json(status(record.call_sid, "completed", sequence=3)))
    update["job"]["account_sid"] = "AC" + "0" * 32
    del update["job"]["duration_s"]
    assert job_from_json(orjson.dumps(update)) == status(record.call_sid, "completed",
                                                         sequence=3)


async def test_jobs_written_twice_are_stored_once(sink: Store) -> None:
    """The store's side of exactly once: a journal replayed after a crash between a write
    and its done mark writes the same jobs again."""
    call_sid = "CA" + "0" * 31 + "1"
    record = dataclasses.replace(final_record(call_sid),
                                 messages=[LeadMessage("Dana", "+15550001111", "Call me", 4_000)])
    jobs: list[Job] = [status(call_sid, "ringing", sequence=0),
                       status(call_sid, "in-progress", sequence=1), record,
                       status(call_sid, "completed", sequence=2, duration_s=42),
                       status(call_sid, "completed")]  # no sequence: NULL compares too
    recorder = CallRecorder(sink, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    try:
        for _ in range(2):
            for job in jobs:
                recorder.submit(job)
            await recorder.flush()
    finally:
        await recorder.stop()
    await assert_written(sink, record, ["completed", "ringing", "in-progress", "completed"])
    assert len(await sink.list_messages()) == 1
    stored = await sink.get_call(call_sid)
    assert stored is not None and stored.status == "completed"


async def test_messages_are_written_with_the_record_once_even_when_replayed(
        sink: Store, tmp_path: Path) -> None:
    spool = tmp_path / "journal.jsonl"
    record = dataclasses.replace(final_record("CA" + "7" * 32),
                                 messages=[LeadMessage("Dana", "+15550001111", "Call me", 4_000)])
    spool.write_bytes(job_to_json(record) + b"\n")
    recorder = CallRecorder(sink, journal_path=spool, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    try:
        recorder.submit(record)  # the same record again, as a retry after a lost reply would
        await recorder.flush()
    finally:
        await recorder.stop()
    (message,) = await sink.list_messages()
    assert (message.business_slug, message.call_sid, message.name, message.message) == (
        "acme-dental", record.call_sid, "Dana", "Call me")
    # 4 s after the webhook; the record's start is the stream's, 212.5 ms after it.
    assert message.created_at == T0 + timedelta(seconds=4) - timedelta(milliseconds=212.5)



async def test_a_record_submitted_after_stop_is_journaled_for_the_next_start(
        sink: Store, tmp_path: Path) -> None:
    """A call cut by a forced shutdown can finish after the recorder stopped: its record
    goes straight to the journal file, and the next start stores it."""
    journal = tmp_path / "journal.jsonl"
    recorder = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    await recorder.stop()
    late = final_record("CA" + "d" * 32)
    recorder.submit(late)
    assert spooled(journal) == [late]
    replaying = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await replaying.start()
    try:
        await replaying.flush()
        await assert_written(sink, late, [])
    finally:
        await replaying.stop()
    assert journal.read_bytes() == b""


class StoreDownFor(DownStore):
    """The real store, unreachable for one call's writes (an outage seen by one record)."""

    def __init__(self, store: Store, call_sid: str) -> None:
        super().__init__(store, failures=0)
        self.call_sid = call_sid

    async def save_call(self, record: CallRecord) -> None:
        if record.call_sid == self.call_sid:
            raise StoreUnavailable("database is unavailable (simulated)")
        await super().save_call(record)


async def test_stop_returns_when_the_disk_refuses_the_last_done_marks(
        sink: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At shutdown, one record is in the store and another still waits for it; the disk is
    full, so the first one's done mark cannot be written. Stopping must not wait for an
    append that will never work: both stay in the journal, and the next start stores the
    waiting one and the other again, once."""
    journal = tmp_path / "journal.jsonl"
    stored, waiting = final_record("CA" + "9" * 32), final_record("CA" + "8" * 32)
    recorder = CallRecorder(StoreDownFor(sink, waiting.call_sid), journal_path=journal,
                            max_backoff_s=FAST_BACKOFF_S)
    await recorder.start()
    real_fsync = os.fsync

    def full_for_done_marks(fd: int) -> None:
        # The jobs' appends get through; an append of done marks finds the disk full.
        lines = journal.read_bytes().splitlines()
        if lines and lines[-1].startswith(b'{"done"'):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", full_for_done_marks)
    recorder.submit(stored)
    recorder.submit(waiting)
    await asyncio.wait_for(_until(lambda: not recorder.journal_ok), 10)  # a done mark failed
    await asyncio.wait_for(recorder.stop(timeout_s=0.5), 10)
    monkeypatch.undo()
    assert await sink.get_call(stored.call_sid) is not None
    assert await sink.get_call(waiting.call_sid) is None
    assert spooled(journal) == [stored, waiting]
    replaying = CallRecorder(sink, journal_path=journal, max_backoff_s=FAST_BACKOFF_S)
    await replaying.start()
    try:
        await replaying.flush()
        await assert_written(sink, waiting, [])
        await assert_written(sink, stored, [])  # written twice, stored once
    finally:
        await replaying.stop()


async def _until(condition: Callable[[], bool]) -> None:
    # A recorder's counter has no event to wait on: poll it.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
