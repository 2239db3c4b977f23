"""Telling running instances that the CLI changed their config (`business`, `template`)."""

from __future__ import annotations

import asyncio

from hotline.cli.db import console
from hotline.errors import RegistryUnavailable
from hotline.registry.redis import RedisCallRegistry
from hotline.services import Signal
from hotline.settings import load_settings


def announce_config_change() -> None:
    """Tell running instances (with HOTLINE_REDIS_URL) to reload now, not at their next
    poll (HOTLINE_CONFIG_REFRESH_S); without Redis, or with it down, they still will."""
    url = load_settings().redis_url
    if not url:
        return

    async def publish(redis_url: str) -> None:
        registry = RedisCallRegistry(redis_url)
        try:
            await registry.publish("", Signal.CONFIG, "cli")
        except RegistryUnavailable as exc:
            console().print(f"running instances not told at once ({exc}); they reload "
                            "within HOTLINE_CONFIG_REFRESH_S")
        finally:
            await registry.close()

    asyncio.run(publish(url))
