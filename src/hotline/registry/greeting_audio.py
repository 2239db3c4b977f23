"""Rendered greeting audio shared through Redis, so that every instance of a fleet plays
a greeting that one of them rendered: an outbound call's greeting (rendered by the
instance that placed the call, while the phone rings) reaches the instance that answers
its webhook or its stream, and an inbound greeting is rendered once for the fleet."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from hotline.registry.redis import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S

log = logging.getLogger("hotline.greetings")

KEEP_S = 7 * 24 * 3600  # renewed by every render; each instance also keeps its own on disk


class RedisGreetingAudio:
    def __init__(self, url: str, *, prefix: str = "hotline:greeting:") -> None:
        self._prefix = prefix
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                              socket_timeout=COMMAND_TIMEOUT_S)

    async def get(self, key: str) -> bytes | None:
        """The audio, or None (not there, or Redis down: then it is rendered here)."""
        try:
            audio = await self._redis.get(self._prefix + key)
        except (aioredis.RedisError, OSError) as exc:
            log.debug("shared greeting %s unreadable: %s", key, exc)
            return None
        return audio if isinstance(audio, bytes) else None

    async def put(self, key: str, audio: bytes) -> bool:
        try:
            await self._redis.set(self._prefix + key, audio, ex=KEEP_S)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("greeting %s not shared (Redis unavailable: %s)", key, exc)
            return False
        return True

    async def close(self) -> None:
        await self._redis.aclose()
