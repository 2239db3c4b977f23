"""The operators' REST API over real HTTP: the whole product runs (`running_stack`), the
simulated Twilio REST API places the calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from hotline.audio import mulaw
from hotline.core.record import CallRecord, LeadMessage
from hotline.sim.script import CallScript, Hangup, Say, WaitForAgentSilence
from tests.factories import TEST_NUMBER, make_business
from tests.stack import AUTH_TOKEN, Stack, running_stack

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

API_TOKEN = "s3cret"
CALLEE = "+15550002222"
PLACE = {"business": "acme-dental", "to": CALLEE, "template": "reminder",
         "variables": {"name": "Dana"}}


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path, [make_business()]) as running:
        yield running


@pytest.fixture
async def guarded(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path, [make_business()],
                             api_token=API_TOKEN) as running:
        yield running


def client(stack: Stack, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=stack.server.url, headers=headers, trust_env=False)


async def assert_nothing_placed(stack: Stack) -> None:
    assert stack.twilio.created == []
    assert await stack.services.registry.count() == 0


# -- validation -----------------------------------------------------------------------------
BAD_REQUESTS = {
    "not E.164": ({**PLACE, "to": "5550002222"}, "to"),
    "E.164 with a zero country code": ({**PLACE, "to": "+0550002222"}, "to"),
    "letters in the number": ({**PLACE, "to": "+1555000222x"}, "to"),
    "too long a number": ({**PLACE, "to": "+1" + "5" * 15}, "to"),
    "unknown business": ({**PLACE, "business": "nobody"}, "nobody"),
    "unknown template": ({**PLACE, "template": "survey"}, "survey"),
    "missing variable": ({**PLACE, "variables": {}}, "name"),
    "no template given": ({"business": "acme-dental", "to": CALLEE}, "template"),
}


@pytest.mark.parametrize(("body", "named"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_an_invalid_call_request_is_refused_before_twilio(
        stack: Stack, body: dict[str, object], named: str) -> None:
    async with client(stack) as http:
        response = await http.post("/api/calls", json=body)
    assert response.status_code == 422, response.text
    assert named in str(response.json()["detail"])
    await assert_nothing_placed(stack)


async def test_a_missing_variable_is_named_plainly(stack: Stack) -> None:
    async with client(stack) as http:
        response = await http.post("/api/calls", json={**PLACE, "variables": {"nam": "Dana"}})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "reminder" in detail and "name" in detail
    await assert_nothing_placed(stack)


# -- the bearer token -----------------------------------------------------------------------
@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong", f"Bearer {API_TOKEN}x", f"Bearer {API_TOKEN[:-1]}", API_TOKEN,
    f"Basic {API_TOKEN}", f"Bearer  {API_TOKEN}",
], ids=["none", "wrong", "longer", "prefix", "no scheme", "basic", "two spaces"])
async def test_the_api_wants_the_right_bearer_token(
        guarded: Stack, caplog: pytest.LogCaptureFixture, authorization: str | None) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=guarded.server.url, trust_env=False) as http:
        placed = await http.post("/api/calls", json=PLACE, headers=headers)
        read = await http.get("/api/calls/CA" + "0" * 32, headers=headers)
        messages = await http.get("/api/messages", headers=headers)
    for response in (placed, read, messages):
        assert response.status_code == 401, response.text
        assert response.json() == {"detail": "missing or wrong bearer token"}
        for secret in (API_TOKEN, AUTH_TOKEN):
            assert secret not in response.text
    await assert_nothing_placed(guarded)
    assert_no_secret_logged(caplog)


async def test_the_right_bearer_token_places_the_call(
        guarded: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    guarded.twilio.callee_scripts[CALLEE] = CallScript([Hangup()])  # picks up, hangs up
    async with client(guarded, API_TOKEN) as http:
        placed = await http.post("/api/calls", json=PLACE)
        assert placed.status_code == 201, placed.text
        body = placed.json()
        assert body["business"] == "acme-dental" and body["to"] == CALLEE
        assert body["from"] == TEST_NUMBER and body["call_sid"].startswith("CA")
        assert len(guarded.twilio.created) == 1
        missing = await http.get("/api/calls/CA" + "0" * 32)
        assert missing.status_code == 404
        await guarded.twilio.wait_for_call(body["call_sid"], timeout=30)
    for secret in (API_TOKEN, AUTH_TOKEN):
        assert secret not in placed.text
    assert_no_secret_logged(caplog)


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "")
        for secret in (API_TOKEN, AUTH_TOKEN):
            assert secret not in line, f"{record.name} logged a secret: {line!r}"


# -- reading a call back ----------------------------------------------------------------------
async def test_an_unknown_call_is_404(stack: Stack) -> None:
    async with client(stack) as http:
        response = await http.get("/api/calls/CA" + "9" * 32)
    assert response.status_code == 404
    assert "CA" + "9" * 32 in response.json()["detail"]


async def test_a_completed_outbound_call_reads_back_with_transcript_and_timeline(
        stack: Stack) -> None:
    stack.twilio.callee_scripts[CALLEE] = CallScript([
        Say("Hello?"), WaitForAgentSilence(quiet_ms=1500, timeout_ms=20_000), Hangup()])
    async with client(stack) as http:
        placed = await http.post("/api/calls", json=PLACE)
        assert placed.status_code == 201, placed.text
        call_sid = placed.json()["call_sid"]
        result = await stack.twilio.wait_for_call(call_sid, timeout=30)
        assert result.played_ms > 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while stack.services.active_calls:
            assert loop.time() < deadline, "the server never finished the call"
            await asyncio.sleep(0.02)
        await stack.services.recorder.flush()
        response = await http.get(f"/api/calls/{call_sid}")
    assert response.status_code == 200, response.text
    call = response.json()
    assert call["call_sid"] == call_sid and call["business"] == "acme-dental"
    assert (call["direction"], call["from"], call["to"]) == ("outbound", TEST_NUMBER, CALLEE)
    assert call["status"] == "completed" and call["outcome"] == "completed"
    assert call["started_at"] and call["ended_at"]
    turns = call["transcript"]
    assert turns and set(turns[0]) == {"speaker", "text", "started_ms", "ended_ms",
                                       "interrupted"}
    agent = [t for t in turns if t["speaker"] == "agent"]
    assert agent and "Hi Dana" in agent[0]["text"]
    stages = [s["stage"] for s in call["timeline"]]
    for stage in ("webhook_received", "stream_start", "first_audio_to_caller", "call_ended"):
        assert stage in stages, stage
    assert all(set(s) == {"stage", "ms", "detail"} for s in call["timeline"])


# -- messages taken -------------------------------------------------------------------------
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def call_with_messages(call_sid: str, minutes: int, business: str, *names: str) -> CallRecord:
    return CallRecord(
        call_sid=call_sid, business_slug=business, direction="inbound",
        from_number="+15550001111", to_number=TEST_NUMBER, status="completed",
        outcome="completed", started_at=T0 + timedelta(minutes=minutes),
        ended_at=T0 + timedelta(minutes=minutes + 1),
        messages=[LeadMessage(name, "+15550001111", f"{name} asks for a call back", 1_500)
                  for name in names])


async def test_messages_read_back_newest_first_filtered_and_limited(guarded: Stack) -> None:
    store = guarded.services.store
    await store.save_call(call_with_messages("CA1", 0, "acme-dental", "Dana"))
    await store.save_call(call_with_messages("CA2", 5, "acme-dental", "Avi"))
    await store.save_call(call_with_messages("CA3", 9, "gone", "Noa"))  # no such business
    async with client(guarded, API_TOKEN) as http:
        everything = await http.get("/api/messages")
        acme = await http.get("/api/messages", params={"business": "acme-dental", "limit": 1})
        blank = await http.get("/api/messages?business=&limit=2")
        nobody = await http.get("/api/messages", params={"business": "nobody"})
        bad_limits = [await http.get("/api/messages", params={"limit": limit})
                      for limit in (0, 501, "many")]
    assert everything.status_code == 200, everything.text
    no_audio = {"audio_file": None, "audio_ms": None, "audio_url": None}
    assert everything.json() == [
        {"id": "CA3-1", "business": "", "call_sid": "CA3", "name": "Noa",
         "phone": "+15550001111", "message": "Noa asks for a call back",
         "created_at": "2026-03-01T09:39:01.500000Z", **no_audio},
        {"id": "CA2-1", "business": "acme-dental", "call_sid": "CA2", "name": "Avi",
         "phone": "+15550001111", "message": "Avi asks for a call back",
         "created_at": "2026-03-01T09:35:01.500000Z", **no_audio},
        {"id": "CA1-1", "business": "acme-dental", "call_sid": "CA1", "name": "Dana",
         "phone": "+15550001111", "message": "Dana asks for a call back",
         "created_at": "2026-03-01T09:30:01.500000Z", **no_audio},
    ]
    assert [m["call_sid"] for m in acme.json()] == ["CA2"]
    assert [m["call_sid"] for m in blank.json()] == ["CA3", "CA2"]  # empty: every business
    assert nobody.status_code == 200 and nobody.json() == []
    for response in bad_limits:
        assert response.status_code == 422, response.text
        assert "limit" in str(response.json()["detail"])


async def test_a_voice_messages_audio_downloads_behind_the_token(guarded: Stack) -> None:
    data_dir = Path(guarded.services.settings.data_dir)
    wav = mulaw.wav_bytes_from_mulaw(mulaw.silence(500))
    (data_dir / "messages").mkdir(parents=True, exist_ok=True)
    (data_dir / "messages" / "CA9-1.wav").write_bytes(wav)
    (data_dir.parent / "secret.txt").write_text("not for callers")
    record = call_with_messages("CA9", 0, "acme-dental")
    record.messages = [
        LeadMessage("", "+15550001111", "voice", 1_500, message_id="CA9-1",
                    audio_file="messages/CA9-1.wav", audio_ms=500),
        # A path that would leave the data directory (a tampered row): never served.
        LeadMessage("", "+15550001111", "evil", 1_600, message_id="CA9-2",
                    audio_file="../secret.txt", audio_ms=1),
        LeadMessage("", "+15550001111", "gone", 1_700, message_id="CA9-3",
                    audio_file="messages/CA9-3.wav", audio_ms=1)]
    await guarded.services.store.save_call(record)
    async with client(guarded, API_TOKEN) as http:
        listed = {m["id"]: m for m in (await http.get("/api/messages")).json()}
        audio = await http.get(listed["CA9-1"]["audio_url"])
        evil = await http.get("/api/messages/CA9-2/audio")
        gone = await http.get("/api/messages/CA9-3/audio")
        unknown = await http.get("/api/messages/CA0-1/audio")
        traversal = await http.get("/api/messages/..%2F..%2Fsecret.txt/audio")
    async with client(guarded) as anonymous:
        refused = await anonymous.get("/api/messages/CA9-1/audio")
    assert listed["CA9-1"]["audio_url"] == "/api/messages/CA9-1/audio"
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == wav
    for response in (evil, gone, unknown, traversal):
        assert response.status_code == 404, response.text
        assert "not for callers" not in response.text
    assert refused.status_code == 401


# -- Twilio refusing or unreachable -------------------------------------------------------
async def test_twilio_refusing_the_call_is_502_and_the_plan_is_dropped(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The account's auth token was rotated at Twilio: every API request is refused (20003).
    stack.twilio.auth_token = "rotated-" + AUTH_TOKEN[::-1]
    async with client(stack) as http:
        response = await http.post("/api/calls", json=PLACE)
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert "Twilio refused" in detail and "20003" in detail
    assert AUTH_TOKEN not in response.text and stack.twilio.auth_token not in response.text
    assert stack.twilio.calls == {}
    assert await stack.services.registry.count() == 0  # the pending plan was discarded
    assert_no_secret_logged(caplog)


async def test_twilio_unreachable_is_502_and_the_plan_is_dropped(stack: Stack) -> None:
    await stack.twilio.stop()  # nothing listens on the Twilio API's port any more
    async with client(stack) as http:
        response = await http.post("/api/calls", json=PLACE)
    assert response.status_code == 502, response.text
    assert "Twilio" in response.json()["detail"] and AUTH_TOKEN not in response.text
    assert await stack.services.registry.count() == 0  # the pending plan was discarded
