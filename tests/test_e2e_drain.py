"""SIGTERM against a real `hotline serve` process with calls on it: the drain.

The server runs in its own process (tests/server_process.py), the simulated phone, Twilio
REST API and engine in this one, over real sockets, on the compressed `TEST_CLOCK`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson
import pytest

from hotline.call.jobs import job_from_dict
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine_lines import Intent, line_for
from hotline.sim.phone import PhoneCall
from hotline.sim.script import (
    CallScript,
    Hangup,
    Say,
    Silence,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from hotline.store.database import Store
from hotline.telephony.twiml import FAILOVER_MESSAGES
from tests.factories import TEST_NUMBER, make_business
from tests.server_process import ServerProcess, served
from tests.stack import AUTH_TOKEN

pytestmark = pytest.mark.sockets

CALLER = "+15550001111"
# No nudge or silence hang-up gets in the way of a caller who waits quietly.
QUIET_CALLER_OK = {"silence_nudge_s": "600", "silence_hangup_s": "1200"}
# A call that holds the line until the server ends it.
STAYS_ON = CallScript([WaitForAgentSilence(quiet_ms=500, timeout_ms=20_000),
                       Silence(3_600_000)])


def conversation(wait_ms: int) -> CallScript:
    """Listen to the greeting, wait `wait_ms` (the test's SIGTERM comes meanwhile), ask
    something, hear the answer, hang up."""
    return CallScript([WaitForAgentSilence(quiet_ms=500, timeout_ms=20_000),
                       Silence(wait_ms), Say("Can I book a cleaning for Tuesday?"),
                       WaitForAgentAudio(played_ms=300, timeout_ms=20_000),
                       WaitForAgentSilence(quiet_ms=500), Hangup()])


async def stored(database_url: str, call_sids: list[str]) -> dict[str, CallRecord]:
    store = Store(database_url)
    try:
        records = {sid: await store.get_call(sid) for sid in call_sids}
    finally:
        await store.close()
    return {sid: record for sid, record in records.items() if record is not None}


def journaled(path: Path) -> dict[str, CallRecord]:
    """Call records waiting in the recorder's journal (the store has not taken them yet)."""
    if not path.exists():
        return {}
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    done = {line["done"] for line in lines if "done" in line}
    jobs = [job_from_dict(line) for line in lines if "id" in line and line["id"] not in done]
    return {job.call_sid: job for job in jobs if isinstance(job, CallRecord)}


async def wait_not_ready(server: ServerProcess, timeout_s: float = 5.0) -> dict[str, object]:
    async with asyncio.timeout(timeout_s):
        while True:
            response = await server.http.get("/readyz")
            if response.status_code == 503:
                body: dict[str, object] = response.json()
                return body
            await asyncio.sleep(0.01)


async def results(calls: list[PhoneCall], timeout_s: float = 60.0) -> list[PhoneCallResult]:
    async with asyncio.timeout(timeout_s):
        return [await call.wait() for call in calls]


async def test_sigterm_drains_three_calls_to_their_end_and_exits_0(
        database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, [make_business()], greeting_cache="false",
                      drain_timeout_s="120", api_token="e2e-api-token-123456",
                      **QUIET_CALLER_OK) as server:
        assert (await server.http.get("/readyz")).status_code == 200
        calls = [server.phone.start_call(to=TEST_NUMBER, from_=CALLER,
                                         script=conversation(wait_ms=30_000))
                 for _ in range(3)]
        await server.wait_for_active_calls(3)

        sent_at = server.signal(signal.SIGTERM)
        body = await wait_not_ready(server)
        not_ready_after_s = time.monotonic() - sent_at
        assert body["ready"] is False
        assert body["checks"]["drain"]["state"] == "fail"  # type: ignore[index]
        assert (await server.http.get("/healthz")).status_code == 200
        # A new call fails over: an apology, then a hang-up (no fail-over URL is set).
        newcomer = await server.phone.call(to=TEST_NUMBER, from_=CALLER, script=STAYS_ON)
        assert newcomer.say_texts == [FAILOVER_MESSAGES["en"]] and newcomer.hangup_verb
        assert newcomer.stream_url is None
        # An outbound call is refused, for another instance to place.
        placed = await server.http.post(
            "/api/calls", headers={"Authorization": "Bearer e2e-api-token-123456"},
            json={"business": "acme-dental", "to": "+15550002222", "template": "reminder",
                  "variables": {"name": "Dana"}})
        assert placed.status_code == 503
        assert await server.active_calls() == 3  # still running: nothing cut them

        finished = await results(calls)
        exit_code = await server.exit_code(timeout_s=30)
        assert exit_code == 0, "\n".join(server.log_lines()[-30:])

    assert not_ready_after_s < 2.0, not_ready_after_s
    for result in finished:
        assert result.ended_by == "phone", result  # the caller hung up, as scripted
        assert result.close_code != 1012  # no "service restart" close
    records = await stored(database_url, [r.call_sid for r in finished])
    assert len(records) == 3
    for record in records.values():
        assert record.outcome == Outcome.COMPLETED
        agent = [t for t in record.transcript if t.speaker == "agent"]
        assert len(agent) >= 2, record.transcript  # the greeting, and the answer after it
        assert "closing" not in [s.stage for s in record.timeline]
    # The log: JSON lines, the call's lines carry its SID and business as fields, and no
    # secret appears in it.
    lines = [orjson.loads(line) for line in server.log_lines() if line.startswith("{")]
    assert lines and len(lines) == len([ln for ln in server.log_lines() if ln.strip()])
    call_lines = [line for line in lines if line.get("call_sid") == finished[0].call_sid]
    assert call_lines and all(line["business"] == "acme-dental" for line in call_lines
                              if line["logger"] == "hotline.call")
    text = server.log_path.read_text()
    for secret in (AUTH_TOKEN, "e2e-api-token-123456"):
        assert secret not in text


async def test_drain_deadline_says_goodbye_and_hangs_up(
        database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, [make_business()], greeting_cache="false",
                      drain_timeout_s="1", **QUIET_CALLER_OK) as server:
        call = server.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=STAYS_ON)
        await server.wait_for_active_calls(1)
        server.signal(signal.SIGTERM)
        [result] = await results([call])
        exit_code = await server.exit_code(timeout_s=30)
        assert exit_code == 0, "\n".join(server.log_lines()[-30:])

    assert result.ended_by == "api"  # hung up through Twilio's REST API, not cut
    records = await stored(database_url, [result.call_sid])
    record = records[result.call_sid]
    assert record.outcome == Outcome.HUNG_UP_BY_AGENT
    closing = next(s for s in record.timeline if s.stage == "closing")
    assert closing.detail.startswith("shutting down")
    assert "hang_up_requested" in [s.stage for s in record.timeline]
    last_agent = [t for t in record.transcript if t.speaker == "agent"][-1]
    assert last_agent.text == line_for(Intent.GOODBYE, "en")


async def test_second_sigterm_forces_the_end_and_keeps_the_record(
        database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, [make_business()], greeting_cache="false",
                      drain_timeout_s="300", **QUIET_CALLER_OK) as server:
        call = server.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=STAYS_ON)
        await server.wait_for_active_calls(1)
        server.signal(signal.SIGTERM)
        await wait_not_ready(server)
        second_at = server.signal(signal.SIGTERM)
        exit_code = await server.exit_code(timeout_s=30)
        exited_after_s = time.monotonic() - second_at
        [result] = await results([call])
        assert exit_code == 0, "\n".join(server.log_lines()[-30:])
        journal_path = server.journal_path

    assert exited_after_s < 20  # not the 300 s drain
    assert result.closed_by == "server"
    kept = (await stored(database_url, [result.call_sid])
            or journaled(journal_path))
    assert result.call_sid in kept
    assert kept[result.call_sid].outcome is not None
