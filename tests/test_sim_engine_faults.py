"""The engine simulator's faults, through real sockets and the official SDK: handshakes
refused with 503 or held unanswered, and a live session dropped with 1011."""

from __future__ import annotations

import asyncio

import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from hotline.prompts import GREETING_MARKER
from tests.test_sim_engine import KEY, PCMU_SESSION, engine, recv, running

pytestmark = pytest.mark.sockets


async def connect_once(url: str) -> None:
    client = AsyncOpenAI(api_key=KEY, websocket_base_url=url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await recv(conn)).type == "session.created"


async def test_refused_handshakes_answer_503_then_connections_succeed() -> None:
    async with running() as simulator:
        simulator.refuse_next(2)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await connect_once(simulator.url)
            assert refused.value.response.status_code == 503
        await connect_once(simulator.url)
    assert simulator.handshakes_refused == 2 and len(simulator.sessions) == 1


async def test_a_held_handshake_hangs_until_the_client_gives_up() -> None:
    async with running() as simulator:
        simulator.hold_next(1, seconds=30)
        held = asyncio.create_task(connect_once(simulator.url))
        # Give up only once the server holds it (on a loaded machine a client that gives
        # up sooner closes its socket before the server reads the request at all).
        await asyncio.wait_for(simulator.holding.wait(), 10)
        done, _ = await asyncio.wait({held}, timeout=0.2)
        assert not done  # no answer: the connect hangs
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        await connect_once(simulator.url)  # the next one is answered
    assert simulator.handshakes_held == 1 and len(simulator.sessions) == 1


async def test_a_dropped_session_closes_with_1011_and_a_new_one_starts_empty() -> None:
    async with running() as simulator, engine(simulator) as conn:
        await conn.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hello"}]}})
        assert (await recv(conn)).type == "conversation.item.added"
        first = simulator.sessions[0]
        await simulator.drop(first)
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                await conn.recv_bytes()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        greeting_session = {**PCMU_SESSION,
                            "instructions": f'{GREETING_MARKER} "Welcome to Acme."'}
        async with engine(simulator, greeting_session) as again:
            await again.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi, Acme here."}]}})
            assert (await recv(again)).type == "conversation.item.added"
            second = simulator.sessions[1]
            assert [i["role"] for i in second.conversation] == ["assistant"]
            # Past its first response: the greeting in its instructions is not said again.
            await again.send({"type": "response.create"})
            while (event := await recv(again)).type != "response.output_audio_transcript.done":
                pass
            assert event.transcript and event.transcript != "Welcome to Acme."
    assert len(first.conversation) == 1
