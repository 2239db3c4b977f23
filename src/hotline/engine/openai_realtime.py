"""The realtime engine, reached with the official openai SDK's GA realtime client.

The SDK connects, authenticates and sends the first `session.update` with its typed
helper. Audio then moves through the connection's raw `send_raw` / `recv_bytes` with our
orjson codec, which is ~100x cheaper per message than the typed helpers.
"""

from __future__ import annotations

import base64
import logging
from typing import Protocol, cast

import orjson
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.websocket_connection_options import WebSocketConnectionOptions

from hotline.engine.realtime_codec import MAX_MESSAGE_BYTES as MAX_ENGINE_MESSAGE_BYTES
from hotline.engine.session_config import session_config
from hotline.errors import EngineProtocolError
from hotline.plan import CallPlan
from hotline.prompts import GREETING_MARKER
from hotline.settings import Settings

log = logging.getLogger("hotline.engine")


# A network that silently drops packets shows as a missing pong: within about 10 s the call
# resumes on a new session (websockets' defaults, 20 s + 20 s, meant up to 40 s of silence).
ENGINE_PING_INTERVAL_S = 5.0
ENGINE_PING_TIMEOUT_S = 5.0


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

    async def open_session(self, plan: CallPlan, *, wait_configured: bool = False,
                           instructions: str | None = None) -> AsyncRealtimeConnection:
        """Connect and configure with the plan's initial instructions (or `instructions`:
        the full prompt for a session that resumes a call after a drop).

        On the cold path there is no wait for `session.updated`: the engine applies events
        in order, so a `response.create` sent next uses the new instructions. A warm session
        (prepared in the background) waits for it, so that it is fully ready at `start` and
        the call's reader starts on a clean stream of events."""
        connection = await self._connect()
        try:
            await connection.session.update(
                session=session_config(plan, instructions or plan.initial_instructions,
                                       self._settings.openai_model))
            if wait_configured:
                await self._until(connection, "session.updated")
        except BaseException:
            await connection.close()
            raise
        return connection

    async def render_speech(self, text: str, voice: str) -> bytes:
        """The engine itself speaks `text` in `voice`, as μ-law 8 kHz: a cached greeting
        sounds exactly like the live agent."""
        connection = await self._connect()
        try:
            await connection.session.update(session={
                "type": "realtime",
                "instructions": "You read texts aloud exactly as written, nothing else.",
                "output_modalities": ["audio"],
                "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                          "output": {"format": {"type": "audio/pcmu"}, "voice": voice}},
            })
            await connection.response.create(response={
                "conversation": "none",
                "instructions": f'Say this greeting word for word. {GREETING_MARKER} "{text}"',
            })
            audio = bytearray()
            while True:
                event = orjson.loads(await connection.recv_bytes())
                kind = event.get("type")
                if kind == "response.output_audio.delta":
                    audio += base64.b64decode(event["delta"])
                elif kind == "response.done":
                    status = event["response"].get("status")
                    if status != "completed" or not audio:
                        raise EngineProtocolError(f"greeting render ended {status!r}")
                    return bytes(audio)
                elif kind == "error":
                    raise EngineProtocolError(f"greeting render failed: {event['error']}")
        finally:
            await connection.close()

    @staticmethod
    async def _until(connection: AsyncRealtimeConnection, event_type: str) -> None:
        while True:
            event = orjson.loads(await connection.recv_bytes())
            if event.get("type") == event_type:
                return
            if event.get("type") == "error":
                raise EngineProtocolError(f"engine refused the session: {event['error']}")

    async def _connect(self) -> AsyncRealtimeConnection:
        # No permessage-deflate: compressing base64 audio costs CPU per message for little.
        # `max_size`: the cap on one engine event (realtime_codec says why 1 MiB). The SDK's
        # default is None, no cap at all. A bigger event closes the socket with 1009.
        return await self._client.realtime.connect(
            model=self._settings.openai_model,
            websocket_connection_options=cast("WebSocketConnectionOptions", {
                "compression": None, "max_size": MAX_ENGINE_MESSAGE_BYTES,
                # Passed through to websockets' connect (the SDK's TypedDict lacks them).
                "ping_interval": ENGINE_PING_INTERVAL_S, "ping_timeout": ENGINE_PING_TIMEOUT_S,
            }),
        ).enter()

    async def close(self) -> None:
        await self._client.close()
