"""Store outages, for real: Hotline's PostgreSQL (a private cluster, `pg_cluster`) reached
through a TCP proxy that the test cuts (connections closed, new ones refused), stalls, and
restores; and a server process killed with SIGKILL while records wait.

What must hold: calls go on as if nothing happened; every call record and status callback
is in the store once the store is back (or at the next start), none doubled.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hotline.sim.call_result import PhoneCallResult
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import CallScript, Hangup, WaitForAgentSilence
from hotline.store import Store
from tests.factories import TEST_NUMBER, make_business
from tests.pg_cluster import PostgresCluster
from tests.server_process import served
from tests.stack import Stack, running_stack
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

CALLER = "+15550001111"
# The whole greeting, then a hang-up. 3 s of call time is 0.6 s of wall clock: 20 calls at
# once on a machine starved of CPU by the rest of the suite paused a greeting's audio for
# more than 0.3 s.
LISTEN_THEN_HANG_UP = CallScript([WaitForAgentSilence(quiet_ms=3000, timeout_ms=30_000),
                                  Hangup()])


@pytest.fixture
async def proxy(pg_cluster: PostgresCluster) -> AsyncIterator[TcpProxy]:
    running = TcpProxy("127.0.0.1", pg_cluster.port)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


def through(proxy: TcpProxy, url: str) -> str:
    """The database URL, by way of the proxy."""
    return re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{proxy.port}/", url)


async def run_calls(phone: SimulatedPhone, count: int, status_url: str,
                    at_once: int = 5) -> list[PhoneCallResult]:
    gate = asyncio.Semaphore(at_once)

    async def one() -> PhoneCallResult:
        async with gate:
            return await phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP,
                                    status_callback=status_url)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def assert_calls_went_normally(results: list[PhoneCallResult]) -> None:
    for result in results:
        assert result.webhook_status == 200, result.errors
        assert result.start_to_first_media_ms is not None and result.played_ms > 500
        assert [c.call_status for c in result.status_callbacks] == ["completed"]
        assert all(c.http_status is not None and c.http_status < 300
                   for c in result.status_callbacks), result.status_callbacks


async def assert_stored_once(url: str, results: list[PhoneCallResult]) -> None:
    """Each call is in the store with its outcome, greeting and timeline, and each status
    callback the phone sent is there exactly once; nothing else is."""
    store = Store(url)
    try:
        calls = await store.list_calls(limit=1000)
        assert sorted(c.call_sid for c in calls) == sorted(r.call_sid for r in results)
        for result in results:
            record = await store.get_call(result.call_sid)
            assert record is not None and record.outcome == "completed", result.call_sid
            # Greeted as ever. (Not the turn's text: on a machine this loaded, the transcript
            # event may come after the caller hung up.)
            assert record.transcript[0].speaker == "agent"
            stages = [s.stage for s in record.timeline]
            assert "greeting_requested" in stages and "first_audio_to_caller" in stages
            sent = [c.call_status for c in result.status_callbacks]
            assert [status for status, _ in await store.call_statuses(result.call_sid)] == sent
            assert record.status == "completed"
    finally:
        await store.close()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    """Wait for `check()` (state of another task or process: nothing to wait on but it)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def scrape(url: str, http: httpx.AsyncClient | None = None) -> dict[str, float]:
    if http is None:
        async with httpx.AsyncClient() as own:
            return await scrape(url, own)
    text = (await http.get(f"{url}/metrics")).text
    return {name: float(value) for name, value in
            re.findall(r"^(hotline_[a-z_]+) ([0-9.e+-]+)$", text, re.MULTILINE)}


# -- (1) the store cut for the length of 20 calls ------------------------------------------
@pytest.fixture
async def stack(private_database: str, proxy: TcpProxy, tmp_path: Path
                ) -> AsyncIterator[Stack]:
    async with running_stack(through(proxy, private_database), tmp_path, [make_business()],
                             greeting_cache=False) as running:
        yield running


async def test_a_store_cut_for_20_calls_loses_no_record_and_doubles_none(
        stack: Stack, proxy: TcpProxy, private_database: str) -> None:
    recorder = stack.services.recorder
    await proxy.cut()
    results = await run_calls(stack.phone, 20, f"{stack.server.url}/twilio/status")
    # Calls went as ever: answered, greeted, hung up, their callbacks answered at once.
    assert_calls_went_normally(results)
    jobs = 20 + sum(len(r.status_callbacks) for r in results)  # records and callbacks
    assert jobs >= 40

    async def all_journaled() -> bool:  # the last stream ends after the phone's call
        return recorder.records_journaled == jobs

    await until(all_journaled)
    assert recorder.records_waiting == jobs  # all of them, in memory and in the journal
    assert not recorder.store_reachable and recorder.store_failing_since is not None
    assert recorder.journal_ok
    metrics = await scrape(stack.server.url)
    assert (metrics["hotline_records_waiting"], metrics["hotline_records_journaled"],
            metrics["hotline_store_reachable"], metrics["hotline_journal_ok"]) == (
        jobs, jobs, 0, 1)
    # Ready all the same: the records are safe in the journal.
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{stack.server.url}/readyz")
    records = ready.json()["checks"]["records"]
    assert ready.status_code == 200 and "journal" in records["detail"], records

    await proxy.restore()
    await recorder.flush(timeout_s=30)
    assert recorder.store_reachable
    assert (recorder.records_waiting, recorder.records_journaled) == (0, 0)
    journal = recorder.journal_path
    assert journal is not None and journal.read_bytes() == b""
    metrics = await scrape(stack.server.url)
    assert (metrics["hotline_records_waiting"], metrics["hotline_records_journaled"],
            metrics["hotline_store_reachable"]) == (0, 0, 1)
    await assert_stored_once(private_database, results)


async def test_a_store_that_stops_answering_delays_records_but_not_calls(
        private_database: str, proxy: TcpProxy, tmp_path: Path) -> None:
    """Stalled, not refused: writes hang until the recorder's timeout, then are retried."""
    async with running_stack(through(proxy, private_database), tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        recorder = stack.services.recorder
        recorder._write_timeout_s = 0.5  # production's is 15 s
        await proxy.stall()
        results = await run_calls(stack.phone, 3, f"{stack.server.url}/twilio/status")
        assert_calls_went_normally(results)
        async def failing() -> bool:  # the first write timed out
            return not recorder.store_reachable

        await until(failing)
        await proxy.restore()
        await recorder.flush(timeout_s=30)
        await assert_stored_once(private_database, results)


async def test_the_cluster_stopped_and_started_again(
        pg_cluster: PostgresCluster, private_database: str, tmp_path: Path) -> None:
    """No proxy: PostgreSQL itself goes down (pg_ctl stop -m immediate) and comes back."""
    async with running_stack(private_database, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        pg_cluster.stop()
        try:
            results = await run_calls(stack.phone, 3, f"{stack.server.url}/twilio/status")
            assert_calls_went_normally(results)
            async def all_journaled() -> bool:
                return stack.services.recorder.records_journaled == 6

            await until(all_journaled)
        finally:
            pg_cluster.start()
        await stack.services.recorder.flush(timeout_s=30)
        await assert_stored_once(private_database, results)


# -- (2) kill -9 with records waiting ------------------------------------------------------
def journaled_jobs(path: Path) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    done = {line["done"] for line in lines if "done" in line}
    return [line for line in lines if "id" in line and line["id"] not in done]


async def test_kill_9_with_records_waiting_replays_them_at_the_next_start(
        private_database: str, proxy: TcpProxy, tmp_path: Path) -> None:
    database_url = through(proxy, private_database)
    # `hotline serve` in a child process, its journal in the data dir (the default place).
    async with served(database_url, tmp_path, [make_business()],
                      greeting_cache="false") as server:
        journal = server.journal_path
        await proxy.cut()
        results = await run_calls(server.phone, 5, f"{server.url}/twilio/status")
        assert_calls_went_normally(results)
        jobs = 5 + sum(len(r.status_callbacks) for r in results)

        async def all_journaled() -> bool:
            return (await scrape(server.url, server.http))["hotline_records_journaled"] == jobs

        await until(all_journaled)
        on_disk = journaled_jobs(journal)
        assert len(on_disk) == jobs
        assert {job["job"]["call_sid"] for job in on_disk} == {r.call_sid for r in results}
        server.signal(signal.SIGKILL)
        assert await server.exit_code(timeout_s=30) == -signal.SIGKILL
    assert len(journaled_jobs(journal)) == jobs  # nothing reached the store, nothing lost
    store = Store(private_database)
    try:
        assert await store.list_calls() == []
    finally:
        await store.close()

    # The store is back; the next start replays the journal.
    await proxy.restore()
    async with served(database_url, tmp_path, [make_business()],
                      greeting_cache="false") as server:
        assert server.journal_path == journal

        async def all_written() -> bool:
            return (await scrape(server.url, server.http))["hotline_records_waiting"] == 0

        await until(all_written, 30)
        await assert_stored_once(private_database, results)
        assert journal.read_bytes() == b""
        server.signal(signal.SIGTERM)
        assert await server.exit_code(timeout_s=30) == 0
    await assert_stored_once(private_database, results)  # the clean exit wrote nothing twice
    assert not journal.with_suffix(".corrupt").exists()  # no torn line either
