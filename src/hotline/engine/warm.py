"""Warm engine sessions: connected and configured while Twilio is still opening the stream.

The voice webhook calls `prepare()` (it returns at once); the media stream's `start`
calls `claim()`. A session still connecting is awaited, never opened twice. An unclaimed
session is closed after its expiry, or at once when a status callback says the call is
over; a claim that finds nothing (expired, or the stream landed on another instance)
connects on the spot, and the timeline says which path it took. A warm session that failed
is the call's first failed attempt: the runner retries, and the next claim connects cold.
`reopen()` opens the session that resumes a call after the engine dropped mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed

from hotline.core.greeting import live_greeting_detail
from hotline.core.record import TimelineStage
from hotline.core.responses import prerequested_greeting
from hotline.engine.openai_realtime import EngineConnection, RealtimeEngine
from hotline.engine.realtime_codec import render_engine
from hotline.plan import CallPlan

log = logging.getLogger("hotline.engine.warm")


@dataclass(slots=True)
class EngineHandle:
    """An engine connection for a call, and how it was obtained."""

    connection: EngineConnection
    path: str  # "warm" | "cold" | "resume"
    stages: list[TimelineStage] = field(default_factory=list)


def _since_webhook_ms(plan: CallPlan) -> float:
    return time.time() * 1000 - plan.webhook_received_epoch_ms


@dataclass(slots=True)
class _Warm:
    task: asyncio.Task[EngineConnection]
    expiry: asyncio.TimerHandle
    stages: list[TimelineStage]


class WarmSessions:
    def __init__(self, engine: RealtimeEngine, ttl_s: float) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._sessions: dict[str, _Warm] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.opened = 0
        self.expired = 0

    def prepare(self, plan: CallPlan) -> None:
        if plan.call_sid in self._sessions:
            return
        stages: list[TimelineStage] = []
        task = asyncio.get_running_loop().create_task(self._open(plan, stages),
                                                      name=f"warm-{plan.call_sid}")
        expiry = asyncio.get_running_loop().call_later(self._ttl_s, self._expire, plan.call_sid)
        self._sessions[plan.call_sid] = _Warm(task, expiry, stages)
        self.opened += 1

    async def _open(self, plan: CallPlan, stages: list[TimelineStage]) -> EngineConnection:
        connection = await self._engine.open_session(plan, wait_configured=True)
        stages.append(TimelineStage("engine_connected", _since_webhook_ms(plan), "warm"))
        stages.append(TimelineStage("engine_configured", _since_webhook_ms(plan),
                                    f"instructions {len(plan.initial_instructions)} chars"))
        stages += await _request_greeting(plan, connection, "warm")
        return connection

    async def claim(self, plan: CallPlan) -> EngineHandle:
        """The call's warm session (awaited if still connecting), else a cold one."""
        warm = self._sessions.pop(plan.call_sid, None)
        if warm is not None:
            warm.expiry.cancel()
            # If the engine refused or dropped the prepared session, this raises: that was
            # the first attempt, and the runner's retry connects cold.
            connection = await warm.task
            return EngineHandle(connection, "warm", warm.stages)
        connection = await self._engine.open_session(plan)
        stages = [TimelineStage("engine_connected", _since_webhook_ms(plan), "cold")]
        stages += await _request_greeting(plan, connection, "cold")
        return EngineHandle(connection, "cold", stages)

    async def reopen(self, plan: CallPlan) -> EngineHandle:
        """A new session for a call whose engine dropped: the full prompt at once (the
        conversation so far is replayed into it by the call)."""
        connection = await self._engine.open_session(plan, instructions=plan.full_instructions)
        return EngineHandle(connection, "resume")

    def _expire(self, call_sid: str) -> None:
        warm = self._sessions.get(call_sid)
        if warm is not None:
            self.expired += 1
            log.info("warm session for %s unclaimed after %.0f s: closed", call_sid, self._ttl_s)
            asyncio.get_running_loop().create_task(self.discard(call_sid))

    async def discard(self, call_sid: str) -> None:
        """Close a call's unclaimed session (its call failed, or was never answered), in
        the background: a session whose prerequested greeting nobody reads can take the
        WebSocket close timeout to close, and a status callback must not wait for that."""
        warm = self._sessions.pop(call_sid, None)
        if warm is None:
            return
        warm.expiry.cancel()
        closing = asyncio.get_running_loop().create_task(_close_task(warm.task),
                                                         name=f"warm-close-{call_sid}")
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def count(self) -> int:
        return len(self._sessions)

    def has(self, call_sid: str) -> bool:
        return call_sid in self._sessions

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for warm in sessions.values():
            warm.expiry.cancel()
        await asyncio.gather(*(_close_task(w.task) for w in sessions.values()),
                             *self._closing)


async def _request_greeting(plan: CallPlan, connection: EngineConnection,
                            path: str) -> list[TimelineStage]:
    """Ask for the live greeting now, if the plan leaves that to the session's opener. If
    this is cancelled or fails, the connection is closed: nobody else holds it yet."""
    if not plan.greeting_prerequested:
        return []
    try:
        await connection.send_raw(render_engine(prerequested_greeting()))
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.close()
        raise
    return [TimelineStage("greeting_requested", _since_webhook_ms(plan),
                          f"{live_greeting_detail(plan)}, asked by the {path} session")]


async def _close_task(task: asyncio.Task[EngineConnection]) -> None:
    if not task.done():
        task.cancel()
    try:
        connection = await task
    except (asyncio.CancelledError, Exception):
        return  # it never connected: nothing to close
    # Nobody read this session: its prerequested greeting's audio fills the socket's queue,
    # and the engine's close frame would wait behind it for the close timeout (10 s). Read
    # (and drop) what comes while closing, so the close completes in a round trip.
    draining = asyncio.get_running_loop().create_task(_discard_events(connection))
    try:
        with contextlib.suppress(OSError, ConnectionClosed):
            await connection.close()
    finally:
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)


async def _discard_events(connection: EngineConnection) -> None:
    with contextlib.suppress(OSError, ConnectionClosed):
        while True:
            await connection.recv_bytes()
