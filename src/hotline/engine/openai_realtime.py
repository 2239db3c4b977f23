"""The realtime engine, reached with the official openai SDK's GA realtime client.

The SDK connects, authenticates and sends the first `session.update` with its typed
helper. Audio then moves through the connection's raw `send_raw` / `recv_bytes` with our
orjson codec, which is ~100x cheaper per message than the typed helpers.
"""

from __future__ import annotations

import logging
from typing import Protocol

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from hotline.engine.session_config import session_config
from hotline.plan import CallPlan
from hotline.settings import Settings

log = logging.getLogger("hotline.engine")


class EngineConnection(Protocol):
    """What the call runner needs of an engine connection."""

    async def send_raw(self, data: str) -> None: ...
    async def recv_bytes(self) -> bytes: ...
    async def close(self, *, code: int = 1000, reason: str = "") -> None: ...


class RealtimeEngine:
    """Opens configured realtime sessions; one SDK client shared by every call."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            websocket_base_url=settings.openai_realtime_url,
        )

    async def open_session(self, plan: CallPlan) -> AsyncRealtimeConnection:
        """Connect and configure with the compact instructions (no wait for session.updated:
        the engine applies events in order, so a response.create sent next uses them)."""
        connection = await self._client.realtime.connect(model=self._settings.openai_model).enter()
        try:
            await connection.session.update(
                session=session_config(plan, plan.compact_instructions,  # type: ignore[arg-type]
                                       self._settings.openai_model))
        except BaseException:
            await connection.close()
            raise
        return connection

    async def close(self) -> None:
        await self._client.close()
