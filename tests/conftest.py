"""Shared fixtures.

Store: `database_url` is a fresh, empty database for each test. With
`HOTLINE_TEST_DATABASE_URL` set (`make test` sets a PostgreSQL URL) it is a new uniquely
named PostgreSQL database, dropped afterwards; otherwise an SQLite file in the test's temp
dir. `store` is a migrated `Store` on it, closed after the test. Every test that uses
`database_url` (directly or through `store`) is marked `database`, which is what
`make test` runs a second time on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from hotline.store import Store
from tests.services import unavailable

T = TypeVar("T")

TEST_DATABASE_URL_ENV = "HOTLINE_TEST_DATABASE_URL"


def run_in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, on its own loop in its own thread
    (so it never disturbs the loop pytest-asyncio keeps for the test)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# -- store --------------------------------------------------------------------------------
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.database)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    server_url = os.environ.get(TEST_DATABASE_URL_ENV)
    if not server_url:
        yield f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
        return
    admin_dsn = make_url(server_url).set(drivername="postgresql")
    name = f"hotline_t_{uuid.uuid4().hex[:12]}"
    try:
        run_in_thread(_admin(admin_dsn.render_as_string(hide_password=False), "CREATE", name))
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL ({TEST_DATABASE_URL_ENV})", exc)
    try:
        url = make_url(server_url).set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        run_in_thread(_admin(admin_dsn.render_as_string(hide_password=False), "DROP", name))


async def _admin(dsn: str, verb: str, database: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        if verb == "CREATE":
            await connection.execute(f'CREATE DATABASE "{database}"')
        else:
            await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    await store.upgrade()
    try:
        yield store
    finally:
        await store.close()
