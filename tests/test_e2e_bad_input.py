"""Bad input over real sockets: capped and malformed WebSocket messages on both sides, a
media stream without a valid token, oversized webhook and API bodies.

Bad input costs nothing but itself: a malformed message is counted, logged once per call
and skipped; an oversized one closes its own socket; nothing reaches another call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from hotline.body_limit import API_MAX_BODY_BYTES
from hotline.engine.realtime_codec import MAX_MESSAGE_BYTES as ENGINE_MAX_BYTES
from hotline.sim.twilio_requests import new_call_sid
from hotline.telephony.media_codec import MAX_MESSAGE_BYTES as TWILIO_MAX_BYTES
from tests.factories import TEST_NUMBER
from tests.stack import Stack, running_stack
from tests.test_e2e_calls import (
    CALLER,
    LISTEN_THEN_HANG_UP,
    _open_stream,
    _start,
    _webhook,
    assert_nothing_leaked,
    received,
    record_of,
    two_businesses,
)
from tests.test_metrics import samples

pytestmark = pytest.mark.sockets

STREAM_SID = "MZ" + "5" * 32  # the stream `_start` opens
RUNNER_TASKS = {"engine-pump", "twilio-pump"}


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path, two_businesses(),
                             greeting_cache=False) as running:
        yield running


def media(payload: str = "//////////8=", *, timestamp: str = "20",
          stream_sid: str = STREAM_SID) -> str:
    return orjson.dumps({"event": "media", "sequenceNumber": "3", "streamSid": stream_sid,
                         "media": {"track": "inbound", "chunk": "1", "timestamp": timestamp,
                                   "payload": payload}}).decode()


def stop() -> str:
    return orjson.dumps({"event": "stop", "sequenceNumber": "9", "streamSid": STREAM_SID,
                         "stop": {}}).decode()


# Each is off-protocol in its own way; none may end the call.
TWILIO_GARBAGE: list[str | bytes] = [
    "not json", "[1, 2]", "null", '{"event": 7}', '{"event": "media"}',
    '{"event": "media", "media": {"payload": 5, "timestamp": "1"}}',
    media("not base64!"), media("AAA"), media(timestamp="-20"), media(timestamp="soon"),
    media(stream_sid="MZ" + "6" * 32),  # another stream's
    '{"event": "mark", "mark": {"name": ["m1"]}}', '{"event": "dtmf", "dtmf": {"digit": "#5"}}',
    '{"event": "start", "start": {"streamSid": "", "callSid": 1}}',
    "x" * (TWILIO_MAX_BYTES - 10),  # just under the cap: read, then refused by the codec
    b"\x00\x01binary",
]
ENGINE_GARBAGE = [
    "not json", "[]", '{"type": 5}', '{"type": "response.created", "response": {"id": 7}}',
    '{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", '
    '"delta": "!!"}',
    '{"type": "input_audio_buffer.speech_started", "audio_start_ms": -5, "item_id": "u"}',
    '{"type": "response.done", "response": "done"}',
]


async def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=stack.server.url, trust_env=False) as http:
        return samples((await http.get("/metrics")).text)


def malformed(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float],
              side: str) -> float:
    return scraped[("hotline_ws_messages_malformed_total", (("side", side),))]


async def until(condition: Callable[[], object], what: str, timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition(), what


# -- WebSocket messages -------------------------------------------------------------------
async def test_a_storm_of_garbage_on_one_call_leaves_another_call_untouched(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rounds = 150
    stormy = new_call_sid()
    params = await _webhook(stack, stormy)
    stormy_engine = await stack.engine.wait_for_session(0)  # the warm session of its webhook
    calm = stack.phone.start_call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
    async with _open_stream(stack) as ws:
        await ws.send(_start(stormy, params))
        for text in ENGINE_GARBAGE * rounds:
            stormy_engine.inject(text)
        for message in TWILIO_GARBAGE * rounds:
            await ws.send(message)
        await ws.send(media())  # the call still listens: this frame reaches the engine
        await until(lambda: received(stormy_engine, "input_audio_buffer.append"),
                    "the caller's frame after the storm reaches the engine")
        await ws.send(stop())
        await ws.wait_closed()
    calm_result = await asyncio.wait_for(calm.wait(), 30)
    assert calm_result.media_received, "the calm call heard its greeting"
    assert (await record_of(stack, calm_result.call_sid)).outcome == "completed"
    assert (await record_of(stack, stormy)).outcome == "completed"
    [append] = [e for _, e in received(stormy_engine, "input_audio_buffer.append")]
    assert append["audio"] == "//////////8="  # nothing of the storm was forwarded
    await assert_nothing_leaked(stack)
    assert not {t.get_name() for t in asyncio.all_tasks()} & RUNNER_TASKS
    scraped = await scrape(stack)
    assert malformed(scraped, "twilio") == len(TWILIO_GARBAGE) * rounds
    assert malformed(scraped, "engine") == len(ENGINE_GARBAGE) * rounds
    # Logged once per call and side, not once per message.
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 2 and all(stormy in r.getMessage() for r in lines), lines


async def test_a_twilio_message_over_the_cap_closes_that_stream_with_1009(
        stack: Stack) -> None:
    call_sid = new_call_sid()
    params = await _webhook(stack, call_sid)
    async with _open_stream(stack) as ws:
        await ws.send(_start(call_sid, params))
        await ws.recv()  # the greeting flows: the call runs
        await ws.send("x" * (TWILIO_MAX_BYTES + 1))
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == 1009  # message too big: refused by uvicorn before it is read
    record = await record_of(stack, call_sid)  # the call ended cleanly, with its record
    assert "call_ended" in [s.stage for s in record.timeline]
    await assert_nothing_leaked(stack)


async def test_an_engine_event_over_the_cap_closes_the_engine_socket(stack: Stack) -> None:
    call_sid = new_call_sid()
    params = await _webhook(stack, call_sid)
    session = await stack.engine.wait_for_session(0)
    async with _open_stream(stack) as ws:
        await ws.send(_start(call_sid, params))
        await ws.recv()
        # A `response.done`-shaped event just over the cap: the client refuses it unread.
        padding = "x" * ENGINE_MAX_BYTES
        session.inject(orjson.dumps({"type": "response.done", "response": {
            "id": "resp_big", "status": "completed", "output": [{"text": padding}]}}).decode())
        await asyncio.wait_for(session.closed.wait(), 10)
        assert session.close_code == 1009  # the client closed it: too big
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(stop())
    await record_of(stack, call_sid)
    await assert_nothing_leaked(stack)


async def test_an_engine_event_under_the_cap_is_read(stack: Stack) -> None:
    """The cap leaves room for the real API's big events (a `session.updated` echoing a long
    prompt and its tools): 900 kB of instructions are parsed, not refused."""
    call_sid = new_call_sid()
    params = await _webhook(stack, call_sid)
    session = await stack.engine.wait_for_session(0)
    async with _open_stream(stack) as ws:
        await ws.send(_start(call_sid, params))
        await ws.recv()
        session.inject(orjson.dumps({"type": "session.updated", "event_id": "event_big",
                                     "session": {"type": "realtime",
                                                 "instructions": "y" * 900_000}}).decode())
        session.inject('{"type": 5}')  # a malformed marker after it: counted once read
        runner = stack.services.active_calls[call_sid]
        await until(lambda: runner.session.stats.malformed_engine == 1, "the marker is read")
        await ws.send(media())
        await until(lambda: received(session, "input_audio_buffer.append"), "the call goes on")
        await ws.send(stop())
    await record_of(stack, call_sid)
    assert session.close_code != 1009
    scraped = await scrape(stack)
    assert malformed(scraped, "engine") == 1  # the marker, not the big event


# -- a media stream without a valid token -------------------------------------------------
@pytest.mark.parametrize("parameters", [{}, {"token": "forged"}, {"token": ""}])
async def test_a_stream_without_a_valid_token_gets_no_engine_and_no_database(
        stack: Stack, parameters: dict[str, str]) -> None:
    unknown = new_call_sid()  # no webhook: no plan, no warm session
    known = new_call_sid()
    await _webhook(stack, known)  # a real call's plan and warm session, which must survive
    await stack.engine.wait_for_session(0)
    attempts, warm = stack.engine.connections_attempted, stack.services.warm.count()
    assert (attempts, warm) == (1, 1)
    statements_before = len(stack.statements)
    for call_sid in (unknown, known):
        async with _open_stream(stack) as ws:
            await ws.send(orjson.dumps({"event": "connected", "protocol": "Call",
                                        "version": "1.0.0"}).decode())
            await ws.send("garbage before the start")
            await ws.send(_start(call_sid, parameters))
            await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1008
    assert stack.engine.connections_attempted == attempts  # no engine connection opened
    assert stack.services.warm.count() == warm  # the real call's warm session is untouched
    assert len(stack.statements) == statements_before  # no database work
    assert stack.services.active_calls == {}


# -- HTTP bodies --------------------------------------------------------------------------
async def http_exchange(stack: Stack, head: str, body_chunks: list[bytes]) -> tuple[int, int]:
    """Send a request head, then body chunks while the server reads them; return the status
    and how many body bytes were sent before the server answered (or closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.server.local.port)
    sent = 0
    try:
        writer.write(head.encode())
        await writer.drain()
        response = asyncio.create_task(reader.readline())
        for chunk in body_chunks:
            if response.done():
                break
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
            await asyncio.sleep(0)  # let the server answer as soon as it would
        status_line = await asyncio.wait_for(response, 10)
    finally:
        writer.close()
    return int(status_line.split()[1]), sent


def webhook_head(path: str, *, length: int | None = None, chunked: bool = False,
                 content_type: str = "application/x-www-form-urlencoded") -> str:
    framing = (f"Content-Length: {length}\r\n" if length is not None
               else "Transfer-Encoding: chunked\r\n" if chunked else "")
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"{framing}\r\n")


def chunked(total: int, size: int = 8192) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (size, b"a" * size) for _ in range(total // size)] + [b"0\r\n\r\n"]


async def test_a_webhook_declaring_a_big_body_is_refused_before_it_is_sent(
        stack: Stack) -> None:
    status, sent = await http_exchange(
        stack, webhook_head("/twilio/voice", length=10 * 1024 * 1024), [])
    assert (status, sent) == (413, 0)
    assert stack.engine.connections_attempted == 0 and await stack.services.registry.count() == 0


async def test_a_chunked_webhook_body_is_cut_off_at_the_cap(stack: Stack) -> None:
    total = 4 * 1024 * 1024
    status, sent = await http_exchange(stack, webhook_head("/twilio/voice", chunked=True),
                                       chunked(total))
    assert status == 413
    # Refused as it passed the cap, not after the whole body (the socket buffers some).
    assert sent < total / 2, sent
    assert stack.engine.connections_attempted == 0 and await stack.services.registry.count() == 0


async def test_webhook_and_api_bodies_under_their_caps_are_served(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.server.url, trust_env=False) as http:
        small = await http.post("/twilio/status", content=b"CallSid=CA1&CallStatus=completed",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        big_json = await http.post("/api/v1/calls", json={
            "business": "acme", "to": "+15550002222", "template": "x",
            "variables": {"v": "z" * API_MAX_BODY_BYTES}})
        just_under = await http.post("/api/v1/calls", json={
            "business": "acme", "to": "+15550002222", "template": "nope",
            "variables": {"v": "z" * (API_MAX_BODY_BYTES - 1000)}})
    assert small.status_code == 403  # read and checked: unsigned
    assert big_json.status_code == 413
    assert just_under.status_code not in (413, 500)  # read, and refused for what it says
