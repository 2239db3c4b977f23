"""CallRegistry: where CallPlans wait between the webhook and the media stream."""

from __future__ import annotations

from hotline.registry.base import CallRegistry
from hotline.registry.memory import MemoryCallRegistry


def create_registry(redis_url: str | None) -> CallRegistry:
    if redis_url:
        from hotline.registry.fallback import FallbackCallRegistry
        from hotline.registry.redis import RedisCallRegistry

        return FallbackCallRegistry(RedisCallRegistry(redis_url))
    return MemoryCallRegistry()


__all__ = ["CallRegistry", "MemoryCallRegistry", "create_registry"]
