"""Reaching the real PostgreSQL and Redis for tests: skip locally when absent, fail in CI."""

from __future__ import annotations

import os

import pytest

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
