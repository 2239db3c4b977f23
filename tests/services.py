"""Reaching the real PostgreSQL and Redis for tests: skip locally when absent, fail in CI."""

from __future__ import annotations

import os

import pytest
import redis.asyncio as aioredis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, why: object) -> None:
    """Under CI a missing service is a failure, never a skip."""
    message = f"{what} is not reachable: {why}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def redis_url() -> str:
    return os.environ.get("HOTLINE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


async def reachable_redis_url() -> str:
    """The test Redis's URL once it answers a ping (else skip locally, fail in CI)."""
    url = redis_url()
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
    except OSError as exc:
        unavailable("Redis", exc)
    finally:
        await client.aclose()
    return url
