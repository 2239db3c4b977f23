"""Alembic environment for Hotline's store: SQLite (aiosqlite) or PostgreSQL (asyncpg).

Two ways in:
* programmatic (`Store.upgrade()`): the caller passes an open sync-facing connection in
  `config.attributes["connection"]` (from `AsyncConnection.run_sync`); it owns the transaction.
* the `alembic` command, for writing revisions:
  `alembic -c src/hotline/store/migrations/alembic.ini revision --autogenerate -m "..."`;
  the URL is `-x url=...`, else `HOTLINE_DATABASE_URL` (via the settings).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from hotline.store.migrate import compare_server_default
from hotline.store.models import Base
from hotline.store.urls import normalise_database_url

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later revisions get copy-and-move batches.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=compare_server_default,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        from hotline.settings import load_settings

        url = load_settings().database_url
    return normalise_database_url(url).render_as_string(hide_password=False)


def _run_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
    else:
        asyncio.run(_run_with_own_engine())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
