"""Greeting audio shared through Redis: what one instance rendered, another plays without
rendering it again (an outbound call's greeting, rendered by the instance that placed the
call, on the instance that answers it)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from hotline.greetings import GreetingCache
from hotline.registry.greeting_audio import RedisGreetingAudio
from tests.server_process import free_port
from tests.services import reachable_redis_url

pytestmark = pytest.mark.sockets


class CountingRenderer:
    """The engine's part (render_speech): 1.5 s of μ-law silence per text, counted."""

    def __init__(self) -> None:
        self.renders = 0

    async def render_speech(self, text: str, voice: str) -> bytes:
        self.renders += 1
        return b"\xff" * 12_000


async def test_a_greeting_rendered_by_one_instance_is_played_by_another(
        tmp_path: Path) -> None:
    url, prefix = await reachable_redis_url(), f"test:{uuid.uuid4().hex}:"
    shared_a, shared_b = (RedisGreetingAudio(url, prefix=prefix),
                          RedisGreetingAudio(url, prefix=prefix))
    engine_a, engine_b = CountingRenderer(), CountingRenderer()
    cache_a = GreetingCache(engine_a, tmp_path / "a", "m", shared=shared_a)
    cache_b = GreetingCache(engine_b, tmp_path / "b", "m", shared=shared_b)
    announced: list[str] = []
    cache_a.on_rendered = announced.append
    try:
        key = await cache_a.ensure("Hi Dana, this is Acme Dental calling.", "marin")
        assert engine_a.renders == 1 and announced == [key]
        # The other instance hears the announcement and loads it, rendering nothing.
        cache_b.fetch_soon(key)
        async with asyncio.timeout(5):
            while True:
                if cache_b.has(key):
                    break
                await asyncio.sleep(0.01)
        assert cache_b.frames(key) == cache_a.frames(key) and engine_b.renders == 0
        # An inbound greeting is rendered once for the fleet: the second instance takes it.
        again = GreetingCache(engine_b, tmp_path / "c", "m", shared=shared_b)
        assert await again.ensure("Hi Dana, this is Acme Dental calling.", "marin") == key
        assert engine_b.renders == 0
    finally:
        await shared_a.close()
        await shared_b.close()
        client = aioredis.Redis.from_url(url)
        async for stored in client.scan_iter(match=prefix + "*"):
            await client.delete(stored)
        await client.aclose()


async def test_with_redis_down_the_instance_renders_its_own(tmp_path: Path) -> None:
    shared = RedisGreetingAudio(f"redis://127.0.0.1:{free_port()}/0")
    engine = CountingRenderer()
    cache = GreetingCache(engine, tmp_path, "m", shared=shared)
    announced: list[str] = []
    cache.on_rendered = announced.append
    try:
        key = await cache.ensure("Hello", "marin")
        assert cache.has(key) and engine.renders == 1
        assert announced == []  # not shared, so not announced
    finally:
        await shared.close()
