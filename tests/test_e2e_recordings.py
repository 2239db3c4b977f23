"""Call recordings over real sockets: a business that records gets a stereo WAV per call
(the caller left, the agent right, each where it was said and heard), downloadable with
its own key (ranges work; another tenant's answers 404); a business that does not record
gets none; the retention sweeper deletes old recordings and says so in the call's record.

The WAV's channels are checked against what the simulated phone sent and heard: speech
activity per 50 ms window, on the recording's timeline (time 0 is the webhook; the
phone's clock is mapped onto it by the stream's start)."""

from __future__ import annotations

import array
import asyncio
import io
import math
import re
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import hotline.cli.business
import hotline.cli.calls
import hotline.cli.recordings  # noqa: F401  (each registers its commands)
from hotline.audio import mulaw
from hotline.call.call_recording import recording_file
from hotline.call.recorder import job_from_json, job_to_json
from hotline.call.recording_retention import sweep_recordings
from hotline.cli import app
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.clock import REAL_TIME, SimClock
from hotline.sim.script import CallScript, Hangup, Say, WaitForAgentAudio, WaitForAgentSilence
from hotline.store import Store
from tests.factories import TEST_NUMBER, make_business
from tests.stack import TEST_CLOCK, Stack, running_stack
from tests.test_api_keys import ADMIN_TOKEN, KEY_SECRET, OTHER_NUMBER, issue

pytestmark = pytest.mark.sockets

CALLER = "+15550001111"
WINDOW = 400  # samples: 50 ms
ACTIVE_RMS = 300.0  # synthetic speech is thousands; silence decodes to 0
SLACK = 4  # windows (200 ms of call time): see `agreement`
# Greeting, a question, the answer, hang up (quiet waits long enough for a loaded machine).
CONVERSATION = CallScript([
    WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000),
    Say("Hello, I would like to book a cleaning next week please."),
    WaitForAgentAudio(played_ms=400, timeout_ms=20_000),
    WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000),
    Hangup(),
])


class Recorded:
    def __init__(self, stack: Stack, acme: str, bolt: str) -> None:
        self.stack, self.acme, self.bolt = stack, acme, bolt

    def client(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.stack.server.url, trust_env=False,
                                 headers={"Authorization": f"Bearer {token}"})


@asynccontextmanager
async def recording_stack(database_url: str, tmp_path: Path,
                          clock: SimClock = TEST_CLOCK) -> AsyncIterator[Recorded]:
    businesses = [make_business(recording=True, recording_retention_days=7),
                  make_business(slug="bolt-plumbing", name="Bolt Plumbing",
                                phone_numbers=(OTHER_NUMBER,))]
    async with running_stack(database_url, tmp_path, businesses, api_token=ADMIN_TOKEN,
                             key_secret=KEY_SECRET, clock=clock) as stack:
        store = stack.services.store
        yield Recorded(stack, await issue(store, "acme-dental"),
                       await issue(store, "bolt-plumbing"))


@pytest.fixture
async def recorded(database_url: str, tmp_path: Path) -> AsyncIterator[Recorded]:
    async with recording_stack(database_url, tmp_path) as running:
        yield running


@pytest.fixture
async def real_time_recorded(database_url: str, tmp_path: Path) -> AsyncIterator[Recorded]:
    """For where the agent's audio lands, within a few windows: on compressed time the
    phone reading the server's audio 30 ms (wall clock) late on a loaded machine would be
    150 ms of call time."""
    async with recording_stack(database_url, tmp_path, REAL_TIME) as running:
        yield running


# -- what the WAV holds -----------------------------------------------------------------------
def activity(samples: array.array[int], length: int) -> list[bool]:
    """Per 50 ms window: does it hold sound?"""
    out = []
    for at in range(0, length - WINDOW + 1, WINDOW):
        window = samples[at:at + WINDOW]
        out.append(math.sqrt(sum(s * s for s in window) / WINDOW) > ACTIVE_RMS
                   if len(window) == WINDOW else False)
    return out


def placed(length: int, pieces: list[tuple[int, bytes]]) -> array.array[int]:
    """μ-law pieces at sample offsets, decoded, on a silent track of `length` samples."""
    track = bytearray([mulaw.SILENCE_BYTE]) * length
    for at, audio in pieces:
        if at < 0:
            audio, at = audio[-at:], 0
        track[at:at + len(audio)] = audio[:max(0, length - at)]
    return mulaw.decode(bytes(track))


def stereo(wav_bytes: bytes) -> tuple[array.array[int], array.array[int]]:
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    return samples[0::2], samples[1::2]


def phone_on_recording(result: PhoneCallResult, record: CallRecord, length: int
                       ) -> tuple[array.array[int], array.array[int]]:
    """What the phone sent and heard, placed on the recording's timeline: its stream start
    (phone clock) is the record's `stream_start` (call time)."""
    assert result.start_sent_at is not None
    stream_start = next(s.ms for s in record.timeline if s.stage == "stream_start")
    origin = round(stream_start * 8)  # sample of the phone's `start`

    def sample_of(phone_s: float) -> int:
        return origin + round((phone_s - result.start_sent_at) * 8000)  # type: ignore[operator]

    sent = placed(length, [(origin, bytes(result.caller_audio))])
    heard = placed(length, [(sample_of(at), audio) for at, audio in result.heard_segments])
    return sent, heard


def agreement(got: list[bool], want: list[bool], slack: int = SLACK) -> float:
    """The share of windows whose state the other side has within `slack` windows: the
    phone reads the server's audio a little late on a loaded machine."""
    def near(i: int) -> bool:
        return got[i] in want[max(0, i - slack):i + slack + 1]
    return sum(near(i) for i in range(len(got))) / len(got)


def shown(got: list[bool], want: list[bool]) -> str:
    return ("\n got  " + "".join(".#"[g] for g in got)
            + "\n want " + "".join(".#"[w] for w in want))


def onset(windows: list[bool]) -> int:
    return windows.index(True)


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.database
async def test_a_recorded_call_has_the_caller_left_and_the_agent_right_where_heard(
        real_time_recorded: Recorded) -> None:
    recorded = real_time_recorded
    stack = recorded.stack
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=CONVERSATION)
    record = await stack.services.final_record(result.call_sid, timeout_s=20)
    assert record.recording_file == recording_file("acme-dental", result.call_sid)
    assert record.recording_file == f"recordings/acme-dental/{result.call_sid}.wav"
    async with recorded.client(recorded.acme) as http:
        response = await http.get(f"/api/v1/calls/{result.call_sid}/recording")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["accept-ranges"] == "bytes"
    caller, agent = stereo(response.content)
    length = len(caller)
    assert record.recording_ms == round(length / 8)

    sent, heard = phone_on_recording(result, record, length)
    left, right = activity(caller, length), activity(agent, length)
    want_left, want_right = activity(sent, length), activity(heard, length)
    # Both sides said something: the greeting and the answer; the caller's question.
    assert sum(want_right) >= 20 and sum(want_left) >= 20
    # Each channel holds its own side, where the phone sent or heard it.
    assert agreement(left, want_left) >= 0.9, shown(left, want_left)
    assert agreement(right, want_right) >= 0.9, shown(right, want_right)
    assert abs(onset(right) - onset(want_right)) <= SLACK  # the greeting
    assert abs(onset(left) - onset(want_left)) <= 1  # the question: stamped by the phone
    # And not the other's: the greeting is silent on the left, the question on the right.
    greeting = [i for i, (a, c) in enumerate(zip(want_right, want_left, strict=True))
                if a and not c]
    question = [i for i, c in enumerate(want_left)
                if c and not any(want_right[max(0, i - SLACK):i + SLACK + 1])]
    assert len(greeting) >= 10 and len(question) >= 10
    assert sum(left[i] for i in greeting) <= len(greeting) // 10
    assert sum(right[i] for i in question) <= len(question) // 10
    # The caller's turn in the transcript starts where their speech is in the recording.
    turn = next(t for t in record.transcript if t.speaker == "caller")
    assert abs(turn.started_ms * 8 // WINDOW - onset(left)) <= 10  # VAD: within 0.5 s


@pytest.mark.database
async def test_a_recording_is_served_in_ranges_to_its_own_business_only(
        recorded: Recorded) -> None:
    stack = recorded.stack
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=CallScript([
        WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000), Hangup()]))
    record = await stack.services.final_record(result.call_sid, timeout_s=20)
    url = f"/api/v1/calls/{result.call_sid}/recording"
    async with recorded.client(recorded.acme) as http:
        whole = await http.get(url)
        head = await http.get(url, headers={"Range": "bytes=0-43"})
        tail = await http.get(url, headers={"Range": "bytes=44-"})
        past = await http.get(url, headers={"Range": f"bytes={len(whole.content) + 10}-"})
        two = await http.get(url, headers={"Range": "bytes=0-3,8-11"})
        asked = await http.head(url)
    async with recorded.client(recorded.bolt) as http:
        other = await http.get(url)
        other_head = await http.head(url)
    async with recorded.client(ADMIN_TOKEN) as http:
        admin = await http.get(url)
        openapi = (await http.get("/api/openapi.json")).json()
    size = len(whole.content)
    assert whole.status_code == 200 and (size - 44) % 4 == 0  # a header, then stereo frames
    assert round((size - 44) / 4 / 8) == record.recording_ms
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 0-43/{size}"
    assert head.content == whole.content[:44] and head.content.startswith(b"RIFF")
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes 44-{size - 1}/{size}"
    assert head.content + tail.content == whole.content
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert two.status_code == 206
    assert two.headers["content-type"].startswith("multipart/byteranges")
    assert b"RIFF" in two.content and b"WAVE" in two.content
    assert asked.status_code == 200 and asked.content == b""
    assert asked.headers["content-length"] == str(size)
    assert asked.headers["accept-ranges"] == "bytes"
    assert other_head.status_code == 404
    assert other.status_code == 404 and result.call_sid not in other.text.replace(
        f"no call {result.call_sid}", "")  # the same answer as a call that does not exist
    assert other.json() == {"detail": f"no call {result.call_sid}"}
    assert admin.status_code == 200 and admin.content == whole.content
    assert "/api/v1/calls/{call_sid}/recording" in openapi["paths"]


@pytest.mark.database
async def test_a_business_that_does_not_record_keeps_none_until_it_turns_recording_on(
        recorded: Recorded) -> None:
    stack = recorded.stack
    listen = CallScript([WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000), Hangup()])
    result = await stack.phone.call(to=OTHER_NUMBER, from_=CALLER, script=listen)
    record = await stack.services.final_record(result.call_sid, timeout_s=20)
    assert result.played_ms > 500  # a real call: the greeting was heard
    assert record.recording_file is None and record.recording_ms is None
    async with recorded.client(recorded.bolt) as http:
        response = await http.get(f"/api/v1/calls/{result.call_sid}/recording")
        missing = await http.get("/api/v1/calls/CAnosuchcall/recording")
        shown = (await http.get("/api/v1/businesses/bolt-plumbing")).json()
        refused = await http.patch("/api/v1/businesses/bolt-plumbing",
                                   json={"recording": True, "recording_retention_days": 0})
        turned_on = await http.patch("/api/v1/businesses/bolt-plumbing",
                                     json={"recording": True, "recording_retention_days": 14})
    assert response.status_code == 404
    assert response.json() == {"detail": f"call {result.call_sid} was not recorded"}
    assert missing.status_code == 404
    assert not (Path(stack.services.settings.data_dir) / "recordings").exists()
    assert (shown["recording"], shown["recording_retention_days"]) == (False, 30)
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "recording_retention_days"]
    assert turned_on.status_code == 200, turned_on.text
    assert (turned_on.json()["recording"], turned_on.json()["recording_retention_days"]) == (
        True, 14)
    # The next call is recorded: the change reached the running server at once.
    again = await stack.phone.call(to=OTHER_NUMBER, from_=CALLER, script=listen)
    record = await stack.services.final_record(again.call_sid, timeout_s=20)
    assert record.recording_file == f"recordings/bolt-plumbing/{again.call_sid}.wav"
    assert (Path(stack.services.settings.data_dir) / record.recording_file).is_file()


# -- retention ----------------------------------------------------------------------------------
def old_call(call_sid: str, business: str, age: timedelta) -> CallRecord:
    started = datetime.now(UTC) - age
    return CallRecord(call_sid, business, "inbound", CALLER, TEST_NUMBER, "completed",
                      Outcome.COMPLETED, started, started + timedelta(minutes=1),
                      recording_file=recording_file(business, call_sid), recording_ms=200)


async def keep(store: Store, data_dir: Path, record: CallRecord, *, file: bool = True) -> Path:
    assert record.recording_file is not None
    path = data_dir / record.recording_file
    if file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mulaw.wav_bytes_from_mulaw(mulaw.silence(200)))
    await store.save_call(record)
    return path


async def swept(store: Store, *call_sids: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        records = [await store.get_call(sid) for sid in call_sids]
        if all(r is not None and r.recording_file is None for r in records):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{call_sids} not swept within {timeout_s} s")


@pytest.mark.database
async def test_the_sweeper_deletes_expired_recordings_and_says_so(
        database_url: str, tmp_path: Path) -> None:
    businesses = [make_business(recording=True, recording_retention_days=7),
                  make_business(slug="bolt-plumbing", name="Bolt Plumbing",
                                phone_numbers=(OTHER_NUMBER,), recording=True,
                                recording_retention_days=30)]
    async with running_stack(database_url, tmp_path, businesses, api_token=ADMIN_TOKEN,
                             key_secret=KEY_SECRET, recording_sweep_interval_s=0.05) as stack:
        store = stack.services.store
        data_dir = Path(stack.services.settings.data_dir)
        # The stored dates are what ages a recording: 8 days is past acme's 7, not bolt's 30.
        expired = await keep(store, data_dir, old_call("CAold", "acme-dental",
                                                        timedelta(days=8)))
        gone = await keep(store, data_dir, old_call("CAgone", "acme-dental",
                                                     timedelta(days=9)), file=False)
        young = await keep(store, data_dir, old_call("CAyoung", "acme-dental",
                                                      timedelta(days=6)))
        kept = await keep(store, data_dir, old_call("CAbolt", "bolt-plumbing",
                                                     timedelta(days=8)))
        await swept(store, "CAold", "CAgone")  # by the server's own sweeper, every 50 ms
        old, missing = await store.get_call("CAold"), await store.get_call("CAgone")
        assert old is not None and missing is not None
        assert not expired.exists() and not gone.exists()
        assert old.recording_deleted_at is not None and missing.recording_deleted_at is not None
        for sid in ("CAyoung", "CAbolt"):
            record = await store.get_call(sid)
            assert record is not None and record.recording_file is not None, sid
            assert record.recording_deleted_at is None
        assert young.exists() and kept.exists()
        # Idempotent: a sweep now finds nothing more to do.
        again = await sweep_recordings(store, data_dir)
        assert again.deleted == []
        # The journal replaying the record later does not bring the path back.
        await store.save_call(old_call("CAold", "acme-dental", timedelta(days=8)))
        replayed = await store.get_call("CAold")
        assert replayed is not None and replayed.recording_file is None
        assert replayed.recording_deleted_at == old.recording_deleted_at
        async with httpx.AsyncClient(base_url=stack.server.url, trust_env=False,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            response = await http.get("/api/v1/calls/CAold/recording")
        assert response.status_code == 404
        assert "was deleted on" in response.json()["detail"]


@pytest.mark.database
async def test_a_recording_that_cannot_be_deleted_does_not_hold_back_the_others(
        database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    await store.upgrade()
    data_dir = tmp_path / "data"
    try:
        await store.save_business(make_business(recording=True, recording_retention_days=7))
        # The oldest one's path is a directory: unlink fails (a real OSError, even as root).
        stuck = data_dir / "recordings/acme-dental/CAstuck.wav"
        stuck.mkdir(parents=True)
        await store.save_call(old_call("CAstuck", "acme-dental", timedelta(days=10)))
        later = await keep(store, data_dir, old_call("CAlater", "acme-dental",
                                                     timedelta(days=9)))
        result = await sweep_recordings(store, data_dir)
        assert (result.deleted, result.failed) == (["CAlater"], ["CAstuck"])
        assert not later.exists() and stuck.is_dir()
        left = await store.get_call("CAstuck")
        assert left is not None and left.recording_file is not None  # tried again next time
        assert left.recording_deleted_at is None
    finally:
        await store.close()


@pytest.mark.database
def test_hotline_recordings_sweep_deletes_and_lists(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def seed() -> tuple[Path, Path]:
        store = Store(database_url)
        await store.upgrade()
        try:
            await store.save_business(make_business(recording=True, recording_retention_days=1))
            old = await keep(store, data_dir, old_call("CAold", "acme-dental",
                                                       timedelta(days=2)))
            new = await keep(store, data_dir, old_call("CAnew", "acme-dental",
                                                       timedelta(hours=2)))
            return old, new
        finally:
            await store.close()

    old, new = asyncio.run(seed())
    env = {"HOTLINE_DATABASE_URL": database_url, "HOTLINE_DATA_DIR": str(data_dir),
           "COLUMNS": "200"}
    first = CliRunner().invoke(app, ["recordings", "sweep"], env=env)
    second = CliRunner().invoke(app, ["recordings", "sweep"], env=env)
    shown = CliRunner().invoke(app, ["calls", "show", "CAold"], env=env)
    kept = CliRunner().invoke(app, ["calls", "show", "CAnew"], env=env)
    business = CliRunner().invoke(app, ["business", "show", "acme-dental"], env=env)
    assert first.exit_code == 0, first.output
    assert "1 recordings deleted" in first.output and "CAold" in first.output
    assert "0 recordings deleted" in second.output
    assert not old.exists() and new.exists()
    assert shown.exit_code == 0, shown.output
    assert re.search(r"recording\s+deleted \d{4}-\d\d-\d\d", shown.output), shown.output
    assert "recordings/acme-dental/CAnew.wav (0.2 s; caller left, agent right)" in kept.output
    assert re.search(r"recording\s+on, kept 1 day\b", business.output), business.output


def test_a_journaled_record_keeps_its_recording() -> None:
    record = replace(old_call("CA1", "acme-dental", timedelta(0)),
                     recording_deleted_at=datetime.now(UTC))
    again = job_from_json(job_to_json(record))
    assert isinstance(again, CallRecord)
    assert (again.recording_file, again.recording_ms, again.recording_deleted_at) == (
        record.recording_file, record.recording_ms, record.recording_deleted_at)
