"""A fleet: two `hotline serve` processes behind a real nginx (a private one, rendered
from the shipped template), a private redis-server, the store under test; calls from the
simulated phone over real sockets (tests/fleet_stack.py)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from hotline.business import GreetingTiming
from hotline.core.record import CallRecord
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.phone import PhoneCall
from hotline.sim.script import (
    CallScript,
    Hangup,
    Say,
    Silence,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from hotline.sim.twilio_requests import send_twilio_request
from tests.factories import TEST_NUMBER, make_business
from tests.fleet_stack import API_TOKEN, FleetStack, fleet_stack
from tests.stack import ACCOUNT_SID, AUTH_TOKEN
from tests.test_e2e_call_control import reminder
from tests.test_e2e_calls import CALLER, LONG_GREETING

# `fleet`: `make test` runs these alone, after the suites (see the Makefile).
pytestmark = [pytest.mark.sockets, pytest.mark.fleet]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
LISTEN_THEN_HANG_UP = CallScript([WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000),
                                  Hangup()])


def conversation(pause_ms: int) -> CallScript:
    """The greeting, a pause, a question, its answer, a hang-up."""
    return CallScript([WaitForAgentSilence(quiet_ms=1200, timeout_ms=20_000), Silence(pause_ms),
                       Say("Can I book a cleaning for Tuesday?"),
                       WaitForAgentAudio(played_ms=300, timeout_ms=20_000),
                       WaitForAgentSilence(quiet_ms=1200), Hangup()])


def stages(record: CallRecord) -> dict[str, str]:
    return {s.stage: s.detail for s in record.timeline}


async def wait_registry(stack: FleetStack, state: str, timeout_s: float = 20.0) -> None:
    """Until every instance's /readyz says the registry is in `state` (ready all along)."""
    async with asyncio.timeout(timeout_s):
        for instance in stack.fleet.instances:
            while True:
                response = await stack.http.get(f"{instance.url}/readyz")
                assert response.status_code == 200, response.text
                if response.json()["checks"]["registry"]["state"] == state:
                    break
                await asyncio.sleep(0.05)


async def test_a_call_split_across_instances_greets_from_the_cache_and_is_barged_in(
        database_url: str, tmp_path: Path) -> None:
    business = make_business(greeting=LONG_GREETING)
    # Streams through nginx (no instance URL): with one worker, round robin sends the
    # webhook to one instance and the stream, the next request, to the other.
    async with fleet_stack(database_url, tmp_path, [business], pin_streams=False) as stack:
        script = CallScript([WaitForAgentAudio(played_ms=1500, timeout_ms=20_000),
                             Say("Sorry, can I just ask something?"),
                             WaitForAgentSilence(quiet_ms=1200), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        record = await stack.record(result.call_sid)
        # The warm session the webhook's instance prepared was closed when the other took
        # the stream: well within its 30 s expiry (wall clock).
        async with asyncio.timeout(5):
            for session in stack.engine.sessions:
                await session.closed.wait()

    assert result.clears, "no barge-in reached the phone"
    assert record.outcome == "completed"
    detail = stages(record)
    webhook_on, stream_on = detail["stream_claimed"].split(": ")[0].split(", ")
    assert detail["stream_claimed"].endswith("cross-instance")
    assert {webhook_on.split()[-1], stream_on.split()[-1]} == {"hotline-1", "hotline-2"}
    assert detail["engine_ready"] == "cold"  # its own session on the stream's instance
    assert detail["greeting_requested"].startswith("cached audio")  # rendered there too
    assert "barge_in" in detail and record.transcript[0].interrupted
    # The engine saw the stream's own session and, unless the claim cut its opening short
    # (a handshake closed half-way never becomes a session), the webhook's warm one.
    calls = [s for s in stack.engine.sessions
             if not any(r.type == "response.create" and "word for word" in str(r.event)
                        for r in s.received)]
    assert 1 <= len(calls) <= 2


async def test_config_and_amd_verdicts_reach_the_instance_that_needs_them_and_a_stopping_one_leaves(
        database_url: str, tmp_path: Path) -> None:
    business = make_business(templates=(reminder(GreetingTiming.AFTER_AMD),))
    # No polling to speak of: only the announcement can bring the change in time.
    async with fleet_stack(database_url, tmp_path, [business], config_refresh_s="600",
                           amd_greeting_cap_ms="10000") as stack:
        changed = "Acme Dental, good day! What can we do for you?"
        response = await stack.http.patch(
            f"{stack.fleet.instance('hotline-1').url}/api/v1/businesses/acme-dental",
            json={"greeting": changed}, headers=AUTH)
        assert response.status_code == 200, response.text
        on_b = stack.phone_at("hotline-2")
        async with asyncio.timeout(10):
            while True:  # the reload is asynchronous: a call placed at once may be early
                result = await on_b.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
                first = (await stack.record(result.call_sid)).transcript[0].text
                if first == changed:
                    break
                await asyncio.sleep(0.2)

        # An outbound call placed on hotline-1, which waits for its AMD verdict (Twilio's
        # own would come late). Its greeting, rendered by hotline-1 while the phone rings,
        # plays from the cache on whichever instance nginx gives its webhook.
        stack.twilio.amd_ms = 600_000
        stack.twilio.ring_ms = 20_000  # 4 s of wall clock: time to render, loaded or not
        # The callee waits for the greeting held for the verdict (the default callee hangs
        # up after 2 s of call-time silence: 0.4 s of wall clock, less than the verdict's
        # way here on a loaded machine, and the record had no greeting).
        stack.twilio.callee_scripts["+15550002222"] = CallScript([
            Say("Hello?"), WaitForAgentAudio(played_ms=300, timeout_ms=30_000),
            WaitForAgentSilence(quiet_ms=2000, timeout_ms=30_000), Hangup()])
        placed = await stack.http.post(
            f"{stack.fleet.instance('hotline-1').url}/api/calls", headers=AUTH, json={
                "business": "acme-dental", "to": "+15550002222", "template": "reminder",
                "variables": {"name": "Dana"}})
        assert placed.status_code == 201, placed.text
        call_sid = placed.json()["call_sid"]
        holder = await stack.running_on()
        other = next(i for i in stack.fleet.instances if i.instance_id != holder)
        verdict = await send_twilio_request(
            stack.http, f"{stack.fleet.public_url}/twilio/amd",
            {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "human"},
            auth_token=AUTH_TOKEN, connect_to=other.url)
        assert verdict.status_code == 204, verdict.text
        record = await stack.record(call_sid)

        # The active health check: an instance told to stop (SIGTERM) fails its /readyz at
        # once, and nginx is reloaded without it; calls go on through the other.
        leaving = stack.fleet.instance("hotline-2")
        leaving.terminate()
        async with asyncio.timeout(10):
            while True:
                if f"server {leaving.address} max_fails=1 fail_timeout=2s down;" in (
                        stack.fleet.nginx.config_path.read_text()):
                    break
                await asyncio.sleep(0.02)
        after = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
        after_record = await stack.record(after.call_sid)

    assert "amd_verdict" in stages(record) and "amd_cap_reached" not in stages(record)
    assert record.transcript and "Hi Dana" in record.transcript[0].text, (
        record.outcome, [(s.stage, s.ms, s.detail) for s in record.timeline])
    assert stages(record)["greeting_requested"].startswith("cached audio")
    assert after_record.outcome == "completed"
    assert stages(after_record)["stream_claimed"] == (
        "webhook on hotline-1, stream on hotline-1: same instance")


async def results(calls: list[PhoneCall], timeout_s: float = 90.0) -> list[PhoneCallResult]:
    _, pending = await asyncio.wait([call.task for call in calls], timeout=timeout_s)
    # A call still on: what it had got to (its result so far), not a bare TimeoutError.
    assert not pending, [str(call.result)[:600] for call in calls if call.task in pending]
    return [await call.wait() for call in calls]


async def until_running(stack: FleetStack, instance_id: str, timeout_s: float = 20.0) -> None:
    """Until a call runs on this instance (its own count, as Prometheus scrapes it)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await stack.metric(instance_id, "hotline_active_calls") > 0:
                return
            await asyncio.sleep(0.02)


async def test_a_rolling_restart_during_ten_calls_cuts_none_and_loses_no_record(
        database_url: str, tmp_path: Path) -> None:
    async with fleet_stack(database_url, tmp_path, [make_business()]) as stack:
        fleet = stack.fleet

        async def calls(count: int) -> list[PhoneCall]:
            started = []
            for _ in range(count):
                started.append(stack.phone.start_call(to=TEST_NUMBER, from_=CALLER,
                                                      script=conversation(pause_ms=20_000)))
                await asyncio.sleep(0.2)
            return started

        running = await calls(4)  # through nginx: on both instances
        await until_running(stack, "hotline-1")
        await until_running(stack, "hotline-2")
        first = asyncio.create_task(fleet.restart("hotline-1"))  # out, drain, start, ready
        running += await calls(3)  # while hotline-1 drains
        await asyncio.wait_for(first, 90)
        running += await calls(3)
        await until_running(stack, "hotline-2")
        await asyncio.wait_for(fleet.restart("hotline-2"), 90)
        finished = await results(running)
        records = [await stack.record(r.call_sid) for r in finished]
        starts = {i.instance_id: (i.starts, list(i.exit_codes)) for i in fleet.instances}
        drained = [int(m.group(1)) for i in fleet.instances
                   for m in re.finditer(r"draining \(SIGTERM\): (\d+) active calls",
                                        i.log_path.read_text())]

    assert starts == {"hotline-1": (2, [0]), "hotline-2": (2, [0])}
    assert len(drained) == 2 and min(drained) >= 1, drained  # calls ran through each drain
    assert len(finished) == 10
    for result in finished:
        assert result.ended_by == "phone", result  # hung up as scripted: nothing cut it
        assert result.close_code != 1012
    assert len({r.call_sid for r in records}) == 10
    for record in records:
        assert record.outcome == "completed"
        assert len([t for t in record.transcript if t.speaker == "agent"]) >= 2, (
            record.transcript, record.timeline)


async def test_with_redis_down_calls_still_complete_and_the_instances_rejoin(
        database_url: str, tmp_path: Path) -> None:
    async with fleet_stack(database_url, tmp_path, [make_business()]) as stack:
        await wait_registry(stack, "pass")
        stack.redis.stop()
        await wait_registry(stack, "degraded")
        assert await stack.metric("hotline-1", "hotline_registry_shared") == 0
        calls = [stack.phone.start_call(to=TEST_NUMBER, from_=CALLER,
                                        script=conversation(pause_ms=500)) for _ in range(4)]
        down = await results(calls)
        down_records = [await stack.record(r.call_sid) for r in down]

        await stack.redis.start()
        await wait_registry(stack, "pass")
        assert await stack.metric("hotline-2", "hotline_registry_shared") == 1
        again = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                       script=conversation(pause_ms=500))
        again_record = await stack.record(again.call_sid)

    for record in [*down_records, again_record]:
        assert record.outcome == "completed"
        assert stages(record)["stream_claimed"].endswith("same instance")


async def test_behind_a_public_url_of_its_own_streams_still_come_back_to_their_instance(
        database_url: str, tmp_path: Path) -> None:
    """Behind a tunnel or TLS (HOTLINE_PUBLIC_URL not nginx's), Twilio cannot reach an
    instance's own 127.0.0.1 port: its stream URL is its own path through nginx."""
    public = "https://hotline.example.test"
    async with fleet_stack(database_url, tmp_path, [make_business()],
                           public_url=public) as stack:
        # Round robin: one call's webhook on each instance.
        found = [await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=LISTEN_THEN_HANG_UP) for _ in range(2)]
        records = [await stack.record(r.call_sid) for r in found]

    for result, record in zip(found, records, strict=True):
        assert result.stream_url is not None
        assert result.stream_url.startswith("wss://hotline.example.test/instances/hotline-")
        assert record.outcome == "completed", record.timeline
        assert stages(record)["stream_claimed"].endswith("same instance")
        assert stages(record)["engine_ready"] == "warm"
    assert {stages(r)["stream_claimed"].split(",")[0] for r in records} == {
        "webhook on hotline-1", "webhook on hotline-2"}
