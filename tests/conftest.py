"""Shared fixtures.

Store: `database_url` is a fresh, empty database for each test. With
`HOTLINE_TEST_DATABASE_URL` set (`make test` sets a PostgreSQL URL) it is a PostgreSQL
database of this test process's own (uniquely named, so pytest-xdist workers never share
one; dropped at the end of the session), emptied before each test (its `public` schema
dropped and made anew: far cheaper than a database per test); otherwise an SQLite file in
the test's temp dir. `store` is a migrated `Store` on it, closed after the test. Every
test that uses `database_url` (directly or through `store`) is marked `database`, which is
what `make test` runs a second time on PostgreSQL.
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
from tests.pg_cluster import PostgresCluster
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


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[str | None]:
    """This process's PostgreSQL database (None without `HOTLINE_TEST_DATABASE_URL`)."""
    server_url = os.environ.get(TEST_DATABASE_URL_ENV)
    if not server_url:
        yield None
        return
    admin_dsn = make_url(server_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    name = f"hotline_t_{uuid.uuid4().hex[:12]}"
    try:
        run_in_thread(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL ({TEST_DATABASE_URL_ENV})", exc)  # each test: skip / fail
    try:
        yield make_url(server_url).set(drivername="postgresql+asyncpg", database=name
                                       ).render_as_string(hide_password=False)
    finally:
        run_in_thread(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(tmp_path: Path, _postgres_database: str | None) -> str:
    if not os.environ.get(TEST_DATABASE_URL_ENV):
        return f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    assert _postgres_database is not None
    dsn = make_url(_postgres_database).set(drivername="postgresql").render_as_string(
        hide_password=False)
    # Empty, as if new: nobody still connected (a test that leaked a connection cannot
    # hold a lock on the next one) and nothing left in the schema.
    run_in_thread(_admin(dsn, """
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid();
        DROP SCHEMA public CASCADE;
        CREATE SCHEMA public;"""))
    return _postgres_database


async def _admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(sql)
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


# -- a private PostgreSQL cluster (store fault tests) ----------------------------------------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test process's own (~1 s to make), which tests may stop
    and start: never the machine's shared server."""
    cluster = PostgresCluster.create()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def private_database(pg_cluster: PostgresCluster) -> str:
    """A fresh database on the private cluster (started again if a test left it stopped)."""
    if not await pg_cluster.running():
        pg_cluster.start()
    return await pg_cluster.create_database(f"hotline_f_{uuid.uuid4().hex[:12]}")
