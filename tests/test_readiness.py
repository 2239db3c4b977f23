"""/healthz and /readyz: each readiness check alone, then a fresh server whose greetings are
still rendering, and the fail-over of a new call while the instance drains."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from hotline.readiness import (
    CheckState,
    StoreProbe,
    drain_check,
    greetings_check,
    records_check,
)
from hotline.sim.engine import LatencyProfile
from hotline.sim.script import CallScript, Hangup, WaitForAgentSilence
from hotline.sim.twiml import Hangup as HangupVerb
from hotline.sim.twiml import Redirect, Say, parse_twiml
from hotline.store.database import Store
from hotline.telephony.twiml import FAILOVER_MESSAGES, fail_over
from tests.factories import TEST_NUMBER, make_business
from tests.server_process import free_port
from tests.stack import running_stack

LONG_GREETING = ("Hello and thank you for calling Acme Dental, the friendliest family dental "
                 "clinic in town. My name is Noa. How can I help you today?")
LISTEN_THEN_HANG_UP = CallScript([WaitForAgentSilence(quiet_ms=500, timeout_ms=20_000), Hangup()])


# -- the checks, one by one ---------------------------------------------------------------
def test_drain_check() -> None:
    assert drain_check(False, "serving").state is CheckState.PASS
    assert drain_check(True, "draining for 1.0 s (SIGTERM)").state is CheckState.FAIL


def test_records_are_safe_in_the_store_or_in_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    assert records_check(True, "reachable", None, False).state is CheckState.PASS
    down = records_check(False, "refused", journal, True)
    assert down.state is CheckState.PASS and str(journal) in down.detail
    assert records_check(False, "refused", journal, False).ok is False  # its appends fail
    assert records_check(False, "refused", None, False).ok is False


def test_greetings_are_waited_for_then_waived() -> None:
    assert greetings_check([], 3, 0.1, 20).state is CheckState.PASS
    waiting = greetings_check(["acme"], 3, 1.0, 20)
    assert waiting.state is CheckState.FAIL and "acme" in waiting.detail
    waived = greetings_check(["acme"], 3, 20.5, 20)
    assert waived.state is CheckState.WAIVED and waived.ok and "ready anyway" in waived.detail


async def test_store_probe_answers_from_a_real_store_and_caches(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}")
    try:
        probe = StoreProbe(store.check, ttl_s=60)
        assert await probe() == (True, "reachable")
        assert await probe() == (True, "reachable")
        assert probe.probes == 1  # the second answer came from the cache
    finally:
        await store.close()


async def test_store_probe_fails_fast_on_a_store_that_refuses() -> None:
    # Nothing listens on this port: the connection is refused.
    store = Store(f"postgresql+asyncpg://hotline@127.0.0.1:{free_port()}/hotline")
    try:
        probe = StoreProbe(store.check, timeout_s=1.0, ttl_s=0)
        started = time.monotonic()
        ok, detail = await probe()
        assert not ok and "unavailable" in detail
        assert time.monotonic() - started < 5
    finally:
        await store.close()


async def test_store_probe_times_out_on_a_store_that_never_answers() -> None:
    async def hangs() -> None:
        await asyncio.sleep(3600)

    ok, detail = await StoreProbe(hangs, timeout_s=0.05)()
    assert not ok and "no answer" in detail


# -- fail-over TwiML ------------------------------------------------------------------------
def test_fail_over_redirects_when_a_url_is_set() -> None:
    twiml = parse_twiml(fail_over("https://standby.example.com/twilio/voice?x=1"))
    assert [type(v) for v in twiml.verbs] == [Redirect]
    assert twiml.verbs[0].url == "https://standby.example.com/twilio/voice?x=1"  # type: ignore[union-attr]


@pytest.mark.parametrize("language, expected, say_language", [
    ("en", "en", "en-US"), ("he", "he", "he-IL"), ("fr", "en", "en-US"), (None, "en", "en-US")])
def test_fail_over_apologises_in_the_business_language_and_hangs_up(
        language: str | None, expected: str, say_language: str) -> None:
    twiml = parse_twiml(fail_over(None, language))
    say, hangup = twiml.verbs
    assert isinstance(say, Say) and isinstance(hangup, HangupVerb)
    assert say.text == FAILOVER_MESSAGES[expected] and say.language == say_language


# -- a whole server -------------------------------------------------------------------------
async def test_a_fresh_server_is_not_ready_until_its_greetings_are_rendered(
        database_url: str, tmp_path: Path) -> None:
    businesses = [make_business(greeting=LONG_GREETING),
                  make_business(slug="b2", name="B Two", phone_numbers=("+15005550007",),
                                greeting=LONG_GREETING + " We are B Two.")]
    async with running_stack(database_url, tmp_path, businesses,
                             profile=LatencyProfile.modeled()) as stack:
        async with httpx.AsyncClient(base_url=stack.server.url) as http:
            first = await http.get("/readyz")
            assert (await http.get("/healthz")).status_code == 200
            assert first.status_code == 503, first.text
            checks = first.json()["checks"]
            assert checks["greetings"]["state"] == "fail"
            assert checks["drain"]["state"] == checks["records"]["state"] == "pass"
            async with asyncio.timeout(60):
                while True:
                    ready = await http.get("/readyz")
                    if ready.status_code == 200:
                        break
                    await asyncio.sleep(0.05)
        assert ready.json()["checks"]["greetings"]["state"] == "pass"
        cache = stack.services.greetings
        assert all(cache.has(cache.key(b.greeting, b.voice)) for b in businesses)


async def test_readiness_stops_waiting_for_greetings_after_the_bound(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business(greeting=LONG_GREETING)],
                             profile=LatencyProfile.modeled(),
                             ready_greetings_wait_s=0.0) as stack:
        async with httpx.AsyncClient(base_url=stack.server.url) as http:
            response = await http.get("/readyz")
        assert response.status_code == 200, response.text
        greetings = response.json()["checks"]["greetings"]
        # Waived when the render was still going; a machine fast enough to finish first
        # passes the check outright.
        assert greetings["state"] in ("waived", "pass")
        if greetings["state"] == "waived":
            assert "ready anyway" in greetings["detail"]


async def test_a_new_call_while_draining_fails_over_to_the_standby(
        database_url: str, tmp_path: Path) -> None:
    """The draining instance redirects the call; the standby (another Hotline) answers it."""
    standby_dir = tmp_path / "standby"
    standby_dir.mkdir()
    async with running_stack(f"sqlite+aiosqlite:///{standby_dir / 'standby.db'}", standby_dir,
                             [make_business()], greeting_cache=False) as standby:
        standby_voice = standby.server.url + "/twilio/voice"
        async with running_stack(database_url, tmp_path, [make_business()],
                                 greeting_cache=False, failover_url=standby_voice) as stack:
            stack.services.drain.begin("test")
            async with httpx.AsyncClient(base_url=stack.server.url) as http:
                assert (await http.get("/readyz")).status_code == 503
            result = await stack.phone.call(to=TEST_NUMBER, from_="+15550001111",
                                            script=LISTEN_THEN_HANG_UP)
            assert result.redirect_urls == [standby_voice]
            assert result.played_ms > 0  # the standby's agent greeted the caller
            assert stack.engine.sessions == []  # the draining instance took no call
            record = await standby.services.final_record(result.call_sid, timeout_s=20)
            assert record.outcome == "completed"
