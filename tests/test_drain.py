"""The drain in-process (hotline.drain), over real sockets: what it waits for."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from hotline.drain import drain_calls
from hotline.sim.twilio_requests import new_call_sid, send_twilio_request
from tests.factories import TEST_NUMBER, make_business
from tests.stack import AUTH_TOKEN, running_stack


async def test_a_drain_with_no_call_is_over_at_once(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        result = await asyncio.wait_for(drain_calls(stack.services, "test"), 5)
        assert stack.services.drain.draining
        assert result.calls_at_start == result.said_goodbye == result.left_running == 0


async def test_the_drain_waits_for_a_stream_the_webhook_promised(
        database_url: str, tmp_path: Path) -> None:
    """A call answered just before SIGTERM has no stream yet, but it will: not cut it."""
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False, warm_sessions=False,
                             drain_timeout_s=60) as stack:
        call_sid = new_call_sid()
        params = {"CallSid": call_sid, "From": "+15550001111", "To": TEST_NUMBER,
                  "AccountSid": "AC" + "7" * 32, "CallStatus": "ringing"}
        async with httpx.AsyncClient() as http:
            answer = await send_twilio_request(http, stack.server.url + "/twilio/voice",
                                               params, auth_token=AUTH_TOKEN)
            assert "<Stream" in answer.text
            drain = asyncio.create_task(drain_calls(stack.services, "test"))
            await asyncio.sleep(0.3)
            assert not drain.done()  # waiting for that stream
            # The caller hung up before the stream opened: Twilio says so.
            started = time.monotonic()
            await send_twilio_request(http, stack.server.url + "/twilio/status",
                                      {**params, "CallStatus": "completed"},
                                      auth_token=AUTH_TOKEN)
            result = await asyncio.wait_for(drain, 5)
        assert time.monotonic() - started < 2
        assert result.said_goodbye == 0
